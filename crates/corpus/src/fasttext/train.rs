//! Supervised training (`FastText::train`, `trainThread`, `Model::update`): each thread reads
//! its own slice of the input file, builds a line's features, averages their input rows,
//! takes one SGD step of the loss with the learning rate decayed linearly by global token
//! progress, and adds the (length-normalised) gradient back to every feature row.
//!
//! Threads share the matrices without locks (Hogwild!, Recht et al. 2011, as fastText does).
//! The matrices are `AtomicU32` holding f32 bits, read and written with `Relaxed` ordering:
//! the same instructions as plain loads and stores on x86 and ARM, but defined behaviour in
//! Rust. Concurrent updates to one element may lose one of them, which Hogwild tolerates.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};
use std::time::Instant;

use super::args::{Args, Loss};
use super::dict::Dictionary;
use super::loss::{HsTree, NegativeTable, Tables, softmax_in_place};
use super::matrix::{DenseMatrix, Matrix};
use super::{FastText, FastTextError};
use crate::rng::Rng;

/// What a training run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub words: i32,
    pub labels: i32,
    pub tokens: i64,
    pub examples: u64,
    pub seconds: f64,
    /// Mean loss over thread 0's examples.
    pub loss: f32,
}

#[inline]
fn ld(a: &AtomicU32) -> f32 {
    f32::from_bits(a.load(Relaxed))
}

/// `out += row`
#[inline]
fn add_row(row: &[AtomicU32], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(row) {
        *o += ld(a);
    }
}

/// `row += alpha * v`
#[inline]
fn axpy_row(row: &[AtomicU32], alpha: f32, v: &[f32]) {
    for (a, x) in row.iter().zip(v) {
        a.store((ld(a) + alpha * x).to_bits(), Relaxed);
    }
}

#[inline]
fn dot_row(row: &[AtomicU32], v: &[f32]) -> f32 {
    let mut d = 0.0f32;
    for (a, x) in row.iter().zip(v) {
        d += ld(a) * x;
    }
    d
}

struct Shared<'a> {
    wi: &'a [AtomicU32],
    wo: &'a [AtomicU32],
    dim: usize,
    loss: Loss,
    neg: usize,
    tables: Tables,
    tree: Option<HsTree>,
    negatives: Option<NegativeTable>,
}

struct State {
    hidden: Vec<f32>,
    grad: Vec<f32>,
    output: Vec<f32>,
    row: Vec<f32>,
    rng: Rng,
    loss_sum: f64,
    examples: u64,
}

impl Shared<'_> {
    fn wo_row(&self, i: usize) -> &[AtomicU32] {
        &self.wo[i * self.dim..(i + 1) * self.dim]
    }

    fn binary_logistic(&self, target: usize, positive: bool, lr: f32, st: &mut State) -> f32 {
        let row = self.wo_row(target);
        let score = self.tables.sigmoid(dot_row(row, &st.hidden));
        let alpha = lr * (f32::from(u8::from(positive)) - score);
        st.row.iter_mut().zip(row).for_each(|(r, a)| *r = ld(a));
        for (g, r) in st.grad.iter_mut().zip(&st.row) {
            *g += alpha * r;
        }
        axpy_row(row, alpha, &st.hidden);
        if positive {
            -self.tables.log(score)
        } else {
            -self.tables.log(1.0 - score)
        }
    }

    /// One SGD step for one example (`Model::update` with `normalizeGradient`).
    fn update(&self, words: &[i32], labels: &[i32], lr: f32, st: &mut State) {
        if words.is_empty() || labels.is_empty() {
            return;
        }
        st.hidden.iter_mut().for_each(|v| *v = 0.0);
        for &w in words {
            let w = w as usize;
            add_row(&self.wi[w * self.dim..(w + 1) * self.dim], &mut st.hidden);
        }
        let scale = (1.0f64 / words.len() as f64) as f32;
        st.hidden.iter_mut().for_each(|v| *v *= scale);
        st.grad.iter_mut().for_each(|v| *v = 0.0);
        let target = if self.loss == Loss::Ova {
            0
        } else {
            labels[st.rng.below(labels.len() as u64) as usize] as usize
        };
        let osz = self.wo.len() / self.dim;
        let loss = match self.loss {
            Loss::Softmax => {
                st.output.clear();
                for i in 0..osz {
                    st.output.push(dot_row(self.wo_row(i), &st.hidden));
                }
                softmax_in_place(&mut st.output);
                for i in 0..osz {
                    let label = if i == target { 1.0 } else { 0.0 };
                    let alpha = lr * (label - st.output[i]);
                    let row = self.wo_row(i);
                    for (g, a) in st.grad.iter_mut().zip(row) {
                        *g += alpha * ld(a);
                    }
                    axpy_row(row, alpha, &st.hidden);
                }
                -self.tables.log(st.output[target])
            }
            Loss::Ns => {
                let mut l = self.binary_logistic(target, true, lr, st);
                if let Some(neg) = &self.negatives
                    && osz > 1
                {
                    for _ in 0..self.neg {
                        let negative = loop {
                            let n = neg.at(st.rng.below(neg.total())) as usize;
                            if n != target {
                                break n;
                            }
                        };
                        l += self.binary_logistic(negative, false, lr, st);
                    }
                }
                l
            }
            Loss::Hs => {
                let mut l = 0.0;
                if let Some(tree) = &self.tree {
                    for (&node, &code) in tree.paths[target].iter().zip(&tree.codes[target]) {
                        l += self.binary_logistic(node as usize, code, lr, st);
                    }
                }
                l
            }
            Loss::Ova => {
                let mut l = 0.0;
                for i in 0..osz {
                    l += self.binary_logistic(i, labels.contains(&(i as i32)), lr, st);
                }
                l
            }
        };
        st.loss_sum += f64::from(loss);
        st.examples += 1;
        for g in st.grad.iter_mut() {
            *g *= scale;
        }
        for &w in words {
            let w = w as usize;
            axpy_row(&self.wi[w * self.dim..(w + 1) * self.dim], 1.0, &st.grad);
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FastTextError + '_ {
    move |source| FastTextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// View a weight matrix as relaxed atomics for the Hogwild threads: racing reads and writes
/// of `f32` bits through `AtomicU32` are defined behaviour, plain `f32` ones would not be.
fn as_atomic(data: &mut [f32]) -> &[AtomicU32] {
    // SAFETY: `AtomicU32` has the size, alignment and bit validity of `u32`, hence of `f32`;
    // the exclusive borrow guarantees no non-atomic access while the returned view lives.
    unsafe { std::slice::from_raw_parts(data.as_mut_ptr().cast::<AtomicU32>(), data.len()) }
}

/// Fill `data` with uniform(-a, a) in fixed blocks, each seeded by (block, seed), so the
/// result does not depend on the number of threads.
fn uniform_init(data: &mut [f32], a: f32, seed: i32, threads: usize) {
    const BLOCK: usize = 1 << 20;
    let blocks: Vec<(usize, &mut [f32])> = data.chunks_mut(BLOCK).enumerate().collect();
    let per = blocks.len().div_ceil(threads.max(1)).max(1);
    let mut groups: Vec<Vec<(usize, &mut [f32])>> = Vec::new();
    for b in blocks {
        if groups.last().is_none_or(|g| g.len() >= per) {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push(b);
        }
    }
    std::thread::scope(|s| {
        for g in groups {
            s.spawn(move || {
                for (bi, chunk) in g {
                    let mut rng = Rng::seeded((bi as u64) << 32 ^ seed as u32 as u64);
                    for v in chunk.iter_mut() {
                        *v = (rng.unit() * 2.0 - 1.0) as f32 * a;
                    }
                }
            });
        }
    });
}

/// Train a supervised model on a fastText-format file (`__label__x words...` per line).
pub fn train(path: &Path, args: &Args) -> Result<(FastText, TrainReport), FastTextError> {
    args.validate()?;
    let start = Instant::now();
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let dict = Dictionary::build(args, BufReader::with_capacity(1 << 20, file))?;
    if dict.nlabels() == 0 {
        return Err(FastTextError::NoLabels);
    }
    let dim = args.dim as usize;
    let rows = dict.nwords() as usize + args.bucket as usize;
    let threads = args.thread as usize;
    // `vec![0.0; n]` is a zeroed allocation (untouched pages cost nothing until written).
    let mut wi = vec![0.0f32; rows * dim];
    uniform_init(&mut wi, 1.0 / args.dim as f32, args.seed, threads);
    let nlabels = dict.nlabels() as usize;
    let mut wo = vec![0.0f32; nlabels * dim];
    let counts = dict.label_counts();
    let shared = Shared {
        wi: as_atomic(&mut wi),
        wo: as_atomic(&mut wo),
        dim,
        loss: args.loss,
        neg: args.neg.max(0) as usize,
        tables: Tables::default(),
        tree: (args.loss == Loss::Hs).then(|| HsTree::new(&counts)),
        negatives: (args.loss == Loss::Ns).then(|| NegativeTable::new(&counts)),
    };
    let total = i64::from(args.epoch) * dict.ntokens();
    let token_count = AtomicI64::new(0);
    let size = std::fs::metadata(path).map_err(io_err(path))?.len();
    let results: Vec<Result<(u64, f64, u64), FastTextError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|tid| {
                let (shared, dict, token_count) = (&shared, &dict, &token_count);
                s.spawn(move || -> Result<(u64, f64, u64), FastTextError> {
                    let file = std::fs::File::open(path).map_err(io_err(path))?;
                    let mut reader = BufReader::with_capacity(1 << 16, file);
                    let offset = tid as u64 * size / threads as u64;
                    let mut line = Vec::new();
                    if offset > 0 {
                        reader
                            .seek(SeekFrom::Start(offset - 1))
                            .map_err(io_err(path))?;
                        // Start at the next line (fastText starts mid-word; same effect).
                        reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
                    }
                    let mut st = State {
                        hidden: vec![0.0; dim],
                        grad: vec![0.0; dim],
                        output: Vec::with_capacity(nlabels),
                        row: vec![0.0; dim],
                        rng: Rng::seeded((tid as u64) << 32 ^ args.seed as u32 as u64),
                        loss_sum: 0.0,
                        examples: 0,
                    };
                    let (mut words, mut labels, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
                    let mut local = 0i64;
                    let mut since_rewind = 0u64;
                    let lr0 = args.lr as f32;
                    while token_count.load(Relaxed) < total {
                        line.clear();
                        let n = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
                        if n == 0 {
                            if since_rewind == 0 && offset == 0 {
                                break;
                            }
                            since_rewind = 0;
                            reader.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
                            continue;
                        }
                        let eos = line.last() == Some(&b'\n');
                        let ntok = dict.line(&line, eos, &mut words, &mut labels, &mut hashes);
                        since_rewind += ntok as u64;
                        let progress = token_count.load(Relaxed) as f32 / total as f32;
                        let lr = lr0 * (1.0 - progress);
                        shared.update(&words, &labels, lr, &mut st);
                        local += ntok as i64;
                        if local > i64::from(args.lr_update_rate) {
                            token_count.fetch_add(local, Relaxed);
                            local = 0;
                        }
                    }
                    Ok((st.examples, st.loss_sum, st.examples))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or(Err(FastTextError::Unsupported(
                    "a training thread panicked",
                )))
            })
            .collect()
    });
    let mut examples = 0;
    let mut loss = 0.0f32;
    for (i, r) in results.into_iter().enumerate() {
        let (ex, sum, n) = r?;
        examples += ex;
        if i == 0 && n > 0 {
            loss = (sum / n as f64) as f32;
        }
    }
    let (input, output) = (wi, wo);
    if output.iter().any(|v| v.is_nan()) {
        return Err(FastTextError::NaN);
    }
    let report = TrainReport {
        words: dict.nwords(),
        labels: dict.nlabels(),
        tokens: dict.ntokens(),
        examples,
        seconds: start.elapsed().as_secs_f64(),
        loss,
    };
    let model = FastText::from_parts(
        args.clone(),
        dict,
        Matrix::Dense(DenseMatrix {
            rows,
            cols: dim,
            data: input,
        }),
        Matrix::Dense(DenseMatrix {
            rows: nlabels,
            cols: dim,
            data: output,
        }),
    );
    Ok((model, report))
}
