//! JSONL streams behind `reasonlab verify` and `reasonlab reward`.
//!
//! Input is read in chunks of [`CHUNK`] lines; each chunk is scored in parallel with rayon and
//! written back in input order, so memory stays bounded however long the stream is. A line that
//! is not a valid record produces `{"error": "line N: …"}` on its own output line and the run
//! goes on. Blank lines are skipped (they are not records and produce no output).

use crate::Sample;
use crate::config::RewardConfig;
use crate::error::Error;
use rayon::prelude::*;
use reasonlab_answer::{VerifyConfig, verify};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::io::{BufRead, Read, Write};

/// Lines scored in parallel at a time.
pub const CHUNK: usize = 4096;
/// Longest input line accepted, in bytes; longer lines are reported as errors and skipped.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Counts for a `verify` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerifyStats {
    /// Records read (blank lines excluded).
    pub lines: u64,
    pub correct: u64,
    pub incorrect: u64,
    /// Malformed records.
    pub errors: u64,
}

/// Counts for a `reward` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RewardStats {
    pub lines: u64,
    pub errors: u64,
    /// Mean weighted total over scored records (0 when none).
    pub mean_total: f64,
}

fn pool(threads: usize) -> Result<rayon::ThreadPool, Error> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Threads {
            threads,
            message: e.to_string(),
        })
}

/// One input line: its number and text, or why it could not be read.
type Record = (usize, Result<String, String>);

/// Reads up to `CHUNK` non-blank records.
fn read_chunk(input: &mut impl BufRead, line_no: &mut usize) -> Result<Vec<Record>, Error> {
    let mut chunk = Vec::with_capacity(CHUNK);
    while chunk.len() < CHUNK {
        let mut buf = Vec::new();
        let n = Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        *line_no += 1;
        if buf.len() > MAX_LINE_BYTES && !buf.ends_with(b"\n") {
            // Discard the rest of the oversized line.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let m = Read::take(&mut *input, 1 << 20).read_until(b'\n', &mut sink)?;
                if m == 0 || sink.ends_with(b"\n") {
                    break;
                }
            }
            chunk.push((
                *line_no,
                Err(format!("line longer than {MAX_LINE_BYTES} bytes")),
            ));
            continue;
        }
        match String::from_utf8(buf) {
            Ok(s) if s.trim().is_empty() => {}
            Ok(s) => chunk.push((*line_no, Ok(s))),
            Err(_) => chunk.push((*line_no, Err("not valid UTF-8".to_string()))),
        }
    }
    Ok(chunk)
}

/// A string field, or a number written as one (GSM8K golds are often numbers).
fn text_field(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "field `{key}` must be a string or number, got {other}"
        )),
    }
}

fn record(line: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("expected a JSON object, got {}", kind(&other))),
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn error_line(line_no: usize, message: &str) -> String {
    json!({ "error": format!("line {line_no}: {message}") }).to_string()
}

enum VerifyOutcome {
    Correct,
    Incorrect,
    Error,
}

fn verify_line(
    line_no: usize,
    line: &Result<String, String>,
    cfg: &VerifyConfig,
) -> (String, VerifyOutcome) {
    let parsed = line.as_ref().map_err(Clone::clone).and_then(|l| {
        let obj = record(l)?;
        let gold = text_field(&obj, "gold")?.ok_or("missing field `gold`")?;
        let pred = text_field(&obj, "pred")?.ok_or("missing field `pred`")?;
        let problem = text_field(&obj, "problem")?;
        Ok((gold, pred, problem, obj.get("id").cloned()))
    });
    match parsed {
        Err(message) => (error_line(line_no, &message), VerifyOutcome::Error),
        Ok((gold, pred, problem, id)) => {
            let v = verify(&gold, &pred, problem.as_deref(), cfg);
            let mut out = Map::new();
            if let Some(id) = id {
                out.insert("id".into(), id);
            }
            out.insert("correct".into(), Value::Bool(v.correct));
            out.insert(
                "extracted".into(),
                v.extracted.map_or(Value::Null, Value::String),
            );
            out.insert("reason".into(), Value::String(v.reason.to_string()));
            out.insert(
                "method".into(),
                v.method
                    .map_or(Value::Null, |m| Value::String(m.name().to_string())),
            );
            let outcome = if v.correct {
                VerifyOutcome::Correct
            } else {
                VerifyOutcome::Incorrect
            };
            (Value::Object(out).to_string(), outcome)
        }
    }
}

/// `reasonlab verify` with the default [`VerifyConfig`]: reads `{"gold", "pred", "problem"?,
/// "id"?}` lines and writes `{"id"?, "correct", "extracted", "reason", "method"}` lines in input
/// order (`method`: the extraction rule that found the answer, or null).
/// `threads = 0` uses every core.
pub fn verify_stream(
    input: impl BufRead,
    output: impl Write,
    threads: usize,
) -> Result<VerifyStats, Error> {
    verify_stream_with(&VerifyConfig::default(), input, output, threads)
}

/// [`verify_stream`] with an explicit configuration.
pub fn verify_stream_with(
    cfg: &VerifyConfig,
    mut input: impl BufRead,
    mut output: impl Write,
    threads: usize,
) -> Result<VerifyStats, Error> {
    let pool = pool(threads)?;
    let mut stats = VerifyStats::default();
    let mut line_no = 0;
    loop {
        let chunk = read_chunk(&mut input, &mut line_no)?;
        if chunk.is_empty() {
            break;
        }
        let results: Vec<(String, VerifyOutcome)> = pool.install(|| {
            chunk
                .par_iter()
                .map(|(n, l)| verify_line(*n, l, cfg))
                .collect()
        });
        for (text, outcome) in results {
            writeln!(output, "{text}")?;
            stats.lines += 1;
            match outcome {
                VerifyOutcome::Correct => stats.correct += 1,
                VerifyOutcome::Incorrect => stats.incorrect += 1,
                VerifyOutcome::Error => stats.errors += 1,
            }
        }
    }
    output.flush()?;
    Ok(stats)
}

/// `reasonlab reward --config rewards.toml`: reads `{"completion", "gold"?, "problem"?, "id"?}`
/// lines and writes `{"id"?, "rewards": {name: score or null}, "total": f64}` lines in order.
pub fn reward_stream(
    config: &RewardConfig,
    mut input: impl BufRead,
    mut output: impl Write,
    threads: usize,
) -> Result<RewardStats, Error> {
    config.validate()?;
    let sum = config.build();
    let pool = pool(threads)?;
    let mut stats = RewardStats::default();
    let mut total_sum = 0.0;
    let mut scored = 0u64;
    let mut line_no = 0;
    loop {
        let chunk = read_chunk(&mut input, &mut line_no)?;
        if chunk.is_empty() {
            break;
        }
        let results: Vec<(String, Option<f64>)> = pool.install(|| {
            chunk
                .par_iter()
                .map(|(n, line)| {
                    let parsed = line.as_ref().map_err(Clone::clone).and_then(|l| {
                        let obj = record(l)?;
                        let completion =
                            text_field(&obj, "completion")?.ok_or("missing field `completion`")?;
                        let gold = text_field(&obj, "gold")?;
                        let problem = text_field(&obj, "problem")?;
                        Ok((completion, gold, problem, obj))
                    });
                    match parsed {
                        Err(message) => (error_line(*n, &message), None),
                        Ok((completion, gold, problem, obj)) => {
                            // The whole record reaches the rewards, as a dataset row does.
                            let s = sum.score_all(&Sample {
                                completion: &completion,
                                gold: gold.as_deref(),
                                problem: problem.as_deref(),
                                prompt: None,
                                extra: Some(&obj),
                            });
                            let id = obj.get("id").cloned();
                            let mut rewards = Map::new();
                            for (name, score) in s.scores {
                                rewards.insert(name, score.map_or(Value::Null, |v| json!(v)));
                            }
                            let mut out = Map::new();
                            if let Some(id) = id {
                                out.insert("id".into(), id);
                            }
                            out.insert("rewards".into(), Value::Object(rewards));
                            out.insert("total".into(), json!(s.total));
                            (Value::Object(out).to_string(), Some(s.total))
                        }
                    }
                })
                .collect()
        });
        for (text, total) in results {
            writeln!(output, "{text}")?;
            stats.lines += 1;
            match total {
                Some(t) => {
                    total_sum += t;
                    scored += 1;
                }
                None => stats.errors += 1,
            }
        }
    }
    output.flush()?;
    stats.mean_total = if scored > 0 {
        total_sum / scored as f64
    } else {
        0.0
    };
    Ok(stats)
}
