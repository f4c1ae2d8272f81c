//! Reward-model training: an outcome RM pointwise (binary cross-entropy on verifier labels) or
//! pairwise (Bradley–Terry on preference pairs, TRL's `RewardTrainer` loss), and a process RM
//! with a per-step binary cross-entropy on hard or soft labels (TRL's `PRMTrainer` loss: the
//! two-class cross-entropy at each step's last token, mean over the labelled steps of a step).
//!
//! Every head gives one reward logit per position ([`RewardHead::reward_logits`]); the losses
//! read it at each sequence's last token (outcome) or at step ends (process):
//!
//! - pairwise: `mean(−log σ(r_c − r_r − margin)) + c · mean((r_c + r_r)²)` over the pairs of an
//!   optimiser step (`c` = `center_rewards_coefficient`, off by default);
//! - pointwise and process: `mean(−y log σ(x) − (1 − y) log σ(−x))` over the step's labelled
//!   sequences or steps, `y` ∈ [0, 1] (soft labels are Math-Shepherd's soft estimates).
//!
//! Shapes: a piece of an optimiser step is one (b, t) right-padded [`TokenBatch`] (for pairs,
//! the `n` chosen rows then the `n` rejected rows) and a flat list of `row · t + column` read
//! positions into its (b, t) reward logits.

pub mod data;
pub mod rewards;

use std::time::Instant;

use reasonlab_core::rng::SplitMix64;
use reasonlab_model::burn::tensor::activation::log_sigmoid;
use reasonlab_model::reward::last_tokens;
use reasonlab_model::tensor::{Int, Tensor, TensorData};
use reasonlab_model::{LoraConfig, Model, ModelError, PadSide, RewardHead, TokenBatch};
use serde::{Deserialize, Serialize};

pub use data::{RmEncodeSettings, encode_record, encode_steps};

use crate::lm::{BadSteps, apply_gradients, data_parallel_workers, eval_due, parallel_gradients};
use crate::optim::{AdamW, AdamWSettings};

#[derive(Debug, thiserror::Error)]
pub enum RmError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0} consecutive steps had a non-finite loss; stopping")]
    Diverged(usize),
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// What the reward model learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Outcome RM, binary cross-entropy on one label per completion (TRL's unpaired format:
    /// `prompt`, `completion`, `label`).
    Pointwise,
    /// Outcome RM, Bradley–Terry on pairs (TRL's preference format: `chosen`, `rejected`).
    #[default]
    Pairwise,
    /// Process RM, binary cross-entropy per step (TRL's stepwise format: `prompt`,
    /// `completions`, `labels`).
    Process,
}

impl Objective {
    /// The head this objective trains by default.
    pub fn default_head(self) -> RewardHead {
        match self {
            Objective::Pointwise | Objective::Pairwise => RewardHead::Sequence,
            Objective::Process => RewardHead::Token,
        }
    }
}

/// Everything a reward-model run needs (the `[rm]` table of `rm.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmSettings {
    pub objective: Objective,
    pub epochs: usize,
    /// Stop after this many optimiser steps (0: run every epoch).
    pub max_steps: usize,
    /// Examples (pairs, completions or step lists) per optimiser step.
    pub batch_size: usize,
    /// TRL's `center_rewards_coefficient` (pairwise only): pulls rewards towards zero mean.
    pub center_rewards_coefficient: Option<f64>,
    pub encode: RmEncodeSettings,
    pub optim: AdamWSettings,
    /// Held-out metrics every N steps (0: only at the end).
    pub eval_every: usize,
    pub max_bad_steps: usize,
    pub seed: u64,
    /// Train LoRA adapters (and the whole head) instead of every weight.
    pub lora: Option<LoraConfig>,
}

impl Default for RmSettings {
    fn default() -> Self {
        Self {
            objective: Objective::Pairwise,
            epochs: 1,
            max_steps: 0,
            batch_size: 8,
            center_rewards_coefficient: None,
            encode: RmEncodeSettings::default(),
            optim: AdamWSettings {
                lr: 1e-5,
                warmup_steps: 0,
                schedule: crate::optim::Schedule::Cosine,
                ..Default::default()
            },
            eval_every: 0,
            max_bad_steps: 5,
            seed: 0,
            lora: None,
        }
    }
}

/// A tokenised training example.
#[derive(Debug, Clone, PartialEq)]
pub enum RmExample {
    /// A completion and its label in [0, 1].
    Labelled { ids: Vec<u32>, label: f32 },
    /// A preference pair; `margin` is TRL's optional per-pair margin.
    Pair {
        chosen: Vec<u32>,
        rejected: Vec<u32>,
        margin: f32,
    },
    /// A solution with a label in [0, 1] at the last token of each step (`ends`: indices into
    /// `ids`, increasing).
    Steps {
        ids: Vec<u32>,
        ends: Vec<usize>,
        labels: Vec<f32>,
    },
}

impl RmExample {
    fn tokens(&self) -> usize {
        match self {
            RmExample::Labelled { ids, .. } | RmExample::Steps { ids, .. } => ids.len(),
            RmExample::Pair {
                chosen, rejected, ..
            } => chosen.len() + rejected.len(),
        }
    }

    /// Labelled items (1 per completion or pair, one per labelled step).
    fn items(&self) -> usize {
        match self {
            RmExample::Steps { labels, .. } => labels.len(),
            _ => 1,
        }
    }
}

/// Where the trainer is in its data (saved in checkpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmState {
    pub step: usize,
    pub epoch: usize,
    /// Index of the next batch within the epoch's plan.
    pub batch: usize,
}

/// Held-out (or training-batch) quality: for pairs, accuracy is the fraction ranked right and
/// AUC treats chosen rewards as positives and rejected ones as negatives; otherwise both
/// compare the score with the label (≥ 0.5 is positive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RmQuality {
    pub loss: f64,
    pub accuracy: f64,
    pub auc: f64,
    /// Mean reward logit over everything scored.
    pub mean_reward: f64,
}

/// One step's numbers (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RmMetrics {
    pub step: usize,
    /// Fractional epoch reached.
    pub epoch: f64,
    pub lr: f64,
    pub loss: f32,
    /// Accuracy on the step's own batch (before the update).
    pub accuracy: f64,
    pub mean_reward: f64,
    /// Non-pad tokens per second.
    pub tokens_per_s: f64,
    pub step_seconds: f64,
    /// Held-out numbers ([`RmQuality`]) on the steps they were measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_auc: Option<f64>,
    pub skipped: bool,
}

/// One piece of a step: a padded batch, the positions its loss reads, and their targets
/// (labels, or margins for pairs).
struct Piece {
    batch: TokenBatch,
    read: Vec<usize>,
    targets: Vec<f32>,
    pairs: bool,
}

impl Piece {
    fn new(examples: &[&RmExample], pad_id: u32) -> Self {
        let mut seqs: Vec<Vec<u32>> = Vec::new();
        let mut targets = Vec::new();
        let pairs = matches!(examples.first(), Some(RmExample::Pair { .. }));
        if pairs {
            for e in examples {
                if let RmExample::Pair { chosen, margin, .. } = e {
                    seqs.push(chosen.clone());
                    targets.push(*margin);
                }
            }
            for e in examples {
                if let RmExample::Pair { rejected, .. } = e {
                    seqs.push(rejected.clone());
                }
            }
        } else {
            for e in examples {
                match e {
                    RmExample::Labelled { ids, label } => {
                        seqs.push(ids.clone());
                        targets.push(*label);
                    }
                    RmExample::Steps { ids, labels, .. } => {
                        seqs.push(ids.clone());
                        targets.extend(labels);
                    }
                    RmExample::Pair { .. } => {}
                }
            }
        }
        let batch = TokenBatch::pad(&seqs, pad_id, PadSide::Right);
        let t = batch.t;
        let read = match examples.first() {
            Some(RmExample::Steps { .. }) => examples
                .iter()
                .enumerate()
                .flat_map(|(row, e)| match e {
                    RmExample::Steps { ends, .. } => ends.iter().map(|&c| row * t + c).collect(),
                    _ => Vec::new(),
                })
                .collect(),
            _ => last_tokens(&batch).unwrap_or_default(),
        };
        Self {
            batch,
            read,
            targets,
            pairs,
        }
    }

    /// The summed loss of the piece (divide by the step's item count for the mean) and the
    /// reward logits it read (host copies).
    fn loss(
        &self,
        head: RewardHead,
        model: &Model,
        center: Option<f64>,
    ) -> Result<(Tensor<1>, Vec<f32>), ModelError> {
        let (b, t) = (self.batch.b, self.batch.t);
        let device = model.device();
        let logits = head.reward_logits(model, &self.batch)?.reshape([b * t]);
        let idx: Vec<i64> = self.read.iter().map(|&i| i as i64).collect();
        let n = idx.len();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device);
        let x = logits.select(0, idx); // (n)
        let read = x
            .clone()
            .detach()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        let targets =
            |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
        let loss = if self.pairs {
            let k = n / 2;
            let (c, r) = (x.clone().narrow(0, 0, k), x.narrow(0, k, k));
            let mut l = log_sigmoid(c.clone() - r.clone() - targets(&self.targets))
                .sum()
                .neg();
            if let Some(coef) = center {
                l = l + (c + r).powi_scalar(2).sum().mul_scalar(coef);
            }
            l
        } else {
            let y = targets(&self.targets);
            let one_minus = y.clone().neg().add_scalar(1.0);
            (y * log_sigmoid(x.clone()) + one_minus * log_sigmoid(x.neg()))
                .sum()
                .neg()
        };
        Ok((loss, read))
    }
}

/// Accuracy and AUC of `scores` against the targets of `examples` (see [`RmQuality`]).
fn quality(examples: &[&RmExample], scores: &[f32]) -> (f64, f64) {
    let (mut pos, mut neg, mut right, mut total) = (Vec::new(), Vec::new(), 0usize, 0usize);
    let mut at = 0;
    for e in examples {
        match e {
            RmExample::Pair { .. } => {}
            RmExample::Labelled { label, .. } => {
                let s = scores[at];
                at += 1;
                if *label >= 0.5 {
                    pos.push(s)
                } else {
                    neg.push(s)
                }
                right += usize::from((s > 0.0) == (*label >= 0.5));
                total += 1;
            }
            RmExample::Steps { labels, .. } => {
                for label in labels {
                    let s = scores[at];
                    at += 1;
                    if *label >= 0.5 {
                        pos.push(s)
                    } else {
                        neg.push(s)
                    }
                    right += usize::from((s > 0.0) == (*label >= 0.5));
                    total += 1;
                }
            }
        }
    }
    if matches!(examples.first(), Some(RmExample::Pair { .. })) {
        let k = scores.len() / 2;
        pos = scores[..k].to_vec();
        neg = scores[k..].to_vec();
        right = pos.iter().zip(&neg).filter(|(c, r)| c > r).count();
        total = k;
    }
    (right as f64 / total.max(1) as f64, auc(&pos, &neg))
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (Mann–Whitney); 0.5 when either side is empty.
pub fn auc(pos: &[f32], neg: &[f32]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return 0.5;
    }
    let mut all: Vec<(f32, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' (average, 1-based) ranks.
    let (mut rank_sum, mut i) = (0f64, 0usize);
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// The reward-model trainer.
pub struct RmTrainer {
    settings: RmSettings,
    head: RewardHead,
    model: Model,
    optim: AdamW,
    state: RmState,
    train: Vec<RmExample>,
    held_out: Vec<RmExample>,
    pad_id: u32,
    plan: Vec<Vec<usize>>,
    bad_steps: BadSteps,
}

impl RmTrainer {
    /// `model` is the reward model's backbone (with its `score` head, or the causal LM of a
    /// [`RewardHead::GoodToken`] head) on an autodiff device; the examples must match the
    /// objective (pairs for pairwise, labelled completions for pointwise, step lists for
    /// process).
    pub fn new(
        settings: RmSettings,
        head: RewardHead,
        model: Model,
        train: Vec<RmExample>,
        held_out: Vec<RmExample>,
        pad_id: u32,
    ) -> Result<Self, RmError> {
        if settings.batch_size == 0 {
            return Err(RmError::Settings("batch_size must be ≥ 1".into()));
        }
        if train.is_empty() {
            return Err(RmError::Settings("no training examples".into()));
        }
        let fits = |e: &RmExample| {
            matches!(
                (settings.objective, e),
                (Objective::Pairwise, RmExample::Pair { .. })
                    | (Objective::Pointwise, RmExample::Labelled { .. })
                    | (Objective::Process, RmExample::Steps { .. })
            )
        };
        if !train.iter().chain(&held_out).all(fits) {
            return Err(RmError::Settings(format!(
                "every example must suit the {:?} objective",
                settings.objective
            )));
        }
        if settings.objective == Objective::Process && !head.is_process() {
            return Err(RmError::Settings(
                "the process objective needs a token or good-token head".into(),
            ));
        }
        if settings.objective != Objective::Process && head.is_process() {
            return Err(RmError::Settings(
                "outcome objectives need a sequence head".into(),
            ));
        }
        let model = match (&settings.lora, model.lora()) {
            (Some(cfg), None) => model.add_lora(cfg)?,
            _ => model,
        };
        model.check_trains_on_device()?;
        let mut t = Self {
            optim: AdamW::new(settings.optim.clone()),
            settings,
            head,
            model,
            state: RmState::default(),
            train,
            held_out,
            pad_id,
            plan: Vec::new(),
            bad_steps: BadSteps::default(),
        };
        t.plan = t.plan_epoch(0);
        Ok(t)
    }

    pub fn settings(&self) -> &RmSettings {
        &self.settings
    }
    pub fn head(&self) -> RewardHead {
        self.head
    }
    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn optim(&self) -> &AdamW {
        &self.optim
    }
    /// The optimiser, to restore its moments from a checkpoint.
    pub fn optim_mut(&mut self) -> &mut AdamW {
        &mut self.optim
    }
    pub fn state(&self) -> &RmState {
        &self.state
    }
    /// The trained backbone.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// Continue from a saved state (the plan of its epoch is rebuilt from the seed).
    pub fn set_state(&mut self, state: RmState) {
        self.state = state;
        self.plan = self.plan_epoch(state.epoch);
    }

    fn plan_epoch(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut rng = SplitMix64::seeded(self.settings.seed ^ (epoch as u64).wrapping_mul(0x9E37));
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
            .chunks(self.settings.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Optimiser steps of the run.
    pub fn total_steps(&self) -> usize {
        let all = self.plan.len().saturating_mul(self.settings.epochs);
        match self.settings.max_steps {
            0 => all,
            m => m.min(all),
        }
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.total_steps()
    }

    /// One optimiser step; `None` when the run is complete.
    pub fn step(&mut self) -> Result<Option<RmMetrics>, RmError> {
        if self.done() {
            return Ok(None);
        }
        let started = Instant::now();
        if self.state.batch >= self.plan.len() {
            self.state.epoch += 1;
            self.state.batch = 0;
            self.plan = self.plan_epoch(self.state.epoch);
        }
        let examples: Vec<&RmExample> = self.plan[self.state.batch]
            .iter()
            .map(|&i| &self.train[i])
            .collect();
        let lr = self
            .settings
            .optim
            .lr_at(self.state.step, self.total_steps());
        let (value, applied, scores) = step_on(
            &mut self.model,
            &mut self.optim,
            lr,
            self.head,
            &examples,
            self.pad_id,
            self.settings.center_rewards_coefficient,
        )?;
        let (accuracy, _) = quality(&examples, &scores);
        let tokens: usize = examples.iter().map(|e| e.tokens()).sum();
        self.state.batch += 1;
        self.state.step += 1;
        let skipped = !applied;
        self.bad_steps
            .record(applied, self.state.step, self.settings.max_bad_steps)
            .map_err(RmError::Diverged)?;
        let held_out = if !self.held_out.is_empty()
            && eval_due(self.state.step, self.settings.eval_every, self.done())
        {
            Some(self.evaluate()?)
        } else {
            None
        };
        let seconds = started.elapsed().as_secs_f64();
        Ok(Some(RmMetrics {
            step: self.state.step,
            epoch: self.state.epoch as f64 + self.state.batch as f64 / self.plan.len() as f64,
            lr,
            loss: value,
            accuracy,
            mean_reward: mean(&scores),
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            step_seconds: seconds,
            held_out_loss: held_out.map(|q| q.loss),
            held_out_accuracy: held_out.map(|q| q.accuracy),
            held_out_auc: held_out.map(|q| q.auc),
            skipped,
        }))
    }

    /// Loss, accuracy and AUC on the held-out examples (no gradients).
    pub fn evaluate(&self) -> Result<RmQuality, RmError> {
        evaluate(
            &self.model.inference_copy(),
            self.head,
            &self.held_out,
            self.settings.batch_size,
            self.pad_id,
            self.settings.center_rewards_coefficient,
        )
    }
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64
}

/// One optimiser step on `examples`: returns the loss (mean over the labelled items), whether
/// the update was applied (not with a non-finite loss), and the reward logits read, in
/// example order (pairs: all chosen, then all rejected).
pub fn step_on(
    model: &mut Model,
    optim: &mut AdamW,
    lr: f64,
    head: RewardHead,
    examples: &[&RmExample],
    pad_id: u32,
    center: Option<f64>,
) -> Result<(f32, bool, Vec<f32>), ModelError> {
    let items: usize = examples.iter().map(|e| e.items()).sum();
    let workers = data_parallel_workers(model.device())
        .min(examples.len())
        .max(1);
    let pieces: Vec<(Piece, usize)> = (0..workers)
        .map(|w| {
            let (lo, hi) = (
                w * examples.len() / workers,
                (w + 1) * examples.len() / workers,
            );
            let share = &examples[lo..hi];
            let pairs = share
                .iter()
                .filter(|e| matches!(e, RmExample::Pair { .. }))
                .count();
            (Piece::new(share, pad_id), pairs)
        })
        .filter(|(p, _)| p.batch.b > 0)
        .collect();
    let g = parallel_gradients(
        model,
        &pieces,
        &|model: &Model, (piece, _): &(Piece, usize)| {
            let (sum, read) = piece.loss(head, model, center)?;
            Ok::<_, ModelError>(Some((sum.div_scalar(items.max(1) as f32), read)))
        },
    )?;
    // Scores back in example order: a pair piece holds its chosen rows, then its rejected ones.
    let mut scores = Vec::new();
    let mut rejected = Vec::new();
    for ((_, pairs), read) in pieces.iter().zip(&g.extras) {
        if *pairs > 0 {
            scores.extend_from_slice(&read[..*pairs]);
            rejected.extend_from_slice(&read[*pairs..]);
        } else {
            scores.extend_from_slice(read);
        }
    }
    scores.extend(rejected);
    if !g.value.is_finite() {
        return Ok((g.value, false, scores));
    }
    apply_gradients(model, optim, lr, g.grads);
    Ok((g.value, true, scores))
}

/// Loss, accuracy and AUC of `model` (an inference copy) on `examples`.
pub fn evaluate(
    model: &Model,
    head: RewardHead,
    examples: &[RmExample],
    batch_size: usize,
    pad_id: u32,
    center: Option<f64>,
) -> Result<RmQuality, RmError> {
    let (mut loss, mut items) = (0f64, 0usize);
    let mut chosen = Vec::new();
    let mut rejected = Vec::new();
    let mut all = Vec::new();
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&RmExample> = chunk.iter().collect();
        let piece = Piece::new(&refs, pad_id);
        let (sum, read) = piece.loss(head, model, center)?;
        loss += f64::from(
            sum.try_into_scalar::<f32>()
                .map_err(|e| ModelError::Backend(format!("{e:?}")))?,
        );
        items += refs.iter().map(|e| e.items()).sum::<usize>();
        if piece.pairs {
            let k = read.len() / 2;
            chosen.extend_from_slice(&read[..k]);
            rejected.extend_from_slice(&read[k..]);
        } else {
            all.extend(read);
        }
    }
    let refs: Vec<&RmExample> = examples.iter().collect();
    let scores = if chosen.is_empty() {
        all
    } else {
        chosen.into_iter().chain(rejected).collect()
    };
    let (accuracy, auc) = quality(&refs, &scores);
    Ok(RmQuality {
        loss: loss / items.max(1) as f64,
        accuracy,
        auc,
        mean_reward: mean(&scores),
    })
}

/// The mean loss of `examples` as one batch, and its gradient not taken: what a golden test
/// compares with TRL's `compute_loss` on the same inputs.
pub fn batch_loss(
    model: &Model,
    head: RewardHead,
    examples: &[RmExample],
    pad_id: u32,
    center: Option<f64>,
) -> Result<f64, RmError> {
    let refs: Vec<&RmExample> = examples.iter().collect();
    let items: usize = refs.iter().map(|e| e.items()).sum();
    let (sum, _) = Piece::new(&refs, pad_id).loss(head, model, center)?;
    let v = sum
        .try_into_scalar::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
    Ok(f64::from(v) / items.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_ties() {
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0], &[2.0]), 0.0);
        assert_eq!(auc(&[1.0, 3.0], &[2.0]), 0.5);
        assert_eq!(auc(&[2.0], &[2.0]), 0.5);
        assert_eq!(auc(&[], &[1.0]), 0.5);
    }
}
