//! An outcome reward model in transformers' `Qwen2ForSequenceClassification` layout scores like
//! transformers (golden values from `scripts/make_rm_fixture.py`).

use std::path::PathBuf;

use reasonlab_model::tensor::Device;
use reasonlab_model::{PadSide, RewardModel, TokenBatch};

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
