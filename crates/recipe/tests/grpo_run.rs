//! The GRPO run driver end to end on the tiny Qwen2 fixture: prompt lengths checked before the
//! first step, conversational rows with a system prompt, the resolved config, and a resume
//! after a crash between checkpoints leaving one clean log.

use std::path::{Path, PathBuf};

use reasonlab_recipe::run::grpo::{self, GrpoConfig, GrpoFile, LongPrompts};
use reasonlab_recipe::run::{Resume, RunDir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A config over `rows` (JSON lines) in `dir`.
fn config(dir: &Path, rows: &[serde_json::Value], extra: &str) -> GrpoConfig {
    let data = dir.join("train.jsonl");
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&data, text).unwrap();
    let toml = format!(
        "model = {model:?}\ndata = {data:?}\nrewards = {rewards:?}\nout = {out:?}\n\
         chat = true\nsave_every = 2\n{extra}\n\
         [grpo]\nsteps = 4\ngroup_size = 2\nprompts_per_step = 2\nmax_new_tokens = 8\n",
        model = repo().join("fixtures/tiny-qwen2"),
        rewards = repo().join("examples/rewards.toml"),
        out = dir.join("run"),
    );
    let path = dir.join("grpo.toml");
    std::fs::write(&path, toml).unwrap();
    GrpoConfig::load(&path).unwrap()
}

fn short(i: usize) -> serde_json::Value {
    serde_json::json!({"id": format!("short-{i}"), "problem": format!("What is {i} + {i}?"), "answer": 2 * i})
}

fn long(i: usize) -> serde_json::Value {
    let problem = "Add up all of these numbers one at a time. ".repeat(40);
    serde_json::json!({"id": format!("long-{i}"), "problem": problem, "answer": "0"})
}

fn steps_of(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn long_prompts_are_all_reported_before_the_first_step_or_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = [short(1), long(1), short(2), long(2)];
    let cfg = config(tmp.path(), &rows, "");
    let dir = RunDir::create(&cfg.out).unwrap();
    let err = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 of 4 prompts"), "{err}");
    assert!(err.contains("long-1") && err.contains("long-2"), "{err}");
    assert!(err.contains("256"), "names the context: {err}");
    assert!(!dir.metrics().exists() || steps_of(&dir.metrics()).is_empty());
    // Dropped under the setting, with a count.
    let mut cfg = cfg;
    cfg.long_prompts = LongPrompts::Drop;
    cfg.grpo.steps = 1;
    let summary = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap();
    assert_eq!((summary.dropped_prompts, summary.tasks), (2, 2));
    // max_prompt_length is a limit of its own.
    cfg.max_prompt_length = Some(3);
    let err = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable rows"), "{err}");
}

#[test]
fn resume_after_a_crash_between_checkpoints_leaves_one_clean_log() {
    let tmp = tempfile::tempdir().unwrap();
    // Conversational rows (TRL's format) with a system prompt and an extra column.
    let rows: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            serde_json::json!({
                "prompt": [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": format!("What is {i} + {i}?")}],
                "answer": (2 * i).to_string(),
                "level": i,
            })
        })
        .collect();
    let cfg = config(tmp.path(), &rows, "");
    let dir = RunDir::create(&cfg.out).unwrap();
    let full = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap();
    assert_eq!(full.steps, 4);
    assert_eq!(steps_of(&dir.metrics()), [1, 2, 3, 4]);
    // Killed after step 4's log lines but before its checkpoint was complete.
    std::fs::remove_file(dir.checkpoints().join("step-4/trainer_state.json")).unwrap();
    let resumed = grpo::run(&cfg, &dir, Resume::Latest, &mut |_| {}).unwrap();
    assert_eq!(resumed.resumed_from_step, Some(2));
    assert_eq!(steps_of(&dir.metrics()), [1, 2, 3, 4]);
    let completions = steps_of(&dir.completions());
    for step in 1..=4 {
        assert_eq!(
            completions.iter().filter(|&&s| s == step).count(),
            4,
            "step {step}"
        );
    }
    // The resolved config spells out every setting and reads back.
    let text = std::fs::read_to_string(dir.config()).unwrap();
    assert!(
        text.contains("epsilon_high") && text.contains("group_size = 2"),
        "{text}"
    );
    let back: GrpoFile = toml::from_str(&text).unwrap();
    let again = GrpoConfig::resolve(&back, Path::new("/")).unwrap();
    assert_eq!(again, cfg);
    assert!(dir.summary().exists() && dir.plots().join("report.html").exists());
}

#[test]
fn reward_models_join_the_rule_rewards_and_supervise_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = [short(1), short(2), short(3)];
    let extra = format!(
        "[[reward_model]]\nkind = \"outcome\"\nmodel = {orm:?}\nweight = 0.5\nsquash = \"sigmoid\"\n\
         [[reward_model]]\nkind = \"process\"\nmodel = {prm:?}\n",
        orm = repo().join("fixtures/tiny-qwen2-rm"),
        prm = repo().join("fixtures/tiny-qwen2-prm"),
    );
    let mut cfg = config(tmp.path(), &rows, &extra);
    cfg.grpo.steps = 1;
    cfg.grpo.max_new_tokens = 16;
    let dir = RunDir::create(&cfg.out).unwrap();
    grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap();
    let rollouts: Vec<serde_json::Value> = std::fs::read_to_string(dir.completions())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rollouts.len(), 4);
    // The outcome model scored every completion, in (0, 1), next to the rule rewards.
    let metrics: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.metrics())
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let orm = metrics["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "orm")
        .map(|p| p[1].as_f64().unwrap())
        .expect("the outcome model's mean");
    assert!(orm > 0.0 && orm < 1.0, "{metrics}");
    for r in &rollouts {
        let text = r.to_string();
        let adv = r["token_advantages"]
            .as_array()
            .expect("process supervision");
        assert!(!adv.is_empty(), "{text}");
    }
    // The resolved config names both models and reads back.
    let back: GrpoFile = toml::from_str(&std::fs::read_to_string(dir.config()).unwrap()).unwrap();
    assert_eq!(back.reward_model.len(), 2);
    // A process model given as an outcome one is refused.
    cfg.reward_model[0].model = repo().join("fixtures/tiny-qwen2-prm");
    let err = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("not a Outcome"), "{err}");
}

/// `[iterative]` over `rows` with one reward model of `kind` (a fixture).
fn iterative_config(dir: &Path, kind: &str, model: &str) -> GrpoConfig {
    let rows = [short(1), short(2), short(3)];
    let extra = format!(
        "[[reward_model]]\nkind = {kind:?}\nmodel = {model:?}\n\
         [iterative]\nrounds = 2\nprompts = 2\nsamples_per_prompt = 2\nlabel_n = 2\n\
         [iterative.rm]\nbatch_size = 4\n",
        model = repo().join("fixtures").join(model),
    );
    let mut cfg = config(dir, &rows, &extra);
    cfg.save_every = 0;
    cfg
}

#[test]
fn iterative_rl_retrains_the_reward_model_between_rounds_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = iterative_config(tmp.path(), "outcome", "tiny-qwen2-rm");
    let dir = RunDir::create(&cfg.out).unwrap();
    let summary = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap();
    assert_eq!(summary.steps, 4);
    assert_eq!(steps_of(&dir.metrics()), vec![1, 2, 3, 4], "one clean log");
    let round = dir.root().join("rounds/round-0");
    for f in [
        "samples.jsonl",
        "data.jsonl",
        "rm-train.jsonl",
        "rm/metrics.jsonl",
        "summary.json",
    ] {
        assert!(round.join(f).exists(), "{f} missing");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(round.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        (s["samples"].as_u64(), s["policy_step"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(
        s["new_examples"].as_u64(),
        Some(4),
        "one pointwise example per sample"
    );
    let rm = std::path::PathBuf::from(s["reward_model"].as_str().unwrap());
    assert!(rm.join("config.json").exists() && rm.starts_with(&round));
    // The last round is the only one without an update.
    assert!(!dir.root().join("rounds/round-1").exists());
    // The resolved config reads back with its [iterative] table.
    let back: GrpoFile = toml::from_str(&std::fs::read_to_string(dir.config()).unwrap()).unwrap();
    assert_eq!(back.iterative.unwrap().rounds, 2);

    // Killed after round 0's GRPO, before its reward-model update finished: the resumed run
    // redoes the update and finishes round 1.
    std::fs::remove_file(round.join("summary.json")).unwrap();
    std::fs::remove_dir_all(dir.root().join("checkpoints/step-4")).unwrap();
    let resumed = grpo::run(&cfg, &dir, Resume::Latest, &mut |_| {}).unwrap();
    assert_eq!(resumed.steps, 4);
    assert!(round.join("summary.json").exists());
    assert_eq!(steps_of(&dir.metrics()), vec![1, 2, 3, 4]);
}

#[test]
fn iterative_rl_relabels_steps_for_a_process_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = iterative_config(tmp.path(), "process", "tiny-qwen2-prm");
    let dir = RunDir::create(&cfg.out).unwrap();
    grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap();
    let round = dir.root().join("rounds/round-0");
    assert!(round.join("solutions.jsonl").exists() && round.join("summary.json").exists());
    // Every labelled solution is in TRL's stepwise format.
    for line in std::fs::read_to_string(round.join("data.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            v["completions"].as_array().unwrap().len(),
            v["labels"].as_array().unwrap().len()
        );
    }
    // An [iterative] run needs exactly one reward model to retrain.
    let file =
        "model = \"m\"\ndata = \"d\"\nrewards = \"r\"\nout = \"o\"\n[iterative]\nrounds = 2\n";
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, file).unwrap();
    let err = GrpoConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("one reward model"), "{err}");
}

#[test]
fn a_tool_integrated_run_trains_the_tiny_model() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (1..5).map(short).collect();
    let cfg = config(
        tmp.path(),
        &rows,
        "[tools]\nformat = \"tora\"\nmax_calls = 2\n[tools.limits]\ntimeout = 5\npreload = []\n",
    );
    assert!(cfg.tools.is_some());
    let dir = RunDir::create(&cfg.out).unwrap();
    let summary = grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {}).unwrap_or_else(|e| {
        panic!("tool-integrated GRPO (needs the sandbox: python3, Landlock, seccomp): {e}")
    });
    assert_eq!(summary.steps, 4);
    let metrics = std::fs::read_to_string(dir.metrics()).unwrap();
    for line in metrics.lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(m["tool_calls"].as_f64().is_some(), "{line}");
    }
    let resolved = std::fs::read_to_string(dir.config()).unwrap();
    assert!(resolved.contains("[tools]"), "{resolved}");
    assert_eq!(GrpoConfig::load(&dir.config()).unwrap().tools, cfg.tools);
}

#[test]
fn code_rewards_join_the_weighted_sum() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (1..5).map(short).collect();
    let cfg = config(
        tmp.path(),
        &rows,
        "[[code_reward]]\nkind = \"pot_answer\"\nweight = 0.5\n[code_reward.sandbox]\nformat = \"pot\"\n[code_reward.sandbox.limits]\npreload = []\n",
    );
    assert_eq!(cfg.code_reward.len(), 1);
    let dir = RunDir::create(&cfg.out).unwrap();
    grpo::run(&cfg, &dir, Resume::Fresh, &mut |_| {})
        .unwrap_or_else(|e| panic!("GRPO with a code reward (needs the sandbox): {e}"));
    let metrics = std::fs::read_to_string(dir.metrics()).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let names: Vec<&str> = first["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(names.contains(&"pot_answer"), "{names:?}");
}
