//! Typed errors of model loading, saving and running. Each names the file, tensor or field
//! at fault and, where it applies, what was expected and what was found.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}config field `{field}`: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Config {
        path: Option<PathBuf>,
        field: String,
        message: String,
    },
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: invalid index: {message}")]
    Index { path: PathBuf, message: String },
    #[error("no weights in {dir}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("tensor `{name}` is missing from the checkpoint in {dir}")]
    MissingTensor { name: String, dir: PathBuf },
    #[error("tensor `{name}` in {file}: expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` in {file}: unsupported dtype {found}; expected F32, BF16 or F16")]
    Dtype {
        name: String,
        file: PathBuf,
        found: String,
    },
    #[error("input of {len} tokens exceeds the context of {max} (max_position_embeddings)")]
    ContextOverflow { len: usize, max: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tensor backend: {0}")]
    Backend(String),
    #[error(
        "{what} takes {} in {dtype}, past the {} this device allows one buffer{hint}",
        size(*bytes, *limit),
        size(*limit, *bytes)
    )]
    PastDeviceBuffer {
        /// What would not fit (`tensor `model.embed_tokens.weight``, `one layer's KV cache
        /// for 16 sample(s) of 65548 positions`).
        what: String,
        bytes: u64,
        dtype: String,
        limit: u64,
        /// What would fit: a smaller float type, fewer rows, or the CPU backend.
        hint: String,
    },
}

/// `bytes` in MiB, one decimal, or in bytes where `other` rounds to the same MiB.
fn size(bytes: u64, other: u64) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
    match mib(bytes) == mib(other) {
        true => format!("{bytes} bytes"),
        false => mib(bytes),
    }
}

impl ModelError {
    /// Attach the file a config error came from.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            Self::Config { field, message, .. } => Self::Config {
                path: Some(file.to_path_buf()),
                field,
                message,
            },
            other => other,
        }
    }
}
