//! End-to-end tests of the JSONL streams and the benchmark, on in-memory buffers and the
//! committed fixtures (`examples/rewards.toml`, the answer crate's suite).

use reasonlab_reward::{RewardConfig, bench_verify, reward_stream, verify_stream};
use serde_json::Value;
use std::path::Path;

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("output {l:?}: {e}")))
        .collect()
}

#[test]
fn verify_stream_keeps_order_and_reports_bad_lines() {
    let mut input = String::new();
    let mut expected = Vec::new();
    for i in 0..5000 {
        // Alternate right and wrong answers so that order mistakes show.
        let right = i % 3 != 0;
        let pred = if right { i } else { i + 1 };
        input.push_str(&format!(
            "{{\"id\": {i}, \"gold\": \"{i}\", \"pred\": \"<think>hm</think> \\\\boxed{{{pred}}}\"}}\n"
        ));
        expected.push(Some(right));
        if i == 10 {
            input.push_str("this is not json\n");
            expected.push(None);
            input.push_str("{\"gold\": \"1\"}\n");
            expected.push(None);
            input.push('\n');
            input.push_str("[1, 2]\n");
            expected.push(None);
        }
    }
    input.push_str("{\"gold\": 18, \"pred\": \"so she makes 18 dollars\"}");
    expected.push(Some(true));
    let mut out = Vec::new();
    let stats = verify_stream(input.as_bytes(), &mut out, 2).unwrap_or_else(|e| panic!("{e}"));
    let got = lines(&out);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        match e {
            Some(right) => assert_eq!(g["correct"], Value::Bool(*right), "{g}"),
            None => assert!(
                g["error"].as_str().is_some_and(|s| s.starts_with("line ")),
                "{g}"
            ),
        }
    }
    assert_eq!(
        got[12]["error"].as_str().map(|s| s.starts_with("line 13:")),
        Some(true)
    );
    assert_eq!(got[0]["id"], Value::from(0));
    assert_eq!(got[1]["extracted"], Value::from("1"));
    assert_eq!(got[0]["reason"], Value::from("not_equivalent"));
    assert_eq!(stats.errors, 3);
    assert_eq!(stats.lines as usize, expected.len());
    assert_eq!(stats.correct + stats.incorrect + stats.errors, stats.lines);
}

#[test]
fn verify_stream_is_the_same_on_one_and_many_threads() {
    let input: String = (0..300)
        .map(|i| {
            format!(
                "{{\"gold\": \"\\\\frac{{{i}}}{{7}}\", \"pred\": \"{}\"}}\n",
                i as f64 / 7.0
            )
        })
        .collect();
    let mut one = Vec::new();
    let mut many = Vec::new();
    verify_stream(input.as_bytes(), &mut one, 1).unwrap_or_else(|e| panic!("{e}"));
    verify_stream(input.as_bytes(), &mut many, 4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one, many);
}

#[test]
fn reward_stream_with_the_example_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rewards.toml");
    let cfg = RewardConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let input = concat!(
        "{\"gold\": \"4\", \"completion\": \"<think>two plus two</think> \\\\boxed{4}\"}\n",
        "{\"gold\": \"4\", \"completion\": \"\\\\boxed{5}\"}\n",
        "{\"completion\": \"<think>二加二</think> 4\"}\n",
        "{\"gold\": \"4\"}\n",
    );
    let mut out = Vec::new();
    let stats =
        reward_stream(&cfg, input.as_bytes(), &mut out, 2).unwrap_or_else(|e| panic!("{e}"));
    let got = lines(&out);
    assert_eq!(got.len(), 4);
    assert_eq!(got[0]["rewards"]["accuracy"], Value::from(1.0));
    assert_eq!(got[0]["rewards"]["think_format"], Value::from(1.0));
    assert_eq!(got[0]["rewards"]["language_consistency"], Value::from(1.0));
    assert!((got[0]["total"].as_f64().unwrap_or(0.0) - 1.3).abs() < 1e-12);
    assert_eq!(got[1]["total"], Value::from(0.0));
    // No gold: accuracy does not apply; Chinese reasoning scores 0 on a Latin target.
    assert_eq!(got[2]["rewards"]["accuracy"], Value::Null);
    assert_eq!(got[2]["rewards"]["language_consistency"], Value::from(0.0));
    assert!((got[2]["total"].as_f64().unwrap_or(-1.0) - 0.2).abs() < 1e-12);
    assert!(
        got[3]["error"]
            .as_str()
            .is_some_and(|s| s.contains("completion"))
    );
    assert_eq!(stats.errors, 1);
}

#[test]
fn bench_on_the_committed_suite() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../answer/tests/data/suite.jsonl");
    let r = bench_verify(&suite).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.cases >= 500);
    assert!(r.accuracy >= 0.985, "{r}");
    assert_eq!(r.false_positives + r.false_negatives, r.wrong_lines.len());
    assert!(r.cases_per_sec > 0.0);
    assert!(bench_verify(Path::new("/nonexistent/suite.jsonl")).is_err());
}

/// The example in docs/verifier.md, output for output.
#[test]
fn documented_example_output() {
    let input = concat!(
        "{\"gold\": \"\\\\frac{1}{2}\", \"pred\": \"<think>…</think> So the answer is $\\\\boxed{0.5}$.\"}\n",
        "{\"gold\": \"3\", \"pred\": \"\\\\boxed{3} or maybe \\\\boxed{4}\"}\n",
        "not json\n",
    );
    let mut out = Vec::new();
    verify_stream(input.as_bytes(), &mut out, 1).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out);
    let expected = concat!(
        "{\"correct\":true,\"extracted\":\"0.5\",\"method\":\"boxed\",\"reason\":\"equivalent\"}\n",
        "{\"correct\":false,\"extracted\":\"3, 4\",\"method\":\"boxed\",\"reason\":\"multiple_answers\"}\n",
        "{\"error\":\"line 3: invalid JSON: expected ident at line 1 column 2\"}\n",
    );
    assert_eq!(text, expected);
}
