//! `reasonlab bench …`: our side of each benchmark, run on the same workload as the peer, with
//! the ratio printed when the peer's numbers are available (`--peer-json` or `--peer-python`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use reasonlab_generate::{SamplingParams, generate};
use reasonlab_model::{Model, PadSide, TokenBatch, bench_config, device_for};
use reasonlab_train::{AdamW, AdamWSettings, lm_train_step};
use serde_json::{Value, json};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// 16 prompts × 32 tokens, then 128 new tokens sampled at T=1, on the tiny Qwen2 workload.
    Generate(PeerArgs),
    /// Batch 8 × 256 causal-LM loss, backward and AdamW step on the tiny Qwen2 workload.
    TrainStep(PeerArgs),
    /// fastText-compatible classifier against fastText 0.9 (see docs/corpus.md).
    Classifier(crate::cmd::corpus::BenchClassifierArgs),
    /// MinHash signatures against datasketch (see docs/corpus.md).
    Minhash(crate::cmd::corpus::BenchMinhashArgs),
    /// The verifier on an answer suite (JSONL `{gold, pred, expected}`), cases/s and accuracy.
    Verify {
        #[arg(long, default_value = "crates/answer/tests/data/suite.jsonl")]
        suite: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
pub struct PeerArgs {
    /// Timed repetitions (best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Python with torch + transformers: runs `scripts/bench_torch.py` for the ratio.
    #[arg(long)]
    peer_python: Option<PathBuf>,
    /// Or a JSON line the peer script printed earlier.
    #[arg(long)]
    peer_json: Option<PathBuf>,
    /// Write our result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `rows` sequences of `len` token ids below `vocab`, from a seeded LCG (same workload every run).
fn random_ids(seed: u64, rows: usize, len: usize, vocab: u64) -> Vec<Vec<u32>> {
    let mut state = seed;
    (0..rows)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % vocab) as u32
                })
                .collect()
        })
        .collect()
}

/// Peak resident set size of this process, MB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn peer(args: &PeerArgs, only: &str) -> anyhow::Result<Option<Value>> {
    if let Some(path) = &args.peer_json {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        return Ok(Some(serde_json::from_str(text.trim())?));
    }
    let Some(py) = &args.peer_python else {
        return Ok(None);
    };
    eprintln!(
        "running the PyTorch side: {} scripts/bench_torch.py --only {only}",
        py.display()
    );
    let out = std::process::Command::new(py)
        .args(["scripts/bench_torch.py", "--only", only])
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line from peer")?;
    Ok(Some(serde_json::from_str(line)?))
}

fn report(
    ours: Value,
    peer: Option<Value>,
    key: &str,
    higher_is_better: bool,
    json_out: &Option<PathBuf>,
) -> anyhow::Result<()> {
    println!("reasonlab: {ours}");
    if let Some(p) = &peer {
        println!("pytorch:   {p}");
        if let (Some(a), Some(b)) = (ours[key].as_f64(), p[key].as_f64()) {
            let ratio = if higher_is_better { a / b } else { b / a };
            println!("speed-up ({key}): {ratio:.2}x");
        }
        if let (Some(a), Some(b)) = (ours["peak_rss_mb"].as_f64(), p["peak_rss_mb"].as_f64()) {
            println!("peak RSS: {a:.0} MB vs {b:.0} MB ({:.2}x)", a / b);
        }
    } else {
        println!(
            "(peer not run: pass --peer-python .venv/bin/python or --peer-json FILE for the ratio)"
        );
    }
    if let Some(path) = json_out {
        std::fs::write(path, ours.to_string())?;
    }
    Ok(())
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Generate(args) => {
            let device = device_for(Default::default(), false)?;
            let model = Model::random(bench_config(), 0, &device);
            let prompts = random_ids(12345, 16, 32, 512);
            let params = SamplingParams {
                temperature: 1.0,
                max_new_tokens: 128,
                max_batch: 16,
                ..Default::default()
            };
            // Warm-up, then best of `repeats`.
            generate(&model, None, &prompts, 1, &params, &mut |_| {})?;
            let mut best = f64::INFINITY;
            let mut tokens = 0;
            for r in 0..args.repeats.max(1) {
                let p = SamplingParams {
                    seed: r as u64,
                    ..params.clone()
                };
                let (_, stats) = generate(&model, None, &prompts, 1, &p, &mut |_| {})?;
                best = best.min(stats.seconds);
                tokens = stats.new_tokens;
            }
            let ours = json!({
                "generate_tokens_per_s": tokens as f64 / best,
                "seconds": best,
                "new_tokens": tokens,
                "peak_rss_mb": peak_rss_mb(),
                "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            });
            report(
                ours,
                peer(&args, "generate")?,
                "generate_tokens_per_s",
                true,
                &args.json,
            )
        }
        BenchCommand::TrainStep(args) => {
            let device = device_for(Default::default(), true)?;
            let mut model = Model::random(bench_config(), 0, &device);
            let mut optim = AdamW::new(AdamWSettings {
                lr: 1e-4,
                max_grad_norm: 0.0,
                ..Default::default()
            });
            let seqs = random_ids(99, 8, 256, 512);
            let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
            let (m, _) = lm_train_step(model, &batch, &mut optim, 1e-4)?;
            model = m;
            let mut best = f64::INFINITY;
            let mut loss = 0.0;
            for _ in 0..args.repeats.max(1) {
                let t = Instant::now();
                let (m, l) = lm_train_step(model, &batch, &mut optim, 1e-4)?;
                model = m;
                loss = l;
                best = best.min(t.elapsed().as_secs_f64());
            }
            let ours = json!({
                "train_step_s": best,
                "loss": loss,
                "tokens_per_s": (8 * 256) as f64 / best,
                "peak_rss_mb": peak_rss_mb(),
                "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            });
            report(
                ours,
                peer(&args, "train")?,
                "train_step_s",
                false,
                &args.json,
            )
        }
        BenchCommand::Classifier(a) => crate::cmd::corpus::run_bench_classifier(a),
        BenchCommand::Minhash(a) => crate::cmd::corpus::run_bench_minhash(a),
        BenchCommand::Verify { suite } => {
            let r = reasonlab_reward::bench_verify(&suite)?;
            println!("{r}");
            Ok(())
        }
    }
}
