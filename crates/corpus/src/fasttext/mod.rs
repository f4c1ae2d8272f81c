//! A fastText-compatible supervised text classifier (Joulin et al. 2017, "Bag of Tricks for
//! Efficient Text Classification"), reimplemented from fastText 0.9's `src/` and reading and
//! writing its `.bin` format, so models move both ways between this crate and fastText.
//!
//! File layout (`FastText::saveModel`): magic `793712314` (i32), version `12` (i32), the
//! [`Args`] block, the [`Dictionary`], a quantized flag (u8) and the input matrix, a
//! quantized-output flag (u8) and the output matrix. `.ftz` files are the same with
//! product-quantized matrices; we read them but write only dense `.bin`.

pub mod args;
mod binio;
pub mod dict;
pub mod loss;
pub mod matrix;
pub mod meter;
pub mod train;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use args::{Args, Loss, ModelKind};
pub use dict::{Dictionary, EOS, fasttext_hash};
pub use matrix::{DenseMatrix, Matrix};
pub use meter::Meter;
pub use train::{TrainReport, train};

use binio::{BinReader, write_i32};
use loss::{HsTree, Tables};

/// fastText's `FASTTEXT_FILEFORMAT_MAGIC_INT32`.
pub const MAGIC: i32 = 793_712_314;
/// fastText's `FASTTEXT_VERSION` (0.9.x writes 12).
pub const VERSION: i32 = 12;

/// Errors loading, saving, training or using a classifier.
#[derive(Debug, thiserror::Error)]
pub enum FastTextError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a fastText model: magic number {found}, expected {MAGIC}")]
    BadMagic { found: i32 },
    #[error("fastText model version {found} is newer than the supported {VERSION}")]
    Version { found: i32 },
    #[error("corrupt or truncated fastText model: {0}")]
    Corrupt(String),
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<FastTextError>,
    },
    #[error("empty vocabulary: no token reaches min_count (try a smaller value)")]
    EmptyVocabulary,
    #[error("no labels in the training data (lines need tokens starting with the label prefix)")]
    NoLabels,
    #[error("invalid {name} = {value}: {why}")]
    InvalidArg {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("model needs to be supervised for prediction (found {0:?})")]
    NotSupervised(ModelKind),
    #[error("training diverged: NaN in the output matrix (try a smaller learning rate)")]
    NaN,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("writing model: {0}")]
    Write(#[source] std::io::Error),
}

impl FastTextError {
    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        FastTextError::Corrupt(msg.into())
    }

    pub(crate) fn write(e: std::io::Error) -> Self {
        FastTextError::Write(e)
    }
}

/// One prediction: the label and fastText's probability (`exp(log(p + 1e-5))`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub prob: f32,
}

/// A loaded or trained supervised model.
#[derive(Debug, Clone)]
pub struct FastText {
    pub args: Args,
    pub dict: Dictionary,
    input: Matrix,
    output: Matrix,
    quant_input: bool,
    quant_output: bool,
    tables: Tables,
    tree: Option<HsTree>,
}

/// Scratch buffers for prediction, one per thread.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    words: Vec<i32>,
    labels: Vec<i32>,
    hashes: Vec<i32>,
    hidden: Vec<f32>,
    output: Vec<f32>,
}

impl FastText {
    pub(crate) fn from_parts(args: Args, dict: Dictionary, input: Matrix, output: Matrix) -> Self {
        let tree = (args.loss == Loss::Hs).then(|| HsTree::new(&dict.label_counts()));
        Self {
            args,
            dict,
            input,
            output,
            quant_input: false,
            quant_output: false,
            tables: Tables::default(),
            tree,
        }
    }

    /// Load a `.bin` or `.ftz` file written by fastText (version ≤ 12) or by us.
    pub fn load(path: &Path) -> Result<Self, FastTextError> {
        let file = std::fs::File::open(path).map_err(|source| FastTextError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let mut r = BinReader::new(std::io::BufReader::with_capacity(1 << 20, file), len);
        Self::read(&mut r).map_err(|e| match e {
            FastTextError::Io { .. } => e,
            other => FastTextError::InFile {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        })
    }

    /// Load from bytes in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FastTextError> {
        let mut r = BinReader::new(bytes, bytes.len() as u64);
        Self::read(&mut r)
    }

    fn read<R: std::io::Read>(r: &mut BinReader<R>) -> Result<Self, FastTextError> {
        let magic = r.i32("magic")?;
        if magic != MAGIC {
            return Err(FastTextError::BadMagic { found: magic });
        }
        let version = r.i32("version")?;
        if version > VERSION {
            return Err(FastTextError::Version { found: version });
        }
        let mut args = Args::load(r)?;
        if version == 11 && args.model == ModelKind::Supervised {
            // fastText: "old supervised models do not use char ngrams".
            args.maxn = 0;
        }
        let dict = Dictionary::load(&args, r)?;
        let quant_input = r.bool("quant flag")?;
        let input = Matrix::load(r, quant_input)?;
        if !quant_input && dict.is_pruned() {
            return Err(FastTextError::corrupt(
                "pruned dictionary with a dense input matrix",
            ));
        }
        let qout = r.bool("qout flag")?;
        let quant_output = quant_input && qout;
        let output = Matrix::load(r, quant_output)?;
        let dim = args.dim as usize;
        if input.cols() != dim || output.cols() != dim {
            return Err(FastTextError::corrupt(format!(
                "matrix widths {} and {} differ from dim {dim}",
                input.cols(),
                output.cols()
            )));
        }
        let min_rows = if dict.is_pruned() {
            dict.nwords() as usize
        } else {
            dict.nwords() as usize + args.bucket as usize
        };
        if input.rows() < min_rows {
            return Err(FastTextError::corrupt(format!(
                "input matrix has {} rows, need nwords + bucket = {min_rows}",
                input.rows()
            )));
        }
        if args.model == ModelKind::Supervised && output.rows() != dict.nlabels() as usize {
            return Err(FastTextError::corrupt(format!(
                "output matrix has {} rows for {} labels",
                output.rows(),
                dict.nlabels()
            )));
        }
        let mut model = Self::from_parts(args, dict, input, output);
        model.quant_input = quant_input;
        model.quant_output = quant_output;
        Ok(model)
    }

    /// Write fastText's `.bin` format (dense matrices only), streamed to a temporary file in
    /// the same folder and renamed over `path`, so a crash never leaves half a model.
    pub fn save(&self, path: &Path) -> Result<(), FastTextError> {
        let io = |source| FastTextError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        self.write(&mut w)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Serialise to any writer.
    pub fn write(&self, w: &mut impl Write) -> Result<(), FastTextError> {
        let we = FastTextError::write;
        write_i32(w, MAGIC).map_err(we)?;
        write_i32(w, VERSION).map_err(we)?;
        self.args.save(w).map_err(we)?;
        self.dict.save(w).map_err(we)?;
        Matrix::save_flag(w, self.quant_input)?;
        self.input.save(w)?;
        Matrix::save_flag(w, self.quant_output)?;
        self.output.save(w)?;
        Ok(())
    }

    pub fn is_quantized(&self) -> bool {
        self.quant_input
    }

    pub fn input(&self) -> &Matrix {
        &self.input
    }

    pub fn output(&self) -> &Matrix {
        &self.output
    }

    /// Label strings in label-index order.
    pub fn labels(&self) -> Vec<String> {
        (0..self.dict.nlabels())
            .filter_map(|i| self.dict.label(i))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// Top-`k` label indices with log-probabilities for precomputed features.
    pub fn predict_ids(
        &self,
        words: &[i32],
        k: usize,
        threshold: f32,
        scratch: &mut Scratch,
    ) -> Vec<(f32, i32)> {
        if words.is_empty() || k == 0 {
            return Vec::new();
        }
        scratch.hidden.resize(self.args.dim as usize, 0.0);
        self.input.average_rows(words, &mut scratch.hidden);
        loss::predict(
            self.args.loss,
            &self.tables,
            self.tree.as_ref(),
            &self.output,
            &scratch.hidden,
            k,
            threshold,
            &mut scratch.output,
        )
    }

    /// Features of raw line bytes (no UTF-8 needed), then top-`k` as `(log-prob, label)`.
    pub fn predict_bytes(
        &self,
        line: &[u8],
        eos: bool,
        k: usize,
        threshold: f32,
        scratch: &mut Scratch,
    ) -> Vec<(f32, i32)> {
        let mut words = std::mem::take(&mut scratch.words);
        self.dict.line(
            line,
            eos,
            &mut words,
            &mut scratch.labels,
            &mut scratch.hashes,
        );
        let out = self.predict_ids(&words, k, threshold, scratch);
        scratch.words = words;
        out
    }

    fn check_supervised(&self) -> Result<(), FastTextError> {
        if self.args.model != ModelKind::Supervised {
            return Err(FastTextError::NotSupervised(self.args.model));
        }
        Ok(())
    }

    /// Predict for one line exactly as fastText's `predict` does: the line's tokens plus the
    /// `</s>` of its newline. A `\n` inside `line` ends it there, as in fastText.
    pub fn predict_line(
        &self,
        line: &str,
        k: usize,
        threshold: f32,
        scratch: &mut Scratch,
    ) -> Result<Vec<Prediction>, FastTextError> {
        self.check_supervised()?;
        let bytes = line.as_bytes();
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let out = self.predict_bytes(first, true, k, threshold, scratch);
        Ok(out
            .into_iter()
            .map(|(lp, i)| self.prediction(lp, i))
            .collect())
    }

    /// Predict for a whole document: newlines become spaces and one `</s>` ends it, which
    /// equals fastText's `predict(text.replace("\n", " "))`.
    pub fn predict_document(
        &self,
        text: &str,
        k: usize,
        threshold: f32,
        scratch: &mut Scratch,
    ) -> Result<Vec<Prediction>, FastTextError> {
        if text.contains('\n') {
            let flat = text.replace('\n', " ");
            self.predict_line(&flat, k, threshold, scratch)
        } else {
            self.predict_line(text, k, threshold, scratch)
        }
    }

    /// Probability of `label` for a document (0 when the label is unknown).
    pub fn prob_of(
        &self,
        text: &str,
        label: &str,
        scratch: &mut Scratch,
    ) -> Result<f32, FastTextError> {
        let k = self.dict.nlabels().max(1) as usize;
        Ok(self
            .predict_document(text, k, 0.0, scratch)?
            .into_iter()
            .find(|p| p.label == label)
            .map(|p| p.prob)
            .unwrap_or(0.0))
    }

    fn prediction(&self, logp: f32, label: i32) -> Prediction {
        Prediction {
            label: self
                .dict
                .label(label)
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .unwrap_or_default(),
            prob: logp.exp(),
        }
    }

    /// Evaluate on a labelled file like `fasttext test` (lines without labels or features
    /// are skipped), returning the meter for N, P@k, R@k and per-label scores.
    pub fn test(
        &self,
        input: impl std::io::BufRead,
        k: usize,
        threshold: f32,
    ) -> Result<Meter, FastTextError> {
        self.check_supervised()?;
        let mut meter = Meter::new(self.dict.nlabels() as usize);
        let mut s = Scratch::default();
        let mut line = Vec::new();
        let mut input = input;
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|source| FastTextError::Io {
                    path: "<test input>".into(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            let eos = line.last() == Some(&b'\n');
            self.dict
                .line(&line, eos, &mut s.words, &mut s.labels, &mut s.hashes);
            if s.labels.is_empty() || s.words.is_empty() {
                continue;
            }
            let words = std::mem::take(&mut s.words);
            let preds = self.predict_ids(&words, k, threshold, &mut s);
            s.words = words;
            meter.log(&s.labels, &preds);
        }
        Ok(meter)
    }
}
