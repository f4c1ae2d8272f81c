//! `reasonlab pretrain --config pretrain.toml`: continued next-token training on a weighted
//! mixture of raw-text sources.
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

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_core::jsonl::{BadLines, JsonlWriter};
use reasonlab_model::{BackendKind, Model, device_for};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::AdamW;
use reasonlab_train::checkpoint;
use reasonlab_train::lm::{MicroBatch, accumulated_step};
use reasonlab_train::pretrain::{
    MixturePreset, MixtureStream, PretrainSettings, PretrainState, SourceSpec, resolve_weights,
};
use serde::{Deserialize, Serialize};

use super::runcfg;

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    #[arg(long)]
    resume: bool,
    /// Stop at the first malformed JSONL line instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    model: PathBuf,
    out: PathBuf,
    #[serde(default)]
    preset: Option<MixturePreset>,
    #[serde(default)]
    save_every: usize,
    #[serde(default)]
    train: toml::Table,
    source: Vec<SourceSpec>,
}

#[derive(Serialize)]
struct Metrics {
    step: usize,
    lr: f64,
    loss: f32,
    tokens_per_s: f64,
    step_seconds: f64,
    skipped: bool,
    /// Realised token share per source so far.
    proportions: serde_json::Map<String, serde_json::Value>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = runcfg::load::<RunConfig>(&args.config)?;
    let settings: PretrainSettings =
        runcfg::overlay(&PretrainSettings::default(), &cfg.config.train, "train")?;
    let out = cfg.path(&cfg.config.out);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("config.toml"), &cfg.text)?;
    let sources: Vec<SourceSpec> = cfg
        .config
        .source
        .iter()
        .map(|s| SourceSpec {
            paths: s.paths.iter().map(|p| cfg.path(p)).collect(),
            ..s.clone()
        })
        .collect();
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let weights = resolve_weights(&sources, cfg.config.preset)?;
    let model_dir = cfg.path(&cfg.config.model);
    let tokenizer = Tokenizer::from_dir(&model_dir)
        .with_context(|| format!("loading tokenizer {}", model_dir.display()))?;
    let bad = if args.strict {
        BadLines::Reject
    } else {
        BadLines::Skip
    };
    let mut stream = MixtureStream::new(sources, weights.clone(), &tokenizer, bad)?;
    stream.isolate_documents = settings.isolate_documents;
    let mut optim = AdamW::new(settings.optim.clone());
    let mut step = 0;
    let mut source = model_dir.clone();
    if args.resume
        && let Some(dir) = checkpoint::latest(&out)?
    {
        let state: PretrainState = checkpoint::restore(&dir, &mut optim)?;
        eprintln!("resuming from {} (step {})", dir.display(), state.step);
        step = state.step;
        stream.restore(state.stream);
        source = dir;
    }
    let device = device_for(BackendKind::Flex, true)?;
    let mut model = Model::load(&source, &device)
        .with_context(|| format!("loading model {}", source.display()))?;
    anyhow::ensure!(
        settings.seq_len <= model.config.max_position_embeddings,
        "seq_len {} exceeds the model's context {}",
        settings.seq_len,
        model.config.max_position_embeddings
    );
    let mut metrics = JsonlWriter::append(&out.join("metrics.jsonl"))?;
    let bar = runcfg::bar("pretrain", settings.steps as u64, step as u64);
    while step < settings.steps {
        let started = std::time::Instant::now();
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
        let proportions = names
            .iter()
            .zip(stream.sampler().proportions())
            .map(|(n, p)| (n.clone(), serde_json::json!(p)))
            .collect();
        metrics.write(&Metrics {
            step,
            lr,
            loss,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            step_seconds: seconds,
            skipped: !applied,
            proportions,
        })?;
        bar.set_message(format!("loss {loss:.4}"));
        bar.inc(1);
        if (cfg.config.save_every > 0 && step.is_multiple_of(cfg.config.save_every))
            || step == settings.steps
        {
            let state = PretrainState {
                step,
                stream: stream.state(),
            };
            checkpoint::save(&out, step, &model, &optim, &state, &model_dir)?;
        }
    }
    bar.finish();
    drop(metrics);
    runcfg::write_curves(&out, "Continued pretraining", &[("loss", &["loss"])])?;
    println!("source            weight   realised  tokens     documents");
    for (i, n) in names.iter().enumerate() {
        println!(
            "{n:<17} {:>6.2}%  {:>7.2}%  {:>9}  {:>9}",
            weights[i] * 100.0,
            stream.sampler().proportions()[i] * 100.0,
            stream.sampler().tokens()[i],
            stream.documents()[i]
        );
    }
    Ok(())
}
