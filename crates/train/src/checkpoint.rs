//! Training checkpoints: `OUT/checkpoints/step-N/` holds the model in HF layout (so it can be
//! evaluated or served as is), the tokenizer files, `optimizer.bpk` (AdamW moments, burnpack)
//! and `trainer_state.json` (step, data position, RNG state — whatever the trainer needs to
//! continue exactly). Every file is written atomically and `trainer_state.json` last: a
//! directory without it is an interrupted save, which [`latest`] ignores.

use std::path::{Path, PathBuf};

use reasonlab_core::fs::atomic_write;
use reasonlab_model::{Model, ModelError, SaveDtype};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::optim::AdamW;

const STATE: &str = "trainer_state.json";
const OPTIMIZER: &str = "optimizer.bpk";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenize(#[from] reasonlab_tokenize::TokenizeError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `checkpoints/step-{step}` under `out`; `source` is the directory the tokenizer files
/// are copied from. Returns the checkpoint directory.
pub fn save<S: Serialize>(
    out: &Path,
    step: usize,
    model: &Model,
    optim: &AdamW,
    state: &S,
    source: &Path,
) -> Result<PathBuf, CheckpointError> {
    save_with(
        out,
        step,
        &|dir| model.save(dir, SaveDtype::F32),
        optim,
        state,
        source,
    )
}

/// [`save`] with the model written by `write_model(dir)` (a reward model writes its own
/// layout).
pub fn save_with<S: Serialize>(
    out: &Path,
    step: usize,
    write_model: &dyn Fn(&Path) -> Result<(), ModelError>,
    optim: &AdamW,
    state: &S,
    source: &Path,
) -> Result<PathBuf, CheckpointError> {
    let dir = out.join("checkpoints").join(format!("step-{step}"));
    write_model(&dir)?;
    reasonlab_tokenize::copy_side_files(source, &dir)?;
    let path = dir.join(OPTIMIZER);
    let bytes = optim
        .state_bytes()
        .map_err(|message| CheckpointError::Invalid {
            path: path.clone(),
            message,
        })?;
    atomic_write(&path, &bytes).map_err(io(&path))?;
    let path = dir.join(STATE);
    let json = serde_json::to_vec_pretty(state).map_err(|e| CheckpointError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    atomic_write(&path, &json).map_err(io(&path))?;
    Ok(dir)
}

/// The complete checkpoint with the highest step under `out/checkpoints`, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let dir = out.join("checkpoints");
    if !dir.exists() {
        return Ok(None);
    }
    let mut best: Option<(usize, PathBuf)> = None;
    for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let p = e.map_err(io(&dir))?.path();
        let step = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(s) = step
            && p.join(STATE).exists()
            && best.as_ref().is_none_or(|b| s > b.0)
        {
            best = Some((s, p));
        }
    }
    Ok(best.map(|b| b.1))
}

/// Read a checkpoint's trainer state and restore its optimizer moments into `optim` (a
/// checkpoint without `optimizer.bpk`, from an older version, leaves `optim` fresh).
pub fn restore<S: DeserializeOwned>(dir: &Path, optim: &mut AdamW) -> Result<S, CheckpointError> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state = serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let path = dir.join(OPTIMIZER);
    if path.exists() {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        optim
            .load_state_bytes(bytes)
            .map_err(|message| CheckpointError::Invalid { path, message })?;
    } else {
        tracing::warn!(dir = %dir.display(), "checkpoint has no optimizer state; AdamW starts fresh");
    }
    Ok(state)
}

/// The model of a checkpoint on `device`: with LoRA, the base model from `base` with the
/// checkpoint's adapters attached (so training continues on the adapters); otherwise the
/// checkpoint's weights.
pub fn load_model(
    dir: &Path,
    base: &Path,
    device: &reasonlab_model::tensor::Device,
) -> Result<Model, CheckpointError> {
    if dir.join("adapter_config.json").exists() {
        Ok(Model::load(base, device)?.load_adapter(dir)?)
    } else {
        Ok(Model::load(dir, device)?)
    }
}
