//! Evaluation: benchmarks, prompt templates, pass@k / cons@k, resumable runs and reports.
//!
//! Eval takes completions, not a model: an [`Engine`] (the local engine, or an
//! OpenAI-compatible server through `reasonlab-serve`'s client) turns [`Request`]s into
//! [`Sample`]s, [`run_eval`] logs every completion as it arrives and scores them, and
//! [`score_offline`] re-scores a completions file without any model.
//!
//! ```no_run
//! # fn demo(engine: &dyn reasonlab_eval::Engine) -> Result<(), reasonlab_eval::EvalError> {
//! use reasonlab_eval::{Benchmark, BuiltIn, EvalConfig, PromptTemplate, run_eval};
//! let cfg = EvalConfig::new(vec![Benchmark::BuiltIn(BuiltIn::Math500)], PromptTemplate::R1, 4);
//! let results = run_eval(engine, &cfg, std::path::Path::new("runs/eval-1"))?;
//! println!("{:?}", results.benchmarks[0].scores.metrics[&reasonlab_eval::MetricKey::PassAt(1)]);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod benchmark;
pub mod error;
pub mod fewshot;
pub mod metrics;
pub mod report;
pub mod run;
pub mod score;
pub mod template;

pub use benchmark::{Benchmark, BuiltIn, FewShotStyle, FieldMap, Language, Problem};
pub use error::EvalError;
pub use metrics::{Estimate, MetricKey, Vote, classify, pass_at_k, vote};
pub use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, Message, ModelInfo, Output, Prompt, Request, Role, Sample,
    Sampling, model_dir_hash, sha256_hex,
};
pub use report::{RunResults, compare, load_results, render_html, render_markdown};
pub use run::{EvalConfig, Ranker, RunCounts, run_eval, run_eval_ranked, settings_hash};
pub use score::{
    BadLines, BenchmarkScores, OfflineScores, Scored, best_of, score, score_offline, score_ranked,
};
pub use template::{PromptTemplate, RenderedPrompt};
