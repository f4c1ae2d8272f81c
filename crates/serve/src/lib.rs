//! OpenAI-compatible HTTP serving for reasonlab: the [`client`] used by eval and distillation
//! to generate through any server that speaks the protocol (vLLM, SGLang, llama.cpp's server,
//! ours), and the [`server`] (`reasonlab serve`) that puts an [`server::Engine`] behind it.

pub mod client;
pub mod server;

pub use client::{ClientConfig, ClientError, OpenAiClient};
pub use server::{
    Engine, EngineError, EngineOutput, EngineRequest, EngineSample, ServerConfig, ServerHandle,
    serve_blocking, spawn,
};
