//! `reasonlab bench …`: flags onto `reasonlab_bench`'s benchmarks (ours and the peer's in one
//! run, with the ratio). Everything they need is embedded, so they run from any directory.

use std::path::PathBuf;

use reasonlab_bench as bench;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// 16 prompts × 32 tokens, then 128 new tokens sampled at T=1, on the tiny Qwen2 (or
    /// `--shape`), against transformers' `generate`.
    Generate(GenerateArgs),
    /// Batch 8 × 256 causal-LM loss, backward and AdamW step on the tiny Qwen2 (or `--shape`),
    /// against PyTorch.
    TrainStep(TrainStepArgs),
    /// One SFT epoch (completion-only loss, padded batches of 8) on the tiny Qwen2 (or
    /// `--shape`), against TRL's SFTTrainer.
    Sft(SftArgs),
    /// GRPO steps (8 prompts × 8 samples, ≤ 128 new tokens) on the tiny Qwen2 (or `--shape`),
    /// against TRL's GRPOTrainer. Both sides use the tiny tokenizer: with `--shape
    /// qwen2.5-0.5b` the ids sampled beyond its 512 decode to nothing, so the rewards are 0,
    /// but the work of a step is the shape's.
    Grpo(GrpoArgs),
    /// One reward-model epoch (pairwise Bradley–Terry or per-step process loss, batches of 8) on
    /// the tiny Qwen2 (or `--shape`), against TRL's RewardTrainer or PRMTrainer's training loop.
    Rm(RmArgs),
    /// `reasonlab serve` on loopback under N concurrent requests: p50/p99 latency, tokens/s.
    Serve(ServeArgs),
    /// The code sandbox's warm pool against the evaluation harnesses' process-pool executor:
    /// runs/s and p50/p99 latency for a trivial snippet and a GSM8K program.
    Sandbox(SandboxArgs),
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
    /// The GPU's ceilings through burn's runtime: what a kernel launch costs, memory copy and
    /// read bandwidth, scalar f32/f16 and cooperative-matrix (tensor-core) compute. No peer:
    /// the other benchmarks' GPU numbers are held against these.
    Device {
        /// A GPU backend: wgpu, vulkan or cuda.
        #[arg(long)]
        backend: reasonlab_model::BackendKind,
        /// Write the ceilings as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The verifier on an answer suite (JSONL `{gold, pred, expected}`), cases/s and accuracy.
    Verify {
        /// The suite (default: the shipped 654-case answer suite).
        #[arg(long)]
        suite: Option<PathBuf>,
    },
}

/// Where the peer's numbers come from, and where ours go.
#[derive(clap::Args, Clone)]
pub struct PeerFlags {
    /// A Python with the peer installed (torch + transformers, trl): runs the embedded peer
    /// script in the same run for the ratio.
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
    fn config(&self) -> bench::PeerFlags {
        bench::PeerFlags {
            peer_python: self.peer_python.clone(),
            peer_json: self.peer_json.clone(),
            json: self.json.clone(),
        }
    }
}

/// Where a model benchmark runs: our backend and the model's shape.
#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// Our tensor backend: flex (CPU), wgpu, vulkan or cuda. The peer runs on CUDA when this is
    /// a GPU backend.
    #[arg(long, default_value = "flex")]
    backend: reasonlab_model::BackendKind,
    /// The model: tiny (the CPU workload), qwen2.5-0.5b (Qwen2.5-0.5B's shapes, random
    /// weights: the GPU workload) or qwen2.5-1.5b (Qwen2.5-1.5B's, head dim 128).
    #[arg(long, default_value = "tiny")]
    shape: bench::Shape,
}

impl TargetArgs {
    fn config(&self) -> bench::Target {
        bench::Target {
            backend: self.backend,
            shape: self.shape,
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct PeerArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Timed repetitions (best is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Rounds, ours then the peer's in turn, each round's ratio printed and then their median
    /// and range: both sides move with the machine's load, so one ratio is one sample of a
    /// spread. Needs a peer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    #[command(flatten)]
    peer: PeerFlags,
}

impl PeerArgs {
    fn config(&self) -> bench::PeerConfig {
        bench::PeerConfig {
            target: self.target.config(),
            repeats: self.repeats,
            rounds: self.rounds,
            peer: self.peer.config(),
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct GenerateArgs {
    /// Prompts, each sampled once, in one batch: the workload's 16, or 1 for a single stream.
    #[arg(long, default_value_t = 16)]
    prompts: usize,
    /// Random tokens per prompt: the workload's 32, or thousands for a long context.
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    /// New tokens per prompt: the workload's 128, or e.g. 1 to time the prefill alone.
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Our float type (bf16 / f16 on a GPU backend), and the peer's: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: reasonlab_model::Precision,
    /// Sampling temperature (above 0), ours and the peer's.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Keep the k likeliest tokens (0: no limit), ours and the peer's.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Keep the likeliest tokens up to this probability mass (1: no limit), ours and the
    /// peer's; DeepSeek-R1's evaluation draws at `--temperature 0.6 --top-p 0.95`.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[command(flatten)]
    args: PeerArgs,
}

#[derive(clap::Args, Clone)]
pub struct TrainStepArgs {
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Recompute memory-bound activations in the backward pass (PyTorch keeps them all).
    #[arg(long, value_enum, default_value = "off")]
    activation_checkpointing: CheckpointingArg,
    /// Mixed precision: compute in bf16 (or f16) with f32 master weights and AdamW state, on a
    /// GPU backend; the peer runs its forward under `torch.autocast` to the same type.
    #[arg(long, default_value = "f32")]
    mixed_precision: reasonlab_model::Precision,
    /// Leading tokens of each sequence that are a prompt with no loss, as in SFT's
    /// completion-only loss (the LM head skips them; the peer labels them -100).
    #[arg(long, default_value_t = 0)]
    prompt_tokens: usize,
    #[command(flatten)]
    args: PeerArgs,
}

#[derive(clap::Args, Clone)]
pub struct GrpoArgs {
    /// KL weight; > 0 builds the reference model.
    #[arg(long, default_value_t = 0.04)]
    beta: f32,
    /// Timed steps (after one warm-up step); the best is reported.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Sequences per forward/backward (GRPO's default 16; 0: all 64 at once).
    #[arg(long, default_value_t = 16)]
    micro_batch_size: usize,
    /// Time the step with rollouts on 1 and on N loopback `reasonlab serve` servers (full
    /// weights pushed every step) against in-process sampling, instead of the peer.
    #[arg(long, default_value_t = 0)]
    rollout_endpoints: usize,
    #[command(flatten)]
    train: TrainTargetArgs,
    #[command(flatten)]
    peer: PeerFlags,
}

/// Where a training benchmark runs and how it trains; the TRL peer runs the same shape on the
/// CPU beside flex and on CUDA otherwise, with its precision and checkpointing set to match.
#[derive(clap::Args, Clone)]
pub struct TrainTargetArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Recompute memory-bound activations in the backward pass; the peer sets
    /// `gradient_checkpointing` to match.
    #[arg(long, value_enum, default_value = "off")]
    activation_checkpointing: CheckpointingArg,
    /// Mixed precision (bf16 or f16 compute, f32 master weights) on a GPU backend; the peer sets
    /// `bf16`/`fp16` to match (off for f32).
    #[arg(long, default_value = "f32")]
    mixed_precision: reasonlab_model::Precision,
}

impl TrainTargetArgs {
    fn target(&self) -> bench::Target {
        self.target.config()
    }

    fn training(&self) -> reasonlab_model::Training {
        reasonlab_model::Training {
            checkpointing: self.activation_checkpointing.into(),
            mixed_precision: self.mixed_precision,
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    /// The model to serve (default: the benchmark's tiny Qwen2, random weights, with the
    /// fixture tokenizer of the same 512-token vocabulary).
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
pub struct SftArgs {
    /// Examples in the epoch (lengths 96..256, prompts 16..64 tokens, seeded).
    #[arg(long, default_value_t = 128)]
    examples: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Untimed optimiser steps on both sides before the timed epoch (first-touch memory,
    /// allocator and kernel set-up stay out of the numbers).
    #[arg(long, default_value_t = 1)]
    warmup_steps: usize,
    #[command(flatten)]
    train: TrainTargetArgs,
    #[command(flatten)]
    peer: PeerFlags,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[arg(long, value_enum, default_value = "pairwise")]
    objective: RmObjectiveArg,
    /// Pairs or step lists in the epoch (96..256 tokens each, seeded).
    #[arg(long, default_value_t = 64)]
    examples: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Untimed optimiser steps on both sides before the timed epoch.
    #[arg(long, default_value_t = 1)]
    warmup_steps: usize,
    #[command(flatten)]
    train: TrainTargetArgs,
    #[command(flatten)]
    peer: PeerFlags,
}

#[derive(clap::Args, Clone)]
pub struct SandboxArgs {
    /// The Python both sides run (the peer's needs pebble; see --peer-python).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Programs per throughput batch (a 500-problem benchmark × 8 samples is 4,000).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Programs run one at a time for the latency percentiles.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Interpreters (ours) and pool workers (the peer's).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    peer: PeerFlags,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum CheckpointingArg {
    Off,
    Balanced,
}

impl From<CheckpointingArg> for reasonlab_model::ActivationCheckpointing {
    fn from(a: CheckpointingArg) -> Self {
        match a {
            CheckpointingArg::Off => Self::Off,
            CheckpointingArg::Balanced => Self::Balanced,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum RmObjectiveArg {
    Pairwise,
    Process,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let out = &mut std::io::stdout();
    match cmd {
        BenchCommand::Generate(a) => bench::generate(
            &bench::GenerateBench {
                prompts: a.prompts,
                prompt_len: a.prompt_len,
                new_tokens: a.new_tokens,
                precision: a.dtype,
                draw: bench::Draw {
                    temperature: a.temperature,
                    top_k: a.top_k,
                    top_p: a.top_p,
                },
                args: a.args.config(),
            },
            out,
        )?,
        BenchCommand::TrainStep(a) => bench::train_step(
            &bench::TrainStepBench {
                batch: a.batch,
                seq: a.seq,
                checkpointing: a.activation_checkpointing.into(),
                mixed_precision: a.mixed_precision,
                prompt_tokens: a.prompt_tokens,
                args: a.args.config(),
            },
            out,
        )?,
        BenchCommand::Rm(a) => bench::rm(
            &bench::RmBench {
                objective: match a.objective {
                    RmObjectiveArg::Pairwise => reasonlab_train::rm::Objective::Pairwise,
                    RmObjectiveArg::Process => reasonlab_train::rm::Objective::Process,
                },
                examples: a.examples,
                batch: a.batch,
                warmup_steps: a.warmup_steps,
                target: a.train.target(),
                training: a.train.training(),
                peer: a.peer.config(),
            },
            out,
        )?,
        BenchCommand::Sandbox(a) => bench::sandbox(
            &bench::SandboxBench {
                python: a.python.clone(),
                batch: a.batch,
                latency_runs: a.latency_runs,
                workers: a.workers,
                peer: a.peer.config(),
            },
            out,
        )?,
        BenchCommand::Sft(a) => bench::sft(
            &bench::SftBench {
                examples: a.examples,
                batch: a.batch,
                warmup_steps: a.warmup_steps,
                target: a.train.target(),
                training: a.train.training(),
                peer: a.peer.config(),
            },
            out,
        )?,
        BenchCommand::Grpo(a) => bench::grpo(
            &bench::GrpoBench {
                beta: a.beta,
                steps: a.steps,
                micro_batch_size: a.micro_batch_size,
                rollout_endpoints: a.rollout_endpoints,
                target: a.train.target(),
                training: a.train.training(),
                peer: a.peer.config(),
            },
            out,
        )?,
        BenchCommand::Serve(a) => bench::serve(
            &bench::ServeBench {
                model: a.model,
                requests: a.requests,
                max_tokens: a.max_tokens,
                max_batch: a.max_batch,
            },
            out,
        )?,
        BenchCommand::Classifier(a) => bench::classifier(&a.config(), out)?,
        BenchCommand::Minhash(a) => bench::minhash(&a.input, a.docs, a.threads, out)?,
        BenchCommand::Recall {
            pool_gb,
            dir,
            threads,
        } => bench::recall(pool_gb, &dir, threads, out)?,
        BenchCommand::Verify { suite } => bench::verify(suite.as_deref(), out)?,
        BenchCommand::Device { backend, json } => bench::device(backend, json.as_deref(), out)?,
    }
    Ok(())
}
