//! Parity with transformers on the committed tiny checkpoints.
//!
//! Reference values come from `scripts/make_fixtures.py` (torch + transformers; versions in
//! each `reference.json`). Tolerance 1e-4 on logits and log-probs, as the model-core issue asks.

use std::path::PathBuf;

use reasonlab_model::burn::tensor::Device;
use reasonlab_model::{Model, PadSide, SaveDtype, TokenBatch};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
    logprobs: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn to_vec<const D: usize>(t: reasonlab_model::tensor::Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// Both reference sequences in ONE right-padded batch: padding must not change a thing.
fn check_logits_and_logprobs(model: &Model, r: &Reference) {
    let batch = TokenBatch::pad(&r.input_ids, 0, PadSide::Right);
    let vocab = model.config.vocab_size;
    let logits = to_vec(model.logits(&batch, None).unwrap());
    let mut max_diff = 0f32;
    for (row, seq) in r.logits.iter().enumerate() {
        for (i, expected) in seq.iter().enumerate() {
            let at = (row * batch.t + i) * vocab;
            for (a, b) in logits[at..at + vocab].iter().zip(expected) {
                max_diff = max_diff.max((a - b).abs());
            }
        }
    }
    assert!(max_diff <= 1e-4, "logits max |Δ| = {max_diff}");
    let lp = to_vec(model.token_logprobs(&batch).unwrap());
    let mut max_lp = 0f32;
    for (row, expected) in r.logprobs.iter().enumerate() {
        for (i, b) in expected.iter().enumerate() {
            max_lp = max_lp.max((lp[row * (batch.t - 1) + i] - b).abs());
        }
    }
    assert!(max_lp <= 1e-4, "logprobs max |Δ| = {max_lp}");
}

#[test]
fn qwen2_f32_tied_matches_transformers() {
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    assert!(model.config.tie_word_embeddings);
    check_logits_and_logprobs(&model, &reference("tiny-qwen2"));
}

#[test]
fn llama3_bf16_sharded_matches_transformers() {
    let model = Model::load(&fixture("tiny-llama"), &Device::flex()).unwrap();
    assert!(!model.config.tie_word_embeddings);
    check_logits_and_logprobs(&model, &reference("tiny-llama"));
}

#[test]
fn qwen3_f16_qk_norm_matches_transformers() {
    let model = Model::load(&fixture("tiny-qwen3"), &Device::flex()).unwrap();
    assert!(model.config.qk_norm());
    check_logits_and_logprobs(&model, &reference("tiny-qwen3"));
}

#[test]
fn left_padding_gives_the_same_last_logits() {
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let r = reference("tiny-qwen2");
    let batch = TokenBatch::pad(&r.input_ids, 0, PadSide::Left);
    let last = to_vec(model.last_logits(&batch, None).unwrap());
    let vocab = model.config.vocab_size;
    for (row, seq) in r.logits.iter().enumerate() {
        let expected = seq.last().unwrap();
        let got = &last[row * vocab..(row + 1) * vocab];
        let d = got
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-4, "row {row}: max |Δ| = {d}");
    }
}

#[test]
fn save_then_load_round_trips_exactly() {
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let device = Device::flex();
        let model = Model::load(&fixture(name), &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path(), SaveDtype::F32).unwrap();
        let again = Model::load(dir.path(), &device).unwrap();
        assert_eq!(again.config, model.config, "{name}");
        assert_eq!(
            again.hf_tensors().unwrap(),
            model.hf_tensors().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn bad_checkpoints_name_the_problem() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    // Missing directory contents.
    let e = Model::load(dir.path(), &device).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
    // Wrong shape for one tensor: copy the config, write weights of a smaller model.
    let src = fixture("tiny-qwen2");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let mut small = reasonlab_model::ModelConfig::from_dir(&src).unwrap();
    small.intermediate_size = 96;
    Model::random(small, 1, &device)
        .save(&dir.path().join("w"), SaveDtype::F32)
        .unwrap();
    std::fs::copy(
        dir.path().join("w/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = Model::load(dir.path(), &device).unwrap_err().to_string();
    assert!(
        e.contains("mlp") && e.contains("[128, 64]") && e.contains("[96, 64]"),
        "{e}"
    );
    // Corrupt safetensors.
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x08\0\0\0\0\0\0\0{garbage",
    )
    .unwrap();
    let e = Model::load(dir.path(), &device).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("safetensors"),
        "{e}"
    );
}

#[test]
fn context_and_vocab_are_checked() {
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let long = vec![1u32; model.config.max_position_embeddings + 1];
    let e = model
        .logits(&TokenBatch::pad(&[long], 0, PadSide::Right), None)
        .unwrap_err();
    assert!(e.to_string().contains("exceeds the context"), "{e}");
    let e = model
        .logits(&TokenBatch::pad(&[vec![1, 9999]], 0, PadSide::Right), None)
        .unwrap_err();
    assert!(e.to_string().contains("9999"), "{e}");
}
