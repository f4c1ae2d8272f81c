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
    Pretrain,
    Sft,
    Grpo,
    Sample,
    Distill,
    RmTrain,
    Eval,
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
        let config = resolve_stage(stage, &stage_dir, &manifest)?;
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
    Ok(summary)
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
        StageKind::Sample => stage_dir.join("data.jsonl"),
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
            let (name, what) = match reference.split_once('.') {
                Some((n, w)) => (n, Some(w)),
                None => (reference, None),
            };
            let record = manifest
                .get(name)
                .filter(|r| r.state == StageState::Done)
                .ok_or_else(|| {
                    RunError::Invalid(format!(
                        "stage {stage}: {s} names a stage that has not run (it must come earlier)"
                    ))
                })?;
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
