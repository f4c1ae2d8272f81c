//! Reward-model losses against TRL on fixed inputs (golden values from
//! `scripts/make_rm_golden.py`), and training that learns.

use std::path::PathBuf;

use reasonlab_model::tensor::Device;
use reasonlab_model::{RewardHead, RewardModel};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::rm::{Objective, RmEncodeSettings, RmExample, batch_loss, encode_record};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("rm/golden.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn pairwise_loss_and_tokens_match_trl_reward_trainer() {
    let g = &golden()["pairwise"];
    let dir = fixture("tiny-qwen2-rm");
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let settings = RmEncodeSettings::default();
    let examples: Vec<RmExample> = g["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            encode_record(r, Objective::Pairwise, &tok, &settings, true)
                .unwrap()
                .unwrap()
        })
        .collect();
    let (chosen, rejected) = (ids(&g["chosen_ids"]), ids(&g["rejected_ids"]));
    for (i, e) in examples.iter().enumerate() {
        let RmExample::Pair {
            chosen: c,
            rejected: r,
            ..
        } = e
        else {
            panic!("a pair")
        };
        assert_eq!(c, &chosen[i], "chosen {i}");
        assert_eq!(r, &rejected[i], "rejected {i}");
    }
    let rm = RewardModel::load(&dir, &Device::flex()).unwrap();
    for (key, center) in [("loss", None), ("loss_center_0.01", Some(0.01))] {
        let want = g[key].as_f64().unwrap();
        let got = batch_loss(rm.model(), rm.head(), &examples, tok.pad_id(), center).unwrap();
        assert!((got - want).abs() < 1e-5, "{key}: {got} vs TRL {want}");
    }
}

#[test]
fn process_loss_and_tokens_match_trl_prm_trainer() {
    let g = &golden()["process"];
    let dir = fixture("tiny-qwen2-prm");
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let settings = RmEncodeSettings::default();
    let want_ids = ids(&g["input_ids"]);
    let want_labels: Vec<Vec<i64>> = serde_json::from_value(g["labels"].clone()).unwrap();
    let mut examples = Vec::new();
    for (i, r) in g["records"].as_array().unwrap().iter().enumerate() {
        let e = encode_record(r, Objective::Process, &tok, &settings, true)
            .unwrap()
            .unwrap();
        let RmExample::Steps { ids, ends, labels } = &e else {
            panic!("steps")
        };
        assert_eq!(ids, &want_ids[i], "input ids {i}");
        let mut grid = vec![-100i64; ids.len()];
        for (&at, &l) in ends.iter().zip(labels) {
            grid[at] = l as i64;
        }
        assert_eq!(grid, want_labels[i], "labels {i}");
        examples.push(e);
    }
    let rm = RewardModel::load(&dir, &Device::flex()).unwrap();
    let got = batch_loss(rm.model(), rm.head(), &examples, tok.pad_id(), None).unwrap();
    let want = g["loss"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-5, "{got} vs TRL {want}");
    // The same loss through the Math-Shepherd reading is a two-token softmax, not the head's.
    let lm = RewardModel::load_good_token(&fixture("tiny-qwen2"), &Device::flex(), 43, 45).unwrap();
    let other = batch_loss(lm.model(), lm.head(), &examples, tok.pad_id(), None).unwrap();
    assert!(other.is_finite() && (other - want).abs() > 1e-3);
}

#[test]
fn malformed_records_say_what_is_wrong() {
    let tok = Tokenizer::from_dir(&fixture("tiny-qwen2")).unwrap();
    let s = RmEncodeSettings::default();
    let bad = |v: Value, o: Objective| encode_record(&v, o, &tok, &s, true).unwrap_err();
    assert!(bad(serde_json::json!({"chosen": "a"}), Objective::Pairwise).contains("rejected"));
    let e = bad(
        serde_json::json!({"prompt": "p", "completions": ["a", "b"], "labels": [true]}),
        Objective::Process,
    );
    assert!(e.contains("2 steps but 1 labels"), "{e}");
    let e = bad(
        serde_json::json!({"prompt": "p", "completion": "a", "label": 2}),
        Objective::Pointwise,
    );
    assert!(e.contains("[0, 1]"), "{e}");
}

/// Toy step lists: `n + k = m` chains where a wrong step says "oops"; every step after the
/// first wrong one is wrong too (the Math-Shepherd view: no completion can recover).
fn toy_steps(tok: &Tokenizer, seed: u64, n: usize) -> Vec<RmExample> {
    let mut rng = reasonlab_core::rng::SplitMix64::seeded(seed);
    (0..n)
        .map(|_| {
            let len = 2 + rng.below(3) as usize;
            let bad_from = rng.below(len as u64 + 1) as usize; // len: all good
            let steps: Vec<String> = (0..len)
                .map(|i| match i >= bad_from {
                    true if i == bad_from => format!("{i} oops"),
                    true => format!("{i} then"),
                    false => format!("{i} fine"),
                })
                .collect();
            let labels: Vec<bool> = (0..len).map(|i| i < bad_from).collect();
            let v = serde_json::json!({"prompt": "Q:", "completions": steps, "labels": labels});
            encode_record(
                &v,
                Objective::Process,
                tok,
                &RmEncodeSettings::default(),
                true,
            )
            .unwrap()
            .unwrap()
        })
        .collect()
}

#[test]
fn a_process_reward_model_learns_step_labels() {
    use reasonlab_model::{BackendKind, device_for};
    use reasonlab_train::rm::{RmSettings, RmTrainer};
    let dir = fixture("tiny-qwen2");
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let device = device_for(BackendKind::Flex, true).unwrap();
    let lm = reasonlab_model::Model::load(&dir, &device).unwrap();
    let rm = RewardModel::from_lm(lm, RewardHead::Token, 0).unwrap();
    let mut settings = RmSettings {
        objective: Objective::Process,
        epochs: 4,
        batch_size: 8,
        ..RmSettings::default()
    };
    settings.optim.lr = 3e-3;
    let mut trainer = RmTrainer::new(
        settings,
        rm.head(),
        rm.model().clone(),
        toy_steps(&tok, 1, 96),
        toy_steps(&tok, 2, 32),
        tok.pad_id(),
    )
    .unwrap();
    let before = trainer.evaluate().unwrap();
    while let Some(m) = trainer.step().unwrap() {
        assert!(m.loss.is_finite() && !m.skipped);
    }
    assert!(trainer.done());
    let after = trainer.evaluate().unwrap();
    assert!(after.loss < before.loss * 0.5, "{before:?} → {after:?}");
    assert!(after.accuracy > 0.95 && after.auc > 0.98, "{after:?}");
}
