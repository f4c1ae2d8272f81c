//! `reasonlab distill --config distill.toml [--resume] [--traces-only]` (schema:
//! `reasonlab_recipe::run::distill`).

use std::path::PathBuf;

use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::distill::{self, DistillConfig};

use super::runcfg::{self, Printer};

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    device: super::runcfg::DeviceFlags,
    /// Continue the student's SFT from its newest checkpoint (trace sampling always resumes).
    #[arg(long)]
    resume: bool,
    /// Only sample the traces; skip the student's SFT.
    #[arg(long)]
    traces_only: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = DistillConfig::load(&args.config)?;
    if let Some(b) = args.device.backend {
        cfg.backend = b;
        if cfg.traces.engine.model.is_some() {
            cfg.traces.engine.backend = Some(b);
        }
    }
    if let Some(p) = args.device.mixed_precision {
        cfg.mixed_precision = p;
    }
    let dir = RunDir::create(&cfg.out)?;
    let mut printer = Printer::default();
    let summary = distill::run(
        &cfg,
        &dir,
        runcfg::resume(args.resume),
        args.traces_only,
        &mut |e| printer.event(e),
    )?;
    printer.finish();
    match &summary.sft {
        Some(_) => println!("{}", serde_json::to_string_pretty(&summary)?),
        None => println!("{}", serde_json::to_string_pretty(&summary.traces)?),
    }
    Ok(())
}
