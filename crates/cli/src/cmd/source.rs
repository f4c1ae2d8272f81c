//! Where completions come from, as flags: a local model directory or an OpenAI-compatible
//! endpoint, mapped onto the library's [`EngineSpec`] (the `[teacher]` table of `distill.toml`).

use std::path::PathBuf;

use reasonlab_generate::Batching;
use reasonlab_model::{BackendKind, Precision};
use reasonlab_recipe::engines::EngineSpec;

#[derive(clap::Args, Debug, Clone)]
pub struct GeneratorArgs {
    /// A local model directory (HF layout).
    #[arg(long, conflicts_with = "endpoint")]
    pub model: Option<PathBuf>,
    /// The local model's tensor backend: flex (CPU), wgpu, vulkan or cuda.
    #[arg(long, default_value = "flex", conflicts_with = "endpoint")]
    pub backend: BackendKind,
    /// The local model's float type: f32, or bf16 / f16 on a GPU backend.
    #[arg(long, default_value = "f32", conflicts_with = "endpoint")]
    pub dtype: Precision,
    /// Most sequences the local model decodes at once [default: 64].
    #[arg(long, conflicts_with = "endpoint")]
    pub max_batch: Option<usize>,
    /// Most prompt tokens one prefill pass of the local model takes [default: 8192].
    #[arg(long, conflicts_with = "endpoint")]
    pub prefill_tokens: Option<usize>,
    /// An OpenAI-compatible server, e.g. http://127.0.0.1:8000.
    #[arg(long, requires = "model_name")]
    pub endpoint: Option<String>,
    /// The model name the server knows.
    #[arg(long)]
    pub model_name: Option<String>,
    /// Environment variable holding the server's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Requests in flight to the server.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Ask the server for all n samples in one request (vLLM, SGLang) instead of n requests.
    #[arg(long)]
    pub native_n: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
    /// Retries of a failed request (429, 5xx, timeouts), with exponential backoff.
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
}

impl GeneratorArgs {
    /// The engine spec of these flags.
    pub fn spec(&self) -> EngineSpec {
        EngineSpec {
            model: self.model.clone(),
            backend: self.model.as_ref().map(|_| self.backend),
            dtype: self.dtype,
            batching: self.batching(),
            endpoint: self.endpoint.clone(),
            model_name: self.model_name.clone(),
            api_key_env: self.api_key_env.clone(),
            concurrency: self.concurrency,
            native_n: self.native_n,
            timeout_s: self.timeout_s,
            max_retries: self.max_retries,
        }
    }

    /// The local model's batching where a flag sets it (the other at its default).
    fn batching(&self) -> Option<Batching> {
        if self.max_batch.is_none() && self.prefill_tokens.is_none() {
            return None;
        }
        let default = Batching::default();
        Some(Batching {
            max_batch: self.max_batch.unwrap_or(default.max_batch),
            prefill_tokens: self.prefill_tokens.unwrap_or(default.prefill_tokens),
        })
    }
}
