//! `reasonlab sample`: k completions per problem from a local model or an endpoint, scored,
//! filtered (`--keep correct` is rejection sampling) and written as SFT-ready JSONL with
//! provenance. Resumable: rerunning the same command finishes what is missing.

use std::path::{Path, PathBuf};

use reasonlab_core::engine::Sampling;
use reasonlab_recipe::run::sample::{self, SampleConfig};
use reasonlab_recipe::traces::{FilterSettings, Keep};

use super::runcfg::Printer;
use super::source::GeneratorArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Problems: a built-in benchmark name or a JSONL file with `id`, `problem`, `answer`.
    #[arg(long)]
    data: String,
    #[command(flatten)]
    source: GeneratorArgs,
    /// Completions per problem.
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// `correct` keeps completions the accuracy reward scores 1 (rejection sampling); `all`
    /// keeps every completion that passes the other filters.
    #[arg(long, value_enum, default_value = "correct")]
    keep: KeepArg,
    /// r1 | fewshot-cot | plain | chat.
    #[arg(long, default_value = "chat")]
    template: String,
    #[arg(long, default_value_t = 0.6)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 2048)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reward configuration (TOML); default: accuracy, think format, language consistency.
    #[arg(long)]
    rewards: Option<PathBuf>,
    /// Drop completions longer than this many tokens.
    #[arg(long)]
    max_completion_tokens: Option<usize>,
    /// Keep completions cut at the token budget (dropped by default).
    #[arg(long)]
    keep_truncated: bool,
    /// Require `<think>…</think>` then an answer (the think_format reward = 1).
    #[arg(long)]
    require_think: bool,
    /// Require the language_consistency reward to be at least this (0..1).
    #[arg(long)]
    min_language_consistency: Option<f64>,
    /// Drop mixed-language chains: more than this share of words outside the main script
    /// (DeepSeek-R1 §2.3.3).
    #[arg(long)]
    max_mixed_script: Option<f64>,
    /// Drop completions with a paragraph longer than this many characters (R1's long
    /// paragraphs).
    #[arg(long)]
    max_paragraph_chars: Option<usize>,
    /// Drop completions with a fenced code block (R1's filter; not for tool-integrated traces).
    #[arg(long)]
    drop_code_blocks: bool,
    /// Keep duplicate solutions of a problem.
    #[arg(long)]
    no_dedup: bool,
    /// Only the first N problems.
    #[arg(long)]
    limit: Option<usize>,
    /// Problems per generation call.
    #[arg(long, default_value_t = 16)]
    chunk_size: usize,
    /// Output JSONL (a `.ledger.jsonl` beside it records finished problems).
    #[arg(long, short)]
    out: PathBuf,
    #[command(flatten)]
    tools: super::sandbox::ToolArgs,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum KeepArg {
    Correct,
    All,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = SampleConfig {
        data: args.data.clone(),
        engine: args.source.spec(),
        k: args.k,
        template: args.template.clone(),
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            max_new_tokens: args.max_new_tokens,
            seed: args.seed,
            ..Sampling::default()
        },
        rewards: args.rewards.clone(),
        filter: FilterSettings {
            keep: match args.keep {
                KeepArg::Correct => Keep::Correct,
                KeepArg::All => Keep::All,
            },
            drop_truncated: !args.keep_truncated,
            max_completion_tokens: args.max_completion_tokens,
            require_think_format: args.require_think,
            min_language_consistency: args.min_language_consistency,
            max_mixed_script: args.max_mixed_script,
            max_paragraph_chars: args.max_paragraph_chars,
            drop_code_blocks: args.drop_code_blocks,
            dedup: !args.no_dedup,
        },
        limit: args.limit,
        chunk_size: args.chunk_size,
        out: args.out.clone(),
        tools: args.tools.setup()?,
    };
    let mut printer = Printer::default();
    let summary = sample::run(&cfg, Path::new("."), &mut |e| printer.event(e))?;
    printer.finish();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
