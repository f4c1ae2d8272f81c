//! Where completions come from: a local model directory or an OpenAI-compatible endpoint.
//! The same struct is a flag group (`eval run`, `sample`) and a TOML table (`[teacher]` of
//! `distill.toml`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use reasonlab_eval::Generator;
use reasonlab_serve::client::{ClientConfig, NMode, OpenAiClient};
use serde::Deserialize;

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_concurrency() -> usize {
    16
}
fn default_timeout() -> u64 {
    1800
}
fn default_retries() -> u32 {
    6
}

#[derive(clap::Args, Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorArgs {
    /// A local model directory (HF layout).
    #[arg(long, conflicts_with = "endpoint")]
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// An OpenAI-compatible server, e.g. http://127.0.0.1:8000.
    #[arg(long, requires = "model_name")]
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The model name the server knows.
    #[arg(long)]
    #[serde(default)]
    pub model_name: Option<String>,
    /// Environment variable holding the server's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Requests in flight to the server.
    #[arg(long, default_value_t = 16)]
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Ask the server for all n samples in one request (vLLM, SGLang) instead of n requests.
    #[arg(long)]
    #[serde(default)]
    pub native_n: bool,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 1800)]
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Retries of a failed request (429, 5xx, timeouts), with exponential backoff.
    #[arg(long, default_value_t = 6)]
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

impl GeneratorArgs {
    /// Build the generator; relative model paths are resolved against `base`.
    pub fn build(&self, base: &std::path::Path) -> anyhow::Result<Box<dyn Generator>> {
        match (&self.model, &self.endpoint) {
            (Some(dir), None) => {
                let dir = if dir.is_absolute() {
                    dir.clone()
                } else {
                    base.join(dir)
                };
                crate::cmd::local::local_generator(&dir)
            }
            (None, Some(url)) => {
                let mut cfg = ClientConfig::new(
                    url.clone(),
                    self.model_name
                        .clone()
                        .context("an endpoint needs a model name (--model-name / model_name)")?,
                );
                cfg.api_key_env = Some(self.api_key_env.clone());
                cfg.concurrency = self.concurrency;
                cfg.timeout = std::time::Duration::from_secs(self.timeout_s);
                cfg.max_retries = self.max_retries;
                if self.native_n {
                    cfg.n_mode = NMode::Native;
                }
                Ok(Box::new(OpenAiClient::new(cfg)?))
            }
            _ => bail!(
                "give either a local model (--model DIR) or an endpoint (--endpoint URL --model-name NAME)"
            ),
        }
    }
}
