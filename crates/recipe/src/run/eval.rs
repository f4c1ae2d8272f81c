//! The evaluation driver behind `reasonlab eval run`, which maps its flags onto an [`EvalRun`];
//! from Rust, an `EvalRun` can also be read from TOML ([`EvalRun::load`]):
//!
//! ```toml
//! out = "runs/eval"
//! [engine]                      # a local model or an endpoint (see `engines`)
//! model = "runs/sft/checkpoints/step-1000"
//! [eval]                        # reasonlab_eval::EvalConfig
//! benchmarks = [{ built_in = "math500" }]
//! template = "r1"
//! n = 4
//! # sampling, ks, chunk_size, verify, limit
//! [rerank]                      # optional: best-of-N (bon@k) with a reward model
//! model = "runs/prm/checkpoints/step-60"
//! aggregate = "min"             # process models: min | product | last
//! [tools]                       # optional: the model's code runs in the sandbox
//! format = "tora"               # pot | tora | { tags = { code_open, code_close, output_open, output_close } }
//! max_calls = 4
//! ```
//!
//! With `[tools]`, `tools.json` counts each benchmark's tool calls, failed calls and timeouts,
//! and `report.md` gains a "Tool use" table.
//!
//! Besides the run folder's `config.toml` and `summary.json` (the results), the folder holds
//! eval's own files: `completions.jsonl` (every sample, keyed by a settings hash, so a rerun with
//! the same settings reuses them — evaluation always resumes), `results.json`, `report.md`
//! and `report.html` (`docs/eval.md`).

use std::path::{Path, PathBuf};

use reasonlab_core::engine::Engine;
use reasonlab_eval::{EvalConfig, RunResults, run_eval_ranked};
use reasonlab_sandbox::tools::{ToolConfig, ToolEngine, ToolFormat, ToolStats};
use reasonlab_sandbox::{Isolation, Limits, Sandbox};
use serde::{Deserialize, Serialize};

use super::rm::{RerankSpec, RmRanker};
use super::{Event, Loaded, RunDir, RunError, load_toml};
use crate::engines::EngineSpec;

/// An evaluation run: where completions come from, what to evaluate, where to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRun {
    pub out: PathBuf,
    pub engine: EngineSpec,
    pub eval: EvalConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RerankSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolSetup>,
}

fn default_calls() -> usize {
    4
}
fn default_chars() -> usize {
    2048
}
fn default_python() -> PathBuf {
    PathBuf::from("python3")
}
fn default_interpreters() -> usize {
    2
}

/// `[tools]`: run the code the model writes (program of thought or tool-integrated reasoning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSetup {
    pub format: ToolFormat,
    #[serde(default = "default_calls")]
    pub max_calls: usize,
    /// Characters of a call's output put back into the context.
    #[serde(default = "default_chars")]
    pub max_output_chars: usize,
    /// The interpreter (a name on the PATH or a path).
    #[serde(default = "default_python")]
    pub python: PathBuf,
    /// Limits of every code block ([`Limits`]).
    #[serde(default)]
    pub limits: Limits,
    /// `required` (the default) refuses to run without Landlock and seccomp.
    #[serde(default)]
    pub isolation: Isolation,
    /// Warm interpreters.
    #[serde(default = "default_interpreters")]
    pub interpreters: usize,
}

impl ToolSetup {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            max_calls: default_calls(),
            max_output_chars: default_chars(),
            python: default_python(),
            limits: Limits::default(),
            isolation: Isolation::default(),
            interpreters: default_interpreters(),
        }
    }

    pub fn config(&self) -> ToolConfig {
        ToolConfig {
            format: self.format.clone(),
            max_calls: self.max_calls,
            max_output_chars: self.max_output_chars,
        }
    }

    pub fn sandbox(&self) -> Result<Sandbox, RunError> {
        Ok(Sandbox::new(
            &self.python,
            self.limits.clone(),
            self.isolation,
            self.interpreters,
        )?)
    }
}

/// Tool use of one benchmark's completions.
#[derive(Debug, Clone, Serialize)]
pub struct BenchmarkTools {
    pub benchmark: String,
    #[serde(flatten)]
    pub stats: ToolStats,
}

impl EvalRun {
    /// Read `eval.toml`; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        Self::from_loaded(load_toml(path)?)
    }

    /// From a parsed file whose relative paths are relative to `loaded.dir`.
    pub fn from_loaded(loaded: Loaded<EvalRun>) -> Result<Self, RunError> {
        let mut run = loaded.config.clone();
        run.out = loaded.path(&run.out);
        run.engine.model = run.engine.model.as_ref().map(|m| loaded.path(m));
        if let Some(r) = &mut run.rerank {
            r.model = loaded.path(&r.model);
        }
        for b in &mut run.eval.benchmarks {
            if let reasonlab_eval::Benchmark::File { path, .. } = b {
                *path = loaded.path(path);
            }
        }
        Ok(run)
    }
}

/// Evaluate as `cfg` says into `dir` (`base` resolves a relative local model path).
pub fn run(
    cfg: &EvalRun,
    dir: &RunDir,
    base: &Path,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RunResults, RunError> {
    let engine = cfg.engine.build(base, on_event)?;
    dir.write_config(cfg)?;
    on_event(Event::Started {
        stage: "eval",
        total: cfg.eval.benchmarks.len(),
        done: 0,
        resumed_from: None,
    });
    let ranker = cfg.rerank.as_ref().map(RmRanker::load).transpose()?;
    let tools = match &cfg.tools {
        Some(t) => Some(ToolEngine::new(engine.as_ref(), t.sandbox()?, t.config())),
        None => None,
    };
    let engine: &dyn Engine = match &tools {
        Some(t) => t,
        None => engine.as_ref(),
    };
    let results = run_eval_ranked(
        engine,
        &cfg.eval,
        dir.root(),
        ranker.as_ref().map(|r| r as &dyn reasonlab_eval::Ranker),
    )
    .map_err(|e| RunError::Invalid(format!("eval into {}: {e}", dir.root().display())))?;
    if let Some(t) = &cfg.tools {
        tool_report(dir, &t.format, &results)?;
    }
    on_event(Event::Progress {
        done: cfg.eval.benchmarks.len(),
        message: format!(
            "{} generated, {} reused",
            results.counts.generated, results.counts.reused
        ),
    });
    dir.write_summary(&results)?;
    Ok(results)
}

/// Count the tool use of this run's completions (those of its settings) into `tools.json` and a
/// "Tool use" table at the end of `report.md`.
pub fn tool_report(
    dir: &RunDir,
    format: &ToolFormat,
    results: &RunResults,
) -> Result<Vec<BenchmarkTools>, RunError> {
    use std::collections::BTreeMap;
    let hash = results.settings_hash.as_str();
    let path = dir.root().join("completions.jsonl");
    let text = std::fs::read_to_string(&path).map_err(super::io(&path))?;
    let mut by: BTreeMap<String, ToolStats> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(b), Some(h), Some(c)) = (
            v["benchmark"].as_str(),
            v["settings_hash"].as_str(),
            v["completion"].as_str(),
        ) else {
            continue;
        };
        if h == hash {
            by.entry(b.to_string()).or_default().add(format, c);
        }
    }
    let rows: Vec<BenchmarkTools> = by
        .into_iter()
        .map(|(benchmark, stats)| BenchmarkTools { benchmark, stats })
        .collect();
    let json = dir.root().join("tools.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&rows).map_err(|e| RunError::Invalid(e.to_string()))?,
    )
    .map_err(super::io(&json))?;
    let report = dir.root().join("report.md");
    let mut md = std::fs::read_to_string(&report).unwrap_or_default();
    md.push_str(
        "\n## Tool use\n\n| benchmark | completions | tool calls | per completion | failed | timed out |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &rows {
        let s = &r.stats;
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {} |\n",
            r.benchmark,
            s.completions,
            s.calls,
            s.calls as f64 / s.completions.max(1) as f64,
            s.errors,
            s.timeouts
        ));
    }
    std::fs::write(&report, md).map_err(super::io(&report))?;
    Ok(rows)
}
