//! The generation interface eval runs against: a local engine, or an OpenAI-compatible server
//! through `reasonlab-serve`'s client. Eval takes completions, not a model (DESIGN.md layer 3).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::EvalError;

/// One chat message; the generator renders a list of them with the model's chat template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// What is sent to the model: raw text to continue, or chat messages to render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInput {
    Text(String),
    Messages(Vec<Message>),
}

/// Sampling settings of one request, recorded next to every score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSettings {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// `None`: no top-k cut.
    pub top_k: Option<usize>,
    pub max_new_tokens: usize,
    /// Base seed; [`crate::run_eval`] derives a per-request seed from it (see `run.rs`).
    pub seed: u64,
    pub stop: Vec<String>,
}

impl Default for SamplingSettings {
    /// DeepSeek-R1 §3 evaluation settings: temperature 0.6, top-p 0.95.
    fn default() -> Self {
        Self {
            temperature: 0.6,
            top_p: 0.95,
            top_k: None,
            max_new_tokens: 4096,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// `n` samples of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    pub prompt: PromptInput,
    pub n: usize,
    pub sampling: SamplingSettings,
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// The token budget ran out: the completion is truncated.
    Length,
}

/// One sampled completion (the text after the prompt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenOutput {
    pub text: String,
    pub finish_reason: FinishReason,
    pub completion_tokens: usize,
}

/// Which model produced the completions; `hash` goes into every settings hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// A display name (directory name, or the server's model name).
    pub name: String,
    /// [`model_dir_hash`] for local models; for an endpoint, a hash of its URL and model name.
    pub hash: String,
    /// Where the model lives: a directory or a base URL.
    pub location: String,
}

/// Produces completions. Implemented by the local engine (cli) and the HTTP client (serve).
pub trait Generator: Send + Sync {
    /// One inner vector of exactly `requests[i].n` outputs per request, in order.
    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Vec<GenOutput>>, EvalError>;
    fn describe(&self) -> ModelInfo;
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash of a model directory: sha256 over the sorted lines `name\tsize\tsha256(content)` of
/// every regular file directly in `dir` (config, safetensors shards, tokenizer files).
/// Hidden files are skipped. Reads every byte once (about 1-2 s per GB).
pub fn model_dir_hash(dir: &Path) -> Result<String, EvalError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(EvalError::io(dir))? {
        let entry = entry.map_err(EvalError::io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let mut file = std::fs::File::open(&path).map_err(EvalError::io(&path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let got = file.read(&mut buf).map_err(EvalError::io(&path))?;
            if got == 0 {
                break;
            }
            size += got as u64;
            hasher.update(&buf[..got]);
        }
        let content: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        entries.push(format!("{name}\t{size}\t{content}\n"));
    }
    entries.sort();
    Ok(sha256_hex(entries.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_hash_depends_on_names_and_content() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("config.json"), "{}").unwrap();
        std::fs::write(a.path().join("model.safetensors"), "weights").unwrap();
        let h1 = model_dir_hash(a.path()).unwrap();
        assert_eq!(h1, model_dir_hash(a.path()).unwrap());
        std::fs::write(a.path().join("model.safetensors"), "weightz").unwrap();
        let h2 = model_dir_hash(a.path()).unwrap();
        assert_ne!(h1, h2);
        std::fs::rename(
            a.path().join("model.safetensors"),
            a.path().join("model2.safetensors"),
        )
        .unwrap();
        assert_ne!(h2, model_dir_hash(a.path()).unwrap());
        assert_eq!(h1.len(), 64);
    }
}
