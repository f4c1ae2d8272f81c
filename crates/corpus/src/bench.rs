//! Benchmarks behind `reasonlab bench classifier` and `reasonlab bench minhash`; the
//! reference numbers come from `scripts/bench_classifier_fasttext.py` (fastText 0.9.2) and
//! `scripts/bench_minhash_datasketch.py` (datasketch 2.0).

use std::path::Path;
use std::time::Instant;

use crate::fasttext::{Args, FastText, FastTextError, Scratch};

/// Our side of the classifier comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassifierBench {
    pub f1_math: f64,
    pub train_s: f64,
    pub predict_docs_per_s: f64,
    pub model_bytes: u64,
    pub threads: usize,
}

impl ClassifierBench {
    /// Several runs folded into one: fastest training, fastest prediction, mean F1.
    /// `runs` must not be empty.
    pub fn best_of(runs: &[ClassifierBench]) -> ClassifierBench {
        let n = runs.len().max(1) as f64;
        ClassifierBench {
            f1_math: runs.iter().map(|r| r.f1_math).sum::<f64>() / n,
            train_s: runs.iter().map(|r| r.train_s).fold(f64::INFINITY, f64::min),
            predict_docs_per_s: runs
                .iter()
                .map(|r| r.predict_docs_per_s)
                .fold(0.0, f64::max),
            model_bytes: runs.iter().map(|r| r.model_bytes).max().unwrap_or(0),
            threads: runs.first().map_or(0, |r| r.threads),
        }
    }
}

/// Train with `args` on `train`, save to `model`, then F1 of `__label__math` at k = 1 on
/// `test` and prediction throughput on `threads` threads.
pub fn classifier(
    train: &Path,
    test: &Path,
    model: &Path,
    args: &Args,
    threads: usize,
) -> Result<ClassifierBench, FastTextError> {
    let t0 = Instant::now();
    let (m, _) = crate::fasttext::train(train, args)?;
    let train_s = t0.elapsed().as_secs_f64();
    m.save(model)?;
    let model_bytes = std::fs::metadata(model).map(|x| x.len()).unwrap_or(0);
    let text = std::fs::read_to_string(test).map_err(|source| FastTextError::Io {
        path: test.into(),
        source,
    })?;
    let rows: Vec<(bool, String)> = text
        .lines()
        .map(|l| {
            let gold = l.split_whitespace().any(|t| t == "__label__math");
            let body: Vec<&str> = l
                .split_whitespace()
                .filter(|t| !t.starts_with("__label__"))
                .collect();
            (gold, body.join(" "))
        })
        .collect();
    let t0 = Instant::now();
    let preds = predict_parallel(
        &m,
        &rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        threads,
    );
    let secs = t0.elapsed().as_secs_f64();
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for ((gold, _), p) in rows.iter().zip(&preds) {
        match (*gold, p.as_deref() == Some("__label__math")) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            _ => {}
        }
    }
    Ok(ClassifierBench {
        f1_math: 2.0 * tp as f64 / (2 * tp + fp + fn_).max(1) as f64,
        train_s,
        predict_docs_per_s: rows.len() as f64 / secs,
        model_bytes,
        threads,
    })
}

/// Top-1 label per text on `threads` threads.
pub fn predict_parallel(m: &FastText, texts: &[&str], threads: usize) -> Vec<Option<String>> {
    let chunk = texts.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let hs: Vec<_> = texts
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    let mut scratch = Scratch::default();
                    c.iter()
                        .map(|t| {
                            m.predict_document(t, 1, 0.0, &mut scratch)
                                .ok()
                                .and_then(|p| p.into_iter().next())
                                .map(|p| p.label)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// MinHash throughput.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MinhashBench {
    pub docs: usize,
    pub seconds: f64,
    pub docs_per_s: f64,
    pub threads: usize,
    pub near_dups: usize,
}

/// Signatures + LSH clustering of `texts` with the default 5-gram, 14 x 8 settings.
pub fn minhash(texts: &[String], threads: usize) -> MinhashBench {
    let docs: Vec<crate::reader::Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| crate::reader::Document {
            id: i.to_string(),
            url: String::new(),
            text: t.clone(),
        })
        .collect();
    let cfg = crate::dedup::DedupConfig {
        exact_url: false,
        exact_text: false,
        threads,
        ..Default::default()
    };
    let t0 = Instant::now();
    let r = crate::dedup::dedup(&docs, &cfg);
    let seconds = t0.elapsed().as_secs_f64();
    MinhashBench {
        docs: texts.len(),
        seconds,
        docs_per_s: texts.len() as f64 / seconds,
        threads,
        near_dups: r.near_dups,
    }
}
