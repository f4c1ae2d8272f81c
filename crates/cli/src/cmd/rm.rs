//! `reasonlab rm …`: reward models (schemas and logic in `reasonlab_recipe::run::rm`).

use std::path::{Path, PathBuf};

use reasonlab_core::engine::Sampling;
use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::rm::{self, Estimate, HeadSpec, LabelConfig, RmConfig, RmScoreConfig};

use super::runcfg::{self, Printer};
use super::sft::bad_lines;
use super::source::GeneratorArgs;

#[derive(clap::Subcommand)]
pub enum RmCommand {
    /// Train an outcome (pairwise or pointwise) or process reward model from `rm.toml`.
    Train {
        /// Run configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        device: super::runcfg::DeviceFlags,
        /// Continue from the newest checkpoint in `out/checkpoints`.
        #[arg(long)]
        resume: bool,
        /// Stop at the first malformed data line instead of reporting and skipping it.
        #[arg(long)]
        strict: bool,
    },
    /// Score lines with a reward model: `{"score"}` per `prompt` + `completion` (or `messages`)
    /// line for an outcome model, `{"step_scores"}` per `prompt` + `completions` line for a
    /// process model; one output line per input line.
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
        /// Sequences per forward pass.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Read a causal LM as a process model, Math-Shepherd style: P(good) at each step's
        /// last token from the logits of these two tokens (`--good-token + --bad-token -`).
        #[arg(long, requires = "bad_token")]
        good_token: Option<String>,
        #[arg(long, requires = "good_token")]
        bad_token: Option<String>,
        /// Between steps, when a process model splits a `completion`.
        #[arg(long, default_value = "\n")]
        separator: String,
        /// Tensor backend: flex (CPU), wgpu, vulkan or cuda.
        #[arg(long, default_value = "flex")]
        backend: reasonlab_model::BackendKind,
    },
    /// Math-Shepherd process labels: complete each step prefix `n` times and label the step by
    /// whether (hard) or how often (soft) the completions reach the gold answer. Resumable.
    Label {
        /// Solutions: `prompt`, `completions` (steps) or `completion`, `answer` per line.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        source: GeneratorArgs,
        /// Completions per step.
        #[arg(long, default_value_t = 8)]
        n: usize,
        #[arg(long, value_enum, default_value = "hard")]
        estimate: EstimateArg,
        /// Between steps (splits a `completion`; ends each step of a completer's prefix).
        #[arg(long, default_value = "\n")]
        separator: String,
        #[arg(long, default_value_t = 0.7)]
        temperature: f32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 512)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Solutions per engine call.
        #[arg(long, default_value_t = 8)]
        chunk_size: usize,
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum EstimateArg {
    Hard,
    Soft,
}

pub fn run(cmd: RmCommand) -> anyhow::Result<()> {
    let mut printer = Printer::default();
    match cmd {
        RmCommand::Train {
            config,
            device,
            resume,
            strict,
        } => {
            let mut cfg = RmConfig::load(&config)?;
            if let Some(b) = device.backend {
                cfg.backend = b;
            }
            if let Some(p) = device.mixed_precision {
                cfg.mixed_precision = p;
            }
            let dir = RunDir::create(&cfg.out)?;
            let summary = rm::train::run(
                &cfg,
                &dir,
                runcfg::resume(resume),
                bad_lines(strict),
                &mut |e| printer.event(e),
            )?;
            printer.finish();
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        RmCommand::Score {
            model,
            input,
            out,
            batch_size,
            good_token,
            bad_token,
            separator,
            backend,
        } => {
            let head = good_token
                .zip(bad_token)
                .map(|(good, bad)| HeadSpec::GoodToken { good, bad });
            let cfg = RmScoreConfig {
                model,
                head,
                separator,
                input,
                out,
                batch_size,
                backend,
            };
            let s = rm::score_file(&cfg, &mut |e| printer.event(e))?;
            printer.finish();
            eprintln!(
                "{} lines: {} scored, {} errors → {}",
                s.lines,
                s.scored,
                s.errors,
                cfg.out.display()
            );
        }
        RmCommand::Label {
            input,
            source,
            n,
            estimate,
            separator,
            temperature,
            top_p,
            max_new_tokens,
            seed,
            chunk_size,
            out,
        } => {
            let cfg = LabelConfig {
                input,
                out,
                n,
                separator,
                estimate: match estimate {
                    EstimateArg::Hard => Estimate::Hard,
                    EstimateArg::Soft => Estimate::Soft,
                },
                sampling: Sampling {
                    temperature,
                    top_p,
                    max_new_tokens,
                    seed,
                    ..Sampling::default()
                },
                chunk_size,
            };
            let engine = source
                .spec()
                .build(Path::new("."), &mut |e| printer.event(e))?;
            let s = rm::label::label(&cfg, engine.as_ref(), &mut |e| printer.event(e))?;
            printer.finish();
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
    }
    Ok(())
}
