//! OpenAI-compatible HTTP serving for reasonlab: the [`client`] used by eval and distillation
//! to generate through any server that speaks the protocol (vLLM, SGLang, llama.cpp's server,
//! ours), the [`pool`] that spreads GRPO rollouts over several servers and keeps their
//! weights in step with the trainer, and the [`server`] (`reasonlab serve`) that puts any [`reasonlab_core::engine::Engine`] behind it.

#![forbid(unsafe_code)]

pub mod client;
pub mod pool;
pub mod server;
pub mod wire;

pub use client::{ClientConfig, ClientError, OpenAiClient};
pub use pool::{PoolError, PoolEvent, RolloutPool};
pub use server::{ServerConfig, ServerHandle, serve_blocking, spawn};
