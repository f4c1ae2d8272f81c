//! The experiments' quick variants: every arm runs for every seed, and the summary, table and
//! plots are written with one row per step, K or model. (The measurements themselves are in the
//! README, from the full variants.)

use reasonlab_recipe::experiments::{corpus, distill, r1_zero, rl_vs_sft};

fn in_unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

fn files(out: &std::path::Path, pngs: &[&str]) {
    assert!(out.join("summary.json").exists());
    assert!(out.join("table.md").exists());
    let report = std::fs::read_to_string(out.join("plots/report.html")).unwrap();
    assert!(report.contains("<svg"));
    for p in pngs {
        let bytes = std::fs::read(out.join("plots").join(format!("{p}.png"))).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG", "{p}");
    }
}

#[test]
fn r1_zero_measures_every_eval_step_for_every_seed() {
    let dir = tempfile::tempdir().unwrap();
    let s = r1_zero::R1ZeroSettings::quick(vec![0, 1]);
    let summary = r1_zero::run(dir.path(), &s, &mut |_, _| {}).unwrap();
    let steps: Vec<usize> = summary.rows.iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![0, 2, 4]);
    assert_eq!(summary.points.len(), 6);
    for r in &summary.rows {
        assert_eq!(r.pass1.n, 2);
        assert!(in_unit(r.pass1.mean) && in_unit(r.format.mean));
        assert!(r.length.mean > 0.0 && r.length.mean <= s.max_new_tokens as f64);
    }
    files(dir.path(), &["accuracy", "length"]);
    assert!(dir.path().join("seed-1/policy/config.json").exists());
    // The two-step variant asks two-step questions.
    let mut s = r1_zero::R1ZeroSettings::quick(vec![0]);
    s.problems = r1_zero::Problems::TwoStep;
    s.grpo_steps = 1;
    let two = tempfile::tempdir().unwrap();
    let summary = r1_zero::run(two.path(), &s, &mut |_, _| {}).unwrap();
    assert_eq!(summary.rows.len(), 2);
}

#[test]
fn rl_vs_sft_reads_pass_and_maj_at_every_power_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let s = rl_vs_sft::RlVsSftSettings::quick(vec![0]);
    let summary = rl_vs_sft::run(dir.path(), &s, &mut |_, _| {}).unwrap();
    let ks: Vec<usize> = summary.rows.iter().map(|r| r.k).collect();
    assert_eq!(ks, vec![1, 2, 4]);
    for w in summary.rows.windows(2) {
        // Unbiased pass@K cannot fall as K grows.
        assert!(w[1].sft_pass.mean >= w[0].sft_pass.mean - 1e-9);
        assert!(w[1].rl_pass.mean >= w[0].rl_pass.mean - 1e-9);
    }
    files(dir.path(), &["pass_at_k", "maj_at_k"]);
}

#[test]
fn distill_vs_rl_compares_four_models() {
    let dir = tempfile::tempdir().unwrap();
    let s = distill::DistillSettings::quick(vec![0]);
    let summary = distill::run(dir.path(), &s, &mut |_, _| {}).unwrap();
    assert_eq!(summary.rows.len(), 4);
    let seed = &summary.seeds[0];
    assert!(seed.traces_kept <= seed.traces_sampled && seed.traces_sampled > 0);
    assert!(summary.rows.iter().all(|r| in_unit(r.pass1.mean)));
    files(dir.path(), &["models"]);
}

#[test]
fn corpus_selects_three_corpora_of_one_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = corpus::CorpusSettings::quick(vec![0]);
    let summary = corpus::run(dir.path(), &s, &mut |_, _| {}).unwrap();
    assert_eq!(summary.arms.len(), 3);
    for a in &summary.arms {
        assert!(a.tokens <= s.token_budget && a.pages > 0, "{a:?}");
        assert!(in_unit(a.pass1) && in_unit(a.math_share));
    }
    let share = |sel: corpus::Selection| {
        summary
            .arms
            .iter()
            .find(|a| a.selection == sel)
            .unwrap()
            .math_share
    };
    // The classifier trained on seed math pages recalls math pages well above their share of
    // the pool (15%); the pool file is there for anyone to inspect.
    assert!(share(corpus::Selection::Recalled) > 0.8, "{summary:?}");
    assert!(share(corpus::Selection::Recalled) > share(corpus::Selection::Random));
    assert!(dir.path().join("seed-0/pool.jsonl").exists());
    files(dir.path(), &["corpora"]);
}
