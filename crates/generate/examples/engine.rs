//! The generation protocol on a local model: four chat samples with log-probs.
//!
//! `cargo run --release -p reasonlab-generate --example engine -- MODEL_DIR`

use reasonlab_core::engine::{Engine, Message, Prompt, Request, Sampling};
use reasonlab_generate::LocalEngine;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/tiny-qwen2".into());
    let engine = LocalEngine::load(dir.as_ref(), Default::default())?;
    let request = Request {
        prompt: Prompt::Messages(vec![Message::user("What is 7 - 3?")]),
        n: 4,
        sampling: Sampling {
            temperature: 1.0,
            max_new_tokens: 32,
            ..Sampling::default()
        },
        logprobs: true,
    };
    let output = engine.generate(&[request]).remove(0)?;
    for sample in &output.samples {
        println!("{:?} {}", sample.finish_reason, sample.text);
    }
    Ok(())
}
