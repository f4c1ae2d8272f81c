//! `reasonlab grpo --config grpo.toml [--resume]` (schema: `reasonlab_recipe::run::grpo`).

use std::path::PathBuf;

use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::grpo::{self, GrpoConfig};

use super::runcfg::{self, Printer};

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    device: super::runcfg::DeviceFlags,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    #[arg(long)]
    resume: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = GrpoConfig::load(&args.config)?;
    if let Some(b) = args.device.backend {
        cfg.backend = b;
    }
    if let Some(p) = args.device.mixed_precision {
        cfg.mixed_precision = p;
    }
    let dir = RunDir::create(&cfg.out)?;
    let mut printer = Printer::default();
    let summary = grpo::run(&cfg, &dir, runcfg::resume(args.resume), &mut |e| {
        printer.event(e)
    })?;
    printer.finish();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
