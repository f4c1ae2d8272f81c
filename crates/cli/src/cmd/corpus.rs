//! `reasonlab classifier …` (fastText-compatible train / test / predict) and
//! `reasonlab curate …` (read, dedup, decontam, recall rounds), plus the corpus benchmarks.

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_corpus::decontam::{Action, DecontamConfig, Decontaminator};
use reasonlab_corpus::dedup::{DedupConfig, KeepPolicy};
use reasonlab_corpus::fasttext::{Args, Loss};
use reasonlab_corpus::reader::{Format, ReadStats};
use reasonlab_corpus::recall::{self, RecallConfig, Shard};
use reasonlab_corpus::segment::Segmentation;
use reasonlab_corpus::{classifier, stages};

/// clap value parser for the library's serde-named enums (`drop-document` = `drop_document`).
fn serde_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
        .map_err(|e| e.to_string())
}

/// One stage of a recall round.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RecallStage {
    /// Train the round's classifier on the seed and the earlier rounds' positives.
    Train,
    /// Score the pool (or one shard of it) with the round's classifier.
    Score,
    /// Merge the scored shards into the round's collected pages.
    Merge,
}

#[derive(clap::Subcommand)]
pub enum ClassifierCommand {
    /// Train a supervised model on `__label__x text` lines; writes fastText `.bin`.
    Train(TrainArgs),
    /// N, P@k and R@k on a labelled file, as `fasttext test` prints them.
    Test(TestArgs),
    /// The top-k labels per line, as `fasttext predict[-prob]` prints them.
    Predict(PredictArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Start from DeepSeekMath's settings (dim 256, lr 0.1, wordNgrams 3, minCount 3, epoch 3);
    /// explicit flags still win.
    #[arg(long)]
    deepseekmath: bool,
    #[arg(long)]
    dim: Option<i32>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    word_ngrams: Option<i32>,
    #[arg(long)]
    min_count: Option<i32>,
    #[arg(long)]
    epoch: Option<i32>,
    #[arg(long)]
    bucket: Option<i32>,
    #[arg(long, default_value_t = 2)]
    thread: i32,
    /// softmax, ns, hs or ova.
    #[arg(long)]
    loss: Option<Loss>,
    #[arg(long)]
    neg: Option<i32>,
    #[arg(long)]
    minn: Option<i32>,
    #[arg(long)]
    maxn: Option<i32>,
    #[arg(long, default_value_t = 0)]
    seed: i32,
    #[arg(long, default_value = "__label__")]
    label: String,
    /// Word segmentation before features: whitespace (fastText's) or jieba (Chinese words cut,
    /// other text untouched). A model trained with jieba needs it at test / predict time too.
    #[arg(long, default_value = "whitespace")]
    segment: Segmentation,
}

#[derive(clap::Args)]
pub struct TestArgs {
    model: PathBuf,
    /// Labelled file, or `-` for stdin.
    input: PathBuf,
    #[arg(default_value_t = 1)]
    k: usize,
    #[arg(default_value_t = 0.0)]
    threshold: f32,
    /// Word segmentation before features: whitespace (fastText's) or jieba (Chinese words cut,
    /// other text untouched). A model trained with jieba needs it at test / predict time too.
    #[arg(long, default_value = "whitespace")]
    segment: Segmentation,
}

#[derive(clap::Args)]
pub struct PredictArgs {
    model: PathBuf,
    /// One document per line, or `-` for stdin.
    input: PathBuf,
    #[arg(default_value_t = 1)]
    k: usize,
    #[arg(default_value_t = 0.0)]
    threshold: f32,
    /// Print each label's probability after it.
    #[arg(long)]
    prob: bool,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Word segmentation before features: whitespace (fastText's) or jieba (Chinese words cut,
    /// other text untouched). A model trained with jieba needs it at test / predict time too.
    #[arg(long, default_value = "whitespace")]
    segment: Segmentation,
}

pub fn run_classifier(cmd: ClassifierCommand) -> anyhow::Result<()> {
    match cmd {
        ClassifierCommand::Train(a) => {
            let mut args = if a.deepseekmath {
                Args::deepseekmath()
            } else {
                Args::default()
            };
            args.dim = a.dim.unwrap_or(args.dim);
            args.lr = a.lr.unwrap_or(args.lr);
            args.word_ngrams = a.word_ngrams.unwrap_or(args.word_ngrams);
            args.min_count = a.min_count.unwrap_or(args.min_count);
            args.epoch = a.epoch.unwrap_or(args.epoch);
            args.loss = a.loss.unwrap_or(args.loss);
            args.neg = a.neg.unwrap_or(args.neg);
            args.minn = a.minn.unwrap_or(args.minn);
            args.maxn = a.maxn.unwrap_or(args.maxn);
            args.thread = a.thread;
            args.seed = a.seed;
            args.label = a.label;
            // fastText's rule: without word or character n-grams the bucket table is unused.
            args.bucket = a
                .bucket
                .unwrap_or(if args.word_ngrams <= 1 && args.maxn == 0 {
                    0
                } else {
                    args.bucket
                });
            create_parent(&a.output)?;
            let r = classifier::train_file(&a.input, &a.output, &args, a.segment)?;
            eprintln!(
                "Read {} tokens; {} words, {} labels; {} examples in {:.1}s; loss {:.4}",
                r.tokens, r.words, r.labels, r.examples, r.seconds, r.loss
            );
        }
        ClassifierCommand::Test(a) => {
            let m = classifier::test_file(&a.model, &a.input, a.k, a.threshold, a.segment)?;
            print!("{}", m.general_metrics(a.k));
        }
        ClassifierCommand::Predict(a) => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            classifier::predict_file(
                &a.model,
                &a.input,
                a.k,
                a.threshold,
                a.prob,
                a.threads,
                a.segment,
                &mut out,
            )?;
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum CurateCommand {
    /// Read WARC / WET / JSONL (.gz, .zst) into JSONL documents `{id, url, text}`; bad records
    /// are counted and skipped.
    Read {
        inputs: Vec<PathBuf>,
        #[arg(long)]
        output: PathBuf,
        /// warc, wet or jsonl; guessed from each name by default.
        #[arg(long, value_parser = serde_enum::<Format>)]
        format: Option<Format>,
    },
    /// Exact (URL, normalised text) and MinHash LSH near-duplicate removal.
    Dedup {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Write the near-duplicate clusters (ids, kept first) as JSONL here.
        #[arg(long)]
        clusters: Option<PathBuf>,
        /// first or longest.
        #[arg(long, default_value = "first", value_parser = serde_enum::<KeepPolicy>)]
        keep: KeepPolicy,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Remove documents (or lines) sharing a 10-gram with benchmark problems / answers.
    Decontam {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Benchmark JSONL files or folders of them (`problem`, `answer`); default: the
        /// built-in benchmarks (GSM8K test, MATH-500, AIME 2024, AMC 2023, CMATH, MGSM-zh).
        #[arg(long)]
        benchmarks: Vec<PathBuf>,
        /// drop-document or drop-segment.
        #[arg(long, default_value = "drop-document", value_parser = serde_enum::<Action>)]
        action: Action,
        #[arg(long, default_value_t = 10)]
        ngram: usize,
        /// Write the report (which benchmark items were hit) as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// DeepSeekMath's iterative recall rounds (see `docs/corpus.md`).
    Recall {
        #[arg(long)]
        config: PathBuf,
        /// Run one stage of one round (all rounds, all stages by default).
        #[arg(long, value_enum)]
        stage: Option<RecallStage>,
        /// Round for `--stage`.
        #[arg(long, default_value_t = 0)]
        round: usize,
        /// `i/N`: score only this shard (with `--stage score`); for merge, N shards are read.
        #[arg(long)]
        shard: Option<Shard>,
    },
}

fn report_stats(stats: &ReadStats) {
    let reasons = [
        ("empty", stats.empty),
        ("invalid UTF-8", stats.invalid_utf8),
        ("too long", stats.too_long),
        ("malformed", stats.malformed),
        ("truncated", stats.truncated),
        ("not HTML or text", stats.not_text),
        ("HTTP status not 2xx", stats.http_status),
        ("content coding not undone", stats.undecodable),
        ("revisit", stats.revisits),
    ];
    let why: Vec<String> = reasons
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
    eprintln!(
        "read {} records: {} documents; skipped {}{}",
        stats.records,
        stats.documents,
        stats.skipped(),
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        }
    );
    if !stats.charsets.is_empty() {
        let decoded: Vec<String> = stats
            .charsets
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        eprintln!("decoded from: {}", decoded.join(", "));
    }
    for e in &stats.examples {
        eprintln!("  {e}");
    }
}

pub fn run_curate(cmd: CurateCommand) -> anyhow::Result<()> {
    match cmd {
        CurateCommand::Read {
            inputs,
            output,
            format,
        } => {
            let stats = stages::read_to_jsonl(&inputs, format, &output, &mut |p, e| {
                eprintln!("warning: skipping {}: {e}", p.display())
            })?;
            report_stats(&stats);
        }
        CurateCommand::Dedup {
            input,
            output,
            clusters,
            keep,
            threads,
        } => {
            let cfg = DedupConfig {
                keep,
                threads,
                ..Default::default()
            };
            let r = stages::dedup_jsonl(&input, &output, clusters.as_deref(), &cfg)?;
            report_stats(&r.read);
            eprintln!(
                "kept {} of {}: {} URL, {} exact-text, {} near duplicates in {} clusters",
                r.kept, r.documents, r.url_dups, r.text_dups, r.near_dups, r.clusters
            );
        }
        CurateCommand::Decontam {
            input,
            output,
            benchmarks,
            action,
            ngram,
            report,
        } => {
            let mut d = Decontaminator::new(DecontamConfig {
                n: ngram,
                action,
                ..Default::default()
            });
            if benchmarks.is_empty() {
                for b in reasonlab_eval::BuiltIn::ALL {
                    let rows: Vec<serde_json::Value> = b
                        .jsonl()
                        .lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect();
                    d.add_rows(&format!("{}.jsonl", b.name()), &rows);
                }
            }
            for b in &benchmarks {
                stages::add_benchmark_path(&mut d, b)?;
            }
            let r = stages::decontam_jsonl(&input, &output, &d)?;
            report_stats(&r.read);
            let rep = &r.report;
            eprintln!(
                "{} documents, {} contaminated, {} dropped; {} benchmark items hit ({} indexed)",
                rep.documents,
                rep.contaminated,
                rep.dropped,
                rep.items_hit.len(),
                r.indexed
            );
            if let Some(p) = report {
                std::fs::write(&p, serde_json::to_string_pretty(rep)?)?;
            }
        }
        CurateCommand::Recall {
            config,
            stage,
            round,
            shard,
        } => {
            let cfg = RecallConfig::load(&config)?;
            match stage {
                None => {
                    for r in recall::run_all(&cfg)? {
                        println!("{}", serde_json::to_string(&r)?);
                    }
                }
                Some(RecallStage::Train) => {
                    println!("{}", recall::train_round(&cfg, round)?.display())
                }
                Some(RecallStage::Score) => println!(
                    "{}",
                    recall::score_round(&cfg, round, shard.unwrap_or(Shard::ALL))?.display()
                ),
                Some(RecallStage::Merge) => {
                    let n = shard.map_or(1, |s| s.count);
                    println!(
                        "{}",
                        serde_json::to_string(&recall::merge_round(&cfg, round, n)?)?
                    );
                }
            }
        }
    }
    Ok(())
}

/// `reasonlab bench classifier`: ours vs fastText 0.9 on a labelled math-vs-other set.
#[derive(clap::Args)]
pub struct BenchClassifierArgs {
    /// Built by `scripts/build_math_vs_other.py runs/bench-classifier`.
    #[arg(long, default_value = "runs/bench-classifier/train.txt")]
    train: PathBuf,
    #[arg(long, default_value = "runs/bench-classifier/test.txt")]
    test: PathBuf,
    #[arg(long, default_value = "runs/bench-classifier/ours.bin")]
    model: PathBuf,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Train and predict this many times; report the best time of each and the mean F1
    /// (Hogwild training is not deterministic across threads). The peer script takes the
    /// same `--runs`.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// JSON line from `scripts/bench_classifier_fasttext.py`, for the side-by-side.
    #[arg(long)]
    peer_json: Option<PathBuf>,
}

impl BenchClassifierArgs {
    pub fn config(self) -> reasonlab_bench::ClassifierBenchConfig {
        reasonlab_bench::ClassifierBenchConfig {
            train: self.train,
            test: self.test,
            model: self.model,
            threads: self.threads,
            runs: self.runs,
            peer_json: self.peer_json,
        }
    }
}

/// `reasonlab bench minhash`: MinHash LSH docs/s on the texts of a fastText-format file.
#[derive(clap::Args)]
pub struct BenchMinhashArgs {
    #[arg(long, default_value = "runs/bench-classifier/train.txt")]
    pub input: PathBuf,
    #[arg(long, default_value_t = 20000)]
    pub docs: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Create the folder `path` goes in, so outputs can name a new folder.
fn create_parent(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}
