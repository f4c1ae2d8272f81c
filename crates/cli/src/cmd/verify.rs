//! `reasonlab verify` and `reasonlab reward`.

use std::io::{BufWriter, stdin, stdout};
use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Which rule finds the answer: auto (every rule in priority order), boxed, answer_is,
    /// gsm8k, json, answer_tag, choice or last_number.
    #[arg(long, default_value = "auto")]
    answer_format: reasonlab_answer::AnswerFormat,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(clap::Args)]
pub struct RewardArgs {
    /// Reward configuration (see examples/rewards.toml).
    #[arg(long)]
    config: PathBuf,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let out = BufWriter::new(stdout().lock());
    let mut cfg = reasonlab_answer::VerifyConfig::default();
    cfg.extract.format = args.answer_format;
    let stats = reasonlab_reward::verify_stream_with(&cfg, stdin().lock(), out, args.threads)?;
    tracing::info!(?stats, "verify done");
    Ok(())
}

pub fn run_reward(args: RewardArgs) -> anyhow::Result<()> {
    let config = reasonlab_reward::RewardConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let out = BufWriter::new(stdout().lock());
    let stats = reasonlab_reward::reward_stream(&config, stdin().lock(), out, args.threads)?;
    tracing::info!(?stats, "reward done");
    Ok(())
}
