//! Supervised fine-tuning: next-token loss on completion / assistant tokens only.
//!
//! The loss of an optimiser step is the mean negative log-likelihood over every target token of
//! the step's micro-batches (token-weighted across gradient accumulation, so accumulating 4
//! micro-batches of 2 rows equals one batch of 8 rows). Data order is a function of
//! `(seed, epoch)` only, so a checkpoint needs just `(step, epoch, micro-batch index)` to resume
//! exactly.
//!
//! Shapes: a micro-batch is a (b, t) [`TokenBatch`]; its loss mask is (b, t − 1) over the
//! log-prob grid (column j predicts token j + 1).
//!
//! [`TokenBatch`]: reasonlab_model::TokenBatch

pub mod data;
pub mod pack;

use std::time::Instant;

use reasonlab_core::rng::SplitMix64;
use reasonlab_model::{LoraConfig, Model, ModelError};
use serde::{Deserialize, Serialize};

pub use data::{
    EncodeSettings, EncodeSummary, Encoded, Outcome, Overflow, PromptFormat, SftRecord, encode,
    encode_all,
};
pub use pack::{LossBatch, batch_rows, pack_best_fit};

use crate::lm::{BadSteps, MicroBatch, accumulated_step, eval_due, masked_nll_sum};
use crate::optim::{AdamW, AdamWSettings};

#[derive(Debug, thiserror::Error)]
pub enum SftError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenize(#[from] reasonlab_tokenize::TokenizeError),
    #[error(
        "the chat template rewrites earlier turns (assistant turn {turn} is not a prefix of the \
         full rendering), so assistant tokens cannot be located; use single-turn data or a \
         template without history rewriting"
    )]
    TemplateNotPrefixStable { turn: usize },
    #[error("{0} consecutive steps had a non-finite loss; stopping")]
    Diverged(usize),
    #[error("invalid settings: {0}")]
    Settings(String),
}

/// Everything an SFT run needs (the `[sft]` table of `sft.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftSettings {
    pub epochs: usize,
    /// Stop after this many optimiser steps (0: run every epoch).
    pub max_steps: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Pack examples into rows of `encode.max_len` tokens (best-fit decreasing).
    pub packing: bool,
    pub encode: EncodeSettings,
    pub optim: AdamWSettings,
    /// Held-out loss every N steps (0: only at the end).
    pub eval_every: usize,
    pub max_bad_steps: usize,
    pub seed: u64,
    /// Train LoRA adapters instead of every weight (merged into the saved model).
    pub lora: Option<LoraConfig>,
}

impl Default for SftSettings {
    fn default() -> Self {
        Self {
            epochs: 3,
            max_steps: 0,
            batch_size: 8,
            grad_accum: 1,
            packing: false,
            encode: EncodeSettings::default(),
            optim: AdamWSettings {
                lr: 2e-5,
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

/// Where the trainer is in its data (saved in checkpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftState {
    pub step: usize,
    pub epoch: usize,
    /// Index of the next micro-batch within the epoch's plan.
    pub micro: usize,
}

/// One step's numbers (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SftMetrics {
    pub step: usize,
    /// Fractional epoch reached.
    pub epoch: f64,
    pub lr: f64,
    pub loss: f32,
    /// Target tokens in the step.
    pub target_tokens: usize,
    /// All (non-pad) tokens processed per second.
    pub tokens_per_s: f64,
    pub step_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    pub skipped: bool,
}

/// The SFT trainer.
pub struct SftTrainer {
    settings: SftSettings,
    model: Model,
    optim: AdamW,
    state: SftState,
    train: Vec<Encoded>,
    held_out: Vec<Encoded>,
    pad_id: u32,
    /// Micro-batches of the current epoch (example indices per row, rows per micro-batch).
    plan: Vec<Vec<Vec<usize>>>,
    bad_steps: BadSteps,
}

impl SftTrainer {
    /// `model` must live on an autodiff device.
    pub fn new(
        settings: SftSettings,
        model: Model,
        train: Vec<Encoded>,
        held_out: Vec<Encoded>,
        pad_id: u32,
    ) -> Result<Self, SftError> {
        if settings.batch_size == 0 || settings.grad_accum == 0 {
            return Err(SftError::Settings(
                "batch_size and grad_accum must be ≥ 1".into(),
            ));
        }
        if train.is_empty() {
            return Err(SftError::Settings("no training examples".into()));
        }
        let model = match (&settings.lora, model.lora()) {
            (Some(cfg), None) => model.add_lora(cfg)?,
            _ => model,
        };
        model.check_trains_on_device()?;
        let mut t = Self {
            optim: AdamW::new(settings.optim.clone()),
            settings,
            model,
            state: SftState::default(),
            train,
            held_out,
            pad_id,
            plan: Vec::new(),
            bad_steps: BadSteps::default(),
        };
        t.plan = t.plan_epoch(0);
        Ok(t)
    }

    /// Continue from a saved state (the plan of its epoch is rebuilt from the seed).
    pub fn settings(&self) -> &SftSettings {
        &self.settings
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
    pub fn state(&self) -> &SftState {
        &self.state
    }
    /// The trained model.
    pub fn into_model(self) -> Model {
        self.model
    }

    pub fn set_state(&mut self, state: SftState) {
        self.state = state;
        self.plan = self.plan_epoch(state.epoch);
    }

    /// Micro-batches of `epoch`: examples shuffled by `(seed, epoch)`, packed if asked, rows
    /// shuffled again (best-fit orders rows by length), then cut into `batch_size` rows.
    fn plan_epoch(&self, epoch: usize) -> Vec<Vec<Vec<usize>>> {
        let mut rng = SplitMix64::seeded(self.settings.seed ^ (epoch as u64).wrapping_mul(0x9E37));
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        shuffle(&mut order, &mut rng);
        let mut rows: Vec<Vec<usize>> = if self.settings.packing {
            let lengths: Vec<usize> = order.iter().map(|&i| self.train[i].len()).collect();
            pack_best_fit(&lengths, self.settings.encode.max_len)
                .into_iter()
                .map(|r| r.into_iter().map(|k| order[k]).collect())
                .collect()
        } else {
            order.into_iter().map(|i| vec![i]).collect()
        };
        if self.settings.packing {
            shuffle(&mut rows, &mut rng);
        }
        rows.chunks(self.settings.batch_size)
            .map(<[Vec<usize>]>::to_vec)
            .collect()
    }

    /// Optimiser steps in one epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.plan.len().div_ceil(self.settings.grad_accum)
    }

    /// Total optimiser steps of the run.
    pub fn total_steps(&self) -> usize {
        let all = self.steps_per_epoch().saturating_mul(self.settings.epochs);
        match self.settings.max_steps {
            0 => all,
            m => m.min(all),
        }
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.total_steps()
    }

    fn micro_batch(&self, rows: &[Vec<usize>]) -> LossBatch {
        let rows: Vec<Vec<&Encoded>> = rows
            .iter()
            .map(|r| r.iter().map(|&i| &self.train[i]).collect())
            .collect();
        batch_rows(&rows, self.pad_id)
    }

    /// One optimiser step over up to `grad_accum` micro-batches (an epoch's last step may have
    /// fewer). `None` when the run is complete.
    pub fn step(&mut self) -> Result<Option<SftMetrics>, SftError> {
        if self.done() {
            return Ok(None);
        }
        let started = Instant::now();
        if self.state.micro >= self.plan.len() {
            self.state.epoch += 1;
            self.state.micro = 0;
            self.plan = self.plan_epoch(self.state.epoch);
        }
        let end = (self.state.micro + self.settings.grad_accum).min(self.plan.len());
        let batches: Vec<LossBatch> = self.plan[self.state.micro..end]
            .iter()
            .map(|rows| self.micro_batch(rows))
            .collect();
        let targets: usize = batches.iter().map(|b| b.targets).sum();
        let tokens: usize = batches
            .iter()
            .map(|b| b.batch.padding.iter().filter(|&&p| !p).count())
            .sum();
        let lr = self
            .settings
            .optim
            .lr_at(self.state.step, self.total_steps());
        let micro: Vec<MicroBatch<'_>> = batches
            .iter()
            .map(|b| MicroBatch {
                batch: &b.batch,
                loss_mask: Some(&b.loss_mask),
            })
            .collect();
        let (loss_value, applied) = accumulated_step(&mut self.model, &mut self.optim, lr, &micro)?;
        self.state.micro = end;
        self.state.step += 1;
        let skipped = !applied;
        self.bad_steps
            .record(applied, self.state.step, self.settings.max_bad_steps)
            .map_err(SftError::Diverged)?;
        let held_out_loss = if !self.held_out.is_empty()
            && eval_due(self.state.step, self.settings.eval_every, self.done())
        {
            Some(self.held_out_loss()?)
        } else {
            None
        };
        let seconds = started.elapsed().as_secs_f64();
        Ok(Some(SftMetrics {
            step: self.state.step,
            epoch: self.state.epoch as f64 + self.state.micro as f64 / self.plan.len() as f64,
            lr,
            loss: loss_value,
            target_tokens: targets,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            step_seconds: seconds,
            held_out_loss,
            skipped,
        }))
    }

    /// Mean NLL per target token over the held-out examples (no gradients).
    pub fn held_out_loss(&self) -> Result<f64, SftError> {
        let model = self.model.inference_copy();
        mean_nll(
            &model,
            &self.held_out,
            self.settings.batch_size,
            self.pad_id,
        )
    }
}

/// Mean NLL per target token of `examples`, one example per row.
pub fn mean_nll(
    model: &Model,
    examples: &[Encoded],
    batch_size: usize,
    pad_id: u32,
) -> Result<f64, SftError> {
    let (mut sum, mut count) = (0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let rows: Vec<Vec<&Encoded>> = chunk.iter().map(|e| vec![e]).collect();
        let b = batch_rows(&rows, pad_id);
        let (s, n) = masked_nll_sum(model, &b.batch, Some(&b.loss_mask))?;
        sum += f64::from(
            s.try_into_scalar::<f32>()
                .map_err(|e| ModelError::Backend(format!("{e:?}")))?,
        );
        count += n;
    }
    Ok(sum / count.max(1) as f64)
}

fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
