//! End to end: a fake engine through `run_eval`, a crash midway, resume, reports, compare.

use std::path::Path;
use std::sync::Mutex;

use reasonlab_eval::{
    Benchmark, Engine, EngineError, EvalConfig, FewShotStyle, FieldMap, FinishReason, Language,
    ModelInfo, Output, Prompt, PromptTemplate, Request, Sample, compare, load_results, run_eval,
};

/// Answers "Return N" with `\boxed{N}` (wrong, `\boxed{0}`, for odd samples when `sloppy`),
/// and fails on the chunk numbered `fail_on` (0-based).
struct Fake {
    fail_on: Option<usize>,
    sloppy: bool,
    calls: Mutex<Vec<Vec<Request>>>,
}

impl Fake {
    fn new(fail_on: Option<usize>, sloppy: bool) -> Self {
        Self {
            fail_on,
            sloppy,
            calls: Mutex::new(Vec::new()),
        }
    }
    fn samples_requested(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .map(|r| r.n)
            .sum()
    }
}

impl Engine for Fake {
    fn generate_streaming(
        &self,
        requests: &[Request],
        _on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        let mut calls = self.calls.lock().unwrap();
        if Some(calls.len()) == self.fail_on {
            return requests
                .iter()
                .map(|_| Err(EngineError::Internal("simulated crash".into())))
                .collect();
        }
        calls.push(requests.to_vec());
        requests
            .iter()
            .map(|r| {
                let Prompt::Text(t) = &r.prompt else {
                    panic!("plain template gives text")
                };
                let answer = t.trim_start_matches("Return ").to_string();
                let samples = (0..r.n)
                    .map(|j| Sample {
                        text: if self.sloppy && j % 2 == 1 {
                            "\\boxed{0}".into()
                        } else {
                            format!("so \\boxed{{{answer}}}")
                        },
                        finish_reason: if j == 0 {
                            FinishReason::Length
                        } else {
                            FinishReason::Stop
                        },
                        completion_tokens: 10 + j,
                        logprobs: None,
                        token_ids: None,
                        policy_version: None,
                    })
                    .collect();
                Ok(Output {
                    prompt_tokens: 0,
                    samples,
                })
            })
            .collect()
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "fake".into(),
            hash: "abc123".into(),
            location: "memory".into(),
        }
    }
}

fn bench(dir: &Path) -> Benchmark {
    let path = dir.join("toy.jsonl");
    let lines: String = (1..=5)
        .map(|i| {
            format!(
                "{{\"id\": \"p{i}\", \"problem\": \"Return {i}\", \"answer\": \"{i}\", \
                 \"subject\": \"{}\", \"level\": {}}}\n",
                if i % 2 == 0 { "Even" } else { "Odd" },
                i
            )
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    Benchmark::File {
        name: "toy".into(),
        path,
        fields: FieldMap::default(),
        language: Language::En,
        few_shot: FewShotStyle::MinervaMath,
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn crash_midway_then_resume_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = EvalConfig::new(vec![bench(dir.path())], PromptTemplate::Plain, 4);
    cfg.chunk_size = 2;

    // Chunk 0 (problems 1, 2) succeeds, chunk 1 fails.
    let crashing = Fake::new(Some(1), false);
    let err = run_eval(&crashing, &cfg, &out).unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let log = out.join("completions.jsonl");
    let first = lines(&log);
    assert_eq!(first.len(), 8);
    assert!(
        first
            .iter()
            .all(|r| r["settings_hash"] == first[0]["settings_hash"])
    );
    // Killed mid-write: a torn last line.
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"benchmark\": \"toy\", \"id\": \"p3\", \"sam");
    std::fs::write(&log, text).unwrap();

    let good = Fake::new(None, false);
    let run = run_eval(&good, &cfg, &out).unwrap();
    assert_eq!(
        good.samples_requested(),
        12,
        "only problems 3..5 regenerated"
    );
    assert_eq!(run.counts.generated, 12);
    assert_eq!(run.counts.reused, 8);
    assert_eq!(lines(&log).len(), 20, "torn line skipped, new lines intact");
    let s = &run.benchmarks[0].scores;
    assert_eq!(s.n_problems, 5);
    assert_eq!(s.metrics[&reasonlab_eval::MetricKey::PassAt(1)].mean, 1.0);
    assert_eq!(s.metrics[&reasonlab_eval::MetricKey::ConsAt(4)].mean, 1.0);
    assert_eq!(s.length.truncated, 5);
    assert_eq!(s.length.truncated_rate, 0.25);
    assert_eq!(s.by_subject.len(), 2);
    assert_eq!(s.by_level.len(), 5);

    // Same settings again: nothing to generate.
    let idle = Fake::new(None, false);
    run_eval(&idle, &cfg, &out).unwrap();
    assert_eq!(idle.samples_requested(), 0);

    // More samples extend the run: samples 4 and 5 of every problem, seeds differ from the
    // requests for samples 0..4.
    let mut more = cfg.clone();
    more.n = 6;
    let ext = Fake::new(None, false);
    let run6 = run_eval(&ext, &more, &out).unwrap();
    assert_eq!(ext.samples_requested(), 10);
    let calls = ext.calls.lock().unwrap();
    let seeds_new: Vec<u64> = calls.iter().flatten().map(|r| r.sampling.seed).collect();
    let seeds_old: Vec<u64> = good
        .calls
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|r| r.sampling.seed)
        .collect();
    assert!(seeds_new.iter().all(|s| !seeds_old.contains(s)));
    assert_eq!(run6.benchmarks[0].scores.n_samples, 6);
}

#[test]
fn settings_change_regenerates_and_reports_carry_settings() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut cfg = EvalConfig::new(vec![bench(dir.path())], PromptTemplate::Plain, 4);
    cfg.sampling.temperature = 0.6;
    run_eval(&Fake::new(None, false), &cfg, &a).unwrap();

    // Same folder, new temperature: a new settings hash, so everything is regenerated.
    let mut hot = cfg.clone();
    hot.sampling.temperature = 1.0;
    let g = Fake::new(None, true);
    let run = run_eval(&g, &hot, &a).unwrap();
    assert_eq!(g.samples_requested(), 20);
    assert_eq!(
        run.benchmarks[0].scores.metrics[&reasonlab_eval::MetricKey::PassAt(1)].mean,
        0.5
    );
    // Two right, two wrong per problem: the tie goes to sample 0's class (right).
    assert_eq!(
        run.benchmarks[0].scores.metrics[&reasonlab_eval::MetricKey::ConsAt(4)].mean,
        1.0
    );
    assert_eq!(
        run.benchmarks[0].scores.metrics[&reasonlab_eval::MetricKey::ConsAt(2)].mean,
        1.0
    );
    run_eval(&Fake::new(None, true), &hot, &b).unwrap();

    let results = std::fs::read_to_string(a.join("results.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&results).unwrap();
    assert_eq!(v["model"]["hash"], "abc123");
    assert_eq!(
        v["benchmarks"][0]["settings"]["sampling"]["temperature"],
        1.0
    );
    assert_eq!(v["benchmarks"][0]["settings"]["template"], "plain");
    assert_eq!(load_results(&a).unwrap(), run);
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(md.contains("| toy | 5 | 50.0 ± 0.0 |"), "{md}");
    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("abc123"));

    // `a` was last run hot, so compare with a fresh temperature-0.6 run.
    let c = dir.path().join("c");
    run_eval(&Fake::new(None, false), &cfg, &c).unwrap();
    let table = compare(&c, &b).unwrap();
    assert!(table.contains("| temperature **≠** | 0.6 | 1 |"), "{table}");
    assert!(
        table.contains("| toy | pass@1 | 100.0 ± 0.0 | 50.0 ± 0.0 | -50.0 |"),
        "{table}"
    );
}

#[test]
fn bad_settings_are_rejected_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EvalConfig::new(vec![bench(dir.path())], PromptTemplate::Plain, 4);
    cfg.ks = vec![1, 8];
    let g = Fake::new(None, false);
    let err = run_eval(&g, &cfg, &dir.path().join("x")).unwrap_err();
    assert!(err.to_string().contains("k = 8"), "{err}");
    assert_eq!(g.samples_requested(), 0);
}
