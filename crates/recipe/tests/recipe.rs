//! The recipe runner on tiny stages: a sample stage feeds an SFT stage by name, which feeds an
//! eval stage; a finished stage is skipped on resume; --from/--until pick stages; a failing
//! stage stops the run with its error in the manifest.

use std::path::{Path, PathBuf};

use reasonlab_eval::{Benchmark, EvalConfig, PromptTemplate};
use reasonlab_recipe::pipeline::{self, Manifest, Recipe, Span, StageState};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// sample → sft → eval on the tiny fixture, written as a recipe file in `dir`.
fn recipe(dir: &Path, sft_lr: &str) -> Recipe {
    let mut eval = EvalConfig::new(
        vec![Benchmark::parse("gsm8k_test").unwrap()],
        PromptTemplate::Chat,
        1,
    );
    eval.limit = Some(2);
    eval.sampling.max_new_tokens = 4;
    let text = format!(
        r#"name = "tiny"

[[stage]]
name = "traces"
kind = "sample"
[stage.config]
data = {data:?}
k = 2
limit = 4
template = "chat"
engine = {{ model = {model:?} }}
sampling = {{ temperature = 1.0, top_p = 1.0, max_new_tokens = 8, seed = 0 }}
filter = {{ keep = "all", drop_truncated = false }}

[[stage]]
name = "sft"
kind = "sft"
[stage.config]
model = {model:?}
data = "@traces"
[stage.config.sft]
epochs = 1
batch_size = 2
optim = {{ lr = {sft_lr} }}
encode = {{ format = "chat", max_len = 256, overflow = "truncate" }}

[[stage]]
name = "eval"
kind = "eval"
[stage.config]
engine = {{ model = "@sft" }}
"#,
        data = repo().join("examples/data/gsm8k_short_32.jsonl"),
        model = repo().join("fixtures/tiny-qwen2"),
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    let mut r = Recipe::load(&path).unwrap();
    r.stage[2]
        .config
        .insert("eval".into(), toml::Value::try_from(&eval).unwrap());
    r
}

fn manifest(out: &Path) -> Manifest {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn stages_chain_by_name_and_resume_skips_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "1e-3");
    let out = tmp.path().join("run");
    let summary = pipeline::run(&r, &out, false, &Span::default(), &mut |_, _| {}).unwrap();
    assert_eq!(summary.len(), 3);
    assert!(summary.iter().all(|s| s.state == StageState::Done));
    assert!(summary[2].pass1.is_some(), "the eval stage reports pass@1");
    let m = manifest(&out);
    let traces = m.stages[0].outputs.data.clone().unwrap();
    assert_eq!(traces, out.join("stages/traces/data.jsonl"));
    assert_eq!(
        m.stages[1].config["data"].as_str().unwrap(),
        traces.display().to_string()
    );
    let sft_model = m.stages[1].outputs.model.clone().unwrap();
    assert!(sft_model.starts_with(out.join("stages/sft/checkpoints")));
    assert_eq!(
        m.stages[2].config["engine"]["model"].as_str().unwrap(),
        sft_model.display().to_string()
    );
    assert!(out.join("summary.json").exists());
    // A second run needs --resume; with it, nothing reruns.
    assert!(pipeline::run(&r, &out, false, &Span::default(), &mut |_, _| {}).is_err());
    let mut notes = Vec::new();
    pipeline::run(&r, &out, true, &Span::default(), &mut |stage, e| {
        if let reasonlab_recipe::run::Event::Note(n) = e {
            notes.push(format!("{stage}: {n}"));
        }
    })
    .unwrap();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(manifest(&out).stages, m.stages, "the manifest is unchanged");
}

#[test]
fn from_and_until_pick_stages_and_references_need_earlier_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "1e-3");
    let out = tmp.path().join("run");
    let until = Span {
        from: None,
        until: Some("traces".into()),
    };
    let s = pipeline::run(&r, &out, false, &until, &mut |_, _| {}).unwrap();
    assert_eq!(s.len(), 1);
    assert!(!out.join("stages/sft").exists());
    // Starting at eval: it names `@sft`, which has not run.
    let from_eval = Span {
        from: Some("eval".into()),
        until: None,
    };
    let err = pipeline::run(&r, &out, true, &from_eval, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("@sft"), "{err}");
    let from_sft = Span {
        from: Some("sft".into()),
        until: Some("sft".into()),
    };
    let s = pipeline::run(&r, &out, true, &from_sft, &mut |_, _| {}).unwrap();
    assert_eq!(s.len(), 2, "traces (earlier) and sft");
    assert!(!out.join("stages/eval").exists());
    let unknown = Span {
        from: Some("nope".into()),
        until: None,
    };
    assert!(pipeline::run(&r, &out, true, &unknown, &mut |_, _| {}).is_err());
}

#[test]
fn a_failing_stage_stops_the_run_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), "\"fast\"");
    let out = tmp.path().join("run");
    let err = pipeline::run(&r, &out, false, &Span::default(), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("stage sft"), "{err}");
    let m = manifest(&out);
    assert_eq!(m.stages.len(), 2, "eval never started");
    assert_eq!(m.stages[0].state, StageState::Done);
    assert_eq!(m.stages[1].state, StageState::Failed);
    assert!(
        m.stages[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("\"fast\""),
        "{:?}",
        m.stages[1]
    );
}

#[test]
fn recipes_are_checked_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    for (bad, why) in [
        (
            "[[stage]]\nname = \"a\"\nkind = \"sft\"\n[[stage]]\nname = \"a\"\nkind = \"eval\"\n",
            "two stages",
        ),
        ("[[stage]]\nname = \"a.b\"\nkind = \"sft\"\n", "stage name"),
        (
            "[[stage]]\nname = \"a\"\nkind = \"sft\"\nconfig = { out = \"x\" }\n",
            "out",
        ),
        ("[[stage]]\nname = \"a\"\nkind = \"bake\"\n", "bake"),
    ] {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let err = Recipe::load(&path).unwrap_err().to_string();
        assert!(err.contains(why), "{why}: {err}");
    }
}

/// The built-in task writes its files and models; later stages name them as `@task/FILE`; a
/// sample stage's solutions are labelled by an rm_label stage; the run ends with `report.html`
/// and a pass@1 chart; a missing file is an error naming it.
#[test]
fn task_stage_files_feed_later_stages_and_the_report_compares_evals() {
    let dir = tempfile::tempdir().unwrap();
    let eval = |name: &str, model: &str| {
        format!(
            r#"
[[stage]]
name = "{name}"
kind = "eval"
[stage.config]
engine = {{ model = "{model}" }}
[stage.config.eval]
benchmarks = [{{ file = {{ name = "arithmetic", path = "@task/held_out.jsonl", language = "en", few_shot = "gsm8k", fields = {{ id = "id", problem = "problem", answer = "answer", solution = "solution", subject = "subject", level = "level" }} }} }}]
template = "r1-zero"
n = 2
ks = [1, 2]
chunk_size = 16
sampling = {{ temperature = 1.0, top_p = 1.0, max_new_tokens = 8, seed = 0 }}
verify = {{ answer_format = "answer_tag", fallback = "none", think = "after_think", multiple_boxed = "as_list", percent = "either" }}
"#
        )
    };
    let text = format!(
        r#"name = "task-tiny"

[[stage]]
name = "task"
kind = "task"
[stage.config]
seed = 3
held_out = 6
cot_examples = 16
non_reasoning_examples = 8
models = [{{ name = "small", hidden_size = 32, layers = 1 }}]
{}
[[stage]]
name = "sft"
kind = "sft"
[stage.config]
model = "@task/small"
data = "@task/cot.jsonl"
more_data = ["@task/non_reasoning.jsonl"]
[stage.config.sft]
epochs = 1
max_steps = 2
batch_size = 4
optim = {{ lr = 1e-3 }}
encode = {{ format = "raw", max_len = 192, overflow = "truncate" }}
{}
[[stage]]
name = "samples"
kind = "sample"
[stage.config]
data = "@task/train.jsonl"
engine = {{ model = "@sft" }}
template = "r1-zero"
k = 2
limit = 3
sampling = {{ temperature = 1.0, top_p = 1.0, max_new_tokens = 12, seed = 0 }}
filter = {{ keep = "all", drop_truncated = false }}

[[stage]]
name = "labels"
kind = "rm_label"
[stage.config]
input = "@samples"
engine = {{ model = "@sft" }}
n = 2
separator = " "
sampling = {{ temperature = 1.0, top_p = 1.0, max_new_tokens = 8, seed = 1 }}
"#,
        eval("eval_base", "@task/small"),
        eval("eval_sft", "@sft")
    );
    let path = dir.path().join("task.toml");
    std::fs::write(&path, &text).unwrap();
    let recipe = Recipe::load(&path).unwrap();
    let out = dir.path().join("run");
    let summary = pipeline::run(&recipe, &out, false, &Span::default(), &mut |_, _| {}).unwrap();
    assert_eq!(summary.len(), 6);
    let task = out.join("stages/task");
    for f in [
        "train.jsonl",
        "held_out.jsonl",
        "pretrain.jsonl",
        "web.jsonl",
        "cot.jsonl",
        "short_cot.jsonl",
        "non_reasoning.jsonl",
        "small/config.json",
        "small/tokenizer.json",
    ] {
        assert!(task.join(f).exists(), "{f}");
    }
    let held: Vec<serde_json::Value> = std::fs::read_to_string(task.join("held_out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(held.len(), 6);
    let cot = std::fs::read_to_string(task.join("cot.jsonl")).unwrap();
    assert!(cot.contains("<think>") && cot.contains("<answer>"));
    // Both evals measured a pass@1 in [0, 1], and the SFT stage read both files.
    for s in &summary {
        if s.name.starts_with("eval") {
            let p = s.pass1.expect("eval stages report pass@1");
            assert!((0.0..=1.0).contains(&p));
        }
    }
    let sft_summary = std::fs::read_to_string(out.join("stages/sft/summary.json")).unwrap();
    let sft: serde_json::Value = serde_json::from_str(&sft_summary).unwrap();
    assert_eq!(sft["train"]["kept"].as_u64(), Some(24), "{sft_summary}");
    // The rm_label stage labelled every sampled solution step by step (TRL stepwise rows).
    let labels: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("stages/labels/data.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(labels.len(), 6);
    for l in &labels {
        let steps = l["completions"].as_array().unwrap().len();
        assert!(steps > 0);
        assert_eq!(l["labels"].as_array().unwrap().len(), steps, "{l}");
    }
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("eval_sft") && report.contains("<svg"));
    assert!(out.join("plots/pass1.png").exists());
    // A file the stage did not write is named in the error.
    let bad = text.replace("@task/cot.jsonl", "@task/nothing.jsonl");
    std::fs::write(&path, bad).unwrap();
    let recipe = Recipe::load(&path).unwrap();
    let err = pipeline::run(
        &recipe,
        &dir.path().join("run2"),
        false,
        &Span::default(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nothing.jsonl"), "{err}");
}

/// Every shipped recipe reads, and every stage reference names an earlier stage.
#[test]
fn shipped_recipes_read_and_reference_earlier_stages() {
    for name in ["r1-zero", "r1", "deepseekmath", "distill"] {
        let path = repo().join(format!("recipes/{name}.toml"));
        let recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let names: Vec<&str> = recipe.stage.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in recipe.stage.iter().enumerate() {
            let config = toml::to_string(&s.config).unwrap();
            for r in config.split('"').filter(|t| t.starts_with('@')) {
                let target = r[1..].split(['/', '.']).next().unwrap();
                let at = names.iter().position(|n| *n == target);
                assert!(
                    at.is_some_and(|a| a < i),
                    "{name}: stage {} refers to {r}, not an earlier stage",
                    s.name
                );
            }
        }
        assert!(text.contains("Scaled down") && text.contains("Published values kept"));
    }
}
