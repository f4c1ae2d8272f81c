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
    #[serde(default)]
    pub classifier: ClassifierConfig,
}

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
        if cfg.rounds == 0 || !(0.0..=1.0).contains(&cfg.domain_share) {
            return Err(RecallError::Config {
                path: path.into(),
                message: "rounds must be > 0 and domain_share in [0, 1]".into(),
            });
        }
        Ok(cfg)
    }

    pub fn round_dir(&self, round: usize) -> PathBuf {
        self.out_dir.join(format!("round-{round}"))
    }
}

fn read_docs(paths: &[PathBuf], stats: &mut ReadStats) -> Result<Vec<Document>, RecallError> {
    let mut docs = Vec::new();
    for p in paths {
        let s = reader::read_file(p, Format::from_path(p), ReadLimits::default(), &mut |d| {
            docs.push(d)
        })
        .map_err(io(p))?;
        stats.merge(&s);
    }
    Ok(docs)
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
pub fn train_round(cfg: &RecallConfig, round: usize) -> Result<PathBuf, RecallError> {
    let dir = cfg.round_dir(round);
    let model = dir.join("model.bin");
    if model.exists() {
        return Ok(model);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut stats = ReadStats::default();
    let mut pos = read_docs(&cfg.seed, &mut stats)?;
    let prefixes = approved_prefixes(cfg)?;
    if round > 0 && !prefixes.is_empty() {
        let mut seen: HashSet<String> = pos.iter().map(|d| d.id.clone()).collect();
        for d in read_docs(&cfg.pool, &mut stats)? {
            if matches_prefix(&d.url, &prefixes) && seen.insert(d.id.clone()) {
                pos.push(d);
            }
        }
    }
    let negs = read_docs(&cfg.negatives, &mut stats)?;
    let mut rng = Rng::seeded(cfg.random_seed ^ (round as u64).wrapping_mul(0x9E37));
    let want = ((pos.len() as f64 * cfg.negative_ratio).round() as usize).min(negs.len());
    let mut idx: Vec<usize> = (0..negs.len()).collect();
    for i in 0..want {
        let j = i + rng.below((idx.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    let seg = cfg.classifier.segmentation;
    let mut lines: Vec<String> = pos
        .iter()
        .map(|d| format!("__label__math {}", one_line(&seg.apply(&d.text))))
        .collect();
    lines.extend(
        idx[..want]
            .iter()
            .map(|&i| format!("__label__other {}", one_line(&seg.apply(&negs[i].text)))),
    );
    for i in (1..lines.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        lines.swap(i, j);
    }
    let train = dir.join("train.txt");
    std::fs::write(&train, lines.join("\n") + "\n").map_err(io(&train))?;
    let (m, _) = crate::fasttext::train(&train, &cfg.classifier.args(cfg.random_seed))?;
    m.save(&model)?;
    Ok(model)
}

/// A scored pool page.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    pub id: String,
    pub url: String,
    pub score: f32,
    pub tokens: u64,
}

/// Stage 2: score this shard's pool pages (`P(__label__math)`).
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
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
    let mut scratch = Scratch::default();
    let mut err = None;
    for p in &cfg.pool {
        reader::read_file(p, Format::from_path(p), ReadLimits::default(), &mut |d| {
            if err.is_some() || !shard.owns(&d.id) {
                return;
            }
            let score = model
                .prob_of(
                    &cfg.classifier.segmentation.apply(&d.text),
                    "__label__math",
                    &mut scratch,
                )
                .unwrap_or(0.0);
            let s = Scored {
                id: d.id,
                url: d.url,
                score,
                tokens: d.text.split_whitespace().count() as u64,
            };
            if let Err(e) = serde_json::to_writer(&mut w, &s)
                .map_err(std::io::Error::from)
                .and_then(|_| w.write_all(b"\n"))
            {
                err = Some(e);
            }
        })
        .map_err(io(p))?;
    }
    if let Some(e) = err {
        return Err(io(&tmp)(e));
    }
    w.flush().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &out).map_err(io(&out))?;
    Ok(out)
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
    let mut all: Vec<Scored> = Vec::new();
    for i in 0..shards {
        let p = dir.join(format!("scores-{i}-of-{shards}.jsonl"));
        if !p.exists() {
            return Err(RecallError::Missing {
                round,
                what: p.display().to_string(),
            });
        }
        let rows: Vec<Scored> =
            reasonlab_core::jsonl::read(&p, reasonlab_core::jsonl::BadLines::Skip).map_err(
                |e| RecallError::Config {
                    path: p.clone(),
                    message: e.to_string(),
                },
            )?;
        all.extend(rows);
    }
    let mut report = RoundReport {
        round,
        scored: all.len() as u64,
        ..Default::default()
    };
    for s in &all {
        report.score_histogram[((s.score.clamp(0.0, 1.0) * 10.0) as usize).min(9)] += 1;
    }
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    let mut per_domain: HashMap<String, (u64, u64)> = HashMap::new();
    for s in &all {
        per_domain.entry(host(&s.url)).or_default().0 += 1;
    }
    let sel_path = dir.join("selected.jsonl");
    let mut sel = std::io::BufWriter::new(std::fs::File::create(&sel_path).map_err(io(&sel_path))?);
    let mut prefixes: BTreeMap<String, u64> = BTreeMap::new();
    for s in &all {
        if s.score < cfg.min_score || report.tokens + s.tokens > cfg.token_budget {
            continue;
        }
        report.pages += 1;
        report.tokens += s.tokens;
        per_domain.entry(host(&s.url)).or_default().1 += 1;
        *prefixes.entry(path_prefix(&s.url)).or_default() += 1;
        serde_json::to_writer(&mut sel, s).map_err(|e| io(&sel_path)(e.into()))?;
        sel.write_all(b"\n").map_err(io(&sel_path))?;
    }
    sel.flush().map_err(io(&sel_path))?;
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
        reports.push(merge_round(cfg, round, 1)?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

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
