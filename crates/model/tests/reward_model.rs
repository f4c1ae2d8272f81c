//! An outcome reward model in transformers' `Qwen2ForSequenceClassification` layout scores like
//! transformers (golden values from `scripts/make_rm_fixture.py`).

use std::path::PathBuf;

use reasonlab_model::tensor::Device;
use reasonlab_model::{PadSide, RewardHead, RewardModel, SaveDtype, TokenBatch};

#[test]
fn sequence_classification_scores_match_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2-rm");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let seqs: Vec<Vec<u32>> = serde_json::from_value(reference["sequences"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(reference["scores"].clone()).unwrap();
    let rm = RewardModel::load(&dir, &Device::flex()).unwrap();
    assert_eq!(rm.num_labels(), 1);
    // Right padding, as transformers was run; left padding must give the same scores.
    for side in [PadSide::Right, PadSide::Left] {
        let batch = TokenBatch::pad(&seqs, 0, side);
        let got = rm.scores(&batch).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g[0] - w).abs() < 1e-4, "{side:?} row {i}: {} vs {w}", g[0]);
        }
    }
    // One sequence alone scores as it does in the batch.
    let alone = rm
        .scores(&TokenBatch::pad(&seqs[1..2], 0, PadSide::Right))
        .unwrap();
    assert!((alone[0][0] - want[1]).abs() < 1e-4);
}

fn prm_reference() -> (PathBuf, serde_json::Value, Vec<Vec<u32>>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2-prm");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let seqs = serde_json::from_value(reference["sequences"].clone()).unwrap();
    (dir, reference, seqs)
}

/// Every column of every row, as step ends.
fn all_columns(seqs: &[Vec<u32>]) -> Vec<Vec<usize>> {
    seqs.iter().map(|s| (0..s.len()).collect()).collect()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what} row {i}");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() < 1e-4, "{what} row {i} col {j}: {a} vs {b}");
        }
    }
}

#[test]
fn token_classification_step_probs_match_transformers() {
    let (dir, reference, seqs) = prm_reference();
    let want: Vec<Vec<f32>> =
        serde_json::from_value(reference["token_good_probs"].clone()).unwrap();
    let rm = RewardModel::load(&dir, &Device::flex()).unwrap();
    assert_eq!(rm.head(), RewardHead::Token);
    assert_eq!(rm.num_labels(), 2);
    let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
    let got = rm.step_probs(&batch, &all_columns(&seqs)).unwrap();
    assert_close(&got, &want, "token head");
}

#[test]
fn math_shepherd_reading_of_a_causal_lm_matches_transformers() {
    let (_, reference, seqs) = prm_reference();
    let want: Vec<Vec<f32>> =
        serde_json::from_value(reference["shepherd_good_probs"].clone()).unwrap();
    let good = reference["good_token"].as_u64().unwrap() as u32;
    let bad = reference["bad_token"].as_u64().unwrap() as u32;
    let lm_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2");
    let rm = RewardModel::load_good_token(&lm_dir, &Device::flex(), good, bad).unwrap();
    let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
    let got = rm.step_probs(&batch, &all_columns(&seqs)).unwrap();
    assert_close(&got, &want, "good-token");
    // A causal LM is not a classification checkpoint.
    let err = RewardModel::load(&lm_dir, &Device::flex()).unwrap_err();
    assert!(err.to_string().contains("not a reward model"), "{err}");
}

#[test]
fn reward_models_save_and_load_in_their_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _, seqs) = prm_reference();
    let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
    let cols = all_columns(&seqs);
    // A checkpoint round trip keeps every score.
    let prm = RewardModel::load(&dir, &Device::flex()).unwrap();
    prm.save(tmp.path(), SaveDtype::F32).unwrap();
    let back = RewardModel::load(tmp.path(), &Device::flex()).unwrap();
    assert_eq!(back.head(), RewardHead::Token);
    assert_close(
        &back.step_probs(&batch, &cols).unwrap(),
        &prm.step_probs(&batch, &cols).unwrap(),
        "round trip",
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "Qwen2ForTokenClassification");
    assert_eq!(config["num_labels"], 2);
    // A fresh outcome head on a causal LM: one label, no lm_head, written as SequenceClassification.
    let lm_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2");
    let lm = reasonlab_model::Model::load(&lm_dir, &Device::flex()).unwrap();
    let orm = RewardModel::from_lm(lm, RewardHead::Sequence, 7).unwrap();
    let out = tmp.path().join("orm");
    orm.save(&out, SaveDtype::F32).unwrap();
    let back = RewardModel::load(&out, &Device::flex()).unwrap();
    assert_eq!(back.head(), RewardHead::Sequence);
    let (a, b) = (orm.scores(&batch).unwrap(), back.scores(&batch).unwrap());
    assert_close(&a, &b, "outcome round trip");
    assert!(
        a.iter().any(|s| s[0].abs() > 1e-3),
        "a fresh head scores non-zero: {a:?}"
    );
}
