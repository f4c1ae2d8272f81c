//! What the GPU-path test binaries share: the fixture, the backend under test, a ragged batch.
//! Each binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use reasonlab_model::{BackendKind, Model, PadSide, TokenBatch};

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2")
}

/// The GPU backend under test: `REASONLAB_GPU_BACKEND` (wgpu or vulkan), else the first
/// compiled in.
pub fn backend() -> BackendKind {
    match std::env::var("REASONLAB_GPU_BACKEND") {
        Ok(name) => name.parse().expect("REASONLAB_GPU_BACKEND"),
        Err(_) if cfg!(feature = "wgpu") => BackendKind::Wgpu,
        Err(_) => BackendKind::Vulkan,
    }
}

/// The failure when the GPU backend opens no device: what to install.
pub fn no_device(what: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "no {what}: {e}. These tests need a Vulkan driver: a GPU's, or Mesa's lavapipe \
         (Debian: apt-get install mesa-vulkan-drivers libvulkan1)"
    )
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `model`'s log-probs of `batch`, 0 at padding, as f32.
pub fn masked_logprobs(model: &Model, batch: &TokenBatch) -> Vec<f32> {
    let mask = model.target_mask(batch).try_into_vec_as::<f32>().unwrap();
    let lp = model
        .token_logprobs(batch)
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap();
    lp.iter().zip(&mask).map(|(l, k)| l * k).collect()
}

/// Two sequences of 12 and 5 tokens, right-padded.
pub fn ragged_batch() -> TokenBatch {
    TokenBatch::pad(
        &[
            vec![5, 17, 42, 9, 300, 7, 88, 61, 2, 19, 230, 11],
            vec![3, 8, 400, 21, 6],
        ],
        0,
        PadSide::Right,
    )
}
