//! Group Relative Policy Optimisation (Shao et al. 2024, DeepSeekMath §4.1) and its variants.
//!
//! One step: take `prompts_per_step` problems, sample `group_size` completions for each with the
//! current policy, score them with the configured rewards, turn rewards into group-relative
//! advantages ([`advantage`]), then take `mu` optimiser steps on the clipped surrogate with an
//! optional k3 KL penalty to a frozen reference ([`loss`]). Presets pin the published recipes.

pub mod advantage;
pub mod loss;

use std::time::Instant;

use rayon::prelude::*;
use reasonlab_core::engine::{Engine, ModelInfo, Prompt, Request, Sampling, WeightUpdate};
use reasonlab_generate::{Completion, FinishReason, LocalEngine, SamplingParams, generate};
use reasonlab_model::tensor::{Device, Tensor, TensorData};
use reasonlab_model::{Model, ModelError, PadSide, TokenBatch};
use reasonlab_reward::{ProcessReward, RewardKind, Sample, StepScore, WeightedSum};
use reasonlab_sandbox::Sandbox;
use reasonlab_sandbox::tools::{ToolConfig, ToolEngine};
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

pub use advantage::{Scaling, StepRewards, outcome_advantages, process_advantages};
pub use loss::{LossAgg, LossInputs, LossSettings, LossStats, RatioLevel, grpo_loss};

use crate::lm::{BadSteps, apply_gradients, data_parallel_workers, parallel_gradients};
use crate::optim::{AdamW, AdamWSettings};

/// Published recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// DeepSeekMath-RL: ε 0.2, β 0.04, sequence-mean, group std.
    Deepseekmath,
    /// DeepSeek-R1-Zero: as DeepSeekMath with a small KL (β 0.001).
    R1Zero,
    /// Dr. GRPO (Liu et al. 2025): no std scaling, constant normaliser, β 0.
    DrGrpo,
    /// DAPO (Yu et al. 2025): clip-higher 0.2/0.28, token mean, β 0, dynamic sampling, soft
    /// overlong penalty.
    Dapo,
    /// GSPO (Zheng et al. 2025): sequence-level ratio with ε 3e-4 / 4e-4, β 0.
    Gspo,
}

/// What to do with completions cut at `max_new_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Overlong {
    /// Train on them like any other.
    #[default]
    Keep,
    /// Exclude their tokens from the loss (DAPO's overlong filtering).
    Mask,
    /// DAPO's soft punishment: reward −(len − (L_max − cache)) / cache inside the last `cache`
    /// tokens, −1 at the limit.
    SoftPenalty { cache: usize },
}

/// How the trainer treats a sampler whose log-probs differ from its own (a rollout server in
/// another precision or with other kernels, or one step behind).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RolloutCorrection {
    /// Train as if the trainer had sampled.
    Off,
    /// Truncated importance sampling (Yao et al. 2025; verl's `tis_imp_ratio_cap`, TRL's
    /// `vllm_importance_sampling_cap`): each token's advantage is weighted by
    /// `min(π_trainer / π_sampler, cap)`, the ratio of the trainer's log-prob of the sampled
    /// token (before the update) to the sampler's.
    TruncatedIs { cap: f32 },
}

impl Default for RolloutCorrection {
    fn default() -> Self {
        RolloutCorrection::TruncatedIs { cap: 2.0 }
    }
}

/// What a rollout engine is sent after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Nothing: the engine keeps its own weights (off-policy rollouts).
    #[default]
    None,
    /// The whole checkpoint in HF layout (SGLang's update-from-disk).
    Full,
    /// The LoRA adapters in PEFT layout (vLLM's dynamic LoRA); needs `lora` training.
    Lora,
}

/// Keeping a rollout engine's weights in step with the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSync {
    pub mode: SyncMode,
    /// Push after every `every` updates (1: on-policy).
    pub every: usize,
    /// Where the weights are written for the engine to read (`v{step}/` under it; only the
    /// newest is kept). Servers on other machines need it on a shared filesystem.
    pub dir: std::path::PathBuf,
    /// Adapters are served as `{adapter_name}-v{step}`.
    pub adapter_name: String,
}

/// The GRPO algorithm's settings: the `[grpo]` table of `grpo.toml`, laid over a [`Preset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoSettings {
    pub group_size: usize,
    pub prompts_per_step: usize,
    pub steps: usize,
    /// Optimiser steps per batch of rollouts (μ).
    pub mu: usize,
    pub scaling: Scaling,
    pub loss: LossSettings,
    pub optim: AdamWSettings,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    /// Drop groups whose rewards are all equal and sample more prompts, at most this many
    /// extra rounds per step (0 disables; DAPO §3.2).
    pub dynamic_sampling_rounds: usize,
    pub overlong: Overlong,
    /// Copy the policy into the reference every N steps (0 = never; iterative RL, §4.2).
    pub ref_reset_every: usize,
    /// Stop after this many consecutive steps skipped for a non-finite loss.
    pub max_bad_steps: usize,
    pub seed: u64,
    /// Sequences per forward/backward pass (default 16; 0: the whole batch at once). Gradients
    /// of the micro-batches are accumulated into one optimiser step with the full batch's
    /// normaliser, so the update is the same; peak memory scales with this instead of the
    /// batch (and with the number of data-parallel workers, each holding one micro-batch).
    pub micro_batch_size: usize,
    /// Train LoRA adapters instead of every weight (merged into saved checkpoints).
    pub lora: Option<reasonlab_model::LoraConfig>,
    /// Correcting for a rollout engine's log-probs (applies when the engine returns them).
    pub rollout_correction: RolloutCorrection,
    /// Most rollouts decoded at once where the policy samples its own (no `[rollout]`
    /// servers); the step's `group_size × prompts_per_step` go in batches of this many.
    pub rollout_max_batch: usize,
    /// Most prompt tokens one prefill pass of the policy's own sampling takes
    /// ([`SamplingParams::prefill_tokens`]).
    pub rollout_prefill_tokens: usize,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        Self::preset(Preset::Deepseekmath)
    }
}

impl GrpoSettings {
    /// How the policy's own sampling batches ([`GrpoSettings::rollout_max_batch`],
    /// [`GrpoSettings::rollout_prefill_tokens`]).
    pub fn rollout_batching(&self) -> reasonlab_generate::Batching {
        reasonlab_generate::Batching {
            max_batch: self.rollout_max_batch,
            prefill_tokens: self.rollout_prefill_tokens,
        }
    }

    pub fn preset(p: Preset) -> Self {
        let base = Self {
            group_size: 8,
            prompts_per_step: 8,
            steps: 100,
            mu: 1,
            scaling: Scaling::Group,
            loss: LossSettings::default(),
            optim: AdamWSettings {
                lr: 1e-6,
                ..Default::default()
            },
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 256,
            dynamic_sampling_rounds: 0,
            overlong: Overlong::Keep,
            ref_reset_every: 0,
            max_bad_steps: 5,
            seed: 0,
            micro_batch_size: 16,
            lora: None,
            rollout_correction: RolloutCorrection::default(),
            rollout_max_batch: 256,
            rollout_prefill_tokens: reasonlab_generate::PREFILL_TOKENS,
        };
        match p {
            Preset::Deepseekmath => base,
            Preset::R1Zero => Self {
                loss: LossSettings {
                    beta: 0.001,
                    ..base.loss
                },
                ..base
            },
            Preset::DrGrpo => Self {
                scaling: Scaling::None,
                loss: LossSettings {
                    beta: 0.0,
                    aggregation: LossAgg::Constant,
                    ..base.loss
                },
                ..base
            },
            Preset::Dapo => Self {
                loss: LossSettings {
                    beta: 0.0,
                    epsilon_low: 0.2,
                    epsilon_high: 0.28,
                    aggregation: LossAgg::TokenMean,
                    ..base.loss
                },
                dynamic_sampling_rounds: 3,
                overlong: Overlong::SoftPenalty { cache: 32 },
                ..base
            },
            Preset::Gspo => Self {
                loss: LossSettings {
                    beta: 0.0,
                    epsilon_low: 3e-4,
                    epsilon_high: 4e-4,
                    ratio: RatioLevel::Sequence,
                    aggregation: LossAgg::SequenceMean,
                },
                ..base
            },
        }
    }
}

/// A prompt with what the rewards need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub prompt: String,
    pub gold: Option<String>,
    /// False when `prompt` is already a rendered chat template (it placed its own BOS).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// The problem as the rewards see it (multiple-choice options); `prompt` when `None`.
    #[serde(default)]
    pub problem: Option<String>,
    /// The dataset row's other columns, passed to every reward.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Task {
    /// A plain-text task.
    pub fn new(id: impl Into<String>, prompt: impl Into<String>, gold: Option<String>) -> Self {
        Self {
            id: id.into(),
            prompt: prompt.into(),
            gold,
            add_special_tokens: true,
            problem: None,
            extra: Default::default(),
        }
    }
}

fn yes() -> bool {
    true
}

/// One step's numbers (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepMetrics {
    /// Steps taken, this one included (the first step is 1).
    pub step: usize,
    pub lr: f64,
    pub loss: f32,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Mean of each reward function (configuration order).
    pub rewards: Vec<(String, f64)>,
    pub accuracy: f64,
    pub zero_variance_groups: f64,
    pub clip_low: f32,
    pub clip_high: f32,
    pub kl: f32,
    pub ratio_mean: f32,
    /// Mean entropy (nats) of the policy's next-token distributions over completion tokens,
    /// before the update.
    pub entropy: f32,
    pub completion_len_mean: f64,
    pub completion_len_min: usize,
    pub completion_len_max: usize,
    pub truncated: f64,
    pub gen_tokens_per_s: f64,
    pub train_tokens_per_s: f64,
    pub step_seconds: f64,
    pub skipped: bool,
    /// Tool calls per completion, with tools on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<f64>,
    /// The oldest policy version among the step's samples (updates applied to the weights that
    /// sampled them; this step trains version `step − 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
    /// Mean of `step − 1 − version` over the samples: 0 on-policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness: Option<f64>,
    /// Mean |log π_trainer − log π_sampler| over the sampled tokens, when the rollout engine
    /// returned log-probs (and the correction is on, or μ > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_logprob_diff: Option<f64>,
    /// Fraction of those tokens whose importance weight hit the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_clipped: Option<f64>,
}

/// A sampled completion, for `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    /// The step it trained, counted from 1 as in [`StepMetrics::step`].
    pub step: usize,
    pub task: String,
    pub completion: String,
    pub reward: f64,
    pub advantage: f64,
    /// Per-token advantages when a process reward is on (outcome advantage plus the process
    /// part, one per completion token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_advantages: Option<Vec<f64>>,
    /// The version of the weights that sampled it (see [`StepMetrics::policy_version`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GrpoError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Generate(#[from] reasonlab_generate::GenerateError),
    #[error(transparent)]
    Tokenize(#[from] reasonlab_tokenize::TokenizeError),
    #[error("{0} consecutive steps had a non-finite loss; stopping")]
    Diverged(usize),
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("rollout engine: {0}")]
    Rollout(String),
    #[error("writing weights for the rollout engine: {0}")]
    Sync(String),
}

/// Where a trainer is in its run: what a checkpoint's `trainer_state.json` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpoState {
    /// Steps taken.
    pub step: usize,
    /// Position in the task stream (tasks are cycled from here).
    pub data_position: usize,
}

/// DAPO's soft overlong punishment (Yu et al. 2025, eq. 13) of a completion of `len` tokens
/// with a budget of `max_new` and a punishment interval of `cache` tokens: 0 up to
/// `max_new − cache`, then falling linearly to −1 at the budget.
pub fn soft_overlong_penalty(len: usize, max_new: usize, cache: usize) -> f64 {
    let start = max_new.saturating_sub(cache);
    if len > start && cache > 0 {
        -((len - start) as f64 / cache as f64).min(1.0)
    } else {
        0.0
    }
}

/// Each reward's `(name, score)` for one completion (`None`: not applicable).
type RewardParts = Vec<(String, Option<f64>)>;

/// One prompt's rollouts: completions, total rewards and per-reward scores.
struct SampledGroup {
    task: Task,
    prompt: Vec<u32>,
    comps: Vec<Completion>,
    totals: Vec<f64>,
    parts: Vec<RewardParts>,
    /// Step rewards by token, when a process reward is on.
    steps: Option<Vec<StepRewards>>,
    /// Per completion, token ranges left out of the loss (tool outputs).
    masked: Vec<Vec<std::ops::Range<usize>>>,
    /// Per completion, the version of the weights that sampled it.
    versions: Vec<Option<u64>>,
}

/// One prompt's completions and the policy version that drew each.
type Drawn = (Vec<Completion>, Vec<Option<u64>>);

/// The next step's first round of rollouts, drawn while this step trained.
struct Prefetched {
    /// The data position it was drawn at (it is used only there).
    position: usize,
    batch: Vec<Task>,
    prompts: Vec<Vec<u32>>,
    groups: Vec<Drawn>,
    seconds: f64,
}

/// The rollout and score phases' result: the groups that train, and what was seen on the way.
struct Sampled {
    groups: Vec<SampledGroup>,
    /// Groups sampled (kept or not) and how many of them had all-equal rewards.
    seen: usize,
    zero_variance: usize,
    gen_tokens: usize,
    gen_seconds: f64,
}

/// One micro-batch of a GRPO update: (b, l) completion mask and advantages, the old and
/// reference log-probs when needed, and its rows.
struct Micro {
    /// The completion tokens in the loss, (b, t − 1), on the device and on the host (where
    /// the LM head runs: [`Model::token_logprobs_where`]).
    mask: Tensor<2>,
    keep: Vec<f32>,
    adv: Tensor<2>,
    old_logp: Option<Tensor<2>>,
    ref_logp: Option<Tensor<2>>,
    batch: TokenBatch,
    /// Completion tokens in the loss.
    tokens: usize,
    /// Against the sampler's log-probs: (Σ |Δ|, tokens at the cap, tokens compared).
    mismatch: Option<(f64, usize, usize)>,
}

/// The batch phase's result: micro-batches dealt to the workers, and the whole batch's sizes
/// (the loss normalisers).
struct TrainBatch {
    micro: Vec<Micro>,
    rows: usize,
    tokens: usize,
    /// Longest completion (Dr. GRPO's constant normaliser).
    max_len: usize,
    /// Prompt plus completion tokens of every row.
    seq_tokens: usize,
    /// Per row: (completion length, truncated).
    completions: Vec<(usize, bool)>,
    /// Sampler against trainer: (Σ |Δ log-prob|, tokens whose weight hit the cap, tokens).
    mismatch: Option<(f64, usize, usize)>,
}

/// The update phase's result.
#[derive(Default)]
struct Update {
    loss: f32,
    stats: LossStats,
    entropy: f32,
    skipped: bool,
    seconds: f64,
}

/// A micro-batch's share of the loss statistics and the entropy.
struct MicroStats {
    stats: LossStats,
    entropy: f32,
}

/// For each step (ending at a byte of the decoded completion), the index of the first token
/// whose decoded prefix reaches that byte; steps past the text end at the last token.
fn token_ends(
    tokenizer: &Tokenizer,
    ids: &[u32],
    steps: &[StepScore],
) -> Result<Vec<usize>, GrpoError> {
    let n = ids.len();
    let mut ends = Vec::with_capacity(steps.len());
    for s in steps {
        // Smallest t in 1..=n whose prefix decodes to at least `end` bytes (prefix lengths grow
        // with t), as a token index.
        let (mut lo, mut hi) = (1usize, n.max(1));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if tokenizer.decode(&ids[..mid.min(n)], true)?.len() >= s.end {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        ends.push(lo.saturating_sub(1).min(n.saturating_sub(1)));
    }
    Ok(ends)
}

/// The fewest leading tokens of `ids` that decode to at least `byte` bytes.
fn tokens_covering(tokenizer: &Tokenizer, ids: &[u32], byte: usize) -> Result<usize, GrpoError> {
    let (mut lo, mut hi) = (0usize, ids.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if tokenizer.decode(&ids[..mid], true)?.len() >= byte {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// The token ranges of a completion's tool-output blocks.
fn tool_token_spans(
    tokenizer: &Tokenizer,
    c: &Completion,
    cfg: &ToolConfig,
) -> Result<Vec<std::ops::Range<usize>>, GrpoError> {
    cfg.format
        .output_spans(&c.text)
        .into_iter()
        .map(|r| {
            Ok(tokens_covering(tokenizer, &c.token_ids, r.start)?
                ..tokens_covering(tokenizer, &c.token_ids, r.end)?)
        })
        .collect()
}

fn tensor(values: Vec<f32>, b: usize, l: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [b, l]), device)
}

/// The GRPO trainer: a policy, its optimiser, the frozen reference when the KL term is on, and
/// where the run is ([`GrpoState`]).
pub struct GrpoTrainer<'a> {
    settings: GrpoSettings,
    policy: Model,
    reference: Option<Model>,
    optim: AdamW,
    tokenizer: &'a Tokenizer,
    rewards: &'a WeightedSum,
    /// Where rollouts come from: `None` samples the policy itself.
    engine: Option<&'a dyn Engine>,
    /// A reward at every step end (process supervision), on top of the outcome rewards.
    process: Option<&'a dyn ProcessReward>,
    /// Tool use in rollouts: the sandbox runs the code completions write.
    tools: Option<(Sandbox, ToolConfig)>,
    /// Pushing the policy to the rollout engine, and the version it holds (`None`: not yet).
    sync: Option<WeightSync>,
    synced: Option<u64>,
    /// Draw step t + 1's rollouts while step t trains (one-step off-policy).
    overlap: bool,
    prefetched: Option<Prefetched>,
    state: GrpoState,
    bad_steps: BadSteps,
}

impl<'a> GrpoTrainer<'a> {
    /// `policy` must live on an autodiff device.
    pub fn new(
        settings: GrpoSettings,
        policy: Model,
        tokenizer: &'a Tokenizer,
        rewards: &'a WeightedSum,
    ) -> Result<Self, GrpoError> {
        if settings.group_size < 2 {
            return Err(GrpoError::Settings("group_size must be ≥ 2".into()));
        }
        if settings.mu == 0 || settings.prompts_per_step == 0 {
            return Err(GrpoError::Settings(
                "mu and prompts_per_step must be ≥ 1".into(),
            ));
        }
        if let Some(m) = settings.rollout_batching().invalid() {
            return Err(GrpoError::Settings(format!("rollout_{m}")));
        }
        let policy = match (&settings.lora, policy.lora()) {
            (Some(cfg), None) => policy.add_lora(cfg)?,
            _ => policy,
        };
        policy.check_trains_on_device()?;
        // The reference is only loaded when the KL term is on.
        let reference = (settings.loss.beta > 0.0).then(|| policy.inference_copy());
        Ok(Self {
            optim: AdamW::new(settings.optim.clone()),
            settings,
            policy,
            reference,
            tokenizer,
            rewards,
            engine: None,
            process: None,
            tools: None,
            sync: None,
            synced: None,
            overlap: false,
            prefetched: None,
            state: GrpoState::default(),
            bad_steps: BadSteps::default(),
        })
    }

    /// Sample rollouts from `engine` (an OpenAI-compatible endpoint, say) instead of the local
    /// policy. Completions are re-tokenised with the policy's tokenizer and scored and trained
    /// on as usual; the engine's weights are its own, so the rollouts are on-policy only while
    /// it serves the weights the trainer holds (see the GRPO docs).
    pub fn with_rollout_engine(mut self, engine: &'a dyn Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Keep the rollout engine's weights in step with the policy: before a step's rollouts,
    /// once `sync.every` updates have passed since the last push (and before the first step,
    /// resumed runs included), the policy is written under `sync.dir` and the engine told to
    /// load it ([`Engine::update_weights`]) with the number of updates as its version.
    pub fn with_weight_sync(mut self, sync: WeightSync) -> Self {
        self.sync = (sync.mode != SyncMode::None).then_some(sync);
        self
    }

    /// One-step off-policy overlap: while step t's update runs, the rollout engine draws step
    /// t + 1's rollouts (the first round) with the weights it has, so they are one version
    /// stale (`staleness` 1 with a push every step); the truncated importance weights correct
    /// for it. Only with a rollout engine and no tools; a failed draw ahead is dropped and the
    /// next step samples as usual.
    pub fn with_overlap(mut self) -> Self {
        self.overlap = true;
        self
    }

    /// Tool-integrated rollouts: the code the completions write runs in `sandbox` and its output
    /// goes back into the completion ([`ToolEngine`], around the rollout engine or the policy
    /// itself). The output blocks are left out of the loss: the policy is trained on the tokens
    /// it wrote, not on the interpreter's.
    pub fn with_tools(mut self, sandbox: Sandbox, cfg: ToolConfig) -> Self {
        self.tools = Some((sandbox, cfg));
        self
    }

    /// Add process supervision (DeepSeekMath §4.1.3): `process` scores every reasoning step;
    /// its step rewards are normalised over the whole group and each token's advantage gains
    /// the sum of the normalised rewards of the steps that end at or after it. The outcome
    /// rewards' group advantage is still added (an empty outcome reward set makes it 0).
    pub fn with_process_reward(mut self, process: &'a dyn ProcessReward) -> Self {
        self.process = Some(process);
        self
    }

    pub fn settings(&self) -> &GrpoSettings {
        &self.settings
    }
    pub fn policy(&self) -> &Model {
        &self.policy
    }
    pub fn optim(&self) -> &AdamW {
        &self.optim
    }
    /// The optimiser, to restore its moments from a checkpoint.
    pub fn optim_mut(&mut self) -> &mut AdamW {
        &mut self.optim
    }
    pub fn state(&self) -> GrpoState {
        self.state
    }
    /// Continue a run from `state` (a checkpoint's step and data position).
    pub fn restore_state(&mut self, state: GrpoState) {
        self.state = state;
    }
    /// The trained policy.
    pub fn into_policy(self) -> Model {
        self.policy
    }

    /// Run one GRPO step on tasks drawn from `tasks` (cycled from the data position): rollout
    /// and score (with dynamic-sampling refills), advantages, batch, update, metrics.
    pub fn step(&mut self, tasks: &[Task]) -> Result<(StepMetrics, Vec<Rollout>), GrpoError> {
        let started = Instant::now();
        self.sync_weights()?;
        let actor = self.policy.inference_copy();
        let sampled = self.sample_groups(&actor, tasks)?;
        let rewards: Vec<f64> = sampled
            .groups
            .iter()
            .flat_map(|g| g.totals.iter().copied())
            .collect();
        let advantages =
            outcome_advantages(&rewards, self.settings.group_size, self.settings.scaling);
        // Per-token advantages of every row under process supervision.
        let token_advantages: Option<Vec<Vec<f64>>> = self.process.map(|_| {
            let mut rows = Vec::new();
            for g in &sampled.groups {
                let lengths: Vec<usize> = g.comps.iter().map(|c| c.token_ids.len()).collect();
                let steps = g.steps.as_deref().unwrap_or_default();
                rows.extend(process_advantages(steps, &lengths));
            }
            rows.iter_mut()
                .zip(&advantages)
                .for_each(|(row, a)| row.iter_mut().for_each(|x| *x += a));
            rows
        });
        let batch = self.training_batch(
            &actor,
            &sampled.groups,
            &advantages,
            token_advantages.as_deref(),
        )?;
        // An f32 actor shares the policy's weights: let it go, so that the update writes them
        // in place instead of copying each.
        drop(actor);
        let update = match (self.overlap, self.engine, &self.tools) {
            (true, Some(engine), None) => self.update_drawing_ahead(engine, tasks, &batch)?,
            _ => self.update(&batch)?,
        };
        self.state.step += 1;
        let s = &self.settings;
        if s.ref_reset_every > 0
            && self.state.step.is_multiple_of(s.ref_reset_every)
            && self.reference.is_some()
        {
            // Iterative RL (DeepSeekMath §4.2): the reference becomes the current policy.
            self.reference = Some(self.policy.inference_copy());
        }
        let metrics = self.metrics(&sampled, &rewards, &batch, &update, started);
        let versions: Vec<Option<u64>> = sampled
            .groups
            .iter()
            .flat_map(|g| g.versions.iter().copied())
            .collect();
        let rollouts = sampled
            .groups
            .iter()
            .flat_map(|g| g.comps.iter().zip(&g.totals).map(move |(c, r)| (g, c, *r)))
            .zip(&advantages)
            .enumerate()
            .map(|(i, ((g, c, reward), &advantage))| Rollout {
                step: self.state.step,
                task: g.task.id.clone(),
                completion: c.text.clone(),
                reward,
                advantage,
                token_advantages: token_advantages.as_ref().map(|t| t[i].clone()),
                policy_version: versions[i],
            })
            .collect();
        Ok((metrics, rollouts))
    }

    /// `need` tasks from `position` on (cycling) and their prompts' token ids.
    fn draw(
        &self,
        tasks: &[Task],
        position: usize,
        need: usize,
    ) -> Result<(Vec<Task>, Vec<Vec<u32>>), GrpoError> {
        let batch: Vec<Task> = (0..need)
            .map(|i| tasks[(position + i) % tasks.len()].clone())
            .collect();
        let prompts = batch
            .iter()
            .map(|t| self.tokenizer.encode(&t.prompt, t.add_special_tokens))
            .collect::<Result<_, _>>()?;
        Ok((batch, prompts))
    }

    /// The seed of a step's sampling round (`step`: steps taken before it).
    fn rollout_seed(&self, step: usize, round: usize) -> u64 {
        self.settings
            .seed
            .wrapping_add(step as u64 * 1_000_003)
            .wrapping_add(round as u64 * 7_919)
    }

    /// [`Self::update`] while `engine` draws the next step's first round.
    fn update_drawing_ahead(
        &mut self,
        engine: &'a dyn Engine,
        tasks: &[Task],
        batch: &TrainBatch,
    ) -> Result<Update, GrpoError> {
        let s = self.settings.clone();
        let position = self.state.data_position;
        if tasks.is_empty() {
            return self.update(batch);
        }
        let (next, prompts) = self.draw(tasks, position, s.prompts_per_step)?;
        let seed = self.rollout_seed(self.state.step + 1, 0);
        let tokenizer = self.tokenizer;
        let (update, drawn) = std::thread::scope(|scope| {
            let ahead = scope.spawn(|| {
                let started = Instant::now();
                let r = engine_rollout(engine, tokenizer, &s, &next, seed, true);
                (r, started.elapsed().as_secs_f64())
            });
            let update = self.update(batch);
            (update, ahead.join())
        });
        match drawn {
            Ok((Ok(groups), seconds)) => {
                self.prefetched = Some(Prefetched {
                    position,
                    batch: next,
                    prompts,
                    groups,
                    seconds,
                })
            }
            Ok((Err(e), _)) => {
                tracing::warn!(error = %e, "drawing the next step's rollouts ahead failed; it samples as usual")
            }
            Err(_) => tracing::warn!("the thread drawing rollouts ahead panicked"),
        }
        update
    }

    /// Push the policy to the rollout engine when a push is due (see
    /// [`GrpoTrainer::with_weight_sync`]).
    fn sync_weights(&mut self) -> Result<(), GrpoError> {
        let (Some(sync), Some(engine)) = (&self.sync, self.engine) else {
            return Ok(());
        };
        let step = self.state.step as u64;
        let due = match self.synced {
            None => true,
            Some(v) => step >= v + sync.every.max(1) as u64,
        };
        if !due {
            return Ok(());
        }
        let dir = sync.dir.join(format!("v{step}"));
        let failed = |e: &dyn std::fmt::Display| GrpoError::Sync(format!("{}: {e}", dir.display()));
        let update = match sync.mode {
            SyncMode::Full => {
                self.policy
                    .save(&dir, reasonlab_model::SaveDtype::F32)
                    .map_err(|e| failed(&e))?;
                WeightUpdate::Full { dir: dir.clone() }
            }
            SyncMode::Lora => {
                self.policy.save_adapter(&dir).map_err(|e| failed(&e))?;
                WeightUpdate::Lora {
                    name: format!("{}-v{step}", sync.adapter_name),
                    dir: dir.clone(),
                }
            }
            SyncMode::None => return Ok(()),
        };
        engine
            .update_weights(&update, step)
            .map_err(|e| GrpoError::Rollout(format!("pushing weights version {step}: {e}")))?;
        // Only the newest version stays on disk (a server that rejoins is sent that one).
        if let Ok(entries) = std::fs::read_dir(&sync.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pushed = name
                    .strip_prefix('v')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if pushed && e.path() != dir {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        self.synced = Some(step);
        Ok(())
    }

    /// Rollout and score, refilling groups whose rewards are all equal for up to
    /// `dynamic_sampling_rounds` extra rounds (DAPO §3.2); on the last round every group is
    /// kept.
    fn sample_groups(&mut self, actor: &Model, tasks: &[Task]) -> Result<Sampled, GrpoError> {
        let s = self.settings.clone();
        let mut out = Sampled {
            groups: Vec::new(),
            seen: 0,
            zero_variance: 0,
            gen_tokens: 0,
            gen_seconds: 0.0,
        };
        for round in 0..=s.dynamic_sampling_rounds {
            let need = s.prompts_per_step - out.groups.len();
            if need == 0 || tasks.is_empty() {
                break;
            }
            // The first round may have been drawn ahead, during the last update.
            let ahead = self
                .prefetched
                .take()
                .filter(|p| round == 0 && p.position == self.state.data_position);
            let (batch, prompts, groups) = match ahead {
                Some(p) => {
                    self.state.data_position += p.batch.len();
                    out.gen_seconds += p.seconds;
                    (p.batch, p.prompts, p.groups)
                }
                None => {
                    let (batch, prompts) = self.draw(tasks, self.state.data_position, need)?;
                    self.state.data_position += need;
                    let seed = self.rollout_seed(self.state.step, round);
                    let started = Instant::now();
                    let groups = self.rollout(actor, &batch, &prompts, seed)?;
                    out.gen_seconds += started.elapsed().as_secs_f64();
                    (batch, prompts, groups)
                }
            };
            out.gen_tokens += groups
                .iter()
                .flat_map(|(g, _)| g)
                .map(|c| c.token_ids.len())
                .sum::<usize>();
            let last_round = round == s.dynamic_sampling_rounds;
            for ((task, prompt), (comps, versions)) in batch.into_iter().zip(prompts).zip(groups) {
                let (totals, parts) = self.score(&task, &comps);
                let steps = match self.process {
                    Some(p) => Some(self.process_steps(p, &task, &comps)?),
                    None => None,
                };
                out.seen += 1;
                let varies = totals.iter().any(|r| (r - totals[0]).abs() > 1e-12);
                if !varies {
                    out.zero_variance += 1;
                }
                if varies || s.dynamic_sampling_rounds == 0 || last_round {
                    let masked = match &self.tools {
                        Some((_, cfg)) => comps
                            .iter()
                            .map(|c| tool_token_spans(self.tokenizer, c, cfg))
                            .collect::<Result<_, _>>()?,
                        None => vec![Vec::new(); comps.len()],
                    };
                    out.groups.push(SampledGroup {
                        task,
                        prompt,
                        comps,
                        totals,
                        parts,
                        steps,
                        masked,
                        versions,
                    });
                }
            }
        }
        Ok(out)
    }

    /// `group_size` completions of each prompt, from the policy or the rollout engine, with
    /// the version of the weights that sampled each. A rollout engine is asked for log-probs
    /// (kept on the completions when they come with the engine's token ids) unless tools are
    /// on: a tool engine's completions hold the interpreter's text too.
    fn rollout(
        &self,
        actor: &Model,
        batch: &[Task],
        prompts: &[Vec<u32>],
        seed: u64,
    ) -> Result<Vec<Drawn>, GrpoError> {
        let s = &self.settings;
        let g = s.group_size;
        let eos: Vec<u32> = self.tokenizer.eos_id().into_iter().collect();
        // With tools, rollouts go through a tool engine around the rollout engine, or around
        // the policy as it is now.
        let policy_engine;
        let tool_engine;
        let engine: Option<&dyn Engine> = match (&self.tools, self.engine) {
            (Some((sandbox, cfg)), inner) => {
                let inner: &dyn Engine = match inner {
                    Some(e) => e,
                    None => {
                        policy_engine = LocalEngine::new(
                            actor.clone(),
                            self.tokenizer.clone(),
                            ModelInfo {
                                name: "policy".into(),
                                hash: String::new(),
                                location: String::new(),
                            },
                        )
                        .with_batching(s.rollout_batching())
                        .map_err(|e| GrpoError::Settings(e.to_string()))?;
                        &policy_engine
                    }
                };
                tool_engine = ToolEngine::new(inner, sandbox.clone(), cfg.clone());
                Some(&tool_engine)
            }
            (None, e) => e,
        };
        let Some(engine) = engine else {
            let params = SamplingParams {
                temperature: s.temperature,
                top_p: s.top_p,
                max_new_tokens: s.max_new_tokens,
                stop_token_ids: eos,
                seed,
                max_batch: s.rollout_max_batch,
                prefill_tokens: s.rollout_prefill_tokens,
                ..Default::default()
            };
            let (done, _) = generate(
                actor,
                Some(self.tokenizer),
                prompts,
                g,
                &params,
                &mut |_| {},
            )?;
            let version = Some(self.state.step as u64);
            return Ok(done
                .chunks(g)
                .map(|c| (c.to_vec(), vec![version; g]))
                .collect());
        };
        engine_rollout(engine, self.tokenizer, s, batch, seed, self.tools.is_none())
    }

    /// Every completion's total reward (with the soft overlong penalty when configured) and
    /// per-reward scores.
    fn score(&self, task: &Task, comps: &[Completion]) -> (Vec<f64>, Vec<RewardParts>) {
        let s = &self.settings;
        let samples = samples_of(task, comps);
        let mut totals = Vec::with_capacity(comps.len());
        let mut parts = Vec::with_capacity(comps.len());
        for (c, scored) in comps.iter().zip(self.rewards.score_batch_all(&samples)) {
            let penalty = match s.overlong {
                Overlong::SoftPenalty { cache } => {
                    soft_overlong_penalty(c.token_ids.len(), s.max_new_tokens, cache)
                }
                Overlong::Keep | Overlong::Mask => 0.0,
            };
            totals.push(scored.total + penalty);
            parts.push(scored.scores);
        }
        (totals, parts)
    }

    /// The process reward's step scores of each completion (one batch per group), with each
    /// step end moved from a byte of the text to the completion token that finishes it.
    fn process_steps(
        &self,
        process: &dyn ProcessReward,
        task: &Task,
        comps: &[Completion],
    ) -> Result<Vec<StepRewards>, GrpoError> {
        let samples = samples_of(task, comps);
        comps
            .iter()
            .zip(process.score_steps_batch(&samples))
            .map(|(c, scores)| {
                let ends = token_ends(self.tokenizer, &c.token_ids, &scores)?;
                Ok(StepRewards {
                    ends,
                    rewards: scores.iter().map(|s| s.score).collect(),
                })
            })
            .collect()
    }

    /// Rows (prompt + completion) in micro-batches with their completion masks, advantages and
    /// the old / reference log-probs the loss needs, dealt to the data-parallel workers.
    fn training_batch(
        &self,
        actor: &Model,
        groups: &[SampledGroup],
        advantages: &[f64],
        token_advantages: Option<&[Vec<f64>]>,
    ) -> Result<TrainBatch, GrpoError> {
        let s = &self.settings;
        let mut seqs = Vec::new();
        let mut spans = Vec::new(); // (prompt_len, completion_len, truncated)
        let mut masked: Vec<&[std::ops::Range<usize>]> = Vec::new();
        // The sampler's log-probs of each row's completion tokens, when the engine gave them.
        let mut sampler: Vec<Option<&[f32]>> = Vec::new();
        for group in groups {
            for (c, m) in group.comps.iter().zip(&group.masked) {
                masked.push(m);
                sampler.push(c.logprobs.as_deref());
                let mut seq = group.prompt.clone();
                seq.extend(&c.token_ids);
                let truncated = c.finish_reason == FinishReason::Length;
                spans.push((group.prompt.len(), c.token_ids.len(), truncated));
                seqs.push(seq);
            }
        }
        let pad = self.tokenizer.pad_id();
        let max_len = spans.iter().map(|x| x.1).max().unwrap_or(1);
        let device = self.policy.device().clone();
        // Micro-batches of rows, each padded to its own longest sequence; at least one per
        // data-parallel worker (the loss is normalised by whole-batch totals, so the split does
        // not change the update).
        let rows_total = seqs.len();
        let workers = data_parallel_workers(&device);
        let chunk = match s.micro_batch_size {
            0 => rows_total.max(1),
            m => m,
        }
        .min(rows_total.div_ceil(workers).max(1));
        // Rows sorted by length before splitting, so each micro-batch pads to a length close
        // to its rows' own (`bench grpo`: 11% of the padded tokens were padding unsorted,
        // 6–8% sorted).
        let mut order: Vec<usize> = (0..rows_total).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let groups_of_rows: Vec<&[usize]> = order.chunks(chunk).collect();
        let reference = self.reference.as_ref();
        let build = |rows: &[usize]| -> Result<Micro, GrpoError> {
            let rows_seqs: Vec<Vec<u32>> = rows.iter().map(|&i| seqs[i].clone()).collect();
            let batch = TokenBatch::pad(&rows_seqs, pad, PadSide::Right);
            let (b, l) = (batch.b, batch.t - 1);
            // Completion-token mask and per-token advantages over the (b, t − 1) log-prob grid:
            // completion token k sits at position p + k and is predicted at index p + k − 1.
            let mut mask = vec![0f32; b * l];
            let mut adv = vec![0f32; b * l];
            for (row, &i) in rows.iter().enumerate() {
                let (p, n, truncated) = spans[i];
                if truncated && s.overlong == Overlong::Mask {
                    continue;
                }
                for k in 0..n {
                    if masked[i].iter().any(|r| r.contains(&k)) {
                        continue; // a tool's output: not the policy's tokens
                    }
                    let at = row * l + p + k - 1;
                    mask[at] = 1.0;
                    adv[at] = match token_advantages {
                        Some(t) => t[i][k] as f32,
                        None => advantages[i] as f32,
                    };
                }
            }
            let tokens = mask.iter().filter(|&&m| m > 0.0).count();
            // With the sampler's log-probs: the trainer's own (before the update) against them,
            // and the truncated importance weights folded into the advantages (a positive
            // per-token weight on Â weights the clipped surrogate the same way).
            let mut old_logp = None;
            let mut mismatch = None;
            // The comparison costs a forward pass over the batch; with the correction off it is
            // only made when μ > 1 needs those log-probs anyway.
            let compare = s.rollout_correction != RolloutCorrection::Off || s.mu > 1;
            if compare && rows.iter().any(|&i| sampler[i].is_some()) {
                let old = actor.token_logprobs_where(&batch, &mask)?;
                let host = old
                    .clone()
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
                let (mut diff, mut clipped, mut count) = (0f64, 0usize, 0usize);
                for (row, &i) in rows.iter().enumerate() {
                    let Some(lp) = sampler[i] else { continue };
                    let (p, n, _) = spans[i];
                    for (k, &sampled) in lp.iter().enumerate().take(n) {
                        let at = row * l + p + k - 1;
                        // A log-prob the sampler did not give (null on the wire) is no evidence.
                        if mask[at] == 0.0 || !sampled.is_finite() {
                            continue;
                        }
                        let d = host[at] - sampled;
                        diff += f64::from(d.abs());
                        count += 1;
                        if let RolloutCorrection::TruncatedIs { cap } = s.rollout_correction {
                            let w = d.exp();
                            if w > cap {
                                clipped += 1;
                            }
                            adv[at] *= w.min(cap);
                        }
                    }
                }
                mismatch = Some((diff, clipped, count));
                if s.mu > 1 {
                    old_logp = Some(old.to_device(&device));
                }
            } else if s.mu > 1 {
                old_logp = Some(
                    actor
                        .token_logprobs_where(&batch, &mask)?
                        .to_device(&device),
                );
            }
            let ref_logp = match reference {
                Some(r) => Some(r.token_logprobs_where(&batch, &mask)?.to_device(&device)),
                None => None,
            };
            Ok(Micro {
                mask: tensor(mask.clone(), b, l, &device),
                keep: mask,
                adv: tensor(adv, b, l, &device),
                old_logp,
                ref_logp,
                batch,
                tokens,
                mismatch,
            })
        };
        let mut micro: Vec<Micro> = groups_of_rows
            .par_iter()
            .map(|rows| build(rows))
            .collect::<Result<_, _>>()?;
        let tokens = micro.iter().map(|m| m.tokens).sum();
        let mismatch = micro
            .iter()
            .filter_map(|m| m.mismatch)
            .reduce(|a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        // Worker w takes micro-batches w, w + workers, …; with lengths ascending, deal them in
        // a snake order (0 1 | 3 2 | 4 5 …) so that each worker gets a similar token count.
        let workers = workers.min(micro.len()).max(1);
        let mut dealt = Vec::with_capacity(micro.len());
        let mut round = 0;
        while !micro.is_empty() {
            let mut hand: Vec<Micro> = micro.drain(..workers.min(micro.len())).collect();
            if round % 2 == 1 {
                hand.reverse();
            }
            dealt.extend(hand);
            round += 1;
        }
        Ok(TrainBatch {
            micro: dealt,
            rows: rows_total,
            tokens,
            max_len,
            seq_tokens: seqs.iter().map(Vec::len).sum(),
            completions: spans.iter().map(|&(_, n, t)| (n, t)).collect(),
            mismatch,
        })
    }

    /// `mu` optimiser steps on the clipped surrogate (with the KL term when β > 0), through
    /// the data-parallel backward pass shared with SFT. A non-finite loss skips the update and
    /// counts towards `max_bad_steps`, after which the run stops ([`GrpoError::Diverged`]).
    fn update(&mut self, batch: &TrainBatch) -> Result<Update, GrpoError> {
        let s = self.settings.clone();
        let lr = s.optim.lr_at(self.state.step, s.steps);
        let started = Instant::now();
        let totals = Some((batch.rows, batch.tokens));
        let per_token = 1.0 / batch.tokens.max(1) as f32;
        let mut out = Update::default();
        for inner in 0..s.mu {
            let g =
                parallel_gradients(&self.policy, &batch.micro, &|policy: &Model, m: &Micro| {
                    // The entropy is measured once, before the first update.
                    let (logp, entropy) = if inner == 0 {
                        let (logp, ent) = policy.token_logprobs_with_entropy(&m.batch, &m.keep)?;
                        let e = (ent * m.mask.clone())
                            .sum()
                            .try_into_scalar::<f32>()
                            .unwrap_or(f32::NAN);
                        (logp, e * per_token)
                    } else {
                        (policy.token_logprobs_where(&m.batch, &m.keep)?, 0.0)
                    };
                    let old = match &m.old_logp {
                        Some(o) => o.clone(),
                        None => logp.clone().detach(),
                    };
                    let (loss, st) = grpo_loss(
                        &s.loss,
                        LossInputs {
                            logp,
                            old_logp: old,
                            ref_logp: m.ref_logp.clone(),
                            advantages: m.adv.clone(),
                            mask: m.mask.clone(),
                            max_len: batch.max_len,
                            totals,
                        },
                    );
                    // Token-weighted statistics over the micro-batches.
                    let wt = m.tokens as f32 * per_token;
                    let stats = LossStats {
                        clip_low: st.clip_low * wt,
                        clip_high: st.clip_high * wt,
                        kl: st.kl * wt,
                        ratio_mean: st.ratio_mean * wt,
                    };
                    Ok::<_, GrpoError>(Some((loss, MicroStats { stats, entropy })))
                })?;
            let mut stats = LossStats::default();
            for m in &g.extras {
                out.entropy += m.entropy;
                stats.clip_low += m.stats.clip_low;
                stats.clip_high += m.stats.clip_high;
                stats.kl += m.stats.kl;
                stats.ratio_mean += m.stats.ratio_mean;
            }
            // NaN/Inf guard: skip the update, count it, stop after too many in a row.
            let finite = g.value.is_finite();
            self.bad_steps
                .record(finite, self.state.step, s.max_bad_steps)
                .map_err(GrpoError::Diverged)?;
            if !finite {
                out.skipped = true;
                break;
            }
            apply_gradients(&mut self.policy, &mut self.optim, lr, g.grads);
            out.loss = g.value;
            out.stats = stats;
        }
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// The step's line of `metrics.jsonl`.
    fn metrics(
        &self,
        sampled: &Sampled,
        rewards: &[f64],
        batch: &TrainBatch,
        update: &Update,
        started: Instant,
    ) -> StepMetrics {
        let s = &self.settings;
        let n = rewards.len().max(1) as f64;
        let mean = rewards.iter().sum::<f64>() / n;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        let per_reward: Vec<(String, f64)> = self
            .rewards
            .names()
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let vals: Vec<f64> = sampled
                    .groups
                    .iter()
                    .flat_map(|g| g.parts.iter().filter_map(move |p| p[i].1))
                    .collect();
                (name, vals.iter().sum::<f64>() / vals.len().max(1) as f64)
            })
            .collect();
        let accuracy = self
            .rewards
            .position(RewardKind::Accuracy)
            .and_then(|i| per_reward.get(i).map(|r| r.1))
            .unwrap_or(f64::NAN);
        let lens: Vec<usize> = batch.completions.iter().map(|x| x.0).collect();
        let rows = batch.completions.len().max(1) as f64;
        let versions: Vec<u64> = sampled
            .groups
            .iter()
            .flat_map(|g| g.versions.iter().flatten().copied())
            .collect();
        StepMetrics {
            step: self.state.step,
            lr: s.optim.lr_at(self.state.step - 1, s.steps),
            loss: update.loss,
            reward_mean: mean,
            reward_std: std,
            rewards: per_reward,
            accuracy,
            zero_variance_groups: sampled.zero_variance as f64 / sampled.seen.max(1) as f64,
            clip_low: update.stats.clip_low,
            clip_high: update.stats.clip_high,
            kl: update.stats.kl,
            ratio_mean: update.stats.ratio_mean,
            entropy: update.entropy,
            completion_len_mean: lens.iter().sum::<usize>() as f64 / rows,
            completion_len_min: lens.iter().copied().min().unwrap_or(0),
            completion_len_max: lens.iter().copied().max().unwrap_or(0),
            truncated: batch.completions.iter().filter(|x| x.1).count() as f64 / rows,
            gen_tokens_per_s: sampled.gen_tokens as f64 / sampled.gen_seconds.max(1e-9),
            train_tokens_per_s: (batch.seq_tokens * s.mu) as f64 / update.seconds.max(1e-9),
            step_seconds: started.elapsed().as_secs_f64(),
            skipped: update.skipped,
            policy_version: versions.iter().copied().min(),
            staleness: (!versions.is_empty()).then(|| {
                let trained = (self.state.step - 1) as f64;
                versions.iter().map(|&v| trained - v as f64).sum::<f64>() / versions.len() as f64
            }),
            sampler_logprob_diff: batch.mismatch.map(|(d, _, n)| d / n.max(1) as f64),
            is_clipped: batch.mismatch.map(|(_, c, n)| c as f64 / n.max(1) as f64),
            tool_calls: self.tools.as_ref().map(|(_, cfg)| {
                let comps = sampled.groups.iter().flat_map(|g| &g.comps);
                let calls: usize = comps
                    .clone()
                    .map(|c| cfg.format.count_outputs(&c.text))
                    .sum();
                calls as f64 / comps.count().max(1) as f64
            }),
        }
    }
}

/// `group_size` completions of each task from `engine`, with the version that drew each. With
/// `logprobs`, the engine is asked for them (kept when they come with its token ids).
fn engine_rollout(
    engine: &dyn Engine,
    tokenizer: &Tokenizer,
    s: &GrpoSettings,
    batch: &[Task],
    seed: u64,
    logprobs: bool,
) -> Result<Vec<Drawn>, GrpoError> {
    let g = s.group_size;
    let eos: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    let requests: Vec<Request> = batch
        .iter()
        .enumerate()
        .map(|(k, t)| Request {
            prompt: Prompt::Text(t.prompt.clone()),
            n: g,
            sampling: Sampling {
                temperature: s.temperature,
                top_p: s.top_p,
                max_new_tokens: s.max_new_tokens,
                seed: seed.wrapping_add((k * g) as u64),
                ..Sampling::default()
            },
            logprobs,
        })
        .collect();
    let mut groups = Vec::with_capacity(batch.len());
    for (k, out) in engine.generate(&requests).into_iter().enumerate() {
        let out = out.map_err(|e| GrpoError::Rollout(e.to_string()))?;
        if out.samples.len() != g {
            return Err(GrpoError::Rollout(format!(
                "the engine returned {} samples for a group of {g}",
                out.samples.len()
            )));
        }
        let mut comps = Vec::with_capacity(g);
        let mut versions = Vec::with_capacity(g);
        for (j, sample) in out.samples.into_iter().enumerate() {
            versions.push(sample.policy_version);
            // The engine's own token ids (and log-probs aligned with them) when it gives
            // them; otherwise the text re-tokenised, with no log-probs.
            let (token_ids, logprobs) = match sample.token_ids {
                Some(ids) if ids.len() <= s.max_new_tokens => {
                    let lp = sample
                        .logprobs
                        .filter(|lp| lp.len() == ids.len())
                        .map(|lp| lp.iter().map(|t| t.logprob).collect());
                    (ids, lp)
                }
                _ => {
                    let mut ids = tokenizer.encode(&sample.text, false)?;
                    ids.truncate(s.max_new_tokens);
                    if sample.finish_reason == FinishReason::Stop && ids.len() < s.max_new_tokens {
                        ids.extend(eos.first());
                    }
                    (ids, None)
                }
            };
            comps.push(Completion {
                prompt_index: k,
                sample_index: j,
                token_ids,
                text: sample.text,
                finish_reason: sample.finish_reason,
                logprobs,
            });
        }
        groups.push((comps, versions));
    }
    Ok(groups)
}

/// The reward inputs of a group's completions.
fn samples_of<'a>(task: &'a Task, comps: &'a [Completion]) -> Vec<Sample<'a>> {
    comps
        .iter()
        .map(|c| Sample {
            completion: &c.text,
            gold: task.gold.as_deref(),
            problem: Some(task.problem.as_deref().unwrap_or(&task.prompt)),
            prompt: Some(&task.prompt),
            extra: Some(&task.extra),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reasonlab_sandbox::tools::ToolFormat;

    #[test]
    fn tool_outputs_are_the_masked_tokens() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2");
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let text = "Compute.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\nSo 42.";
        let c = Completion {
            prompt_index: 0,
            sample_index: 0,
            token_ids: tok.encode(text, false).unwrap(),
            text: text.into(),
            finish_reason: FinishReason::Stop,
            logprobs: None,
        };
        let spans = tool_token_spans(&tok, &c, &ToolConfig::new(ToolFormat::Tora)).unwrap();
        assert_eq!(spans.len(), 1);
        let masked = tok.decode(&c.token_ids[spans[0].clone()], true).unwrap();
        assert_eq!(masked, "```output\n42\n```\n");
        let kept: Vec<u32> = (0..c.token_ids.len())
            .filter(|k| !spans[0].contains(k))
            .map(|k| c.token_ids[k])
            .collect();
        assert!(tok.decode(&kept, true).unwrap().starts_with("Compute."));
    }
}
