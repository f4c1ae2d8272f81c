//! Completions in the formats that models and evaluation harnesses emit, verified end to end:
//! which rule fired is part of the verdict, and a pinned format uses that rule alone.

use reasonlab_answer::{AnswerFormat, Method, Reason, VerifyConfig, verify};

fn cfg(format: AnswerFormat) -> VerifyConfig {
    let mut c = VerifyConfig::default();
    c.extract.format = format;
    c
}

#[track_caller]
fn check(gold: &str, pred: &str, problem: Option<&str>, correct: bool, method: Option<Method>) {
    let v = verify(gold, pred, problem, &VerifyConfig::default());
    assert_eq!((v.correct, v.method), (correct, method), "{pred:?}: {v:?}");
}

#[test]
fn every_common_format_is_read() {
    use Method::*;
    check("5", "Thus $\\boxed{5}$.", None, true, Some(Boxed));
    check("5", "Thus $\\fbox{5}$.", None, true, Some(Boxed));
    check(
        "18",
        "She sells 16 - 3 - 4 = 9 eggs.\n#### 18",
        None,
        true,
        Some(Gsm8k),
    );
    check("3/4", "The answer is 3/4.", None, true, Some(AnswerIs));
    check(
        "5",
        r#"{"reasoning": "2 + 3 = 5", "answer": "5"}"#,
        None,
        true,
        Some(Json),
    );
    check(
        "\\frac{1}{2}",
        "```json\n{\"reasoning\": \"half of it\", \"answer\": \"\\\\frac{1}{2}\"}\n```",
        None,
        true,
        Some(Json),
    );
    check(
        "12",
        "<think>6 * 2</think>\n<answer>12</answer>",
        None,
        true,
        Some(AnswerTag),
    );
    check("C", "The answer is (C).", None, true, Some(Choice));
    check("C", "Answer: C", None, true, Some(Choice));
    check("(B)", "so the answer is A", None, false, Some(Choice));
    check(
        "7",
        "I counted 3 red and 7 blue",
        None,
        true,
        Some(LastNumber),
    );
}

#[test]
fn the_reported_structured_output_is_no_longer_no_answer() {
    let v = verify(
        "5",
        "{\"reasoning\": \"Tom has 2 apples and buys 3 more, 2 + 3 = 5.\", \"answer\": \"5\"}",
        None,
        &VerifyConfig::default(),
    );
    assert_eq!(v.reason, Reason::Equivalent, "{v:?}");
    assert_eq!(v.extracted.as_deref(), Some("5"));
}

#[test]
fn a_pinned_format_uses_one_rule() {
    let pred = "The answer is 4. {\"answer\": 5} \\boxed{6}";
    let got = |f| {
        let v = verify("5", pred, None, &cfg(f));
        (v.correct, v.extracted, v.method)
    };
    assert_eq!(
        got(AnswerFormat::Auto),
        (false, Some("6".into()), Some(Method::Boxed))
    );
    assert_eq!(
        got(AnswerFormat::Json),
        (true, Some("5".into()), Some(Method::Json))
    );
    assert_eq!(got(AnswerFormat::AnswerIs).2, Some(Method::AnswerIs));
    assert_eq!(got(AnswerFormat::Gsm8k), (false, None, None));
    // A letter gold under the choice format, with no problem text.
    let v = verify("(d)", "I pick (D) here.", None, &cfg(AnswerFormat::Choice));
    assert!(v.correct, "{v:?}");
}

#[test]
fn letters_in_math_answers_are_not_choices() {
    // A problem without listed options and a lowercase gold: ordinary math.
    check(
        "x",
        "The answer is $x$.",
        Some("Solve for the variable."),
        true,
        Some(Method::AnswerIs),
    );
}
