//! `reasonlab sft --config sft.toml`: supervised fine-tuning of a local HF checkpoint.
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

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_core::jsonl::{self, BadLines, JsonlWriter};
use reasonlab_model::{BackendKind, device_for};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::checkpoint;
use reasonlab_train::sft::{EncodeSummary, SftRecord, SftSettings, SftState, SftTrainer};
use serde::Deserialize;

use super::runcfg;

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    #[arg(long)]
    pub resume: bool,
    /// Stop at the first malformed data line instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
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
    pub sft: toml::Table,
}

/// What the run did, written to `OUT/summary.json` and printed.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub train: EncodeSummary,
    pub held_out: EncodeSummary,
    pub steps: usize,
    pub final_loss: Option<f32>,
    pub held_out_loss_before: Option<f64>,
    pub held_out_loss_after: Option<f64>,
    pub model: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = runcfg::load::<RunConfig>(&args.config)?;
    let settings: SftSettings = runcfg::overlay(&SftSettings::default(), &cfg.config.sft, "sft")?;
    let out = cfg.path(&cfg.config.out);
    let bad = if args.strict {
        BadLines::Reject
    } else {
        BadLines::Skip
    };
    let records: Vec<SftRecord> = jsonl::read(&cfg.path(&cfg.config.data), bad)?;
    let eval_records: Vec<SftRecord> = match &cfg.config.eval_data {
        Some(p) => jsonl::read(&cfg.path(p), bad)?,
        None => Vec::new(),
    };
    let summary = train(
        &cfg.path(&cfg.config.model),
        records,
        eval_records,
        cfg.config.held_out,
        settings,
        &out,
        cfg.config.save_every,
        args.resume,
        Some(&cfg.text),
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Fine-tune `model_dir` on `records`; shared with `reasonlab distill`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model_dir: &std::path::Path,
    mut records: Vec<SftRecord>,
    mut eval_records: Vec<SftRecord>,
    held_out: f64,
    settings: SftSettings,
    out: &std::path::Path,
    save_every: usize,
    resume: bool,
    config_text: Option<&str>,
) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if let Some(text) = config_text {
        std::fs::write(out.join("config.toml"), text)?;
    }
    if eval_records.is_empty() && held_out > 0.0 {
        // The last `held_out` share of the file, so it does not depend on the shuffle seed.
        let n = ((records.len() as f64) * held_out).round() as usize;
        eval_records = records.split_off(records.len() - n.min(records.len().saturating_sub(1)));
    }
    let tokenizer = Tokenizer::from_dir(model_dir)
        .with_context(|| format!("loading tokenizer {}", model_dir.display()))?;
    let (train, train_summary) =
        reasonlab_train::sft::encode_all(&records, &tokenizer, &settings.encode)?;
    let (held, held_summary) =
        reasonlab_train::sft::encode_all(&eval_records, &tokenizer, &settings.encode)?;
    anyhow::ensure!(
        !train.is_empty(),
        "no usable training examples ({train_summary:?})"
    );
    if train_summary.truncated + train_summary.dropped > 0 {
        eprintln!(
            "{} examples truncated and {} dropped at max_len = {} (sft.encode.overflow = {:?})",
            train_summary.truncated,
            train_summary.dropped,
            settings.encode.max_len,
            settings.encode.overflow
        );
    }
    let mut source = model_dir.to_path_buf();
    let resume_from = if resume {
        checkpoint::latest(out)?
    } else {
        None
    };
    if let Some(dir) = &resume_from {
        eprintln!("resuming from {}", dir.display());
        source = dir.clone();
    }
    let device = device_for(BackendKind::Flex, true)?;
    let model = checkpoint::load_model(&source, model_dir, &device)
        .with_context(|| format!("loading model {}", source.display()))?;
    let pad = tokenizer.pad_id();
    let mut trainer = SftTrainer::new(settings, model, train, held, pad)?;
    if let Some(dir) = &resume_from {
        let state: SftState = checkpoint::restore(dir, &mut trainer.optim)?;
        trainer.set_state(state);
    }
    let before = if trainer.state.step == 0 && !eval_records.is_empty() {
        Some(trainer.held_out_loss()?)
    } else {
        None
    };
    let total = trainer.total_steps();
    let mut metrics = JsonlWriter::append(&out.join("metrics.jsonl"))?;
    let bar = runcfg::bar("sft", total as u64, trainer.state.step as u64);
    let mut last = None;
    let mut after = None;
    while let Some(m) = trainer.step()? {
        metrics.write(&m)?;
        bar.set_message(format!(
            "loss {:.4}  epoch {:.2}  {:.0} tok/s",
            m.loss, m.epoch, m.tokens_per_s
        ));
        bar.inc(1);
        tracing::info!(step = m.step, loss = m.loss, held_out = ?m.held_out_loss, "sft step");
        last = Some(m.loss);
        if m.held_out_loss.is_some() {
            after = m.held_out_loss;
        }
        if save_every > 0 && m.step.is_multiple_of(save_every) && !trainer.done() {
            checkpoint::save(
                out,
                m.step,
                &trainer.model,
                &trainer.optim,
                &trainer.state,
                model_dir,
            )?;
        }
    }
    bar.finish();
    let final_dir = checkpoint::save(
        out,
        trainer.state.step,
        &trainer.model,
        &trainer.optim,
        &trainer.state,
        model_dir,
    )?;
    drop(metrics);
    runcfg::write_curves(
        out,
        "SFT",
        &[
            ("loss", &["loss", "held_out_loss"]),
            ("throughput (tokens per s)", &["tokens_per_s"]),
        ],
    )?;
    let summary = Summary {
        train: train_summary,
        held_out: held_summary,
        steps: trainer.state.step,
        final_loss: last,
        held_out_loss_before: before,
        held_out_loss_after: after,
        model: final_dir,
    };
    reasonlab_core::fs::atomic_write(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}
