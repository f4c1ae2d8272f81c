//! `reasonlab bench verify`: accuracy, error kinds, worst-case latency and throughput of the
//! verifier on a labelled suite (`{"gold", "pred", "expected", "source"?, "problem"?}` lines,
//! such as `crates/answer/tests/data/suite.jsonl`).
//!
//! Latency is measured case by case on one thread; throughput by scoring the whole suite in
//! parallel on rayon's global pool, repeated until at least one second has passed.

use crate::error::Error;
use rayon::prelude::*;
use reasonlab_answer::{VerifyConfig, verify};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Deserialize)]
struct Case {
    gold: String,
    pred: String,
    expected: bool,
    #[serde(default)]
    problem: Option<String>,
}

/// Results of [`bench_verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub suite: PathBuf,
    pub cases: usize,
    /// Share of cases where the verdict equals the label.
    pub accuracy: f64,
    /// Verdict true, label false.
    pub false_positives: usize,
    /// Verdict false, label true.
    pub false_negatives: usize,
    /// Slowest single case, in milliseconds, and its 1-based line in the suite.
    pub max_latency_ms: f64,
    pub slowest_line: usize,
    /// Cases verified per second on `threads` threads.
    pub cases_per_sec: f64,
    pub threads: usize,
    /// 1-based suite lines whose verdict disagreed with the label.
    pub wrong_lines: Vec<usize>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "suite            {}", self.suite.display())?;
        writeln!(f, "cases            {}", self.cases)?;
        writeln!(f, "accuracy         {:.2}%", self.accuracy * 100.0)?;
        writeln!(f, "false positives  {}", self.false_positives)?;
        writeln!(f, "false negatives  {}", self.false_negatives)?;
        writeln!(
            f,
            "max latency      {:.2} ms (line {})",
            self.max_latency_ms, self.slowest_line
        )?;
        write!(
            f,
            "throughput       {:.0} cases/s on {} threads",
            self.cases_per_sec, self.threads
        )
    }
}

/// Runs the verifier over a labelled suite file.
pub fn bench_verify(suite: &Path) -> Result<BenchReport, Error> {
    let text = std::fs::read_to_string(suite).map_err(|source| Error::Read {
        path: suite.to_path_buf(),
        source,
    })?;
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line).map_err(|e| Error::Suite {
            path: suite.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        cases.push((i + 1, case));
    }
    let cfg = VerifyConfig::default();
    let mut fp = 0;
    let mut fneg = 0;
    let mut wrong_lines = Vec::new();
    let mut slowest = (Duration::ZERO, 0);
    for (line, c) in &cases {
        let start = Instant::now();
        let got = verify(&c.gold, &c.pred, c.problem.as_deref(), &cfg).correct;
        let took = start.elapsed();
        if took > slowest.0 {
            slowest = (took, *line);
        }
        if got != c.expected {
            wrong_lines.push(*line);
            if got {
                fp += 1;
            } else {
                fneg += 1;
            }
        }
    }
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < Duration::from_secs(1) || done == 0 {
        let n: usize = cases
            .par_iter()
            .map(|(_, c)| usize::from(verify(&c.gold, &c.pred, c.problem.as_deref(), &cfg).correct))
            .count();
        done += n;
        if cases.is_empty() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = cases.len();
    Ok(BenchReport {
        suite: suite.to_path_buf(),
        cases: n,
        accuracy: if n == 0 {
            0.0
        } else {
            1.0 - wrong_lines.len() as f64 / n as f64
        },
        false_positives: fp,
        false_negatives: fneg,
        max_latency_ms: slowest.0.as_secs_f64() * 1e3,
        slowest_line: slowest.1,
        cases_per_sec: if secs > 0.0 { done as f64 / secs } else { 0.0 },
        threads: rayon::current_num_threads(),
        wrong_lines,
    })
}
