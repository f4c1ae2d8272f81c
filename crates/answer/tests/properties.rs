//! Properties: every benchmark gold answer verifies against itself (bare and boxed in a
//! completion), results are deterministic, and adversarial input gives a quick `false`.
//!
//! `tests/data/gold_answers.txt` holds every distinct `answer` of `shared/data/*.jsonl`
//! (one JSON string per line), committed so the test runs on a clean checkout.

use reasonlab_answer::{VerifyConfig, verify};
use std::time::{Duration, Instant};

fn golds() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gold_answers.txt");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[test]
fn every_gold_answer_verifies_against_itself() {
    let cfg = VerifyConfig::default();
    let golds = golds();
    assert!(golds.len() > 2000, "fixture too small: {}", golds.len());
    let mut failures = Vec::new();
    for g in &golds {
        let bare = verify(g, g, None, &cfg);
        let boxed = verify(
            g,
            &format!("Hence the answer is $\\boxed{{{g}}}$."),
            None,
            &cfg,
        );
        if !bare.correct || !boxed.correct {
            failures.push(format!(
                "{g:?}: bare {:?}, boxed {:?}",
                bare.reason, boxed.reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn verification_is_deterministic() {
    let cfg = VerifyConfig::default();
    let pairs = [
        ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"),
        ("x^2-1", "(x-1)(x+2)"),
        ("\\sin^2 x + \\cos^2 x", "1"),
        ("\\pi", "3.1416"),
    ];
    for (g, p) in pairs {
        let first = verify(g, p, None, &cfg);
        for _ in 0..20 {
            assert_eq!(verify(g, p, None, &cfg), first, "{g} vs {p}");
        }
    }
    // And across threads.
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || verify("x^2+2x+1", "(x+1)^2", None, &cfg)))
        .collect();
    for h in handles {
        let v = h.join().map(|v| v.correct).unwrap_or(false);
        assert!(v);
    }
}

fn quick_false(gold: &str, pred: &str) {
    let start = Instant::now();
    let v = verify(gold, pred, None, &VerifyConfig::default());
    let took = start.elapsed();
    assert!(!v.correct, "expected false for {:.60}", pred);
    // Debug builds: generous bound; the release bench checks 100 ms.
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} on {:.60}",
        pred
    );
}

#[test]
fn adversarial_inputs_are_quick_and_false() {
    let garbage: String = (0..10_000)
        .map(|i| ['{', '\\', 'x', '^', '}', '$', '(', '9', '_', ' '][(i * 7 + i / 3) % 10])
        .collect();
    quick_false("1", &garbage);
    quick_false(
        "1",
        &format!("{}1{}", "{".repeat(10_000), "}".repeat(10_000)),
    );
    quick_false("1", &format!("\\boxed{{{}1", "{".repeat(10_000)));
    quick_false("1", &"}".repeat(10_000));
    quick_false("1", &format!("\\boxed{{{}}}", "(".repeat(10_000)));
    quick_false("1", &format!("\\boxed{{{}}}", "-".repeat(10_000)));
    quick_false("1", "\\boxed{10^{10^{10^{10}}}}");
    quick_false("10^{10^{10^{10}}}", "\\boxed{10^{10^{10^{11}}}}");
    quick_false("1", &format!("\\boxed{{{}}}", "9".repeat(5000)));
    quick_false(
        &"9".repeat(5000),
        &format!("\\boxed{{{}8}}", "9".repeat(4999)),
    );
    quick_false("1", "\\boxed{\\frac{\\q\\w}{\\}\\\\\\\\\\e}");
    quick_false("1", "\\boxed{99999999!}");
    quick_false("1", "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}");
    quick_false("1", &format!("\\boxed{{{}}}", "\\sqrt{".repeat(3000)));
    quick_false("1", &format!("\\boxed{{{}}}", "x+".repeat(5000)));
}

#[test]
fn big_numbers_are_exact() {
    let cfg = VerifyConfig::default();
    let n = "123456789".repeat(500);
    assert!(verify(&n, &format!("\\boxed{{{n}}}"), None, &cfg).correct);
    let mut m = n.clone();
    m.replace_range(2000..2001, "0");
    assert!(!verify(&n, &m, None, &cfg).correct);
}

/// Multi-byte characters next to numbers and unit words (found by the demo: a model emitted a
/// lone U+FFFD after a number, and unit stripping sliced inside it).
#[test]
fn non_ascii_text_never_panics() {
    let cfg = VerifyConfig::default();
    let pieces = [
        "\u{FFFD}", "人", "é", "5", " ", "cm", "\\boxed{", "}", "x", "²", "—", "ß", "12", "🙂",
    ];
    let mut state = 7u64;
    for _ in 0..4000 {
        let mut s = String::new();
        for _ in 0..6 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(pieces[(state >> 33) as usize % pieces.len()]);
        }
        let _ = verify("5", &s, None, &cfg);
        let _ = verify(&s, "5", None, &cfg);
    }
    assert!(!verify("5", "\\boxed{6}\u{FFFD}", None, &cfg).correct);
}
