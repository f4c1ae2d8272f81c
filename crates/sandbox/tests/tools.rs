//! Tools inside generation with a scripted engine that writes known code blocks.

use std::path::Path;
use std::sync::Mutex;

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, Message, ModelInfo, Output, Prompt, Request, Role, Sample,
};
use reasonlab_sandbox::tools::{ToolConfig, ToolEngine, ToolFormat, ToolStats};
use reasonlab_sandbox::{Isolation, Limits, Sandbox};

/// Writes the next step of a fixed tool-integrated solution, depending on what the context
/// already holds; records every request it saw.
struct Scripted {
    seen: Mutex<Vec<Request>>,
}

impl Scripted {
    fn new() -> Self {
        Self {
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The context the model continues: the text prompt, or the partial assistant message.
    fn context(p: &Prompt) -> String {
        match p {
            Prompt::Text(t) => t.clone(),
            Prompt::Messages(m) => match m.last() {
                Some(last) if last.role == Role::Assistant => last.content.clone(),
                _ => String::new(),
            },
        }
    }

    fn next(ctx: &str, stop: &[String]) -> &'static str {
        if ctx.contains("PoT") {
            return "```python\nprint(17 + 1)\n```";
        }
        if ctx.contains("<code>") {
            return if ctx.contains("<output>") {
                " done"
            } else {
                "<code>print(2 + 2)"
            };
        }
        if ctx.contains("```output\n43\n```") {
            "So the answer is \\boxed{43}."
        } else if ctx.contains("```output\n42\n```") {
            "Now add one.\n```python\ny = x + 1\nprint(y)\n```\n"
        } else if ctx.contains("ZeroDivisionError") {
            "Oops.\\boxed{0}"
        } else if ctx.contains("divide") {
            "```python\nprint(1 / 0)\n```\n"
        } else if stop.iter().any(|s| s == "```output") || ctx.contains("Question") {
            "Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n"
        } else {
            "nothing"
        }
    }
}

impl Engine for Scripted {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "scripted".into(),
            hash: "0".into(),
            location: "memory".into(),
        }
    }

    fn generate_streaming(
        &self,
        requests: &[Request],
        _on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        self.seen.lock().unwrap().extend(requests.iter().cloned());
        requests
            .iter()
            .map(|r| {
                let text = Self::next(&Self::context(&r.prompt), &r.sampling.stop);
                Ok(Output {
                    prompt_tokens: 7,
                    samples: (0..r.n)
                        .map(|_| Sample {
                            text: text.to_string(),
                            finish_reason: FinishReason::Stop,
                            completion_tokens: 5,
                            logprobs: None,
                            token_ids: None,
                            policy_version: None,
                        })
                        .collect(),
                })
            })
            .collect()
    }
}

fn sandbox() -> Sandbox {
    let limits = Limits {
        preload: vec![],
        ..Limits::default()
    };
    Sandbox::new(Path::new("python3"), limits, Isolation::Required, 2)
        .unwrap_or_else(|e| panic!("THE SANDBOX TESTS CANNOT RUN ON THIS MACHINE: {e}"))
}

fn request(prompt: Prompt, n: usize) -> Request {
    Request {
        prompt,
        n,
        sampling: reasonlab_core::engine::Sampling {
            max_new_tokens: 100,
            ..Default::default()
        },
        logprobs: false,
    }
}

#[test]
fn tora_blocks_run_in_one_session_and_their_outputs_go_back() {
    let inner = Scripted::new();
    let engine = ToolEngine::new(&inner, sandbox(), ToolConfig::new(ToolFormat::Tora));
    let out = engine
        .generate(&[request(Prompt::Text("Question: 6 * 7 + 1?\n".into()), 2)])
        .remove(0)
        .unwrap();
    let expected = "Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n```output\n42\n```\n\
                    Now add one.\n```python\ny = x + 1\nprint(y)\n```\n```output\n43\n```\n\
                    So the answer is \\boxed{43}.";
    assert_eq!(out.samples.len(), 2);
    for s in &out.samples {
        assert_eq!(s.text, expected);
        assert_eq!(s.completion_tokens, 15, "the model's tokens only");
        assert_eq!(s.finish_reason, FinishReason::Stop);
    }
    assert_eq!(out.prompt_tokens, 7);
    let seen = inner.seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|r| r.n == 1 && r.sampling.stop == ["```output"])
    );
    assert_eq!(seen.len(), 6, "three rounds of two samples");
    assert_eq!(seen[2].sampling.max_new_tokens, 95, "the budget shrinks");
    assert_eq!(seen[1].sampling.seed, 1, "sample j keeps seed + j");
    let mut stats = ToolStats::default();
    stats.add(&ToolFormat::Tora, &out.samples[0].text);
    assert_eq!((stats.calls, stats.errors, stats.timeouts), (2, 0, 0));
}

#[test]
fn chat_prompts_continue_the_assistant_message() {
    let inner = Scripted::new();
    let engine = ToolEngine::new(&inner, sandbox(), ToolConfig::new(ToolFormat::Tora));
    let prompt = Prompt::Messages(vec![Message::user("Question: 6 * 7 + 1?")]);
    let out = engine.generate(&[request(prompt, 1)]).remove(0).unwrap();
    assert!(
        out.samples[0].text.ends_with("\\boxed{43}."),
        "{}",
        out.samples[0].text
    );
    let seen = inner.seen.lock().unwrap();
    match &seen[1].prompt {
        Prompt::Messages(m) => {
            assert_eq!(m.len(), 2);
            assert_eq!(m[1].role, Role::Assistant);
            assert!(m[1].content.ends_with("```output\n42\n```\n"), "{:?}", m[1]);
        }
        p => panic!("{p:?}"),
    }
}

#[test]
fn calls_stop_at_the_limit() {
    let inner = Scripted::new();
    let mut cfg = ToolConfig::new(ToolFormat::Tora);
    cfg.max_calls = 1;
    let engine = ToolEngine::new(&inner, sandbox(), cfg);
    let out = engine
        .generate(&[request(Prompt::Text("Question: 6 * 7 + 1?\n".into()), 1)])
        .remove(0)
        .unwrap();
    let text = &out.samples[0].text;
    assert_eq!(text.matches("```output").count(), 1, "{text}");
    assert!(text.ends_with("print(y)\n```\n"), "{text}");
    assert!(inner.seen.lock().unwrap()[1].sampling.stop.is_empty());
}

#[test]
fn errors_go_back_as_their_last_line_and_are_counted() {
    let inner = Scripted::new();
    let engine = ToolEngine::new(&inner, sandbox(), ToolConfig::new(ToolFormat::Tora));
    let out = engine
        .generate(&[request(Prompt::Text("Please divide.\n".into()), 1)])
        .remove(0)
        .unwrap();
    let text = &out.samples[0].text;
    assert!(
        text.contains("```output\nZeroDivisionError: division by zero\n```"),
        "{text}"
    );
    let mut stats = ToolStats::default();
    stats.add(&ToolFormat::Tora, text);
    assert_eq!((stats.calls, stats.errors, stats.timeouts), (1, 1, 0));
}

#[test]
fn program_of_thought_runs_the_program_once_at_the_end() {
    let inner = Scripted::new();
    let engine = ToolEngine::new(&inner, sandbox(), ToolConfig::new(ToolFormat::Pot));
    let out = engine
        .generate(&[request(Prompt::Text("PoT: eggs\n".into()), 1)])
        .remove(0)
        .unwrap();
    assert_eq!(
        out.samples[0].text,
        "```python\nprint(17 + 1)\n```\n```output\n18\n```\n"
    );
    assert!(inner.seen.lock().unwrap()[0].sampling.stop.is_empty());
}

#[test]
fn custom_tags_are_honoured() {
    let inner = Scripted::new();
    let format = ToolFormat::Tags {
        code_open: "<code>".into(),
        code_close: "</code>".into(),
        output_open: "<output>".into(),
        output_close: "</output>".into(),
    };
    let engine = ToolEngine::new(&inner, sandbox(), ToolConfig::new(format.clone()));
    let out = engine
        .generate(&[request(Prompt::Text("Q: <code> tags\n".into()), 1)])
        .remove(0)
        .unwrap();
    assert_eq!(
        out.samples[0].text,
        "<code>print(2 + 2)</code><output>4</output> done"
    );
    let mut stats = ToolStats::default();
    stats.add(&format, &out.samples[0].text);
    assert_eq!(stats.calls, 1);
}

#[test]
fn the_hash_keeps_tool_runs_apart() {
    let inner = Scripted::new();
    let a = ToolEngine::new(&inner, sandbox(), ToolConfig::new(ToolFormat::Tora));
    let b = ToolEngine::new(&inner, sandbox(), ToolConfig::new(ToolFormat::Pot));
    assert_ne!(a.info().hash, inner.info().hash);
    assert_ne!(a.info().hash, b.info().hash);
}
