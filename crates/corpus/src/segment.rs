//! Word segmentation before fastText features.
//!
//! fastText splits on whitespace only, so a Chinese sentence — written without spaces — is a
//! single "word" that never recurs, and the classifier sees almost nothing of it. With
//! [`Segmentation::Jieba`] every maximal run of Han ideographs is cut into words by
//! [jieba-rs](https://docs.rs/jieba-rs) (its bundled dictionary, HMM for unknown words) and the
//! words are separated by spaces; every other byte of the text is left exactly as it was, so
//! English, LaTeX and `__label__` prefixes get the same features as without segmentation.
//!
//! The `.bin` format has no field for this, so a model trained on segmented text must be
//! given segmented text at prediction time too: pass the same `--segment` to `classifier
//! test` / `predict`, or set `segmentation` in the recall config (used for both training and
//! scoring there).

use std::borrow::Cow;
use std::sync::OnceLock;

use jieba_rs::Jieba;

/// How text is cut into words before fastText's whitespace tokenisation.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Segmentation {
    /// fastText's own behaviour: whitespace only.
    #[default]
    Whitespace,
    /// Han runs cut into words with jieba, spaces around them.
    Jieba,
}

impl std::str::FromStr for Segmentation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "whitespace" | "none" => Ok(Self::Whitespace),
            "jieba" => Ok(Self::Jieba),
            _ => Err(format!(
                "unknown segmentation {s:?}: expected whitespace or jieba"
            )),
        }
    }
}

/// Han ideographs (CJK unified ideographs, extension A, compatibility, extensions B..).
fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

impl Segmentation {
    /// `text` with its Han runs segmented; borrowed when nothing changes (always for
    /// [`Segmentation::Whitespace`], and for text without Han characters).
    pub fn apply<'a>(self, text: &'a str) -> Cow<'a, str> {
        if self == Self::Whitespace || !text.chars().any(is_han) {
            return Cow::Borrowed(text);
        }
        let jieba = jieba();
        let mut out = String::with_capacity(text.len() + text.len() / 2);
        let mut rest = text;
        while let Some(start) = rest.find(is_han) {
            let (before, from) = rest.split_at(start);
            let end = from.find(|c: char| !is_han(c)).unwrap_or(from.len());
            let (run, after) = from.split_at(end);
            out.push_str(before);
            if !out.is_empty() && !out.ends_with(char::is_whitespace) {
                out.push(' ');
            }
            for (i, w) in jieba.cut(run, true).into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(w);
            }
            if after.starts_with(|c: char| !c.is_whitespace()) {
                out.push(' ');
            }
            rest = after;
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    /// [`Segmentation::apply`] line by line, so line structure (one example per line) is kept.
    pub fn apply_lines<'a>(self, text: &'a str) -> Cow<'a, str> {
        if self == Self::Whitespace || !text.chars().any(is_han) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + text.len() / 2);
        for line in text.split_inclusive('\n') {
            out.push_str(&self.apply(line));
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_identity() {
        let t = "求 x 的值：今天天气很好";
        assert!(matches!(Segmentation::Whitespace.apply(t), Cow::Borrowed(s) if s == t));
    }

    #[test]
    fn non_han_text_is_untouched() {
        let t = "__label__math Solve $\\frac{1}{2}x = 3$, résumé Tokyo? カタカナ 한국어";
        assert!(matches!(Segmentation::Jieba.apply(t), Cow::Borrowed(s) if s == t));
    }

    #[test]
    fn han_runs_are_cut_and_spaced() {
        let out = Segmentation::Jieba.apply("__label__math 我们解这个方程x+1=2，我们喜欢数学");
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words[0], "__label__math");
        assert!(words.contains(&"方程"), "{out}");
        assert!(words.contains(&"数学"), "{out}");
        assert!(words.contains(&"x+1=2，"), "{out}");
        // Removing the inserted spaces gives back the input.
        assert_eq!(
            out.split_whitespace().collect::<String>(),
            "__label__math我们解这个方程x+1=2，我们喜欢数学"
        );
    }

    #[test]
    fn lines_are_kept() {
        let out = Segmentation::Jieba.apply_lines("今天天气很好\n我们解方程\n");
        assert_eq!(out.lines().count(), 2);
        assert!(out.ends_with('\n'));
    }
}
