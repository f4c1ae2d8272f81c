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

/// `reasonlab bench recall`: two recall rounds on a synthetic pool of a given size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecallScaleBench {
    pub pool_bytes: u64,
    pub pool_docs: u64,
    /// Seconds to write the synthetic pool (not part of the recall timing).
    pub generate_s: f64,
    /// Seconds per round and stage: `[train, score, merge]`.
    pub round_s: Vec<[f64; 3]>,
    /// Pool documents scored per second (the scoring stages' time).
    pub docs_per_s: f64,
    /// Pool bytes read per second over all stages of all rounds (every stage but round 0's
    /// training reads the pool or its scores).
    pub bytes_per_s: f64,
    /// The process's peak resident memory (`VmHWM`; `None` off Linux).
    pub peak_rss_bytes: Option<u64>,
    pub reports: Vec<crate::recall::RoundReport>,
}

/// Words of the synthetic pages: math pages draw from the first list, other pages from the
/// second, both with some shared filler, so the classifier has something to learn and the
/// scores spread.
const MATH_WORDS: &[&str] = &[
    "theorem",
    "proof",
    "lemma",
    "integer",
    "prime",
    "equation",
    "solve",
    "polynomial",
    "derivative",
    "integral",
    "matrix",
    "vector",
    "triangle",
    "angle",
    "probability",
    "sum",
    "roots",
    "divisible",
    "modulo",
    "inequality",
    "$x^2$",
    "$\\frac{a}{b}$",
    "corollary",
    "function",
    "limit",
    "series",
    "converges",
    "geometry",
    "algebra",
    "number",
];
const OTHER_WORDS: &[&str] = &[
    "recipe", "flour", "oven", "travel", "hotel", "football", "match", "season", "garden",
    "flowers", "music", "concert", "movie", "actor", "weather", "rain", "shopping", "price",
    "discount", "car", "engine", "holiday", "beach", "city", "news", "election", "phone", "review",
    "fashion", "shoes",
];
const FILLER: &[&str] = &[
    "the", "a", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "on", "this",
];

fn synthetic_page(rng: &mut crate::rng::Rng, math: bool, words: usize, out: &mut String) {
    let topic = if math { MATH_WORDS } else { OTHER_WORDS };
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        let w = if rng.below(3) == 0 {
            FILLER[rng.below(FILLER.len() as u64) as usize]
        } else if rng.below(10) == 0 {
            // A little noise from the other topic.
            let other = if math { OTHER_WORDS } else { MATH_WORDS };
            other[rng.below(other.len() as u64) as usize]
        } else {
            topic[rng.below(topic.len() as u64) as usize]
        };
        out.push_str(w);
    }
}

/// Writes `n` synthetic pages as JSONL (`id`, `url`, `text`) to `path`, a quarter of them math;
/// pages of `math-forum.example/forum` are math (the approved prefix of round 1). Returns
/// the bytes written.
fn write_synthetic(
    path: &Path,
    n: u64,
    seed: u64,
    id_prefix: &str,
    math_share: u64,
) -> std::io::Result<u64> {
    use std::io::Write;
    let mut rng = crate::rng::Rng::seeded(seed);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut text = String::new();
    let mut bytes = 0u64;
    for i in 0..n {
        text.clear();
        let math = rng.below(100) < math_share;
        let words = 200 + rng.below(400) as usize;
        synthetic_page(&mut rng, math, words, &mut text);
        let url = if math && i % 50 == 0 {
            format!("https://math-forum.example/forum/t{i}")
        } else {
            let host = rng.below(10_000);
            let section = if math { "math" } else { "page" };
            format!("https://site{host}.example/{section}/{i}")
        };
        let line = serde_json::json!({"id": format!("{id_prefix}{i}"), "url": url, "text": text})
            .to_string();
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
    }
    w.flush()?;
    Ok(bytes)
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`), where the OS tells it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Generates a synthetic pool of about `pool_bytes` in `dir` (with seed and negative pages),
/// then runs two recall rounds over it with an approved prefix (so round 1 reads the pool for
/// approved pages as well as for scoring), timing each round and reading the peak RSS.
pub fn recall_scale(
    dir: &Path,
    pool_bytes: u64,
    threads: i32,
) -> Result<RecallScaleBench, crate::recall::RecallError> {
    use crate::recall::{self, RecallConfig, RecallError};
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| RecallError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // ~2.4 KB a page on average.
    let pool_docs = (pool_bytes / 2_400).max(100);
    let t0 = Instant::now();
    let pool = dir.join("pool.jsonl");
    let written = write_synthetic(&pool, pool_docs, 1, "p", 25).map_err(io(&pool))?;
    let seed = dir.join("seed.jsonl");
    write_synthetic(&seed, 5_000, 2, "s", 100).map_err(io(&seed))?;
    let negatives = dir.join("negatives.jsonl");
    write_synthetic(&negatives, 10_000, 3, "n", 0).map_err(io(&negatives))?;
    let generate_s = t0.elapsed().as_secs_f64();
    let approved = dir.join("approved.txt");
    std::fs::write(&approved, "math-forum.example/forum\n").map_err(io(&approved))?;
    let out_dir = dir.join("out");
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir).map_err(io(&out_dir))?;
    }
    let cfg = RecallConfig {
        seed: vec![seed],
        negatives: vec![negatives],
        pool: vec![pool],
        out_dir,
        rounds: 2,
        negative_ratio: 1.0,
        token_budget: written / 30,
        min_score: 0.5,
        domain_share: 0.1,
        approved: Some(approved),
        random_seed: 0,
        stop_overlap: None,
        merge_chunk: 1 << 20,
        score_batch: 8192,
        classifier: recall::ClassifierConfig {
            dim: 32,
            bucket: 200_000,
            epoch: 3,
            thread: threads,
            ..Default::default()
        },
    };
    let mut round_s = Vec::new();
    let mut reports = Vec::new();
    for round in 0..cfg.rounds {
        let t = Instant::now();
        recall::train_round(&cfg, round)?;
        let train = t.elapsed().as_secs_f64();
        let t = Instant::now();
        recall::score_round(&cfg, round, recall::Shard::ALL)?;
        let score = t.elapsed().as_secs_f64();
        let t = Instant::now();
        reports.push(recall::merge_round(&cfg, round, 1)?);
        round_s.push([train, score, t.elapsed().as_secs_f64()]);
    }
    let total: f64 = round_s.iter().flatten().sum();
    let scoring: f64 = round_s.iter().map(|r| r[1]).sum();
    // Passes over the pool: one scoring pass a round, plus round 1's search for approved pages.
    let passes = cfg.rounds as f64 + 1.0;
    Ok(RecallScaleBench {
        pool_bytes: written,
        pool_docs,
        generate_s,
        round_s,
        docs_per_s: pool_docs as f64 * cfg.rounds as f64 / scoring,
        bytes_per_s: written as f64 * passes / total,
        peak_rss_bytes: peak_rss_bytes(),
        reports,
    })
}
