//! Where completions come from, as a config table: a local model directory or an
//! OpenAI-compatible endpoint. `[teacher]` in `distill.toml` and the `eval run` / `sample`
//! flags read into an [`EngineSpec`]; GRPO's `[rollout]` (one or more servers and their weight
//! sync) into a [`RolloutSpec`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use reasonlab_core::engine::Engine;
use reasonlab_generate::{Batching, LocalEngine};
use reasonlab_model::{BackendKind, Precision};
use reasonlab_serve::client::{ClientConfig, NMode, OpenAiClient};
use reasonlab_serve::pool::{PoolError, RolloutPool};
use reasonlab_train::grpo::{SyncMode, WeightSync};
use serde::{Deserialize, Serialize};

use crate::run::Event;

/// A local model or an endpoint, and how to talk to the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// A local model directory (HF layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The local model's tensor backend (`flex`, `wgpu`, `vulkan`, `cuda`); unset: the run's
    /// own `backend`, else flex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// The local model's float type: `f32` (default), or `bf16` / `f16` on a GPU backend.
    #[serde(default)]
    pub dtype: Precision,
    /// How much the local model decodes at once: `batching = { max_batch = 256,
    /// prefill_tokens = 16384 }` (unset: 64 sequences, 8,192 tokens). A server batches on its
    /// own: with `endpoint` this is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// An OpenAI-compatible server, e.g. `http://127.0.0.1:8000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The model name the server knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Environment variable holding the server's API key.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Requests in flight to the server.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Ask the server for all n samples in one request (vLLM, SGLang) instead of n requests.
    #[serde(default)]
    pub native_n: bool,
    /// Per-request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Retries of a failed request (429, 5xx, timeouts), with exponential backoff.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

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

/// The endpoint settings [`EngineSpec`] and [`RolloutSpec`] share.
struct Connection<'a> {
    api_key_env: &'a str,
    concurrency: usize,
    native_n: bool,
    timeout_s: u64,
    max_retries: u32,
}

impl Connection<'_> {
    fn client(&self, url: String, model: String) -> ClientConfig {
        let mut cfg = ClientConfig::new(url, model);
        cfg.api_key_env = Some(self.api_key_env.to_string());
        cfg.concurrency = self.concurrency;
        cfg.timeout = Duration::from_secs(self.timeout_s);
        cfg.max_retries = self.max_retries;
        if self.native_n {
            cfg.n_mode = NMode::Native;
        }
        cfg
    }
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineSpecError {
    #[error(
        "give either a local model (model = DIR) or an endpoint (endpoint = URL with model_name)"
    )]
    Neither,
    #[error("an endpoint needs a model name (model_name)")]
    NoModelName,
    #[error(
        "batching applies to a local model; a server batches on its own (concurrency sets the requests in flight)"
    )]
    BatchingOnEndpoint,
    #[error(transparent)]
    Local(#[from] reasonlab_generate::LocalEngineError),
    #[error(transparent)]
    Client(#[from] reasonlab_serve::ClientError),
}

impl EngineSpec {
    /// A local model directory, with the endpoint settings at their defaults.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            model: Some(dir.into()),
            backend: None,
            dtype: Precision::F32,
            batching: None,
            endpoint: None,
            model_name: None,
            api_key_env: default_key_env(),
            concurrency: default_concurrency(),
            native_n: false,
            timeout_s: default_timeout(),
            max_retries: default_retries(),
        }
    }

    /// The client settings of an endpoint spec.
    pub fn client_config(&self) -> Result<ClientConfig, EngineSpecError> {
        let url = self.endpoint.clone().ok_or(EngineSpecError::Neither)?;
        let model = self
            .model_name
            .clone()
            .ok_or(EngineSpecError::NoModelName)?;
        Ok(Connection {
            api_key_env: &self.api_key_env,
            concurrency: self.concurrency,
            native_n: self.native_n,
            timeout_s: self.timeout_s,
            max_retries: self.max_retries,
        }
        .client(url, model))
    }

    /// Build the engine; a relative model path is resolved against `base`. A local model's
    /// device is reported through `on_event` (and a software adapter, or matmuls that cannot
    /// reach the card's tensor cores, warned about).
    pub fn build(
        &self,
        base: &Path,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Box<dyn Engine>, EngineSpecError> {
        match (&self.model, &self.endpoint) {
            (Some(_), None) => Ok(Box::new(self.local_engine(base, on_event)?)),
            (None, Some(_)) if self.batching.is_some() => Err(EngineSpecError::BatchingOnEndpoint),
            (None, Some(_)) => Ok(Box::new(OpenAiClient::new(self.client_config()?)?)),
            _ => Err(EngineSpecError::Neither),
        }
    }

    /// The local model's engine, loaded with the spec's backend, float type and batching; a
    /// relative path is resolved against `base`.
    pub fn local_engine(
        &self,
        base: &Path,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<LocalEngine, EngineSpecError> {
        let dir = match (&self.model, &self.endpoint) {
            (Some(dir), None) if dir.is_absolute() => dir.clone(),
            (Some(dir), None) => base.join(dir),
            _ => return Err(EngineSpecError::Neither),
        };
        let engine = LocalEngine::load_in(&dir, self.backend.unwrap_or_default(), self.dtype)?
            .with_batching(self.batching.unwrap_or_default())?;
        if let Some(info) = engine.device() {
            crate::run::report_device(info, on_event);
        }
        Ok(engine)
    }
}

fn default_pool_retries() -> u32 {
    2
}
fn default_pool_concurrency() -> usize {
    64
}
fn yes() -> bool {
    true
}
fn default_sync_every() -> usize {
    1
}
fn default_adapter_name() -> String {
    "policy".into()
}

/// GRPO's `[rollout]` table: where rollouts are sampled when not by the policy itself — one or
/// more OpenAI-compatible servers — and how their weights follow the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The servers, e.g. `["http://10.0.0.1:8000", "http://10.0.0.2:8000"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// One server (the same as `endpoints = [endpoint]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The model name the servers know (the base model's, with LoRA sync).
    pub model_name: String,
    /// Environment variable holding the servers' API key.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Requests in flight to each server (enough for a step's groups to decode together).
    #[serde(default = "default_pool_concurrency")]
    pub concurrency: usize,
    /// Ask for a group's n samples in one request (vLLM, SGLang, reasonlab serve), so they
    /// share the prompt's prefill; `false` sends n requests (servers without `n`).
    #[serde(default = "yes")]
    pub native_n: bool,
    /// Per-request timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Retries of a failed request on the same server before it is taken out of rotation.
    #[serde(default = "default_pool_retries")]
    pub max_retries: u32,
    /// What the servers are sent after an update: `none`, `full` (HF checkpoint, SGLang's
    /// `/update_weights_from_disk`) or `lora` (PEFT adapter, vLLM's `/v1/load_lora_adapter`).
    #[serde(default)]
    pub sync: SyncMode,
    /// Push the weights every this many updates.
    #[serde(default = "default_sync_every")]
    pub sync_every: usize,
    /// Where pushed weights are written (default `OUT/sync`); the servers must read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_dir: Option<PathBuf>,
    /// LoRA sync serves version N as `{adapter_name}-vN`.
    #[serde(default = "default_adapter_name")]
    pub adapter_name: String,
    /// Draw step t + 1's rollouts while step t trains (one-step off-policy; not with `[tools]`).
    #[serde(default)]
    pub overlap: bool,
}

impl RolloutSpec {
    /// Servers on `endpoints` with every other setting at its default.
    pub fn new(endpoints: Vec<String>, model_name: impl Into<String>) -> Self {
        Self {
            endpoints,
            endpoint: None,
            model_name: model_name.into(),
            api_key_env: default_key_env(),
            concurrency: default_pool_concurrency(),
            native_n: true,
            timeout_s: default_timeout(),
            max_retries: default_pool_retries(),
            sync: SyncMode::None,
            sync_every: default_sync_every(),
            sync_dir: None,
            adapter_name: default_adapter_name(),
            overlap: false,
        }
    }

    /// Every server, `endpoint` first.
    pub fn all_endpoints(&self) -> Vec<String> {
        self.endpoint
            .iter()
            .chain(&self.endpoints)
            .cloned()
            .collect()
    }

    /// The pool over the servers.
    pub fn pool(&self) -> Result<RolloutPool, EngineSpecError> {
        let mut cfg = Connection {
            api_key_env: &self.api_key_env,
            concurrency: self.concurrency,
            native_n: self.native_n,
            timeout_s: self.timeout_s,
            max_retries: self.max_retries,
        }
        .client(String::new(), self.model_name.clone());
        // A server that fails is left out soon: the others can take its requests.
        cfg.initial_backoff = Duration::from_millis(200);
        RolloutPool::new(&self.all_endpoints(), &cfg).map_err(|e| match e {
            PoolError::Empty => EngineSpecError::Neither,
            PoolError::Client(c) => EngineSpecError::Client(c),
        })
    }

    /// The trainer's sync settings; `out` is the run folder (for the default `sync_dir`).
    pub fn weight_sync(&self, out: &Path) -> WeightSync {
        WeightSync {
            mode: self.sync,
            every: self.sync_every.max(1),
            dir: self.sync_dir.clone().unwrap_or_else(|| out.join("sync")),
            adapter_name: self.adapter_name.clone(),
        }
    }
}
