//! Cleaning an extracted answer string before parsing.
//!
//! Removes what carries no mathematical value: math delimiters, `\left`/`\right`, spacing
//! commands (`\!`, `\,`, `\quad`), `\text{}`-style wrappers (keeping their content unless it is
//! a unit), units, currency, degree marks, thousands separators (`1,000`, `1\,000`, `1{,}000`,
//! `12,\!000`) and trailing punctuation. A percent sign is removed and reported, so that the
//! caller can apply its [`crate::PercentPolicy`].
//!
//! The rules follow the normalisations of the public graders: lm-eval `minerva_math`
//! `normalize_final_answer` (its SUBSTITUTIONS and REMOVED_EXPRESSIONS lists of units and
//! spacing), the PRM800K grader's `_strip_string`/`_normalize` (units, `\$`, `^\circ`,
//! thousands commas) and math-verify's unit and percent handling.
//! Every pass is linear in the input.

/// A cleaned answer string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub text: String,
    /// A `%`, `\%`, "percent" or "pct" was removed.
    pub percent: bool,
}

/// Unit words dropped after a number (lower case; plural `s` is also accepted).
/// From minerva_math's REMOVED_EXPRESSIONS plus common SI/imperial units and currencies.
const UNITS: &[&str] = &[
    "unit", "units", "sq", "square", "cubic", "cm", "mm", "km", "m", "meter", "metre", "inch",
    "inches", "in", "ft", "feet", "foot", "yd", "yard", "mile", "miles", "mph", "kmh", "kg", "g",
    "gm", "gram", "mg", "lb", "lbs", "pound", "ounce", "oz", "l", "ml", "liter", "litre", "gallon",
    "s", "sec", "second", "minute", "min", "mins", "hour", "hr", "hrs", "h", "day", "week",
    "month", "year", "yr", "degree", "deg", "radian", "rad", "dollar", "cent", "yuan", "euro",
    "usd", "rs", "point", "way", "integer", "digit", "student", "people", "person", "time", "page",
    "meal", "edge", "child", "children", "ticket", "multiple", "sue", "book", "apple", "egg",
    "bag", "box", "mark", "coin", "candy", "candies", "item", "piece", "cookie", "marble", "car",
    "hat", "sheep", "cow", "pen", "pencil", "toy", "dog", "cat", "bird", "flower", "tree",
    "bottle", "cup", "slice", "pizza", "dozen", "game", "mph", "percent",
];

fn is_unit_word(w: &str) -> bool {
    let w = w.trim_matches(|c: char| c == '.' || c == ',');
    if w.is_empty() || !w.chars().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    let lower = w.to_ascii_lowercase();
    let singular = lower.strip_suffix('s').unwrap_or(&lower);
    UNITS.contains(&lower.as_str()) || UNITS.contains(&singular)
}

/// Text wrappers whose content is kept (or dropped when it is a unit).
const TEXT_WRAPPERS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textsf",
    "texttt",
    "textnormal",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "mbox",
    "hbox",
    "operatorname",
    "boldsymbol",
    "bm",
    "emph",
    "textup",
    "mathnormal",
];

/// Commands removed without trace.
const DROPPED: &[&str] = &[
    "left",
    "right",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "biggl",
    "biggr",
    "displaystyle",
    "textstyle",
    "scriptstyle",
    "limits",
    "nolimits",
    "mathstrut",
    "strut",
    "phantom",
    "hphantom",
    "vphantom",
    "ensuremath",
    "color",
    "boxed",
    "fbox",
    "dots",
    "ldots",
    "cdots",
    "noindent",
];

/// Cleans `input`. Never fails; the output is at most a little longer than the input.
pub fn clean(input: &str) -> Cleaned {
    let mut percent = false;
    let pre = replace_unicode(input);
    let mut out = String::with_capacity(pre.len());
    let chars: Vec<char> = pre.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '$' | '~' | '"' => {
                out.push(' ');
                i += 1;
            }
            '%' => {
                percent = true;
                i += 1;
            }
            '\\' => {
                let (name, next) = command_name(&chars, i + 1);
                if name.is_empty() {
                    // A one-character control symbol.
                    let sym = chars.get(i + 1).copied();
                    // `\\frac` from a doubly escaped string is `\frac`.
                    if sym == Some('\\')
                        && chars.get(i + 2).is_some_and(|c| c.is_ascii_alphabetic())
                    {
                        i += 1;
                        continue;
                    }
                    i += 2;
                    match sym {
                        Some('!')
                            // `12,\! 000`: the thin negative space joins thousands groups.
                            if out.ends_with(',') => {
                                while chars.get(i).is_some_and(|c| *c == ' ') {
                                    i += 1;
                                }
                            }
                        Some('$') | Some('"') => {}
                        Some('%') => percent = true,
                        Some(',') | Some(';') | Some(':') | Some(' ') | Some('>') => out.push(' '),
                        Some('(') | Some(')') | Some('[') | Some(']') => out.push(' '),
                        Some(s) => {
                            out.push('\\');
                            out.push(s);
                        }
                        None => {}
                    }
                    continue;
                }
                i = next;
                if DROPPED.contains(&name.as_str()) {
                    if (name == "left" || name == "right") && chars.get(i) == Some(&'.') {
                        i += 1;
                    }
                    if name == "color" {
                        i = skip_group(&chars, i).unwrap_or(i);
                    }
                    continue;
                }
                if TEXT_WRAPPERS.contains(&name.as_str()) {
                    let Some((content, end)) = group(&chars, i) else {
                        continue;
                    };
                    i = end;
                    let content: String = content.iter().collect();
                    let inner = clean(&content);
                    percent |= inner.percent;
                    let t = inner.text.trim();
                    let lower = t.to_ascii_lowercase();
                    if matches!(lower.as_str(), "and" | "or" | "and/or" | ",") {
                        out.push_str(" , ");
                    } else if prev_is_valueish(&out)
                        && (t.split_whitespace().all(is_unit_word) || content.starts_with(' '))
                    {
                        // `15\text{ cm}`: a unit after a value, with its power (`cm}^2`).
                        out.push(' ');
                        if chars.get(i) == Some(&'^') {
                            let rest: String =
                                chars[i + 1..chars.len().min(i + 4)].iter().collect();
                            if rest.starts_with(['2', '3']) {
                                i += 2;
                            } else if rest.starts_with("{2}") || rest.starts_with("{3}") {
                                i += 4;
                            }
                        }
                    } else {
                        out.push_str(t);
                    }
                    continue;
                }
                match name.as_str() {
                    "quad" | "qquad" | "hspace" | "enspace" | "thinspace" => {
                        if name == "hspace" {
                            i = skip_group(&chars, i).unwrap_or(i);
                        }
                        out.push(' ');
                    }
                    "dfrac" | "tfrac" | "cfrac" => out.push_str("\\frac"),
                    "degree" | "degrees" => {}
                    "circ" => {
                        // `^\circ` handled below; a bare `\circ` after a number is a degree mark.
                        if out.ends_with('^') {
                            out.pop();
                        }
                    }
                    "dollar" | "euro" | "pounds" => {}
                    other => {
                        out.push('\\');
                        out.push_str(other);
                        // Keep commands apart from following letters (`\pi r`).
                        if chars.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
                            out.push(' ');
                        }
                    }
                }
            }
            '^' => {
                // `^{\circ}` is a degree mark.
                let rest: String = chars[i + 1..chars.len().min(i + 12)].iter().collect();
                if let Some(skip) = ["{\\circ}", "\\circ", "{°}"]
                    .iter()
                    .find(|p| rest.starts_with(**p))
                {
                    i += 1 + skip.chars().count();
                } else {
                    out.push('^');
                    i += 1;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    let mut text = remove_thousands(&out);
    strip_percent_words(&mut text, &mut percent);
    // Units can end every item of a list (`35 cm, 4`).
    let text = text
        .split(',')
        .map(|piece| {
            let mut p = piece.to_string();
            strip_trailing_units(&mut p);
            p
        })
        .collect::<Vec<_>>()
        .join(",");
    let text = collapse_ws(&text);
    let text = text
        .trim_end_matches(['.', ',', ';', ':', ' ', '\n'])
        .trim_start_matches([',', ';', ':', ' '])
        .to_string();
    Cleaned { text, percent }
}

fn prev_is_valueish(out: &str) -> bool {
    out.trim_end()
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '}' | ')' | ']'))
}

fn replace_unicode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '−' | '–' | '—' => out.push('-'),
            '×' => out.push_str("\\times "),
            '·' | '⋅' => out.push_str("\\cdot "),
            '÷' => out.push_str("\\div "),
            '≤' | '⩽' => out.push_str("\\le "),
            '≥' | '⩾' => out.push_str("\\ge "),
            '≠' => out.push_str("\\ne "),
            '≈' => out.push_str("\\approx "),
            'π' => out.push_str("\\pi "),
            '∞' => out.push_str("\\infty "),
            '±' => out.push_str("\\pm "),
            '∓' => out.push_str("\\mp "),
            '√' => out.push_str("\\sqrt "),
            '∪' => out.push_str("\\cup "),
            '∅' => out.push_str("\\emptyset "),
            '∈' => out.push_str("\\in "),
            '°' | '€' | '£' | '¥' | '￥' | '元' => out.push(' '),
            '²' => out.push_str("^2"),
            '³' => out.push_str("^3"),
            '，' => out.push(','),
            '：' => out.push(':'),
            '（' => out.push('('),
            '）' => out.push(')'),
            '\u{a0}' | '\u{2009}' | '\u{202f}' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Reads an ASCII-letter command name starting at `start`; returns it and the index after it.
fn command_name(chars: &[char], start: usize) -> (String, usize) {
    let mut j = start;
    while j < chars.len() && chars[j].is_ascii_alphabetic() {
        j += 1;
    }
    (chars[start..j].iter().collect(), j)
}

/// The content of a brace group starting at `start` (after optional spaces), and the index after
/// its closing brace. `None` when there is no group or it is unbalanced.
pub(crate) fn group(chars: &[char], start: usize) -> Option<(&[char], usize)> {
    let mut i = start;
    while i < chars.len() && chars[i] == ' ' {
        i += 1;
    }
    if chars.get(i) != Some(&'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&chars[i + 1..j], j + 1));
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

fn skip_group(chars: &[char], start: usize) -> Option<usize> {
    group(chars, start).map(|(_, end)| end)
}

/// Removes thousands separators: `1,000,000`, `1{,}000`, `1 000` (a single space), keeping lists
/// such as `1, 2` (separator followed by a space) and decimals.
fn remove_thousands(s: &str) -> String {
    let chars: Vec<char> = join_brace_commas(s).chars().collect();
    let mut out = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_number = c.is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_ascii_digit() || chars[i - 1] == '.'));
        if !starts_number {
            out.push(c);
            i += 1;
            continue;
        }
        // Leading group of 1–3 digits.
        let mut j = i;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        let lead_end = j;
        if j - i <= 3 {
            // Separator followed by exactly three digits, repeatedly; one separator kind.
            let mut sep: Option<char> = None;
            while let Some(&s) = chars.get(j) {
                if !(s == ',' || s == ' ') || sep.is_some_and(|p| p != s) {
                    break;
                }
                let three = chars
                    .get(j + 1..j + 4)
                    .is_some_and(|d| d.iter().all(|c| c.is_ascii_digit()));
                let ends = chars.get(j + 4).is_none_or(|c| !c.is_ascii_digit());
                if !(three && ends) {
                    break;
                }
                sep = Some(s);
                j += 4;
            }
        }
        // `(12,102)` is a pair, not twelve thousand: leave bracketed groups alone.
        let bracketed = i > 0
            && matches!(chars[i - 1], '(' | '[')
            && matches!(chars.get(j), Some(')') | Some(']'));
        let keep_separators = bracketed && j > lead_end;
        out.extend(
            chars[i..j]
                .iter()
                .filter(|c| keep_separators || c.is_ascii_digit()),
        );
        i = j;
    }
    out
}

/// `{,}`, `{ , }` and a space before them become a plain `,`.
fn join_brace_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '{' {
            let mut j = i + 1;
            while chars.get(j) == Some(&' ') {
                j += 1;
            }
            if chars.get(j) == Some(&',') {
                let mut k = j + 1;
                while chars.get(k) == Some(&' ') {
                    k += 1;
                }
                if chars.get(k) == Some(&'}') {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                    out.push(',');
                    i = k + 1;
                    while chars.get(i) == Some(&' ') {
                        i += 1;
                    }
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn strip_percent_words(text: &mut String, percent: &mut bool) {
    let trimmed = text.trim_end().trim_end_matches('.');
    for word in ["percentage", "percent", "pct"] {
        if trimmed.len() > word.len() && trimmed.to_ascii_lowercase().ends_with(word) {
            let cut = trimmed.len() - word.len();
            if text.is_char_boundary(cut) {
                let before = &trimmed[..cut];
                if before.ends_with(|c: char| !c.is_ascii_alphabetic()) {
                    *text = before.to_string();
                    *percent = true;
                    return;
                }
            }
        }
    }
}

/// Drops trailing unit words (and their `^2`/`^3`) after a value: `125 miles`, `15 cm^2`.
fn strip_trailing_units(text: &mut String) {
    loop {
        let t = text.trim_end();
        let t = t
            .strip_suffix("^2")
            .or_else(|| t.strip_suffix("^3"))
            .or_else(|| t.strip_suffix("^{2}"))
            .or_else(|| t.strip_suffix("^{3}"))
            .unwrap_or(t)
            .trim_end();
        let start = t
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map(|(p, c)| p + c.len_utf8())
            .unwrap_or(0);
        let word = &t[start..];
        let before = t[..start].trim_end();
        let before_ok = before
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '}' | ')' | ' '))
            || before.ends_with(|c: char| c.is_ascii_digit());
        // A single letter right after a digit is a variable (`2x`), not a unit, unless spaced.
        let spaced = t[..start].ends_with(' ');
        if word.is_empty() || !is_unit_word(word) || !before_ok || (word.len() == 1 && !spaced) {
            return;
        }
        if before.is_empty() {
            return;
        }
        *text = before.to_string();
    }
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        clean(s).text
    }

    #[test]
    fn strips_wrappers_units_and_delimiters() {
        assert_eq!(c("$\\frac{1}{3} \\text{meters}$"), "\\frac{1}{3}");
        assert_eq!(c("15\\mbox{ cm}^2"), "15");
        assert_eq!(c("125\\textnormal{ miles}."), "125");
        assert_eq!(
            c("\\left( 3, \\frac{\\pi}{2} \\right)"),
            "( 3, \\frac{\\pi}{2} )"
        );
        assert_eq!(c("90^\\circ"), "90");
        assert_eq!(c("90^{\\circ}"), "90");
        assert_eq!(c("\\$16386.17"), "16386.17");
        assert_eq!(c("\\text{Evelyn}"), "Evelyn");
        assert_eq!(c("\\dfrac{1}{2}"), "\\frac{1}{2}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(c("7,425,000"), "7425000");
        assert_eq!(c("14{,}916"), "14916");
        assert_eq!(c("12,\\!000,\\!023"), "12000023");
        assert_eq!(c("1\\,000"), "1000");
        assert_eq!(c("1,000.99"), "1000.99");
        assert_eq!(c("32, 349"), "32, 349");
        assert_eq!(c("1000,99"), "1000,99");
        assert_eq!(c("1,2345"), "1,2345");
    }

    #[test]
    fn percent_is_reported() {
        let p = clean("28\\%");
        assert_eq!((p.text.as_str(), p.percent), ("28", true));
        let p = clean("28 percent");
        assert_eq!((p.text.as_str(), p.percent), ("28", true));
        assert!(!clean("28").percent);
    }

    #[test]
    fn text_and_becomes_a_separator() {
        assert_eq!(c("12\\text{ and }13"), "12 , 13");
    }

    #[test]
    fn variables_are_not_units() {
        assert_eq!(c("2x"), "2x");
        assert_eq!(c("3 m"), "3");
        assert_eq!(c("\\pi r"), "\\pi r");
    }

    #[test]
    fn unbalanced_text_group_does_not_panic() {
        let _ = c("\\text{abc");
        let _ = c("\\");
        let _ = c("^");
    }
}
