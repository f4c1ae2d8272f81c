//! Finding the final answer in a completion.
//!
//! With [`AnswerFormat::Auto`], in priority order: an `<answer>…</answer>` block (DeepSeek-R1's
//! template; the rules below then run inside it), a trailing JSON object with an `answer` field
//! (`{"reasoning": "…", "answer": "5"}`, fenced or not), the last brace-balanced
//! `\boxed{…}`/`\fbox{…}` (all distinct boxed answers are returned, so that hedging can be
//! detected), GSM8K's `#### n`, an explicit "the answer is …" / "Final Answer: …" / "答案是…",
//! the whole text when it is short and answer-like, an answer field of a JSON object that prose
//! follows, the last inline or display math, and, if configured, the last number. Any other
//! [`AnswerFormat`] pins one rule: a user who knows the harness that wrote the completions gets
//! exactly that rule and nothing else. The rule that fired is reported as a [`Method`].
//! When the completion has `</think>`, only the text after it is searched (DeepSeek-R1 format:
//! the reasoning is not the answer); an unclosed `<think>` has no answer.
//!
//! All scans are linear in the completion (boxed scans are capped at [`MAX_BOXED`] occurrences).

use serde::{Deserialize, Serialize};

/// Most `\boxed` occurrences examined (the last ones).
pub const MAX_BOXED: usize = 64;

/// What to do when no explicit answer is found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// No explicit answer means no answer.
    None,
    /// Take the last number in the answer region (GSM8K-style completions).
    #[default]
    LastNumber,
}

/// Where to look when the completion has a `<think>` block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkPolicy {
    /// Only after the last `</think>`; an unclosed `<think>` yields no answer.
    #[default]
    AfterThink,
    /// Search the whole completion.
    Anywhere,
}

/// Several different boxed answers in one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipleBoxed {
    /// They form one answer list: right only when the gold is that list, so hedging
    /// (`\boxed{3}` or maybe `\boxed{4}`) against a single gold fails.
    #[default]
    AsList,
    /// Only the last one counts (lm-eval / Qwen2.5-Math behaviour).
    Last,
}

/// Which rule finds the answer: every rule in priority order, or one pinned rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// Every rule, in the order of the module documentation.
    #[default]
    Auto,
    /// `\boxed{…}` / `\fbox{…}` only (Minerva, Qwen2.5-Math, DeepSeek-R1 prompts).
    Boxed,
    /// "The answer is …", "Final Answer: …", "答案是…" only (lm-eval's CoT prompts).
    AnswerIs,
    /// `#### 42` only (GSM8K's reference format).
    Gsm8k,
    /// The `answer` field of a JSON object, fenced or not (structured-output harnesses).
    Json,
    /// The contents of the last `<answer>…</answer>` block only (R1-Zero's template).
    AnswerTag,
    /// A multiple-choice letter: `(C)`, `C`, "answer is C", `\boxed{C}`.
    Choice,
    /// The last number in the text.
    LastNumber,
}

impl AnswerFormat {
    pub const ALL: [AnswerFormat; 8] = [
        AnswerFormat::Auto,
        AnswerFormat::Boxed,
        AnswerFormat::AnswerIs,
        AnswerFormat::Gsm8k,
        AnswerFormat::Json,
        AnswerFormat::AnswerTag,
        AnswerFormat::Choice,
        AnswerFormat::LastNumber,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AnswerFormat::Auto => "auto",
            AnswerFormat::Boxed => "boxed",
            AnswerFormat::AnswerIs => "answer_is",
            AnswerFormat::Gsm8k => "gsm8k",
            AnswerFormat::Json => "json",
            AnswerFormat::AnswerTag => "answer_tag",
            AnswerFormat::Choice => "choice",
            AnswerFormat::LastNumber => "last_number",
        }
    }
}

impl std::fmt::Display for AnswerFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AnswerFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        AnswerFormat::ALL
            .into_iter()
            .find(|f| f.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = AnswerFormat::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown answer format {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Extraction settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Which rule finds the answer (`auto`: all of them, in priority order).
    #[serde(rename = "answer_format")]
    pub format: AnswerFormat,
    pub fallback: Fallback,
    pub think: ThinkPolicy,
    pub multiple_boxed: MultipleBoxed,
}

/// How an answer was found: the rule that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Boxed,
    Gsm8k,
    AnswerIs,
    /// The `answer` field of a JSON object.
    Json,
    /// The contents of an `<answer>` block.
    AnswerTag,
    Whole,
    LastMath,
    /// The last number: the explicit fallback when nothing else matched.
    LastNumber,
    Choice,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Boxed => "boxed",
            Method::Gsm8k => "gsm8k",
            Method::AnswerIs => "answer_is",
            Method::Json => "json",
            Method::AnswerTag => "answer_tag",
            Method::Whole => "whole",
            Method::LastMath => "last_math",
            Method::LastNumber => "last_number",
            Method::Choice => "choice",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer text(s) found in a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    /// Raw answer strings, in order; more than one only for several different boxed answers.
    pub answers: Vec<String>,
    pub method: Method,
}

/// The part of `text` that may hold the answer, per the think policy.
pub fn answer_region(text: &str, think: ThinkPolicy) -> Option<&str> {
    if think == ThinkPolicy::Anywhere {
        return Some(text);
    }
    if let Some(p) = text.rfind("</think>") {
        return Some(&text[p + "</think>".len()..]);
    }
    if text.contains("<think>") {
        return None;
    }
    Some(text)
}

/// Contents of every `\boxed{…}` / `\fbox{…}` (and `\boxed 5`) in `text`, in order.
/// Unbalanced boxes are skipped.
pub fn boxed_contents(text: &str) -> Vec<&str> {
    let mut starts: Vec<(usize, usize)> = Vec::new();
    for pat in ["\\boxed", "\\fbox"] {
        starts.extend(text.match_indices(pat).map(|(i, m)| (i, i + m.len())));
    }
    starts.sort_unstable();
    let skip = starts.len().saturating_sub(MAX_BOXED);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for &(_, after) in &starts[skip..] {
        let mut i = after;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            if let Some(end) = matching_brace(bytes, i) {
                out.push(&text[i + 1..end]);
            }
        } else if i > after && i < bytes.len() {
            // `\boxed 5`: up to the next space or `$`.
            let end = text[i..]
                .find(|c: char| c.is_whitespace() || c == '$')
                .map_or(text.len(), |e| i + e);
            out.push(&text[i..end]);
        }
    }
    out
}

/// Index of the `}` matching the `{` at `open`, skipping escaped braces.
fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Letters of the multiple-choice options listed in a problem (`(A)`, `A.`/`A)` at a line start).
pub fn choices_in(problem: &str) -> Vec<char> {
    let has = |l: char| {
        problem.contains(&format!("({l})"))
            || problem.contains(&format!("\n{l}."))
            || problem.contains(&format!("\n{l})"))
            || problem.contains(&format!("\n{l}:"))
    };
    let letters: Vec<char> = ('A'..='J').take_while(|&l| has(l)).collect();
    if letters.len() >= 2 {
        letters
    } else {
        Vec::new()
    }
}

/// A choice letter written as `C`, `(C)`, `\text{(C)}`, `C)`, `C.`, "option C".
pub fn choice_letter(s: &str) -> Option<char> {
    let cleaned = crate::normalize::clean(s).text;
    let mut t = cleaned.trim();
    for prefix in ["option", "Option", "choice", "Choice"] {
        t = t.strip_prefix(prefix).unwrap_or(t).trim();
    }
    let t = t.trim_matches(|c: char| matches!(c, '(' | ')' | '.' | ':' | ' ' | '{' | '}'));
    let mut chars = t.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

/// Finds the answer in a completion.
pub fn extract(text: &str, cfg: &ExtractConfig) -> Option<Extraction> {
    let region = answer_region(text, cfg.think)?;
    let one = |s: &str, method| {
        let s = s.trim();
        (!s.is_empty()).then(|| Extraction {
            answers: vec![s.to_string()],
            method,
        })
    };
    match cfg.format {
        AnswerFormat::Auto => {
            if let Some(inner) = answer_tag(region) {
                // The rules run inside the block; the block is what fired.
                let found = standard(inner, cfg).or_else(|| one(inner, Method::AnswerTag))?;
                return Some(Extraction {
                    method: Method::AnswerTag,
                    ..found
                });
            }
            if let Some(ans) = json_answer(region, true) {
                return one(&ans, Method::Json);
            }
            standard(region, cfg)
        }
        AnswerFormat::Boxed => boxed_answers(&boxed_contents(region), cfg.multiple_boxed),
        AnswerFormat::AnswerIs => answer_is(region).and_then(|a| one(&a, Method::AnswerIs)),
        AnswerFormat::Gsm8k => gsm8k(region).and_then(|l| one(l, Method::Gsm8k)),
        AnswerFormat::Json => json_answer(region, false).and_then(|a| one(&a, Method::Json)),
        AnswerFormat::AnswerTag => answer_tag(region).and_then(|inner| {
            let boxed = boxed_contents(inner);
            match boxed_answers(&boxed, cfg.multiple_boxed) {
                Some(e) => Some(Extraction {
                    method: Method::AnswerTag,
                    ..e
                }),
                None => one(inner, Method::AnswerTag),
            }
        }),
        AnswerFormat::Choice => choice_in_text(region, &CHOICE_LETTERS)
            .and_then(|c| one(&c.to_string(), Method::Choice)),
        AnswerFormat::LastNumber => last_number(region).and_then(|n| one(&n, Method::LastNumber)),
    }
}

/// Every letter a pinned [`AnswerFormat::Choice`] accepts.
pub const CHOICE_LETTERS: [char; 10] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J'];

/// The boxed answers under the multiple-boxed policy; `None` when there are none.
fn boxed_answers(boxed: &[&str], policy: MultipleBoxed) -> Option<Extraction> {
    let answers = match policy {
        MultipleBoxed::Last => boxed.last().map(|s| vec![s.to_string()])?,
        MultipleBoxed::AsList => distinct(boxed),
    };
    (!answers.is_empty()).then_some(Extraction {
        answers,
        method: Method::Boxed,
    })
}

/// The first line after the last `####`.
fn gsm8k(region: &str) -> Option<&str> {
    let p = region.rfind("####")?;
    Some(region[p + 4..].lines().next().unwrap_or(""))
}

/// The contents of the last closed `<answer>…</answer>` block (tags matched case-insensitively).
pub fn answer_tag(region: &str) -> Option<&str> {
    let lower = region.to_ascii_lowercase();
    let close = lower.rfind("</answer>")?;
    let open = lower[..close].rfind("<answer>")?;
    let inner = region[open + "<answer>".len()..close].trim();
    (!inner.is_empty()).then_some(inner)
}

/// Keys whose value is the final answer, compared after lowercasing and dropping `_`, `-`
/// and spaces.
const JSON_ANSWER_KEYS: [&str; 3] = ["answer", "finalanswer", "final"];

/// The value of the last `answer` field of a JSON object (or a Python dict written by a
/// model). The scan is lenient on purpose: models write LaTeX in JSON strings without
/// escaping it (`"\frac{1}{2}"` with one backslash), which no strict parser accepts, so a
/// string value keeps every backslash except those of `\\`, `\"` and `\/`.
///
/// With `trailing`, the field must sit in the completion's final object: preceded by `{` or
/// `,`, and followed by nothing but more fields, closing brackets and a code fence. That is
/// what [`AnswerFormat::Auto`] needs so that prose which merely mentions JSON is left alone.
pub fn json_answer(region: &str, trailing: bool) -> Option<String> {
    let b = region.as_bytes();
    // Candidate keys: short quoted strings followed by a colon, scanning from the end. Each
    // quote is looked at once and a key is at most 32 bytes long: linear in the text.
    let mut end = b.len();
    while let Some(close) = b[..end].iter().rposition(|&c| c == b'"' || c == b'\'') {
        end = close;
        let quote = b[close];
        let Some(open) = b[close.saturating_sub(33)..close]
            .iter()
            .rposition(|&c| c == quote)
            .map(|i| close.saturating_sub(33) + i)
        else {
            continue;
        };
        let key = &region[open + 1..close];
        let canonical: String = key
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        if !JSON_ANSWER_KEYS.contains(&canonical.as_str()) {
            continue;
        }
        let after = region[close + 1..].trim_start();
        let Some(value) = after.strip_prefix(':') else {
            continue;
        };
        let before = region[..open].trim_end();
        if trailing && !(before.ends_with('{') || before.ends_with(',')) {
            continue;
        }
        let value = value.trim_start();
        let (text, rest) = json_value(value)?;
        if trailing && !only_structure(rest) {
            return None;
        }
        let text = text.trim().to_string();
        if text.is_empty() {
            return None;
        }
        // A value that is itself a boxed answer or a sentence ending in one.
        return Some(match boxed_contents(&text).last() {
            Some(inner) => inner.to_string(),
            None => text,
        });
    }
    None
}

/// One JSON (or Python) value at the start of `s`: its text and what follows it. Strings keep
/// their backslashes (see [`json_answer`]); numbers, booleans and bare words are taken up to
/// the next `,`, `}` or line end; a list becomes its items joined with ", ".
fn json_value(s: &str) -> Option<(String, &str)> {
    json_value_nested(s, 0)
}

/// Lists nest at most this deep in an answer value (deeper input is not an answer, and the
/// bound keeps the recursion off the stack's limit).
const MAX_JSON_DEPTH: usize = 8;

fn json_value_nested(s: &str, depth: usize) -> Option<(String, &str)> {
    let first = s.chars().next()?;
    match first {
        '"' | '\'' => {
            let mut out = String::new();
            let mut chars = s[1..].char_indices();
            while let Some((i, c)) = chars.next() {
                if c == first {
                    return Some((out, &s[1 + i + 1..]));
                }
                if c == '\\' {
                    match chars.clone().next() {
                        Some((_, n)) if n == '\\' || n == '"' || n == '\'' || n == '/' => {
                            out.push(n);
                            chars.next();
                        }
                        _ => out.push('\\'),
                    }
                } else {
                    out.push(c);
                }
            }
            None
        }
        '[' => {
            let mut items = Vec::new();
            let mut rest = s[1..].trim_start();
            loop {
                if let Some(r) = rest.strip_prefix(']') {
                    return Some((items.join(", "), r));
                }
                if depth >= MAX_JSON_DEPTH {
                    return None;
                }
                let (item, r) = json_value_nested(rest, depth + 1)?;
                items.push(item);
                rest = r.trim_start();
                rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
                if items.len() > 64 {
                    return None;
                }
            }
        }
        '{' => None,
        _ => {
            let stop = s.find([',', '}', ']', '\n']).unwrap_or(s.len());
            let word = s[..stop].trim();
            (!word.is_empty() && word != "null").then(|| (word.to_string(), &s[stop..]))
        }
    }
}

/// Nothing but further object fields, closing brackets and a code fence, with at least one
/// closing brace.
fn only_structure(rest: &str) -> bool {
    let mut r = rest.trim_start();
    let mut closed = false;
    for _ in 0..256 {
        let Some(c) = r.chars().next() else {
            return closed;
        };
        match c {
            '}' | ']' => {
                closed |= c == '}';
                r = r[1..].trim_start();
            }
            ',' => {
                r = r[1..].trim_start();
                if r.starts_with(['}', ']']) {
                    continue;
                }
                // Another field: `"key": value`.
                let Some((_, after_key)) = json_value(r) else {
                    return false;
                };
                let Some(v) = after_key.trim_start().strip_prefix(':') else {
                    return false;
                };
                let v = v.trim_start();
                r = if v.starts_with('{') {
                    match matching_brace(v.as_bytes(), 0) {
                        Some(end) => v[end + 1..].trim_start(),
                        None => return false,
                    }
                } else {
                    match json_value(v) {
                        Some((_, after)) => after.trim_start(),
                        None => return false,
                    }
                };
            }
            '`' => return closed && r.trim_matches('`').trim().is_empty(),
            _ => return false,
        }
    }
    false
}

/// A multiple-choice letter among `letters`: the letter of an explicit answer (boxed, "answer
/// is (C)", "Answer: C"), else the last `(X)` naming one of the options, else a letter standing
/// alone as the last word (`… so it is C.`). Several different letters in one answer give none.
pub fn choice_in_text(region: &str, letters: &[char]) -> Option<char> {
    let explicit = {
        let boxed = boxed_contents(region);
        let candidates: Vec<String> = if let Some(last) = boxed.last() {
            vec![last.to_string()]
        } else if let Some(snippet) = after_answer_marker(region) {
            vec![first_sentence(snippet).to_string()]
        } else {
            Vec::new()
        };
        candidates.iter().find_map(|c| {
            choice_letter(c)
                .or_else(|| letter_in_parens(c, letters))
                .or_else(|| leading_letter(c, letters))
        })
    };
    let letter = explicit
        .or_else(|| letter_in_parens(region, letters))
        .or_else(|| {
            let last = region
                .split_whitespace()
                .last()?
                .trim_matches(['.', ',', '!', ';', ':', '*']);
            choice_letter(last).filter(|_| {
                last.chars()
                    .all(|c| c.is_ascii_uppercase() || "().*".contains(c))
            })
        })?;
    letters.contains(&letter).then_some(letter)
}

/// A letter among `letters` standing as the first word of an answer (`D, 65%`, `B: 144km`).
fn leading_letter(s: &str, letters: &[char]) -> Option<char> {
    let first = s.split_whitespace().next()?;
    let word = first.trim_matches(['(', ')', '[', ']', '*', '.', ',', ':', ';']);
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if letters.contains(&c) => Some(c),
        _ => None,
    }
}

/// The last `(X)` whose letter is one of `letters`.
fn letter_in_parens(s: &str, letters: &[char]) -> Option<char> {
    s.match_indices('(')
        .filter_map(|(i, _)| {
            let mut it = s[i + 1..].chars();
            match (it.next(), it.next()) {
                (Some(c), Some(')')) if letters.contains(&c.to_ascii_uppercase()) => {
                    Some(c.to_ascii_uppercase())
                }
                _ => None,
            }
        })
        .next_back()
}

/// The rules after the structured ones: boxed, `####`, "the answer is", the whole text, the
/// last math, the last number.
fn standard(region: &str, cfg: &ExtractConfig) -> Option<Extraction> {
    let boxed = boxed_contents(region);
    // An explicit "Final Answer: …" after the last box restates the answer and wins
    // (completions often box intermediate results first).
    let marker_after_box = after_answer_marker(region).filter(|snippet| {
        let marker_at = region.len() - snippet.len();
        let last_box = ["\\boxed", "\\fbox"]
            .iter()
            .filter_map(|p| region.rfind(p))
            .max()
            .unwrap_or(0);
        !boxed.is_empty() && marker_at > last_box && !snippet.contains("\\boxed")
    });
    if let Some(snippet) = marker_after_box {
        let ans = answer_in_snippet(snippet);
        if !ans.trim().is_empty() {
            return Some(Extraction {
                answers: vec![ans.trim().to_string()],
                method: Method::AnswerIs,
            });
        }
    }
    if let Some(e) = boxed_answers(&boxed, cfg.multiple_boxed) {
        return Some(e);
    }
    let one = |s: &str, method| {
        let s = s.trim();
        (!s.is_empty()).then(|| Extraction {
            answers: vec![s.to_string()],
            method,
        })
    };
    if let Some(e) = gsm8k(region).and_then(|line| one(line, Method::Gsm8k)) {
        return Some(e);
    }
    if let Some(ans) = answer_is(region)
        && let Some(e) = one(&ans, Method::AnswerIs)
    {
        return Some(e);
    }
    // Short answer-like text that parses as math is the answer itself.
    if looks_like_bare_answer(region)
        && crate::parse::parse(&crate::normalize::clean(region).text).is_ok()
        && let Some(e) = one(region, Method::Whole)
    {
        return Some(e);
    }
    // An answer field of a JSON object that prose follows is still an explicit answer (models
    // asked for JSON often add an explanation after it), stronger than any fallback.
    if let Some(ans) = json_answer(region, false)
        && let Some(e) = one(&ans, Method::Json)
    {
        return Some(e);
    }
    // The later of the last math segment and (if enabled) the last number.
    let math = last_math_at(region);
    let number = match cfg.fallback {
        Fallback::LastNumber => last_number_at(region),
        Fallback::None => None,
    };
    match (math, number) {
        (Some((mp, m)), Some((np, n))) => {
            if np > mp {
                one(&n, Method::LastNumber)
            } else {
                one(m, Method::LastMath)
            }
        }
        (Some((_, m)), None) => one(m, Method::LastMath),
        (None, Some((_, n))) => one(&n, Method::LastNumber),
        // Short answer-like text that is not math (`\text{4:30 p.m.}`) is compared as text.
        (None, None) if looks_like_bare_answer(region) => one(region, Method::Whole),
        (None, None) => None,
    }
}

/// Distinct boxed contents (compared after cleaning), in order of appearance.
fn distinct(boxed: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for b in boxed {
        let key: String = crate::normalize::clean(b)
            .text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !seen.contains(&key) {
            seen.push(key);
            out.push(b.to_string());
        }
    }
    out
}

/// Text following the last "answer is" / "answer:" / "答案是" marker.
fn after_answer_marker(region: &str) -> Option<&str> {
    answer_marker(region).map(|(_, snippet)| snippet)
}

/// The last answer marker: where it starts, and the text after it.
fn answer_marker(region: &str) -> Option<(usize, &str)> {
    let lower = region.to_ascii_lowercase();
    let mut best: Option<(usize, usize)> = None;
    let mut search_end = lower.len();
    while let Some(p) = lower[..search_end].rfind("answer") {
        let mut rest = &lower[p + 6..];
        // A short parenthetical between the word and its connective: zero-shot CoT's "the
        // answer (arabic numerals) is 18" (Kojima et al., 2022).
        if let Some(paren) = rest.trim_start().strip_prefix('(')
            && let Some(close) = paren.find(')')
            && close <= 40
            && !paren[..close].contains('\n')
        {
            rest = &paren[close + 1..];
        }
        let trimmed = rest.trim_start();
        let mut consumed = rest.len() - trimmed.len();
        let mut marker = false;
        let mut t = trimmed;
        for _ in 0..4 {
            let before = t.len();
            for conn in [
                ":",
                "is",
                "=",
                "would be",
                "will be",
                "should be",
                "be",
                "：",
                "of",
            ] {
                if let Some(r) = t.strip_prefix(conn) {
                    if conn != "of" {
                        marker = true;
                    }
                    t = r.trim_start();
                    break;
                }
            }
            if t.len() == before {
                break;
            }
        }
        consumed += trimmed.len() - t.len();
        if marker || t.starts_with('$') || t.starts_with("\\(") || t.starts_with("\\[") {
            best = Some((p, lower.len() - rest.len() + consumed));
            break;
        }
        search_end = p;
    }
    for zh in ["答案是", "答案为", "答案：", "答案:", "答："] {
        if let Some(p) = region.rfind(zh) {
            let at = p + zh.len();
            if best.is_none_or(|(_, b)| at > b) {
                best = Some((p, at));
            }
        }
    }
    best.map(|(start, b)| (start, &region[b..]))
}

/// The answer after the last marker whose answer is math (digits, commands or one symbol);
/// the last marker's text when none is. Harnesses that append a restatement ("The answer (in
/// words) is ninety-nine") after the answer sentence keep their numeric answer (at most four
/// markers are looked at).
fn answer_is(region: &str) -> Option<String> {
    let mut end = region.len();
    let mut last_text = None;
    for _ in 0..4 {
        let Some((start, snippet)) = answer_marker(&region[..end]) else {
            break;
        };
        let ans = answer_in_snippet(snippet);
        // Math here means it parses and has a digit, a command or one symbol: words such as
        // "ninety-nine" parse too, as products of letters.
        let cleaned = crate::normalize::clean(&ans).text;
        let t = cleaned.trim();
        let mathy = t.chars().any(|c| c.is_ascii_digit() || c == '\\') || t.chars().count() == 1;
        if mathy && crate::parse::parse(t).is_ok() {
            return Some(ans);
        }
        last_text.get_or_insert(ans);
        end = start;
    }
    last_text
}

/// The answer inside the sentence after a marker: cut at the end of the sentence (outside
/// math), then take what follows the last " is ", then the last math segment or the text.
fn answer_in_snippet(snippet: &str) -> String {
    let sentence = first_sentence(snippet);
    let after_is = last_outside_math(sentence, " is ").unwrap_or(sentence);
    if let Some(m) = last_math(after_is) {
        // `$12$ and $13$`: several math pieces joined by connectives form one answer.
        let prose_words = outside_math_words(after_is);
        if prose_words == 0 && math_spans(after_is).len() > 1 {
            let joined = crate::normalize::clean(after_is).text;
            if crate::parse::parse(&joined).is_ok() {
                return after_is.to_string();
            }
        }
        return m.to_string();
    }
    let words = after_is
        .split_whitespace()
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 3)
        .count();
    if words > 3
        && let Some(n) = last_number(after_is)
    {
        return n;
    }
    // A number followed by its unit or noun ("60 packets", "9.8 gallons"): the number.
    if let Some(n) = leading_number(after_is) {
        return n;
    }
    after_is.to_string()
}

/// A number at the start of `s` followed by a word of three or more letters that is not a
/// constant (`60 packets` → `60`; `2 pi` is left alone).
fn leading_number(s: &str) -> Option<String> {
    let t = s.trim_start().trim_start_matches('$');
    let end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || c == ',' || (c == '-' && i == 0)))
        .map_or(t.len(), |(i, _)| i);
    let num = t[..end].trim_end_matches(['.', ',']);
    let rest = &t[end..];
    let word: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphabetic())
        .collect();
    let followed_by_word = rest.starts_with(' ')
        && word.chars().count() >= 3
        && !matches!(word.to_lowercase().as_str(), "sqrt" | "and" | "times");
    (num.chars().any(|c| c.is_ascii_digit()) && followed_by_word).then(|| num.to_string())
}

/// Math state tracker: yields, for each byte index, whether it is inside math.
fn math_spans(s: &str) -> Vec<(usize, usize)> {
    // (start of content, end of content) for `$…$`, `$$…$$`, `\(…\)`, `\[…\]`.
    let b = s.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (open_len, close): (usize, &[u8]) = if b[i] == b'$' {
            if i > 0 && b[i - 1] == b'\\' {
                i += 1;
                continue;
            }
            if b.get(i + 1) == Some(&b'$') {
                (2, b"$$")
            } else {
                (1, b"$")
            }
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'(') {
            (2, b"\\)")
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'[') {
            (2, b"\\]")
        } else {
            i += 1;
            continue;
        };
        let start = i + open_len;
        let mut j = start;
        let mut found = None;
        while j + close.len() <= b.len() {
            if &b[j..j + close.len()] == close && !(close == b"$" && j > 0 && b[j - 1] == b'\\') {
                found = Some(j);
                break;
            }
            j += 1;
        }
        match found {
            Some(end) => {
                spans.push((start, end));
                i = end + close.len();
            }
            None => break,
        }
    }
    spans
}

fn first_sentence(s: &str) -> &str {
    let spans = math_spans(s);
    let inside = |i: usize| spans.iter().any(|&(a, b)| i >= a && i < b);
    let bytes = s.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        if inside(i) {
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let ends = match c {
            b'\n' => !s[..i].trim().is_empty(),
            b'.' => {
                let prev_digit = i > 0 && bytes[i - 1].is_ascii_digit();
                let next_digit = next.is_some_and(|n| n.is_ascii_digit());
                !(prev_digit && next_digit) && next.is_none_or(|n| n == b' ' || n == b'\n')
            }
            _ => false,
        };
        if ends {
            return &s[..i];
        }
    }
    s
}

fn last_outside_math<'a>(s: &'a str, pat: &str) -> Option<&'a str> {
    let spans = math_spans(s);
    s.match_indices(pat)
        .filter(|(i, _)| !spans.iter().any(|&(a, b)| *i >= a && *i < b))
        .last()
        .map(|(i, m)| &s[i + m.len()..])
}

/// The content of the last math segment in `s`.
pub fn last_math(s: &str) -> Option<&str> {
    last_math_at(s).map(|(_, m)| m)
}

/// The last non-empty math segment and the byte offset where it ends.
fn last_math_at(s: &str) -> Option<(usize, &str)> {
    math_spans(s)
        .into_iter()
        .rev()
        .map(|(a, b)| (b, &s[a..b]))
        .find(|(_, m)| !m.trim().is_empty())
}

/// The last number (optionally a fraction `a/b`) that does not sit inside a word or braces.
pub fn last_number(s: &str) -> Option<String> {
    last_number_at(s).map(|(_, n)| n)
}

fn last_number_at(s: &str) -> Option<(usize, String)> {
    let b = s.as_bytes();
    // Brace depth before each byte: numbers inside `{…}` (or after unbalanced `{`) are parts of
    // LaTeX constructs, not answers.
    let mut depth = Vec::with_capacity(b.len());
    let mut d: i64 = 0;
    for &c in b {
        depth.push(d);
        match c {
            b'{' => d += 1,
            // Stray closing braces do not open a level below zero.
            b'}' => d = (d - 1).max(0),
            _ => {}
        }
    }
    let mut i = b.len();
    while i > 0 {
        i -= 1;
        if !b[i].is_ascii_digit() {
            continue;
        }
        // Walk back over the number (digits, separators, decimal point, fraction bar).
        let end = i + 1;
        let mut start = i;
        while start > 0 {
            let c = b[start - 1];
            let ok = c.is_ascii_digit()
                || ((c == b',' || c == b'.' || c == b'/')
                    && start >= 2
                    && b[start - 2].is_ascii_digit());
            if !ok {
                break;
            }
            start -= 1;
        }
        if start > 0 && b[start - 1] == b'.' {
            start -= 1;
        }
        let preceded_by_letter = start > 0 && b[start - 1].is_ascii_alphabetic();
        if preceded_by_letter || depth[start] != 0 {
            i = start;
            continue;
        }
        let neg = start > 0 && b[start - 1] == b'-';
        let num = &s[start..end];
        return Some((
            start,
            if neg {
                format!("-{num}")
            } else {
                num.to_string()
            },
        ));
    }
    None
}

/// Words of three or more letters outside math, other than "and"/"or".
fn outside_math_words(s: &str) -> usize {
    let spans = math_spans(s);
    let mut words = 0;
    let mut word = String::new();
    let mut flush = |w: &mut String| {
        if w.chars().count() >= 3 && w != "and" {
            words += 1;
        }
        w.clear();
    };
    for (i, c) in s.char_indices() {
        let inside = spans.iter().any(|&(a, b)| i + 1 >= a && i < b + 1);
        if c.is_alphabetic() && !inside {
            word.push(c);
        } else {
            flush(&mut word);
        }
    }
    flush(&mut word);
    words
}

/// Short text that is an answer rather than prose: outside math and command names, at most
/// two words of three or more letters, and none at all when the text has math in it
/// (`Therefore $x \ge 5$ is the solution` is prose around an answer).
fn looks_like_bare_answer(region: &str) -> bool {
    let t = region.trim();
    if t.is_empty() || t.chars().count() > 300 {
        return false;
    }
    let spans = math_spans(t);
    let limit = if spans.is_empty() { 1 } else { 0 };
    let mut words = 0;
    // The current run of letters: start byte, length in characters, after a backslash?
    let mut run: Option<(usize, usize, bool)> = None;
    let mut prev_backslash = false;
    let mut count = |start: usize, end: usize, len: usize, command: bool| {
        if len >= 3 && !command && !t[start..end].eq_ignore_ascii_case("and") {
            words += 1;
        }
    };
    // Letters inside braces are arguments (`\begin{pmatrix}`, `\text{cm}`), not prose.
    let mut depth = 0usize;
    for (i, c) in t.char_indices() {
        let inside = spans.iter().any(|&(a, b)| i >= a && i < b);
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c.is_alphabetic() && !inside && depth == 0 {
            run = Some(match run {
                Some((start, len, cmd)) => (start, len + 1, cmd),
                None => (i, 1, prev_backslash),
            });
        } else if let Some((start, len, cmd)) = run.take() {
            count(start, i, len, cmd);
        }
        prev_backslash = c == '\\';
    }
    if let Some((start, len, cmd)) = run {
        count(start, t.len(), len, cmd);
    }
    words <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Option<(Vec<String>, Method)> {
        extract(s, &ExtractConfig::default()).map(|e| (e.answers, e.method))
    }

    #[test]
    fn boxed_is_brace_balanced_and_last_wins_when_identical() {
        let r = ex("so \\boxed{\\frac{1}{2}} hence \\boxed{\\frac{1}{2}}");
        assert_eq!(r, Some((vec!["\\frac{1}{2}".into()], Method::Boxed)));
        assert_eq!(
            boxed_contents("\\boxed{a{b}c} \\fbox{d}"),
            vec!["a{b}c", "d"]
        );
        assert!(boxed_contents("\\boxed{unbalanced").is_empty());
    }

    #[test]
    fn different_boxes_are_all_returned() {
        let r = ex("\\boxed{3} or maybe \\boxed{4}").map(|r| r.0.len());
        assert_eq!(r, Some(2));
    }

    #[test]
    fn think_block_is_not_the_answer() {
        assert_eq!(
            ex("<think>\\boxed{1}</think> The answer is \\boxed{2}."),
            Some((vec!["2".into()], Method::Boxed))
        );
        assert_eq!(ex("<think> still thinking \\boxed{1}"), None);
    }

    #[test]
    fn markers_and_fallbacks() {
        assert_eq!(
            ex("blah\n#### 1,234").map(|r| r.0),
            Some(vec!["1,234".into()])
        );
        assert_eq!(
            ex("Final Answer: The final answer is $(0, 1)$. I hope it is correct.").map(|r| r.0),
            Some(vec!["(0, 1)".into()])
        );
        assert_eq!(
            ex("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.").map(|r| r.0),
            Some(vec!["120".into()])
        );
        assert_eq!(
            ex("We computed many things and the probability is 2/3 overall, I think so.")
                .map(|r| r.0),
            Some(vec!["2/3".into()])
        );
        assert_eq!(ex("AZYUK2A"), Some((vec!["AZYUK2A".into()], Method::Whole)));
        let none = extract(
            "no numbers in this long sentence at all whatsoever",
            &ExtractConfig {
                fallback: Fallback::None,
                ..ExtractConfig::default()
            },
        );
        assert_eq!(none, None);
    }

    #[test]
    fn choices() {
        assert_eq!(
            choices_in("Pick one: (A) 1 (B) 2 (C) 3"),
            vec!['A', 'B', 'C']
        );
        assert!(choices_in("What is (A)?").is_empty());
        assert_eq!(choice_letter("\\text{(C)}"), Some('C'));
        assert_eq!(choice_letter("Option d"), Some('D'));
        assert_eq!(choice_letter("12"), None);
    }

    fn pinned(s: &str, format: AnswerFormat) -> Option<(Vec<String>, Method)> {
        let cfg = ExtractConfig {
            format,
            ..ExtractConfig::default()
        };
        extract(s, &cfg).map(|e| (e.answers, e.method))
    }

    #[test]
    fn trailing_json_answer_field() {
        let one = |a: &str, m| Some((vec![a.to_string()], m));
        // The reported failure: a structured-output completion scored as no answer.
        assert_eq!(
            ex(r#"{"reasoning": "3 + 2 = 5 apples in all", "answer": "5"}"#),
            one("5", Method::Json)
        );
        // Fenced, a number value, more fields after it, LaTeX written without escaping.
        assert_eq!(
            ex("Here you go:\n```json\n{\"answer\": 42, \"confidence\": 0.9}\n```"),
            one("42", Method::Json)
        );
        assert_eq!(
            ex(r#"{"steps": ["x = 1"], "final_answer": "\frac{1}{2}"}"#),
            one("\\frac{1}{2}", Method::Json)
        );
        assert_eq!(
            ex(r#"{"answer": "\\sqrt{2}"}"#),
            one("\\sqrt{2}", Method::Json)
        );
        // A boxed reasoning field does not outvote the answer field.
        assert_eq!(
            ex(r#"{"reasoning": "so \\boxed{4}", "Answer": "$\\boxed{5}$"}"#),
            one("5", Method::Json)
        );
        // Python dicts, and lists.
        assert_eq!(ex("{'answer': '7'}"), one("7", Method::Json));
        assert_eq!(ex(r#"{"answer": [1, 2]}"#), one("1, 2", Method::Json));
        // Prose after the object: an explicit answer in the prose wins.
        assert_eq!(
            ex(r#"Use {"answer": 3} as the format. The answer is 4."#),
            one("4", Method::AnswerIs)
        );
        // Prose after the object: still the explicit answer, ahead of the last number.
        assert_eq!(
            ex("```json\n{\"answer\": \"42\"}\n```\nHere is how: 7 * 6 = 42, then 43 more."),
            one("42", Method::Json)
        );
        // Pinned, the object need not be last.
        assert_eq!(
            pinned(r#"{"answer": 3} then more text"#, AnswerFormat::Json),
            one("3", Method::Json)
        );
        assert_eq!(pinned("The answer is 3.", AnswerFormat::Json), None);
        // Deeply nested lists are not an answer, and do not exhaust the stack.
        let deep = format!(
            "{{\"answer\": {}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(pinned(&deep, AnswerFormat::Json), None);
        assert_eq!(
            pinned(r#"{"answer": [[1, 2], [3]]}"#, AnswerFormat::Json),
            one("1, 2, 3", Method::Json)
        );
    }

    #[test]
    fn answer_tags_and_pinned_rules() {
        let one = |a: &str, m| Some((vec![a.to_string()], m));
        assert_eq!(
            ex("<think>2+2 is 4, \\boxed{4}</think> <answer> 5 </answer>"),
            one("5", Method::AnswerTag)
        );
        assert_eq!(
            ex("reasoning <answer>The answer is $\\boxed{12}$</answer>"),
            one("12", Method::AnswerTag)
        );
        assert_eq!(
            pinned(
                "<answer>\\frac{1}{3}</answer> then \\boxed{2}",
                AnswerFormat::AnswerTag
            ),
            one("\\frac{1}{3}", Method::AnswerTag)
        );
        // A pinned rule does not fall back to any other.
        assert_eq!(pinned("The answer is 3.", AnswerFormat::Boxed), None);
        assert_eq!(pinned("\\boxed{3}", AnswerFormat::AnswerIs), None);
        assert_eq!(
            pinned("so 4\n#### 4", AnswerFormat::Gsm8k),
            one("4", Method::Gsm8k)
        );
        assert_eq!(pinned("\\boxed{3}", AnswerFormat::Gsm8k), None);
        assert_eq!(
            pinned("\\boxed{3} and 17 apples", AnswerFormat::LastNumber),
            one("17", Method::LastNumber)
        );
        // Zero-shot CoT: a parenthetical before "is", a unit after the number, and a
        // restatement in words after the answer sentence.
        assert_eq!(
            ex("Therefore, the answer (arabic numerals) is 60 packets."),
            one("60", Method::AnswerIs)
        );
        assert_eq!(
            ex(
                "Therefore, the answer (arabic numerals) is 99.\n\nThe answer (words) is ninety-nine."
            ),
            one("99", Method::AnswerIs)
        );
        // The last number is an explicit, reported fallback.
        assert_eq!(
            ex("we have 3 bags with 14 apples in total"),
            one("14", Method::LastNumber)
        );
    }

    #[test]
    fn choice_letters() {
        let all = CHOICE_LETTERS;
        assert_eq!(choice_in_text("The answer is (B).", &all), Some('B'));
        assert_eq!(choice_in_text("The answer is B", &all), Some('B'));
        assert_eq!(choice_in_text("Answer: D", &all), Some('D'));
        assert_eq!(choice_in_text("so $\\boxed{C}$", &all), Some('C'));
        assert_eq!(
            choice_in_text("comparing (A) and (C), (C) wins", &all),
            Some('C')
        );
        assert_eq!(choice_in_text("Therefore it is E.", &all), Some('E'));
        assert_eq!(choice_in_text("**A**", &all), Some('A'));
        // Zero-shot CoT's "Among A through E, the answer is D, 65%."
        assert_eq!(
            choice_in_text("Among A through E, the answer is D, 65%.", &all),
            Some('D')
        );
        // Not a choice among the options, or a word.
        assert_eq!(
            choice_in_text("The answer is (F).", &['A', 'B', 'C', 'D']),
            None
        );
        assert_eq!(choice_in_text("I think so.", &all), None);
        assert_eq!(
            pinned("The correct option is (C).", AnswerFormat::Choice),
            one_choice('C')
        );
    }

    fn one_choice(c: char) -> Option<(Vec<String>, Method)> {
        Some((vec![c.to_string()], Method::Choice))
    }

    #[test]
    fn answer_format_names_round_trip() {
        for f in AnswerFormat::ALL {
            assert_eq!(f.name().parse::<AnswerFormat>(), Ok(f));
        }
        assert_eq!(
            "answer-is".parse::<AnswerFormat>(),
            Ok(AnswerFormat::AnswerIs)
        );
        let err = "yaml".parse::<AnswerFormat>().unwrap_err();
        assert!(err.contains("json") && err.contains("yaml"), "{err}");
    }

    #[test]
    fn last_number_skips_numbers_inside_words() {
        assert_eq!(last_number("x2 and 3.5 then y7"), Some("3.5".into()));
        assert_eq!(last_number("is 1,000.99m"), Some("1,000.99".into()));
        assert_eq!(last_number("minus -4"), Some("-4".into()));
    }
}
