//! reasonlab's benchmarks: our side of each workload and the Python peer's (PyTorch / HF
//! transformers, TRL) run in the same invocation, with the ratio written out.
//!
//! Everything a benchmark needs ships inside the library: the peer scripts, the tiny Qwen2
//! fixture's tokenizer and the GSM8K prompts are embedded and written to a temporary folder
//! ([`Assets`]), so an installed `reasonlab bench …` works from any directory. Reports go to the
//! writer the caller passes.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reasonlab_generate::SamplingParams;
use reasonlab_model::{
    ActivationCheckpointing, BackendKind, DeviceInfo, Model, ModelConfig, PadSide, Precision,
    Purpose, TokenBatch, Training, bench_config, device_for,
};
use reasonlab_train::lm::{MicroBatch, accumulated_step};
use reasonlab_train::rm::RmExample;
use reasonlab_train::{AdamW, AdamWSettings};
use serde_json::{Value, json};

/// A benchmark that could not run, with what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Failed(String),
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError::Failed(e.to_string())
    }
}

/// Errors of the stages a benchmark drives, kept as their message.
macro_rules! from_errors {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for BenchError {
            fn from(e: $t) -> Self {
                BenchError::Failed(e.to_string())
            }
        })*
    };
}

from_errors!(
    serde_json::Error,
    std::net::AddrParseError,
    reasonlab_model::ModelError,
    reasonlab_generate::GenerateError,
    reasonlab_generate::LocalEngineError,
    reasonlab_core::engine::EngineError,
    reasonlab_core::jsonl::JsonlError,
    reasonlab_tokenize::TokenizeError,
    reasonlab_train::sft::SftError,
    reasonlab_train::grpo::GrpoError,
    reasonlab_train::rm::RmError,
    reasonlab_reward::Error,
    reasonlab_serve::ClientError,
    reasonlab_serve::server::ServerError,
    reasonlab_serve::PoolError,
    reasonlab_sandbox::SandboxError,
);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(BenchError::Failed(format!($($fmt)*)));
        }
    };
}

macro_rules! bail {
    ($($fmt:tt)*) => {
        return Err(BenchError::Failed(format!($($fmt)*)))
    };
}

/// `context` / `with_context` on results and options, as the benchmarks read best.
trait Context<T> {
    fn context(self, what: &str) -> Result<T, BenchError>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, BenchError> {
        self.map_err(|e| BenchError::Failed(format!("{what}: {e}")))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|e| BenchError::Failed(format!("{}: {e}", what())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T, BenchError> {
        self.ok_or_else(|| BenchError::Failed(what.to_string()))
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.ok_or_else(|| BenchError::Failed(what()))
    }
}

/// The files a benchmark needs, embedded at build time and written to a temporary folder in
/// the repository's layout (`scripts/`, `fixtures/tiny-qwen2/`, `examples/data/`), which the
/// peer scripts expect around them. Removed on drop.
pub struct Assets {
    root: PathBuf,
}

const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "scripts/bench_torch.py",
        include_bytes!("../../../scripts/bench_torch.py"),
    ),
    (
        "scripts/bench_trl_sft.py",
        include_bytes!("../../../scripts/bench_trl_sft.py"),
    ),
    (
        "scripts/bench_trl_grpo.py",
        include_bytes!("../../../scripts/bench_trl_grpo.py"),
    ),
    (
        "scripts/bench_trl_rm.py",
        include_bytes!("../../../scripts/bench_trl_rm.py"),
    ),
    (
        "scripts/bench_sandbox_pool.py",
        include_bytes!("../../../scripts/bench_sandbox_pool.py"),
    ),
    (
        "fixtures/tiny-qwen2/tokenizer.json",
        include_bytes!("../../../fixtures/tiny-qwen2/tokenizer.json"),
    ),
    (
        "fixtures/tiny-qwen2/tokenizer_config.json",
        include_bytes!("../../../fixtures/tiny-qwen2/tokenizer_config.json"),
    ),
    (
        "fixtures/tiny-qwen2/generation_config.json",
        include_bytes!("../../../fixtures/tiny-qwen2/generation_config.json"),
    ),
    (
        "examples/data/gsm8k_short_32.jsonl",
        include_bytes!("../../../examples/data/gsm8k_short_32.jsonl"),
    ),
    (
        "data/answer_suite.jsonl",
        include_bytes!("../../../crates/answer/tests/data/suite.jsonl"),
    ),
];

/// The shipped 654-case answer suite (`crates/answer/tests/data/suite.jsonl`).
const ANSWER_SUITE: &[u8] = include_bytes!("../../../crates/answer/tests/data/suite.jsonl");

impl Assets {
    /// Write the embedded files to a fresh temporary folder.
    pub fn unpack() -> Result<Self, BenchError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "reasonlab-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        for (path, bytes) in EMBEDDED {
            let p = root.join(path);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&p, bytes)?;
        }
        Ok(Self { root })
    }

    /// A file of the embedded layout.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The folder everything is in (peer scripts run from here).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Assets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The model a benchmark builds (random weights, Qwen2 architecture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// vocab 512, hidden 256, 4 layers, 4 heads / 2 KV heads (3.5M parameters): the CPU workload.
    #[default]
    Tiny,
    /// Qwen2.5-0.5B's shapes: vocab 151,936, hidden 896, 24 layers, 14 heads / 2 KV heads,
    /// intermediate 4,864, q/k/v biases, tied embeddings (494M parameters): the GPU workload.
    Qwen25Half,
    /// Qwen2.5-1.5B's shapes (DeepSeek-R1-Distill-Qwen-1.5B has the same layers and an untied
    /// LM head): vocab 151,936, hidden
    /// 1,536, 28 layers, 12 heads / 2 KV heads of dim 128, intermediate 8,960, q/k/v biases,
    /// tied embeddings (1.54B parameters): the GPU workload at head dim 128.
    Qwen25OnePointFive,
}

impl Shape {
    /// The name `--shape` takes and the peer scripts read.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Tiny => "tiny",
            Shape::Qwen25Half => "qwen2.5-0.5b",
            Shape::Qwen25OnePointFive => "qwen2.5-1.5b",
        }
    }

    /// The model config of this shape.
    pub fn config(self) -> ModelConfig {
        match self {
            Shape::Tiny => bench_config(),
            Shape::Qwen25Half => ModelConfig {
                vocab_size: 151_936,
                hidden_size: 896,
                intermediate_size: 4864,
                num_hidden_layers: 24,
                num_attention_heads: 14,
                num_key_value_heads: 2,
                head_dim: 64,
                max_position_embeddings: 32_768,
                rope_theta: 1_000_000.0,
                attention_bias: true,
                ..bench_config()
            },
            Shape::Qwen25OnePointFive => ModelConfig {
                hidden_size: 1536,
                intermediate_size: 8960,
                num_hidden_layers: 28,
                num_attention_heads: 12,
                head_dim: 128,
                ..Shape::Qwen25Half.config()
            },
        }
    }
}

impl std::str::FromStr for Shape {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Shape::Tiny, Shape::Qwen25Half, Shape::Qwen25OnePointFive]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                BenchError::Failed(format!(
                    "unknown shape {s:?}; expected tiny, qwen2.5-0.5b or qwen2.5-1.5b"
                ))
            })
    }
}

/// Where a model benchmark runs: our backend and the model's shape. The peer runs the same
/// shape on the CPU when our backend is the CPU's, and on CUDA otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    pub backend: BackendKind,
    pub shape: Shape,
}

impl Target {
    /// Open our device for `purpose`, say on stderr where it landed, and build the shape's model
    /// on it.
    fn model(&self, purpose: Purpose) -> Result<(Model, DeviceInfo), BenchError> {
        let (device, info) = reasonlab_model::open_for(self.backend, purpose)?;
        eprintln!("{info}");
        for warning in info.warnings() {
            tracing::warn!("{warning}");
        }
        let precision = match purpose {
            Purpose::Inference(precision) => precision,
            Purpose::Training(_) => Precision::F32,
        };
        Model::check_fits_as(&self.shape.config(), &device, precision)?;
        let model = Model::random_as(self.shape.config(), 0, &device, precision)?;
        let model = match purpose {
            Purpose::Inference(_) => model.pack_projections(),
            Purpose::Training(_) => model,
        };
        Ok((model, info))
    }

    /// The peer scripts' flags for this target: the shape, the device, and the card we run on
    /// where it can be named ([`reasonlab_model::gpus::cuda_card`]).
    fn peer_flags(&self) -> Vec<String> {
        let device = if self.backend == BackendKind::Flex {
            "cpu"
        } else {
            "cuda"
        };
        let mut flags = vec![
            "--shape".into(),
            self.shape.name().into(),
            "--device".into(),
            device.into(),
        ];
        // On a machine with several GPUs, the peer runs on our card.
        if let Some(card) = reasonlab_model::gpus::cuda_card(self.backend) {
            flags.extend(["--card".into(), card]);
        }
        flags
    }

    /// What our side reports besides its numbers: backend, device, what its matmuls run on, and
    /// the device allocator's reserved bytes when it keeps count (GPU backends).
    fn describe(&self, info: &DeviceInfo, model: &Model) -> Value {
        let reserved = model
            .device()
            .memory_pool_usage()
            .map(|u| u.bytes_reserved as f64 / (1u64 << 20) as f64);
        json!({
            "backend": self.backend.name(),
            "device": info.name,
            "pci_address": info.pci_address,
            "api": info.api,
            "matmul": info.matmul,
            "kernels": info.kernels,
            "attention": info.attention,
            "decode_split": reasonlab_model::fused::DecodeSplit::current(),
            "decode_overlap": reasonlab_model::fused::DecodeOverlap::current(),
            "shape": self.shape.name(),
            "device_reserved_mb": reserved,
        })
    }
}

/// `extra`'s keys added to the JSON object `v`.
fn merged(mut v: Value, extra: Value) -> Value {
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Our backend and the model's shape.
    pub target: Target,
    /// Timed repetitions (best is reported).
    pub repeats: usize,
    /// Rounds in one invocation, ours then the peer's in turn, each round's ratio printed and then
    /// their median and range: both sides move with the machine's load, so one ratio is one
    /// sample of a spread. Needs a peer.
    pub rounds: u32,
    pub peer: PeerFlags,
}

#[derive(Debug, Clone)]
pub struct GenerateBench {
    /// Prompts, each sampled once: the workload's 16, or 1 for a single stream.
    pub prompts: usize,
    /// Tokens per prompt: the workload's 32, or thousands for a long context.
    pub prompt_len: usize,
    /// New tokens per prompt: the workload's 128, or e.g. 1 to time the prefill alone.
    pub new_tokens: usize,
    /// Our float type, and the peer's (`bench_torch.py --dtype`).
    pub precision: Precision,
    /// The draw: the workload's T = 1 unfiltered, or a filtered setting such as DeepSeek-R1's
    /// evaluation (T = 0.6, top-p 0.95); the peer draws with the same (its `GenerationConfig`).
    pub draw: Draw,
    pub args: PeerConfig,
}

/// How [`generate`] samples: temperature, top-k (0: none) and top-p (1: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
}

impl Default for Draw {
    /// The workload's: T = 1, unfiltered.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

/// Where the peer's numbers come from, and where ours go.
#[derive(Debug, Clone)]
pub struct PeerFlags {
    /// A Python with the peer installed (torch + transformers, trl): runs the committed peer
    /// script (`scripts/bench_*.py`) in the same invocation for the ratio.
    pub peer_python: Option<PathBuf>,
    /// Or a JSON line the peer script printed earlier.
    pub peer_json: Option<PathBuf>,
    /// Write our result as JSON here.
    pub json: Option<PathBuf>,
}

impl PeerFlags {
    /// Whether the peer's numbers come from anywhere (a script to run or a saved line).
    fn given(&self) -> bool {
        self.peer_python.is_some() || self.peer_json.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct GrpoBench {
    /// KL weight; > 0 builds the reference model.
    pub beta: f32,
    /// Timed steps (after one warm-up step); the best is reported.
    pub steps: usize,
    /// Sequences per forward/backward (GRPO's default 16; 0: all 64 at once).
    pub micro_batch_size: usize,
    /// With N > 0: the step on 1 and on N `reasonlab serve` servers over loopback (full weight
    /// sync every step) against in-process sampling, instead of the peer comparison.
    pub rollout_endpoints: usize,
    /// Our backend and the model's shape. Both sides use the tiny fixture tokenizer (vocab
    /// 512); a larger shape samples ids beyond it, which both sides' decoders skip, so the
    /// rewards are 0 but the work (sampling, scoring, the update) is the shape's.
    pub target: Target,
    /// Activation checkpointing and mixed precision; the peer runs TRL with
    /// `gradient_checkpointing` and `fp16`/`bf16` set to match (TRL's own defaults turn both on).
    pub training: Training,
    pub peer: PeerFlags,
}

#[derive(Debug, Clone)]
pub struct RmBench {
    pub objective: reasonlab_train::rm::Objective,
    /// Pairs or step lists in the epoch (sequences of 96..256 tokens, seeded).
    pub examples: usize,
    /// Examples per optimiser step.
    pub batch: usize,
    /// Untimed optimiser steps on both sides before the timed epoch.
    pub warmup_steps: usize,
    /// Our backend and the backbone's shape (the peer's on the CPU beside flex, else on CUDA).
    pub target: Target,
    /// Activation checkpointing and mixed precision; the peer sets transformers'
    /// `gradient_checkpointing` and `fp16`/`bf16` to match.
    pub training: Training,
    pub peer: PeerFlags,
}

#[derive(Debug, Clone)]
pub struct ServeBench {
    /// The model to serve (default: the model-core benchmark's tiny Qwen2, random weights, with
    /// the fixture tokenizer of the same 512-token vocabulary).
    pub model: Option<PathBuf>,
    /// Requests sent, all at once.
    pub requests: usize,
    /// Tokens generated per request (chat, temperature 1).
    pub max_tokens: usize,
    /// Most requests per engine call.
    pub max_batch: usize,
}

#[derive(Debug, Clone)]
pub struct SftBench {
    /// Examples in the epoch (lengths 96..256, prompts 16..64 tokens, seeded).
    pub examples: usize,
    pub batch: usize,
    /// Untimed optimiser steps on both sides before the timed epoch: the first step of a run
    /// pays for first-touch memory (its gradients, optimiser moments and activations; on a
    /// virtual machine whose host backs guest memory lazily, seconds per GB), which a long run
    /// pays once.
    pub warmup_steps: usize,
    /// Our backend and the model's shape (the peer's on the CPU beside flex, else on CUDA).
    pub target: Target,
    /// Activation checkpointing and mixed precision; the peer sets SFTConfig's
    /// `gradient_checkpointing` and `fp16`/`bf16` to match.
    pub training: Training,
    pub peer: PeerFlags,
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
/// a vendor name), so that runs on different machines are not compared by accident.
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

/// The peer's line for `bench_torch.py --only ONLY EXTRA…` on `args.target`'s shape and
/// device; the script is unpacked only when it runs.
fn peer(args: &PeerConfig, only: &str, extra: &[String]) -> Result<Option<Value>, BenchError> {
    let assets = match args.peer.peer_python {
        Some(_) if args.peer.peer_json.is_none() => Some(Assets::unpack()?),
        _ => None,
    };
    let script = assets
        .as_ref()
        .map(|a| a.path("scripts/bench_torch.py").display().to_string())
        .unwrap_or_default();
    let mut script_args = vec![script, "--only".into(), only.into()];
    script_args.extend(args.target.peer_flags());
    script_args.extend(extra.iter().cloned());
    let script_args: Vec<&str> = script_args.iter().map(String::as_str).collect();
    run_peer(
        args.peer.peer_json.as_deref(),
        args.peer.peer_python.as_deref(),
        &script_args,
    )
}

/// The peer's JSON line: read from `json`, or printed by `python script_args…`.
fn run_peer(
    json: Option<&std::path::Path>,
    python: Option<&std::path::Path>,
    script_args: &[&str],
) -> Result<Option<Value>, BenchError> {
    if let Some(path) = json {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        return Ok(Some(serde_json::from_str(text.trim())?));
    }
    let Some(py) = python else {
        return Ok(None);
    };
    tracing::info!(
        "running the peer: {} {}",
        py.display(),
        script_args.join(" ")
    );
    let out = std::process::Command::new(py)
        .args(script_args)
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    ensure!(
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

/// Run the embedded TRL training peer `script` with `args`, then the flags that set its shape
/// and device from `target` and its `--precision` and `--gradient-checkpointing` from
/// `training`, as [`run_peer`] does (or read `peer`'s saved line).
fn run_training_peer(
    assets: &Assets,
    peer: &PeerFlags,
    script: &str,
    args: Vec<String>,
    target: &Target,
    training: &Training,
) -> Result<Option<Value>, BenchError> {
    let mut argv = vec![assets.path(script).display().to_string()];
    argv.extend(args);
    argv.extend(target.peer_flags());
    argv.extend(["--precision".into(), training.mixed_precision.name().into()]);
    if training.checkpointing == ActivationCheckpointing::Balanced {
        argv.push("--gradient-checkpointing".into());
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_peer(
        peer.peer_json.as_deref(),
        peer.peer_python.as_deref(),
        &argv,
    )
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
    out: &mut dyn Write,
    ours: Value,
    peer: Option<Value>,
    metric: Metric,
    json_out: &Option<PathBuf>,
) -> Result<(), BenchError> {
    writeln!(out, "reasonlab: {ours}")?;
    if let Some(p) = &peer {
        writeln!(out, "pytorch:   {p}")?;
        if let Some(ratio) = metric.ratio(&ours, p) {
            writeln!(out, "speed-up ({}): {ratio:.2}x", metric.key)?;
        }
        if let (Some(a), Some(b)) = (ours["peak_rss_mb"].as_f64(), p["peak_rss_mb"].as_f64()) {
            writeln!(out, "peak RSS: {a:.0} MB vs {b:.0} MB ({:.2}x)", a / b)?;
        }
        // On a GPU: what burn's memory pool reserved against the peak of CUDA's caching
        // allocator.
        let device = (
            ours["device_reserved_mb"].as_f64(),
            p["cuda_reserved_mb"].as_f64(),
        );
        if let (Some(a), Some(b)) = device {
            writeln!(out, "device memory: {a:.0} MB vs {b:.0} MB ({:.2}x)", a / b)?;
        }
    } else {
        writeln!(
            out,
            "(peer not run: pass --peer-python .venv/bin/python or --peer-json FILE for the ratio)"
        )?;
    }
    if let Some(path) = json_out {
        std::fs::write(path, ours.to_string())?;
    }
    Ok(())
}

/// `args.rounds` rounds of `ours()` then the peer's script (`only` of `bench_torch.py`) in one
/// invocation. One round is [`report`]; more print each round's ratio, then the median and the
/// range, and `--json` gets every round: `{"rounds": [{"ours", "peer", "ratio"}…],
/// "median_ratio", "min_ratio", "max_ratio"}`.
fn compare(
    out: &mut dyn Write,
    args: &PeerConfig,
    only: &str,
    extra: &[String],
    metric: Metric,
    mut ours: impl FnMut() -> Result<Value, BenchError>,
) -> Result<(), BenchError> {
    if args.rounds == 1 {
        return report(
            out,
            ours()?,
            peer(args, only, extra)?,
            metric,
            &args.peer.json,
        );
    }
    ensure!(
        args.peer.given(),
        "--rounds {}: rounds compare with a peer; pass --peer-python (or --peer-json)",
        args.rounds
    );
    let mut rounds = Vec::new();
    let mut ratios = Vec::new();
    for r in 1..=args.rounds {
        let mine = ours()?;
        let theirs = peer(args, only, extra)?.context("the peer gave no result")?;
        let ratio = metric
            .ratio(&mine, &theirs)
            .with_context(|| format!("no number `{}` in {mine} or {theirs}", metric.key))?;
        let number = |v: &Value| v[metric.key].as_f64().unwrap_or(f64::NAN);
        writeln!(
            out,
            "round {r}/{}: {} reasonlab {:.3}, peer {:.3}: speed-up {ratio:.2}x",
            args.rounds,
            metric.key,
            number(&mine),
            number(&theirs)
        )?;
        ratios.push(ratio);
        rounds.push(json!({"ours": mine, "peer": theirs, "ratio": ratio}));
    }
    let (median, min, max) = spread(&ratios);
    writeln!(
        out,
        "speed-up ({}) over {} rounds: median {median:.2}x, range {min:.2}–{max:.2}x",
        metric.key, args.rounds
    )?;
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

/// Sampling: 16 prompts × 32 tokens, then `new_tokens` (the workload's 128) sampled at T = 1
/// on the target's shape, against HF transformers (`scripts/bench_torch.py`).
pub fn generate(cfg: &GenerateBench, out: &mut dyn Write) -> Result<(), BenchError> {
    let (new_tokens, args) = (cfg.new_tokens, &cfg.args);
    if cfg.prompts == 0 || cfg.prompt_len == 0 || new_tokens == 0 {
        bail!("the workload needs at least one prompt of at least one token and one new token");
    }
    if let Some(path) = &args.peer.peer_json {
        // A saved line from before the workload was recorded ran the default one.
        let line = run_peer(Some(path), None, &[])?.unwrap_or_default();
        let theirs = [
            ("prompts", 16),
            ("prompt_len", 32),
            ("new_tokens_per_prompt", 128),
        ]
        .map(|(key, default)| line[key].as_u64().unwrap_or(default) as usize);
        let ours = [cfg.prompts, cfg.prompt_len, new_tokens];
        if theirs != ours {
            bail!(
                "{}: the peer ran {} prompts of {} tokens with {} new each, this run {} of {} \
                 with {}; run the peer again (--peer-python) or match its workload",
                path.display(),
                theirs[0],
                theirs[1],
                theirs[2],
                ours[0],
                ours[1],
                ours[2]
            );
        }
    }
    let (model, info) = args.target.model(Purpose::Inference(cfg.precision))?;
    let prompts = random_ids(
        12345,
        cfg.prompts,
        cfg.prompt_len,
        model.config.vocab_size as u64,
    );
    let draw = cfg.draw;
    if !(draw.temperature > 0.0 && draw.top_p > 0.0 && draw.top_p <= 1.0) {
        bail!("the draw needs a temperature above 0 and top-p in (0, 1], not {draw:?}");
    }
    let params = SamplingParams {
        temperature: draw.temperature as f32,
        top_k: draw.top_k,
        top_p: draw.top_p as f32,
        max_new_tokens: new_tokens,
        // The peer samples every prompt in one batch.
        max_batch: cfg.prompts,
        ..Default::default()
    };
    // Warm-up, then best of `repeats` (per round).
    reasonlab_generate::generate(&model, None, &prompts, 1, &params, &mut |_| {})?;
    let ours = || -> Result<Value, BenchError> {
        let mut best = f64::INFINITY;
        let mut tokens = 0;
        for r in 0..args.repeats.max(1) {
            let p = SamplingParams {
                seed: r as u64,
                ..params.clone()
            };
            let (_, stats) =
                reasonlab_generate::generate(&model, None, &prompts, 1, &p, &mut |_| {})?;
            best = best.min(stats.seconds);
            tokens = stats.new_tokens;
        }
        let mine = json!({
            "generate_tokens_per_s": tokens as f64 / best,
            "seconds": best,
            "new_tokens": tokens,
            "prompts": cfg.prompts,
            "prompt_len": cfg.prompt_len,
            "new_tokens_per_prompt": new_tokens,
            "peak_rss_mb": peak_rss_mb(),
            "threads": threads(),
            "cpu": cpu(),
            "temperature": draw.temperature,
            "top_k": draw.top_k,
            "top_p": draw.top_p,
        });
        Ok(merged(mine, args.target.describe(&info, &model)))
    };
    let metric = Metric::higher("generate_tokens_per_s");
    let extra = [
        "--prompts".to_string(),
        cfg.prompts.to_string(),
        "--prompt-len".into(),
        cfg.prompt_len.to_string(),
        "--new-tokens".into(),
        new_tokens.to_string(),
        "--dtype".into(),
        cfg.precision.name().into(),
        "--temperature".into(),
        draw.temperature.to_string(),
        "--top-k".into(),
        draw.top_k.to_string(),
        "--top-p".into(),
        draw.top_p.to_string(),
    ];
    compare(out, args, "generate", &extra, metric, ours)
}

/// A train step's workload: `batch` sequences of `seq` random token ids.
#[derive(Debug, Clone)]
pub struct TrainStepBench {
    pub batch: usize,
    pub seq: usize,
    pub checkpointing: ActivationCheckpointing,
    /// Mixed-precision compute type (f32: off); the peer runs under autocast to the same type.
    pub mixed_precision: Precision,
    /// Leading tokens of each row that are a prompt with no loss (SFT's completion-only loss;
    /// the peer labels them -100); 0: every token is a target.
    pub prompt_tokens: usize,
    pub args: PeerConfig,
}

/// A batch `batch × seq` causal-LM loss, backward and AdamW step (8 × 256 on the tiny Qwen2
/// workload by default), against PyTorch (`scripts/bench_torch.py`).
pub fn train_step(cfg: &TrainStepBench, out: &mut dyn Write) -> Result<(), BenchError> {
    let (args, rows, seq) = (&cfg.args, cfg.batch, cfg.seq);
    let (model, info) = args.target.model(Purpose::Training(Training {
        checkpointing: cfg.checkpointing,
        mixed_precision: cfg.mixed_precision,
    }))?;
    let model = model.with_mixed_precision(cfg.mixed_precision)?;
    let vocab = model.config.vocab_size as u64;
    ensure!(
        seq <= model.config.max_position_embeddings,
        "--seq {seq}: the {} shape's context is {}",
        args.target.shape.name(),
        model.config.max_position_embeddings
    );
    let mut optim = AdamW::new(AdamWSettings {
        lr: 1e-4,
        max_grad_norm: 0.0,
        ..Default::default()
    });
    ensure!(
        cfg.prompt_tokens < seq,
        "--prompt-tokens {} leaves no target in a row of {seq}",
        cfg.prompt_tokens
    );
    let seqs = random_ids(99, rows, seq, vocab);
    let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
    // Target j predicts token j + 1: a completion token when j + 1 >= prompt_tokens.
    let loss_mask: Vec<f32> = (0..rows * (seq - 1))
        .map(|at| f32::from(u8::from(at % (seq - 1) + 1 >= cfg.prompt_tokens)))
        .collect();
    let step = |mut model: Model, optim: &mut AdamW| -> Result<(Model, f32), BenchError> {
        let micro = [MicroBatch {
            batch: &batch,
            loss_mask: (cfg.prompt_tokens > 0).then_some(&loss_mask[..]),
        }];
        let (value, _) = accumulated_step(&mut model, optim, 1e-4, &micro)?;
        Ok((model, value))
    };
    let (m, _) = step(model, &mut optim)?;
    let mut model = Some(m);
    let ours = || -> Result<Value, BenchError> {
        let mut best = f64::INFINITY;
        let mut loss = 0.0;
        for _ in 0..args.repeats.max(1) {
            let t = Instant::now();
            let current = model.take().context("an earlier train step failed")?;
            let (m, l) = step(current, &mut optim)?;
            model = Some(m);
            loss = l;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let mine = json!({
            "train_step_s": best,
            "loss": loss,
            "tokens_per_s": (rows * seq) as f64 / best,
            "activation_checkpointing": cfg.checkpointing,
            "mixed_precision": cfg.mixed_precision.name(),
            "prompt_tokens": cfg.prompt_tokens,
            "peak_rss_mb": peak_rss_mb(),
            "threads": threads(),
            "cpu": cpu(),
        });
        let device = model.as_ref().context("an earlier train step failed")?;
        Ok(merged(mine, args.target.describe(&info, device)))
    };
    let metric = Metric::lower("train_step_s");
    let extra = [
        "--batch".to_string(),
        rows.to_string(),
        "--seq".into(),
        seq.to_string(),
        "--dtype".into(),
        cfg.mixed_precision.name().into(),
        "--prompt-tokens".into(),
        cfg.prompt_tokens.to_string(),
    ];
    compare(out, args, "train", &extra, metric, ours)
}

/// Two recall rounds (train, score, merge) on a synthetic pool of `pool_gb` GB in `dir`: time
/// per round, pages/s and peak memory. No peer has this loop.
pub fn recall(
    pool_gb: f64,
    dir: &Path,
    threads: i32,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    let r = reasonlab_corpus::bench::recall_scale(dir, (pool_gb * 1e9) as u64, threads)
        .context("recall")?;
    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    writeln!(
        out,
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
    )?;
    Ok(())
}

/// The ceilings of the GPU behind `backend`, measured through burn's runtime
/// ([`reasonlab_model::measure_ceilings`]): launch cost, memory bandwidth, scalar and
/// cooperative-matrix compute. No peer: these are what the other benchmarks' GPU numbers are
/// held against.
pub fn device(
    backend: BackendKind,
    json_out: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    if backend == BackendKind::Flex {
        return Err(BenchError::Failed(
            "bench device measures a GPU backend's device; the CPU's limits: \
             `cargo run --release -p reasonlab-model --example machine_limits`"
                .into(),
        ));
    }
    let (device, info) = reasonlab_model::open_for(backend, Purpose::Inference(Precision::F32))?;
    writeln!(out, "{info}")?;
    for warning in info.warnings() {
        tracing::warn!("{warning}");
    }
    let ceilings = reasonlab_model::measure_ceilings(&device);
    for c in &ceilings {
        writeln!(out, "ceiling {c}")?;
    }
    if let Some(path) = json_out {
        let report = json!({
            "backend": backend.name(),
            "device": info.name,
            "pci_address": info.pci_address,
            "api": info.api,
            "software": info.software,
            "matmul": info.matmul,
            "ceilings": ceilings,
        });
        std::fs::write(path, report.to_string())?;
    }
    Ok(())
}

/// The verifier on an answer suite (JSONL `{gold, pred, expected}`; `None`: the shipped suite),
/// cases/s and accuracy.
pub fn verify(suite: Option<&Path>, out: &mut dyn Write) -> Result<(), BenchError> {
    let assets;
    let suite = match suite {
        Some(p) => p.to_path_buf(),
        None => {
            assets = Assets::unpack()?;
            let p = assets.path("answer_suite.jsonl");
            std::fs::write(&p, ANSWER_SUITE)?;
            p
        }
    };
    let r = reasonlab_reward::bench_verify(&suite)?;
    writeln!(out, "{r}")?;
    Ok(())
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

/// One SFT epoch (completion-only loss, padded batches) on the target's shape (the tiny Qwen2
/// by default), against TRL's SFTTrainer (`scripts/bench_trl_sft.py`).
pub fn sft(args: &SftBench, out: &mut dyn Write) -> Result<(), BenchError> {
    let assets = Assets::unpack()?;
    use reasonlab_train::sft::{SftSettings, SftTrainer};
    let examples = sft_workload(args.examples);
    let tokens: usize = examples.iter().map(|e| e.len()).sum();
    let (model, info) = args.target.model(Purpose::Training(args.training))?;
    let model = model.with_mixed_precision(args.training.mixed_precision)?;
    // The peer's copy of the workload, removed when it goes out of scope, however this ends.
    let data = tempfile::Builder::new()
        .prefix("reasonlab-bench-sft-")
        .suffix(".jsonl")
        .tempfile()?;
    {
        let mut w = reasonlab_core::jsonl::JsonlWriter::new(data.reopen()?);
        for e in &examples {
            let mask: Vec<u8> = e.loss.iter().map(|&l| u8::from(l)).collect();
            w.write(&json!({"input_ids": e.ids, "completion_mask": mask}))?;
        }
    }
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
    // Warm-up steps on the same model (its own optimiser, dropped before the timed epoch), as
    // the peer takes them.
    let model = match args.warmup_steps {
        0 => model,
        n => {
            let warm = SftSettings {
                max_steps: n,
                ..settings.clone()
            };
            let mut trainer = SftTrainer::new(warm, model, examples.clone(), Vec::new(), 0)?;
            while trainer.step()?.is_some() {}
            trainer.into_model()
        }
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
        "mixed_precision": args.training.mixed_precision.name(),
        "activation_checkpointing": args.training.checkpointing,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads(),
    });
    let ours = merged(ours, args.target.describe(&info, trainer.model()));
    let peer = run_training_peer(
        &assets,
        &args.peer,
        "scripts/bench_trl_sft.py",
        vec![
            "--data".into(),
            data.path().display().to_string(),
            "--batch".into(),
            args.batch.to_string(),
            "--warmup-steps".into(),
            args.warmup_steps.to_string(),
        ],
        &args.target,
        &args.training,
    );
    let metric = Metric::higher("tokens_per_s");
    report(out, ours, peer?, metric, &args.peer.json)
}

/// The reward-model workload: `n` preference pairs or step lists of 96..256 random tokens
/// (a step ends every 32 tokens from token 40, labels drawn at random), seeded.
fn rm_workload(objective: reasonlab_train::rm::Objective, n: usize) -> Vec<RmExample> {
    let mut rng = reasonlab_core::rng::SplitMix64::seeded(2025);
    let mut seq = |i: u64| {
        let len = 96 + rng.below(161) as usize;
        random_ids(i * 2 + 11, 1, len, 512).remove(0)
    };
    (0..n as u64)
        .map(|i| match objective {
            reasonlab_train::rm::Objective::Pairwise => RmExample::Pair {
                chosen: seq(i),
                rejected: seq(i + 100_000),
                margin: 0.0,
            },
            reasonlab_train::rm::Objective::Pointwise => RmExample::Labelled {
                ids: seq(i),
                label: (i % 2) as f32,
            },
            reasonlab_train::rm::Objective::Process => {
                let ids = seq(i);
                let ends: Vec<usize> = (40..ids.len()).step_by(32).collect();
                let labels = ends
                    .iter()
                    .enumerate()
                    .map(|(j, _)| f32::from(u8::from(!(i as usize + j).is_multiple_of(3))))
                    .collect();
                RmExample::Steps { ids, ends, labels }
            }
        })
        .collect()
}

/// One reward-model epoch on the target's shape (the tiny Qwen2 by default), against TRL's
/// RewardTrainer (pairwise) or PRMTrainer's training loop (process) (`scripts/bench_trl_rm.py`).
pub fn rm(args: &RmBench, out: &mut dyn Write) -> Result<(), BenchError> {
    use reasonlab_model::{RewardHead, RewardModel};
    use reasonlab_train::rm::{Objective, RmSettings, RmTrainer};
    let assets = Assets::unpack()?;
    let (head, name) = match args.objective {
        Objective::Pairwise => (RewardHead::Sequence, "pairwise"),
        Objective::Process => (RewardHead::Token, "process"),
        Objective::Pointwise => {
            return Err(BenchError::Failed(
                "bench rm measures the pairwise and process objectives (TRL's two trainers)".into(),
            ));
        }
    };
    let examples = rm_workload(args.objective, args.examples);
    let tokens: usize = examples
        .iter()
        .map(|e| match e {
            RmExample::Pair {
                chosen, rejected, ..
            } => chosen.len() + rejected.len(),
            RmExample::Labelled { ids, .. } | RmExample::Steps { ids, .. } => ids.len(),
        })
        .sum();
    let (lm, info) = args.target.model(Purpose::Training(args.training))?;
    let model = RewardModel::from_lm(lm, head, 0)?
        .into_model()
        .with_mixed_precision(args.training.mixed_precision)?;
    // The peer's copy of the workload, removed when it goes out of scope, however this ends.
    let data = tempfile::Builder::new()
        .prefix("reasonlab-bench-rm-")
        .suffix(".jsonl")
        .tempfile()?;
    {
        let mut w = reasonlab_core::jsonl::JsonlWriter::new(data.reopen()?);
        for e in &examples {
            match e {
                RmExample::Pair {
                    chosen, rejected, ..
                } => w.write(&json!({"chosen_ids": chosen, "rejected_ids": rejected}))?,
                RmExample::Steps { ids, ends, labels } => {
                    let mut grid = vec![-100i64; ids.len()];
                    for (&at, &l) in ends.iter().zip(labels) {
                        grid[at] = l as i64;
                    }
                    w.write(&json!({"input_ids": ids, "labels": grid}))?
                }
                RmExample::Labelled { .. } => {}
            }
        }
    }
    let settings = RmSettings {
        objective: args.objective,
        epochs: 1,
        batch_size: args.batch,
        optim: AdamWSettings {
            lr: 1e-5,
            max_grad_norm: 1.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let model = match args.warmup_steps {
        0 => model,
        n => {
            let warm = RmSettings {
                max_steps: n,
                ..settings.clone()
            };
            let mut trainer = RmTrainer::new(warm, head, model, examples.clone(), Vec::new(), 0)?;
            while trainer.step()?.is_some() {}
            trainer.into_model()
        }
    };
    let started = Instant::now();
    let mut trainer = RmTrainer::new(settings, head, model, examples, Vec::new(), 0)?;
    let (mut steps, mut loss) = (0, 0.0);
    while let Some(m) = trainer.step()? {
        steps += 1;
        loss = m.loss;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ours = json!({
        "objective": name,
        "tokens_per_s": tokens as f64 / seconds,
        "train_seconds": seconds,
        "steps": steps,
        "last_loss": loss,
        "mixed_precision": args.training.mixed_precision.name(),
        "activation_checkpointing": args.training.checkpointing,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads(),
    });
    let ours = merged(ours, args.target.describe(&info, trainer.model()));
    let peer = run_training_peer(
        &assets,
        &args.peer,
        "scripts/bench_trl_rm.py",
        vec![
            "--data".into(),
            data.path().display().to_string(),
            "--objective".into(),
            name.into(),
            "--batch".into(),
            args.batch.to_string(),
            "--warmup-steps".into(),
            args.warmup_steps.to_string(),
        ],
        &args.target,
        &args.training,
    );
    report(
        out,
        ours,
        peer?,
        Metric::higher("tokens_per_s"),
        &args.peer.json,
    )
}

#[derive(Debug, Clone)]
pub struct SandboxBench {
    /// The interpreter both sides run.
    pub python: PathBuf,
    /// Programs per throughput batch.
    pub batch: usize,
    /// Programs run one at a time for the latency percentiles.
    pub latency_runs: usize,
    /// Interpreters (ours) and pool workers (the peer's).
    pub workers: usize,
    pub peer: PeerFlags,
}

/// A trivial snippet and a typical program-of-thought GSM8K program.
const SANDBOX_TRIVIAL: &str = "print(1 + 1)";
const SANDBOX_GSM8K: &str = "def solution():
    \"\"\"Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes
    muffins for her friends every day with four. She sells the remainder at the farmers' market
    daily for $2 per fresh duck egg. How much in dollars does she make every day?\"\"\"
    eggs_per_day = 16
    eaten = 3
    baked = 4
    remaining = eggs_per_day - eaten - baked
    price_per_egg = 2
    result = remaining * price_per_egg
    return result

print(solution())
";

/// The sandbox's warm pool against the evaluation harnesses' process-pool executor: throughput
/// over a batch (`Sandbox::run_batch` against the harness's `batch_apply`) and p50/p99 latency
/// of one program at a time, for a trivial snippet and a GSM8K program.
pub fn sandbox(args: &SandboxBench, out: &mut dyn Write) -> Result<(), BenchError> {
    use reasonlab_sandbox::{Isolation, Limits, Sandbox};
    let limits = Limits {
        timeout: Duration::from_secs(5),
        preload: vec![],
        ..Limits::default()
    };
    let sb = Sandbox::new(&args.python, limits, Isolation::Required, args.workers)?;
    let active: Vec<&str> = sb
        .probe()
        .protections()
        .into_iter()
        .filter(|p| p.active)
        .map(|p| p.name)
        .collect();
    let mut ours = json!({
        "workers": args.workers,
        "python": sb.probe().python_version,
        "protections": active,
    });
    for (name, code) in [("trivial", SANDBOX_TRIVIAL), ("gsm8k", SANDBOX_GSM8K)] {
        let expect = sb.run(code)?;
        ensure!(expect.ok(), "{name}: {}", expect.stderr);
        let batch = vec![code; args.batch];
        let started = Instant::now();
        let outs = sb.run_batch(&batch);
        let per_s = args.batch as f64 / started.elapsed().as_secs_f64();
        ensure!(
            outs.iter().all(|o| o.ok() && o.stdout == expect.stdout),
            "{name}: some runs gave another output"
        );
        let mut lat = Vec::with_capacity(args.latency_runs);
        for _ in 0..args.latency_runs {
            let t = Instant::now();
            sb.run(code)?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        ours[format!("{name}_per_s")] = json!(per_s);
        ours[format!("{name}_p50_ms")] = json!(pick(0.5));
        ours[format!("{name}_p99_ms")] = json!(pick(0.99));
        ours[format!("{name}_output")] = json!(expect.stdout);
    }
    let snippets = std::env::temp_dir().join(format!(
        "reasonlab-bench-sandbox-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &snippets,
        json!({"trivial": SANDBOX_TRIVIAL, "gsm8k": SANDBOX_GSM8K, "batch": args.batch})
            .to_string(),
    )?;
    let assets = Assets::unpack()?;
    let peer = run_peer(
        args.peer.peer_json.as_deref(),
        args.peer.peer_python.as_deref(),
        &[
            &assets
                .path("scripts/bench_sandbox_pool.py")
                .display()
                .to_string(),
            "--snippets",
            &snippets.display().to_string(),
            "--workers",
            &args.workers.to_string(),
            "--latency-runs",
            &args.latency_runs.to_string(),
        ],
    );
    std::fs::remove_file(&snippets).ok();
    let peer = peer?;
    writeln!(out, "reasonlab: {ours}")?;
    match &peer {
        Some(p) => {
            writeln!(out, "peer:      {p}")?;
            writeln!(
                out,
                "\n| program | reasonlab runs/s | peer runs/s | ratio | reasonlab p50 / p99 ms | peer p50 / p99 ms |"
            )?;
            writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
            for name in ["trivial", "gsm8k"] {
                let g = |v: &Value, k: &str| v[format!("{name}_{k}")].as_f64().unwrap_or(f64::NAN);
                writeln!(
                    out,
                    "| {name} | {:.0} | {:.0} | {:.2}x | {:.2} / {:.2} | {:.2} / {:.2} |",
                    g(&ours, "per_s"),
                    g(p, "per_s"),
                    g(&ours, "per_s") / g(p, "per_s"),
                    g(&ours, "p50_ms"),
                    g(&ours, "p99_ms"),
                    g(p, "p50_ms"),
                    g(p, "p99_ms"),
                )?;
            }
        }
        None => writeln!(
            out,
            "(peer not run: pass --peer-python PY, a Python with pebble, for the ratio)"
        )?,
    }
    if let Some(path) = &args.peer.json {
        std::fs::write(path, ours.to_string())?;
    }
    Ok(())
}

/// `reasonlab serve` on loopback under `requests` concurrent requests: p50/p99 latency and
/// tokens/s. No CPU peer (vLLM and SGLang need a GPU).
pub fn serve(args: &ServeBench, out: &mut dyn Write) -> Result<(), BenchError> {
    let assets = Assets::unpack()?;
    use reasonlab_core::engine::{Engine, Message, Prompt, Request, Sampling};
    use reasonlab_serve::client::{ClientConfig, OpenAiClient};
    let tmp;
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => {
            tmp = assets.path("served");
            let model = Model::random(bench_config(), 0, &device_for(Default::default(), false)?);
            model.save(&tmp, reasonlab_model::SaveDtype::F32)?;
            reasonlab_tokenize::copy_side_files(&assets.path("fixtures/tiny-qwen2"), &tmp)?;
            tmp.clone()
        }
    };
    let engine = reasonlab_generate::LocalEngine::load(&dir, Default::default())?
        .with_batching(reasonlab_generate::Batching {
            max_batch: args.max_batch,
            ..Default::default()
        })?
        .with_name("bench");
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
    let run = |i: usize| -> Result<(f64, usize), BenchError> {
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
    let results: Vec<Result<(f64, usize), BenchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.requests)
            .map(|i| scope.spawn(move || run(i + 1)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Failed("request thread panicked".into())))
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
    writeln!(out, "reasonlab serve: {ours}")?;
    writeln!(
        out,
        "(no CPU peer: vLLM and SGLang need a GPU; point `eval run --endpoint` at them to compare)"
    )?;
    ensure!(failed == 0, "{failed} requests failed");
    Ok(())
}

/// GRPO steps (8 prompts × 8 samples, ≤ 128 new tokens) on the shape's model (the tiny Qwen2
/// workload by default), against TRL's GRPOTrainer (`scripts/bench_trl_grpo.py`).
pub fn grpo(args: &GrpoBench, out: &mut dyn Write) -> Result<(), BenchError> {
    let assets = Assets::unpack()?;
    use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, Task};
    let tokenizer = reasonlab_tokenize::Tokenizer::from_dir(&assets.path("fixtures/tiny-qwen2"))?;
    #[derive(serde::Deserialize)]
    struct Row {
        problem: String,
        answer: String,
    }
    let rows: Vec<Row> = reasonlab_core::jsonl::read(
        &assets.path("examples/data/gsm8k_short_32.jsonl"),
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
    let target = args.target;
    let (model, info) = target.model(Purpose::Training(args.training))?;
    let model = model.with_mixed_precision(args.training.mixed_precision)?;
    if args.rollout_endpoints > 0 {
        return grpo_rollouts(
            args, &assets, settings, model, &tokenizer, &rewards, &tasks, out,
        );
    }
    let mut trainer = GrpoTrainer::new(settings, model, &tokenizer, &rewards)?;
    let (best, tokens) = timed_grpo_steps(&mut trainer, &tasks, args.steps)?;
    let described = target.describe(&info, trainer.policy());
    let ours = json!({
        "step_s": best,
        "gen_tokens_per_step": tokens,
        "s_per_1k_gen_tokens": best / tokens.max(1.0) * 1000.0,
        "beta": args.beta,
        "micro_batch_size": args.micro_batch_size,
        "mixed_precision": args.training.mixed_precision.name(),
        "activation_checkpointing": args.training.checkpointing,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads(),
    });
    let ours = merged(ours, described);
    // The peer's prompts, written only now (and removed after it ran), so no early error
    // leaves the file behind.
    let prompts =
        std::env::temp_dir().join(format!("reasonlab-bench-grpo-{}.jsonl", std::process::id()));
    {
        let mut w = reasonlab_core::jsonl::JsonlWriter::new(std::fs::File::create(&prompts)?);
        for (t, r) in tasks.iter().zip(&rows) {
            w.write(&json!({"prompt": t.prompt, "answer": r.answer}))?;
        }
    }
    let peer = run_training_peer(
        &assets,
        &args.peer,
        "scripts/bench_trl_grpo.py",
        vec![
            "--prompts".into(),
            prompts.display().to_string(),
            "--beta".into(),
            args.beta.to_string(),
            "--steps".into(),
            args.steps.to_string(),
        ],
        &target,
        &args.training,
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
    report(out, ours, peer, metric, &args.peer.json)
}

/// The best of `steps` timed GRPO steps after one warm-up: (seconds, generated tokens).
fn timed_grpo_steps(
    trainer: &mut reasonlab_train::grpo::GrpoTrainer<'_>,
    tasks: &[reasonlab_train::grpo::Task],
    steps: usize,
) -> Result<(f64, f64), BenchError> {
    let mut best = f64::INFINITY;
    let mut tokens = 0.0;
    for i in 0..=steps {
        let t = Instant::now();
        let (m, _) = trainer.step(tasks)?;
        let secs = t.elapsed().as_secs_f64();
        tracing::info!(step = i, secs, gen_tokens_per_s = m.gen_tokens_per_s, train_tokens_per_s = m.train_tokens_per_s, rss = ?peak_rss_mb(), "grpo bench step");
        if i > 0 && secs < best {
            best = secs;
            tokens = m.completion_len_mean * 64.0;
        }
    }
    Ok((best, tokens))
}

/// `bench grpo --rollout-endpoints N`: the same steps sampled in process, on one loopback
/// server and on N, each server a `reasonlab serve` on the benchmark model with the weights
/// pushed from disk before every step.
#[allow(clippy::too_many_arguments)]
fn grpo_rollouts(
    args: &GrpoBench,
    assets: &Assets,
    settings: reasonlab_train::grpo::GrpoSettings,
    model: Model,
    tokenizer: &reasonlab_tokenize::Tokenizer,
    rewards: &reasonlab_reward::WeightedSum,
    tasks: &[reasonlab_train::grpo::Task],
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    use reasonlab_serve::client::ClientConfig;
    use reasonlab_serve::pool::RolloutPool;
    use reasonlab_train::grpo::{GrpoTrainer, SyncMode, WeightSync};
    let tmp = std::env::temp_dir().join(format!("reasonlab-bench-rollout-{}", std::process::id()));
    let base = tmp.join("model");
    model.save(&base, reasonlab_model::SaveDtype::F32)?;
    reasonlab_tokenize::copy_side_files(&assets.path("fixtures/tiny-qwen2"), &base)?;
    let mut rows = Vec::new();
    let mut counts = vec![0];
    counts.extend([1, args.rollout_endpoints]);
    counts.dedup();
    for servers in counts {
        let handles = (0..servers)
            .map(|_| {
                let engine = reasonlab_generate::LocalEngine::load(&base, Default::default())?
                    .with_name("bench");
                reasonlab_serve::spawn(
                    std::sync::Arc::new(engine),
                    reasonlab_serve::ServerConfig {
                        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        max_batch: 256,
                        ..Default::default()
                    },
                )
                .map_err(BenchError::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let urls: Vec<String> = handles.iter().map(|h| h.url()).collect();
        let pool = match servers {
            0 => None,
            _ => {
                // Each group in one request (vLLM's and SGLang's `n`), all of them in flight:
                // a server decodes the whole step's batch together, as the trainer does.
                let mut cfg = ClientConfig::new("", "bench");
                cfg.n_mode = reasonlab_serve::client::NMode::Native;
                cfg.concurrency = 64;
                Some(RolloutPool::new(&urls, &cfg)?)
            }
        };
        let mut trainer = GrpoTrainer::new(settings.clone(), model.clone(), tokenizer, rewards)?;
        if let Some(p) = &pool {
            trainer = trainer.with_rollout_engine(p).with_weight_sync(WeightSync {
                mode: SyncMode::Full,
                every: 1,
                dir: tmp.join(format!("sync-{servers}")),
                adapter_name: "policy".into(),
            });
        }
        let (best, tokens) = timed_grpo_steps(&mut trainer, tasks, args.steps)?;
        rows.push(json!({
            "servers": servers,
            "step_s": best,
            "gen_tokens_per_step": tokens,
            "s_per_1k_gen_tokens": best / tokens.max(1.0) * 1000.0,
        }));
        drop(handles);
    }
    std::fs::remove_dir_all(&tmp).ok();
    let local = rows[0]["s_per_1k_gen_tokens"].as_f64().unwrap_or(f64::NAN);
    writeln!(
        out,
        "GRPO step, 8 prompts x 8 samples, <= 128 new tokens; servers on loopback, full weights \
         pushed every step"
    )?;
    for r in &rows {
        let per_k = r["s_per_1k_gen_tokens"].as_f64().unwrap_or(f64::NAN);
        let name = match r["servers"].as_u64() {
            Some(0) => "in process".to_string(),
            Some(1) => "1 server".to_string(),
            Some(n) => format!("{n} servers"),
            None => String::new(),
        };
        writeln!(
            out,
            "{name:<12} step {:.3} s  {per_k:.3} s per 1k generated tokens  ({:.2}x in-process time)",
            r["step_s"].as_f64().unwrap_or(f64::NAN),
            per_k / local
        )?;
    }
    if let Some(path) = &args.peer.json {
        std::fs::write(path, json!({ "rollouts": rows }).to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes have the parameter counts of the models they stand for (transformers counts
    /// 494,032,768 for Qwen2.5-0.5B and 1,543,714,304 for Qwen2.5-1.5B) and parse back from
    /// their names.
    #[test]
    fn the_shapes_are_the_models_they_name() {
        for (shape, parameters) in [
            (Shape::Qwen25Half, 494_032_768),
            (Shape::Qwen25OnePointFive, 1_543_714_304),
        ] {
            assert_eq!(shape.config().num_parameters(), parameters, "{shape:?}");
            assert_eq!(shape.name().parse::<Shape>().unwrap(), shape);
        }
        assert_eq!(Shape::Qwen25OnePointFive.config().head_dim, 128);
        assert!("qwen2.5-7b".parse::<Shape>().is_err());
    }

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

    /// The report sets the two sides' memory side by side: host RSS always, and on a GPU what
    /// burn's pool reserved against CUDA's peak; a side without the number prints no line.
    #[test]
    fn the_report_compares_device_memory_when_both_sides_have_it() {
        let report_of = |ours: Value, peer: Value| {
            let mut out = Vec::new();
            report(&mut out, ours, Some(peer), Metric::higher("x"), &None).unwrap();
            String::from_utf8(out).unwrap()
        };
        let text = report_of(
            json!({"x": 2.0, "peak_rss_mb": 300.0, "device_reserved_mb": 1500.0}),
            json!({"x": 1.0, "peak_rss_mb": 1200.0, "cuda_reserved_mb": 2000.0}),
        );
        assert!(text.contains("speed-up (x): 2.00x"), "{text}");
        assert!(
            text.contains("peak RSS: 300 MB vs 1200 MB (0.25x)"),
            "{text}"
        );
        assert!(
            text.contains("device memory: 1500 MB vs 2000 MB (0.75x)"),
            "{text}"
        );
        let text = report_of(
            json!({"x": 2.0, "device_reserved_mb": null}),
            json!({"x": 1.0, "cuda_reserved_mb": null}),
        );
        assert!(!text.contains("device memory"), "{text}");
    }

    fn args(rounds: u32, peer_python: Option<PathBuf>, json: Option<PathBuf>) -> PeerConfig {
        PeerConfig {
            target: Target::default(),
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
        compare(&mut std::io::sink(), &args, "generate", &[], metric, ours).unwrap();
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(log.lines().count(), 4);
        assert!(log.lines().all(|l| {
            l.ends_with("scripts/bench_torch.py --only generate --shape tiny --device cpu")
        }));
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
        let err = compare(
            &mut std::io::sink(),
            &args(3, None, None),
            "train",
            &[],
            metric,
            || panic!("nothing runs without a peer"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--peer-python"), "{err}");
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
    }
}

/// The fastText-compatible classifier benchmark's inputs: a labelled math-vs-other set built
/// by `scripts/build_math_vs_other.py` (from public datasets; too large to ship).
#[derive(Debug, Clone)]
pub struct ClassifierBenchConfig {
    pub train: PathBuf,
    pub test: PathBuf,
    /// Where our model is written.
    pub model: PathBuf,
    pub threads: usize,
    /// Train and predict this many times; the best time of each and the mean F1 are reported
    /// (Hogwild training is not deterministic across threads).
    pub runs: usize,
    /// The JSON line `scripts/bench_classifier_fasttext.py` printed, for the side-by-side.
    pub peer_json: Option<PathBuf>,
}

fn need_file(path: &Path, how: &str) -> Result<(), BenchError> {
    ensure!(path.is_file(), "{} does not exist: {how}", path.display());
    Ok(())
}

const BUILD_SET: &str = "build it with `python3 scripts/build_math_vs_other.py OUT --data DIR` \
                         (see docs/corpus.md) and pass --train/--test";

/// Ours against fastText 0.9 on a labelled math-vs-other set (DeepSeekMath's hyper-parameters).
pub fn classifier(cfg: &ClassifierBenchConfig, out: &mut dyn Write) -> Result<(), BenchError> {
    use reasonlab_corpus::bench;
    need_file(&cfg.train, BUILD_SET)?;
    need_file(&cfg.test, BUILD_SET)?;
    let args = reasonlab_corpus::fasttext::Args {
        thread: cfg.threads as i32,
        ..reasonlab_corpus::fasttext::Args::deepseekmath()
    };
    let mut all = Vec::new();
    for _ in 0..cfg.runs.max(1) {
        let run = bench::classifier(&cfg.train, &cfg.test, &cfg.model, &args, cfg.threads)
            .context("classifier")?;
        tracing::info!("{}", serde_json::to_string(&run)?);
        all.push(run);
    }
    let ours = bench::ClassifierBench::best_of(&all);
    writeln!(out, "{}", serde_json::to_string(&ours)?)?;
    if let Some(p) = &cfg.peer_json {
        let text = std::fs::read_to_string(p).with_context(|| p.display().to_string())?;
        let peer: Value = serde_json::from_str(text.trim())?;
        let f = |k: &str| peer.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        writeln!(
            out,
            "F1 {:.4} vs {:.4} (diff {:+.4}); train {:.1}s vs {:.1}s; predict {:.0} vs {:.0} docs/s ({:.2}x); model {} vs {} bytes",
            ours.f1_math,
            f("f1_math"),
            ours.f1_math - f("f1_math"),
            ours.train_s,
            f("train_s"),
            ours.predict_docs_per_s,
            f("predict_docs_per_s"),
            ours.predict_docs_per_s / f("predict_docs_per_s"),
            ours.model_bytes,
            f("model_bytes")
        )?;
    }
    Ok(())
}

/// MinHash LSH documents/s on the texts of a fastText-format file (labels dropped), the first
/// `docs` lines.
pub fn minhash(
    input: &Path,
    docs: usize,
    threads: usize,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    need_file(input, BUILD_SET)?;
    let text = std::fs::read_to_string(input).with_context(|| input.display().to_string())?;
    let texts: Vec<String> = text
        .lines()
        .take(docs)
        .map(|l| {
            l.split_whitespace()
                .filter(|t| !t.starts_with("__label__"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let r = reasonlab_corpus::bench::minhash(&texts, threads);
    writeln!(out, "{}", serde_json::to_string(&r)?)?;
    Ok(())
}
