//! Running benchmarks through a [`Engine`], resumably.
//!
//! Every completion is appended to `OUT/completions.jsonl` as soon as its chunk returns, keyed by
//! benchmark, problem id, sample index and a settings hash (model hash, template, sampling
//! settings) plus a hash of the rendered prompt. A rerun with the same settings reuses what is
//! there and generates only the missing samples, so a crash or Ctrl-C loses at most the chunk in
//! flight. A torn last line (killed mid-write) is skipped with a warning.
//!
//! Seeds: each request's seed is derived from the base seed, the benchmark, the problem id and
//! the index of the request's first sample, so a rerun that fills samples `m..n` does not repeat
//! samples `0..m`, and the local engine and an HTTP server get identical requests.

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use reasonlab_answer::VerifyConfig;
use reasonlab_core::jsonl::JsonlWriter;
use serde::{Deserialize, Serialize};

use crate::benchmark::{Benchmark, Problem};
use crate::report::{BenchmarkResult, RunResults, Settings, write_reports};
use crate::score::{Scored, score_ranked};
use crate::{
    Engine, EvalError, FinishReason, Prompt, PromptTemplate, Request, Sampling, sha256_hex,
};

/// File name of the completion log inside the output folder.
pub const COMPLETIONS_FILE: &str = "completions.jsonl";

/// Everything that defines an eval run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    pub benchmarks: Vec<Benchmark>,
    pub template: PromptTemplate,
    /// Samples per problem.
    pub n: usize,
    pub sampling: Sampling,
    /// k values reported for pass@k and cons@k; empty: 1, 2, 4, … up to n, and n.
    pub ks: Vec<usize>,
    /// Requests per [`Engine::generate`] call (each request is `n` or fewer samples).
    pub chunk_size: usize,
    pub verify: VerifyConfig,
    /// Evaluate only the first `limit` problems of each benchmark (smoke tests).
    pub limit: Option<usize>,
}

impl EvalConfig {
    pub fn new(benchmarks: Vec<Benchmark>, template: PromptTemplate, n: usize) -> Self {
        Self {
            benchmarks,
            template,
            n,
            sampling: Sampling::default(),
            ks: Vec::new(),
            chunk_size: 64,
            verify: VerifyConfig::default(),
            limit: None,
        }
    }

    /// The k values to report.
    pub fn ks(&self) -> Vec<usize> {
        if !self.ks.is_empty() {
            let mut ks = self.ks.clone();
            ks.sort_unstable();
            ks.dedup();
            return ks;
        }
        let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| Some(k * 2))
            .take_while(|&k| k <= self.n)
            .collect();
        if ks.last() != Some(&self.n) && self.n > 0 {
            ks.push(self.n);
        }
        ks
    }

    fn validate(&self) -> Result<(), EvalError> {
        if self.n == 0 {
            return Err(EvalError::InvalidSetting {
                name: "n",
                value: "0".into(),
                reason: "at least one sample per problem",
            });
        }
        if self.chunk_size == 0 {
            return Err(EvalError::InvalidSetting {
                name: "chunk_size",
                value: "0".into(),
                reason: "at least one request per chunk",
            });
        }
        if let Some(&k) = self.ks().iter().find(|&&k| k == 0 || k > self.n) {
            return Err(EvalError::InvalidSetting {
                name: "k",
                value: k.to_string(),
                reason: "every k must be between 1 and n",
            });
        }
        let s = &self.sampling;
        if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            return Err(EvalError::InvalidSetting {
                name: "temperature",
                value: s.temperature.to_string(),
                reason: "must be finite and >= 0",
            });
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(EvalError::InvalidSetting {
                name: "top_p",
                value: s.top_p.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        Ok(())
    }
}

/// Hash of everything that changes what an engine returns: the model, the template and the
/// sampling settings (not `n`: more samples extend a run). 16 hex digits of sha256.
pub fn settings_hash(model_hash: &str, template: PromptTemplate, s: &Sampling) -> String {
    let canonical = serde_json::json!({
        "model_hash": model_hash,
        "template": template.name(),
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "max_new_tokens": s.max_new_tokens,
        "seed": s.seed,
        "stop": s.stop,
    });
    sha256_hex(canonical.to_string().as_bytes())[..16].to_string()
}

/// The seed of the request for samples starting at `first_sample` (see the module docs).
pub fn request_seed(base: u64, benchmark: &str, id: &str, first_sample: usize) -> u64 {
    let h = sha256_hex(format!("{base}\u{1f}{benchmark}\u{1f}{id}\u{1f}{first_sample}").as_bytes());
    u64::from_str_radix(&h[..16], 16).unwrap_or(base)
}

/// One line of `completions.jsonl`. `completion` and `id` make the file readable by
/// `reasonlab eval score` directly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionRecord {
    pub benchmark: String,
    pub id: String,
    pub sample: usize,
    pub settings_hash: String,
    pub prompt_hash: String,
    pub completion: String,
    pub finish_reason: FinishReason,
    pub completion_tokens: usize,
}

type Key = (String, String, usize);

/// Completions already on disk for one settings hash: (benchmark, id, sample) → (prompt hash,
/// completion). The first record of a key wins.
fn load_existing(path: &Path, settings: &str) -> Result<HashMap<Key, (String, Scored)>, EvalError> {
    let mut out = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let reader = reasonlab_core::jsonl::open(path)?;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(EvalError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: CompletionRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("skipping {}:{}: {e}", path.display(), i + 1);
                continue;
            }
        };
        if rec.settings_hash != settings {
            continue;
        }
        out.entry((rec.benchmark, rec.id, rec.sample)).or_insert((
            rec.prompt_hash,
            Scored {
                text: rec.completion,
                finish_reason: Some(rec.finish_reason),
                completion_tokens: Some(rec.completion_tokens),
            },
        ));
    }
    Ok(out)
}

/// Make sure an append starts on a fresh line even if the last write was torn.
fn open_for_append(path: &Path) -> Result<JsonlWriter<std::fs::File>, EvalError> {
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map_err(EvalError::io(path))?.len();
        if len > 0 {
            f.seek(SeekFrom::End(-1)).map_err(EvalError::io(path))?;
            let mut last = [0u8; 1];
            f.read_exact(&mut last).map_err(EvalError::io(path))?;
            if last[0] != b'\n' {
                let mut a = std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(EvalError::io(path))?;
                a.write_all(b"\n").map_err(EvalError::io(path))?;
            }
        }
    }
    JsonlWriter::append(path).map_err(EvalError::io(path))
}

struct Pending {
    bench: usize,
    problem: usize,
    first_sample: usize,
    prompt_hash: String,
    request: Request,
}

/// What [`run_eval`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub generated: usize,
    pub reused: usize,
}

/// A benchmark's name, problems, prompt hashes and prompts.
type Rendered = (String, Vec<Problem>, Vec<String>, Vec<Prompt>);

/// Scores a problem's samples for best-of-N re-ranking (a reward model): one score per
/// completion, higher is better.
pub trait Ranker: Sync {
    fn rank(&self, prompt: &Prompt, completions: &[&str]) -> Result<Vec<f64>, String>;
}

/// Run every benchmark of `cfg` through `engine`, writing `out/completions.jsonl`,
/// `out/results.json`, `out/report.md` and `out/report.html`.
pub fn run_eval(
    engine: &dyn Engine,
    cfg: &EvalConfig,
    out: &Path,
) -> Result<RunResults, EvalError> {
    run_eval_ranked(engine, cfg, out, None)
}

/// [`run_eval`], and with a `ranker` best-of-N (`bon@k` for every k) beside pass@k and cons@k.
pub fn run_eval_ranked(
    engine: &dyn Engine,
    cfg: &EvalConfig,
    out: &Path,
    ranker: Option<&dyn Ranker>,
) -> Result<RunResults, EvalError> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(EvalError::io(out))?;
    let model = engine.info();
    let settings = settings_hash(&model.hash, cfg.template, &cfg.sampling);
    let log_path: PathBuf = out.join(COMPLETIONS_FILE);
    let mut existing = load_existing(&log_path, &settings)?;

    // Load problems and render prompts.
    let mut benches: Vec<Rendered> = Vec::new();
    let mut pending = Vec::new();
    let mut reused = 0;
    for (b, bench) in cfg.benchmarks.iter().enumerate() {
        let mut problems = bench.load()?;
        if let Some(limit) = cfg.limit {
            problems.truncate(limit);
        }
        let mut prompt_hashes = Vec::with_capacity(problems.len());
        let mut prompts = Vec::with_capacity(problems.len());
        for (p, problem) in problems.iter().enumerate() {
            let rendered =
                cfg.template
                    .render(&problem.problem, bench.language(), bench.few_shot_style());
            let prompt_hash = sha256_hex(
                serde_json::to_string(&rendered.input)
                    .unwrap_or_default()
                    .as_bytes(),
            )[..16]
                .to_string();
            let mut sampling = cfg.sampling.clone();
            for s in rendered.stop {
                if !sampling.stop.contains(&s) {
                    sampling.stop.push(s);
                }
            }
            // Contiguous runs of missing samples, one request each.
            let have: Vec<bool> = (0..cfg.n)
                .map(|s| {
                    existing
                        .get(&(bench.name().to_string(), problem.id.clone(), s))
                        .is_some_and(|(h, _)| *h == prompt_hash)
                })
                .collect();
            reused += have.iter().filter(|&&h| h).count();
            let mut s = 0;
            while s < cfg.n {
                if have[s] {
                    s += 1;
                    continue;
                }
                let start = s;
                while s < cfg.n && !have[s] {
                    s += 1;
                }
                let mut sampling = sampling.clone();
                sampling.seed = request_seed(cfg.sampling.seed, bench.name(), &problem.id, start);
                pending.push(Pending {
                    bench: b,
                    problem: p,
                    first_sample: start,
                    prompt_hash: prompt_hash.clone(),
                    request: Request {
                        prompt: rendered.input.clone(),
                        n: s - start,
                        sampling,
                        logprobs: false,
                    },
                });
            }
            prompt_hashes.push(prompt_hash);
            prompts.push(rendered.input);
        }
        benches.push((bench.name().to_string(), problems, prompt_hashes, prompts));
    }

    let total: usize = pending.iter().map(|p| p.request.n).sum();
    tracing::info!(
        reused,
        to_generate = total,
        requests = pending.len(),
        "eval: starting generation"
    );
    let mut generated = 0;
    if !pending.is_empty() {
        let mut writer = open_for_append(&log_path)?;
        for chunk in pending.chunks(cfg.chunk_size) {
            let requests: Vec<Request> = chunk.iter().map(|p| p.request.clone()).collect();
            let outputs = engine.generate(&requests);
            if outputs.len() != requests.len() {
                return Err(EvalError::EngineShape {
                    request: outputs.len().min(requests.len()),
                    expected: requests.len(),
                    got: outputs.len(),
                });
            }
            for (r, (p, out)) in chunk.iter().zip(outputs).enumerate() {
                let outs = out?.samples;
                if outs.len() != p.request.n {
                    return Err(EvalError::EngineShape {
                        request: r,
                        expected: p.request.n,
                        got: outs.len(),
                    });
                }
                let (bench_name, problems, _, _) = &benches[p.bench];
                let id = &problems[p.problem].id;
                for (j, o) in outs.into_iter().enumerate() {
                    let rec = CompletionRecord {
                        benchmark: bench_name.clone(),
                        id: id.clone(),
                        sample: p.first_sample + j,
                        settings_hash: settings.clone(),
                        prompt_hash: p.prompt_hash.clone(),
                        completion: o.text,
                        finish_reason: o.finish_reason,
                        completion_tokens: o.completion_tokens,
                    };
                    writer.write(&rec).map_err(EvalError::io(&log_path))?;
                    existing.insert(
                        (rec.benchmark, rec.id, rec.sample),
                        (
                            rec.prompt_hash,
                            Scored {
                                text: rec.completion,
                                finish_reason: Some(rec.finish_reason),
                                completion_tokens: Some(rec.completion_tokens),
                            },
                        ),
                    );
                    generated += 1;
                }
            }
            tracing::info!(generated, total, "eval: chunk done");
        }
    }

    // Score.
    let ks = cfg.ks();
    let mut results = Vec::new();
    for (bench_name, problems, prompt_hashes, prompts) in &benches {
        let samples: Vec<Vec<Scored>> = problems
            .iter()
            .zip(prompt_hashes)
            .map(|(p, h)| {
                (0..cfg.n)
                    .filter_map(|s| {
                        existing
                            .get(&(bench_name.clone(), p.id.clone(), s))
                            .filter(|(ph, _)| ph == h)
                            .map(|(_, sc)| sc.clone())
                    })
                    .collect()
            })
            .collect();
        let ranks = match ranker {
            Some(r) => {
                let mut all = Vec::with_capacity(samples.len());
                for ((p, prompt), s) in problems.iter().zip(prompts).zip(&samples) {
                    let texts: Vec<&str> = s.iter().map(|x| x.text.as_str()).collect();
                    all.push(r.rank(prompt, &texts).map_err(|message| EvalError::Rank {
                        id: p.id.clone(),
                        message,
                    })?);
                }
                Some(all)
            }
            None => None,
        };
        let scores = score_ranked(problems, &samples, ranks.as_deref(), &ks, &cfg.verify)?;
        results.push(BenchmarkResult {
            benchmark: bench_name.clone(),
            settings: Settings {
                model: model.name.clone(),
                model_hash: model.hash.clone(),
                template: cfg.template,
                n: cfg.n,
                sampling: cfg.sampling.clone(),
                settings_hash: settings.clone(),
            },
            scores,
        });
    }
    let run = RunResults {
        reasonlab_version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        template: cfg.template,
        n: cfg.n,
        sampling: cfg.sampling.clone(),
        settings_hash: settings,
        ks,
        verify: cfg.verify,
        limit: cfg.limit,
        counts: RunCounts { generated, reused },
        benchmarks: results,
    };
    write_reports(&run, out)?;
    Ok(run)
}
