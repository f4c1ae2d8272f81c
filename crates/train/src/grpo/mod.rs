//! Group Relative Policy Optimisation (Shao et al. 2024, DeepSeekMath §4.1) and its variants.
//!
//! One step: take `prompts_per_step` problems, sample `group_size` completions for each with the
//! current policy, score them with the configured rewards, turn rewards into group-relative
//! advantages ([`advantage`]), then take `mu` optimiser steps on the clipped surrogate with an
//! optional k3 KL penalty to a frozen reference ([`loss`]). Presets pin the published recipes.

pub mod advantage;
pub mod loss;

use std::time::Instant;

use reasonlab_generate::{SamplingParams, generate};
use reasonlab_model::tensor::{Device, Tensor, TensorData};
use reasonlab_model::{Model, ModelError, PadSide, TokenBatch};
use reasonlab_reward::{Sample, WeightedSum};
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

pub use advantage::{Scaling, StepRewards, outcome_advantages, process_advantages};
pub use loss::{LossAgg, LossInputs, LossSettings, LossStats, RatioLevel, grpo_loss};

use crate::optim::{AdamW, AdamWSettings};
use rayon::prelude::*;
use reasonlab_model::burn::optim::{GradientsAccumulator, GradientsParams};

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

/// Everything one GRPO run needs, as read from `grpo.toml`.
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
}

impl Default for GrpoSettings {
    fn default() -> Self {
        Self::preset(Preset::Deepseekmath)
    }
}

impl GrpoSettings {
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
}

fn yes() -> bool {
    true
}

/// One step's numbers (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepMetrics {
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
}

/// A sampled completion, for `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    pub step: usize,
    pub task: String,
    pub completion: String,
    pub reward: f64,
    pub advantage: f64,
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
}

/// One prompt's rollouts: completions, total rewards and per-reward scores.
struct SampledGroup {
    task: Task,
    prompt: Vec<u32>,
    comps: Vec<reasonlab_generate::Completion>,
    totals: Vec<f64>,
    parts: Vec<Vec<(String, Option<f64>)>>,
}

/// The GRPO trainer's state.
pub struct GrpoTrainer<'a> {
    pub settings: GrpoSettings,
    pub policy: Model,
    reference: Option<Model>,
    pub optim: AdamW,
    tokenizer: &'a Tokenizer,
    rewards: &'a WeightedSum,
    /// Index of the reward named `accuracy` in the weighted sum, for the accuracy metric.
    accuracy_index: Option<usize>,
    pub step: usize,
    /// Position in the task stream.
    pub data_position: usize,
    bad_steps: usize,
}

/// One micro-batch of a GRPO update: (b, l) completion mask and advantages, the old and
/// reference log-probs when needed, and its rows.
struct Micro {
    mask: Tensor<2>,
    adv: Tensor<2>,
    old_logp: Option<Tensor<2>>,
    ref_logp: Option<Tensor<2>>,
    batch: TokenBatch,
    /// Completion tokens in the loss.
    tokens: usize,
}

/// What one data-parallel worker brings back from an inner update.
struct WorkerOut {
    accum: GradientsAccumulator<reasonlab_model::CausalLm>,
    any: bool,
    value: f32,
    stats: LossStats,
    entropy: f32,
}

fn tensor(values: Vec<f32>, b: usize, l: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [b, l]), device)
}

impl<'a> GrpoTrainer<'a> {
    /// `policy` must live on an autodiff device.
    pub fn new(
        settings: GrpoSettings,
        policy: Model,
        tokenizer: &'a Tokenizer,
        rewards: &'a WeightedSum,
        reward_names: &[String],
    ) -> Result<Self, GrpoError> {
        if settings.group_size < 2 {
            return Err(GrpoError::Settings("group_size must be ≥ 2".into()));
        }
        if settings.mu == 0 || settings.prompts_per_step == 0 {
            return Err(GrpoError::Settings(
                "mu and prompts_per_step must be ≥ 1".into(),
            ));
        }
        let policy = match (&settings.lora, policy.lora()) {
            (Some(cfg), None) => policy.add_lora(cfg)?,
            _ => policy,
        };
        // The reference is only loaded when the KL term is on.
        let reference = (settings.loss.beta > 0.0).then(|| policy.inference_copy());
        Ok(Self {
            optim: AdamW::new(settings.optim.clone()),
            settings,
            policy,
            reference,
            tokenizer,
            rewards,
            accuracy_index: reward_names.iter().position(|n| n == "accuracy"),
            step: 0,
            data_position: 0,
            bad_steps: 0,
        })
    }

    /// Run one GRPO step on tasks drawn from `tasks` (cycled from `data_position`).
    pub fn step(&mut self, tasks: &[Task]) -> Result<(StepMetrics, Vec<Rollout>), GrpoError> {
        let s = self.settings.clone();
        let started = Instant::now();
        let g = s.group_size;
        let eos: Vec<u32> = self.tokenizer.eos_id().into_iter().collect();
        let sampling = SamplingParams {
            temperature: s.temperature,
            top_p: s.top_p,
            max_new_tokens: s.max_new_tokens,
            stop_token_ids: eos,
            seed: s.seed.wrapping_add(self.step as u64 * 1_000_003),
            max_batch: 256,
            ..Default::default()
        };
        let actor = self.policy.inference_copy();
        // Rollouts, with dynamic sampling refills.
        let mut groups: Vec<SampledGroup> = Vec::new();
        let mut zero_var = 0usize;
        let mut seen_groups = 0usize;
        let mut gen_tokens = 0usize;
        let mut gen_seconds = 0.0;
        for round in 0..=s.dynamic_sampling_rounds {
            let need = s.prompts_per_step - groups.len();
            if need == 0 || tasks.is_empty() {
                break;
            }
            let batch: Vec<Task> = (0..need)
                .map(|i| tasks[(self.data_position + i) % tasks.len()].clone())
                .collect();
            self.data_position += need;
            let prompts: Vec<Vec<u32>> = batch
                .iter()
                .map(|t| self.tokenizer.encode(&t.prompt, t.add_special_tokens))
                .collect::<Result<_, _>>()?;
            let params = SamplingParams {
                seed: sampling.seed.wrapping_add(round as u64 * 7_919),
                ..sampling.clone()
            };
            let (done, stats) = generate(
                &actor,
                Some(self.tokenizer),
                &prompts,
                g,
                &params,
                &mut |_| {},
            )?;
            gen_tokens += stats.new_tokens;
            gen_seconds += stats.seconds;
            for (k, task) in batch.into_iter().enumerate() {
                let comps: Vec<_> = done[k * g..(k + 1) * g].to_vec();
                let mut totals = Vec::with_capacity(g);
                let mut parts = Vec::with_capacity(g);
                for c in &comps {
                    let scored = self.rewards.score_all(&Sample {
                        completion: &c.text,
                        gold: task.gold.as_deref(),
                        problem: Some(&task.prompt),
                    });
                    let mut total = scored.total;
                    if let Overlong::SoftPenalty { cache } = s.overlong {
                        let len = c.token_ids.len();
                        let start = s.max_new_tokens.saturating_sub(cache);
                        if len > start && cache > 0 {
                            total -= ((len - start) as f64 / cache as f64).min(1.0);
                        }
                    }
                    totals.push(total);
                    parts.push(scored.scores);
                }
                seen_groups += 1;
                let varies = totals.iter().any(|r| (r - totals[0]).abs() > 1e-12);
                if !varies {
                    zero_var += 1;
                }
                let last_round = round == s.dynamic_sampling_rounds;
                if varies || s.dynamic_sampling_rounds == 0 || last_round {
                    groups.push(SampledGroup {
                        task,
                        prompt: prompts[k].clone(),
                        comps,
                        totals,
                        parts,
                    });
                }
            }
        }
        // Advantages and the training batch.
        let rewards: Vec<f64> = groups
            .iter()
            .flat_map(|g| g.totals.iter().copied())
            .collect();
        let advantages = outcome_advantages(&rewards, g, s.scaling);
        let mut seqs = Vec::new();
        let mut spans = Vec::new(); // (prompt_len, completion_len, truncated)
        let mut rollouts = Vec::new();
        for (
            gi,
            SampledGroup {
                task,
                prompt,
                comps,
                totals,
                ..
            },
        ) in groups.iter().enumerate()
        {
            for (j, c) in comps.iter().enumerate() {
                let mut seq = prompt.clone();
                seq.extend(&c.token_ids);
                let truncated = c.finish_reason == reasonlab_generate::FinishReason::Length;
                spans.push((prompt.len(), c.token_ids.len(), truncated));
                seqs.push(seq);
                rollouts.push(Rollout {
                    step: self.step,
                    task: task.id.clone(),
                    completion: c.text.clone(),
                    reward: totals[j],
                    advantage: advantages[gi * g + j],
                });
            }
        }
        let pad = self.tokenizer.pad_id();
        let max_len = spans.iter().map(|x| x.1).max().unwrap_or(1);
        let device = self.policy.device().clone();
        // Micro-batches of rows, each padded to its own longest sequence; at least one per
        // data-parallel worker (the loss is normalised by whole-batch totals, so the split does
        // not change the update).
        let rows_total = seqs.len();
        let workers = crate::lm::data_parallel_threads();
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
                    let at = row * l + p + k - 1;
                    mask[at] = 1.0;
                    adv[at] = advantages[i] as f32;
                }
            }
            let tokens = mask.iter().filter(|&&m| m > 0.0).count();
            let old_logp = if s.mu > 1 {
                Some(actor.token_logprobs(&batch)?.to_device(&device))
            } else {
                None
            };
            let ref_logp = match reference {
                Some(r) => Some(r.token_logprobs(&batch)?.to_device(&device)),
                None => None,
            };
            Ok(Micro {
                mask: tensor(mask, b, l, &device),
                adv: tensor(adv, b, l, &device),
                old_logp,
                ref_logp,
                batch,
                tokens,
            })
        };
        let mut micro: Vec<Micro> = groups_of_rows
            .par_iter()
            .map(|rows| build(rows))
            .collect::<Result<_, _>>()?;
        let tokens_total: usize = micro.iter().map(|m| m.tokens).sum();
        let totals = Some((rows_total, tokens_total));
        let lr = s.optim.lr_at(self.step, s.steps);
        let train_start = Instant::now();
        let mut last = (0.0f32, LossStats::default());
        let mut skipped = false;
        let mut entropy = 0f32;
        let workers = workers.min(micro.len()).max(1);
        // Worker w takes micro-batches w, w + workers, …; with lengths ascending, deal them in
        // a snake order (0 1 | 3 2 | 4 5 …) so that each worker gets a similar token count.
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
        let micro = dealt;
        for inner in 0..s.mu {
            // Worker w takes micro-batches w, w + workers, … with its own fork of the policy.
            let run = |w: usize, policy: &Model| -> Result<WorkerOut, GrpoError> {
                let mut out = WorkerOut {
                    accum: GradientsAccumulator::new(),
                    any: false,
                    value: 0.0,
                    stats: LossStats::default(),
                    entropy: 0.0,
                };
                for m in micro.iter().skip(w).step_by(workers) {
                    let logp = if inner == 0 {
                        let (logp, ent) = policy.token_logprobs_with_entropy(&m.batch)?;
                        out.entropy += (ent * m.mask.clone())
                            .sum()
                            .try_into_scalar::<f32>()
                            .unwrap_or(f32::NAN)
                            / tokens_total.max(1) as f32;
                        logp
                    } else {
                        policy.token_logprobs(&m.batch)?
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
                            max_len,
                            totals,
                        },
                    );
                    let v = loss
                        .clone()
                        .try_into_scalar::<f32>()
                        .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
                    out.value += v;
                    // Token-weighted statistics over the micro-batches.
                    let wt = m.tokens as f32 / tokens_total.max(1) as f32;
                    out.stats.clip_low += st.clip_low * wt;
                    out.stats.clip_high += st.clip_high * wt;
                    out.stats.kl += st.kl * wt;
                    out.stats.ratio_mean += st.ratio_mean * wt;
                    if v.is_finite() {
                        let grads = loss.backward();
                        out.accum.accumulate(
                            &policy.net,
                            GradientsParams::from_grads(grads, &policy.net),
                        );
                        out.any = true;
                    }
                }
                Ok(out)
            };
            let forks: Vec<Model> = (1..workers).map(|_| self.policy.fork()).collect();
            let policies: Vec<&Model> = std::iter::once(&self.policy).chain(forks.iter()).collect();
            let outs: Vec<WorkerOut> = policies
                .par_iter()
                .enumerate()
                .map(|(w, p)| run(w, p))
                .collect::<Result<_, _>>()?;
            let mut accum = GradientsAccumulator::new();
            let mut value = 0f32;
            let mut stats = LossStats::default();
            for mut o in outs {
                value += o.value;
                entropy += o.entropy;
                stats.clip_low += o.stats.clip_low;
                stats.clip_high += o.stats.clip_high;
                stats.kl += o.stats.kl;
                stats.ratio_mean += o.stats.ratio_mean;
                if o.any {
                    accum.accumulate(&self.policy.net, o.accum.grads());
                }
            }
            if !value.is_finite() {
                // NaN/Inf guard: skip the update, count it, stop after too many in a row.
                tracing::warn!(step = self.step, "non-finite loss; step skipped");
                self.bad_steps += 1;
                skipped = true;
                if self.bad_steps >= s.max_bad_steps {
                    return Err(GrpoError::Diverged(self.bad_steps));
                }
                break;
            }
            self.bad_steps = 0;
            let net = self.policy.net.clone();
            self.policy.net = self.optim.step_params(lr, net, accum.grads());
            last = (value, stats);
        }
        let train_seconds = train_start.elapsed().as_secs_f64();
        self.step += 1;
        if s.ref_reset_every > 0
            && self.step.is_multiple_of(s.ref_reset_every)
            && self.reference.is_some()
        {
            self.reference = Some(self.policy.inference_copy());
        }
        // Metrics.
        let n = rewards.len().max(1) as f64;
        let mean = rewards.iter().sum::<f64>() / n;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        let names: Vec<String> = groups
            .first()
            .map(|g| g.parts[0].iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        let per_reward: Vec<(String, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let vals: Vec<f64> = groups
                    .iter()
                    .flat_map(|g| g.parts.iter().filter_map(move |p| p[i].1))
                    .collect();
                (
                    name.clone(),
                    vals.iter().sum::<f64>() / vals.len().max(1) as f64,
                )
            })
            .collect();
        let accuracy = self
            .accuracy_index
            .and_then(|i| per_reward.get(i).map(|r| r.1))
            .unwrap_or(f64::NAN);
        let lens: Vec<usize> = spans.iter().map(|x| x.1).collect();
        let train_tokens: usize = seqs.iter().map(Vec::len).sum::<usize>() * s.mu;
        let metrics = StepMetrics {
            step: self.step,
            lr,
            loss: last.0,
            reward_mean: mean,
            reward_std: std,
            rewards: per_reward,
            accuracy,
            zero_variance_groups: zero_var as f64 / seen_groups.max(1) as f64,
            clip_low: last.1.clip_low,
            clip_high: last.1.clip_high,
            kl: last.1.kl,
            ratio_mean: last.1.ratio_mean,
            entropy,
            completion_len_mean: lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64,
            completion_len_min: lens.iter().copied().min().unwrap_or(0),
            completion_len_max: lens.iter().copied().max().unwrap_or(0),
            truncated: spans.iter().filter(|x| x.2).count() as f64 / spans.len().max(1) as f64,
            gen_tokens_per_s: gen_tokens as f64 / gen_seconds.max(1e-9),
            train_tokens_per_s: train_tokens as f64 / train_seconds.max(1e-9),
            step_seconds: started.elapsed().as_secs_f64(),
            skipped,
        };
        Ok((metrics, rollouts))
    }
}
