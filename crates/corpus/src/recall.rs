//! Iterative recall of math pages (DeepSeekMath §2.1, Figure 2): train a classifier on seed
//! positives vs sampled negatives, score the pool, keep the top pages within a token budget,
//! group them by domain, flag domains where more than `domain_share` of the pool pages were
//! selected and list their URL-path prefixes for people to annotate; pages under approved
//! prefixes join the seed, and the next round retrains.
//!
//! Each round lives in `out_dir/round-R/` (`train.txt`, `model.bin`, `scores-I-of-N.jsonl`,
//! `selected.jsonl`, `domains.tsv`, `prefixes.tsv`, `report.json`); a stage whose output exists
//! is skipped, so any stage can be rerun or resumed. Scoring splits the pool by a hash of the
//! document id (`--shard i/N`, for Slurm job arrays or Kubernetes Indexed Jobs); `merge`
//! combines the shards.
//!
//! Every stage streams, so a Common Crawl dump fits: memory is bounded by the training set's
//! shuffle (at most [`SHUFFLE_BYTES`] in memory, spilled to buckets beyond that), the scoring
//! batch ([`RecallConfig::score_batch`] pages, scored on the classifier's threads), the merge's
//! sorted runs ([`RecallConfig::merge_chunk`] scores at a time) and the per-domain counts, never
//! by the size of the pool. Each report says how many of the round's pages earlier rounds had
//! already selected; DeepSeekMath stopped when that reached 98% (`stop_overlap`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use reasonlab_text::ngram::hash64;

use crate::fasttext::{Args, FastText, FastTextError, Loss, Scratch};
use crate::reader::{self, Document, Format, ReadLimits, ReadStats};
use crate::rng::Rng;
use crate::segment::Segmentation;

/// `recall.toml`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallConfig {
    /// Seed math documents (JSONL with `text`, or WET/WARC).
    pub seed: Vec<PathBuf>,
    /// Random general web documents to sample negatives from.
    pub negatives: Vec<PathBuf>,
    /// The pool to score (deduplicated web pages with URLs).
    pub pool: Vec<PathBuf>,
    pub out_dir: PathBuf,
    #[serde(default = "d_rounds")]
    pub rounds: usize,
    /// Negatives sampled per positive.
    #[serde(default = "d_one")]
    pub negative_ratio: f64,
    /// Whitespace tokens kept per round (top score first).
    pub token_budget: u64,
    /// Pages scoring below this are never kept.
    #[serde(default = "d_half")]
    pub min_score: f32,
    /// Flag a domain when more than this share of its pool pages were selected.
    #[serde(default = "d_share")]
    pub domain_share: f64,
    /// Approved `host/path-prefix` lines (written by people after reading `prefixes.tsv`).
    #[serde(default)]
    pub approved: Option<PathBuf>,
    #[serde(default)]
    pub random_seed: u64,
    /// Stop `run_all` after the first round (≥ 1) in which at least this share of the selected
    /// pages had been selected by an earlier round (DeepSeekMath §2.1: 0.98). Unset: run every
    /// round.
    #[serde(default)]
    pub stop_overlap: Option<f64>,
    /// Scores sorted in memory at a time by `merge` before they spill to a sorted run on disk.
    #[serde(default = "d_merge_chunk")]
    pub merge_chunk: usize,
    /// Pages scored together: read on one thread, scored on `classifier.thread` threads,
    /// written in input order. Scoring holds one batch of pages in memory.
    #[serde(default = "d_score_batch")]
    pub score_batch: usize,
    #[serde(default)]
    pub classifier: ClassifierConfig,
}

fn d_merge_chunk() -> usize {
    1 << 20
}

fn d_score_batch() -> usize {
    8192
}

/// Bytes of training lines shuffled in memory; a larger training set is shuffled through
/// random buckets on disk of about this size each.
pub const SHUFFLE_BYTES: u64 = 64 << 20;

fn d_rounds() -> usize {
    4
}
fn d_one() -> f64 {
    1.0
}
fn d_half() -> f32 {
    0.5
}
fn d_share() -> f64 {
    0.10
}

/// Classifier hyperparameters (DeepSeekMath's by default).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    pub dim: i32,
    pub lr: f64,
    pub word_ngrams: i32,
    pub min_count: i32,
    pub epoch: i32,
    pub bucket: i32,
    pub thread: i32,
    pub loss: Loss,
    /// Word segmentation before features, for training and scoring alike ("whitespace", as
    /// fastText, or "jieba" for Chinese pages).
    pub segmentation: Segmentation,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        let a = Args::deepseekmath();
        Self {
            dim: a.dim,
            lr: a.lr,
            word_ngrams: a.word_ngrams,
            min_count: a.min_count,
            epoch: a.epoch,
            bucket: a.bucket,
            thread: 2,
            loss: a.loss,
            segmentation: Segmentation::Whitespace,
        }
    }
}

impl ClassifierConfig {
    pub fn args(&self, seed: u64) -> Args {
        Args {
            dim: self.dim,
            lr: self.lr,
            word_ngrams: self.word_ngrams,
            min_count: self.min_count,
            epoch: self.epoch,
            bucket: self.bucket,
            thread: self.thread,
            loss: self.loss,
            seed: seed as i32,
            ..Args::default()
        }
    }
}

/// Errors of the recall loop.
#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Classifier(#[from] FastTextError),
    #[error("round {round}: {what} is missing; run the earlier stage first")]
    Missing { round: usize, what: String },
    #[error("bad shard {0:?}: expected i/N with i < N")]
    Shard(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RecallError + '_ {
    move |source| RecallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `i/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = RecallError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RecallError::Shard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, id: &str) -> bool {
        hash64(id.as_bytes()) % self.count as u64 == self.index as u64
    }
}

/// Stages of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Train,
    Score,
    Merge,
}

impl RecallConfig {
    pub fn load(path: &Path) -> Result<Self, RecallError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut cfg: RecallConfig = toml::from_str(&text).map_err(|e| RecallError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        cfg.seed.iter_mut().for_each(fix);
        cfg.negatives.iter_mut().for_each(fix);
        cfg.pool.iter_mut().for_each(fix);
        fix(&mut cfg.out_dir);
        if let Some(a) = cfg.approved.as_mut() {
            fix(a);
        }
        if cfg.rounds == 0
            || !(0.0..=1.0).contains(&cfg.domain_share)
            || cfg.merge_chunk == 0
            || cfg.score_batch == 0
            || cfg.stop_overlap.is_some_and(|o| !(0.0..=1.0).contains(&o))
        {
            return Err(RecallError::Config {
                path: path.into(),
                message:
                    "rounds and merge_chunk must be > 0, domain_share and stop_overlap in [0, 1]"
                        .into(),
            });
        }
        Ok(cfg)
    }

    pub fn round_dir(&self, round: usize) -> PathBuf {
        self.out_dir.join(format!("round-{round}"))
    }
}

/// Streams every document of `paths` through `f`.
fn for_each_doc(
    paths: &[PathBuf],
    stats: &mut ReadStats,
    f: &mut dyn FnMut(Document),
) -> Result<(), RecallError> {
    for p in paths {
        let s =
            reader::read_file(p, Format::from_path(p), ReadLimits::default(), f).map_err(io(p))?;
        stats.merge(&s);
    }
    Ok(())
}

/// One line of fastText input: newlines and tabs become spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `host` of a URL, lowercased.
pub fn host(url: &str) -> String {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// `host/first-path-segment` — the prefix people annotate.
pub fn path_prefix(url: &str) -> String {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let mut parts = rest.split(['?', '#']).next().unwrap_or("").splitn(3, '/');
    let h = parts.next().unwrap_or("").to_ascii_lowercase();
    match parts.next().filter(|s| !s.is_empty()) {
        Some(seg) => format!("{h}/{seg}"),
        None => h,
    }
}

fn approved_prefixes(cfg: &RecallConfig) -> Result<Vec<String>, RecallError> {
    let Some(p) = &cfg.approved else {
        return Ok(Vec::new());
    };
    if !p.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(p).map_err(io(p))?;
    Ok(text
        .lines()
        .map(|l| {
            l.split('\t')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect())
}

fn matches_prefix(url: &str, prefixes: &[String]) -> bool {
    let rest = url
        .split_once("://")
        .map(|x| x.1)
        .unwrap_or(url)
        .to_ascii_lowercase();
    prefixes.iter().any(|p| {
        rest == *p
            || rest.starts_with(&format!("{p}/"))
            || (rest.starts_with(p.as_str())
                && !p.contains('/')
                && rest[p.len()..].starts_with(['/', '?']))
    })
}

/// Stage 1: write the training file (seed + approved pages from earlier rounds vs sampled
/// negatives) and train `model.bin`.
///
/// Streams: positives go straight to disk (only a 64-bit hash per positive id is kept, to drop
/// duplicates); negatives are sampled by index in two passes over their files; the lines are
/// shuffled in memory up to [`SHUFFLE_BYTES`], through buckets on disk beyond.
pub fn train_round(cfg: &RecallConfig, round: usize) -> Result<PathBuf, RecallError> {
    let dir = cfg.round_dir(round);
    let model = dir.join("model.bin");
    if model.exists() {
        return Ok(model);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut stats = ReadStats::default();
    let seg = cfg.classifier.segmentation;
    let staged = dir.join("train.unshuffled.tmp");
    let mut w = Lines::create(&staged)?;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut positives = 0u64;
    {
        let mut add = |d: Document| {
            if seen.insert(hash64(d.id.as_bytes())) {
                positives += 1;
                w.line(&format!("__label__math {}", one_line(&seg.apply(&d.text))));
            }
        };
        for_each_doc(&cfg.seed, &mut stats, &mut add)?;
        let prefixes = approved_prefixes(cfg)?;
        if round > 0 && !prefixes.is_empty() {
            for_each_doc(&cfg.pool, &mut stats, &mut |d| {
                if matches_prefix(&d.url, &prefixes) {
                    add(d);
                }
            })?;
        }
    }
    drop(seen);
    let mut available = 0u64;
    for_each_doc(&cfg.negatives, &mut stats, &mut |_| available += 1)?;
    let mut rng = Rng::seeded(cfg.random_seed ^ (round as u64).wrapping_mul(0x9E37));
    let want = ((positives as f64 * cfg.negative_ratio).round() as u64).min(available);
    let chosen = sample_indices(available, want, &mut rng);
    let mut index = 0u64;
    for_each_doc(&cfg.negatives, &mut stats, &mut |d| {
        if chosen.contains(&index) {
            w.line(&format!("__label__other {}", one_line(&seg.apply(&d.text))));
        }
        index += 1;
    })?;
    drop(chosen);
    w.finish()?;
    let train = dir.join("train.txt");
    shuffle_lines(&staged, &train, SHUFFLE_BYTES, &mut rng)?;
    std::fs::remove_file(&staged).map_err(io(&staged))?;
    let (m, _) = crate::fasttext::train(&train, &cfg.classifier.args(cfg.random_seed))?;
    m.save(&model)?;
    Ok(model)
}

/// `want` distinct indices below `n`, uniformly (Floyd's algorithm: memory ∝ `want`).
fn sample_indices(n: u64, want: u64, rng: &mut Rng) -> HashSet<u64> {
    let mut chosen = HashSet::with_capacity(want as usize);
    for j in n - want..n {
        let t = rng.below(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen
}

/// A line writer that keeps the first I/O error.
struct Lines {
    path: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
    err: Option<std::io::Error>,
    bytes: u64,
}

impl Lines {
    fn create(path: &Path) -> Result<Self, RecallError> {
        let f = std::fs::File::create(path).map_err(io(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            w: std::io::BufWriter::new(f),
            err: None,
            bytes: 0,
        })
    }

    fn line(&mut self, line: &str) {
        if self.err.is_none() {
            self.bytes += line.len() as u64 + 1;
            if let Err(e) = self
                .w
                .write_all(line.as_bytes())
                .and_then(|_| self.w.write_all(b"\n"))
            {
                self.err = Some(e);
            }
        }
    }

    fn finish(mut self) -> Result<u64, RecallError> {
        if let Some(e) = self.err.take() {
            return Err(io(&self.path)(e));
        }
        self.w.flush().map_err(io(&self.path))?;
        Ok(self.bytes)
    }
}

/// Writes the lines of `input` to `output` in a uniformly random order: in memory when the
/// file is at most `budget` bytes, else through `⌈size / budget⌉` random buckets on disk, each
/// shuffled in memory (a uniform bucket choice followed by uniform shuffles within buckets is a
/// uniform permutation).
pub(crate) fn shuffle_lines(
    input: &Path,
    output: &Path,
    budget: u64,
    rng: &mut Rng,
) -> Result<(), RecallError> {
    use std::io::BufRead;
    let size = std::fs::metadata(input).map_err(io(input))?.len();
    let buckets = size.div_ceil(budget.max(1)).max(1);
    let shuffle = |lines: &mut Vec<String>, rng: &mut Rng| {
        for i in (1..lines.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            lines.swap(i, j);
        }
    };
    let read_lines = |p: &Path| -> Result<Vec<String>, RecallError> {
        let f = std::fs::File::open(p).map_err(io(p))?;
        std::io::BufReader::new(f)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(io(p))
    };
    let mut out = Lines::create(output)?;
    if buckets == 1 {
        let mut lines = read_lines(input)?;
        shuffle(&mut lines, rng);
        lines.iter().for_each(|l| out.line(l));
        out.finish()?;
        return Ok(());
    }
    let names: Vec<PathBuf> = (0..buckets)
        .map(|b| output.with_extension(format!("bucket-{b}.tmp")))
        .collect();
    let mut writers = names
        .iter()
        .map(|p| Lines::create(p))
        .collect::<Result<Vec<_>, _>>()?;
    let f = std::fs::File::open(input).map_err(io(input))?;
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(io(input))?;
        writers[rng.below(buckets) as usize].line(&line);
    }
    for w in writers {
        w.finish()?;
    }
    for name in &names {
        let mut lines = read_lines(name)?;
        shuffle(&mut lines, rng);
        lines.iter().for_each(|l| out.line(l));
        std::fs::remove_file(name).map_err(io(name))?;
    }
    out.finish()?;
    Ok(())
}

/// A scored pool page.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    pub id: String,
    pub url: String,
    pub score: f32,
    pub tokens: u64,
}

/// Stage 2: score this shard's pool pages (`P(__label__math)`), on `classifier.thread`
/// threads; the output is the same, line for line, whatever the thread count.
pub fn score_round(cfg: &RecallConfig, round: usize, shard: Shard) -> Result<PathBuf, RecallError> {
    let dir = cfg.round_dir(round);
    let out = dir.join(format!("scores-{}-of-{}.jsonl", shard.index, shard.count));
    if out.exists() {
        return Ok(out);
    }
    let model_path = dir.join("model.bin");
    if !model_path.exists() {
        return Err(RecallError::Missing {
            round,
            what: "model.bin".into(),
        });
    }
    let model = FastText::load(&model_path)?;
    let tmp = out.with_extension("jsonl.tmp");
    let mut w = Lines::create(&tmp)?;
    let threads = (cfg.classifier.thread.max(1) as usize).min(64);
    let seg = cfg.classifier.segmentation;
    let size = cfg.score_batch.max(1);
    let mut batch: Vec<Document> = Vec::with_capacity(size.min(1 << 16));
    let flush = |batch: &mut Vec<Document>, w: &mut Lines| {
        for s in score_batch(&model, seg, batch, threads) {
            w.line(&serde_json::to_string(&s).expect("a score serialises"));
        }
        batch.clear();
    };
    for p in &cfg.pool {
        reader::read_file(p, Format::from_path(p), ReadLimits::default(), &mut |d| {
            if shard.owns(&d.id) {
                batch.push(d);
                if batch.len() >= size {
                    flush(&mut batch, &mut w);
                }
            }
        })
        .map_err(io(p))?;
    }
    flush(&mut batch, &mut w);
    w.finish()?;
    std::fs::rename(&tmp, &out).map_err(io(&out))?;
    Ok(out)
}

/// Scores a batch on up to `threads` scoped threads, each with its own scratch space, in order.
fn score_batch(
    model: &FastText,
    seg: Segmentation,
    batch: &mut [Document],
    threads: usize,
) -> Vec<Scored> {
    let score_all = |docs: &mut [Document]| -> Vec<Scored> {
        let mut scratch = Scratch::default();
        docs.iter_mut()
            .map(|d| Scored {
                score: model
                    .prob_of(&seg.apply(&d.text), "__label__math", &mut scratch)
                    .unwrap_or(0.0),
                tokens: d.text.split_whitespace().count() as u64,
                id: std::mem::take(&mut d.id),
                url: std::mem::take(&mut d.url),
            })
            .collect()
    };
    if threads <= 1 || batch.len() < 2 * threads {
        return score_all(batch);
    }
    let per = batch.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks_mut(per)
            .map(|chunk| s.spawn(|| score_all(chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scoring thread does not panic"))
            .collect()
    })
}

/// Per-round report.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundReport {
    pub round: usize,
    pub scored: u64,
    pub pages: u64,
    pub tokens: u64,
    pub domains: u64,
    pub new_domains: u64,
    pub flagged_domains: u64,
    /// Counts of scores in [0, 0.1), [0.1, 0.2), ... [0.9, 1.0].
    pub score_histogram: [u64; 10],
    /// Selected pages that an earlier round had already selected.
    #[serde(default)]
    pub collected_before: u64,
    /// `collected_before / pages` (0 in round 0): DeepSeekMath stopped at 0.98.
    #[serde(default)]
    pub overlap: f64,
}

/// Stage 3: merge shard scores, keep the top pages within the budget, write domain and
/// prefix tables and the report.
pub fn merge_round(
    cfg: &RecallConfig,
    round: usize,
    shards: usize,
) -> Result<RoundReport, RecallError> {
    let dir = cfg.round_dir(round);
    let report_path = dir.join("report.json");
    if let Ok(t) = std::fs::read_to_string(&report_path)
        && let Ok(r) = serde_json::from_str(&t)
    {
        return Ok(r);
    }
    let mut paths = Vec::with_capacity(shards);
    for i in 0..shards {
        let p = dir.join(format!("scores-{i}-of-{shards}.jsonl"));
        if !p.exists() {
            return Err(RecallError::Missing {
                round,
                what: p.display().to_string(),
            });
        }
        paths.push(p);
    }
    let mut report = RoundReport {
        round,
        ..Default::default()
    };
    // Pass 1: counts, histogram and sorted runs of at most `merge_chunk` scores.
    let mut per_domain: HashMap<String, (u64, u64)> = HashMap::new();
    let mut runs = SortedRuns::new(&dir, cfg.merge_chunk);
    for p in &paths {
        for_each_score(p, &mut |s| {
            report.scored += 1;
            report.score_histogram[((s.score.clamp(0.0, 1.0) * 10.0) as usize).min(9)] += 1;
            per_domain.entry(host(&s.url)).or_default().0 += 1;
            runs.push(s)
        })?;
    }
    // Pages earlier rounds selected (hashed ids: memory ∝ the selected pages, not the pool).
    let mut before: HashSet<u64> = HashSet::new();
    for r in 0..round {
        let p = cfg.round_dir(r).join("selected.jsonl");
        if p.exists() {
            for_each_score(&p, &mut |s| {
                before.insert(hash64(s.id.as_bytes()));
                Ok(())
            })?;
        }
    }
    // Pass 2: the greedy selection in score order, from the merged runs.
    let sel_path = dir.join("selected.jsonl");
    let sel_tmp = sel_path.with_extension("jsonl.tmp");
    let mut sel = Lines::create(&sel_tmp)?;
    let mut prefixes: BTreeMap<String, u64> = BTreeMap::new();
    runs.merge(&mut |s| {
        if s.score < cfg.min_score || report.tokens + s.tokens > cfg.token_budget {
            return;
        }
        report.pages += 1;
        report.tokens += s.tokens;
        if before.contains(&hash64(s.id.as_bytes())) {
            report.collected_before += 1;
        }
        per_domain.entry(host(&s.url)).or_default().1 += 1;
        *prefixes.entry(path_prefix(&s.url)).or_default() += 1;
        sel.line(&serde_json::to_string(&s).expect("a score serialises"));
    })?;
    sel.finish()?;
    std::fs::rename(&sel_tmp, &sel_path).map_err(io(&sel_path))?;
    report.overlap = if round == 0 || report.pages == 0 {
        0.0
    } else {
        report.collected_before as f64 / report.pages as f64
    };
    let mut earlier: HashSet<String> = HashSet::new();
    for r in 0..round {
        if let Ok(t) = std::fs::read_to_string(cfg.round_dir(r).join("domains.tsv")) {
            earlier.extend(
                t.lines()
                    .skip(1)
                    .filter_map(|l| l.split('\t').next())
                    .map(String::from),
            );
        }
    }
    let mut domains: Vec<(&String, &(u64, u64))> =
        per_domain.iter().filter(|(_, c)| c.1 > 0).collect();
    domains.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
    let mut tsv = String::from("domain\tselected\tpool\tshare\tflagged\n");
    let mut flagged = HashSet::new();
    for (d, counts) in &domains {
        let (pool, selected) = **counts;
        let share = selected as f64 / pool.max(1) as f64;
        let flag = share > cfg.domain_share;
        if flag {
            flagged.insert((*d).clone());
        }
        tsv += &format!("{d}\t{selected}\t{pool}\t{share:.3}\t{flag}\n");
    }
    report.domains = domains.len() as u64;
    report.new_domains = domains
        .iter()
        .filter(|(d, _)| !earlier.contains(*d))
        .count() as u64;
    report.flagged_domains = flagged.len() as u64;
    let p = dir.join("domains.tsv");
    std::fs::write(&p, tsv).map_err(io(&p))?;
    let mut ptsv =
        String::from("# prefix\tselected — copy approved lines into the `approved` file\n");
    for (prefix, n) in &prefixes {
        if flagged.contains(&host(prefix)) {
            ptsv += &format!("{prefix}\t{n}\n");
        }
    }
    let p = dir.join("prefixes.tsv");
    std::fs::write(&p, ptsv).map_err(io(&p))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| io(&report_path)(e.into()))?;
    reasonlab_core::fs::atomic_write(&report_path, json.as_bytes()).map_err(io(&report_path))?;
    Ok(report)
}

/// Run every round end to end on this machine (one shard), skipping finished stages.
pub fn run_all(cfg: &RecallConfig) -> Result<Vec<RoundReport>, RecallError> {
    let mut reports = Vec::new();
    for round in 0..cfg.rounds {
        train_round(cfg, round)?;
        score_round(cfg, round, Shard::ALL)?;
        let report = merge_round(cfg, round, 1)?;
        let converged = round > 0 && cfg.stop_overlap.is_some_and(|o| report.overlap >= o);
        reports.push(report);
        if converged {
            break;
        }
    }
    Ok(reports)
}

/// Reads the scores of a JSONL file one at a time; malformed lines are skipped with a warning
/// naming the file and line.
fn for_each_score(
    path: &Path,
    f: &mut dyn FnMut(Scored) -> Result<(), RecallError>,
) -> Result<(), RecallError> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(io(path))?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Scored>(&line) {
            Ok(s) => f(s)?,
            Err(e) => tracing::warn!("{}:{}: skipped: {e}", path.display(), i + 1),
        }
    }
    Ok(())
}

/// Highest score first, then id: the order pages are selected in.
fn selection_order(a: &Scored, b: &Scored) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id))
}

/// An external sort of scores: sorted runs of at most `chunk` scores spill to files next to
/// the round's outputs, then a k-way merge yields them all in [`selection_order`].
struct SortedRuns {
    dir: PathBuf,
    chunk: usize,
    buffer: Vec<Scored>,
    files: Vec<PathBuf>,
}

impl SortedRuns {
    fn new(dir: &Path, chunk: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            chunk,
            buffer: Vec::new(),
            files: Vec::new(),
        }
    }

    fn push(&mut self, s: Scored) -> Result<(), RecallError> {
        self.buffer.push(s);
        if self.buffer.len() >= self.chunk {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), RecallError> {
        self.buffer.sort_by(selection_order);
        let path = self.dir.join(format!("merge-run-{}.tmp", self.files.len()));
        let mut w = Lines::create(&path)?;
        for s in self.buffer.drain(..) {
            w.line(&serde_json::to_string(&s).expect("a score serialises"));
        }
        w.finish()?;
        self.files.push(path);
        Ok(())
    }

    /// Every score in order; the run files are removed afterwards.
    fn merge(mut self, f: &mut dyn FnMut(Scored)) -> Result<(), RecallError> {
        use std::io::BufRead;
        if self.files.is_empty() {
            self.buffer.sort_by(selection_order);
            self.buffer.drain(..).for_each(f);
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        struct Head(Scored, usize);
        impl PartialEq for Head {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o).is_eq()
            }
        }
        impl Eq for Head {}
        impl PartialOrd for Head {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Head {
            // A max-heap pops the first in selection order.
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                selection_order(&o.0, &self.0).then_with(|| o.1.cmp(&self.1))
            }
        }
        let mut readers = Vec::with_capacity(self.files.len());
        for p in &self.files {
            let f = std::fs::File::open(p).map_err(io(p))?;
            readers.push(std::io::BufReader::new(f).lines());
        }
        let next =
            |i: usize, readers: &mut Vec<std::io::Lines<_>>| -> Result<Option<Head>, RecallError> {
                match readers[i].next() {
                    None => Ok(None),
                    Some(line) => {
                        let line: String = line.map_err(io(&self.files[i]))?;
                        let s = serde_json::from_str(&line).map_err(|e| RecallError::Config {
                            path: self.files[i].clone(),
                            message: e.to_string(),
                        })?;
                        Ok(Some(Head(s, i)))
                    }
                }
            };
        let mut heap = std::collections::BinaryHeap::new();
        for i in 0..readers.len() {
            if let Some(h) = next(i, &mut readers)? {
                heap.push(h);
            }
        }
        while let Some(Head(s, i)) = heap.pop() {
            f(s);
            if let Some(h) = next(i, &mut readers)? {
                heap.push(h);
            }
        }
        for p in &self.files {
            std::fs::remove_file(p).map_err(io(p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_do_not_depend_on_the_thread_count() {
        let model = FastText::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/model.bin"
        )))
        .unwrap();
        let docs: Vec<Document> = (0..101)
            .map(|i| Document {
                id: format!("d{i}"),
                url: format!("https://x{i}.org/"),
                text: if i % 3 == 0 {
                    format!("prove the theorem for every integer n > {i}")
                } else {
                    format!("bake the bread for {i} minutes")
                },
            })
            .collect();
        let one = score_batch(&model, Segmentation::Whitespace, &mut docs.clone(), 1);
        let three = score_batch(&model, Segmentation::Whitespace, &mut docs.clone(), 3);
        assert_eq!(one.len(), 101);
        assert_eq!(one, three);
        assert_eq!(three[100].id, "d100");
    }

    #[test]
    fn shards_partition_and_prefixes() {
        let s: Shard = "1/3".parse().unwrap();
        assert!("3/3".parse::<Shard>().is_err());
        let owned: Vec<bool> = (0..3)
            .map(|i| Shard { index: i, count: 3 }.owns("doc-7"))
            .collect();
        assert_eq!(owned.iter().filter(|x| **x).count(), 1);
        let _ = s;
        assert_eq!(
            path_prefix("https://Math.Example.com/forum/t/1?x=2"),
            "math.example.com/forum"
        );
        assert_eq!(host("http://a.b/c"), "a.b");
        assert!(matches_prefix(
            "https://m.org/forum/t/1",
            &["m.org/forum".into()]
        ));
        assert!(!matches_prefix(
            "https://m.org/forumx/1",
            &["m.org/forum".into()]
        ));
    }
}
