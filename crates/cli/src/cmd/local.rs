//! Loading a local model directory (weights + tokenizer) for the subcommands that take ids.

use std::path::Path;

use anyhow::Context;
use reasonlab_model::{BackendKind, Model, device_for};
use reasonlab_tokenize::Tokenizer;

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
