//! The generation protocol: what every part of reasonlab that needs completions speaks.
//!
//! An [`Engine`] turns [`Request`]s (a [`Prompt`], `n` samples, one [`Sampling`] setting) into
//! [`Output`]s ([`Sample`]s with their [`FinishReason`] and, when asked, per-token log-probs).
//! `reasonlab-generate` implements it for a local model, `reasonlab-serve`'s client for any
//! OpenAI-compatible server (vLLM, SGLang, llama.cpp, reasonlab's own), and the evaluation
//! harness, the server, trace sampling and GRPO rollouts all take a `&dyn Engine`. No tensor
//! library is needed to speak it.
//!
//! Seeds: sample `j` of a request uses seed `sampling.seed + j`, so an answer does not depend on
//! what it was batched with, and `n = 4` equals four requests with `n = 1` and seeds
//! `seed … seed + 3`.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message; an engine renders a list of them with the model's chat template.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// What is sent to the model: raw text to continue, or chat messages to render. Messages that
/// end with an assistant message ask the model to continue that message (no end of turn, no
/// new generation prompt), as vLLM's `continue_final_message` does: that is how a tool's
/// output goes back into a chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

/// Sampling settings of one request (OpenAI / vLLM names), recorded next to every score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass kept; 1 disables.
    pub top_p: f32,
    /// Keep the k most likely tokens; `None`: no top-k cut.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Drop tokens below `min_p × p_max`; 0 disables. Left out of the serialised form at 0, so
    /// settings hashes of runs that never set it stay what they were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_p: f32,
    pub max_new_tokens: usize,
    /// Sample `j` of a request uses `seed + j`.
    pub seed: u64,
    /// Strings that end a sample; the text is cut before them.
    #[serde(default)]
    pub stop: Vec<String>,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

impl Default for Sampling {
    /// DeepSeek-R1 §3 evaluation settings: temperature 0.6, top-p 0.95.
    fn default() -> Self {
        Self {
            temperature: 0.6,
            top_p: 0.95,
            top_k: None,
            min_p: 0.0,
            max_new_tokens: 4096,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// `n` samples of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub prompt: Prompt,
    pub n: usize,
    pub sampling: Sampling,
    /// Return each sampled token with its log-probability.
    #[serde(default)]
    pub logprobs: bool,
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence or a stop string.
    Stop,
    /// The token budget ran out: the completion is truncated.
    Length,
}

impl FinishReason {
    /// The OpenAI wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A generated token and its log-probability under the model's unmodified distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
}

/// One sampled completion (the text after the prompt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub text: String,
    pub finish_reason: FinishReason,
    pub completion_tokens: usize,
    /// One entry per generated token, when the request asked for log-probs and the engine
    /// could give them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The generated token ids (a final end-of-sequence token included), when the engine gives
    /// them: a trainer takes them as they are instead of re-tokenising the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    /// Which weights sampled it: the version of the last [`Engine::update_weights`] the engine
    /// applied (0 before any), when it tracks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

impl Sample {
    /// A sample with text and finish reason only.
    pub fn new(
        text: impl Into<String>,
        finish_reason: FinishReason,
        completion_tokens: usize,
    ) -> Self {
        Self {
            text: text.into(),
            finish_reason,
            completion_tokens,
            logprobs: None,
            token_ids: None,
            policy_version: None,
        }
    }
}

/// Everything a request produced: exactly `n` samples, in sample order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Prompt length in tokens (0 when the engine cannot tell).
    pub prompt_tokens: usize,
    pub samples: Vec<Sample>,
}

/// A request the engine rejected, or an engine failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request cannot be served (prompt too long for the context, …): HTTP 400.
    #[error("{0}")]
    Invalid(String),
    /// Something broke (a server that stayed down, a backend error): HTTP 500.
    #[error("{0}")]
    Internal(String),
}

/// Which model produced the completions; `hash` goes into every settings hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// A display name (directory name, or the server's model name); the id a server announces.
    pub name: String,
    /// [`model_dir_hash`] for local models; for an endpoint, a hash of its URL and model name.
    pub hash: String,
    /// Where the model lives: a directory or a base URL.
    pub location: String,
}

/// New weights for an engine, written to disk by a trainer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WeightUpdate {
    /// A whole checkpoint in HF layout (`config.json`, safetensors): SGLang's
    /// `/update_weights_from_disk`.
    Full { dir: std::path::PathBuf },
    /// A LoRA adapter in PEFT layout (`adapter_config.json`, `adapter_model.safetensors`) for
    /// the engine's base model, served under `name`: vLLM's `/v1/load_lora_adapter`.
    Lora {
        name: String,
        dir: std::path::PathBuf,
    },
}

/// Produces completions: the local engine (`reasonlab-generate`), an OpenAI-compatible endpoint
/// (`reasonlab-serve`'s client), or anything a user plugs in.
pub trait Engine: Send + Sync {
    /// Which model answers.
    fn info(&self) -> ModelInfo;

    /// Run a batch; one result per request, in order, each with exactly `n` samples.
    fn generate(&self, requests: &[Request]) -> Vec<Result<Output, EngineError>> {
        self.generate_streaming(requests, &mut |_, _, _| {})
    }

    /// Like [`Engine::generate`], calling `on_delta(request, sample, text)` with new text as it
    /// is decoded. The deltas of a sample are a prefix of its final text; whatever they did not
    /// cover is the caller's to send when the sample finishes. Engines that cannot stream send
    /// no deltas.
    fn generate_streaming(
        &self,
        requests: &[Request],
        on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>>;

    /// Load new weights; the samples of later calls report `version` as their
    /// [`Sample::policy_version`]. Engines that cannot reload say so.
    fn update_weights(&self, update: &WeightUpdate, version: u64) -> Result<(), EngineError> {
        let _ = (update, version);
        Err(EngineError::Invalid(format!(
            "{} cannot load new weights",
            self.info().name
        )))
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash of a model directory: sha256 over the sorted lines `name\tsize\tsha256(content)` of
/// every regular file directly in `dir` (config, safetensors shards, tokenizer files).
/// Hidden files are skipped. Reads every byte once (about 1-2 s per GB).
pub fn model_dir_hash(dir: &Path) -> std::io::Result<String> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let got = file.read(&mut buf)?;
            if got == 0 {
                break;
            }
            size += got as u64;
            hasher.update(&buf[..got]);
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        entries.push(format!("{name}\t{size}\t{digest}\n"));
    }
    entries.sort();
    Ok(sha256_hex(entries.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_and_sampling_keep_their_wire_form() {
        let p = Prompt::Messages(vec![Message::user("hi")]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"messages":[{"role":"user","content":"hi"}]}"#
        );
        // min_p at 0 is left out, so older settings hashes hold.
        let s = serde_json::to_value(Sampling::default()).unwrap();
        assert!(s.get("min_p").is_none());
        let s = Sampling {
            min_p: 0.05,
            ..Sampling::default()
        };
        let back: Sampling = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn dir_hash_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"1").unwrap();
        let h1 = model_dir_hash(dir.path()).unwrap();
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        assert_eq!(model_dir_hash(dir.path()).unwrap(), h1);
        std::fs::write(dir.path().join("a"), b"2").unwrap();
        assert_ne!(model_dir_hash(dir.path()).unwrap(), h1);
    }
}
