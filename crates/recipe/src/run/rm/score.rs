//! `reasonlab rm score`: a reward model's score for every line of a JSONL file, one
//! output line per input line, in order.
//!
//! An outcome reward model reads `{"prompt": text, "completion": text}` (scored as the
//! concatenation, with the tokenizer's special tokens), `{"messages": [...]}`, or TRL's
//! conversational `{"prompt": [...], "completion": [...]}` (rendered with the model's chat
//! template), and writes `{"score": x}`. A process reward model reads `{"prompt", "completions":
//! [step, …]}` or `{"prompt", "completion"}` split on the separator, tokenised as in training
//! (TRL's stepwise layout), and writes `{"step_scores": [P(good), …]}`. Either writes the
//! input's `id` when it has one, or `{"error": "FILE:LINE: …"}` for a line that cannot be scored,
//! so line `i` of the output always answers line `i` of the input.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use reasonlab_core::engine::Message;
use reasonlab_core::jsonl;
use reasonlab_model::{BackendKind, PadSide, TokenBatch};
use reasonlab_tokenize::Tokenizer;
use serde::Serialize;
use serde_json::{Value, json};

use super::super::{Event, RunError, io};

/// A scoring job.
#[derive(Debug, Clone, PartialEq)]
pub struct RmScoreConfig {
    /// A reward checkpoint (HF layout) with its tokenizer, or a causal LM with `head`.
    pub model: PathBuf,
    /// How to read a causal LM (the Math-Shepherd good-token convention); a classification
    /// checkpoint needs none.
    pub head: Option<super::HeadSpec>,
    /// Between steps, when a process model splits a `completion`.
    pub separator: String,
    pub input: PathBuf,
    pub out: PathBuf,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Tensor backend.
    pub backend: BackendKind,
}

/// What a scoring job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RmScoreSummary {
    pub lines: usize,
    pub scored: usize,
    pub errors: usize,
}

/// An input line's token ids, `id` and (process models) step ends, or why it cannot be scored.
type Encoded = Result<Row, String>;

/// Token ids, the input's `id`, and the step ends (process models).
type Row = (Vec<u32>, Option<Value>, Option<Vec<usize>>);

/// The token ids and step ends of one input line for a process model.
fn encode_steps(line: &str, tok: &Tokenizer, context: usize, sep: &str) -> Encoded {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let id = v.get("id").cloned();
    let prompt = v["prompt"].as_str().ok_or("expected a `prompt` string")?;
    let steps: Vec<String> = match (&v["completions"], &v["completion"]) {
        (Value::Array(_), _) => serde_json::from_value(v["completions"].clone())
            .map_err(|_| "`completions` must be a list of step strings".to_string())?,
        (_, Value::String(c)) => c
            .split(sep)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => return Err("expected `completions` (steps) or a `completion`".into()),
    };
    if steps.is_empty() {
        return Err("no steps".into());
    }
    let (ids, ends) = reasonlab_train::rm::encode_steps(tok, prompt, &steps, sep)?;
    if ids.len() > context {
        return Err(format!(
            "{} tokens; the model's context is {context}",
            ids.len()
        ));
    }
    Ok((ids, id, Some(ends)))
}

/// The token ids of one input line, or why it cannot be scored.
fn encode(line: &str, tok: &Tokenizer, context: usize) -> Encoded {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let id = v.get("id").cloned();
    let messages = |x: &Value| -> Result<Vec<Message>, String> {
        serde_json::from_value(x.clone()).map_err(|e| format!("not a list of messages: {e}"))
    };
    let ids = match (v.get("messages"), v.get("prompt"), v.get("completion")) {
        (Some(m), _, _) => tok.encode_chat(&messages(m)?, false),
        (None, Some(Value::Array(_)), Some(Value::Array(_))) => {
            let mut all = messages(&v["prompt"])?;
            all.extend(messages(&v["completion"])?);
            tok.encode_chat(&all, false)
        }
        (None, Some(Value::String(p)), Some(Value::String(c))) => {
            tok.encode(&format!("{p}{c}"), true)
        }
        _ => return Err("expected `prompt` and `completion`, or `messages`".into()),
    }
    .map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err("encodes to no tokens".into());
    }
    if ids.len() > context {
        return Err(format!(
            "{} tokens; the model's context is {context}",
            ids.len()
        ));
    }
    Ok((ids, id, None))
}

/// Score every line of `cfg.input` into `cfg.out`.
pub fn score_file(
    cfg: &RmScoreConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RmScoreSummary, RunError> {
    let device = super::super::open_device(
        cfg.backend,
        reasonlab_model::Purpose::Inference(reasonlab_model::Precision::F32),
        on_event,
    )?;
    let rm = super::load(&cfg.model, cfg.head.as_ref(), 0, &device)?;
    let process = rm.head().is_process();
    let tok = Tokenizer::from_dir(&cfg.model)?;
    let pad = tok.pad_id();
    let context = rm.model().config.max_position_embeddings;
    // Every line's ids or error, in order (blank lines are skipped, as the readers do).
    let mut rows: Vec<Encoded> = Vec::new();
    for (i, line) in jsonl::open(&cfg.input)?.lines().enumerate() {
        let line = line.map_err(io(&cfg.input))?;
        if line.trim().is_empty() {
            continue;
        }
        let encoded = match process {
            true => encode_steps(&line, &tok, context, &cfg.separator),
            false => encode(&line, &tok, context),
        };
        rows.push(encoded.map_err(|e| format!("{}:{}: {e}", cfg.input.display(), i + 1)));
    }
    on_event(Event::Started {
        stage: "rm score",
        total: rows.len(),
        done: 0,
        resumed_from: None,
    });
    let mut scores: Vec<Option<Value>> = vec![None; rows.len()];
    let ok: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_ok()).collect();
    let mut done = 0;
    for chunk in ok.chunks(cfg.batch_size.max(1)) {
        let rows_of: Vec<&Row> = chunk
            .iter()
            .filter_map(|&i| rows[i].as_ref().ok())
            .collect();
        let seqs: Vec<Vec<u32>> = rows_of.iter().map(|r| r.0.clone()).collect();
        let batch = TokenBatch::pad(&seqs, pad, PadSide::Right);
        if process {
            let ends: Vec<Vec<usize>> = rows_of
                .iter()
                .map(|r| r.2.clone().unwrap_or_default())
                .collect();
            for (&i, s) in chunk.iter().zip(rm.step_probs(&batch, &ends)?) {
                scores[i] = Some(json!({ "step_scores": s }));
            }
        } else {
            for (&i, s) in chunk.iter().zip(rm.scores(&batch)?) {
                scores[i] = s.first().map(|x| json!({ "score": x }));
            }
        }
        done += chunk.len();
        on_event(Event::Progress {
            done,
            message: String::new(),
        });
    }
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let file = std::fs::File::create(&cfg.out).map_err(io(&cfg.out))?;
    let mut w = BufWriter::new(file);
    let mut summary = RmScoreSummary {
        lines: rows.len(),
        scored: 0,
        errors: 0,
    };
    for (row, score) in rows.iter().zip(scores) {
        let line = match (row, score) {
            (Ok((_, id, _)), Some(mut s)) => {
                summary.scored += 1;
                if let Some(id) = id {
                    s["id"] = id.clone();
                }
                s
            }
            (Err(e), _) => {
                summary.errors += 1;
                json!({"error": e})
            }
            (Ok(_), None) => {
                summary.errors += 1;
                json!({"error": "no score"})
            }
        };
        writeln!(w, "{line}").map_err(io(&cfg.out))?;
    }
    w.flush().map_err(io(&cfg.out))?;
    Ok(summary)
}
