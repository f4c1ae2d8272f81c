//! `reasonlab rm label`: Math-Shepherd automatic process labels (Wang et al. 2024).
//!
//! Each input solution is split into steps; for every step but the last, a completer (any
//! [`Engine`]: a local model or an OpenAI-compatible endpoint) finishes the solution from the
//! prefix ending at that step `n` times, and reasonlab's verifier checks each finished solution
//! against the gold answer. A step's **soft** label is the fraction of completions that reach
//! the answer, its **hard** label whether any does. The last step's label is the verdict on the
//! whole solution (nothing is left to complete).
//!
//! Input lines: `{"prompt", "completions": [step, …], "answer"}` or `{"prompt", "completion":
//! text, "answer"}` (split on the separator); `problem` and `solution` are read as `prompt` and
//! `completion`, a `messages` record (what `reasonlab sample` writes) gives its first user turn
//! and last assistant turn, and `id` is kept. The completer sees `prompt + step₁ + sep + … + stepᵢ + sep` as
//! plain text. Output lines are TRL's stepwise-supervision format, ready for `rm train`:
//! `{"id", "prompt", "completions", "labels", "soft_labels", "answer"}` with `labels` the
//! chosen estimate (booleans for hard, fractions for soft).
//!
//! Crash-safe and resumable: a line is appended (and flushed) when its solution is done, and a
//! second run skips the ids already in the output after dropping a torn last line.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use reasonlab_answer::{VerifyConfig, verify};
use reasonlab_core::engine::{Engine, Prompt, Request, Sampling};
use reasonlab_core::jsonl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::{Event, RunError, io};

/// How step labels are estimated from the completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Estimate {
    /// Good when any completion reaches the answer.
    #[default]
    Hard,
    /// The fraction of completions that reach it.
    Soft,
}

/// A labelling job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    pub input: PathBuf,
    pub out: PathBuf,
    /// Completions per step.
    pub n: usize,
    /// Between steps, when splitting a `completion` and when building a completer's prefix.
    pub separator: String,
    pub estimate: Estimate,
    pub sampling: Sampling,
    /// Solutions per engine call.
    pub chunk_size: usize,
}

/// What a labelling job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct LabelSummary {
    pub solutions: usize,
    /// Already in the output from an earlier run.
    pub skipped: usize,
    pub steps: usize,
    pub good_steps: usize,
    pub completions: usize,
    /// Lines that could not be labelled (reported with file and line).
    pub errors: usize,
}

/// One solution to label.
#[derive(Debug, Clone, PartialEq)]
struct Solution {
    id: String,
    prompt: String,
    steps: Vec<String>,
    answer: String,
}

fn text<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| v.get(*n).and_then(Value::as_str))
}

/// The first user turn and the last assistant turn of a `messages` record (what
/// `reasonlab sample` writes).
fn turns(v: &Value) -> (Option<&str>, Option<&str>) {
    let Some(Value::Array(messages)) = v.get("messages") else {
        return (None, None);
    };
    fn turn<'v>(m: &'v Value, role: &str) -> Option<&'v str> {
        (m.get("role").and_then(Value::as_str) == Some(role))
            .then(|| m.get("content").and_then(Value::as_str))
            .flatten()
    }
    (
        messages.iter().find_map(|m| turn(m, "user")),
        messages.iter().rev().find_map(|m| turn(m, "assistant")),
    )
}

fn parse(v: &Value, line: usize, sep: &str) -> Result<Solution, String> {
    let (user, assistant) = turns(v);
    let prompt = text(v, &["prompt", "problem"])
        .or(user)
        .ok_or("missing `prompt` (or `problem`, or a user turn in `messages`)")?;
    let answer = match v.get("answer") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("missing `answer` (a string or a number)".into()),
    };
    let completion = text(v, &["completion", "solution"]).or(assistant);
    let steps: Vec<String> = match (v.get("completions"), completion) {
        (Some(list), _) => serde_json::from_value(list.clone())
            .map_err(|_| "`completions` must be a list of step strings".to_string())?,
        (None, Some(c)) => c
            .split(sep)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        (None, None) => return Err("missing `completions` (steps) or `completion`".into()),
    };
    if steps.is_empty() {
        return Err("the solution has no steps".into());
    }
    let id = match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => format!("line-{line}"),
    };
    Ok(Solution {
        id,
        prompt: prompt.to_string(),
        steps,
        answer,
    })
}

/// The ids already in `out`, after cutting a torn last line (an interrupted write).
fn done_ids(out: &Path) -> Result<HashSet<String>, RunError> {
    let Ok(bytes) = std::fs::read(out) else {
        return Ok(HashSet::new());
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .map_err(io(out))?;
        f.set_len(keep as u64).map_err(io(out))?;
    }
    Ok(String::from_utf8_lossy(&bytes[..keep])
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect())
}

/// The verifier's verdict on a finished solution.
fn reaches(answer: &str, solution: &str, problem: &str, cfg: &VerifyConfig) -> bool {
    verify(answer, solution, Some(problem), cfg).correct
}

/// Label every solution of `cfg.input` into `cfg.out` with `engine` as the completer.
pub fn label(
    cfg: &LabelConfig,
    engine: &dyn Engine,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<LabelSummary, RunError> {
    if cfg.n == 0 || cfg.separator.is_empty() {
        return Err(RunError::Invalid(
            "rm label needs n ≥ 1 completions per step and a non-empty separator".into(),
        ));
    }
    let mut summary = LabelSummary::default();
    let mut todo = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in jsonl::open(&cfg.input)?.lines().enumerate() {
        let line = line.map_err(io(&cfg.input))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| parse(&v, i + 1, &cfg.separator))
        {
            Ok(s) => todo.push(s),
            Err(e) => errors.push(format!("{}:{}: {e}", cfg.input.display(), i + 1)),
        }
    }
    summary.errors = errors.len();
    for e in &errors {
        on_event(Event::Note(format!("{e}; line skipped")));
    }
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let done = done_ids(&cfg.out)?;
    let total = todo.len();
    todo.retain(|s| !done.contains(&s.id));
    summary.skipped = total - todo.len();
    on_event(Event::Started {
        stage: "rm label",
        total,
        done: summary.skipped,
        resumed_from: None,
    });
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.out)
        .map_err(io(&cfg.out))?;
    let verify_cfg = VerifyConfig::default();
    let mut finished = summary.skipped;
    for chunk in todo.chunks(cfg.chunk_size.max(1)) {
        // One request per step prefix (every step but the last).
        let mut requests = Vec::new();
        for s in chunk {
            for i in 0..s.steps.len() - 1 {
                requests.push(Request {
                    prompt: Prompt::Text(prefix(s, i, &cfg.separator)),
                    n: cfg.n,
                    sampling: cfg.sampling.clone(),
                    logprobs: false,
                });
            }
        }
        let mut outputs = engine.generate(&requests).into_iter();
        for s in chunk {
            // A failed request leaves the solution out of the output: a second run retries it.
            let got: Vec<_> = outputs.by_ref().take(s.steps.len() - 1).collect();
            if let Some(Err(e)) = got.iter().find(|o| o.is_err()) {
                summary.errors += 1;
                on_event(Event::Note(format!(
                    "{}: completer failed ({e}); left for a rerun",
                    s.id
                )));
                continue;
            }
            let mut soft = Vec::with_capacity(s.steps.len());
            for (i, output) in got.into_iter().enumerate() {
                let output = output.expect("checked above");
                let head = prefix(s, i, &cfg.separator);
                let right = output
                    .samples
                    .iter()
                    .filter(|x| {
                        reaches(
                            &s.answer,
                            &format!("{head}{}", x.text),
                            &s.prompt,
                            &verify_cfg,
                        )
                    })
                    .count();
                summary.completions += output.samples.len();
                soft.push(right as f64 / output.samples.len().max(1) as f64);
            }
            let whole = prefix(s, s.steps.len() - 1, &cfg.separator);
            soft.push(f64::from(u8::from(reaches(
                &s.answer,
                &whole,
                &s.prompt,
                &verify_cfg,
            ))));
            let hard: Vec<bool> = soft.iter().map(|&x| x > 0.0).collect();
            summary.steps += hard.len();
            summary.good_steps += hard.iter().filter(|&&h| h).count();
            let labels = match cfg.estimate {
                Estimate::Hard => json!(hard),
                Estimate::Soft => json!(soft),
            };
            let line = json!({
                "id": s.id,
                "prompt": s.prompt,
                "completions": s.steps,
                "labels": labels,
                "soft_labels": soft,
                "answer": s.answer,
            });
            writeln!(out, "{line}").map_err(io(&cfg.out))?;
            out.flush().map_err(io(&cfg.out))?;
            summary.solutions += 1;
            finished += 1;
            on_event(Event::Progress {
                done: finished,
                message: format!("{} / {} steps good", summary.good_steps, summary.steps),
            });
        }
    }
    Ok(summary)
}

/// The prompt and steps `0..=i`, each followed by the separator.
fn prefix(s: &Solution, i: usize, sep: &str) -> String {
    let mut text = s.prompt.clone();
    for step in &s.steps[..=i] {
        text.push_str(step);
        text.push_str(sep);
    }
    text
}
