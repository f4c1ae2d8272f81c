//! The demo's quick variant end to end: SFT must raise held-out pass@1 over the random model
//! and lower held-out loss; GRPO must raise pass@1 further.

use reasonlab_eval::MetricKey;
use reasonlab_recipe::demo::{self, DemoSettings};

#[test]
fn quick_demo_improves_pass_at_1_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = DemoSettings::quick(0);
    let summary = demo::run(dir.path(), &s, &mut |_| {}).unwrap();
    let pass1 = MetricKey::PassAt(1);
    let initial = summary.initial.eval.get(pass1);
    let before = summary.before.get(pass1);
    assert!(
        before - initial >= 0.1,
        "pass@1 {initial:.3} → {before:.3}: the SFT warm-up should gain ≥ 10 points"
    );
    let l0 = summary.initial.held_out_loss;
    let l1 = summary.initial.held_out_loss_after_sft;
    assert!(l1 < 0.5 * l0, "held-out loss {l0:.3} → {l1:.3}");
    let after = summary.after.get(pass1);
    assert!(
        after - before >= 0.05,
        "pass@1 {before:.3} → {after:.3}: GRPO should gain ≥ 5 points on the quick demo"
    );
    for f in [
        "summary.json",
        "metrics.jsonl",
        "completions.jsonl",
        "plots/report.html",
        "plots/reward.svg",
        "plots/reward.png",
        "plots/length.png",
        "model/config.json",
        "model/tokenizer.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), s.grpo_steps);
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in [
        "step",
        "loss",
        "reward_mean",
        "accuracy",
        "kl",
        "clip_low",
        "completion_len_mean",
    ] {
        assert!(first.get(key).is_some(), "{key} missing from metrics.jsonl");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert!(summary["before"]["pass@1"].is_number() && summary["after"]["cons@4"].is_number());
}
