//! Script detection: which writing system a character belongs to, and per-script word counts.
//!
//! Ranges come from the Unicode `Scripts.txt` blocks; only the scripts a math-reasoning model
//! switches between in practice are told apart (Latin, CJK, Cyrillic, Greek, Arabic).
//! Counting is by *word*: a run of Latin/Cyrillic/Greek/Arabic letters counts once, while each
//! CJK character counts once, since Chinese and Japanese do not separate words with spaces and a
//! Han character is roughly one morpheme (the same unit R1's language reward counts).
//! Math is not language: text inside `$…$`, `\(…\)`, `\[…\]` and LaTeX command names
//! (`\frac`, `\sqrt`) is skipped, otherwise a Chinese solution full of formulas would look Latin.

use serde::{Deserialize, Serialize};

/// A writing system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    /// Basic Latin letters and Latin-1/Extended-A/B letters (English, French, Vietnamese…).
    Latin,
    /// Han ideographs, kana and Hangul (Chinese, Japanese, Korean).
    Cjk,
    /// Cyrillic (Russian, Ukrainian…).
    Cyrillic,
    /// Greek. Single Greek letters in prose are usually math symbols, but they are still counted.
    Greek,
    /// Arabic.
    Arabic,
}

impl Script {
    /// Every script, in a fixed order (used for reporting).
    pub const ALL: [Script; 5] = [
        Script::Latin,
        Script::Cjk,
        Script::Cyrillic,
        Script::Greek,
        Script::Arabic,
    ];
}

/// The script of one character, or `None` for digits, punctuation, symbols and spaces.
pub fn script_of(c: char) -> Option<Script> {
    let u = c as u32;
    match u {
        0x41..=0x5A | 0x61..=0x7A => Some(Script::Latin),
        // Latin-1 letters (skip × U+00D7 and ÷ U+00F7), Latin Extended-A/B, IPA, Extended Additional.
        0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x24F | 0x1E00..=0x1EFF => Some(Script::Latin),
        0x370..=0x3FF | 0x1F00..=0x1FFF => Some(Script::Greek),
        0x400..=0x52F => Some(Script::Cyrillic),
        0x600..=0x6FF | 0x750..=0x77F => Some(Script::Arabic),
        // Hiragana, Katakana, CJK Unified Ideographs (+Ext A), Compatibility Ideographs, Hangul.
        0x3040..=0x30FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0xAC00..=0xD7AF
        | 0x1100..=0x11FF
        | 0x20000..=0x2FA1F => Some(Script::Cjk),
        _ => None,
    }
}

/// Word counts per script for a piece of text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptCounts {
    pub latin: u64,
    pub cjk: u64,
    pub cyrillic: u64,
    pub greek: u64,
    pub arabic: u64,
}

impl ScriptCounts {
    /// Words counted for one script.
    pub fn get(&self, script: Script) -> u64 {
        match script {
            Script::Latin => self.latin,
            Script::Cjk => self.cjk,
            Script::Cyrillic => self.cyrillic,
            Script::Greek => self.greek,
            Script::Arabic => self.arabic,
        }
    }

    fn bump(&mut self, script: Script) {
        let slot = match script {
            Script::Latin => &mut self.latin,
            Script::Cjk => &mut self.cjk,
            Script::Cyrillic => &mut self.cyrillic,
            Script::Greek => &mut self.greek,
            Script::Arabic => &mut self.arabic,
        };
        *slot += 1;
    }

    /// Words counted over all scripts.
    pub fn total(&self) -> u64 {
        self.latin + self.cjk + self.cyrillic + self.greek + self.arabic
    }

    /// Share of words in `script`, or `None` when the text has no words at all.
    pub fn share(&self, script: Script) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.get(script) as f64 / total as f64)
    }
}

/// Counts words per script in `text`, skipping inline/display math and LaTeX command names.
///
/// Linear in the length of the text; never allocates beyond the returned counts.
pub fn script_counts(text: &str) -> ScriptCounts {
    let mut counts = ScriptCounts::default();
    let mut chars = text.chars().peekable();
    // The script of the word we are inside, for word-based scripts.
    let mut in_word: Option<Script> = None;
    // `Some(closer)` while inside math; closers are `$`, `$$`, `\)`, `\]`.
    let mut math: Option<&'static str> = None;
    while let Some(c) = chars.next() {
        if let Some(closer) = math {
            let closes = match closer {
                "$" => c == '$',
                "$$" => c == '$' && chars.peek() == Some(&'$'),
                "\\)" => c == '\\' && chars.peek() == Some(&')'),
                _ => c == '\\' && chars.peek() == Some(&']'),
            };
            if closes {
                if closer.len() == 2 {
                    chars.next();
                }
                math = None;
            }
            continue;
        }
        match c {
            '$' => {
                in_word = None;
                if chars.peek() == Some(&'$') {
                    chars.next();
                    math = Some("$$");
                } else {
                    math = Some("$");
                }
                continue;
            }
            '\\' => {
                in_word = None;
                match chars.peek() {
                    Some('(') => {
                        chars.next();
                        math = Some("\\)");
                    }
                    Some('[') => {
                        chars.next();
                        math = Some("\\]");
                    }
                    _ => {
                        // Skip a command name such as `\frac`.
                        while chars.peek().is_some_and(|n| n.is_ascii_alphabetic()) {
                            chars.next();
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        match script_of(c) {
            Some(Script::Cjk) => {
                in_word = None;
                counts.bump(Script::Cjk);
            }
            Some(s) => {
                if in_word != Some(s) {
                    counts.bump(s);
                    in_word = Some(s);
                }
            }
            None => {
                // An apostrophe or hyphen inside a word does not split it ("don't", "well-known").
                let joins = matches!(c, '\'' | '-' | '’') && in_word.is_some();
                if !joins {
                    in_word = None;
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_latin_words_and_cjk_characters() {
        let c = script_counts("Let us compute 这个数 now");
        assert_eq!(c.latin, 4);
        assert_eq!(c.cjk, 3);
    }

    #[test]
    fn math_and_commands_are_not_language() {
        let c = script_counts("所以 $\\frac{abc}{def} + x$ 等于 \\(y\\) 和 \\[z\\] \\sqrt");
        assert_eq!(c.latin, 0, "{c:?}");
        assert_eq!(c.cjk, 5);
    }

    #[test]
    fn share_is_none_without_words() {
        assert_eq!(script_counts("12 + 3 = 15").share(Script::Latin), None);
        let c = script_counts("Бонжур hello мир");
        assert_eq!(c.cyrillic, 2);
        assert!((c.share(Script::Latin).unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn apostrophes_keep_words_whole() {
        assert_eq!(script_counts("don't well-known").latin, 2);
    }

    #[test]
    fn unterminated_math_swallows_the_rest() {
        // An unclosed `$` is math to the end, as in a LaTeX renderer; the count stays bounded.
        assert_eq!(script_counts("words $x + y words words").latin, 1);
    }
}
