//! fastText's `Args`: the hyperparameters, and the 13 of them the `.bin` header stores
//! (fastText `src/args.cc`, `Args::save`).

use std::io::{Read, Write};

use super::FastTextError;
use super::binio::{BinReader, write_f64, write_i32};

/// fastText's `loss_name` (`args.h`: `hs = 1, ns, softmax, ova`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Hierarchical softmax over a Huffman tree of label counts.
    Hs,
    /// Negative sampling (binary logistic on the target and `neg` sampled labels).
    Ns,
    /// Full softmax.
    Softmax,
    /// One binary logistic per label (multi-label).
    Ova,
}

impl Loss {
    pub fn code(self) -> i32 {
        match self {
            Loss::Hs => 1,
            Loss::Ns => 2,
            Loss::Softmax => 3,
            Loss::Ova => 4,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => Loss::Hs,
            2 => Loss::Ns,
            3 => Loss::Softmax,
            4 => Loss::Ova,
            _ => return None,
        })
    }
}

impl std::str::FromStr for Loss {
    type Err = FastTextError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hs" => Ok(Loss::Hs),
            "ns" => Ok(Loss::Ns),
            "softmax" => Ok(Loss::Softmax),
            "ova" | "one-vs-all" => Ok(Loss::Ova),
            _ => Err(FastTextError::InvalidArg {
                name: "loss",
                value: s.to_string(),
                why: "expected hs, ns, softmax or ova",
            }),
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::Hs => "hs",
            Loss::Ns => "ns",
            Loss::Softmax => "softmax",
            Loss::Ova => "ova",
        })
    }
}

/// fastText's `model_name` (`cbow = 1, sg, sup`). Only `Sup` can be trained here; the others
/// load so their files are not rejected, but prediction needs a supervised model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Cbow,
    SkipGram,
    Supervised,
}

impl ModelKind {
    pub fn code(self) -> i32 {
        match self {
            ModelKind::Cbow => 1,
            ModelKind::SkipGram => 2,
            ModelKind::Supervised => 3,
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => ModelKind::Cbow,
            2 => ModelKind::SkipGram,
            3 => ModelKind::Supervised,
            _ => return None,
        })
    }
}

/// Hyperparameters. Defaults are fastText's `supervised` defaults (`fasttext supervised`,
/// `fasttext.train_supervised`): lr 0.1, dim 100, epoch 5, minCount 1, wordNgrams 1,
/// softmax loss, bucket 2,000,000, no character n-grams.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub dim: i32,
    pub ws: i32,
    pub epoch: i32,
    pub min_count: i32,
    pub min_count_label: i32,
    pub neg: i32,
    pub word_ngrams: i32,
    pub loss: Loss,
    pub model: ModelKind,
    pub bucket: i32,
    pub minn: i32,
    pub maxn: i32,
    pub lr_update_rate: i32,
    pub t: f64,
    pub lr: f64,
    pub thread: i32,
    pub seed: i32,
    pub label: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            dim: 100,
            ws: 5,
            epoch: 5,
            min_count: 1,
            min_count_label: 0,
            neg: 5,
            word_ngrams: 1,
            loss: Loss::Softmax,
            model: ModelKind::Supervised,
            bucket: 2_000_000,
            minn: 0,
            maxn: 0,
            lr_update_rate: 100,
            t: 1e-4,
            lr: 0.1,
            thread: 12,
            seed: 0,
            label: "__label__".to_string(),
        }
    }
}

impl Args {
    /// DeepSeekMath §2.1's classifier settings: dim 256, lr 0.1, wordNgrams 3, minCount 3,
    /// epoch 3 (other values fastText's supervised defaults).
    pub fn deepseekmath() -> Self {
        Self {
            dim: 256,
            lr: 0.1,
            word_ngrams: 3,
            min_count: 3,
            epoch: 3,
            ..Self::default()
        }
    }

    /// Reject values fastText would crash on.
    pub fn validate(&self) -> Result<(), FastTextError> {
        let bad = |name, value: String, why| Err(FastTextError::InvalidArg { name, value, why });
        if self.dim <= 0 {
            return bad("dim", self.dim.to_string(), "must be positive");
        }
        if self.epoch <= 0 {
            return bad("epoch", self.epoch.to_string(), "must be positive");
        }
        if self.thread <= 0 {
            return bad("thread", self.thread.to_string(), "must be positive");
        }
        if self.bucket < 0 {
            return bad("bucket", self.bucket.to_string(), "must not be negative");
        }
        if self.word_ngrams > 1 && self.bucket == 0 {
            return bad("bucket", "0".into(), "word n-grams need bucket > 0");
        }
        if self.maxn > 0 && self.bucket == 0 {
            return bad("bucket", "0".into(), "character n-grams need bucket > 0");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", self.lr.to_string(), "must be a positive number");
        }
        if self.neg <= 0 && self.loss == Loss::Ns {
            return bad("neg", self.neg.to_string(), "must be positive for loss ns");
        }
        if self.model != ModelKind::Supervised {
            return bad(
                "model",
                format!("{:?}", self.model),
                "only supervised training is implemented",
            );
        }
        Ok(())
    }

    pub(crate) fn save(&self, w: &mut impl Write) -> std::io::Result<()> {
        for v in [
            self.dim,
            self.ws,
            self.epoch,
            self.min_count,
            self.neg,
            self.word_ngrams,
            self.loss.code(),
            self.model.code(),
            self.bucket,
            self.minn,
            self.maxn,
            self.lr_update_rate,
        ] {
            write_i32(w, v)?;
        }
        write_f64(w, self.t)
    }

    pub(crate) fn load<R: Read>(r: &mut BinReader<R>) -> Result<Self, FastTextError> {
        let dim = r.i32("args.dim")?;
        let ws = r.i32("args.ws")?;
        let epoch = r.i32("args.epoch")?;
        let min_count = r.i32("args.minCount")?;
        let neg = r.i32("args.neg")?;
        let word_ngrams = r.i32("args.wordNgrams")?;
        let loss_code = r.i32("args.loss")?;
        let model_code = r.i32("args.model")?;
        let bucket = r.i32("args.bucket")?;
        let minn = r.i32("args.minn")?;
        let maxn = r.i32("args.maxn")?;
        let lr_update_rate = r.i32("args.lrUpdateRate")?;
        let t = r.f64("args.t")?;
        let loss = Loss::from_code(loss_code)
            .ok_or_else(|| FastTextError::corrupt(format!("unknown loss code {loss_code}")))?;
        let model = ModelKind::from_code(model_code)
            .ok_or_else(|| FastTextError::corrupt(format!("unknown model code {model_code}")))?;
        if dim <= 0 || bucket < 0 || minn < 0 || maxn < 0 {
            return Err(FastTextError::corrupt(format!(
                "implausible header: dim {dim}, bucket {bucket}, minn {minn}, maxn {maxn}"
            )));
        }
        Ok(Self {
            dim,
            ws,
            epoch,
            min_count,
            neg,
            word_ngrams,
            loss,
            model,
            bucket,
            minn,
            maxn,
            lr_update_rate,
            t,
            ..Self::default()
        })
    }
}
