//! `reasonlab serve --model DIR --port P`: the OpenAI-compatible server on a local model.

use std::path::PathBuf;
use std::sync::Arc;

use reasonlab_model::BackendKind;
use std::time::Duration;

use reasonlab_serve::ServerConfig;

#[derive(clap::Args)]
pub struct Args {
    /// A local model directory (HF layout).
    #[arg(long)]
    model: PathBuf,
    /// Tensor backend: flex (CPU), wgpu, vulkan or cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// The model's float type: f32, or bf16 / f16 on a GPU backend.
    #[arg(long, default_value = "f32")]
    dtype: reasonlab_model::Precision,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model id clients send (default: the directory name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Require `Authorization: Bearer $NAME` (the key is read from this environment variable).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Largest request body accepted.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Largest `max_tokens` accepted.
    #[arg(long, default_value_t = 32_768)]
    max_tokens_limit: usize,
    /// `max_tokens` of requests that do not set it.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Most requests run in one engine call, and most sequences it decodes at once.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Most prompt tokens one prefill pass takes.
    #[arg(long, default_value_t = reasonlab_generate::PREFILL_TOKENS)]
    prefill_tokens: usize,
    /// How long to wait for more requests to batch with the first, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_wait_ms: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut engine =
        reasonlab_generate::LocalEngine::load_in(&args.model, args.backend, args.dtype)?
            .with_batching(reasonlab_generate::Batching {
                max_batch: args.max_batch,
                prefill_tokens: args.prefill_tokens,
            })?;
    let device = engine
        .device()
        .map(|d| {
            for warning in d.warnings() {
                tracing::warn!("{warning}");
            }
            d.to_string()
        })
        .unwrap_or_default();
    if let Some(name) = &args.served_model_name {
        engine = engine.with_name(name);
    }
    let api_key = match &args.api_key_env {
        Some(name) => Some(
            std::env::var(name)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--api-key-env {name}: the variable is not set"))?,
        ),
        None => None,
    };
    let addr = format!("{}:{}", args.host, args.port).parse()?;
    let cfg = ServerConfig {
        addr,
        api_key,
        max_body_bytes: args.max_body_bytes,
        max_tokens_limit: args.max_tokens_limit,
        default_max_tokens: args.default_max_tokens,
        max_batch: args.max_batch,
        batch_wait: Duration::from_millis(args.batch_wait_ms),
        ..Default::default()
    };
    let id = reasonlab_core::engine::Engine::info(&engine).name;
    reasonlab_serve::serve_blocking(Arc::new(engine), cfg, |addr| {
        // One line: scripts read it for the address (and may close the pipe after).
        eprintln!(
            "serving `{id}` on http://{addr}/v1 ({device}; new weights: POST \
             /update_weights_from_disk or /v1/load_lora_adapter; Ctrl-C stops after in-flight \
             requests)"
        );
    })?;
    Ok(())
}
