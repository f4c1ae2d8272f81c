//! OpenAI-compatible HTTP serving for reasonlab: the [`client`] used by eval and distillation
//! to generate through any server that speaks the protocol (vLLM, SGLang, llama.cpp's server,
//! ours).

pub mod client;

pub use client::{ClientConfig, ClientError, OpenAiClient};
