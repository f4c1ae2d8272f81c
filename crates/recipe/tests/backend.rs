//! Every run driver takes its tensor backend from its config: asked for a backend this build
//! lacks, each one stops before training with the feature to rebuild with, and a flex run
//! names the device it ran on.

use std::path::PathBuf;

use reasonlab_core::jsonl::BadLines;
use reasonlab_model::{BackendKind, Precision};
use reasonlab_recipe::pipeline::{self, Recipe, Span};
use reasonlab_recipe::run::{Event, Resume, RunDir, RunError};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A GPU backend this build does not have (the default build has none of them).
fn missing() -> BackendKind {
    BackendKind::ALL
        .into_iter()
        .find(|k| !k.compiled())
        .expect("every backend is compiled in: these tests need a build without one of them")
}

fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, RunError>) {
    let kind = missing();
    let err = result.expect_err(what).to_string();
    assert!(
        err.contains(&format!("backend {kind} is not compiled in"))
            && err.contains(&format!("--features {kind}")),
        "{what}: {err}"
    );
}

fn quiet() -> impl FnMut(Event<'_>) {
    |_| {}
}

/// Run sft, pretrain, grpo and rm train from their tiny examples with `backend` and
/// `mixed_precision` set, and hand each result to `check` (named by its driver).
fn each_training_driver(
    backend: BackendKind,
    mixed_precision: Precision,
    check: fn(&str, Result<(), RunError>),
) {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name);

    let mut sft =
        reasonlab_recipe::run::sft::SftConfig::load(&examples().join("sft-tiny.toml")).unwrap();
    (sft.out, sft.backend, sft.mixed_precision) = (out("sft"), backend, mixed_precision);
    let dir = RunDir::create(&sft.out).unwrap();
    let result =
        reasonlab_recipe::run::sft::run(&sft, &dir, Resume::Fresh, BadLines::Skip, &mut quiet());
    check("sft", result.map(|_| ()));
    assert!(!dir.metrics().exists(), "sft trained before refusing");

    let mut pre = reasonlab_recipe::run::pretrain::PretrainConfig::load(
        &examples().join("pretrain-tiny.toml"),
    )
    .unwrap();
    (pre.out, pre.backend, pre.mixed_precision) = (out("pretrain"), backend, mixed_precision);
    let dir = RunDir::create(&pre.out).unwrap();
    let result = reasonlab_recipe::run::pretrain::run(
        &pre,
        &dir,
        Resume::Fresh,
        BadLines::Skip,
        &mut quiet(),
    );
    check("pretrain", result.map(|_| ()));

    let mut grpo =
        reasonlab_recipe::run::grpo::GrpoConfig::load(&examples().join("grpo-tiny.toml")).unwrap();
    (grpo.out, grpo.backend, grpo.mixed_precision) = (out("grpo"), backend, mixed_precision);
    let dir = RunDir::create(&grpo.out).unwrap();
    let result = reasonlab_recipe::run::grpo::run(&grpo, &dir, Resume::Fresh, &mut quiet());
    check("grpo", result.map(|_| ()));

    let mut rm =
        reasonlab_recipe::run::rm::RmConfig::load(&examples().join("rm-tiny.toml")).unwrap();
    (rm.out, rm.backend, rm.mixed_precision) = (out("rm"), backend, mixed_precision);
    // The example reads the tour's labels; a few lines of the same format (TRL's stepwise
    // supervision) do here.
    rm.data = out("steps.jsonl");
    let line = r#"{"prompt": "1 + 2 = ?", "completions": ["1 + 2 = 3.", "So 3."], "labels": [true, true]}"#;
    std::fs::write(&rm.data, format!("{line}\n{line}\n{line}\n{line}\n")).unwrap();
    let dir = RunDir::create(&rm.out).unwrap();
    let result = reasonlab_recipe::run::rm::train::run(
        &rm,
        &dir,
        Resume::Fresh,
        BadLines::Skip,
        &mut quiet(),
    );
    check("rm train", result.map(|_| ()));
}

#[test]
fn training_drivers_open_the_configured_backend() {
    each_training_driver(missing(), Precision::F32, assert_refused);
}

#[test]
fn a_distill_files_backend_reaches_the_student_and_a_local_teacher() {
    let path = examples().join("distill-tiny.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let kind = missing();
    let tmp = tempfile::tempdir().unwrap();
    // The file as written, with a top-level `backend` (before the first table).
    let with_backend = format!("backend = \"{kind}\"\n{text}");
    let file = tmp.path().join("distill.toml");
    std::fs::write(&file, with_backend).unwrap();
    let loaded = reasonlab_recipe::run::load_toml(&file).unwrap();
    // Relative paths resolve against the example's folder, as if the file were there.
    let loaded = reasonlab_recipe::run::Loaded {
        config: loaded.config,
        dir: examples(),
    };
    let cfg = reasonlab_recipe::run::distill::DistillConfig::from_loaded(loaded).unwrap();
    assert_eq!(cfg.backend, kind);
    assert_eq!(cfg.traces.engine.backend, Some(kind));
    let mut cfg = cfg;
    cfg.out = tmp.path().join("out");
    cfg.traces.out = cfg.out.join("traces.jsonl");
    let dir = RunDir::create(&cfg.out).unwrap();
    assert_refused(
        "distill",
        reasonlab_recipe::run::distill::run(&cfg, &dir, Resume::Fresh, false, &mut quiet()),
    );
}

#[test]
fn a_recipes_backend_reaches_its_stages() {
    let src = examples().join("recipe-tiny.toml");
    let text = std::fs::read_to_string(&src).unwrap();
    let kind = missing();
    let mut recipe = Recipe::load(&src).unwrap();
    assert_eq!(recipe.backend, None);
    recipe.backend = Some(kind);
    let tmp = tempfile::tempdir().unwrap();
    let mut notes = Vec::new();
    let result = pipeline::run(
        &recipe,
        &tmp.path().join("run"),
        false,
        &Span::default(),
        &mut |_, e| {
            if let Event::Note(n) = e {
                notes.push(n);
            }
        },
    );
    assert_refused("recipe", result);
    // And written in the file.
    let file = tmp.path().join("recipe.toml");
    std::fs::write(&file, format!("backend = \"{kind}\"\n{text}")).unwrap();
    let parsed = Recipe::load(&file).unwrap();
    assert_eq!(parsed.backend, Some(kind));
    assert!(
        notes.iter().all(|n| !n.starts_with("device: flex")),
        "{notes:?}"
    );
}

#[test]
fn a_flex_run_names_its_device() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sft =
        reasonlab_recipe::run::sft::SftConfig::load(&examples().join("sft-tiny.toml")).unwrap();
    sft.out = tmp.path().join("sft");
    sft.sft.epochs = 1;
    sft.sft.max_steps = 1;
    let dir = RunDir::create(&sft.out).unwrap();
    let mut notes = Vec::new();
    reasonlab_recipe::run::sft::run(&sft, &dir, Resume::Fresh, BadLines::Skip, &mut |e| {
        if let Event::Note(n) = e {
            notes.push(n);
        }
    })
    .unwrap();
    assert!(
        notes.iter().any(|n| n.starts_with("device: flex (CPU, ")),
        "{notes:?}"
    );
    let written = std::fs::read_to_string(sft.out.join("config.toml")).unwrap();
    assert!(written.contains("backend = \"flex\""), "{written}");
}

fn refused_mixed(what: &str, result: Result<(), RunError>) {
    let err = result.expect_err(what).to_string();
    assert!(
        err.contains("mixed precision (bf16) is for the GPU backends"),
        "{what}: {err}"
    );
}

/// Mixed precision is for the GPU backends: every training driver on flex refuses it before
/// training, saying why, and a file's `mixed_precision` reaches the resolved config.
#[test]
fn training_drivers_refuse_mixed_precision_on_flex() {
    each_training_driver(BackendKind::Flex, Precision::Bf16, refused_mixed);

    // The key reaches the resolved config from the file.
    let text = std::fs::read_to_string(examples().join("sft-tiny.toml")).unwrap();
    let file: reasonlab_recipe::run::sft::SftFile =
        toml::from_str(&format!("mixed_precision = \"bf16\"\n{text}")).unwrap();
    let cfg = reasonlab_recipe::run::sft::SftConfig::from_loaded(reasonlab_recipe::run::Loaded {
        config: file,
        dir: examples(),
    })
    .unwrap();
    assert_eq!(cfg.mixed_precision, Precision::Bf16);
}

#[test]
fn a_recipes_mixed_precision_reaches_its_training_stages() {
    let src = examples().join("recipe-tiny.toml");
    let mut recipe = Recipe::load(&src).unwrap();
    assert_eq!(recipe.mixed_precision, None);
    recipe.mixed_precision = Some(reasonlab_model::Precision::Bf16);
    let tmp = tempfile::tempdir().unwrap();
    let result = pipeline::run(
        &recipe,
        &tmp.path().join("run"),
        false,
        &Span::default(),
        &mut |_, _| {},
    );
    // On flex the first training stage refuses it.
    refused_mixed("recipe", result.map(|_| ()));
}
