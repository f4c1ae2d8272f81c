//! `reasonlab sft --config sft.toml [--resume] [--strict]` (schema:
//! `reasonlab_recipe::run::sft`).

use std::path::PathBuf;

use reasonlab_core::jsonl::BadLines;
use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::sft::{self, SftConfig};

use super::runcfg::{self, Printer};

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub device: super::runcfg::DeviceFlags,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    #[arg(long)]
    pub resume: bool,
    /// Stop at the first malformed data line instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

/// `--strict` as the readers take it.
pub fn bad_lines(strict: bool) -> BadLines {
    if strict {
        BadLines::Reject
    } else {
        BadLines::Skip
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = SftConfig::load(&args.config)?;
    if let Some(b) = args.device.backend {
        cfg.backend = b;
    }
    if let Some(p) = args.device.mixed_precision {
        cfg.mixed_precision = p;
    }
    let dir = RunDir::create(&cfg.out)?;
    let mut printer = Printer::default();
    let summary = sft::run(
        &cfg,
        &dir,
        runcfg::resume(args.resume),
        bad_lines(args.strict),
        &mut |e| printer.event(e),
    )?;
    printer.finish();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
