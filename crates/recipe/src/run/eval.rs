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
//! ```
//!
//! Besides the run folder's `config.toml` and `summary.json` (the results), the folder holds
//! eval's own files: `completions.jsonl` (every sample, keyed by a settings hash, so a rerun with
//! the same settings reuses them — evaluation always resumes), `results.json`, `report.md`
//! and `report.html` (`docs/eval.md`).

use std::path::{Path, PathBuf};

use reasonlab_eval::{EvalConfig, RunResults, run_eval_ranked};
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
}

impl EvalRun {
    /// Read `eval.toml`; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let loaded: Loaded<EvalRun> = load_toml(path)?;
        let mut run = loaded.config.clone();
        run.out = loaded.path(&run.out);
        run.engine.model = run.engine.model.as_ref().map(|m| loaded.path(m));
        if let Some(r) = &mut run.rerank {
            r.model = loaded.path(&r.model);
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
    let engine = cfg.engine.build(base)?;
    dir.write_config(cfg)?;
    on_event(Event::Started {
        stage: "eval",
        total: cfg.eval.benchmarks.len(),
        done: 0,
        resumed_from: None,
    });
    let ranker = cfg.rerank.as_ref().map(RmRanker::load).transpose()?;
    let results = run_eval_ranked(
        engine.as_ref(),
        &cfg.eval,
        dir.root(),
        ranker.as_ref().map(|r| r as &dyn reasonlab_eval::Ranker),
    )
    .map_err(|e| RunError::Invalid(format!("eval into {}: {e}", dir.root().display())))?;
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
