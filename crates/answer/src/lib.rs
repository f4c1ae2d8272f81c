//! Final-answer extraction and mathematical equivalence: the one place in reasonlab that
//! decides whether a model's answer is right.
//!
//! Pipeline: [`extract`] finds the answer text in a completion, [`normalize`] strips what has no
//! mathematical value, [`parse`] builds a [`Node`] tree, and [`equiv`] compares trees with exact
//! big-rational arithmetic first and seeded numeric identity testing second ([`eval`]).
//! Everything is pure, deterministic, thread-safe and bounded in time and memory: no signals,
//! no subprocesses, no global state (math-verify's signal-based timeouts fail outside the main
//! thread, which silently zeroes RL rewards; this design has nothing to time out).
//!
//! ```
//! use reasonlab_answer::{verify, VerifyConfig};
//! let cfg = VerifyConfig::default();
//! assert!(verify("\\frac{1}{2}", "So the answer is $\\boxed{0.5}$.", None, &cfg).correct);
//! assert!(!verify("2", "\\boxed{2} or \\boxed{3}", None, &cfg).correct);
//! ```

#![forbid(unsafe_code)]

pub mod equiv;
pub mod eval;
pub mod extract;
pub mod node;
pub mod normalize;
pub mod parse;

pub use extract::{
    AnswerFormat, ExtractConfig, Extraction, Fallback, Method, MultipleBoxed, ThinkPolicy,
};
pub use node::Node;
pub use parse::ParseError;

use serde::{Deserialize, Serialize};

/// Operations allowed for one verification (see [`eval::Budget`]); about 10 ms of work at most.
pub const VERIFY_BUDGET: u64 = 4_000_000;

/// How a percent sign in an answer is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PercentPolicy {
    /// `28\%` equals `28` and `0.28` (math-verify drops the sign; the Qwen2.5-Math grader also
    /// accepts the fraction).
    #[default]
    Either,
    /// The sign is dropped: `28\%` equals `28` only.
    Strip,
    /// The sign divides by 100: `28\%` equals `0.28` only.
    Fraction,
}

/// Verification settings (a typed mirror of the `[accuracy]` TOML table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyConfig {
    #[serde(flatten)]
    pub extract: ExtractConfig,
    pub percent: PercentPolicy,
}

/// Why a verdict came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The extracted answer is equivalent to the gold answer.
    Equivalent,
    /// An answer was found and parsed but is not equivalent.
    NotEquivalent,
    /// Several different boxed answers against a single gold answer.
    MultipleAnswers,
    /// No answer could be found in the prediction.
    NoAnswer,
    /// The gold answer is empty.
    EmptyGold,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Equivalent => "equivalent",
            Reason::NotEquivalent => "not_equivalent",
            Reason::MultipleAnswers => "multiple_answers",
            Reason::NoAnswer => "no_answer",
            Reason::EmptyGold => "empty_gold",
        })
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub correct: bool,
    /// The answer text taken from the prediction (cleaned), if any.
    pub extracted: Option<String>,
    pub reason: Reason,
    /// The extraction rule that found the answer (`None` when none did).
    pub method: Option<Method>,
}

/// A cleaned and parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub node: Node,
    pub percent: bool,
    /// The cleaned text it was parsed from.
    pub text: String,
}

/// Cleans and parses one answer string; text that is not math becomes [`Node::Text`].
pub fn parse_answer(raw: &str) -> Parsed {
    let cleaned = normalize::clean(raw);
    let node = match parse::parse(&cleaned.text) {
        Ok(n) => n,
        Err(_) => Node::Text(
            cleaned
                .text
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '{' && *c != '}')
                .flat_map(char::to_lowercase)
                .collect(),
        ),
    };
    Parsed {
        node,
        percent: cleaned.percent,
        text: cleaned.text,
    }
}

fn combine(parts: Vec<Parsed>) -> Option<Parsed> {
    if parts.len() <= 1 {
        return parts.into_iter().next();
    }
    let text = parts
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let percent = parts.iter().any(|p| p.percent);
    let node = Node::List(parts.into_iter().map(|p| p.node).collect());
    Some(Parsed {
        node,
        percent,
        text,
    })
}

/// Parses a gold answer: its boxed answers if it has any (a full reference solution), else the
/// whole string, else (for long unparseable text) whatever [`extract::extract`] finds.
pub fn parse_gold(gold: &str) -> Option<Parsed> {
    let boxed = extract::boxed_contents(gold);
    if !boxed.is_empty() {
        let mut seen: Vec<String> = Vec::new();
        let mut parts = Vec::new();
        for b in boxed {
            let p = parse_answer(b);
            if !seen.contains(&p.text) {
                seen.push(p.text.clone());
                parts.push(p);
            }
        }
        return combine(parts);
    }
    let whole = parse_answer(gold);
    if whole.text.is_empty() {
        return None;
    }
    if matches!(whole.node, Node::Text(_)) && gold.chars().count() > 60 {
        let cfg = ExtractConfig {
            fallback: Fallback::None,
            ..ExtractConfig::default()
        };
        if let Some(e) = extract::extract(gold, &cfg) {
            return combine(e.answers.iter().map(|a| parse_answer(a)).collect());
        }
    }
    Some(whole)
}

/// Extracts and parses the final answer of a completion, exactly as [`verify`] does for a
/// gold that is not a multiple-choice letter: [`extract::extract`], then [`parse_answer`] on each
/// answer found (several distinct boxed answers become one [`Node::List`]).
///
/// This is what majority voting needs: two completions vote for the same answer when
/// [`equivalent`] holds between their parsed predictions.
///
/// ```
/// use reasonlab_answer::{equivalent, parse_prediction, ExtractConfig, PercentPolicy};
/// let cfg = ExtractConfig::default();
/// let a = parse_prediction("so $\\boxed{\\frac{1}{2}}$", &cfg).unwrap();
/// let b = parse_prediction("The answer is 0.5.", &cfg).unwrap();
/// assert!(equivalent(&a, &b, PercentPolicy::default()));
/// assert!(parse_prediction("<think>still thinking", &cfg).is_none());
/// ```
pub fn parse_prediction(pred: &str, cfg: &ExtractConfig) -> Option<Parsed> {
    let extraction = extract::extract(pred, cfg)?;
    combine(extraction.answers.iter().map(|a| parse_answer(a)).collect())
}

/// Compares two parsed answers under the percent policy.
pub fn equivalent(gold: &Parsed, pred: &Parsed, percent: PercentPolicy) -> bool {
    let mut budget = eval::Budget::new(VERIFY_BUDGET);
    let hundredth = |p: &Parsed| {
        if p.percent && p.node.is_scalar() {
            Node::Div(Box::new(p.node.clone()), Box::new(Node::int(100)))
        } else {
            p.node.clone()
        }
    };
    let strip = || {
        equiv::equivalent(
            &gold.node,
            &pred.node,
            &mut eval::Budget::new(VERIFY_BUDGET),
        )
    };
    match percent {
        PercentPolicy::Strip => strip(),
        PercentPolicy::Fraction => {
            equiv::equivalent(&hundredth(gold), &hundredth(pred), &mut budget)
        }
        PercentPolicy::Either => {
            if strip() {
                return true;
            }
            if !(gold.percent || pred.percent) {
                return false;
            }
            equiv::equivalent(&hundredth(gold), &hundredth(pred), &mut budget)
        }
    }
}

/// Decides whether `pred` (a whole completion or a bare answer) answers `gold` correctly.
///
/// `problem`, when given, is searched for multiple-choice options so that a letter answer can
/// be matched against a letter gold.
pub fn verify(gold: &str, pred: &str, problem: Option<&str>, cfg: &VerifyConfig) -> Verdict {
    let Some(gold_parsed) = parse_gold(gold) else {
        return Verdict::none(Reason::EmptyGold);
    };
    if let Some((letter, choices)) = multiple_choice(gold, problem, cfg.extract.format) {
        return verify_choice(letter, pred, &choices, cfg);
    }
    let Some(extraction) = extract::extract(pred, &cfg.extract) else {
        return Verdict::none(Reason::NoAnswer);
    };
    let several = extraction.answers.len() > 1;
    let Some(pred_parsed) = combine(extraction.answers.iter().map(|a| parse_answer(a)).collect())
    else {
        return Verdict::none(Reason::NoAnswer);
    };
    let correct = equivalent(&gold_parsed, &pred_parsed, cfg.percent);
    let reason = match (correct, several) {
        (true, _) => Reason::Equivalent,
        (false, true) => Reason::MultipleAnswers,
        (false, false) => Reason::NotEquivalent,
    };
    Verdict {
        correct,
        extracted: Some(pred_parsed.text),
        reason,
        method: Some(extraction.method),
    }
}

impl Verdict {
    fn none(reason: Reason) -> Self {
        Verdict {
            correct: false,
            extracted: None,
            reason,
            method: None,
        }
    }
}

/// A multiple-choice question, and its options: a letter gold with a problem that lists
/// options; a letter gold (an uppercase `A`–`J`, with or without parentheses) when no problem
/// text is given, as in harness outputs that keep only the letter; or any letter gold when the
/// format is pinned to [`AnswerFormat::Choice`].
fn multiple_choice(
    gold: &str,
    problem: Option<&str>,
    format: AnswerFormat,
) -> Option<(char, Vec<char>)> {
    let letter = extract::choice_letter(gold)?;
    let listed = problem.map(extract::choices_in).unwrap_or_default();
    if listed.contains(&letter) {
        return Some((letter, listed));
    }
    let uppercase = gold.chars().any(|c| c.is_ascii_uppercase());
    let all = extract::CHOICE_LETTERS;
    let any_letter = format == AnswerFormat::Choice
        || (format == AnswerFormat::Auto && problem.is_none() && uppercase);
    (any_letter && all.contains(&letter)).then(|| (letter, all.to_vec()))
}

fn verify_choice(gold: char, pred: &str, choices: &[char], cfg: &VerifyConfig) -> Verdict {
    let Some(region) = extract::answer_region(pred, cfg.extract.think) else {
        return Verdict::none(Reason::NoAnswer);
    };
    // A pinned format other than `choice` still decides where the letter is read.
    let pinned = !matches!(
        cfg.extract.format,
        AnswerFormat::Auto | AnswerFormat::Choice
    );
    let from_extraction = extract::extract(pred, &cfg.extract).and_then(|e| {
        let letters: Vec<char> = e
            .answers
            .iter()
            .filter_map(|a| extract::choice_letter(a))
            .collect();
        match letters.as_slice() {
            [one] => Some(Ok(*one)),
            [] => None,
            _ => Some(Err(())),
        }
    });
    let found = if pinned {
        from_extraction
    } else {
        from_extraction.or_else(|| extract::choice_in_text(region, choices).map(Ok))
    };
    match found {
        Some(Ok(letter)) => Verdict {
            correct: letter == gold,
            extracted: Some(letter.to_string()),
            reason: if letter == gold {
                Reason::Equivalent
            } else {
                Reason::NotEquivalent
            },
            method: Some(Method::Choice),
        },
        Some(Err(())) => Verdict {
            method: Some(Method::Choice),
            ..Verdict::none(Reason::MultipleAnswers)
        },
        None => Verdict::none(Reason::NoAnswer),
    }
}
