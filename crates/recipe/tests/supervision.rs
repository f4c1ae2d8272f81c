//! The outcome-vs-process comparison end to end at a toy budget: every arm has a curve from
//! the same starting point, both reward models are trained and scored, the iterative arm
//! retrains its process model between rounds, and the report names them.

use reasonlab_recipe::demo::DemoSettings;
use reasonlab_recipe::supervision::{self, Arm, SupervisionSettings};

#[test]
fn four_arms_share_a_start_and_report_their_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = SupervisionSettings::new(vec![3]);
    s.steps = 2;
    s.eval_every = 1;
    s.rm_problems = 24;
    s.rm_samples = 2;
    s.label_n = 2;
    s.rm_epochs = 1;
    s.iterative_rounds = 2;
    s.demo = DemoSettings {
        warmup_steps: 30,
        eval_problems: 16,
        eval_k: 2,
        prompts_per_step: 4,
        group_size: 4,
        ..DemoSettings::quick(3)
    };
    let summary = supervision::run(tmp.path(), &s, &mut |_| {}).unwrap();
    // Four arms × steps 0, 1, 2.
    assert_eq!(summary.curves.len(), 12);
    let at = |arm: Arm, step: usize| {
        summary
            .curves
            .iter()
            .find(|m| m.arm == arm && m.step == step)
            .unwrap()
            .mean
    };
    assert_eq!(at(Arm::Rule, 0), at(Arm::Outcome, 0));
    assert_eq!(at(Arm::Rule, 0), at(Arm::Process, 0));
    // The iterative arm is the process arm until its first reward-model update (after step 1).
    assert_eq!(at(Arm::Process, 1), at(Arm::ProcessIterative, 1));
    let m = &summary.reward_models[0];
    assert!((0.0..=1.0).contains(&m.outcome.auc) && (0.0..=1.0).contains(&m.process.auc));
    for f in [
        "curves.jsonl",
        "summary.json",
        "report.md",
        "plots/report.html",
        "seed-3/labels.jsonl",
        "seed-3/process-completions.jsonl",
        "seed-3/round-1/labels.jsonl",
        "seed-3/process_iterative-completions.jsonl",
    ] {
        assert!(tmp.path().join(f).exists(), "{f} missing");
    }
    let report = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        report.contains("| 2 |") && report.contains("process RM"),
        "{report}"
    );
}
