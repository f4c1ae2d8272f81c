//! Loading a local model directory (weights + tokenizer) for the subcommands that take ids.

use std::path::Path;

use anyhow::Context;
use reasonlab_model::tensor::Device;
use reasonlab_model::{BackendKind, DeviceInfo, Model, Precision, device_for};
use reasonlab_tokenize::Tokenizer;

/// Open `backend`'s device for inference in `precision` and say on stderr where it landed.
pub fn open(backend: BackendKind, precision: Precision) -> anyhow::Result<Device> {
    let (device, info) = reasonlab_model::open_inference(backend, precision)?;
    report(&info);
    Ok(device)
}

/// The device line on stderr, and a warning when a GPU backend runs on a software adapter or its
/// matmuls cannot reach the card's tensor cores.
pub fn report(info: &DeviceInfo) {
    eprintln!("{info}");
    for warning in info.warnings() {
        tracing::warn!("{warning}");
    }
}

/// Load `DIR` on the chosen backend; the tokenizer is optional (some subcommands take ids).
pub fn load(dir: &Path, backend: BackendKind) -> anyhow::Result<(Model, Option<Tokenizer>)> {
    let device = device_for(backend, false)?;
    let model =
        Model::load(dir, &device).with_context(|| format!("loading model {}", dir.display()))?;
    let tokenizer = if dir.join("tokenizer.json").exists() {
        Some(
            Tokenizer::from_dir(dir)
                .with_context(|| format!("loading tokenizer {}", dir.display()))?,
        )
    } else {
        None
    };
    Ok((model, tokenizer))
}
