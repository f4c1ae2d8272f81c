//! Sampling solution traces for SFT: rejection sampling of one's own model (DeepSeek-R1 §2.3.3)
//! and distillation from a teacher (R1 §2.4) share this loop.
//!
//! For each problem, `k` completions come from a [`Engine`] (a local model or an
//! OpenAI-compatible endpoint), are scored with the configured rewards, filtered
//! ([`FilterSettings`]) and appended to the output as SFT-ready chat records with provenance.
//!
//! **Nothing lost, nothing duplicated.** Beside `OUT` a ledger `OUT.ledger.jsonl` gets one line
//! per finished problem (`done`, or `failed` with the error) written *after* that problem's
//! records. On a rerun the output is first repaired: records of problems the ledger does not
//! mark done (a crash between the two writes) and a torn last line are removed, atomically.
//! Then done problems are skipped and failed ones are tried again. A generator error (HTTP
//! failure after the client's retries, timeout, garbage) fails only its problem.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, Message, ModelInfo, Prompt, Request, Sample, Sampling,
};
use reasonlab_reward::WeightedSum;
use serde::{Deserialize, Serialize};

/// Which completions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Every completion that passes the other filters (distillation of a strong teacher).
    All,
    /// Only those the `accuracy` reward scores 1 (rejection sampling).
    #[default]
    Correct,
}

/// Filters on completions (DeepSeek-R1 §2.3.3 filters mixed languages, long paragraphs and
/// code blocks out of its reasoning data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSettings {
    pub keep: Keep,
    /// Drop completions cut at the token budget.
    pub drop_truncated: bool,
    /// Drop completions longer than this many tokens.
    pub max_completion_tokens: Option<usize>,
    /// Require the `think_format` reward to be 1.
    pub require_think_format: bool,
    /// Require the `language_consistency` reward to be at least this.
    pub min_language_consistency: Option<f64>,
    /// Keep one copy of solutions that are equal after whitespace normalisation (per problem).
    pub dedup: bool,
    /// Drop mixed-language chains: completions whose words outside their main script (Greek
    /// letters, usually math, not counted) are more than this share of them.
    pub max_mixed_script: Option<f64>,
    /// Drop completions with a paragraph (text between blank lines) longer than this many
    /// characters.
    pub max_paragraph_chars: Option<usize>,
    /// Drop completions with a fenced code block (leave off for tool-integrated traces).
    pub drop_code_blocks: bool,
}

/// The share of a text's words outside its main script, Greek letters left out (they are
/// mostly math symbols); 0 for a text without words.
pub fn mixed_script_share(text: &str) -> f64 {
    let c = reasonlab_text::script_counts(text);
    let scripts = reasonlab_text::Script::ALL
        .into_iter()
        .filter(|&s| s != reasonlab_text::Script::Greek);
    let counts: Vec<u64> = scripts.map(|s| c.get(s)).collect();
    let total: u64 = counts.iter().sum();
    let main = counts.iter().copied().max().unwrap_or(0);
    if total == 0 {
        0.0
    } else {
        (total - main) as f64 / total as f64
    }
}

/// The longest paragraph of `text` (split at blank lines), in characters.
pub fn longest_paragraph(text: &str) -> usize {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(|p| p.trim().chars().count())
        .max()
        .unwrap_or(0)
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            keep: Keep::Correct,
            drop_truncated: true,
            max_completion_tokens: None,
            require_think_format: false,
            min_language_consistency: None,
            dedup: true,
            max_mixed_script: None,
            max_paragraph_chars: None,
            drop_code_blocks: false,
        }
    }
}

/// One problem to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceProblem {
    pub id: String,
    /// What is sent to the generator.
    pub prompt: Prompt,
    /// The user turn of the SFT record (the prompt as the user would write it).
    pub user: String,
    pub gold: Option<String>,
}

/// Where an SFT record came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub model: ModelInfo,
    pub sampling: Sampling,
    pub sample_index: usize,
    pub reward: f64,
    pub scores: Vec<(String, Option<f64>)>,
    pub finish_reason: FinishReason,
    pub completion_tokens: usize,
}

/// An output line: an SFT-ready chat record (`reasonlab sft` reads `messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    pub id: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LedgerLine {
    id: String,
    status: Status,
    generated: usize,
    kept: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Counts of a run (this invocation, plus what earlier ones already finished).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TraceSummary {
    pub problems: usize,
    pub already_done: usize,
    pub done: usize,
    pub failed: usize,
    pub generated: usize,
    pub kept: usize,
    /// Why completions were dropped.
    pub dropped_incorrect: usize,
    pub dropped_truncated: usize,
    pub dropped_too_long: usize,
    pub dropped_format: usize,
    pub dropped_language: usize,
    pub dropped_long_paragraph: usize,
    pub dropped_code: usize,
    pub dropped_duplicate: usize,
    /// Records and torn lines removed from an interrupted earlier run.
    pub repaired_records: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("k must be at least 1")]
    ZeroK,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TraceError + '_ {
    move |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The ledger beside an output file.
pub fn ledger_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".ledger.jsonl");
    out.with_file_name(name)
}

/// Complete lines of a file that parse as `T`; the count of lines that did not (torn or
/// garbled) is returned beside them.
fn read_lines<T: for<'de> Deserialize<'de>>(
    path: &Path,
) -> Result<(Vec<(String, T)>, usize), TraceError> {
    if !path.exists() {
        return Ok((Vec::new(), 0));
    }
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    let mut bad = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(&line) {
            Ok(v) => out.push((line, v)),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Bring `out` and its ledger back to a consistent state; returns the ids already done and the
/// number of records removed.
fn repair(out: &Path) -> Result<(HashSet<String>, usize), TraceError> {
    let ledger = ledger_path(out);
    let (entries, bad_ledger) = read_lines::<LedgerLine>(&ledger)?;
    let done: HashSet<String> = entries
        .iter()
        .filter(|(_, e)| e.status == Status::Done)
        .map(|(_, e)| e.id.clone())
        .collect();
    if bad_ledger > 0 {
        let text: String = entries.iter().map(|(l, _)| format!("{l}\n")).collect();
        reasonlab_core::fs::atomic_write(&ledger, text.as_bytes()).map_err(io(&ledger))?;
    }
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let (records, bad) = read_lines::<IdOnly>(out)?;
    let keep: Vec<&String> = records
        .iter()
        .filter(|(_, r)| done.contains(&r.id))
        .map(|(l, _)| l)
        .collect();
    let removed = records.len() - keep.len() + bad;
    if removed > 0 {
        tracing::warn!(removed, path = %out.display(), "removing records of an interrupted run");
        let text: String = keep.iter().map(|l| format!("{l}\n")).collect();
        reasonlab_core::fs::atomic_write(out, text.as_bytes()).map_err(io(out))?;
    }
    Ok((done, removed))
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn score_of(scores: &[(String, Option<f64>)], name: &str) -> Option<f64> {
    scores.iter().find(|(n, _)| n == name).and_then(|(_, s)| *s)
}

/// Filter and turn one problem's completions into records, counting the drops.
fn select(
    problem: &TraceProblem,
    outputs: Vec<Sample>,
    rewards: &WeightedSum,
    filter: &FilterSettings,
    model: &ModelInfo,
    sampling: &Sampling,
    summary: &mut TraceSummary,
) -> Vec<TraceRecord> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (j, o) in outputs.into_iter().enumerate() {
        let scored = rewards.score_all(&reasonlab_reward::Sample {
            completion: &o.text,
            gold: problem.gold.as_deref(),
            problem: Some(&problem.user),
            prompt: None,
            extra: None,
        });
        if filter.drop_truncated && o.finish_reason == FinishReason::Length {
            summary.dropped_truncated += 1;
            continue;
        }
        if filter
            .max_completion_tokens
            .is_some_and(|m| o.completion_tokens > m)
        {
            summary.dropped_too_long += 1;
            continue;
        }
        if filter.keep == Keep::Correct && score_of(&scored.scores, "accuracy") != Some(1.0) {
            summary.dropped_incorrect += 1;
            continue;
        }
        if filter.require_think_format && score_of(&scored.scores, "think_format") != Some(1.0) {
            summary.dropped_format += 1;
            continue;
        }
        if let Some(min) = filter.min_language_consistency
            && score_of(&scored.scores, "language_consistency").is_none_or(|s| s < min)
        {
            summary.dropped_language += 1;
            continue;
        }
        if filter
            .max_mixed_script
            .is_some_and(|m| mixed_script_share(&o.text) > m)
        {
            summary.dropped_language += 1;
            continue;
        }
        if filter
            .max_paragraph_chars
            .is_some_and(|m| longest_paragraph(&o.text) > m)
        {
            summary.dropped_long_paragraph += 1;
            continue;
        }
        if filter.drop_code_blocks && o.text.contains("```") {
            summary.dropped_code += 1;
            continue;
        }
        if filter.dedup && !seen.insert(normalise(&o.text)) {
            summary.dropped_duplicate += 1;
            continue;
        }
        out.push(TraceRecord {
            id: problem.id.clone(),
            messages: vec![
                Message::user(problem.user.clone()),
                Message {
                    role: reasonlab_core::engine::Role::Assistant,
                    content: o.text,
                },
            ],
            answer: problem.gold.clone(),
            provenance: Provenance {
                model: model.clone(),
                sampling: sampling.clone(),
                sample_index: j,
                reward: scored.total,
                scores: scored.scores,
                finish_reason: o.finish_reason,
                completion_tokens: o.completion_tokens,
            },
        });
    }
    out
}

/// Sample `k` completions per problem into `out` (see the module docs), `chunk` problems per
/// generator call. `on_problem` is called after each finished problem.
#[allow(clippy::too_many_arguments)]
pub fn run(
    generator: &dyn Engine,
    problems: &[TraceProblem],
    k: usize,
    sampling: &Sampling,
    rewards: &WeightedSum,
    filter: &FilterSettings,
    out: &Path,
    chunk: usize,
    on_problem: &mut dyn FnMut(&TraceSummary),
) -> Result<TraceSummary, TraceError> {
    if k == 0 {
        return Err(TraceError::ZeroK);
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let (done, repaired) = repair(out)?;
    let mut summary = TraceSummary {
        problems: problems.len(),
        repaired_records: repaired,
        ..Default::default()
    };
    let todo: Vec<&TraceProblem> = problems
        .iter()
        .filter(|p| {
            let skip = done.contains(&p.id);
            summary.already_done += usize::from(skip);
            !skip
        })
        .collect();
    let ledger = ledger_path(out);
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(io(p))
    };
    let mut out_file = open(out)?;
    let mut ledger_file = open(&ledger)?;
    let model = generator.info();
    // Per-problem seeds derived from the id, so a rerun samples what the first run would have.
    let request = |p: &TraceProblem| Request {
        prompt: p.prompt.clone(),
        n: k,
        sampling: Sampling {
            seed: sampling.seed.wrapping_add(
                reasonlab_core::rng::SplitMix64::seeded(reasonlab_core::hash::fnv1a64(
                    p.id.as_bytes(),
                ))
                .next_u64(),
            ),
            ..sampling.clone()
        },
        logprobs: false,
    };
    for group in todo.chunks(chunk.max(1)) {
        let requests: Vec<Request> = group.iter().map(|p| request(p)).collect();
        // One call for the chunk; a request that failed is tried once more alone, so a flaky
        // moment of the server costs nothing and one bad problem fails only itself.
        let mut results: Vec<Result<Vec<Sample>, EngineError>> = generator
            .generate(&requests)
            .into_iter()
            .map(|r| r.map(|o| o.samples))
            .collect();
        results.resize_with(requests.len(), || {
            Err(EngineError::Internal(
                "the engine returned no result".into(),
            ))
        });
        for (r, req) in results.iter_mut().zip(&requests) {
            if r.is_err() {
                *r = generator
                    .generate(std::slice::from_ref(req))
                    .pop()
                    .unwrap_or_else(|| {
                        Err(EngineError::Internal(
                            "the engine returned no result".into(),
                        ))
                    })
                    .map(|o| o.samples);
            }
        }
        for ((p, result), req) in group.iter().zip(results).zip(&requests) {
            let line = match result {
                Ok(outputs) => {
                    let generated = outputs.len();
                    summary.generated += generated;
                    let records = select(
                        p,
                        outputs,
                        rewards,
                        filter,
                        &model,
                        &req.sampling,
                        &mut summary,
                    );
                    let mut text = String::new();
                    for r in &records {
                        text.push_str(&serde_json::to_string(r).unwrap_or_default());
                        text.push('\n');
                    }
                    out_file.write_all(text.as_bytes()).map_err(io(out))?;
                    out_file.flush().map_err(io(out))?;
                    summary.kept += records.len();
                    summary.done += 1;
                    LedgerLine {
                        id: p.id.clone(),
                        status: Status::Done,
                        generated,
                        kept: records.len(),
                        error: None,
                    }
                }
                Err(e) => {
                    tracing::warn!(id = %p.id, error = %e, "problem failed; recorded, retried on rerun");
                    summary.failed += 1;
                    LedgerLine {
                        id: p.id.clone(),
                        status: Status::Failed,
                        generated: 0,
                        kept: 0,
                        error: Some(e.to_string()),
                    }
                }
            };
            let mut text = serde_json::to_string(&line).unwrap_or_default();
            text.push('\n');
            ledger_file
                .write_all(text.as_bytes())
                .map_err(io(&ledger))?;
            ledger_file.flush().map_err(io(&ledger))?;
            on_problem(&summary);
        }
    }
    out_file.sync_all().map_err(io(out))?;
    ledger_file.sync_all().map_err(io(&ledger))?;
    Ok(summary)
}

/// Problems from rows with a template applied: `(id, problem text, gold answer)`.
pub fn problems_from(
    rows: &[reasonlab_eval::Problem],
    template: reasonlab_eval::PromptTemplate,
    language: reasonlab_eval::Language,
    style: reasonlab_eval::FewShotStyle,
) -> Vec<TraceProblem> {
    rows.iter()
        .map(|r| {
            let rendered = template.render(&r.problem, language, style);
            let user = match &rendered.input {
                Prompt::Text(t) => t.clone(),
                Prompt::Messages(m) => m
                    .iter()
                    .rev()
                    .find(|m| m.role == reasonlab_core::engine::Role::User)
                    .map(|m| m.content.clone())
                    .unwrap_or_else(|| r.problem.clone()),
            };
            TraceProblem {
                id: r.id.clone(),
                prompt: rendered.input,
                user,
                gold: (!r.answer.is_empty()).then(|| r.answer.clone()),
            }
        })
        .collect()
}

/// Count of ledger lines per id (for tests and `--check`): every id done exactly once.
pub fn ledger_counts(out: &Path) -> Result<HashMap<String, usize>, TraceError> {
    let (entries, _) = read_lines::<LedgerLine>(&ledger_path(out))?;
    let mut m = HashMap::new();
    for (_, e) in entries {
        if e.status == Status::Done {
            *m.entry(e.id).or_insert(0) += 1;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    #[test]
    fn r1_filters_measure_what_they_name() {
        assert_eq!(mixed_script_share("The answer is 4."), 0.0);
        assert_eq!(
            mixed_script_share("Let α = 2, so β = 4."),
            0.0,
            "Greek is math"
        );
        // Han characters count one each: 2 of 6.
        let mixed = mixed_script_share("First 我们 compute the sum");
        assert!((mixed - 2.0 / 6.0).abs() < 1e-9, "{mixed}");
        assert_eq!(mixed_script_share("12 + 30 = 42"), 0.0);
        assert_eq!(longest_paragraph("ab\n\ncdef\n\ng"), 4);
        assert_eq!(longest_paragraph("one line\nand another"), 20);
        assert_eq!(longest_paragraph(""), 0);
    }
}
