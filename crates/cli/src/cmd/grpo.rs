//! `reasonlab grpo --config grpo.toml [--resume]`: the library's GRPO driver with a progress
//! bar (schema in `reasonlab_recipe::run::grpo`).

use std::path::PathBuf;

use reasonlab_recipe::run::grpo::{self, GrpoConfig, GrpoEvent};
use reasonlab_recipe::run::{Resume, RunDir};

use super::runcfg;

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    #[arg(long)]
    resume: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = GrpoConfig::load(&args.config)?;
    let dir = RunDir::create(&cfg.out)?;
    let resume = if args.resume {
        Resume::Latest
    } else {
        Resume::Fresh
    };
    let mut bar = None;
    let summary = grpo::run(&cfg, &dir, resume, &mut |event| match event {
        GrpoEvent::Started {
            total_steps,
            state,
            resumed_from,
            tasks,
            dropped_prompts,
            dropped_log_lines,
        } => {
            if let Some(from) = resumed_from {
                eprintln!("resuming from {} (step {})", from.display(), state.step);
            }
            if dropped_log_lines > 0 {
                eprintln!(
                    "dropped {dropped_log_lines} log lines written after step {}",
                    state.step
                );
            }
            if dropped_prompts > 0 {
                eprintln!(
                    "left out {dropped_prompts} prompts too long to train on; {tasks} remain"
                );
            }
            bar = Some(runcfg::bar("grpo", total_steps as u64, state.step as u64));
        }
        GrpoEvent::Step(m) => {
            if let Some(bar) = &bar {
                bar.set_message(format!(
                    "reward {:.3}  acc {:.3}  len {:.1}",
                    m.reward_mean, m.accuracy, m.completion_len_mean
                ));
                bar.inc(1);
            }
        }
        GrpoEvent::Saved(_) => {}
    })?;
    if let Some(bar) = bar {
        bar.finish();
    }
    eprintln!(
        "{} steps in {:.1} s → {}",
        summary.steps,
        summary.seconds,
        dir.root().display()
    );
    Ok(())
}
