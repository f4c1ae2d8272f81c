//! The reward-model run driver: `reasonlab rm train --config rm.toml`.
//!
//! ```toml
//! model = "ckpt/policy"        # a causal LM (a fresh head is added) or a reward-model checkpoint
//! data = "steps.jsonl"         # TRL preference, unpaired or stepwise-supervision lines
//! eval_data = "steps-dev.jsonl" # optional; else `held_out` × data is held out
//! held_out = 0.1
//! out = "runs/prm"
//! save_every = 0               # checkpoint every N steps (0: only at the end)
//! head = "token"               # sequence | token | { good_token = { good = "+", bad = "-" } }
//! [rm]                         # any RmSettings field
//! objective = "process"        # pairwise | pointwise | process
//! epochs = 2
//! ```
//!
//! Checkpoints are reward models in transformers' layout (`*ForSequenceClassification`,
//! `*ForTokenClassification`, or the causal LM for the good-token head), with LoRA merged.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use reasonlab_core::jsonl::{self, BadLines};
use reasonlab_model::{ActivationCheckpointing, BackendKind, Precision, RewardModel, SaveDtype};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::checkpoint;
use reasonlab_train::rm::{RmExample, RmQuality, RmSettings, RmState, RmTrainer, encode_record};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::{Event, Loaded, Resume, RunDir, RunError, io, load_toml, overlay};
use super::{HeadSpec, load};

/// `rm.toml` as written: the `[rm]` table overrides the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmFile {
    pub model: PathBuf,
    pub data: PathBuf,
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    #[serde(default)]
    pub held_out: f64,
    pub out: PathBuf,
    #[serde(default)]
    pub save_every: usize,
    #[serde(default)]
    pub head: Option<HeadSpec>,
    /// Tensor backend: `flex` (CPU), `wgpu`, `vulkan` or `cuda`.
    #[serde(default)]
    pub backend: BackendKind,
    /// Recompute memory-bound activations in the backward pass (`"balanced"`) or keep them all
    /// (`"off"`).
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
    /// Mixed precision: compute in `"bf16"` (or `"f16"` where the GPU has no bf16) with f32
    /// master weights and optimiser state; `"f32"` (the default) is off. GPU backends only.
    #[serde(default)]
    pub mixed_precision: Precision,
    #[serde(default)]
    pub rm: toml::Table,
}

/// A resolved reward-model run (what the run folder's `config.toml` holds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RmConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<PathBuf>,
    pub held_out: f64,
    pub out: PathBuf,
    pub save_every: usize,
    /// The head to read or add; `None` keeps a reward checkpoint's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
    pub backend: BackendKind,
    pub activation_checkpointing: ActivationCheckpointing,
    pub mixed_precision: Precision,
    pub rm: RmSettings,
}

impl RmConfig {
    /// Read `rm.toml`; its relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        Self::from_loaded(load_toml(path)?)
    }

    /// From a parsed file whose relative paths are relative to `loaded.dir`.
    pub fn from_loaded(loaded: Loaded<RmFile>) -> Result<Self, RunError> {
        let f = &loaded.config;
        Ok(Self {
            model: loaded.path(&f.model),
            data: loaded.path(&f.data),
            eval_data: f.eval_data.as_ref().map(|p| loaded.path(p)),
            held_out: f.held_out,
            out: loaded.path(&f.out),
            save_every: f.save_every,
            head: f.head.clone(),
            backend: f.backend,
            activation_checkpointing: f.activation_checkpointing,
            mixed_precision: f.mixed_precision,
            rm: overlay(&RmSettings::default(), &f.rm, "rm")?,
        })
    }

    /// The head this run trains: the configured one, else the objective's default for a causal
    /// LM (a reward checkpoint keeps its own).
    fn head(&self) -> Option<HeadSpec> {
        self.head.clone().or_else(|| {
            (!super::is_reward_checkpoint(&self.model)).then(|| {
                match self.rm.objective.default_head() {
                    reasonlab_model::RewardHead::Token => HeadSpec::Token,
                    _ => HeadSpec::Sequence,
                }
            })
        })
    }
}

/// What a reward-model run did (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RmSummary {
    pub train_examples: usize,
    pub held_out_examples: usize,
    /// Examples left out for being longer than `rm.encode.max_length`.
    pub too_long: usize,
    pub steps: usize,
    pub final_loss: Option<f32>,
    pub held_out_before: Option<RmQuality>,
    pub held_out_after: Option<RmQuality>,
    /// The final checkpoint (HF layout).
    pub model: PathBuf,
}

/// Every line of `path` as an example (`None` for one over `max_length`); a malformed line is
/// an error naming the file and line, or skipped with a warning under [`BadLines::Skip`].
fn read_examples(
    path: &Path,
    settings: &RmSettings,
    tok: &Tokenizer,
    training: bool,
    bad: BadLines,
) -> Result<(Vec<RmExample>, usize), RunError> {
    let (mut out, mut too_long) = (Vec::new(), 0);
    for (i, line) in jsonl::open(path)?.lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let encoded = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| encode_record(&v, settings.objective, tok, &settings.encode, training));
        match encoded {
            Ok(Some(e)) => out.push(e),
            Ok(None) => too_long += 1,
            Err(e) => {
                let msg = format!("{}:{}: {e}", path.display(), i + 1);
                match bad {
                    BadLines::Reject => return Err(RunError::Invalid(msg)),
                    _ => tracing::warn!("{msg}; line skipped"),
                }
            }
        }
    }
    Ok((out, too_long))
}

/// Train the reward model of `cfg` into `dir`.
pub fn run(
    cfg: &RmConfig,
    dir: &RunDir,
    resume: Resume,
    bad: BadLines,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RmSummary, RunError> {
    let tok = Tokenizer::from_dir(&cfg.model)?;
    // Nothing longer than the model's context reaches it.
    let context = reasonlab_model::ModelConfig::from_dir(&cfg.model)?.max_position_embeddings;
    let mut settings = cfg.rm.clone();
    settings.encode.max_length = settings.encode.max_length.min(context);
    let (mut train, mut too_long) = read_examples(&cfg.data, &settings, &tok, true, bad)?;
    let mut held = match &cfg.eval_data {
        Some(p) => {
            let (h, n) = read_examples(p, &settings, &tok, false, bad)?;
            too_long += n;
            h
        }
        None => Vec::new(),
    };
    if held.is_empty() && cfg.held_out > 0.0 {
        // The last `held_out` share of the file, so it does not depend on the shuffle seed.
        let n = ((train.len() as f64) * cfg.held_out).round() as usize;
        held = train.split_off(train.len() - n.min(train.len().saturating_sub(1)));
    }
    if train.is_empty() {
        return Err(RunError::Invalid(format!(
            "{}: no usable training examples",
            cfg.data.display()
        )));
    }
    if too_long > 0 {
        on_event(Event::Note(format!(
            "{too_long} examples over {} tokens (rm.encode.max_length, at most the context) left out",
            settings.encode.max_length
        )));
    }
    dir.write_config(cfg)?;
    let (n_train, n_held) = (train.len(), held.len());
    let resume_from = dir.resume_from(resume)?;
    let device = super::super::open_training_device(
        cfg.backend,
        cfg.activation_checkpointing,
        cfg.mixed_precision,
        on_event,
    )?;
    let head = cfg.head();
    let rm: RewardModel = match &resume_from {
        // A checkpoint holds the head already (a good-token one is a causal LM again).
        Some(ckpt) => load(
            ckpt,
            head.as_ref()
                .filter(|h| matches!(h, HeadSpec::GoodToken { .. })),
            0,
            &device,
        )?,
        None => load(&cfg.model, head.as_ref(), cfg.rm.seed, &device)?,
    };
    let template = rm.clone();
    let mut trainer = RmTrainer::new(
        settings,
        rm.head(),
        rm.model()
            .clone()
            .with_mixed_precision(cfg.mixed_precision)?,
        train,
        held,
        tok.pad_id(),
    )?;
    if let Some(ckpt) = &resume_from {
        let state: RmState = checkpoint::restore(ckpt, trainer.optim_mut())?;
        trainer.set_state(state);
    }
    let before = (trainer.state().step == 0 && n_held > 0)
        .then(|| trainer.evaluate())
        .transpose()?;
    let mut logs = dir.begin(
        "rm",
        trainer.total_steps(),
        trainer.state().step,
        resume_from.as_deref(),
        on_event,
    )?;
    let save = |trainer: &RmTrainer| {
        let rm = template.clone().with_model(trainer.model().clone());
        checkpoint::save_with(
            dir.root(),
            trainer.state().step,
            &|d| rm.save(d, SaveDtype::F32),
            trainer.optim(),
            trainer.state(),
            &cfg.model,
        )
    };
    let mut last = None;
    while let Some(m) = trainer.step()? {
        logs.metrics.write(&m).map_err(io(&dir.metrics()))?;
        on_event(Event::Progress {
            done: m.step,
            message: format!(
                "loss {:.4}  acc {:.2}  {:.0} tok/s",
                m.loss, m.accuracy, m.tokens_per_s
            ),
        });
        tracing::info!(step = m.step, loss = m.loss, held_out_auc = ?m.held_out_auc, "rm step");
        last = Some(m.loss);
        if save_due(cfg.save_every, m.step) && !trainer.done() {
            on_event(Event::Saved(&save(&trainer)?));
        }
    }
    let mut after = None;
    if n_held > 0 {
        after = Some(trainer.evaluate()?);
    }
    let final_dir = save(&trainer)?;
    on_event(Event::Saved(&final_dir));
    drop(logs);
    crate::plots::write_curves(
        dir,
        "Reward model",
        &[
            ("loss", &["loss", "held_out_loss"]),
            (
                "accuracy",
                &["accuracy", "held_out_accuracy", "held_out_auc"],
            ),
        ],
    )?;
    let summary = RmSummary {
        train_examples: n_train,
        held_out_examples: n_held,
        too_long,
        steps: trainer.state().step,
        final_loss: last,
        held_out_before: before,
        held_out_after: after,
        model: final_dir,
    };
    dir.write_summary(&summary)?;
    Ok(summary)
}

fn save_due(every: usize, step: usize) -> bool {
    every > 0 && step.is_multiple_of(every)
}
