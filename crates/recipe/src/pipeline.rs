//! Recipes: stages (pretrain, sft, grpo, sample, distill, rm train, eval) run in order in one
//! run directory, each stage's model or data feeding the next by name —
//! `reasonlab recipe run FILE.toml --out DIR [--resume] [--from STAGE] [--until STAGE]`.
//!
//! ```toml
//! name = "sft-then-eval"
//!
//! [[stage]]
//! name = "traces"
//! kind = "sample"                    # the stage's own config schema, as its command reads it
//! [stage.config]
//! data = "problems.jsonl"
//! engine = { model = "ckpt/teacher" }
//!
//! [[stage]]
//! name = "sft"
//! kind = "sft"
//! [stage.config]
//! model = "ckpt/base"
//! data = "@traces"                   # the data the `traces` stage wrote
//!
//! [[stage]]
//! name = "eval"
//! kind = "eval"
//! [stage.config]
//! engine = { model = "@sft" }        # the model the `sft` stage trained
//! eval = { benchmarks = [{ built_in = "gsm8k_test" }], template = "chat", n = 4 }
//! ```
//!
//! A stage's `config` is the TOML its command reads (`sft.toml`, `grpo.toml`, `eval.toml`, …;
//! relative paths are relative to the recipe file) without `out`: every stage writes to
//! `DIR/stages/NAME/` (a sample stage to `DIR/stages/NAME/data.jsonl`). A string `"@NAME"`
//! anywhere in it is replaced by what stage `NAME` made — its model (a checkpoint directory in
//! HF layout) or, for sample stages, its data; `"@NAME.model"` and `"@NAME.data"` ask for one
//! of them.
//!
//! `DIR/manifest.json` records each stage's resolved config, outputs, wall time, held-out
//! `pass@1` (eval stages) and state, rewritten atomically after every stage. With `--resume` a
//! finished stage is skipped and an unfinished one continues from its newest checkpoint; a
//! failing stage stops the run with its error, recorded in the manifest. `DIR/summary.json`
//! lists the stages with their `pass@1` where one was measured.

use std::path::{Path, PathBuf};
use std::time::Instant;

use reasonlab_core::jsonl::BadLines;
use reasonlab_eval::MetricKey;
use reasonlab_model::{BackendKind, Precision};
use serde::{Deserialize, Serialize};

use crate::run::distill::DistillConfig;
use crate::run::eval::EvalRun;
use crate::run::grpo::GrpoConfig;
use crate::run::pretrain::PretrainConfig;
use crate::run::rm::RmConfig;
use crate::run::sample::SampleConfig;
use crate::run::sft::SftConfig;
use crate::run::{Event, Resume, RunDir, RunError, from_table, io, load_toml, resolve};

/// What a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The built-in arithmetic task's files and random models ([`crate::task`]).
    Task,
    Pretrain,
    Sft,
    Grpo,
    Sample,
    Distill,
    /// Math-Shepherd process labels (`reasonlab rm label`'s settings, [`RmLabelFile`]).
    RmLabel,
    RmTrain,
    Eval,
}

impl StageKind {
    /// Whether the stage trains a model (and takes `backend`, `mixed_precision` at the top of
    /// its config).
    pub fn trains(self) -> bool {
        matches!(
            self,
            Self::Pretrain | Self::Sft | Self::Grpo | Self::Distill | Self::RmTrain
        )
    }
}

/// An `rm_label` stage's config: `reasonlab rm label`'s flags as TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmLabelFile {
    /// Solutions to label: `prompt`, `completion` (or `completions`), `answer`.
    pub input: PathBuf,
    /// The completer.
    pub engine: crate::engines::EngineSpec,
    /// Completions per step.
    #[serde(default = "default_label_n")]
    pub n: usize,
    pub separator: String,
    #[serde(default)]
    pub estimate: crate::run::rm::Estimate,
    #[serde(default)]
    pub sampling: reasonlab_core::engine::Sampling,
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    pub out: PathBuf,
}

fn default_label_n() -> usize {
    4
}

fn default_chunk() -> usize {
    64
}

/// One `[[stage]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
    #[serde(default)]
    pub config: toml::Table,
}

/// A recipe file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub name: Option<String>,
    /// Every stage's tensor backend (`flex`, `wgpu`, `vulkan`, `cuda`), unless its config sets
    /// its own (`backend = …`, or `[engine] backend = …` for a local engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// Every training stage's `mixed_precision` (`"bf16"`, `"f16"`, `"f32"`), unless its config
    /// sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<Precision>,
    pub stage: Vec<Stage>,
    /// The recipe file's folder: relative paths in stage configs are relative to it.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let loaded = load_toml::<Recipe>(path)?;
        let mut recipe = loaded.config;
        recipe.dir = loaded.dir;
        recipe.check()?;
        Ok(recipe)
    }

    fn check(&self) -> Result<(), RunError> {
        let mut seen = std::collections::HashSet::new();
        for s in &self.stage {
            if s.name.is_empty() || s.name.contains(['.', '/', '@']) {
                return Err(RunError::Invalid(format!(
                    "stage name {:?}: use letters, digits, - and _",
                    s.name
                )));
            }
            if !seen.insert(&s.name) {
                return Err(RunError::Invalid(format!(
                    "two stages are named {:?}",
                    s.name
                )));
            }
            if s.config.contains_key("out") {
                return Err(RunError::Invalid(format!(
                    "stage {}: leave `out` out; the recipe puts every stage in DIR/stages/NAME",
                    s.name
                )));
            }
        }
        Ok(())
    }

    fn position(&self, name: &str) -> Result<usize, RunError> {
        self.stage
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| RunError::Invalid(format!("no stage named {name:?}")))
    }
}

/// Which stages of a recipe to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span {
    pub from: Option<String>,
    pub until: Option<String>,
}

/// Where a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Done,
    Failed,
}

/// What a stage made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
}

/// A stage's line in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub kind: StageKind,
    pub state: StageState,
    /// The stage's folder, DIR/stages/NAME.
    #[serde(default)]
    pub dir: PathBuf,
    /// The stage's config with every `@` reference and `out` filled in.
    pub config: toml::Table,
    pub outputs: Outputs,
    pub seconds: f64,
    /// Held-out pass@1 of an eval stage (its first benchmark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `DIR/manifest.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub recipe: Option<String>,
    pub stages: Vec<StageRecord>,
}

impl Manifest {
    fn get(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }

    fn put(&mut self, record: StageRecord) {
        match self.stages.iter_mut().find(|s| s.name == record.name) {
            Some(s) => *s = record,
            None => self.stages.push(record),
        }
    }
}

/// One line of `DIR/summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSummary {
    pub name: String,
    pub kind: StageKind,
    pub state: StageState,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass1: Option<f64>,
}

/// Run `recipe` into `out`: the stages in `span`, skipping those `manifest.json` already has
/// as done when `resume` is on.
pub fn run(
    recipe: &Recipe,
    out: &Path,
    resume: bool,
    span: &Span,
    on_event: &mut dyn FnMut(&str, Event<'_>),
) -> Result<Vec<StageSummary>, RunError> {
    // Absolute: stage configs resolve relative paths against the recipe's folder.
    let created = RunDir::create(out)?;
    let dir = RunDir::create(std::fs::canonicalize(created.root()).map_err(io(out))?)?;
    let manifest_path = dir.root().join("manifest.json");
    let mut manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) if resume || span.from.is_some() => serde_json::from_str(&text)
            .map_err(|e| RunError::Invalid(format!("{}: {e}", manifest_path.display())))?,
        Ok(_) => {
            return Err(RunError::Invalid(format!(
                "{} holds a recipe run; continue it with --resume (or choose another --out)",
                dir.root().display()
            )));
        }
        Err(_) => Manifest::default(),
    };
    manifest.recipe = recipe.name.clone();
    let first = match &span.from {
        Some(s) => recipe.position(s)?,
        None => 0,
    };
    let last = match &span.until {
        Some(s) => recipe.position(s)?,
        None => recipe.stage.len().saturating_sub(1),
    };
    for (i, stage) in recipe.stage.iter().enumerate() {
        if i < first || i > last {
            continue;
        }
        if resume
            && manifest
                .get(&stage.name)
                .is_some_and(|r| r.state == StageState::Done)
        {
            on_event(&stage.name, Event::Note("done earlier; skipped".into()));
            continue;
        }
        let stage_dir = dir.root().join("stages").join(&stage.name);
        let mut config = resolve_stage(stage, &stage_dir, &manifest)?;
        if let Some(backend) = recipe.backend {
            default_backend(stage.kind, &mut config, backend);
        }
        if let Some(precision) = recipe.mixed_precision
            && stage.kind.trains()
        {
            let value = toml::Value::String(precision.name().into());
            config.entry("mixed_precision").or_insert(value);
        }
        let started = Instant::now();
        let result = run_stage(
            stage.kind,
            config.clone(),
            &recipe.dir,
            &stage_dir,
            resume,
            &mut |e| on_event(&stage.name, e),
        );
        let seconds = started.elapsed().as_secs_f64();
        let (state, outputs, pass1, error) = match &result {
            Ok((o, p)) => (StageState::Done, o.clone(), *p, None),
            Err(e) => (
                StageState::Failed,
                Outputs::default(),
                None,
                Some(e.to_string()),
            ),
        };
        manifest.put(StageRecord {
            name: stage.name.clone(),
            kind: stage.kind,
            state,
            dir: stage_dir.clone(),
            config: config.clone(),
            outputs,
            seconds,
            pass1,
            error,
        });
        write_json(&manifest_path, &manifest)?;
        if let Err(e) = result {
            return Err(RunError::Invalid(format!("stage {}: {e}", stage.name)));
        }
    }
    let summary: Vec<StageSummary> = recipe
        .stage
        .iter()
        .filter_map(|s| manifest.get(&s.name))
        .map(|r| StageSummary {
            name: r.name.clone(),
            kind: r.kind,
            state: r.state,
            seconds: r.seconds,
            pass1: r.pass1,
        })
        .collect();
    dir.write_summary(&summary)?;
    write_report(dir.root(), recipe, &manifest)?;
    Ok(summary)
}

/// `DIR/report.html` and `DIR/plots/pass1.{svg,png}`: the stages with their times and
/// held-out pass@1, a chart of pass@1 after each evaluated stage, and every stage's own plots.
fn write_report(root: &Path, recipe: &Recipe, manifest: &Manifest) -> Result<(), RunError> {
    use std::fmt::Write as _;
    let records: Vec<&StageRecord> = recipe
        .stage
        .iter()
        .filter_map(|s| manifest.get(&s.name))
        .collect();
    let evals: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| r.pass1)
        .enumerate()
        .map(|(i, p)| (i as f64 + 1.0, p))
        .collect();
    let plots = root.join("plots");
    std::fs::create_dir_all(&plots).map_err(io(&plots))?;
    let names: Vec<&str> = records
        .iter()
        .filter(|r| r.pass1.is_some())
        .map(|r| r.name.as_str())
        .collect();
    let title = format!(
        "held-out pass@1 after each evaluation ({})",
        names.join(", ")
    );
    let scene = crate::plots::chart_scene(&title, "evaluation", &[("pass@1", evals)]);
    let chart = crate::plots::write_chart(&plots, "pass1", &scene).map_err(io(&plots))?;
    let name = recipe.name.as_deref().unwrap_or("recipe");
    let mut rows = String::new();
    let mut curves = String::new();
    for r in &records {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{:?}</td><td>{:?}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            r.name,
            r.kind,
            r.state,
            r.seconds,
            r.pass1.map_or(String::new(), |p| format!("{p:.3}")),
            r.error.as_deref().unwrap_or("")
        );
        let stage_plots = r.dir.join("plots");
        let Ok(entries) = std::fs::read_dir(&stage_plots) else {
            continue;
        };
        let mut pngs: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".png"))
            .collect();
        pngs.sort();
        if !pngs.is_empty() {
            let _ = write!(curves, "<h3>{}</h3>", r.name);
            for f in pngs {
                let _ = write!(
                    curves,
                    "<img src=\"stages/{}/plots/{f}\" width=\"560\">",
                    r.name
                );
            }
        }
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd}}</style>\
         </head><body><h1>{name}</h1><table><tr><th>stage</th><th>kind</th><th>state</th>\
         <th>seconds</th><th>held-out pass@1</th><th>error</th></tr>{rows}</table>\
         <h2>Held-out pass@1 by stage</h2>{chart}<h2>Training curves</h2>{curves}</body></html>"
    );
    let path = root.join("report.html");
    reasonlab_core::fs::atomic_write(&path, html.as_bytes()).map_err(io(&path))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| RunError::Invalid(e.to_string()))?;
    reasonlab_core::fs::atomic_write(path, text.as_bytes()).map_err(io(path))
}

/// The stage's config with `out` set and every `@` reference replaced.
fn resolve_stage(
    stage: &Stage,
    stage_dir: &Path,
    manifest: &Manifest,
) -> Result<toml::Table, RunError> {
    let mut config = stage.config.clone();
    let out = match stage.kind {
        StageKind::Sample | StageKind::RmLabel => stage_dir.join("data.jsonl"),
        _ => stage_dir.to_path_buf(),
    };
    config.insert("out".into(), toml::Value::String(out.display().to_string()));
    for (_, v) in config.iter_mut() {
        substitute(v, &stage.name, manifest)?;
    }
    Ok(config)
}

fn substitute(v: &mut toml::Value, stage: &str, manifest: &Manifest) -> Result<(), RunError> {
    match v {
        toml::Value::String(s) if s.starts_with('@') => {
            let reference = &s[1..];
            let done = |name: &str| {
                manifest
                    .get(name)
                    .filter(|r| r.state == StageState::Done)
                    .ok_or_else(|| {
                        RunError::Invalid(format!(
                            "stage {stage}: {s} names a stage that has not run (it must come earlier)"
                        ))
                    })
            };
            if let Some((name, rel)) = reference.split_once('/') {
                // A file the stage wrote: DIR/stages/NAME/REL.
                let record = done(name)?;
                let path = record.dir.join(rel);
                if !path.exists() {
                    return Err(RunError::Invalid(format!(
                        "stage {stage}: {s}: stage {name} wrote no {}",
                        path.display()
                    )));
                }
                *s = path.display().to_string();
                return Ok(());
            }
            let (name, what) = match reference.split_once('.') {
                Some((n, w)) => (n, Some(w)),
                None => (reference, None),
            };
            let record = done(name)?;
            let o = &record.outputs;
            let path = match what {
                None => o.model.as_ref().or(o.data.as_ref()),
                Some("model") => o.model.as_ref(),
                Some("data") => o.data.as_ref(),
                Some(other) => {
                    return Err(RunError::Invalid(format!(
                        "stage {stage}: {s}: `.{other}`? a stage gives `.model` or `.data`"
                    )));
                }
            }
            .ok_or_else(|| {
                RunError::Invalid(format!(
                    "stage {stage}: stage {name} made no such output ({s})"
                ))
            })?;
            *s = path.display().to_string();
        }
        toml::Value::Array(a) => {
            for x in a {
                substitute(x, stage, manifest)?;
            }
        }
        toml::Value::Table(t) => {
            for (_, x) in t.iter_mut() {
                substitute(x, stage, manifest)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Run one stage; its outputs and held-out pass@1 (eval).
/// Give a stage's config `backend` where it sets none: top-level for the training stages, in
/// `[engine]` for the sampling stages when the engine is a local model.
fn default_backend(kind: StageKind, config: &mut toml::Table, backend: BackendKind) {
    let value = toml::Value::String(backend.name().into());
    if kind.trains() {
        config.entry("backend").or_insert(value);
    } else if let Some(toml::Value::Table(engine)) = config.get_mut("engine")
        && engine.contains_key("model")
    {
        // The sampling stages (sample, eval, rm_label) with a local engine.
        engine.entry("backend").or_insert(value);
    }
}

fn run_stage(
    kind: StageKind,
    config: toml::Table,
    base: &Path,
    stage_dir: &Path,
    resume: bool,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(Outputs, Option<f64>), RunError> {
    let what = format!("[stage.config] of a {kind:?} stage");
    let resume = if resume {
        Resume::Latest
    } else {
        Resume::Fresh
    };
    let bad = BadLines::Skip;
    Ok(match kind {
        StageKind::Task => {
            let cfg: crate::task::TaskConfig = from_table(config, base, &what)?.config;
            crate::task::write(&cfg).map_err(|e| RunError::Invalid(e.to_string()))?;
            (
                Outputs {
                    model: None,
                    data: Some(cfg.out),
                },
                None,
            )
        }
        StageKind::RmLabel => {
            let file: RmLabelFile = from_table(config, base, &what)?.config;
            let cfg = crate::run::rm::LabelConfig {
                input: resolve(base, &file.input),
                out: file.out.clone(),
                n: file.n,
                separator: file.separator,
                estimate: file.estimate,
                sampling: file.sampling,
                chunk_size: file.chunk_size,
            };
            let engine = file
                .engine
                .build(base, on_event)
                .map_err(|e| RunError::Invalid(e.to_string()))?;
            std::fs::create_dir_all(stage_dir).map_err(io(stage_dir))?;
            crate::run::rm::label::label(&cfg, engine.as_ref(), on_event)?;
            (
                Outputs {
                    model: None,
                    data: Some(file.out),
                },
                None,
            )
        }
        StageKind::Pretrain => {
            let cfg = PretrainConfig::from_loaded(from_table(config, base, &what)?)?;
            let dir = RunDir::create(&cfg.out)?;
            let s = crate::run::pretrain::run(&cfg, &dir, resume, bad, on_event)?;
            (
                Outputs {
                    model: s.model,
                    data: None,
                },
                None,
            )
        }
        StageKind::Sft => {
            let cfg = SftConfig::from_loaded(from_table(config, base, &what)?)?;
            let dir = RunDir::create(&cfg.out)?;
            let s = crate::run::sft::run(&cfg, &dir, resume, bad, on_event)?;
            (
                Outputs {
                    model: Some(s.model),
                    data: None,
                },
                None,
            )
        }
        StageKind::Grpo => {
            let file = from_table(config, base, &what)?;
            let cfg = GrpoConfig::resolve(&file.config, base)?;
            let dir = RunDir::create(&cfg.out)?;
            let s = crate::run::grpo::run(&cfg, &dir, resume, on_event)?;
            (
                Outputs {
                    model: s.checkpoints.last().cloned(),
                    data: None,
                },
                None,
            )
        }
        StageKind::Sample => {
            let mut cfg: SampleConfig = from_table(config, base, &what)?.config;
            // Paths relative to the recipe file; `data` may name a built-in benchmark.
            let data = resolve(base, Path::new(&cfg.data));
            if data.exists() {
                cfg.data = data.display().to_string();
            }
            cfg.engine.model = cfg.engine.model.as_ref().map(|m| resolve(base, m));
            cfg.rewards = cfg.rewards.as_ref().map(|r| resolve(base, r));
            std::fs::create_dir_all(stage_dir).map_err(io(stage_dir))?;
            crate::run::sample::run(&cfg, Path::new("."), on_event)?;
            (
                Outputs {
                    model: None,
                    data: Some(cfg.out),
                },
                None,
            )
        }
        StageKind::Distill => {
            let cfg = DistillConfig::from_loaded(from_table(config, base, &what)?)?;
            let dir = RunDir::create(&cfg.out)?;
            let s = crate::run::distill::run(&cfg, &dir, resume, false, on_event)?;
            (
                Outputs {
                    model: s.sft.map(|x| x.model),
                    data: Some(cfg.traces.out.clone()),
                },
                None,
            )
        }
        StageKind::RmTrain => {
            let cfg = RmConfig::from_loaded(from_table(config, base, &what)?)?;
            let dir = RunDir::create(&cfg.out)?;
            let s = crate::run::rm::train::run(&cfg, &dir, resume, bad, on_event)?;
            (
                Outputs {
                    model: Some(s.model),
                    data: None,
                },
                None,
            )
        }
        StageKind::Eval => {
            let cfg = EvalRun::from_loaded(from_table(config, base, &what)?)?;
            let dir = RunDir::create(&cfg.out)?;
            let results = crate::run::eval::run(&cfg, &dir, Path::new("."), on_event)?;
            let pass1 = results
                .benchmarks
                .first()
                .and_then(|b| b.scores.metrics.get(&MetricKey::PassAt(1)))
                .map(|m| m.mean);
            (Outputs::default(), pass1)
        }
    })
}
