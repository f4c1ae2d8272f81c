//! Errors of the reward crate; each carries the offending value or location.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid reward config: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid reward config: {0}")]
    Invalid(String),
    #[error("{path} line {line}: {message}")]
    Suite {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("could not start {threads} worker threads: {message}")]
    Threads { threads: usize, message: String },
}
