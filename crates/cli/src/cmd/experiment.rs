//! `reasonlab experiment NAME`: the DeepSeekMath and DeepSeek-R1 papers' claims in miniature
//! on the demo's arithmetic task (see docs/experiments.md).

use std::path::PathBuf;

use reasonlab_recipe::experiments::{self, Experiment};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Name {
    /// Pure RL from a pretrained base model (R1 §2.2).
    R1Zero,
    /// RL against SFT: maj@K and pass@K (DeepSeekMath §5.2.2).
    RlVsSft,
    /// Distillation from an RL-trained teacher against RL on a small student (R1 §4.1).
    DistillVsRl,
    /// Pretraining on a classifier-recalled, a random and a keyword-filtered corpus of one
    /// token budget (DeepSeekMath §2.2).
    Corpus,
    /// Outcome against process supervision (DeepSeekMath §5.2.1); the same as
    /// `reasonlab demo --compare-supervision`.
    Supervision,
}

impl Name {
    fn experiment(self) -> Experiment {
        match self {
            Name::R1Zero => Experiment::R1Zero,
            Name::RlVsSft => Experiment::RlVsSft,
            Name::DistillVsRl => Experiment::DistillVsRl,
            Name::Corpus => Experiment::Corpus,
            Name::Supervision => Experiment::Supervision,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProblemsArg {
    /// The demo's one-step problems.
    OneStep,
    /// Two-step problems ("gets 4 more and then gives away 2").
    TwoStep,
}

#[derive(clap::Args)]
pub struct Args {
    /// Which experiment.
    name: Name,
    /// Seeds; every arm runs once per seed.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Output folder (default runs/experiments/NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A few steps of everything: checks the plumbing in seconds, measures nothing.
    #[arg(long)]
    quick: bool,
    /// r1-zero only: the problems RL trains on and the evaluation asks.
    #[arg(long, value_enum, default_value = "one-step")]
    problems: ProblemsArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let e = args.name.experiment();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/experiments").join(e.name()));
    let seeds = args.seeds.clone();
    if args.problems != ProblemsArg::OneStep && e != Experiment::R1Zero {
        anyhow::bail!("--problems is an option of the r1-zero experiment");
    }
    let phase = &mut |seed: u64, p: &str| eprintln!("seed {seed}: {p}");
    let (table, seconds) = match e {
        Experiment::R1Zero => {
            use experiments::r1_zero::{self, R1ZeroSettings};
            let mut s = if args.quick {
                R1ZeroSettings::quick(seeds)
            } else {
                R1ZeroSettings::new(seeds)
            };
            s.problems = match args.problems {
                ProblemsArg::OneStep => r1_zero::Problems::OneStep,
                ProblemsArg::TwoStep => r1_zero::Problems::TwoStep,
            };
            let summary = r1_zero::run(&out, &s, phase)?;
            (r1_zero::render_markdown(&summary), summary.seconds)
        }
        Experiment::RlVsSft => {
            use experiments::rl_vs_sft::{self, RlVsSftSettings};
            let s = if args.quick {
                RlVsSftSettings::quick(seeds)
            } else {
                RlVsSftSettings::new(seeds)
            };
            let summary = rl_vs_sft::run(&out, &s, phase)?;
            (rl_vs_sft::render_markdown(&summary), summary.seconds)
        }
        Experiment::DistillVsRl => {
            use experiments::distill::{self, DistillSettings};
            let s = if args.quick {
                DistillSettings::quick(seeds)
            } else {
                DistillSettings::new(seeds)
            };
            let summary = distill::run(&out, &s, phase)?;
            (distill::render_markdown(&summary), summary.seconds)
        }
        Experiment::Corpus => {
            use experiments::corpus::{self, CorpusSettings};
            let s = if args.quick {
                CorpusSettings::quick(seeds)
            } else {
                CorpusSettings::new(seeds)
            };
            let summary = corpus::run(&out, &s, phase)?;
            (corpus::render_markdown(&summary), summary.seconds)
        }
        Experiment::Supervision => {
            use reasonlab_recipe::supervision::{self, SupervisionSettings};
            let mut s = SupervisionSettings::new(seeds);
            if args.quick {
                s.steps = 2;
                s.eval_every = 1;
                s.rm_problems = 32;
            }
            let summary = supervision::run(&out, &s, &mut |e| {
                if let supervision::SupervisionEvent::Phase(seed, p) = e {
                    eprintln!("seed {seed}: {p}");
                }
            })?;
            (supervision::render_markdown(&summary), summary.seconds)
        }
    };
    print!("{table}");
    println!("{seconds:.0}s → {}", out.display());
    Ok(())
}
