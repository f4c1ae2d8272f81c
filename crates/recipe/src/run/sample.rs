//! The trace-sampling driver behind `reasonlab sample` (rejection sampling) and the first half
//! of `reasonlab distill`: `k` completions per problem from any [`Engine`], scored, filtered
//! and written as SFT-ready JSONL with provenance. Resumable: running it again finishes what is
//! missing (see [`crate::traces`]).

use std::path::{Path, PathBuf};

use reasonlab_core::engine::{Engine, Sampling};
use reasonlab_eval::{Benchmark, PromptTemplate};
use reasonlab_reward::{RewardConfig, WeightedSum};
use serde::{Deserialize, Serialize};

use super::eval::ToolSetup;
use super::{Event, RunError};
use crate::engines::EngineSpec;
use crate::traces::{self, FilterSettings, TraceProblem, TraceSummary};
use reasonlab_sandbox::tools::ToolEngine;

/// The rewards used when none are configured: accuracy, the `<think>` format and language
/// consistency (the shipped `examples/rewards.toml`).
pub const DEFAULT_REWARDS: &str = include_str!("../../../../examples/rewards.toml");

fn default_template() -> String {
    "chat".into()
}
fn default_k() -> usize {
    4
}
fn default_chunk() -> usize {
    16
}

/// A sampling job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// A built-in benchmark name or a JSONL / Parquet file with `id`, `problem`, `answer`.
    pub data: String,
    /// Where completions come from.
    pub engine: EngineSpec,
    /// Completions per problem.
    #[serde(default = "default_k")]
    pub k: usize,
    /// r1 | fewshot-cot | plain | chat.
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default)]
    pub sampling: Sampling,
    /// A rewards TOML; `None`: [`DEFAULT_REWARDS`].
    #[serde(default)]
    pub rewards: Option<PathBuf>,
    #[serde(default)]
    pub filter: FilterSettings,
    /// Only the first N problems.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Problems per engine call.
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    /// Output JSONL (a `.ledger.jsonl` beside it records finished problems).
    pub out: PathBuf,
    /// Tool use: the completions' code runs in the sandbox and its output goes back into them
    /// (tool-integrated or program-of-thought traces; SFT masks the output blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolSetup>,
}

impl SampleConfig {
    /// The problems rendered with the template.
    pub fn problems(&self) -> Result<Vec<TraceProblem>, RunError> {
        let bad = |e: reasonlab_eval::EvalError| RunError::Invalid(e.to_string());
        let benchmark = Benchmark::parse(&self.data).map_err(bad)?;
        let mut rows = benchmark.load().map_err(bad)?;
        if let Some(n) = self.limit {
            rows.truncate(n);
        }
        Ok(traces::problems_from(
            &rows,
            PromptTemplate::parse(&self.template).map_err(bad)?,
            benchmark.language(),
            benchmark.few_shot_style(),
        ))
    }

    /// The configured rewards.
    pub fn rewards(&self) -> Result<WeightedSum, RunError> {
        Ok(match &self.rewards {
            Some(p) => RewardConfig::load(p)?,
            None => RewardConfig::from_toml(DEFAULT_REWARDS)?,
        }
        .build())
    }
}

/// Sample, score and filter every problem of `cfg` into `cfg.out`; `base` resolves a relative
/// local model path.
pub fn run(
    cfg: &SampleConfig,
    base: &Path,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<TraceSummary, RunError> {
    let engine = cfg.engine.build(base, on_event)?;
    match &cfg.tools {
        Some(t) => {
            let tools = ToolEngine::new(engine.as_ref(), t.sandbox()?, t.config());
            sample_with(&tools, cfg, on_event)
        }
        None => sample_with(engine.as_ref(), cfg, on_event),
    }
}

/// [`run`] on an engine the caller already holds.
pub fn sample_with(
    engine: &dyn Engine,
    cfg: &SampleConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<TraceSummary, RunError> {
    let problems = cfg.problems()?;
    let rewards = cfg.rewards()?;
    on_event(Event::Started {
        stage: "sample",
        total: problems.len(),
        done: 0,
        resumed_from: None,
    });
    let summary = traces::run(
        engine,
        &problems,
        cfg.k,
        &cfg.sampling,
        &rewards,
        &cfg.filter,
        &cfg.out,
        cfg.chunk_size,
        &mut |s| {
            on_event(Event::Progress {
                done: s.already_done + s.done + s.failed,
                message: format!("kept {}/{}  failed {}", s.kept, s.generated, s.failed),
            })
        },
    )
    .map_err(|e| RunError::Invalid(format!("sampling into {}: {e}", cfg.out.display())))?;
    if summary.failed > 0 {
        on_event(Event::Note(format!(
            "{} problems failed (see {}); run again to retry them",
            summary.failed,
            traces::ledger_path(&cfg.out).display()
        )));
    }
    Ok(summary)
}
