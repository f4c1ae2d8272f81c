//! The continued-pretraining run driver: `reasonlab pretrain --config pretrain.toml`, next-token
//! training on a weighted mixture of raw-text sources.
//!
//! ```toml
//! model = "ckpt/deepseek-coder-base"   # HF directory to continue from
//! out = "runs/pretrain"
//! preset = "deepseekmath"              # weights for sources named after the preset's
//! save_every = 500
//! [train]                              # any PretrainSettings field
//! steps = 1000
//! seq_len = 4096
//! [[source]]
//! name = "math"                        # weight 0.56 from the preset
//! paths = ["data/math-00.jsonl.zst", "data/math-01.jsonl.zst"]
//! [[source]]
//! name = "github_code"
//! paths = ["data/code.jsonl.gz"]
//! field = "content"
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use reasonlab_core::jsonl::BadLines;
use reasonlab_model::{ActivationCheckpointing, BackendKind, Model, Precision};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::AdamW;
use reasonlab_train::checkpoint;
use reasonlab_train::lm::{MicroBatch, accumulated_step};
use reasonlab_train::pretrain::{
    MixturePreset, MixtureStream, PretrainSettings, PretrainState, SourceSpec, resolve_weights,
};
use serde::{Deserialize, Serialize};

use super::{Event, Loaded, Resume, RunDir, RunError, load_toml, overlay};

/// `pretrain.toml` as written: the `[train]` table overrides the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainFile {
    pub model: PathBuf,
    pub out: PathBuf,
    #[serde(default)]
    pub preset: Option<MixturePreset>,
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
    pub train: toml::Table,
    pub source: Vec<SourceSpec>,
}

/// A resolved pretraining run (what the run folder's `config.toml` holds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainConfig {
    pub model: PathBuf,
    pub out: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<MixturePreset>,
    pub save_every: usize,
    pub backend: BackendKind,
    pub activation_checkpointing: ActivationCheckpointing,
    pub mixed_precision: Precision,
    pub train: PretrainSettings,
    pub source: Vec<SourceSpec>,
}

impl PretrainConfig {
    /// Read `pretrain.toml`; its relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        Self::from_loaded(load_toml(path)?)
    }

    /// From a parsed file whose relative paths are relative to `loaded.dir`.
    pub fn from_loaded(loaded: Loaded<PretrainFile>) -> Result<Self, RunError> {
        let f = &loaded.config;
        Ok(Self {
            model: loaded.path(&f.model),
            out: loaded.path(&f.out),
            preset: f.preset,
            save_every: f.save_every,
            backend: f.backend,
            activation_checkpointing: f.activation_checkpointing,
            mixed_precision: f.mixed_precision,
            train: overlay(&PretrainSettings::default(), &f.train, "train")?,
            source: f
                .source
                .iter()
                .map(|s| SourceSpec {
                    paths: s.paths.iter().map(|p| loaded.path(p)).collect(),
                    ..s.clone()
                })
                .collect(),
        })
    }
}

/// One line of a pretraining run's `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainMetrics {
    pub step: usize,
    pub lr: f64,
    pub loss: f32,
    pub tokens_per_s: f64,
    pub step_seconds: f64,
    pub skipped: bool,
    /// Realised token share per source so far.
    pub proportions: std::collections::BTreeMap<String, f64>,
}

/// A source's target weight and what it delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub weight: f64,
    pub realised: f64,
    pub tokens: u64,
    pub documents: u64,
}

/// What a pretraining run did (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainSummary {
    pub steps: usize,
    pub final_loss: Option<f32>,
    pub sources: Vec<SourceReport>,
    pub model: Option<PathBuf>,
}

/// Continue pretraining as `cfg` says into `dir`.
pub fn run(
    cfg: &PretrainConfig,
    dir: &RunDir,
    resume: Resume,
    bad: BadLines,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<PretrainSummary, RunError> {
    let settings = &cfg.train;
    let names: Vec<String> = cfg.source.iter().map(|s| s.name.clone()).collect();
    let weights = resolve_weights(&cfg.source, cfg.preset)?;
    let tokenizer = Tokenizer::from_dir(&cfg.model)?;
    let mut stream = MixtureStream::new(cfg.source.clone(), weights.clone(), &tokenizer, bad)?;
    stream.isolate_documents = settings.isolate_documents;
    let mut optim = AdamW::new(settings.optim.clone());
    let mut step = 0;
    let resume_from = dir.resume_from(resume)?;
    if let Some(ckpt) = &resume_from {
        let state: PretrainState = checkpoint::restore(ckpt, &mut optim)?;
        step = state.step;
        stream.restore(state.stream);
    }
    let source = resume_from.clone().unwrap_or_else(|| cfg.model.clone());
    let device = super::open_training_device(
        cfg.backend,
        cfg.activation_checkpointing,
        cfg.mixed_precision,
        on_event,
    )?;
    let mut model = Model::load(&source, &device)?.with_mixed_precision(cfg.mixed_precision)?;
    model.check_trains_on_device()?;
    if settings.seq_len > model.config.max_position_embeddings {
        return Err(RunError::Invalid(format!(
            "seq_len {} exceeds the model's context {}",
            settings.seq_len, model.config.max_position_embeddings
        )));
    }
    dir.write_config(cfg)?;
    let mut logs = dir.begin(
        "pretrain",
        settings.steps,
        step,
        resume_from.as_deref(),
        on_event,
    )?;
    let mut last = None;
    let mut final_dir = None;
    while step < settings.steps {
        let started = Instant::now();
        let batches = (0..settings.grad_accum.max(1))
            .map(|_| stream.next_batch(settings.batch_size, settings.seq_len))
            .collect::<Result<Vec<_>, _>>()?;
        let lr = settings.optim.lr_at(step, settings.steps);
        let micro: Vec<MicroBatch<'_>> = batches
            .iter()
            .map(|b| MicroBatch {
                batch: b,
                loss_mask: None,
            })
            .collect();
        let (loss, applied) = accumulated_step(&mut model, &mut optim, lr, &micro)?;
        if !applied {
            tracing::warn!(step, "non-finite loss; step skipped");
        }
        step += 1;
        let seconds = started.elapsed().as_secs_f64();
        let tokens = batches.len() * settings.batch_size * settings.seq_len;
        let metrics = PretrainMetrics {
            step,
            lr,
            loss,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            step_seconds: seconds,
            skipped: !applied,
            proportions: names
                .iter()
                .cloned()
                .zip(stream.sampler().proportions().iter().copied())
                .collect(),
        };
        logs.metrics
            .write(&metrics)
            .map_err(super::io(&dir.metrics()))?;
        on_event(Event::Progress {
            done: step,
            message: format!("loss {loss:.4}"),
        });
        last = Some(loss);
        if (cfg.save_every > 0 && step.is_multiple_of(cfg.save_every)) || step == settings.steps {
            let state = PretrainState {
                step,
                stream: stream.state(),
            };
            let saved = checkpoint::save(dir.root(), step, &model, &optim, &state, &cfg.model)?;
            on_event(Event::Saved(&saved));
            final_dir = Some(saved);
        }
    }
    drop(logs);
    crate::plots::write_curves(dir, "Continued pretraining", &[("loss", &["loss"])])?;
    let summary = PretrainSummary {
        steps: step,
        final_loss: last,
        sources: names
            .iter()
            .enumerate()
            .map(|(i, n)| SourceReport {
                name: n.clone(),
                weight: weights[i],
                realised: stream.sampler().proportions()[i],
                tokens: stream.sampler().tokens()[i] as u64,
                documents: stream.documents()[i] as u64,
            })
            .collect(),
        model: final_dir,
    };
    dir.write_summary(&summary)?;
    Ok(summary)
}
