//! Fuzzes extraction, parsing and equivalence together: any input must return (never panic,
//! hang or allocate without bound), `verify` must be deterministic, and an answer must verify
//! against itself whenever it parses as a finite exact number.
//! Run with `cargo +nightly fuzz run verify` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reasonlab_answer::{AnswerFormat, VerifyConfig, extract, parse_answer, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Split into gold and prediction at the first NUL, so the fuzzer can vary both.
    let (gold, pred) = text.split_once('\0').unwrap_or((text, text));
    let cfg = VerifyConfig::default();
    let _ = extract::extract(pred, &cfg.extract);
    // Every pinned answer format on the same input.
    for format in AnswerFormat::ALL {
        let mut pinned = cfg;
        pinned.extract.format = format;
        let v = verify(gold, pred, None, &pinned);
        assert_eq!(v, verify(gold, pred, None, &pinned), "{format} is not deterministic");
    }
    let _ = parse_answer(pred);
    let a = verify(gold, pred, None, &cfg);
    let b = verify(gold, pred, None, &cfg);
    assert_eq!(a, b, "verify is not deterministic");
    let parsed = parse_answer(gold);
    if let reasonlab_answer::Node::Num { .. } = parsed.node {
        assert!(verify(gold, gold, None, &cfg).correct, "number not equal to itself: {gold:?}");
    }
});
