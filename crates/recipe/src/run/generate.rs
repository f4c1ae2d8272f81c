//! `reasonlab generate`: sample completions for a JSONL (or Parquet) file of prompts into a
//! JSONL file, one line per sample with its id, indices, finish reason, token count and the
//! sampling settings.

use std::path::PathBuf;

use reasonlab_core::engine::{Engine, Message, ModelInfo, Prompt, Request, Role, Sampling};
use reasonlab_core::jsonl::{self, BadLines, JsonlWriter};
use reasonlab_generate::{GenStats, LocalEngine, SamplingParams, generate};
use reasonlab_model::{BackendKind, Model, Precision};
use reasonlab_sandbox::tools::ToolEngine;
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

use super::eval::ToolSetup;
use super::{Event, RunError, io};

/// A generation job.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// HF model directory (with `tokenizer.json`).
    pub model: PathBuf,
    pub backend: BackendKind,
    /// The model's float type (`bf16` / `f16` on a GPU backend).
    pub dtype: Precision,
    /// `prompt` (text), `messages` (chat) or `problem` per line; `id` is echoed.
    pub prompts: PathBuf,
    pub out: PathBuf,
    /// Samples per prompt.
    pub n: usize,
    /// Render `problem` / `prompt` as a user message with the model's chat template.
    pub chat: bool,
    pub bad_lines: BadLines,
    pub sampling: SamplingParams,
    /// Tool use: the completions' code runs in the sandbox and its output goes back into them.
    pub tools: Option<ToolSetup>,
}

#[derive(Deserialize)]
struct PromptLine {
    id: Option<serde_json::Value>,
    prompt: Option<String>,
    problem: Option<String>,
    messages: Option<Vec<Message>>,
}

/// What a generation job did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateSummary {
    pub completions: usize,
    pub stats: GenStats,
}

/// Run the job, reporting progress in tokens out of prompts × n × max_new_tokens (the most
/// there can be).
pub fn run(
    cfg: &GenerateConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<GenerateSummary, RunError> {
    let device = super::open_device(
        cfg.backend,
        reasonlab_model::Purpose::Inference(cfg.dtype),
        on_event,
    )?;
    let model = Model::load_as(&cfg.model, &device, cfg.dtype)?.pack_projections();
    let tok = Tokenizer::from_dir(&cfg.model)?;
    let lines: Vec<PromptLine> = jsonl::read(&cfg.prompts, cfg.bad_lines)?;
    if let Some(t) = &cfg.tools {
        return run_with_tools(cfg, t, model, tok, &lines);
    }
    let mut prompts = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let ids = match (&l.messages, l.prompt.as_ref().or(l.problem.as_ref())) {
            (Some(m), _) => tok.encode_chat(m, true)?,
            (None, Some(text)) if cfg.chat => {
                tok.encode_chat(&[Message::new(Role::User, text.clone())], true)?
            }
            (None, Some(text)) => tok.encode(text, true)?,
            (None, None) => {
                return Err(RunError::Invalid(format!(
                    "{}: record {} has none of `prompt`, `problem`, `messages`",
                    cfg.prompts.display(),
                    i + 1
                )));
            }
        };
        prompts.push(ids);
    }
    let params = SamplingParams {
        stop_token_ids: tok.eos_id().into_iter().collect(),
        ..cfg.sampling.clone()
    };
    on_event(Event::Started {
        stage: "generate",
        total: prompts.len() * cfg.n * params.max_new_tokens,
        done: 0,
        resumed_from: None,
    });
    let mut done = 0;
    let (out, stats) = generate(&model, Some(&tok), &prompts, cfg.n, &params, &mut |k| {
        done += k;
        on_event(Event::Progress {
            done,
            message: "tokens (at most)".into(),
        })
    })
    .map_err(|e| RunError::Invalid(e.to_string()))?;
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let file = std::fs::File::create(&cfg.out).map_err(io(&cfg.out))?;
    let mut w = JsonlWriter::new(std::io::BufWriter::new(file));
    for c in &out {
        w.write(&serde_json::json!({
            "id": lines[c.prompt_index].id,
            "prompt_index": c.prompt_index,
            "sample_index": c.sample_index,
            "completion": c.text,
            "finish_reason": c.finish_reason,
            "completion_tokens": c.token_ids.len(),
            "sampling": params,
        }))
        .map_err(io(&cfg.out))?;
    }
    Ok(GenerateSummary {
        completions: out.len(),
        stats,
    })
}

/// [`run`] through the tool engine: every request's code blocks run in the sandbox.
fn run_with_tools(
    cfg: &GenerateConfig,
    tools: &ToolSetup,
    model: Model,
    tok: Tokenizer,
    lines: &[PromptLine],
) -> Result<GenerateSummary, RunError> {
    let p = &cfg.sampling;
    let sampling = Sampling {
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: (p.top_k > 0).then_some(p.top_k),
        min_p: p.min_p,
        max_new_tokens: p.max_new_tokens,
        seed: p.seed,
        stop: p.stop.clone(),
    };
    let mut requests = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let prompt = match (&l.messages, l.prompt.as_ref().or(l.problem.as_ref())) {
            (Some(m), _) => Prompt::Messages(m.clone()),
            (None, Some(text)) if cfg.chat => Prompt::Messages(vec![Message::user(text.clone())]),
            (None, Some(text)) => Prompt::Text(text.clone()),
            (None, None) => {
                return Err(RunError::Invalid(format!(
                    "{}: record {} has none of `prompt`, `problem`, `messages`",
                    cfg.prompts.display(),
                    i + 1
                )));
            }
        };
        requests.push(Request {
            prompt,
            n: cfg.n,
            sampling: sampling.clone(),
            logprobs: false,
        });
    }
    let info = ModelInfo {
        name: cfg.model.display().to_string(),
        hash: String::new(),
        location: cfg.model.display().to_string(),
    };
    let inner = LocalEngine::new(model, tok, info)
        .with_batching(cfg.sampling.batching())
        .map_err(|e| RunError::Invalid(e.to_string()))?;
    let engine = ToolEngine::new(&inner, tools.sandbox()?, tools.config());
    let started = std::time::Instant::now();
    let outputs = engine.generate(&requests);
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let file = std::fs::File::create(&cfg.out).map_err(io(&cfg.out))?;
    let mut w = JsonlWriter::new(std::io::BufWriter::new(file));
    let (mut completions, mut tokens) = (0, 0);
    for (i, out) in outputs.into_iter().enumerate() {
        let out = out.map_err(|e| {
            RunError::Invalid(format!("{}: record {}: {e}", cfg.prompts.display(), i + 1))
        })?;
        for (j, s) in out.samples.iter().enumerate() {
            w.write(&serde_json::json!({
                "id": lines[i].id,
                "prompt_index": i,
                "sample_index": j,
                "completion": s.text,
                "finish_reason": s.finish_reason,
                "completion_tokens": s.completion_tokens,
                "tool_calls": tools.format.count_outputs(&s.text),
                "sampling": sampling,
            }))
            .map_err(io(&cfg.out))?;
            completions += 1;
            tokens += s.completion_tokens;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(GenerateSummary {
        completions,
        stats: GenStats {
            new_tokens: tokens,
            prompt_tokens: 0,
            seconds,
        },
    })
}
