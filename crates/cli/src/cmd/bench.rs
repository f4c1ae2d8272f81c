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
    Generate(GenerateBenchArgs),
    /// Batch 8 × 256 causal-LM loss, backward and AdamW step on the tiny Qwen2 workload.
    TrainStep(PeerArgs),
    /// One SFT epoch (completion-only loss, padded batches of 8) on the tiny Qwen2 workload,
    /// against TRL's SFTTrainer (`scripts/bench_trl_sft.py`).
    Sft(SftBenchArgs),
    /// GRPO steps (8 prompts × 8 samples, ≤ 128 new tokens) on the tiny Qwen2 workload, against
    /// TRL's GRPOTrainer (`scripts/bench_trl_grpo.py`).
    Grpo(GrpoBenchArgs),
    /// `reasonlab serve` on loopback under N concurrent requests: p50/p99 latency, tokens/s.
    Serve(ServeBenchArgs),
    /// fastText-compatible classifier against fastText 0.9 (see docs/corpus.md).
    Classifier(crate::cmd::corpus::BenchClassifierArgs),
    /// MinHash signatures against datasketch (see docs/corpus.md).
    Minhash(crate::cmd::corpus::BenchMinhashArgs),
    /// Two recall rounds (train, score, merge) on a synthetic pool of the given size: time per
    /// round, pages/s and peak memory (see docs/corpus.md). No peer has this loop.
    Recall {
        /// Size of the synthetic pool, in GB (10⁹ bytes).
        #[arg(long, default_value_t = 1.0)]
        pool_gb: f64,
        /// Where the pool and the rounds are written (needs about 1.1× the pool on disk).
        #[arg(long)]
        dir: PathBuf,
        /// Classifier training threads.
        #[arg(long, default_value_t = 2)]
        threads: i32,
    },
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
    /// Rounds in one sitting, ours then the peer's in turn, each round's ratio printed and then
    /// their median and range: both sides move with the machine's load, so one ratio is one
    /// sample of a spread. Needs a peer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    #[command(flatten)]
    peer: PeerFlags,
}

#[derive(clap::Args, Clone)]
pub struct GenerateBenchArgs {
    /// New tokens per prompt: the workload's 128, or e.g. 1 to time the prefill alone (the
    /// peer script runs 128 only).
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    #[command(flatten)]
    args: PeerArgs,
}

/// Where the peer's numbers come from, and where ours go.
#[derive(clap::Args, Clone)]
pub struct PeerFlags {
    /// A Python with the peer installed (torch + transformers, trl): runs the committed peer
    /// script (`scripts/bench_*.py`) in the same sitting for the ratio.
    #[arg(long)]
    peer_python: Option<PathBuf>,
    /// Or a JSON line the peer script printed earlier.
    #[arg(long)]
    peer_json: Option<PathBuf>,
    /// Write our result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl PeerFlags {
    /// Whether the peer's numbers come from anywhere (a script to run or a saved line).
    fn given(&self) -> bool {
        self.peer_python.is_some() || self.peer_json.is_some()
    }
}

#[derive(clap::Args, Clone)]
pub struct GrpoBenchArgs {
    /// KL weight; > 0 builds the reference model.
    #[arg(long, default_value_t = 0.04)]
    beta: f32,
    /// Timed steps (after one warm-up step); the best is reported.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Sequences per forward/backward (GRPO's default 16; 0: all 64 at once).
    #[arg(long, default_value_t = 16)]
    micro_batch_size: usize,
    #[command(flatten)]
    peer: PeerFlags,
}

#[derive(clap::Args, Clone)]
pub struct ServeBenchArgs {
    /// The model to serve (default: the model-core benchmark's tiny Qwen2, random weights, with
    /// the fixture tokenizer of the same 512-token vocabulary).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Requests sent, all at once.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Tokens generated per request (chat, temperature 1).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Most requests per engine call.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
}

#[derive(clap::Args, Clone)]
pub struct SftBenchArgs {
    /// Examples in the epoch (lengths 96..256, prompts 16..64 tokens, seeded).
    #[arg(long, default_value_t = 128)]
    examples: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[command(flatten)]
    peer: PeerFlags,
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

/// Worker threads this machine offers.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU as `/proc/cpuinfo` names it, with its family and model numbers (a VM may give only
/// a vendor name), so that sittings on different machines are not compared by accident.
fn cpu() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    Some(format!(
        "{} (family {}, model {})",
        field("model name")?,
        field("cpu family").unwrap_or_default(),
        field("model").unwrap_or_default()
    ))
}

/// Peak resident set size of this process, MB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn peer(args: &PeerArgs, only: &str) -> anyhow::Result<Option<Value>> {
    run_peer(
        args.peer.peer_json.as_deref(),
        args.peer.peer_python.as_deref(),
        &["scripts/bench_torch.py", "--only", only],
    )
}

/// The peer's JSON line: read from `json`, or printed by `python script_args…`.
fn run_peer(
    json: Option<&std::path::Path>,
    python: Option<&std::path::Path>,
    script_args: &[&str],
) -> anyhow::Result<Option<Value>> {
    if let Some(path) = json {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        return Ok(Some(serde_json::from_str(text.trim())?));
    }
    let Some(py) = python else {
        return Ok(None);
    };
    eprintln!(
        "running the peer: {} {}",
        py.display(),
        script_args.join(" ")
    );
    let out = std::process::Command::new(py)
        .args(script_args)
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

/// Which way a benchmark's number improves.
#[derive(Debug, Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// The number a benchmark compares: its JSON key on both sides, and which way is better.
#[derive(Debug, Clone, Copy)]
struct Metric {
    key: &'static str,
    better: Better,
}

impl Metric {
    const fn higher(key: &'static str) -> Self {
        Metric {
            key,
            better: Better::Higher,
        }
    }

    const fn lower(key: &'static str) -> Self {
        Metric {
            key,
            better: Better::Lower,
        }
    }

    /// How many times better `ours` is than `peer`'s (both JSON objects holding the key).
    fn ratio(self, ours: &Value, peer: &Value) -> Option<f64> {
        let (a, b) = (ours[self.key].as_f64()?, peer[self.key].as_f64()?);
        Some(match self.better {
            Better::Higher => a / b,
            Better::Lower => b / a,
        })
    }
}

fn report(
    ours: Value,
    peer: Option<Value>,
    metric: Metric,
    json_out: &Option<PathBuf>,
) -> anyhow::Result<()> {
    println!("reasonlab: {ours}");
    if let Some(p) = &peer {
        println!("pytorch:   {p}");
        if let Some(ratio) = metric.ratio(&ours, p) {
            println!("speed-up ({}): {ratio:.2}x", metric.key);
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

/// `args.rounds` rounds of `ours()` then the peer's script (`only` of `bench_torch.py`) in one
/// sitting. One round is [`report`]; more print each round's ratio, then the median and the
/// range, and `--json` gets every round: `{"rounds": [{"ours", "peer", "ratio"}…],
/// "median_ratio", "min_ratio", "max_ratio"}`.
fn compare(
    args: &PeerArgs,
    only: &str,
    metric: Metric,
    mut ours: impl FnMut() -> anyhow::Result<Value>,
) -> anyhow::Result<()> {
    if args.rounds == 1 {
        return report(ours()?, peer(args, only)?, metric, &args.peer.json);
    }
    anyhow::ensure!(
        args.peer.given(),
        "--rounds {}: rounds compare with a peer; pass --peer-python (or --peer-json)",
        args.rounds
    );
    let mut rounds = Vec::new();
    let mut ratios = Vec::new();
    for r in 1..=args.rounds {
        let mine = ours()?;
        let theirs = peer(args, only)?.context("the peer gave no result")?;
        let ratio = metric
            .ratio(&mine, &theirs)
            .with_context(|| format!("no number `{}` in {mine} or {theirs}", metric.key))?;
        let number = |v: &Value| v[metric.key].as_f64().unwrap_or(f64::NAN);
        println!(
            "round {r}/{}: {} reasonlab {:.3}, peer {:.3}: speed-up {ratio:.2}x",
            args.rounds,
            metric.key,
            number(&mine),
            number(&theirs)
        );
        ratios.push(ratio);
        rounds.push(json!({"ours": mine, "peer": theirs, "ratio": ratio}));
    }
    let (median, min, max) = spread(&ratios);
    println!(
        "speed-up ({}) over {} rounds: median {median:.2}x, range {min:.2}–{max:.2}x",
        metric.key, args.rounds
    );
    if let Some(path) = &args.peer.json {
        let all = json!({
            "rounds": rounds,
            "median_ratio": median,
            "min_ratio": min,
            "max_ratio": max,
        });
        std::fs::write(path, all.to_string())?;
    }
    Ok(())
}

/// (median, min, max) of a non-empty sample; an even count's median is the mean of the middle
/// two.
fn spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Generate(GenerateBenchArgs { new_tokens, args }) => {
            if new_tokens != 128 && args.peer.given() {
                anyhow::bail!(
                    "--new-tokens {new_tokens}: the peer script runs the workload's 128 new tokens; \
                     drop --peer-python/--peer-json to time other lengths"
                );
            }
            let device = device_for(Default::default(), false)?;
            let model = Model::random(bench_config(), 0, &device);
            let prompts = random_ids(12345, 16, 32, 512);
            let params = SamplingParams {
                temperature: 1.0,
                max_new_tokens: new_tokens.max(1),
                max_batch: 16,
                ..Default::default()
            };
            // Warm-up, then best of `repeats` (per round).
            generate(&model, None, &prompts, 1, &params, &mut |_| {})?;
            let ours = || -> anyhow::Result<Value> {
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
                Ok(json!({
                    "generate_tokens_per_s": tokens as f64 / best,
                    "seconds": best,
                    "new_tokens": tokens,
                    "peak_rss_mb": peak_rss_mb(),
                    "threads": threads(),
                    "cpu": cpu(),
                }))
            };
            let metric = Metric::higher("generate_tokens_per_s");
            compare(&args, "generate", metric, ours)
        }
        BenchCommand::TrainStep(args) => {
            let device = device_for(Default::default(), true)?;
            let model = Model::random(bench_config(), 0, &device);
            let mut optim = AdamW::new(AdamWSettings {
                lr: 1e-4,
                max_grad_norm: 0.0,
                ..Default::default()
            });
            let seqs = random_ids(99, 8, 256, 512);
            let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
            let (m, _) = lm_train_step(model, &batch, &mut optim, 1e-4)?;
            let mut model = Some(m);
            let ours = || -> anyhow::Result<Value> {
                let mut best = f64::INFINITY;
                let mut loss = 0.0;
                for _ in 0..args.repeats.max(1) {
                    let t = Instant::now();
                    let current = model.take().context("an earlier train step failed")?;
                    let (m, l) = lm_train_step(current, &batch, &mut optim, 1e-4)?;
                    model = Some(m);
                    loss = l;
                    best = best.min(t.elapsed().as_secs_f64());
                }
                Ok(json!({
                    "train_step_s": best,
                    "loss": loss,
                    "tokens_per_s": (8 * 256) as f64 / best,
                    "peak_rss_mb": peak_rss_mb(),
                    "threads": threads(),
                    "cpu": cpu(),
                }))
            };
            let metric = Metric::lower("train_step_s");
            compare(&args, "train", metric, ours)
        }
        BenchCommand::Sft(args) => bench_sft(&args),
        BenchCommand::Serve(args) => bench_serve(&args),
        BenchCommand::Grpo(args) => bench_grpo(&args),
        BenchCommand::Classifier(a) => crate::cmd::corpus::run_bench_classifier(a),
        BenchCommand::Minhash(a) => crate::cmd::corpus::run_bench_minhash(a),
        BenchCommand::Recall {
            pool_gb,
            dir,
            threads,
        } => {
            let r = reasonlab_corpus::bench::recall_scale(&dir, (pool_gb * 1e9) as u64, threads)?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            eprintln!(
                "pool {:.2} GB, {} pages: rounds [train, score, merge] {:?} s, {:.0} pages/s scored, {:.0} MB/s read, peak RSS {}",
                r.pool_bytes as f64 / 1e9,
                r.pool_docs,
                r.round_s
                    .iter()
                    .map(|s| s.map(|x| (x * 10.0).round() / 10.0))
                    .collect::<Vec<_>>(),
                r.docs_per_s,
                r.bytes_per_s / 1e6,
                r.peak_rss_bytes.map_or("unknown".to_string(), |b| format!(
                    "{:.0} MB",
                    b as f64 / 1e6
                ))
            );
            Ok(())
        }
        BenchCommand::Verify { suite } => {
            let r = reasonlab_reward::bench_verify(&suite)?;
            println!("{r}");
            Ok(())
        }
    }
}

/// The SFT workload: `n` examples of 96..256 tokens whose first 16..64 are the prompt.
fn sft_workload(n: usize) -> Vec<reasonlab_train::sft::Encoded> {
    let mut rng = reasonlab_core::rng::SplitMix64::seeded(2024);
    (0..n)
        .map(|i| {
            let len = 96 + rng.below(161) as usize;
            let prompt = 16 + rng.below(49) as usize;
            let ids = random_ids(i as u64 + 7, 1, len, 512).remove(0);
            let loss = (0..len).map(|j| j >= prompt).collect();
            reasonlab_train::sft::Encoded { ids, loss }
        })
        .collect()
}

fn bench_sft(args: &SftBenchArgs) -> anyhow::Result<()> {
    use reasonlab_train::sft::{SftSettings, SftTrainer};
    let examples = sft_workload(args.examples);
    let tokens: usize = examples.iter().map(|e| e.len()).sum();
    let data =
        std::env::temp_dir().join(format!("reasonlab-bench-sft-{}.jsonl", std::process::id()));
    {
        let mut w = reasonlab_core::jsonl::JsonlWriter::new(std::fs::File::create(&data)?);
        for e in &examples {
            let mask: Vec<u8> = e.loss.iter().map(|&l| u8::from(l)).collect();
            w.write(&json!({"input_ids": e.ids, "completion_mask": mask}))?;
        }
    }
    let device = device_for(Default::default(), true)?;
    let model = Model::random(bench_config(), 0, &device);
    let settings = SftSettings {
        epochs: 1,
        batch_size: args.batch,
        optim: AdamWSettings {
            lr: 1e-4,
            max_grad_norm: 1.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let started = Instant::now();
    let mut trainer = SftTrainer::new(settings, model, examples, Vec::new(), 0)?;
    let mut steps = 0;
    let mut loss = 0.0;
    while let Some(m) = trainer.step()? {
        steps += 1;
        loss = m.loss;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ours = json!({
        "tokens_per_s": tokens as f64 / seconds,
        "train_seconds": seconds,
        "steps": steps,
        "last_loss": loss,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads(),
    });
    let data_arg = data.display().to_string();
    let batch = args.batch.to_string();
    let peer = run_peer(
        args.peer.peer_json.as_deref(),
        args.peer.peer_python.as_deref(),
        &[
            "scripts/bench_trl_sft.py",
            "--data",
            &data_arg,
            "--batch",
            &batch,
        ],
    );
    std::fs::remove_file(&data).ok();
    let metric = Metric::higher("tokens_per_s");
    report(ours, peer?, metric, &args.peer.json)
}

fn bench_serve(args: &ServeBenchArgs) -> anyhow::Result<()> {
    use reasonlab_core::engine::{Engine, Message, Prompt, Request, Sampling};
    use reasonlab_serve::client::{ClientConfig, OpenAiClient};
    let tmp;
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile_dir()?;
            let model = Model::random(bench_config(), 0, &device_for(Default::default(), false)?);
            model.save(&tmp.0, reasonlab_model::SaveDtype::F32)?;
            reasonlab_tokenize::copy_side_files(
                std::path::Path::new("fixtures/tiny-qwen2"),
                &tmp.0,
            )
            .context("run from the repository root (needs fixtures/tiny-qwen2's tokenizer)")?;
            tmp.0.clone()
        }
    };
    let engine =
        reasonlab_generate::LocalEngine::load(&dir, Default::default())?.with_name("bench");
    let name = engine.info().name;
    let server = reasonlab_serve::spawn(
        std::sync::Arc::new(engine),
        reasonlab_serve::ServerConfig {
            addr: "127.0.0.1:0".parse()?,
            max_batch: args.max_batch,
            ..Default::default()
        },
    )?;
    let url = server.url();
    let run = |i: usize| -> anyhow::Result<(f64, usize)> {
        let mut cfg = ClientConfig::new(url.clone(), name.clone());
        cfg.api_key_env = None;
        cfg.concurrency = 1;
        cfg.max_retries = 0;
        let client = OpenAiClient::new(cfg)?;
        let req = Request {
            prompt: Prompt::Messages(vec![Message::user(format!(
                "Question {i}: what is {i} + {i}?"
            ))]),
            n: 1,
            sampling: Sampling {
                temperature: 1.0,
                top_p: 1.0,
                max_new_tokens: args.max_tokens,
                seed: i as u64,
                ..Sampling::default()
            },
            logprobs: false,
        };
        let t = Instant::now();
        let out = client
            .generate(std::slice::from_ref(&req))
            .pop()
            .context("no result")??;
        let tokens = out.samples.first().map_or(0, |o| o.completion_tokens);
        Ok((t.elapsed().as_secs_f64() * 1000.0, tokens))
    };
    run(0)?; // warm-up
    // One client, one request at a time.
    let mut single = Vec::new();
    for i in 0..8 {
        single.push(run(1000 + i)?.0);
    }
    single.sort_by(f64::total_cmp);
    let single_p50 = single[single.len() / 2];
    let started = Instant::now();
    let results: Vec<anyhow::Result<(f64, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.requests)
            .map(|i| scope.spawn(move || run(i + 1)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("request thread panicked")))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let mut ms: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|x| x.0))
        .collect();
    let tokens: usize = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|x| x.1))
        .sum();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if ms.is_empty() {
            return f64::NAN;
        }
        ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1]
    };
    let ours = json!({
        "single_client_p50_ms": single_p50,
        "single_client_tokens_per_s": args.max_tokens as f64 / (single_p50 / 1000.0),
        "requests": args.requests,
        "answered": args.requests - failed,
        "failed": failed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "wall_s": wall,
        "completion_tokens_per_s": tokens as f64 / wall,
        "peak_rss_mb": peak_rss_mb(),
    });
    server.shutdown()?;
    println!("reasonlab serve: {ours}");
    println!(
        "(no CPU peer: vLLM and SGLang need a GPU; point `eval run --endpoint` at them to compare)"
    );
    anyhow::ensure!(failed == 0, "{failed} requests failed");
    Ok(())
}

fn bench_grpo(args: &GrpoBenchArgs) -> anyhow::Result<()> {
    use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, Task};
    let tokenizer =
        reasonlab_tokenize::Tokenizer::from_dir(std::path::Path::new("fixtures/tiny-qwen2"))
            .context("run from the repository root (needs fixtures/tiny-qwen2's tokenizer)")?;
    #[derive(serde::Deserialize)]
    struct Row {
        problem: String,
        answer: String,
    }
    let rows: Vec<Row> = reasonlab_core::jsonl::read(
        std::path::Path::new("examples/data/gsm8k_short_32.jsonl"),
        reasonlab_core::jsonl::BadLines::Reject,
    )?;
    let tasks: Vec<Task> = rows
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, r)| {
            Task::new(
                i.to_string(),
                format!(
                    "{}\n{}",
                    r.problem,
                    reasonlab_eval::template::R1_INSTRUCTION
                ),
                Some(r.answer.clone()),
            )
        })
        .collect();
    let prompts =
        std::env::temp_dir().join(format!("reasonlab-bench-grpo-{}.jsonl", std::process::id()));
    {
        let mut w = reasonlab_core::jsonl::JsonlWriter::new(std::fs::File::create(&prompts)?);
        for (t, r) in tasks.iter().zip(&rows) {
            w.write(&json!({"prompt": t.prompt, "answer": r.answer}))?;
        }
    }
    let rewards_cfg = reasonlab_reward::RewardConfig::from_toml(
        "[[reward]]\nkind = \"accuracy\"\nweight = 1.0\nfallback = \"last_number\"\n",
    )?;
    let rewards = rewards_cfg.build();
    let mut settings = GrpoSettings::preset(Preset::Deepseekmath);
    settings.loss.beta = args.beta;
    settings.group_size = 8;
    settings.prompts_per_step = 8;
    settings.max_new_tokens = 128;
    settings.temperature = 1.0;
    settings.steps = args.steps + 1;
    settings.optim.lr = 1e-6;
    settings.micro_batch_size = args.micro_batch_size;
    let device = device_for(Default::default(), true)?;
    let model = Model::random(bench_config(), 0, &device);
    let mut trainer = GrpoTrainer::new(settings, model, &tokenizer, &rewards)?;
    let mut best = f64::INFINITY;
    let mut tokens = 0.0;
    for i in 0..=args.steps {
        let t = Instant::now();
        let (m, _) = trainer.step(&tasks)?;
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(step = i, secs, gen_tokens_per_s = m.gen_tokens_per_s, train_tokens_per_s = m.train_tokens_per_s, rss = ?peak_rss_mb(), "grpo bench step");
        if i > 0 && secs < best {
            best = secs;
            tokens = m.completion_len_mean * 64.0;
        }
    }
    let ours = json!({
        "step_s": best,
        "gen_tokens_per_step": tokens,
        "s_per_1k_gen_tokens": best / tokens.max(1.0) * 1000.0,
        "beta": args.beta,
        "micro_batch_size": args.micro_batch_size,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads(),
    });
    let beta = args.beta.to_string();
    let steps = args.steps.to_string();
    let prompts_arg = prompts.display().to_string();
    let peer = run_peer(
        args.peer.peer_json.as_deref(),
        args.peer.peer_python.as_deref(),
        &[
            "scripts/bench_trl_grpo.py",
            "--prompts",
            &prompts_arg,
            "--beta",
            &beta,
            "--steps",
            &steps,
        ],
    );
    std::fs::remove_file(&prompts).ok();
    let mut peer = peer?;
    if let Some(p) = &mut peer
        && let (Some(s), Some(t)) = (p["step_s"].as_f64(), p["gen_tokens_per_step"].as_f64())
    {
        // Equal generated tokens: compare time per generated token.
        p["s_per_1k_gen_tokens"] = json!(s / t.max(1.0) * 1000.0);
    }
    let metric = Metric::lower("s_per_1k_gen_tokens");
    report(ours, peer, metric, &args.peer.json)
}

/// A temporary directory removed on drop (no tempfile dependency in the binary).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("reasonlab-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the peer's Python (a shell script): logs each call and prints one JSON line whose number
    /// grows by 100 per call (100, 200, …).
    #[cfg(unix)]
    fn fake_peer(dir: &std::path::Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("python");
        let log = dir.join("calls.log");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\nn=$(wc -l < {log})\n\
                 echo 'peer warming up'\necho \"{{\\\"generate_tokens_per_s\\\": $((n * 100))}}\"\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn args(rounds: u32, peer_python: Option<PathBuf>, json: Option<PathBuf>) -> PeerArgs {
        PeerArgs {
            repeats: 1,
            rounds,
            peer: PeerFlags {
                peer_python,
                peer_json: None,
                json,
            },
        }
    }

    /// Each round runs ours, then the peer once; the JSON holds every round's pair and ratio,
    /// and the median and range of the ratios.
    #[test]
    #[cfg(unix)]
    fn rounds_alternate_with_the_peer_and_summarise_the_ratios() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rounds.json");
        let args = args(4, Some(fake_peer(dir.path())), Some(out.clone()));
        let ours_per_round = [1000.0, 1000.0, 1200.0, 2000.0];
        let calls = std::cell::Cell::new(0);
        let log = dir.path().join("calls.log");
        let ours = || {
            let i = calls.get();
            // The peer has run exactly once per earlier round when ours starts.
            let peer_runs = std::fs::read_to_string(&log).map_or(0, |s| s.lines().count());
            assert_eq!(
                peer_runs, i,
                "round {i}: ours runs before that round's peer"
            );
            calls.set(i + 1);
            Ok(json!({ "generate_tokens_per_s": ours_per_round[i] }))
        };
        let metric = Metric::higher("generate_tokens_per_s");
        compare(&args, "generate", metric, ours).unwrap();
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(log.lines().count(), 4);
        assert!(
            log.lines()
                .all(|l| l == "scripts/bench_torch.py --only generate")
        );
        let all: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let ratios: Vec<f64> = all["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ratio"].as_f64().unwrap())
            .collect();
        // 1000/100, 1000/200, 1200/300, 2000/400.
        assert_eq!(ratios, [10.0, 5.0, 4.0, 5.0]);
        assert_eq!(all["median_ratio"], 5.0);
        assert_eq!(all["min_ratio"], 4.0);
        assert_eq!(all["max_ratio"], 10.0);
    }

    /// Lower-is-better numbers invert the ratio; rounds without a peer are refused up front.
    #[test]
    fn a_lower_number_is_a_speed_up_and_rounds_need_a_peer() {
        let metric = Metric::lower("train_step_s");
        let r = metric.ratio(&json!({"train_step_s": 0.5}), &json!({"train_step_s": 1.5}));
        assert_eq!(r, Some(3.0));
        assert_eq!(
            metric.ratio(&json!({}), &json!({"train_step_s": 1.5})),
            None
        );
        let err = compare(&args(3, None, None), "train", metric, || {
            panic!("nothing runs without a peer")
        })
        .unwrap_err();
        assert!(err.to_string().contains("--peer-python"), "{err}");
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
    }
}
