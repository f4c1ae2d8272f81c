//! `reasonlab generate`: sample completions for a JSONL file of prompts.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reasonlab_core::jsonl::{self, BadLines, JsonlWriter};
use reasonlab_generate::{SamplingParams, generate};
use reasonlab_tokenize::{Message, Role};
use serde::Deserialize;

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
    /// Skip malformed input lines instead of stopping.
    #[arg(long)]
    skip_bad_lines: bool,
    #[arg(long, value_enum, default_value_t = super::model::Backend::Flex)]
    backend: super::model::Backend,
}

#[derive(Deserialize)]
struct PromptLine {
    id: Option<serde_json::Value>,
    prompt: Option<String>,
    problem: Option<String>,
    messages: Option<Vec<Message>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (model, tok) = super::local::load(&args.model, args.backend.into())?;
    let tok = tok.context("generate needs tokenizer.json in the model directory")?;
    let bad = if args.skip_bad_lines {
        BadLines::Skip
    } else {
        BadLines::Reject
    };
    let lines: Vec<PromptLine> = jsonl::read(&args.prompts, bad)?;
    let mut prompts = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let ids = match (&l.messages, l.prompt.as_ref().or(l.problem.as_ref())) {
            (Some(m), _) => tok.encode_chat(m, true)?,
            (None, Some(text)) if args.chat => {
                tok.encode_chat(&[Message::new(Role::User, text.clone())], true)?
            }
            (None, Some(text)) => tok.encode(text, true)?,
            (None, None) => anyhow::bail!(
                "{}: record {} has none of `prompt`, `problem`, `messages`",
                args.prompts.display(),
                i + 1
            ),
        };
        prompts.push(ids);
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        stop_token_ids: tok.eos_id().into_iter().collect(),
        stop: args.stop.clone(),
        logprobs: false,
        max_batch: args.max_batch,
    };
    let bar = ProgressBar::new((prompts.len() * args.n * args.max_new_tokens) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tokens (max) {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (out, stats) = generate(&model, Some(&tok), &prompts, args.n, &params, &mut |k| {
        bar.inc(k as u64)
    })?;
    bar.finish_and_clear();
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut w = JsonlWriter::new(std::io::BufWriter::new(file));
    for c in &out {
        w.write(&serde_json::json!({
            "id": lines[c.prompt_index].id,
            "prompt_index": c.prompt_index,
            "sample_index": c.sample_index,
            "completion": c.text,
            "finish_reason": c.finish_reason,
            "completion_tokens": c.token_ids.len(),
            "sampling": params,
        }))?;
    }
    eprintln!(
        "{} completions, {} new tokens in {:.2}s ({:.0} tokens/s) → {}",
        out.len(),
        stats.new_tokens,
        stats.seconds,
        stats.new_tokens as f64 / stats.seconds.max(1e-9),
        args.out.display()
    );
    Ok(())
}
