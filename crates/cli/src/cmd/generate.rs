//! `reasonlab generate`: sample completions for a JSONL file of prompts.

use std::path::PathBuf;

use reasonlab_core::jsonl::BadLines;
use reasonlab_generate::SamplingParams;
use reasonlab_recipe::run::generate::{self, GenerateConfig};

use super::runcfg::Printer;

#[derive(clap::Args)]
pub struct Args {
    /// HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// JSONL with `prompt` (text), `messages` (chat) or `problem` per line; `id` is echoed.
    #[arg(long)]
    prompts: PathBuf,
    /// Output JSONL, one line per sample.
    #[arg(long)]
    out: PathBuf,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Render `problem`/`prompt` as a user message with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Extra stop strings.
    #[arg(long)]
    stop: Vec<String>,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Most prompt tokens one prefill pass takes (longer prompts go through the cache in
    /// stretches).
    #[arg(long, default_value_t = reasonlab_generate::PREFILL_TOKENS)]
    prefill_tokens: usize,
    /// Skip malformed input lines instead of stopping.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Tensor backend: flex (CPU), wgpu, vulkan or cuda.
    #[arg(long, default_value = "flex")]
    backend: reasonlab_model::BackendKind,
    /// The model's float type: f32, or bf16 / f16 on a GPU backend.
    #[arg(long, default_value = "f32")]
    dtype: reasonlab_model::Precision,
    #[command(flatten)]
    tools: super::sandbox::ToolArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tools = args.tools.setup()?;
    let cfg = GenerateConfig {
        tools,
        model: args.model,
        backend: args.backend,
        dtype: args.dtype,
        prompts: args.prompts,
        out: args.out,
        n: args.n,
        chat: args.chat,
        bad_lines: if args.skip_bad_lines {
            BadLines::Skip
        } else {
            BadLines::Reject
        },
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            min_p: args.min_p,
            max_new_tokens: args.max_new_tokens,
            seed: args.seed,
            stop: args.stop,
            max_batch: args.max_batch,
            prefill_tokens: args.prefill_tokens,
            ..Default::default()
        },
    };
    let mut printer = Printer::default();
    let summary = generate::run(&cfg, &mut |e| printer.event(e))?;
    printer.finish();
    let stats = summary.stats;
    eprintln!(
        "{} completions, {} new tokens in {:.2}s ({:.0} tokens/s) → {}",
        summary.completions,
        stats.new_tokens,
        stats.seconds,
        stats.new_tokens as f64 / stats.seconds.max(1e-9),
        cfg.out.display()
    );
    Ok(())
}
