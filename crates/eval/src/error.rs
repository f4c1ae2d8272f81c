//! The one error type of the eval crate; every variant carries the offending value or place.

use std::path::PathBuf;

/// Anything that can go wrong loading benchmarks, generating, scoring or reporting.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Jsonl(#[from] reasonlab_core::jsonl::JsonlError),
    /// A line that is JSON but not a usable record (missing field, wrong type).
    #[error("{path}:{line}: {message}")]
    BadRecord {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "unknown benchmark {name:?}: expected one of gsm8k_test, math500, aime24, amc23, \
         cmath_test, mgsm_zh, or a path to a .jsonl file"
    )]
    UnknownBenchmark { name: String },
    #[error("unknown prompt template {name:?}: expected r1, fewshot-cot, plain or chat")]
    UnknownTemplate { name: String },
    #[error("{benchmark}: duplicate problem id {id:?}")]
    DuplicateId { benchmark: String, id: String },
    #[error("{benchmark}: the benchmark has no problems")]
    EmptyBenchmark { benchmark: String },
    /// The engine rejected a request or failed (network, model, ...).
    #[error("engine: {0}")]
    Engine(#[from] reasonlab_core::engine::EngineError),
    /// The best-of-N ranker could not score a problem's samples.
    #[error("ranking the samples of {id}: {message}")]
    Rank { id: String, message: String },
    /// The engine answered with the wrong number of outputs.
    #[error("the engine returned {got} outputs for request {request} (expected {expected})")]
    EngineShape {
        request: usize,
        expected: usize,
        got: usize,
    },
    /// k larger than the number of samples of some problem.
    #[error("k = {k} is larger than the {n} samples of problem {id:?}")]
    KTooLarge { k: usize, n: usize, id: String },
    #[error("k must be at least 1 (got {k})")]
    ZeroK { k: usize },
    #[error("invalid setting {name} = {value}: {reason}")]
    InvalidSetting {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: {message}")]
    BadRun { path: PathBuf, message: String },
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EvalError {
        let path = path.into();
        move |source| EvalError::Io { path, source }
    }
}
