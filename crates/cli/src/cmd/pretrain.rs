//! `reasonlab pretrain --config pretrain.toml [--resume] [--strict]` (schema:
//! `reasonlab_recipe::run::pretrain`).

use std::path::PathBuf;

use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::pretrain::{self, PretrainConfig};

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
    /// Stop at the first malformed JSONL line instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = PretrainConfig::load(&args.config)?;
    if let Some(b) = args.device.backend {
        cfg.backend = b;
    }
    if let Some(p) = args.device.mixed_precision {
        cfg.mixed_precision = p;
    }
    let dir = RunDir::create(&cfg.out)?;
    let mut printer = Printer::default();
    let summary = pretrain::run(
        &cfg,
        &dir,
        runcfg::resume(args.resume),
        super::sft::bad_lines(args.strict),
        &mut |e| printer.event(e),
    )?;
    printer.finish();
    println!("source            weight   realised  tokens     documents");
    for s in &summary.sources {
        println!(
            "{:<17} {:>6.2}%  {:>7.2}%  {:>9}  {:>9}",
            s.name,
            s.weight * 100.0,
            s.realised * 100.0,
            s.tokens,
            s.documents
        );
    }
    Ok(())
}
