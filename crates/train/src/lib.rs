//! Training on top of the model core: losses, optimiser and schedules.
//!
//! Every burn call of training lives here (with `model` and `generate`); the rest of the
//! workspace sees plain Rust types.

pub mod grpo;
pub mod lm;
pub mod optim;

pub use lm::{causal_lm_loss, lm_train_step};
pub use optim::{AdamW, AdamWSettings, Schedule};
