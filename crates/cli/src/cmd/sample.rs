//! `reasonlab sample`: k completions per problem from a local model or an endpoint, scored,
//! filtered (`--keep correct` is rejection sampling) and written as SFT-ready JSONL with
//! provenance. Resumable: rerunning the same command finishes what is missing.

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_eval::{Benchmark, PromptTemplate, Sampling};
use reasonlab_recipe::traces::{self, FilterSettings, Keep};
use reasonlab_reward::RewardConfig;

use super::runcfg;
use super::source::GeneratorArgs;

/// The rewards used when no `--rewards` file is given (examples/rewards.toml).
pub const DEFAULT_REWARDS: &str = include_str!("../../../../examples/rewards.toml");

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
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum KeepArg {
    Correct,
    All,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let generator = args.source.build(std::path::Path::new("."))?;
    let benchmark = Benchmark::parse(&args.data)?;
    let mut rows = benchmark.load()?;
    if let Some(n) = args.limit {
        rows.truncate(n);
    }
    let template = PromptTemplate::parse(&args.template)?;
    let problems = traces::problems_from(
        &rows,
        template,
        benchmark.language(),
        benchmark.few_shot_style(),
    );
    let reward_cfg = match &args.rewards {
        Some(p) => RewardConfig::load(p)?,
        None => RewardConfig::from_toml(DEFAULT_REWARDS)?,
    };
    let rewards = reward_cfg.build();
    let filter = FilterSettings {
        keep: match args.keep {
            KeepArg::Correct => Keep::Correct,
            KeepArg::All => Keep::All,
        },
        drop_truncated: !args.keep_truncated,
        max_completion_tokens: args.max_completion_tokens,
        require_think_format: args.require_think,
        min_language_consistency: args.min_language_consistency,
        dedup: !args.no_dedup,
    };
    let sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: None,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        ..Sampling::default()
    };
    let summary = sample_traces(
        generator.as_ref(),
        &problems,
        args.k,
        &sampling,
        &rewards,
        &filter,
        &args.out,
        args.chunk_size,
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Run the trace loop with a progress bar; shared with `distill`.
#[allow(clippy::too_many_arguments)]
pub fn sample_traces(
    generator: &dyn reasonlab_core::engine::Engine,
    problems: &[traces::TraceProblem],
    k: usize,
    sampling: &Sampling,
    rewards: &reasonlab_reward::WeightedSum,
    filter: &FilterSettings,
    out: &std::path::Path,
    chunk: usize,
) -> anyhow::Result<traces::TraceSummary> {
    let bar = runcfg::bar("sample", problems.len() as u64, 0);
    let summary = traces::run(
        generator,
        problems,
        k,
        sampling,
        rewards,
        filter,
        out,
        chunk,
        &mut |s| {
            bar.set_position((s.already_done + s.done + s.failed) as u64);
            bar.set_message(format!(
                "kept {}/{}  failed {}",
                s.kept, s.generated, s.failed
            ));
        },
    )
    .with_context(|| format!("sampling into {}", out.display()))?;
    bar.finish();
    if summary.failed > 0 {
        eprintln!(
            "{} problems failed (see {}); rerun the same command to retry them",
            summary.failed,
            traces::ledger_path(out).display()
        );
    }
    Ok(summary)
}
