//! Continued pretraining on a weighted mixture of raw-text sources.
//!
//! Each source is a list of files: JSONL (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`) or Parquet (the
//! text in a configurable field, `text` by default) or plain text (any other extension; one document
//! per file). Documents are tokenised on the fly, each followed by EOS, and concatenated into a
//! token stream that is cut into rows of `seq_len` tokens (GPT-style packing; optionally
//! positions restart after every EOS so documents do not attend to each other).
//!
//! **Mixture sampler.** Weights are over tokens, as DeepSeekMath states its mixture. The next
//! document comes from the source whose realised token count is furthest below its share:
//! `argmax_i (w_i · T − n_i)` with `T` tokens drawn so far and `n_i` from source `i` (deficit
//! round-robin). It is deterministic, needs no RNG state to resume, and keeps every realised
//! proportion within one document's length of its weight at all times; [`MixtureSampler::
//! proportions`] reports them. A source that runs out starts over (its epoch count goes up and
//! a warning says so).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use reasonlab_core::jsonl::{self, BadLines, JsonlError};
use reasonlab_model::TokenBatch;
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error(transparent)]
    Tokenize(#[from] reasonlab_tokenize::TokenizeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mixture: {0}")]
    Mixture(String),
}

/// One named source of the mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    pub paths: Vec<PathBuf>,
    /// Relative weight (normalised over the mixture). Optional with a preset that names it.
    #[serde(default)]
    pub weight: Option<f64>,
    /// JSONL / Parquet field holding the document text.
    #[serde(default = "default_field")]
    pub field: String,
    /// Files of pre-tokenised ids instead of text: raw little-endian `u16` or `u32` token ids,
    /// documents separated by the tokenizer's EOS (nanoGPT's `train.bin`, datatrove's `.ds`).
    #[serde(default)]
    pub tokens: Option<TokenDtype>,
}

/// Width of the ids in a pre-tokenised file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    fn bytes(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

/// One document from a source.
enum Doc {
    Text(String),
    /// Ids of a pre-tokenised document, its EOS included when the file has one.
    Tokens(Vec<u32>),
}

fn default_field() -> String {
    "text".into()
}

/// Published mixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixturePreset {
    /// DeepSeekMath §2.3: 56% DeepSeekMath Corpus, 4% AlgebraicStack, 10% arXiv, 20% GitHub
    /// code, 10% Common Crawl natural language.
    Deepseekmath,
}

impl MixturePreset {
    /// Source name → weight.
    pub fn weights(self) -> &'static [(&'static str, f64)] {
        match self {
            MixturePreset::Deepseekmath => &[
                ("math", 0.56),
                ("algebraic_stack", 0.04),
                ("arxiv", 0.10),
                ("github_code", 0.20),
                ("natural_language", 0.10),
            ],
        }
    }
}

/// Resolve each source's weight (its own, else the preset's) and normalise.
pub fn resolve_weights(
    sources: &[SourceSpec],
    preset: Option<MixturePreset>,
) -> Result<Vec<f64>, PretrainError> {
    let mut w = Vec::with_capacity(sources.len());
    for s in sources {
        let from_preset = preset.and_then(|p| {
            p.weights()
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, w)| *w)
        });
        match s.weight.or(from_preset) {
            Some(x) if x.is_finite() && x >= 0.0 => w.push(x),
            Some(x) => {
                return Err(PretrainError::Mixture(format!(
                    "source {}: weight {x} is not a finite non-negative number",
                    s.name
                )));
            }
            None => {
                return Err(PretrainError::Mixture(format!(
                    "source {} has no weight (give `weight`, or name it after a preset source: {})",
                    s.name,
                    preset
                        .map(|p| p
                            .weights()
                            .iter()
                            .map(|x| x.0)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_else(|| "no preset set".into())
                )));
            }
        }
    }
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        return Err(PretrainError::Mixture("weights sum to zero".into()));
    }
    Ok(w.into_iter().map(|x| x / total).collect())
}

/// Deficit round-robin over token counts (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureSampler {
    weights: Vec<f64>,
    drawn: Vec<u64>,
}

impl MixtureSampler {
    /// `weights` must be normalised ([`resolve_weights`]).
    pub fn new(weights: Vec<f64>) -> Self {
        let drawn = vec![0; weights.len()];
        Self { weights, drawn }
    }

    /// The source of the next document.
    pub fn next_source(&self) -> usize {
        let total: u64 = self.drawn.iter().sum();
        let mut best = 0;
        let mut best_deficit = f64::NEG_INFINITY;
        for (i, (&w, &n)) in self.weights.iter().zip(&self.drawn).enumerate() {
            if w <= 0.0 {
                continue;
            }
            let deficit = w * total as f64 - n as f64;
            // Ties (e.g. at the start) go to the heavier source.
            if deficit > best_deficit || (deficit == best_deficit && w > self.weights[best]) {
                best = i;
                best_deficit = deficit;
            }
        }
        best
    }

    /// Count `tokens` drawn from `source`.
    pub fn record(&mut self, source: usize, tokens: usize) {
        self.drawn[source] += tokens as u64;
    }

    /// Realised share of tokens per source.
    pub fn proportions(&self) -> Vec<f64> {
        let total = self.drawn.iter().sum::<u64>().max(1) as f64;
        self.drawn.iter().map(|&n| n as f64 / total).collect()
    }

    pub fn tokens(&self) -> &[u64] {
        &self.drawn
    }
}

/// Where a source's reader is (for resume).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub file: usize,
    /// Lines (JSONL) or ids (pre-tokenised) already consumed in `file`.
    pub line: usize,
    /// Times the source has been read through.
    pub epoch: usize,
}

/// A streaming reader of one source's documents.
struct SourceReader {
    spec: SourceSpec,
    cursor: Cursor,
    lines: Option<Box<dyn Iterator<Item = std::io::Result<String>> + Send>>,
    /// Open pre-tokenised file, positioned at `cursor.line` tokens.
    ids: Option<std::io::BufReader<std::fs::File>>,
    bad: BadLines,
}

fn is_jsonl(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [
        ".jsonl",
        ".jsonl.gz",
        ".jsonl.zst",
        ".json.gz",
        ".ndjson",
        ".parquet",
    ]
    .iter()
    .any(|e| name.ends_with(e))
}

impl SourceReader {
    /// The next pre-tokenised document of the current file (up to and including EOS, at most
    /// `MAX_DOC` ids), or `None` at the end of the file.
    fn next_ids(
        &mut self,
        path: &Path,
        dtype: TokenDtype,
        eos: u32,
    ) -> Result<Option<Vec<u32>>, PretrainError> {
        use std::io::{Read, Seek, SeekFrom};
        const MAX_DOC: usize = 1 << 20;
        let io = |source| PretrainError::Io {
            path: path.to_path_buf(),
            source,
        };
        if self.ids.is_none() {
            let mut f = std::fs::File::open(path).map_err(io)?;
            f.seek(SeekFrom::Start((self.cursor.line * dtype.bytes()) as u64))
                .map_err(io)?;
            self.ids = Some(std::io::BufReader::new(f));
        }
        let reader = self.ids.as_mut().expect("opened above");
        let mut doc = Vec::new();
        let mut buf = [0u8; 4];
        let width = dtype.bytes();
        loop {
            match reader.read_exact(&mut buf[..width]) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io(e)),
            }
            let id = match dtype {
                TokenDtype::U16 => u32::from(u16::from_le_bytes([buf[0], buf[1]])),
                TokenDtype::U32 => u32::from_le_bytes(buf),
            };
            doc.push(id);
            if id == eos || doc.len() >= MAX_DOC {
                break;
            }
        }
        self.cursor.line += doc.len();
        Ok((!doc.is_empty()).then_some(doc))
    }

    fn next_doc(&mut self, eos: u32) -> Result<Doc, PretrainError> {
        let mut empty_passes = 0;
        loop {
            if self.cursor.file >= self.spec.paths.len() {
                self.cursor = Cursor {
                    file: 0,
                    line: 0,
                    epoch: self.cursor.epoch + 1,
                };
                self.lines = None;
                self.ids = None;
                empty_passes += 1;
                if empty_passes > 1 {
                    return Err(PretrainError::Mixture(format!(
                        "source {} has no documents",
                        self.spec.name
                    )));
                }
                tracing::warn!(source = %self.spec.name, epoch = self.cursor.epoch, "source exhausted; starting over");
            }
            let path = self.spec.paths[self.cursor.file].clone();
            if let Some(dtype) = self.spec.tokens {
                match self.next_ids(&path, dtype, eos)? {
                    Some(ids) => return Ok(Doc::Tokens(ids)),
                    None => {
                        self.cursor.file += 1;
                        self.cursor.line = 0;
                        self.ids = None;
                        continue;
                    }
                }
            }
            if !is_jsonl(&path) {
                let text = std::fs::read_to_string(&path).map_err(|source| PretrainError::Io {
                    path: path.clone(),
                    source,
                })?;
                self.cursor.file += 1;
                if !text.trim().is_empty() {
                    return Ok(Doc::Text(text));
                }
                continue;
            }
            if self.lines.is_none() {
                let mut it = jsonl::open(&path)?.lines();
                for _ in 0..self.cursor.line {
                    it.next();
                }
                self.lines = Some(Box::new(it));
            }
            let Some(line) = self.lines.as_mut().and_then(Iterator::next) else {
                self.cursor.file += 1;
                self.cursor.line = 0;
                self.lines = None;
                continue;
            };
            self.cursor.line += 1;
            let line = line.map_err(|source| PretrainError::Io {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&line);
            let text = match &parsed {
                Ok(v) => v.get(&self.spec.field).and_then(|t| t.as_str()),
                Err(_) => None,
            };
            match text {
                Some(t) => return Ok(Doc::Text(t.to_string())),
                None => {
                    let message = match parsed {
                        Err(e) => e.to_string(),
                        Ok(_) => format!("no string field {:?}", self.spec.field),
                    };
                    let err = JsonlError::Parse {
                        path: path.clone(),
                        line: self.cursor.line,
                        message,
                    };
                    match self.bad {
                        BadLines::Reject => return Err(err.into()),
                        BadLines::Skip => tracing::warn!("{err}; skipped"),
                    }
                }
            }
        }
    }
}

/// Resumable position of a [`MixtureStream`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    pub sampler: MixtureSampler,
    pub cursors: Vec<Cursor>,
    /// Tokens read but not yet emitted in a row.
    pub buffer: Vec<u32>,
    /// Whether each buffered token starts a document.
    pub starts: Vec<bool>,
    pub documents: Vec<u64>,
}

/// Rows of `seq_len` tokens from the weighted mixture.
pub struct MixtureStream<'t> {
    readers: Vec<SourceReader>,
    tokenizer: &'t Tokenizer,
    eos: u32,
    state: StreamState,
    /// Restart positions after EOS (no attention across documents).
    pub isolate_documents: bool,
}

impl<'t> MixtureStream<'t> {
    pub fn new(
        sources: Vec<SourceSpec>,
        weights: Vec<f64>,
        tokenizer: &'t Tokenizer,
        bad: BadLines,
    ) -> Result<Self, PretrainError> {
        let eos = tokenizer.eos_id().ok_or_else(|| {
            PretrainError::Mixture("the tokenizer has no EOS token to separate documents".into())
        })?;
        let n = sources.len();
        Ok(Self {
            readers: sources
                .into_iter()
                .map(|spec| SourceReader {
                    spec,
                    cursor: Cursor::default(),
                    lines: None,
                    ids: None,
                    bad,
                })
                .collect(),
            tokenizer,
            eos,
            state: StreamState {
                sampler: MixtureSampler::new(weights),
                cursors: vec![Cursor::default(); n],
                buffer: Vec::new(),
                starts: Vec::new(),
                documents: vec![0; n],
            },
            isolate_documents: false,
        })
    }

    /// Snapshot for a checkpoint.
    pub fn state(&self) -> StreamState {
        let mut s = self.state.clone();
        s.cursors = self.readers.iter().map(|r| r.cursor).collect();
        s
    }

    /// Continue from a snapshot.
    pub fn restore(&mut self, state: StreamState) {
        for (r, c) in self.readers.iter_mut().zip(&state.cursors) {
            r.cursor = *c;
            r.lines = None;
            r.ids = None;
        }
        self.state = state;
    }

    pub fn sampler(&self) -> &MixtureSampler {
        &self.state.sampler
    }

    pub fn documents(&self) -> &[u64] {
        &self.state.documents
    }

    fn fill(&mut self, need: usize) -> Result<(), PretrainError> {
        while self.state.buffer.len() < need {
            let src = self.state.sampler.next_source();
            let ids = match self.readers[src].next_doc(self.eos)? {
                Doc::Text(text) => {
                    let mut ids = self.tokenizer.encode(&text, false)?;
                    ids.push(self.eos);
                    ids
                }
                Doc::Tokens(ids) => ids,
            };
            self.state.sampler.record(src, ids.len());
            self.state.documents[src] += 1;
            self.state.starts.push(true);
            self.state
                .starts
                .extend(std::iter::repeat_n(false, ids.len() - 1));
            self.state.buffer.extend(ids);
        }
        Ok(())
    }

    /// The next `b` rows of `seq_len` tokens.
    pub fn next_batch(&mut self, b: usize, seq_len: usize) -> Result<TokenBatch, PretrainError> {
        self.fill(b * seq_len)?;
        let ids: Vec<u32> = self.state.buffer.drain(..b * seq_len).collect();
        let starts: Vec<bool> = self.state.starts.drain(..b * seq_len).collect();
        let mut positions = vec![0u32; b * seq_len];
        for row in 0..b {
            let mut p = 0u32;
            for i in 0..seq_len {
                let at = row * seq_len + i;
                if self.isolate_documents && starts[at] {
                    p = 0;
                }
                positions[at] = p;
                p += 1;
            }
        }
        Ok(TokenBatch {
            ids,
            positions,
            padding: vec![false; b * seq_len],
            b,
            t: seq_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reasonlab_core::rng::SplitMix64;

    #[test]
    fn realised_proportions_track_the_deepseekmath_weights_over_100k_draws() {
        let sources: Vec<SourceSpec> = MixturePreset::Deepseekmath
            .weights()
            .iter()
            .map(|(n, _)| SourceSpec {
                name: n.to_string(),
                paths: vec![],
                weight: None,
                field: default_field(),
                tokens: None,
            })
            .collect();
        let w = resolve_weights(&sources, Some(MixturePreset::Deepseekmath)).unwrap();
        let mut s = MixtureSampler::new(w.clone());
        // Documents of very different lengths per source (code files long, arXiv longer).
        let mut rng = SplitMix64::seeded(7);
        let mean_len = [300u64, 800, 4000, 1500, 200];
        for _ in 0..100_000 {
            let i = s.next_source();
            let len = 1 + rng.below(2 * mean_len[i]) as usize;
            s.record(i, len);
        }
        for (got, want) in s.proportions().iter().zip(&w) {
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
        // And the bound is much tighter than 1%: within one long document.
        let total: u64 = s.tokens().iter().sum();
        for (i, want) in w.iter().enumerate() {
            let dev = (s.tokens()[i] as f64 - want * total as f64).abs();
            assert!(dev <= 8001.0, "source {i} off by {dev} tokens");
        }
    }

    #[test]
    fn a_source_without_weight_is_an_error() {
        let src = vec![SourceSpec {
            name: "web".into(),
            paths: vec![],
            weight: None,
            field: default_field(),
            tokens: None,
        }];
        let e = resolve_weights(&src, Some(MixturePreset::Deepseekmath)).unwrap_err();
        assert!(e.to_string().contains("web"), "{e}");
    }
}

/// Optimisation settings of a pretraining run (the `[train]` table of `pretrain.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainSettings {
    pub steps: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Restart positions after each EOS (no attention across documents).
    pub isolate_documents: bool,
    pub optim: crate::optim::AdamWSettings,
}

impl Default for PretrainSettings {
    fn default() -> Self {
        Self {
            steps: 1000,
            seq_len: 1024,
            batch_size: 8,
            grad_accum: 1,
            isolate_documents: false,
            optim: crate::optim::AdamWSettings {
                lr: 1e-4,
                warmup_steps: 100,
                schedule: crate::optim::Schedule::Cosine,
                min_lr_ratio: 0.1,
                ..Default::default()
            },
        }
    }
}

/// What a pretraining checkpoint stores besides weights and optimiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainState {
    pub step: usize,
    pub stream: StreamState,
}
