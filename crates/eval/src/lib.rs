//! Evaluation: benchmarks, prompt templates, pass@k / cons@k, resumable runs and reports.
//!
//! Eval takes completions, not a model: a [`Generator`] (the local engine, or an
//! OpenAI-compatible server through `reasonlab-serve`'s client) turns [`GenRequest`]s into
//! [`GenOutput`]s, [`run_eval`] logs every completion as it arrives and scores them, and
//! [`score_offline`] re-scores a completions file without any model.
//!
//! ```no_run
//! # fn demo(generator: &dyn reasonlab_eval::Generator) -> Result<(), reasonlab_eval::EvalError> {
//! use reasonlab_eval::{Benchmark, BuiltIn, EvalConfig, PromptTemplate, run_eval};
//! let cfg = EvalConfig::new(vec![Benchmark::BuiltIn(BuiltIn::Math500)], PromptTemplate::R1, 4);
//! let results = run_eval(generator, &cfg, std::path::Path::new("runs/eval-1"))?;
//! println!("{:?}", results.benchmarks[0].scores.metrics["pass@1"]);
//! # Ok(()) }
//! ```

pub mod benchmark;
pub mod error;
pub mod fewshot;
pub mod generator;
pub mod metrics;
pub mod report;
pub mod run;
pub mod score;
pub mod template;

pub use benchmark::{Benchmark, BuiltIn, FewShotStyle, FieldMap, Language, Problem};
pub use error::EvalError;
pub use generator::{
    FinishReason, GenOutput, GenRequest, Generator, Message, ModelInfo, PromptInput,
    SamplingSettings, model_dir_hash, sha256_hex,
};
pub use metrics::{Estimate, Vote, classify, pass_at_k, vote};
pub use report::{RunResults, compare, load_results, render_html, render_markdown};
pub use run::{EvalConfig, RunCounts, run_eval, settings_hash};
pub use score::{BadLines, BenchmarkScores, Scored, score, score_offline};
pub use template::{PromptTemplate, RenderedPrompt};
