//! Load models trained by fastText 0.9.2 (`scripts/fasttext_check.py --make-fixture`) and
//! check our predictions against the ones fastText wrote for the same lines.

use std::path::PathBuf;

use reasonlab_corpus::fasttext::{FastText, FastTextError, Scratch};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[derive(serde::Deserialize)]
struct Expected {
    model: String,
    line: usize,
    predictions: Vec<(String, f32)>,
}

fn check(model_name: &str) {
    let model = FastText::load(&data(model_name)).unwrap();
    let test = std::fs::read_to_string(data("test.txt")).unwrap();
    let lines: Vec<&str> = test.lines().collect();
    let expected: Vec<Expected> = std::fs::read_to_string(data("expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Expected| e.model == model_name)
        .collect();
    assert_eq!(expected.len(), lines.len());
    let mut scratch = Scratch::default();
    for e in expected {
        let got = model
            .predict_line(lines[e.line], 2, 0.0, &mut scratch)
            .unwrap();
        assert_eq!(got.len(), e.predictions.len(), "line {}", e.line);
        for (g, (label, prob)) in got.iter().zip(&e.predictions) {
            assert_eq!(&g.label, label, "line {}", e.line);
            assert!(
                (g.prob - prob).abs() < 1e-5,
                "line {}: {} vs fastText {}",
                e.line,
                g.prob,
                prob
            );
        }
    }
}

#[test]
fn fasttext_bin_predictions_match() {
    check("model.bin");
}

#[test]
fn fasttext_ftz_predictions_match() {
    let m = FastText::load(&data("model.ftz")).unwrap();
    assert!(m.is_quantized());
    check("model.ftz");
}

#[test]
fn saved_bin_is_byte_identical_to_fasttext() {
    let bytes = std::fs::read(data("model.bin")).unwrap();
    let m = FastText::from_bytes(&bytes).unwrap();
    assert_eq!(m.args.dim, 8);
    assert_eq!(m.args.bucket, 2000);
    assert_eq!(m.args.word_ngrams, 2);
    assert_eq!(
        m.labels(),
        ["__label__other", "__label__math"]
            .map(String::from)
            .to_vec()
    );
    let mut out = Vec::new();
    m.write(&mut out).unwrap();
    assert!(
        out == bytes,
        "re-serialised model differs from fastText's file"
    );
}

#[test]
fn corrupt_models_are_errors_not_panics() {
    let bytes = std::fs::read(data("model.bin")).unwrap();
    assert!(matches!(
        FastText::from_bytes(b"no"),
        Err(FastTextError::Corrupt(_))
    ));
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(matches!(
        FastText::from_bytes(&bad),
        Err(FastTextError::BadMagic { .. })
    ));
    let mut newer = bytes.clone();
    newer[4] = 13;
    assert!(matches!(
        FastText::from_bytes(&newer),
        Err(FastTextError::Version { found: 13 })
    ));
    for cut in [10, 60, 200, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            FastText::from_bytes(&bytes[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
    // A huge matrix size must be refused before allocating it.
    let ftz = std::fs::read(data("model.ftz")).unwrap();
    for cut in [ftz.len() / 3, ftz.len() - 3] {
        assert!(FastText::from_bytes(&ftz[..cut]).is_err());
    }
}

#[test]
fn test_meter_prints_like_fasttext() {
    let m = FastText::load(&data("model.bin")).unwrap();
    let f = std::fs::File::open(data("test.txt")).unwrap();
    let meter = m.test(std::io::BufReader::new(f), 1, 0.0).unwrap();
    assert_eq!(meter.examples, 40);
    let text = meter.general_metrics(1);
    assert!(text.starts_with("N\t40\nP@1\t"), "{text}");
}
