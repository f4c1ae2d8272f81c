//! Training on top of the model core: losses, optimiser and schedules, SFT, continued
//! pretraining on a weighted mixture, GRPO, and checkpoints.
//!
//! Every burn call of training lives here (with `model` and `generate`); the rest of the
//! workspace sees plain Rust types.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod grpo;
pub mod lm;
pub mod optim;
pub mod pretrain;
pub mod rm;
pub mod sft;

pub use lm::{causal_lm_loss, lm_train_step, masked_nll_sum};
pub use optim::{AdamW, AdamWSettings, Schedule};
