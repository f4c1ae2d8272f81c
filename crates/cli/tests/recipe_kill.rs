//! A recipe killed in the middle of a stage resumes with `--resume`: finished stages are
//! skipped, the interrupted one continues from its newest checkpoint, and its log holds every
//! step once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RECIPE: &str = r#"name = "kill-me"

[[stage]]
name = "task"
kind = "task"
[stage.config]
seed = 1
held_out = 4
cot_examples = 8
non_reasoning_examples = 4
models = [{ name = "base", hidden_size = 32, layers = 1 }]

[[stage]]
name = "pretrain"
kind = "pretrain"
[stage.config]
model = "@task/base"
save_every = 4
[stage.config.train]
steps = 400
seq_len = 128
isolate_documents = true
batch_size = 4
grad_accum = 1
optim = { lr = 1e-3, warmup_steps = 2 }
[[stage.config.source]]
name = "math"
paths = ["@task/pretrain.jsonl"]
field = "text"
weight = 1.0
"#;

fn reasonlab(recipe: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reasonlab"));
    c.args(["recipe", "run"]).arg(recipe).arg("--out").arg(out);
    if resume {
        c.arg("--resume");
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn steps(metrics: &Path) -> Vec<u64> {
    std::fs::read_to_string(metrics)
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
fn a_recipe_killed_inside_a_stage_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("kill.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out = dir.path().join("run");
    let mut child = reasonlab(&recipe, &out, false).spawn().unwrap();
    // Kill it once the pretraining stage has written its second checkpoint.
    let ckpt = out.join("stages/pretrain/checkpoints/step-8");
    let started = Instant::now();
    while !ckpt.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint at {}",
            ckpt.display()
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"task\"") && !manifest.contains("\"pretrain\""));
    // Without --resume the folder is refused; with it the run finishes.
    assert!(!reasonlab(&recipe, &out, false).status().unwrap().success());
    assert!(reasonlab(&recipe, &out, true).status().unwrap().success());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let states: Vec<&str> = m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["done", "done"]);
    // Every step is logged once: the steps after the checkpoint that the kill cut off were
    // dropped and trained again.
    let logged = steps(&out.join("stages/pretrain/metrics.jsonl"));
    assert_eq!(logged, (1..=400).collect::<Vec<_>>());
    assert!(out.join("report.html").exists());
}
