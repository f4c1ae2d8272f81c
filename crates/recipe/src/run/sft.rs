//! The SFT run driver: `reasonlab sft --config sft.toml`, and the training half of
//! `reasonlab distill`.
//!
//! ```toml
//! model = "ckpt/qwen2.5-math-1.5b"   # HF directory (config.json, safetensors, tokenizer)
//! data = "train.jsonl"                # {"messages": [...]} or {"prompt", "completion"} per line
//! eval_data = "dev.jsonl"             # optional; else `held_out` × data is held out
//! held_out = 0.05
//! out = "runs/sft"
//! save_every = 100                    # checkpoint every N steps (0: only at the end)
//! [sft]                               # any SftSettings field
//! epochs = 3
//! packing = true
//! [sft.encode]
//! max_len = 2048
//! ```

use std::path::{Path, PathBuf};

use reasonlab_core::jsonl::{self, BadLines};
use reasonlab_model::{ActivationCheckpointing, BackendKind, Precision};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::checkpoint;
use reasonlab_train::sft::{EncodeSummary, SftRecord, SftSettings, SftState, SftTrainer};
use serde::{Deserialize, Serialize};

use super::{Event, Loaded, Resume, RunDir, RunError, load_toml, overlay};

/// `sft.toml` as written: the `[sft]` table overrides the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftFile {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Further files read after `data`, as one set (reasoning traces mixed with
    /// non-reasoning data, say).
    #[serde(default)]
    pub more_data: Vec<PathBuf>,
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    #[serde(default)]
    pub held_out: f64,
    pub out: PathBuf,
    #[serde(default)]
    pub save_every: usize,
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
    pub sft: toml::Table,
}

/// A resolved SFT run (what the run folder's `config.toml` holds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_data: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<PathBuf>,
    pub held_out: f64,
    pub out: PathBuf,
    pub save_every: usize,
    pub backend: BackendKind,
    pub activation_checkpointing: ActivationCheckpointing,
    pub mixed_precision: Precision,
    pub sft: SftSettings,
}

impl SftConfig {
    /// Read `sft.toml`; its relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        Self::from_loaded(load_toml(path)?)
    }

    /// From a parsed file whose relative paths are relative to `loaded.dir`.
    pub fn from_loaded(loaded: Loaded<SftFile>) -> Result<Self, RunError> {
        let f = &loaded.config;
        Ok(Self {
            model: loaded.path(&f.model),
            data: loaded.path(&f.data),
            more_data: f.more_data.iter().map(|p| loaded.path(p)).collect(),
            eval_data: f.eval_data.as_ref().map(|p| loaded.path(p)),
            held_out: f.held_out,
            out: loaded.path(&f.out),
            save_every: f.save_every,
            backend: f.backend,
            activation_checkpointing: f.activation_checkpointing,
            mixed_precision: f.mixed_precision,
            sft: overlay(&SftSettings::default(), &f.sft, "sft")?,
        })
    }
}

/// What an SFT run did (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftSummary {
    pub train: EncodeSummary,
    pub held_out: EncodeSummary,
    pub steps: usize,
    pub final_loss: Option<f32>,
    pub held_out_loss_before: Option<f64>,
    pub held_out_loss_after: Option<f64>,
    /// The final checkpoint (HF layout).
    pub model: PathBuf,
}

/// Read the data of `cfg` and train (see [`train`]).
pub fn run(
    cfg: &SftConfig,
    dir: &RunDir,
    resume: Resume,
    bad: BadLines,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<SftSummary, RunError> {
    let mut records: Vec<SftRecord> = jsonl::read(&cfg.data, bad)?;
    for path in &cfg.more_data {
        records.extend(jsonl::read::<SftRecord>(path, bad)?);
    }
    let eval_records: Vec<SftRecord> = match &cfg.eval_data {
        Some(p) => jsonl::read(p, bad)?,
        None => Vec::new(),
    };
    dir.write_config(cfg)?;
    train(
        &cfg.model,
        records,
        eval_records,
        cfg.held_out,
        cfg.sft.clone(),
        cfg.backend,
        reasonlab_model::Training {
            checkpointing: cfg.activation_checkpointing,
            mixed_precision: cfg.mixed_precision,
        },
        dir,
        cfg.save_every,
        resume,
        on_event,
    )
}

/// Fine-tune `model_dir` on `records` into `dir`; the last `held_out` share of `records` is
/// held out when `eval_records` is empty.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model_dir: &Path,
    mut records: Vec<SftRecord>,
    mut eval_records: Vec<SftRecord>,
    held_out: f64,
    settings: SftSettings,
    backend: BackendKind,
    training: reasonlab_model::Training,
    dir: &RunDir,
    save_every: usize,
    resume: Resume,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<SftSummary, RunError> {
    if eval_records.is_empty() && held_out > 0.0 {
        // The last `held_out` share of the file, so it does not depend on the shuffle seed.
        let n = ((records.len() as f64) * held_out).round() as usize;
        eval_records = records.split_off(records.len() - n.min(records.len().saturating_sub(1)));
    }
    let tokenizer = Tokenizer::from_dir(model_dir)?;
    let (train, train_summary) =
        reasonlab_train::sft::encode_all(&records, &tokenizer, &settings.encode)?;
    let (held, held_summary) =
        reasonlab_train::sft::encode_all(&eval_records, &tokenizer, &settings.encode)?;
    if train.is_empty() {
        return Err(RunError::Invalid(format!(
            "no usable training examples ({train_summary:?})"
        )));
    }
    if train_summary.truncated + train_summary.dropped > 0 {
        on_event(Event::Note(format!(
            "{} examples truncated and {} dropped at max_len = {} (sft.encode.overflow = {:?})",
            train_summary.truncated,
            train_summary.dropped,
            settings.encode.max_len,
            settings.encode.overflow
        )));
    }
    let resume_from = dir.resume_from(resume)?;
    let source = resume_from
        .clone()
        .unwrap_or_else(|| model_dir.to_path_buf());
    let device = super::open_device(
        backend,
        reasonlab_model::Purpose::Training(training),
        on_event,
    )?;
    let model = checkpoint::load_model(&source, model_dir, &device)?
        .with_mixed_precision(training.mixed_precision)?;
    let pad = tokenizer.pad_id();
    let mut trainer = SftTrainer::new(settings, model, train, held, pad)?;
    if let Some(ckpt) = &resume_from {
        let state: SftState = checkpoint::restore(ckpt, trainer.optim_mut())?;
        trainer.set_state(state);
    }
    let before = if trainer.state().step == 0 && !eval_records.is_empty() {
        Some(trainer.held_out_loss()?)
    } else {
        None
    };
    let total = trainer.total_steps();
    let mut logs = dir.begin(
        "sft",
        total,
        trainer.state().step,
        resume_from.as_deref(),
        on_event,
    )?;
    let mut last = None;
    let mut after = None;
    while let Some(m) = trainer.step()? {
        logs.metrics.write(&m).map_err(super::io(&dir.metrics()))?;
        on_event(Event::Progress {
            done: m.step,
            message: format!(
                "loss {:.4}  epoch {:.2}  {:.0} tok/s",
                m.loss, m.epoch, m.tokens_per_s
            ),
        });
        tracing::info!(step = m.step, loss = m.loss, held_out = ?m.held_out_loss, "sft step");
        last = Some(m.loss);
        if m.held_out_loss.is_some() {
            after = m.held_out_loss;
        }
        if save_every > 0 && m.step.is_multiple_of(save_every) && !trainer.done() {
            let saved = checkpoint::save(
                dir.root(),
                m.step,
                trainer.model(),
                trainer.optim(),
                trainer.state(),
                model_dir,
            )?;
            on_event(Event::Saved(&saved));
        }
    }
    let final_dir = checkpoint::save(
        dir.root(),
        trainer.state().step,
        trainer.model(),
        trainer.optim(),
        trainer.state(),
        model_dir,
    )?;
    on_event(Event::Saved(&final_dir));
    drop(logs);
    crate::plots::write_curves(
        dir,
        "SFT",
        &[
            ("loss", &["loss", "held_out_loss"]),
            ("throughput (tokens per s)", &["tokens_per_s"]),
        ],
    )?;
    let summary = SftSummary {
        train: train_summary,
        held_out: held_summary,
        steps: trainer.state().step,
        final_loss: last,
        held_out_loss_before: before,
        held_out_loss_after: after,
        model: final_dir,
    };
    dir.write_summary(&summary)?;
    Ok(summary)
}
