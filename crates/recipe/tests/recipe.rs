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
