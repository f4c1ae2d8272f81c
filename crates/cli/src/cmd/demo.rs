//! `reasonlab demo`: R1 in miniature (SFT cold start, then GRPO) on the CPU (see the README).

use indicatif::{ProgressBar, ProgressStyle};
use reasonlab_eval::MetricKey;
use reasonlab_recipe::demo::{self, DemoSettings, Event};

#[derive(clap::Args)]
pub struct Args {
    /// Output folder.
    #[arg(long, default_value = "runs/demo")]
    out: std::path::PathBuf,
    /// The short variant (CI): the same 200 GRPO steps, evaluated on 64 held-out problems × 4
    /// samples instead of 100 × 8.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fail (exit 1) unless held-out pass@1 rises by at least this many points.
    #[arg(long)]
    min_gain: Option<f64>,
    /// Override the warm-up length (steps).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Override the number of GRPO steps.
    #[arg(long)]
    grpo_steps: Option<usize>,
    /// Override the GRPO learning rate.
    #[arg(long)]
    grpo_lr: Option<f64>,
    /// Override the warm-up learning rate.
    #[arg(long)]
    warmup_lr: Option<f64>,
    /// Instead of the demo: GRPO from the warmed-up policy with the rule reward, an outcome
    /// reward model and a process reward model, same budget, held-out pass@1 curves over
    /// `--seeds` (written to `--out`, default runs/supervision).
    #[arg(long)]
    compare_supervision: bool,
    /// Seeds of the comparison.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
}

fn compare_supervision(args: &Args) -> anyhow::Result<()> {
    use reasonlab_recipe::supervision::{self, SupervisionEvent, SupervisionSettings};
    let mut s = SupervisionSettings::new(args.seeds.clone());
    if let Some(v) = args.grpo_steps {
        s.steps = v;
    }
    if let Some(v) = args.grpo_lr {
        s.demo.grpo_lr = v;
    }
    let out = if args.out.as_os_str() == "runs/demo" {
        supervision::default_out()
    } else {
        args.out.clone()
    };
    let summary = supervision::run(&out, &s, &mut |e| match e {
        SupervisionEvent::Phase(seed, phase) => eprintln!("seed {seed}: {phase}"),
        SupervisionEvent::Point(p) => eprintln!(
            "seed {}: {:?} step {:>3} pass@1 {:.3}",
            p.seed, p.arm, p.step, p.pass1
        ),
    })?;
    print!("{}", supervision::render_markdown(&summary));
    println!("{:.0}s → {}", summary.seconds, out.display());
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.compare_supervision {
        return compare_supervision(&args);
    }
    let mut settings = if args.quick {
        DemoSettings::quick(args.seed)
    } else {
        DemoSettings::full(args.seed)
    };
    if let Some(v) = args.warmup_steps {
        settings.warmup_steps = v;
    }
    if let Some(v) = args.grpo_steps {
        settings.grpo_steps = v;
    }
    if let Some(v) = args.warmup_lr {
        settings.warmup_lr = v;
    }
    if let Some(v) = args.grpo_lr {
        settings.grpo_lr = v;
    }
    let bar = ProgressBar::new(0);
    let style =
        ProgressStyle::with_template("{prefix:>14} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let summary = demo::run(&args.out, &settings, &mut |e| match e {
        Event::Phase(name, len) => {
            bar.set_prefix(name.to_string());
            bar.set_length(len as u64);
            bar.set_position(0);
            bar.set_message("");
        }
        Event::Tick => bar.inc(1),
        Event::Grpo(m) => {
            bar.set_message(format!(
                "reward {:.3}  acc {:.3}  len {:.1}",
                m.reward_mean, m.accuracy, m.completion_len_mean
            ));
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    let k = settings.eval_k;
    println!(
        "held-out ({} problems, {k} samples each, T=1.0):",
        settings.eval_problems
    );
    println!(
        "{:>10} {:>11} {:>11} {:>11}",
        "", "random init", "after SFT", "after GRPO"
    );
    for key in [
        MetricKey::PassAt(1),
        MetricKey::ConsAt(k),
        MetricKey::PassAt(k),
    ] {
        println!(
            "{:>10} {:>11.3} {:>11.3} {:>11.3}",
            key.to_string(),
            summary.initial.eval.get(key),
            summary.before.get(key),
            summary.after.get(key)
        );
    }
    let pass1 = MetricKey::PassAt(1);
    let gain = 100.0 * (summary.after.get(pass1) - summary.before.get(pass1));
    println!(
        "held-out SFT loss: {:.3} → {:.3}",
        summary.initial.held_out_loss, summary.initial.held_out_loss_after_sft
    );
    println!(
        "GRPO pass@1 gain: {gain:+.1} points in {:.0}s → {}",
        summary.seconds,
        args.out.display()
    );
    if let Some(min) = args.min_gain {
        anyhow::ensure!(
            gain >= min,
            "pass@1 rose {gain:.1} points, below the required {min}"
        );
    }
    Ok(())
}
