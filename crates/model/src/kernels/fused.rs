//! Fused CPU kernels with hand-written backward passes, through burn's backend-extension
//! mechanism (`#[backend_extension]`: a kernel on `Flex` primitives plus an `Autodiff`
//! implementation that registers its own backward step).
//!
//! The attention softmax was the largest cost outside gemm in a training step: as burn ops,
//! "add the mask, subtract the row max, exp, sum, divide" and their gradients are about ten
//! passes over the (b, heads, t, s) scores. Removing mask + softmax altogether (an experiment,
//! not a model) took `bench train-step` from 0.31 to 0.27 s. [`masked_softmax`] does the
//! forward in one pass per row (the row stays in L1) and the backward
//! `dx = y ⊙ (dy − Σ dy ⊙ y)` in another.
//!
//! The same holds, on smaller tensors, for SwiGLU (`silu(gate) · up`: sigmoid, two products and
//! their gradients) and RMSNorm (square, mean, rsqrt, two products, and a gradient with a row
//! reduction): [`swiglu`] and [`rms_norm`] do each direction in one pass.
//!
//! The GPU backends (wgpu, vulkan, cuda) take reasonlab's cubecl kernels (`kernels::gpu`)
//! through the functions at the end of this file, which choose per call from the tensor's
//! device, so the model code has one path; [`composed`] keeps burn's composed ops as their
//! reference.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Device, GradientCheckpointingStrategy, Int, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Fused operations; implemented for `Flex` and for `Autodiff` over it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// Row softmax of `x + bias` over the last dimension. `x`: (b, m, s) as a flat (b·m, s)
    /// row list, `bias`: (b, t, s) with `m` a multiple of `t`; row `j` of batch `i` adds
    /// `bias[i, j mod t]` (the query heads sharing a kv head are folded into `m`).
    fn masked_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `silu(gate) · up`, same shapes.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x / sqrt(mean(x²) + eps) · weight` over the last dimension; `weight`: (last dim).
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// `x (m, k) · w (k, n)`: burn-flex's own gemm call, written straight into a new buffer
    /// (burn-flex zero-fills a `Vec<u8>` and copies it into an aligned one first — ~8% of a
    /// train step).
    fn matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Each row's log-probability of its target under `softmax(x · w)` and the distribution's
    /// entropy (a constant: no gradient), both (rows): `x` (rows, k), `w` (k, vocab),
    /// `targets` (rows), `chunk` rows of logits at a time (see [`head_logprobs`]).
    fn head_logprobs(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedOps for Flex {
    fn masked_softmax(x: FlexTensor, bias: FlexTensor) -> FlexTensor {
        kernels::masked_softmax(x, bias)
    }
    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        kernels::swiglu(gate, up)
    }
    fn rms_norm(x: FlexTensor, weight: FlexTensor, eps: f64) -> FlexTensor {
        kernels::rms_norm(x, weight, eps as f32)
    }
    fn matmul(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        let (x, w) = (forward_strides(x), forward_strides(w));
        kernels::matmul(Strided::of(&x), Strided::of(&w))
    }
    fn head_logprobs(
        x: FlexTensor,
        w: FlexTensor,
        targets: FlexTensor,
        chunk: usize,
    ) -> (FlexTensor, FlexTensor) {
        let (x, w) = (forward_strides(x), forward_strides(w));
        let head = kernels::head_logprobs(Strided::of(&x), Strided::of(&w), &ids(targets), chunk);
        (head.logp, head.entropy)
    }
}

/// An integer tensor's values as i64.
fn ids(t: FlexTensor) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

/// Register `grad` for `parent` when it is tracked (burn does not export the node type, so a
/// macro rather than a function).
macro_rules! register {
    ($grads:expr, $parent:expr, $grad:expr) => {
        if let Some(p) = $parent {
            $grads.register::<Flex>(p.id, $grad);
        }
    };
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn masked_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaskedSoftmax;

        impl Backward<Flex, 1> for MaskedSoftmax {
            /// The softmax output.
            type State = FlexTensor;

            fn backward(
                self,
                ops: Ops<FlexTensor, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dy = grads.consume::<Flex>(&ops.node);
                let [parent] = ops.parents;
                register!(grads, parent, kernels::softmax_backward(ops.state, dy));
            }
        }

        let (x, node) = x.into_parts();
        let bias = bias.into_primitive(); // a constant: no gradient flows to the mask
        match MaskedSoftmax
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = kernels::masked_softmax(x, bias);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernels::masked_softmax(x, bias)),
        }
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SwiGlu;

        impl Backward<Flex, 2> for SwiGlu {
            /// (gate, up)
            type State = (FlexTensor, FlexTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dy = grads.consume::<Flex>(&ops.node);
                let (gate, up) = ops.state;
                let (dg, du) = kernels::swiglu_backward(gate, up, dy);
                let [pg, pu] = ops.parents;
                register!(grads, pg, dg);
                register!(grads, pu, du);
            }
        }

        let (gate, gate_node) = gate.into_parts();
        let (up, up_node) = up.into_parts();
        match SwiGlu
            .prepare::<C>([gate_node, up_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = kernels::swiglu(gate.clone(), up.clone());
                prep.finish((gate, up), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernels::swiglu(gate, up)),
        }
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RmsNorm(f32);

        impl Backward<Flex, 2> for RmsNorm {
            /// (x, weight)
            type State = (FlexTensor, FlexTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dy = grads.consume::<Flex>(&ops.node);
                let (x, w) = ops.state;
                let (dx, dw) = kernels::rms_norm_backward(x, w, dy, self.0);
                let [px, pw] = ops.parents;
                register!(grads, px, dx);
                register!(grads, pw, dw);
            }
        }

        let (x, x_node) = x.into_parts();
        let (w, w_node) = weight.into_parts();
        let eps = eps as f32;
        match RmsNorm(eps)
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = kernels::rms_norm(x.clone(), w.clone(), eps);
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernels::rms_norm(x, w, eps)),
        }
    }

    fn matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Matmul;

        impl Backward<Flex, 2> for Matmul {
            /// x when w is tracked (for dw), w when x is tracked (for dx): a frozen weight's
            /// matmul does not keep its input alive until the backward, as in burn's own.
            type State = (Option<FlexTensor>, Option<FlexTensor>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                // As burn's matmul backward: dx = dy · wᵀ, dw = xᵀ · dy (transposes as
                // strides), each only for a tracked parent (a frozen LoRA base gets none).
                let dy = forward_strides(grads.consume::<Flex>(&ops.node));
                let (x, w) = ops.state;
                let [px, pw] = ops.parents;
                let dy_s = Strided::of(&dy);
                if let (Some(_), Some(w)) = (&px, &w) {
                    let dx = kernels::matmul(dy_s, Strided::of(w).t());
                    register!(grads, px, dx);
                }
                if let (Some(_), Some(x)) = (&pw, &x) {
                    let dw = kernels::matmul(Strided::of(x).t(), dy_s);
                    register!(grads, pw, dw);
                }
            }
        }

        let (x_tracked, w_tracked) = (x.is_tracked(), w.is_tracked());
        let (x, x_node) = x.into_parts();
        let (w, w_node) = w.into_parts();
        let (x, w) = (forward_strides(x), forward_strides(w));
        match Matmul
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = kernels::matmul(Strided::of(&x), Strided::of(&w));
                prep.finish((w_tracked.then_some(x), x_tracked.then_some(w)), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(kernels::matmul(Strided::of(&x), Strided::of(&w)))
            }
        }
    }

    fn head_logprobs(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct HeadLogprobs(usize);

        impl Backward<Flex, 2> for HeadLogprobs {
            /// (x, w, targets, stats, the logits when one chunk): each chunk's logits are
            /// otherwise recomputed from x and w.
            type State = (FlexTensor, FlexTensor, Vec<i64>, Vec<f32>, Option<Vec<f32>>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dlogp = grads.consume::<Flex>(&ops.node);
                let (x, w, targets, stats, logits) = ops.state;
                let [px, pw] = ops.parents;
                let (dx, dw) = kernels::head_logprobs_backward(
                    kernels::HeadBackward {
                        x: Strided::of(&x),
                        w: Strided::of(&w),
                        targets: &targets,
                        stats: &stats,
                        logits,
                        dlogp: &f32_rows(&dlogp),
                        chunk: self.0,
                    },
                    px.is_some(),
                    pw.is_some(),
                );
                if let Some(dx) = dx {
                    register!(grads, px, dx);
                }
                if let Some(dw) = dw {
                    register!(grads, pw, dw);
                }
            }
        }

        let (x, x_node) = x.into_parts();
        let (w, w_node) = w.into_parts();
        let (x, w) = (forward_strides(x), forward_strides(w));
        let targets = ids(targets);
        let constant = <Autodiff<Flex, C> as AutodiffBackend>::from_inner;
        let head = kernels::head_logprobs(Strided::of(&x), Strided::of(&w), &targets, chunk);
        match HeadLogprobs(chunk)
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = (x, w, targets, head.stats, head.logits);
                let logp = prep.finish(state, head.logp);
                (logp, constant(head.entropy))
            }
            OpsKind::UnTracked(prep) => (prep.finish(head.logp), constant(head.entropy)),
        }
    }
}

/// A rank-2 f32 tensor as gemm reads it: storage, start offset, row and column strides.
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

/// `t` itself, or a contiguous copy when a stride is negative (a flipped view), which gemm's
/// pointer arithmetic here does not take.
fn forward_strides(t: FlexTensor) -> FlexTensor {
    if t.layout().strides().iter().all(|&s| s >= 0) {
        t
    } else {
        t.to_contiguous()
    }
}

impl<'a> Strided<'a> {
    fn of(t: &'a FlexTensor) -> Self {
        let l = t.layout();
        let (shape, st) = (l.shape(), l.strides());
        assert_eq!(shape.num_dims(), 2, "matmul operands are rank 2");
        Self {
            data: t.storage::<f32>(),
            offset: l.start_offset(),
            rows: shape[0],
            cols: shape[1],
            rs: st[0],
            cs: st[1],
        }
    }

    /// Rows `start..start + n` (a view).
    fn rows(self, start: usize, n: usize) -> Self {
        debug_assert!(start + n <= self.rows && self.rs >= 0);
        Self {
            offset: self.offset + start * self.rs as usize,
            rows: n,
            ..self
        }
    }

    /// A dense row-major (rows, cols) buffer.
    fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            offset: 0,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose (a view: strides swapped).
    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

pub(crate) fn f32_rows(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => {
            std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap_or(&[]).to_vec())
        }
    }
}

/// The shape of a Flex tensor.
pub(crate) fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().iter().copied().collect()
}

/// A new f32 Flex tensor of `shape`, its buffer written by `fill`.
///
/// Not `vec![0; n]`: a zeroed allocation of this size asks the allocator for known-zero
/// memory, i.e. fresh pages that the kernel must fault in and clear (`clear_page_erms` in
/// `perf`); a recycled block plus a memset is cheaper.
#[allow(clippy::slow_vector_initialization)] // deliberately not `vec![0; …]`, see above
pub(crate) fn new_f32(shape: &[usize], fill: impl FnOnce(&mut [f32])) -> FlexTensor {
    let n: usize = shape.iter().product();
    let mut buf = Vec::with_capacity(n);
    buf.resize(n, 0f32);
    fill(&mut buf);
    FlexTensor::from_data(TensorData::new(buf, shape.to_vec()))
}

/// `t` as a contiguous tensor whose storage is exactly its elements, so that `storage_mut`
/// can overwrite it in place (it copies only when the buffer is shared).
pub(crate) fn dense(t: FlexTensor) -> FlexTensor {
    let n = t.layout().shape().num_elements();
    if t.layout().contiguous_offsets() == Some((0, n)) && t.storage::<f32>().len() == n {
        t
    } else {
        t.to_contiguous()
    }
}

/// Rows per parallel task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

/// `exp(x)` without libm, branch-free so that the row loops vectorise: Cephes' `expf`
/// (range reduction by ln 2 in two parts, degree-5 polynomial, 2^k from the exponent bits);
/// within 2 ulp of `f32::exp` on [−87, 88], 0 below −87 (masked scores).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    // `kr` holds the integer k = round(x / ln 2) in its low mantissa bits (|k| < 2^22), so
    // 2^k comes from integer ops on the bits: no float-to-int conversion, whose saturating
    // semantics would not vectorise.
    let kr = xc * std::f32::consts::LOG2_E + ROUND;
    let k = kr - ROUND;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((kr.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { y * scale }
}

/// Reductions in eight interleaved partial sums (maxima), so that the loops vectorise: a strict
/// left-to-right float sum cannot be reordered by the compiler, and kept the softmax and norm
/// rows scalar (7% of a training step in the softmax forward alone).
#[inline(always)]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum8(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max8(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = a.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for x in chunks {
        for l in 0..8 {
            acc[l] = acc[l].max(x[l]);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `y ← exp(y − max y)` in place; returns the sum, the softmax normaliser.
#[inline(always)]
pub(crate) fn exp_shifted(y: &mut [f32]) -> f32 {
    let max = max8(y);
    for o in y.iter_mut() {
        *o = exp_approx(*o - max);
    }
    sum8(y)
}

/// One row of the forward: `y ← softmax(y + bias)` in place.
#[inline(always)]
fn softmax_row(y: &mut [f32], bias: &[f32]) {
    for (o, &c) in y.iter_mut().zip(bias) {
        *o += c;
    }
    let inv = 1.0 / exp_shifted(y);
    for o in y.iter_mut() {
        *o *= inv;
    }
}

/// One row of the backward: `g ← y ⊙ (g − Σ g ⊙ y)` in place.
#[inline(always)]
fn softmax_backward_row(g: &mut [f32], y: &[f32]) {
    let dot = dot8(y, g);
    for (d, &a) in g.iter_mut().zip(y) {
        *d = a * (*d - dot);
    }
}

/// Compiles `body` three times — for AVX-512, for AVX2 + FMA (selected at run time) and for the
/// baseline — so the row loops vectorise 16 or 8 wide where the CPU allows.
macro_rules! with_simd {
    ($vis:vis $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                // The same code compiled for wider vectors: IEEE operations in the same order,
                // so the same results (no reassociation without fast-math).
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn fast512($($arg: $ty),*) $body
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $body
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `fast512` was compiled for.
                    return unsafe { fast512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `fast` was compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body
        }
    };
}
pub(crate) use with_simd;

with_simd!(softmax_rows(out: &mut [f32], bias: &[f32], s: usize, per_batch: usize, t: usize, first: usize) {
    for (k, y) in out.chunks_mut(s).enumerate() {
        let row = first + k;
        let (batch, j) = (row / per_batch, (row % per_batch) % t);
        softmax_row(y, &bias[(batch * t + j) * s..(batch * t + j + 1) * s]);
    }
});

with_simd!(softmax_backward_rows(g: &mut [f32], y: &[f32], s: usize) {
    for (gr, yr) in g.chunks_mut(s).zip(y.chunks(s)) {
        softmax_backward_row(gr, yr);
    }
});

with_simd!(pub(crate) swiglu_chunk(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp_approx(-g)) * u;
    }
});

with_simd!(swiglu_backward_chunk(dg: &mut [f32], du: &mut [f32], gate: &[f32], up: &[f32]) {
    // dy arrives in `dg`; d silu(g) = σ(g) · (1 + g · (1 − σ(g))).
    for (((a, b), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(gate).zip(up) {
        let dy = *a;
        let sig = 1.0 / (1.0 + exp_approx(-g));
        *b = dy * g * sig;
        *a = dy * u * sig * (1.0 + g * (1.0 - sig));
    }
});

with_simd!(pub(crate) rms_norm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let h = w.len();
    for (yr, xr) in out.chunks_mut(h).zip(x.chunks(h)) {
        let ms = dot8(xr, xr) / h as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &c) in yr.iter_mut().zip(xr).zip(w) {
            *o = v * r * c;
        }
    }
});

with_simd!(rms_norm_backward_rows(g: &mut [f32], dw: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    // g holds dy on entry and dx on exit; dw accumulates Σ_rows dy · x · r.
    let h = w.len();
    for (gr, xr) in g.chunks_mut(h).zip(x.chunks(h)) {
        let ms = dot8(xr, xr) / h as f32;
        let r = 1.0 / (ms + eps).sqrt();
        // Σ (dy · w) · x, in eight partial sums; dw accumulates element-wise.
        let mut lanes = [0f32; 8];
        for (i, (((d, &v), &c), acc)) in gr.iter().zip(xr).zip(w).zip(dw.iter_mut()).enumerate() {
            lanes[i % 8] += d * c * v;
            *acc += d * v * r;
        }
        let dot: f32 = lanes.iter().sum();
        let k = r * r * r * dot / h as f32;
        for ((d, &v), &c) in gr.iter_mut().zip(xr).zip(w) {
            *d = *d * c * r - v * k;
        }
    }
});

/// The Flex kernels behind [`FusedOps`]. The softmax and the backward passes write into a
/// consumed input's buffer when it is not shared; the SwiGLU and RMSNorm forwards allocate
/// (their inputs are kept for the backward pass).
mod kernels {
    use super::*;

    pub fn masked_softmax(x: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let dims: Vec<usize> = x.layout().shape().iter().copied().collect();
        let bdims: Vec<usize> = bias.layout().shape().iter().copied().collect();
        let s = *dims.last().unwrap_or(&1);
        let (b, t) = (bdims[0], bdims[bdims.len() - 2]);
        let bs = f32_rows(&bias);
        let mut y = dense(x);
        let out = y.storage_mut::<f32>();
        let per_batch = out.len() / s.max(1) / b.max(1);
        out.par_chunks_mut(s * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, chunk)| {
                softmax_rows(chunk, &bs, s, per_batch, t, task * ROWS_PER_TASK);
            });
        y
    }

    pub fn softmax_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let s = y.layout().shape().iter().last().copied().unwrap_or(1);
        let ys = f32_rows(&y);
        let mut g = dense(dy);
        let out = g.storage_mut::<f32>();
        out.par_chunks_mut(s * ROWS_PER_TASK)
            .zip(ys.par_chunks(s * ROWS_PER_TASK))
            .for_each(|(gc, yc)| softmax_backward_rows(gc, yc, s));
        g
    }

    /// Elements per parallel task of the element-wise kernels.
    const CHUNK: usize = 1 << 14;

    pub fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let (gs, us) = (f32_rows(&gate), f32_rows(&up));
        new_f32(&dims(&gate), |out| {
            out.par_chunks_mut(CHUNK)
                .zip(gs.par_chunks(CHUNK))
                .zip(us.par_chunks(CHUNK))
                .for_each(|((o, g), u)| swiglu_chunk(o, g, u));
        })
    }

    pub fn swiglu_backward(
        gate: FlexTensor,
        up: FlexTensor,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let gs = f32_rows(&gate);
        let us = f32_rows(&up);
        // Two buffers from dy: the first `storage_mut` copies the shared one, the second
        // then owns the original.
        let mut dg = dense(dy.clone());
        let mut du = dense(dy);
        dg.storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .zip(du.storage_mut::<f32>().par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK))
            .zip(us.par_chunks(CHUNK))
            .for_each(|(((a, b), g), u)| swiglu_backward_chunk(a, b, g, u));
        (dg, du)
    }

    /// `a (m, k) · b (k, n)` by the same `gemm::gemm` call as burn-flex's 2-D matmul (same
    /// strides, parallelism and threshold, hence the same results — except for flipped views,
    /// which [`forward_strides`] copies first), into an unfilled buffer.
    pub fn matmul(a: Strided<'_>, b: Strided<'_>) -> FlexTensor {
        let shape = vec![a.rows, b.cols];
        FlexTensor::from_data(TensorData::new(matmul_vec(a, b), shape))
    }

    /// `a · b` as a new dense row-major (m, n) buffer, not filled before gemm writes it.
    fn matmul_vec(a: Strided<'_>, b: Strided<'_>) -> Vec<f32> {
        let len = a
            .rows
            .checked_mul(b.cols)
            .expect("matmul: output size overflows usize");
        let mut out: Vec<f32> = Vec::with_capacity(len);
        // SAFETY: `out` has room for m × n (written through a raw pointer, never read before
        // gemm has written every element: `accumulate` is false).
        unsafe {
            gemm_raw(
                out.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
                a,
                b,
                false,
            );
            out.set_len(len);
        }
        out
    }

    /// `a · b` into the first m × n elements of `buf`, which is allocated (by
    /// [`matmul_vec`]) when it holds fewer: a buffer reused across chunks of rows.
    fn matmul_reusing<'b>(buf: &'b mut Vec<f32>, a: Strided<'_>, b: Strided<'_>) -> &'b mut [f32] {
        let len = a.rows * b.cols;
        if buf.len() < len {
            *buf = matmul_vec(a, b);
        } else {
            matmul_into(&mut buf[..len], a, b, false);
        }
        &mut buf[..len]
    }

    /// `out ← a · b`, or `out ← out + a · b` when `accumulate`: `out` the dense row-major
    /// (m, n) result.
    pub fn matmul_into(out: &mut [f32], a: Strided<'_>, b: Strided<'_>, accumulate: bool) {
        assert_eq!(
            Some(out.len()),
            a.rows.checked_mul(b.cols),
            "matmul: output of the wrong size"
        );
        // SAFETY: `out` holds exactly m × n initialised elements.
        unsafe { gemm_raw(out.as_mut_ptr(), a, b, accumulate) }
    }

    /// `gemm::gemm` into the row-major (m, n) buffer at `dst`, reading it first when
    /// `accumulate`.
    ///
    /// # Safety
    /// `dst` is valid for m × n writes, and for reads when `accumulate`.
    unsafe fn gemm_raw(dst: *mut f32, a: Strided<'_>, b: Strided<'_>, accumulate: bool) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert_eq!(b.rows, k, "matmul: inner dimensions differ");
        // Every element an operand's strides reach lies in its storage.
        let reach = |s: &Strided| {
            let last = |len: usize, st: isize| (len.saturating_sub(1) as isize) * st;
            s.rows == 0
                || s.cols == 0
                || (s.rs >= 0
                    && s.cs >= 0
                    && s.offset as isize + last(s.rows, s.rs) + last(s.cols, s.cs)
                        < s.data.len() as isize)
        };
        assert!(
            reach(&a) && reach(&b),
            "matmul: strides outside the storage"
        );
        const PARALLEL: usize = 192 * 192 * 192;
        let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: `dst` is valid for the m × n elements of row stride n (the caller's
        // contract); the operands' strided elements are inside their storage (asserted
        // above). Without `accumulate`, gemm writes every element of `dst` without reading it
        // (zeros when k = 0).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                n as isize,
                accumulate,
                a.data.as_ptr().add(a.offset),
                a.cs,
                a.rs,
                b.data.as_ptr().add(b.offset),
                b.cs,
                b.rs,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }

    /// [`FusedOps::head_logprobs`]' results: (rows) log-probabilities and entropies, (rows, 2)
    /// statistics (each row's largest logit and `ln Σ exp(logit − max)`), and the (rows, vocab)
    /// logits when they were one chunk.
    pub struct Head {
        pub logp: FlexTensor,
        pub entropy: FlexTensor,
        pub stats: Vec<f32>,
        pub logits: Option<Vec<f32>>,
    }

    /// The log-probability a target outside the vocabulary gets (as the GPU kernel's).
    const OUTSIDE: f32 = -3.0e38;

    /// [`FusedOps::head_logprobs`]: `x` (rows, k), `w` (k, vocab); one buffer of `chunk` rows
    /// of logits, reused ([`matmul_reusing`]), and returned when it held every row.
    pub fn head_logprobs(x: Strided<'_>, w: Strided<'_>, targets: &[i64], chunk: usize) -> Head {
        let (rows, vocab) = (x.rows, w.cols);
        assert_eq!(targets.len(), rows, "head log-probs: one target per row");
        let chunk = chunk.clamp(1, rows.max(1));
        let (mut logp, mut entropy) = (vec![0f32; rows], vec![0f32; rows]);
        let mut stats = vec![0f32; 2 * rows];
        let mut logits = Vec::new();
        for start in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - start);
            let buf = matmul_reusing(&mut logits, x.rows(start, n), w);
            buf.par_chunks(vocab.max(1))
                .zip(logp[start..start + n].par_iter_mut())
                .zip(entropy[start..start + n].par_iter_mut())
                .zip(stats[2 * start..2 * (start + n)].par_chunks_mut(2))
                .zip(targets[start..start + n].par_iter())
                .for_each(|((((row, lp), ent), st), &target)| {
                    let (max, ln_sum, mean_shift) = row_stats(row);
                    *lp = match usize::try_from(target) {
                        Ok(j) if j < vocab => row[j] - max - ln_sum,
                        _ => OUTSIDE,
                    };
                    *ent = ln_sum - mean_shift;
                    st.copy_from_slice(&[max, ln_sum]);
                });
        }
        let tensor = |v: Vec<f32>| FlexTensor::from_data(TensorData::new(v, vec![rows]));
        Head {
            logp: tensor(logp),
            entropy: tensor(entropy),
            stats,
            logits: (chunk >= rows).then_some(logits),
        }
    }

    /// A row of logits' largest value, `ln Σ exp(l − max)` and `Σ p · (l − max)`, in one pass
    /// after the maximum (eight interleaved sums, so that it vectorises).
    fn row_stats(row: &[f32]) -> (f32, f32, f32) {
        let max = max8(row);
        let (mut sum, mut dot) = ([0f32; 8], [0f32; 8]);
        let chunks = row.chunks_exact(8);
        let (mut tail_sum, mut tail_dot) = (0f32, 0f32);
        for &v in chunks.remainder() {
            let e = exp_approx(v - max);
            tail_sum += e;
            tail_dot += e * (v - max);
        }
        for c in chunks {
            for l in 0..8 {
                let shifted = c[l] - max;
                let e = exp_approx(shifted);
                sum[l] += e;
                dot[l] += e * shifted;
            }
        }
        let sum = sum.iter().sum::<f32>() + tail_sum;
        let dot = dot.iter().sum::<f32>() + tail_dot;
        (max, sum.ln(), dot / sum)
    }

    /// What [`head_logprobs_backward`] reads: the forward's operands, statistics and kept
    /// logits (when one chunk), and the log-probabilities' gradient (rows).
    pub struct HeadBackward<'a> {
        pub x: Strided<'a>,
        pub w: Strided<'a>,
        pub targets: &'a [i64],
        pub stats: &'a [f32],
        pub logits: Option<Vec<f32>>,
        pub dlogp: &'a [f32],
        pub chunk: usize,
    }

    /// The head's backward pass, chunk by chunk: the chunk's logits (kept, or recomputed),
    /// `dlogits = dlogp · (onehot(target) − softmax)` in their place, then `dx = dlogits · wᵀ`
    /// (rows, k) and `dw += xᵀ · dlogits` (k, vocab), each only when asked for.
    pub fn head_logprobs_backward(
        h: HeadBackward<'_>,
        want_dx: bool,
        want_dw: bool,
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        let (rows, k, vocab) = (h.x.rows, h.x.cols, h.w.cols);
        let chunk = h.chunk.clamp(1, rows.max(1));
        let mut dx = want_dx.then(|| vec![0f32; rows * k]);
        let mut dw: Option<Vec<f32>> = None;
        let kept = h.logits.is_some();
        let mut logits = h.logits.unwrap_or_default();
        for start in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - start);
            let buf = match kept {
                true => &mut logits[..n * vocab],
                false => matmul_reusing(&mut logits, h.x.rows(start, n), h.w),
            };
            buf.par_chunks_mut(vocab.max(1))
                .zip(h.stats[2 * start..2 * (start + n)].par_chunks(2))
                .zip(h.dlogp[start..start + n].par_iter())
                .zip(h.targets[start..start + n].par_iter())
                .for_each(|(((row, st), &g), &target)| {
                    let shift = st[0] + st[1];
                    for v in row.iter_mut() {
                        *v = -g * exp_approx(*v - shift);
                    }
                    if let Ok(j) = usize::try_from(target)
                        && j < row.len()
                    {
                        row[j] += g;
                    }
                });
            let grad = Strided::dense(buf, n, vocab);
            if let Some(dx) = &mut dx {
                matmul_into(&mut dx[start * k..(start + n) * k], grad, h.w.t(), false);
            }
            if want_dw {
                // The first chunk's part is written into a new buffer, the others added to it.
                let xt = h.x.rows(start, n).t();
                match &mut dw {
                    Some(dw) => matmul_into(dw, xt, grad, true),
                    None => dw = Some(matmul_vec(xt, grad)),
                }
            }
        }
        let dw = dw.or_else(|| want_dw.then(|| vec![0f32; k * vocab]));
        let tensor =
            |v: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(v, shape));
        (
            dx.map(|v| tensor(v, vec![rows, k])),
            dw.map(|v| tensor(v, vec![k, vocab])),
        )
    }

    pub fn rms_norm(x: FlexTensor, weight: FlexTensor, eps: f32) -> FlexTensor {
        let ws = f32_rows(&weight);
        let h = ws.len().max(1);
        let xs = f32_rows(&x);
        new_f32(&dims(&x), |out| {
            out.par_chunks_mut(h * ROWS_PER_TASK)
                .zip(xs.par_chunks(h * ROWS_PER_TASK))
                .for_each(|(o, xc)| rms_norm_rows(o, xc, &ws, eps));
        })
    }

    pub fn rms_norm_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor) {
        let ws = f32_rows(&weight);
        let h = ws.len().max(1);
        let xs = f32_rows(&x);
        let mut g = dense(dy);
        // Per-task partial sums, added in task order: the result does not depend on how
        // rayon scheduled the tasks (runs are reproducible).
        let partial: Vec<Vec<f32>> = g
            .storage_mut::<f32>()
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(xs.par_chunks(h * ROWS_PER_TASK))
            .map(|(gc, xc)| {
                let mut dw = vec![0f32; h];
                rms_norm_backward_rows(gc, &mut dw, xc, &ws, eps);
                dw
            })
            .collect();
        let mut dw = vec![0f32; h];
        for p in &partial {
            dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        (g, FlexTensor::from_data(TensorData::new(dw, dims(&weight))))
    }
}

/// True when tensors on `device` run on the Flex CPU backend (with or without autodiff).
pub fn is_flex(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// What the GPU backends run for the ops reasonlab fuses (RMSNorm, softmax, SwiGLU, RoPE,
/// attention, token log-probabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuKernels {
    /// reasonlab's fused kernels (the default).
    Fused,
    /// burn's composed ops: to measure what the fused kernels change on a GPU.
    Composed,
}

/// The environment switches of the GPU path: `$ty` chosen by the environment variable `$env`
/// through the names given, the first (its `Default`) where it is unset, read once per
/// process; opening a GPU device refuses a value that names none, so the default is never
/// taken silently there.
macro_rules! env_choice {
    ($ty:ident, $env:literal, { $first_name:literal => $first:ident $(, $name:literal => $variant:ident)* $(,)? }) => {
        impl Default for $ty {
            fn default() -> Self {
                Self::$first
            }
        }

        impl $ty {
            #[doc = concat!(
                "The environment variable that chooses: `", $first_name, "` (the default)",
                $(" or `", $name, "`",)* "."
            )]
            pub const ENV: &'static str = $env;

            /// The choice in [`Self::ENV`]; unset is the default, any value other than the
            /// names an error naming the variable.
            pub fn from_env() -> Result<Self, crate::ModelError> {
                match std::env::var(Self::ENV) {
                    Err(_) => Ok(Self::default()),
                    Ok(v) => v.parse().map_err(|message| crate::ModelError::Config {
                        path: None,
                        field: Self::ENV.into(),
                        message,
                    }),
                }
            }

            /// This process's choice, read from the environment once.
            pub fn current() -> Self {
                static CHOICE: std::sync::OnceLock<$ty> = std::sync::OnceLock::new();
                *CHOICE.get_or_init(|| Self::from_env().unwrap_or_default())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $first_name => Ok(Self::$first),
                    $($name => Ok(Self::$variant),)*
                    other => Err(format!(
                        "`{other}`: expected {}",
                        [$first_name, $($name),*].join(" or ")
                    )),
                }
            }
        }
    };
}

env_choice!(GpuKernels, "REASONLAB_GPU_KERNELS", { "fused" => Fused, "composed" => Composed });

/// How the GPU backends compute attention over more than one query per row (training,
/// scoring, prefill), with [`GpuKernels::Fused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuAttention {
    /// Flash attention (the default): one kernel per direction, the (t, s) scores never in
    /// device memory (their memory grows as t·s per head otherwise); head dims up to 128.
    Flash,
    /// The scores as a matmul, the fused softmax, the weighted sum as a matmul (the
    /// probabilities kept for the backward pass).
    Matmul,
}

env_choice!(GpuAttention, "REASONLAB_GPU_ATTENTION", { "flash" => Flash, "matmul" => Matmul });

/// Whether a decode step's attention may split its keys across cubes
/// ([`DecodeKernel::split`]), with [`GpuKernels::Fused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeSplit {
    /// Where a small batch's groups leave most of the grid idle at a long context (the
    /// default).
    Auto,
    /// Never: a cube per (batch, kv head) over all of its keys, to measure what the split
    /// gains (`scripts/gpu_check.sh --only long`).
    Never,
}

env_choice!(DecodeSplit, "REASONLAB_GPU_DECODE_SPLIT", { "auto" => Auto, "never" => Never });

/// Whether generation on a GPU backend queues a decode step before the previous step's tokens
/// are read (`REASONLAB_GPU_DECODE_OVERLAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeOverlap {
    /// Ahead (the default): the tokens a step picked on the device feed the next step there,
    /// queued behind it, while the host reads them, checks stops and streams text; the rows
    /// of ended sequences leave the batch once a quarter of it has ended (vLLM's async
    /// scheduling, SGLang's overlap scheduler). The same draws as [`DecodeOverlap::Off`],
    /// each row's logits differing at most where a kernel's choice follows the batch's row
    /// count.
    Ahead,
    /// Off: each step's tokens are read before the next step is built, to measure what
    /// overlapping gains.
    Off,
}

env_choice!(DecodeOverlap, "REASONLAB_GPU_DECODE_OVERLAP", { "ahead" => Ahead, "off" => Off });

/// Values of 1-D tensors read back to the host, each read queued when this is made and
/// collected by [`ReadAhead::wait`]: on a GPU backend the copies take their place in the
/// device's queue ahead of what is launched after them, so a caller can queue the next step's
/// kernels before it waits (generation's [`DecodeOverlap::Ahead`]). Elsewhere (flex, autodiff,
/// burn's fusion) the values are read when waited for.
pub struct ReadAhead {
    parts: Vec<Part>,
}

enum Part {
    Later(Box<Tensor<1>>),
    #[cfg(feature = "gpu-kernels")]
    Queued(super::gpu::QueuedRead),
}

impl ReadAhead {
    /// Queue the reads of `tensors`.
    pub fn new(tensors: Vec<Tensor<1>>) -> Self {
        let parts = tensors
            .into_iter()
            .map(|t| {
                #[cfg(feature = "gpu-kernels")]
                let part = match super::gpu::queue_read(t) {
                    Ok(queued) => Part::Queued(queued),
                    Err(t) => Part::Later(t),
                };
                #[cfg(not(feature = "gpu-kernels"))]
                let part = Part::Later(Box::new(t));
                part
            })
            .collect();
        Self { parts }
    }

    /// Each tensor's values as f32, in order.
    pub fn wait(self) -> Result<Vec<Vec<f32>>, crate::ModelError> {
        self.parts
            .into_iter()
            .map(|part| match part {
                Part::Later(t) => t
                    .try_into_vec_as::<f32>()
                    .map_err(|e| crate::ModelError::Input(format!("reading a tensor: {e:?}"))),
                #[cfg(feature = "gpu-kernels")]
                Part::Queued(q) => q.wait(),
            })
            .collect()
    }
}

/// The largest head dim of the decode attention kernel (a unit per dimension).
pub const DECODE_MAX_HEAD_DIM: usize = 256;

/// How a decode step's attention kernel covers the KV cache, as [`DecodeKernel::plan`] picks
/// it for a model's shape and a device's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKernel {
    /// One cube per (batch, kv head) with a unit per element of its `n_rep` query rows: the
    /// keys go through shared memory by tiles of `tile` keys, loaded once for the group, and
    /// each (query, key) pair's dot is split over `d / tile` units.
    Group { tile: usize },
    /// One cube per query row, a unit per head dimension (`d` rounded up to a power of two,
    /// at least 32) and per key of each tile of as many keys: each query head reads its kv
    /// head's keys on its own. Where a group's rows are more than a cube holds, no tile of a
    /// power-of-two split fits [`DecodeKernel::TILE_ELEMENTS`], or the device's shared memory
    /// is smaller than the group needs.
    Row,
}

impl DecodeKernel {
    /// Elements of the key tile of [`DecodeKernel::Group`] (16 KB in f32): `d` keys at head
    /// dim 64, 32 at 128, 16 at 256.
    pub const TILE_ELEMENTS: usize = 4096;

    /// The kernel for `n_rep` query rows per kv head of dim `d` on a device whose cubes hold
    /// `max_units` units and `max_shared` bytes of shared memory: [`DecodeKernel::Group`] with
    /// the largest tile `d / split` (`split` a power of two dividing `d`) of at most
    /// [`DecodeKernel::TILE_ELEMENTS`] elements, where the group's rows fit a cube
    /// (`n_rep · d` units, up to 1,024) and its [`DecodeKernel::group_bytes`] fit the
    /// shared memory; else [`DecodeKernel::Row`].
    pub fn plan(n_rep: usize, d: usize, max_units: usize, max_shared: usize) -> Self {
        if d == 0 || n_rep * d > max_units.min(1024) {
            return Self::Row;
        }
        let tile = (0..usize::BITS)
            .map(|p| 1usize << p)
            .take_while(|&split| split <= d)
            .filter(|&split| d.is_multiple_of(split))
            .map(|split| d / split)
            .find(|&tile| tile * d <= Self::TILE_ELEMENTS);
        match tile {
            Some(tile) if Self::group_bytes(n_rep, d, tile) <= max_shared => Self::Group { tile },
            _ => Self::Row,
        }
    }

    /// Keys per chunk where a step's keys are split across cubes ([`DecodeKernel::split`]):
    /// the partition vLLM's paged attention v2 takes.
    pub const CHUNK_KEYS: usize = 512;

    /// The cubes a split step aims at: about twice the streaming multiprocessors of an H100
    /// or H200 (2 · 132 = 264, rounded down to a power of two). (wgpu does not say how many a GPU has.)
    pub const GRID_CUBES: usize = 256;

    /// How [`DecodeKernel::Group`] cuts `s` keys of `groups` (batch · kv heads) groups
    /// across cubes: `(chunks, keys per chunk)`, `(1, s)` unless the groups fill less than
    /// half of [`DecodeKernel::GRID_CUBES`] and the keys are more than a chunk of
    /// [`DecodeKernel::CHUNK_KEYS`]; else `⌈s / CHUNK_KEYS⌉` chunks, or fewer where that
    /// many would take the cubes past the grid, of equal size rounded up to a multiple of the
    /// tile (at most [`DecodeKernel::CHUNK_KEYS`] keys unless the grid limits the chunks).
    /// Each chunk's cube writes its
    /// rows' normalised sums and log-sum-exps, and a second kernel combines them
    /// (flash-decoding). A single stream of Qwen2.5-0.5B (2 kv heads) at 16,384 keys: 32
    /// chunks of 512, 64 cubes, where unsplit 2 cubes would read every key.
    pub fn split(self, groups: usize, s: usize) -> (usize, usize) {
        let tile = match self {
            Self::Group { tile } => tile,
            Self::Row => return (1, s),
        };
        if groups == 0 || groups >= Self::GRID_CUBES / 2 || s <= Self::CHUNK_KEYS {
            return (1, s);
        }
        let chunks = s
            .div_ceil(Self::CHUNK_KEYS)
            .min(Self::GRID_CUBES.div_ceil(groups));
        let keys = s.div_ceil(chunks).div_ceil(tile) * tile;
        (s.div_ceil(keys), keys)
    }

    /// Shared memory of [`DecodeKernel::Group`] in bytes (f32): the group's rows and the key
    /// tile (both padded to `d + 1` against bank conflicts), the tile's weights, the partial
    /// dots where a pair's dot is split (`tile < d`), three statistics per row. Qwen2.5-0.5B
    /// (7 rows of dim 64, tiles of 64 keys): 20 KB; Qwen2.5-1.5B (6 rows of dim 128, tiles of
    /// 32 keys): 23 KB.
    pub fn group_bytes(n_rep: usize, d: usize, tile: usize) -> usize {
        let partials = if tile < d { n_rep * d } else { 0 };
        4 * ((n_rep + tile) * (d + 1) + n_rep * tile + partials + 3 * n_rep)
    }
}

/// The largest head dim of flash attention (its tiles of q, k, v rows live in shared memory);
/// Qwen2.5's is 64 or 128.
pub const FLASH_MAX_HEAD_DIM: usize = 128;

/// Whether the fused GPU kernels (`kernels::gpu`) take tensors on these devices: a GPU backend
/// compiled with them, with or without autodiff, unless [`GpuKernels::current`] asks for the
/// composed ops. (The workspace builds flex and burn's cubecl backends only, so "not flex" is
/// cubecl.)
/// Whether a decode step's attention over `head_dim` takes each row's count of padded keys
/// ([`DecodeMask::Starts`]) in its kernel on `device`: inference on a GPU backend with the
/// fused kernels and a head dim the decode kernel takes (elsewhere the counts would be turned
/// into a mask by burn's ops at every layer).
pub fn masks_by_padding_counts(device: &Device, head_dim: usize) -> bool {
    gpu_fused(std::slice::from_ref(device))
        && !device.is_autodiff()
        && head_dim <= DECODE_MAX_HEAD_DIM
}

/// Whether [`ReadAhead`] queues its copies on `device` when made (a GPU backend without
/// burn's fusion, whose tensors are recorded lazily): where it does not, a read waits for
/// whatever was queued after it, so decoding ahead gains nothing.
pub fn reads_ahead(device: &Device) -> bool {
    cfg!(feature = "gpu-kernels") && !cfg!(feature = "fusion") && !is_flex(device)
}

fn gpu_fused(devices: &[Device]) -> bool {
    cfg!(feature = "gpu-kernels")
        && GpuKernels::current() == GpuKernels::Fused
        && devices.iter().all(|d| !is_flex(d))
}

/// `softmax(x + bias)` over the last dimension, `x`: (b, kv, m, s), `bias`: (b, t, s) with `m`
/// a multiple of `t` (see [`FusedOps::masked_softmax`]); fused on Flex and on the GPU
/// backends; composed otherwise.
pub fn masked_softmax(x: Tensor<4>, bias: Tensor<3>) -> Tensor<4> {
    if is_flex(&x.device()) {
        let out = <Dispatch as FusedOps>::masked_softmax(x.into_dispatch(), bias.into_dispatch());
        return Tensor::from_dispatch(out);
    }
    #[cfg(feature = "gpu-kernels")]
    if gpu_fused(&[x.device(), bias.device()]) {
        return super::gpu::masked_softmax(x, bias);
    }
    composed::masked_softmax(x, bias)
}

/// Softmax over the last dimension computed in f32, returned in `x`'s type; fused on the
/// GPU backends.
pub fn softmax_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "gpu-kernels")]
    if gpu_fused(&[x.device()]) {
        return super::gpu::softmax(x);
    }
    composed::softmax_f32(x)
}

/// `silu(gate) · up`; fused on Flex and on the GPU backends; composed otherwise.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if is_flex(&gate.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::swiglu(
            gate.into_dispatch(),
            up.into_dispatch(),
        ));
    }
    #[cfg(feature = "gpu-kernels")]
    if gpu_fused(&[gate.device(), up.device()]) {
        return super::gpu::swiglu(gate, up);
    }
    composed::swiglu(gate, up)
}

/// `x (m, k) · w (k, n)`: on Flex (f32) without burn-flex's zeroed-and-copied output buffer,
/// the same gemm call otherwise; elsewhere burn's matmul.
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let f32s = x.dtype() == DType::F32 && w.dtype() == DType::F32;
    if f32s && is_flex(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::matmul(
            x.into_dispatch(),
            w.into_dispatch(),
        ));
    }
    x.matmul(w)
}

/// RMSNorm over the last dimension with `weight` (last dim); fused on Flex and on the GPU
/// backends; composed otherwise (in f32, like transformers'
/// `Qwen2RMSNorm`).
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    if is_flex(&x.device()) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::rms_norm(
            x.into_dispatch(),
            weight.into_dispatch(),
            eps,
        ));
    }
    #[cfg(feature = "gpu-kernels")]
    if gpu_fused(&[x.device(), weight.device()]) {
        return super::gpu::rms_norm(x, weight, eps);
    }
    composed::rms_norm(x, weight, eps)
}

/// The target of the debug event a GPU kernel that writes in place ([`adamw`],
/// [`append_kv`]) logs when it has to copy its buffer first because something else still holds
/// it: a weight an optimiser step copies, a KV cache a decode step copies.
pub const COPY_EVENTS: &str = "reasonlab_model::gpu::copies";

/// The scalars of one AdamW step ([`adamw`]), each in f32 as burn's scalar ops convert them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    pub beta1: f32,
    pub beta2: f32,
    /// `1 − β₁^t` and `1 − β₂^t` at this step's `t` (1 for the first), as burn's AdamW
    /// computes them (`1f32 − β.powi(t)`).
    pub correction1: f32,
    pub correction2: f32,
    pub eps: f32,
    pub lr: f32,
    /// `1 − lr·weight_decay`.
    pub decay: f32,
}

/// Whether [`adamw`] is one kernel for a parameter on `device`: a GPU backend with
/// [`GpuKernels::Fused`].
pub fn fuses_adamw(device: &Device) -> bool {
    gpu_fused(std::slice::from_ref(device))
}

/// One AdamW step of one parameter: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, then
/// `p ← p·decay − lr·(m/c₁) / (√(v/c₂) + ε)`; returns (p, m, v). One kernel, updating in place,
/// where [`fuses_adamw`] (burn's `AdamW` runs some fourteen ops); [`composed::adamw`], the same
/// ops as burn's, otherwise.
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    scalars: AdamWScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    #[cfg(feature = "gpu-kernels")]
    if fuses_adamw(&param.device()) {
        return super::gpu::adamw(param, grad, m, v, scalars);
    }
    composed::adamw(param, grad, m, v, scalars)
}

/// Whether [`append_kv`] runs on `device`: inference (no autodiff) on a GPU backend with
/// [`GpuKernels::Fused`].
pub fn fuses_kv_append(device: &Device) -> bool {
    gpu_fused(std::slice::from_ref(device)) && !device.is_autodiff()
}

/// A step's keys and values as the projections give them, for [`append_kv`].
#[derive(Debug, Clone)]
pub struct KvStep {
    /// (b, t, kv, d), before RoPE and the bias.
    pub k: Tensor<4>,
    /// (b, t, kv, d), before the bias.
    pub v: Tensor<4>,
    /// k's RoPE tables, (b, t, 1, d) in the activations' type, as [`rope`] takes them.
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    /// The projections' biases (k's, v's), each (kv·d).
    pub biases: Option<(Tensor<1>, Tensor<1>)>,
}

/// A step's keys and values into a layer's KV cache: RoPE on `k` plus its bias and `v` plus
/// its bias, written at positions `len..len + t` of the (b, kv, capacity, d) buffers, in place
/// when nothing else holds them; returns the buffers. One kernel where [`fuses_kv_append`];
/// [`composed::append_kv`] otherwise.
pub fn append_kv(
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    step: KvStep,
    len: usize,
) -> (Tensor<4>, Tensor<4>) {
    #[cfg(feature = "gpu-kernels")]
    if fuses_kv_append(&step.k.device()) {
        return super::gpu::append_kv(k_cache, v_cache, step, len);
    }
    composed::append_kv(k_cache, v_cache, step, len)
}

/// Whether [`add_rms_norm`] is one kernel for tensors on `device`: a GPU backend with
/// [`GpuKernels::Fused`], at inference and in training (where its backward pass is the norm's
/// kernel, the add's gradient passing through).
pub fn fuses_add_rms_norm(device: &Device) -> bool {
    gpu_fused(std::slice::from_ref(device))
}

/// The residual stream's add and the next RMSNorm: `(x + residual, rms_norm(x + residual))`
/// with `weight` (last dim). One kernel where [`fuses_add_rms_norm`]; an add and
/// [`rms_norm`] otherwise.
pub fn add_rms_norm<const D: usize>(
    x: Tensor<D>,
    residual: Tensor<D>,
    weight: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<D>) {
    #[cfg(feature = "gpu-kernels")]
    if fuses_add_rms_norm(&x.device()) {
        return super::gpu::add_rms_norm(x, residual, weight, eps);
    }
    let sum = x + residual;
    (sum.clone(), rms_norm(sum, weight, eps))
}

/// Where [`rope`] puts the heads axis of its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// (b, t, heads, d), as the projections give it.
    Projections,
    /// (b, heads, t, d), as attention reads it: on the GPU backends the kernel writes it
    /// contiguous, so no copy moves the heads axis.
    HeadsFirst,
}

/// RoPE on `x` (b, t, heads, d) as the projections give it (see
/// [`crate::decoder::Rope::apply_heads`]), the result in `layout`: `cos`, `sin`: (b, t, 1, d)
/// in `x`'s type, `rotate`: (d) the index `d/2, …, d−1, 0, …, d/2−1`; `bias` (heads·d), the
/// projection's, added to `x` first. One fused kernel on the GPU backends (bias included);
/// composed otherwise ([`composed::rope`], then a view with the axes swapped for
/// [`RopeLayout::HeadsFirst`]).
pub fn rope(
    x: Tensor<4>,
    cos: Tensor<4>,
    sin: Tensor<4>,
    rotate: Tensor<1, Int>,
    bias: Option<Tensor<1>>,
    layout: RopeLayout,
) -> Tensor<4> {
    #[cfg(feature = "gpu-kernels")]
    if gpu_fused(&[x.device(), cos.device(), sin.device()]) {
        return match layout {
            RopeLayout::Projections => super::gpu::rope(x, cos, sin, bias),
            RopeLayout::HeadsFirst => super::gpu::rope_heads_first(x, cos, sin, bias),
        };
    }
    let y = composed::rope(x, cos, sin, rotate, bias);
    match layout {
        RopeLayout::Projections => y,
        RopeLayout::HeadsFirst => y.swap_dims(1, 2),
    }
}

/// Whether [`attention`] of a decode step runs as one fused kernel for these tensors:
/// inference (no autodiff) on a GPU backend with [`GpuKernels::Fused`], head dim at most 256.
pub fn fuses_decode_attention(q: &Tensor<4>, k: &Tensor<4>) -> bool {
    let devices = [q.device(), k.device()];
    q.dims()[3] <= DECODE_MAX_HEAD_DIM
        && gpu_fused(&devices)
        && devices.iter().all(|d| !d.is_autodiff())
}

/// q's RoPE for a decode step's attention kernel ([`decode_attention_with_rope`]): the tables
/// (b, d) in the activations' type with the attention scale folded in, as
/// [`crate::decoder::Rope::query_tables`] gives them, and the q projection's bias (h·d) where
/// the projection left it out.
pub struct QueryRope {
    pub cos: Tensor<2>,
    pub sin: Tensor<2>,
    pub bias: Option<Tensor<1>>,
}

/// The keys a decode step's rows may not see.
pub enum DecodeMask {
    /// None: every cached key is a real one.
    None,
    /// (b, 1, s) additive: 0 where the key is visible, −1e30 where not.
    Additive(Tensor<3>),
    /// Row r's first `starts[r]` keys are padding, the rest visible (left-padded prompts and
    /// what follows them): (b) counts in f32 on the device. The decode kernels read the counts
    /// as they go, where an additive mask is b × s floats built on the host and copied to the
    /// device every step.
    Starts(Tensor<1>),
}

impl From<Option<Tensor<3>>> for DecodeMask {
    /// (b, 1, s) additive values, or none.
    fn from(bias: Option<Tensor<3>>) -> Self {
        match bias {
            Some(m) => DecodeMask::Additive(m),
            None => DecodeMask::None,
        }
    }
}

impl DecodeMask {
    /// The mask as (b, 1, s) additive values (`s` keys per row), `None` when nothing is masked.
    pub fn additive(self, s: usize) -> Option<Tensor<3>> {
        match self {
            DecodeMask::None => None,
            DecodeMask::Additive(m) => Some(m),
            DecodeMask::Starts(starts) => {
                let (b, device) = (starts.dims()[0], starts.device());
                let keys = Tensor::<1, Int>::arange(0..s as i64, &device)
                    .float()
                    .reshape([1, s])
                    .expand([b, s]);
                let padded = keys.lower(starts.reshape([b, 1]).expand([b, s]));
                let zeros = Tensor::<2>::zeros([b, s], &device);
                Some(
                    zeros
                        .mask_fill(padded, crate::decode::MASKED)
                        .reshape([b, 1, s]),
                )
            }
        }
    }
}

/// A decode step's attention ([`attention`] with `t` = 1) whose query rows are rotated inside
/// the attention kernel: `q` (b, kv, n_rep, d), or (b, 1, h, d) with the same elements, as
/// the q projection gives it (unbiased where `rope.bias` is set; a view into a packed
/// projection's rows is read in place), `k`, `v` (b, kv, s, d), `bias` (b, 1, s) additive when
/// some key is masked. The result has `q`'s shape. One kernel where [`fuses_decode_attention`], with the values of [`rope`] followed
/// by [`attention`] bit for bit; elsewhere the bias, the rotation and [`attention`] composed.
pub fn decode_attention_with_rope(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: DecodeMask,
    rope: QueryRope,
) -> Tensor<4> {
    #[cfg(feature = "gpu-kernels")]
    if fuses_decode_attention(&q, &k) {
        return super::gpu::decode_attention(q, k, v, mask, Some(rope));
    }
    let bias = mask.additive(k.dims()[2]);
    let q_shape = q.dims();
    let [b, kv, _, d] = k.dims();
    let n = q_shape[1] * q_shape[2] / kv;
    let q = q.reshape([b, kv, n, d]);
    let q = match rope.bias {
        Some(bias) => (q.reshape([b, kv * n * d]) + bias.unsqueeze::<2>()).reshape([b, kv, n, d]),
        None => q,
    };
    let swapped = Tensor::cat(
        vec![
            q.clone().narrow(3, d / 2, d / 2),
            q.clone().narrow(3, 0, d / 2),
        ],
        3,
    );
    let (cos, sin) = (
        rope.cos.reshape([b, 1, 1, d]),
        rope.sin.reshape([b, 1, 1, d]),
    );
    attention(q * cos + swapped * sin, k, v, None, 1, bias).reshape(q_shape)
}

/// Whether [`token_logprobs`] runs as one fused kernel (two with the backward pass) for logits
/// on `device`: a GPU backend with [`GpuKernels::Fused`].
pub fn fuses_token_logprobs(device: &Device) -> bool {
    gpu_fused(std::slice::from_ref(device))
}

/// Each row's log-probability of its target under the softmax of `logits` (rows, vocab) in
/// f32, and, when `entropy`, the distribution's entropy `−Σ p log p` (detached), each (rows).
/// One kernel on the GPU backends where [`fuses_token_logprobs`], which never holds the
/// (rows, vocab) log-softmax (and computes the entropy in the same pass);
/// [`composed::token_logprobs`] otherwise.
pub fn token_logprobs(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    entropy: bool,
) -> (Tensor<1>, Option<Tensor<1>>) {
    #[cfg(feature = "gpu-kernels")]
    if fuses_token_logprobs(&logits.device()) {
        let (logp, all) = super::gpu::token_logprobs(logits, targets);
        return (logp, entropy.then_some(all));
    }
    composed::token_logprobs(logits, targets, entropy)
}

/// Elements of logits a chunk of [`head_logprobs`] holds: 32 Mi (128 MB in f32).
pub const HEAD_CHUNK_ELEMENTS: usize = 1 << 25;

/// Rows of logits [`head_logprobs`] computes at a time for a vocabulary of `vocab`: as many as
/// [`HEAD_CHUNK_ELEMENTS`] holds, rounded down to a multiple of 64 (at least 64) so that each
/// chunk's matmul keeps whole tiles. At Qwen2.5's vocabulary of 151,936, 192 rows.
pub fn head_chunk_rows(vocab: usize) -> usize {
    (HEAD_CHUNK_ELEMENTS / vocab.max(1) / 64).max(1) * 64
}

/// Whether [`head_logprobs`] runs fused (the logits never whole) for these operands: on Flex
/// in f32, and on the GPU backends with [`GpuKernels::Fused`].
pub fn fuses_head_logprobs(x: &Tensor<2>, w: &Tensor<2>) -> bool {
    let devices = [x.device(), w.device()];
    let flex = devices.iter().all(is_flex) && x.dtype() == DType::F32 && w.dtype() == DType::F32;
    flex || gpu_fused(&devices)
}

/// The LM head and the token log-probabilities in one op: each row's log-probability of its
/// target under `softmax(x · w)` in f32, and, when `entropy`, the distribution's entropy
/// (detached), each (rows); `x` (rows, hidden), `w` (hidden, vocab) in the same type.
///
/// Where [`fuses_head_logprobs`], each row of logits is reduced to the target's
/// log-probability, the entropy and two statistics (the largest logit and
/// `ln Σ exp(logit − max)`) as soon as its matmul has written it, and the backward pass forms
/// `dlogits = dlogp · (onehot − softmax)` in the logits' place (on flex always, on the GPU
/// backends where nothing else holds them), then `dx = dlogits · wᵀ` and `dw = xᵀ · dlogits`
/// (summed over the chunks in f32). How much of the (rows, vocab) logits is held depends on the device:
///
/// - training without activation checkpointing keeps them whole for the backward pass;
/// - at inference, and in training with activation checkpointing
///   ([`crate::ActivationCheckpointing::Balanced`]), they are computed [`head_chunk_rows`]
///   rows at a time and never held whole; the backward pass recomputes each chunk's logits
///   from `x` and `w` (one more matmul of the head's size: Liger-Kernel's fused linear
///   cross-entropy and Apple's Cut Cross-Entropy make the same trade).
///
/// Otherwise the logits are formed whole and go through [`token_logprobs`]
/// ([`composed::head_logprobs`]).
pub fn head_logprobs(
    x: Tensor<2>,
    w: Tensor<2>,
    targets: Tensor<1, Int>,
    entropy: bool,
) -> (Tensor<1>, Option<Tensor<1>>) {
    let chunk = match x.device().gradient_checkpointing_strategy() {
        // Training that keeps its activations keeps the logits for the backward pass too.
        Some(GradientCheckpointingStrategy::Disabled) => usize::MAX,
        // Inference (no backward pass), or activation checkpointing: chunks.
        None | Some(GradientCheckpointingStrategy::Balanced) => head_chunk_rows(w.dims()[1]),
    };
    head_logprobs_in_chunks(x, w, targets, entropy, chunk)
}

/// [`head_logprobs`] with `chunk` rows of logits at a time: with one chunk (`chunk` ≥ rows)
/// the logits are kept for the backward pass, with several each is recomputed there.
pub fn head_logprobs_in_chunks(
    x: Tensor<2>,
    w: Tensor<2>,
    targets: Tensor<1, Int>,
    entropy: bool,
    chunk: usize,
) -> (Tensor<1>, Option<Tensor<1>>) {
    // No rows: nothing to chunk (and no gradient kernels to launch on empty tensors).
    if x.dims()[0] == 0 || !fuses_head_logprobs(&x, &w) {
        return composed::head_logprobs(x, w, targets, entropy);
    }
    let (logp, all) = if is_flex(&x.device()) {
        let (logp, all) = <Dispatch as FusedOps>::head_logprobs(
            x.into_dispatch(),
            w.into_dispatch(),
            targets.into_dispatch(),
            chunk,
        );
        (Tensor::from_dispatch(logp), Tensor::from_dispatch(all))
    } else {
        #[cfg(feature = "gpu-kernels")]
        {
            super::gpu::head_logprobs(x, w, targets, chunk)
        }
        #[cfg(not(feature = "gpu-kernels"))]
        unreachable!("the fused GPU kernels are not compiled in")
    };
    (logp, entropy.then_some(all))
}

/// Whether [`filter_logits`] and [`sample`] run on `device`: inference (no autodiff) on a GPU
/// backend with [`GpuKernels::Fused`].
pub fn fuses_sampling(device: &Device) -> bool {
    gpu_fused(std::slice::from_ref(device)) && !device.is_autodiff()
}

/// One draw per row on the device, in one kernel, or `None` where not [`fuses_sampling`]: the first
/// token whose cumulative weight `exp((x − max)·inv_temperature)` over `logits` (rows, vocab), or
/// over `filtered` from [`filter_logits`] when given (its entries at −3e38, −65,504 in f16, weigh
/// nothing), in vocabulary order, exceeds `uniforms[row]` times the row's total, as the host
/// sampler draws (`reasonlab_generate::Sampler`). Returns the tokens (rows, as f32, exact below
/// 2²⁴) and, when `logprobs`, their log-probabilities under the softmax of `logits` (the unfiltered
/// row at temperature 1), else zeros. The device sums in f32 where the host sums in f64, so a
/// uniform within rounding of the boundary between two tokens can pick the other.
pub fn sample(
    logits: Tensor<2>,
    filtered: Option<Tensor<2>>,
    uniforms: &[f64],
    inv_temperature: f32,
    logprobs: bool,
) -> Option<(Tensor<1>, Tensor<1>)> {
    #[cfg(feature = "gpu-kernels")]
    if fuses_sampling(&logits.device()) {
        let u: Vec<f32> = uniforms.iter().map(|&u| u as f32).collect();
        let n = u.len();
        let u = Tensor::<1>::from_data(TensorData::new(u, [n]), &logits.device());
        return Some(super::gpu::sample(
            logits,
            filtered,
            u,
            inv_temperature,
            logprobs,
        ));
    }
    let _ = (logits, filtered, uniforms, inv_temperature, logprobs);
    None
}

/// A filtered draw's candidates on the device: `logits` (rows, vocab) with every entry outside
/// them set to −3e38 (−65,504 in f16), so that its weight is 0, in one kernel, or `None` where not
/// [`fuses_sampling`] (the host's sampler filters there). The candidates are the host's
/// (`reasonlab_generate::Sampler`) at temperature `1 / inv_temperature`: in the order by
/// probability descending, then index ascending, the first `top_k` (0: no limit), then the
/// shortest prefix whose probability reaches `top_p` of theirs (1: no limit), and those of
/// probability ≥ `min_p` times the likeliest's (0: no floor); the device sums in f32 where the
/// host sums in f64, so a prefix can end one token apart where its mass is within rounding of
/// `top_p`.
pub fn filter_logits(
    logits: Tensor<2>,
    inv_temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
) -> Option<Tensor<2>> {
    #[cfg(feature = "gpu-kernels")]
    if fuses_sampling(&logits.device()) {
        return Some(super::gpu::filter_logits(
            logits,
            inv_temperature,
            top_k,
            top_p,
            min_p,
        ));
    }
    let _ = (logits, inv_temperature, top_k, top_p, min_p);
    None
}

/// Whether [`attention`] runs as flash attention for these tensors: a GPU backend with
/// [`GpuKernels::Fused`] and [`GpuAttention::Flash`], head dim at most 128 (with or without
/// autodiff: the backward pass is flash attention's too).
pub fn fuses_flash_attention(q: &Tensor<4>, k: &Tensor<4>) -> bool {
    q.dims()[3] <= FLASH_MAX_HEAD_DIM
        && GpuAttention::current() == GpuAttention::Flash
        && gpu_fused(&[q.device(), k.device()])
}

/// A decode step's attention ([`attention`] with `t` = 1) under `mask`: one kernel where
/// [`fuses_decode_attention`], which reads padding counts ([`DecodeMask::Starts`]) as they
/// are; elsewhere [`attention`] with the mask as additive values.
pub fn decode_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: DecodeMask) -> Tensor<4> {
    #[cfg(feature = "gpu-kernels")]
    if fuses_decode_attention(&q, &k) {
        return super::gpu::decode_attention(q, k, v, mask, None);
    }
    let (dims, s) = (q.dims(), k.dims()[2]);
    attention(q, k, v, None, 1, mask.additive(s)).reshape(dims)
}

/// `softmax(q·kᵀ + bias)·v` over the last dimension: `q` (b, kv, m, d) with the scale applied
/// and `m` = n_rep·t (the query heads sharing each kv head folded into the query axis), `k`,
/// `v` (b, kv, s, d), `v_bias` (kv·d) the v projection's bias where it is yet to be added (by
/// flash attention as the values load, else as a sum), `bias` (b, t, s) additive when some
/// key is masked. Returns (b, t, h, d), `h` = kv·n_rep query heads, the layout the output
/// projection reads. On the GPU backends a decode step (`t` = 1, inference, no `v_bias`) is
/// one fused kernel where [`fuses_decode_attention`], anything else flash attention where
/// [`fuses_flash_attention`], which writes that layout (and reads v and its gradient in the
/// projection's (b, s, kv, d), so that training moves no head axis); otherwise scores,
/// [`masked_softmax`] or [`softmax_f32`], and the weighted sum, its heads then swapped to the
/// sequence's (a view).
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    v_bias: Option<Tensor<1>>,
    t: usize,
    bias: Option<Tensor<3>>,
) -> Tensor<4> {
    #[cfg(feature = "gpu-kernels")]
    if t == 1 && v_bias.is_none() && fuses_decode_attention(&q, &k) {
        let out = super::gpu::decode_attention(q, k, v, bias.into(), None);
        return heads_last(out, 1);
    }
    #[cfg(feature = "gpu-kernels")]
    if fuses_flash_attention(&q, &k) {
        return super::gpu::attention(q, k, v.swap_dims(1, 2), v_bias, bias, t);
    }
    let v = match v_bias {
        Some(b) => {
            let [_, kv, _, d] = v.dims();
            let b = crate::decoder::same_type(b, v.dtype()).reshape([1, kv, 1, d]);
            v + b
        }
        None => v,
    };
    let scores = q.matmul(k.swap_dims(2, 3)); // (b, kv, m, s)
    let probs = match bias {
        Some(bias) => masked_softmax(scores, bias),
        None => softmax_f32(scores),
    };
    heads_last(probs.matmul(v), t)
}

/// Attention's (b, kv, n_rep·t, d) output as (b, t, kv·n_rep, d): a view with swapped axes
/// (the same order, a reshape, at `t` = 1).
fn heads_last(out: Tensor<4>, t: usize) -> Tensor<4> {
    let [b, kv, m, d] = out.dims();
    let h = kv * m / t;
    match t {
        1 => out.reshape([b, 1, h, d]),
        _ => out.reshape([b, h, t, d]).swap_dims(1, 2),
    }
}

/// The ops as burn's composed ops, on any backend: the reference the fused kernels are tested
/// against.
pub mod composed {
    use burn::tensor::activation::softmax;
    use burn::tensor::{DType, Int, Tensor, TensorData};

    use crate::decoder::same_type;

    /// [`super::masked_softmax`], composed.
    pub fn masked_softmax(x: Tensor<4>, bias: Tensor<3>) -> Tensor<4> {
        let [b, kv, m, s] = x.dims();
        let t = bias.dims()[1];
        let dtype = x.dtype();
        // In f32 whatever the activations' type (transformers' `softmax(..., dtype=float32)`).
        let x = same_type(x, DType::F32);
        let bias = same_type(bias, DType::F32);
        let scores = x.reshape([b, kv, m / t, t, s]) + bias.reshape([b, 1, 1, t, s]);
        same_type(softmax(scores.reshape([b, kv, m, s]), 3), dtype)
    }

    /// [`super::softmax_f32`], composed.
    pub fn softmax_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        same_type(softmax(same_type(x, DType::F32), D - 1), dtype)
    }

    /// [`super::swiglu`], composed.
    pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
        // silu(g) = g·σ(g) and σ(g) = (1 + tanh(g/2)) / 2, so silu(g) = h + h·tanh(h) with
        // h = g/2: with the product by `up`, five elementwise kernels on a GPU backend where
        // burn's `silu` takes eight (its sigmoid is six), and tanh saturates instead of
        // overflowing, forward and backward.
        // In f32 whatever the activations' type: `h + h·tanh h` cancels for negative gates,
        // which a 16-bit sum would round away (burn's sigmoid also runs in f32).
        let dtype = gate.dtype();
        let (gate, up) = (same_type(gate, DType::F32), same_type(up, DType::F32));
        let h = gate.mul_scalar(0.5);
        same_type((h.clone().tanh() * h.clone() + h) * up, dtype)
    }

    /// [`super::rope`], composed: the bias added (as the projection adds it), `rotate_half` as
    /// one `select` of the halves in swapped order (a concatenation is two copies), two
    /// products and a sum.
    pub fn rope(
        x: Tensor<4>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        rotate: Tensor<1, Int>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<4> {
        let [b, t, heads, d] = x.dims();
        let x = match bias {
            Some(bias) => {
                (x.reshape([b * t, heads * d]) + bias.unsqueeze::<2>()).reshape([b, t, heads, d])
            }
            None => x,
        };
        let swapped = x.clone().select(3, rotate);
        x * cos + swapped * sin
    }

    /// [`super::adamw`], composed: burn's `AdamW` op for op.
    pub fn adamw<const D: usize>(
        param: Tensor<D>,
        grad: Tensor<D>,
        m: Tensor<D>,
        v: Tensor<D>,
        s: super::AdamWScalars,
    ) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
        let m = m
            .mul_scalar(s.beta1)
            .add(grad.clone().mul_scalar(1.0 - s.beta1));
        let v = v
            .mul_scalar(s.beta2)
            .add(grad.square().mul_scalar(1.0 - s.beta2));
        let corrected = m.clone().div_scalar(s.correction1);
        let step = corrected.div(v.clone().div_scalar(s.correction2).sqrt().add_scalar(s.eps));
        let param = match s.decay == 1.0 {
            true => param,
            false => param.mul_scalar(s.decay),
        };
        (param - step.mul_scalar(s.lr), m, v)
    }

    /// [`super::append_kv`], composed: [`rope`] with k's bias, v's bias added, each moved to
    /// the (b, kv, t, d) layout and written with `slice_assign`.
    pub fn append_kv(
        k_cache: Tensor<4>,
        v_cache: Tensor<4>,
        step: super::KvStep,
        len: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        let super::KvStep {
            k,
            v,
            cos,
            sin,
            biases,
        } = step;
        let [b, t, kv, d] = k.dims();
        let rotate: Vec<i64> = (0..d).map(|j| ((j + d / 2) % d) as i64).collect();
        let rotate = Tensor::<1, Int>::from_data(TensorData::new(rotate, [d]), &k.device());
        let (k_bias, v_bias) = biases.unzip();
        let k = rope(k, cos, sin, rotate, k_bias).swap_dims(1, 2);
        let v = match v_bias {
            Some(bias) => {
                (v.reshape([b * t, kv * d]) + bias.unsqueeze::<2>()).reshape([b, t, kv, d])
            }
            None => v,
        }
        .swap_dims(1, 2);
        let at = [0..b, 0..kv, len..len + t, 0..d];
        (
            k_cache.slice_assign(at.clone(), k),
            v_cache.slice_assign(at, v),
        )
    }

    /// [`super::attention`], composed: scores, softmax in f32, weighted sum.
    pub fn attention(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        t: usize,
        bias: Option<Tensor<3>>,
    ) -> Tensor<4> {
        let scores = q.matmul(k.swap_dims(2, 3)); // (b, kv, m, s)
        let probs = match bias {
            Some(bias) => masked_softmax(scores, bias),
            None => softmax_f32(scores),
        };
        super::heads_last(probs.matmul(v), t)
    }

    /// [`super::token_logprobs`], composed: the log-softmax in f32 (transformers'
    /// `logits.float()`), the targets' entries, and the entropy from the detached log-softmax.
    pub fn token_logprobs(
        logits: Tensor<2>,
        targets: Tensor<1, Int>,
        entropy: bool,
    ) -> (Tensor<1>, Option<Tensor<1>>) {
        let rows = logits.dims()[0];
        let logp = burn::tensor::activation::log_softmax(same_type(logits, DType::F32), 1);
        let entropy = entropy.then(|| {
            let lp = logp.clone().detach();
            (lp.clone().exp() * lp).sum_dim(1).neg().reshape([rows])
        });
        let picked = logp.gather(1, targets.reshape([rows, 1])).reshape([rows]);
        (picked, entropy)
    }

    /// [`super::head_logprobs`], composed: the logits whole, then
    /// [`super::token_logprobs`].
    pub fn head_logprobs(
        x: Tensor<2>,
        w: Tensor<2>,
        targets: Tensor<1, Int>,
        entropy: bool,
    ) -> (Tensor<1>, Option<Tensor<1>>) {
        super::token_logprobs(super::matmul(x, w), targets, entropy)
    }

    /// [`super::rms_norm`], composed.
    pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
        // In f32 whatever the activations' type, then back to it before the weight
        // (transformers' `Qwen2RMSNorm`: `weight * hidden.to(input_dtype)`).
        let dtype = x.dtype();
        let x = same_type(x, DType::F32);
        let var = x.clone().square().mean_dim(D - 1); // (..., 1)
        let x = same_type(x / (var + eps).sqrt(), dtype);
        x * same_type(weight, dtype).unsqueeze::<D>()
    }
}

#[cfg(test)]
mod tests {
    use super::{DecodeKernel, exp_approx};

    /// The tiles the decode kernel takes at the head dims models use, and where it falls back
    /// to a cube per query row.
    #[test]
    fn decode_kernel_plans_a_tile_per_head_dim() {
        use DecodeKernel::{Group, Row};
        let plan = |n_rep, d| DecodeKernel::plan(n_rep, d, 1024, 48 * 1024);
        // Qwen2.5-0.5B, 1.5B, 7B; Llama 3 70B; Qwen3-0.6B.
        assert_eq!(plan(7, 64), Group { tile: 64 });
        assert_eq!(plan(6, 128), Group { tile: 32 });
        assert_eq!(plan(7, 128), Group { tile: 32 });
        assert_eq!(plan(8, 128), Group { tile: 32 });
        assert_eq!(plan(2, 128), Group { tile: 32 });
        assert_eq!(plan(4, 256), Group { tile: 16 });
        assert_eq!(plan(3, 80), Group { tile: 40 });
        assert_eq!(plan(3, 96), Group { tile: 24 });
        assert_eq!(plan(3, 8), Group { tile: 8 });
        // More rows than a cube holds, a dim no power of two splits under the tile's size,
        // a device with less shared memory than the tile needs.
        assert_eq!(plan(20, 64), Row);
        assert_eq!(plan(5, 256), Row);
        assert_eq!(plan(1, 65), Row);
        assert_eq!(DecodeKernel::plan(7, 64, 1024, 16 * 1024), Row);
        assert_eq!(DecodeKernel::plan(7, 64, 256, 48 * 1024), Row);
        // Split across cubes: a single stream, a batch that leaves most of the grid idle, and
        // neither a batch that fills half of it nor a context of one chunk.
        let group = Group { tile: 64 };
        assert_eq!(group.split(2, 16384), (32, 512));
        assert_eq!(group.split(2, 100_000), (121, 832));
        assert_eq!(group.split(32, 2000), (4, 512));
        assert_eq!(group.split(32, 1100), (3, 384));
        assert_eq!(group.split(8, 600), (2, 320));
        assert_eq!(group.split(128, 16384), (1, 16384));
        assert_eq!(group.split(2, 512), (1, 512));
        assert_eq!(Group { tile: 32 }.split(4, 700), (2, 352));
        assert_eq!(Row.split(2, 16384), (1, 16384));
        for (groups, s) in [(1, 513), (3, 4097), (100, 9999), (7, 100_000)] {
            let (chunks, keys) = Group { tile: 32 }.split(groups, s);
            assert!(keys.is_multiple_of(32) && (chunks - 1) * keys < s && chunks * keys >= s);
        }
        // The sizes the documentation gives.
        let kb = |n_rep, d, tile| (DecodeKernel::group_bytes(n_rep, d, tile) + 512) / 1024;
        assert_eq!(kb(7, 64, 64), 20);
        assert_eq!(kb(6, 128, 32), 23);
    }

    #[test]
    fn exp_approx_is_within_a_few_ulp_and_zero_far_below() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, e) = (exp_approx(x), x.exp());
            worst = worst.max(((a - e) / e).abs());
            x += 0.0137;
        }
        assert!(worst < 4.0 * f32::EPSILON, "relative error {worst}");
        assert_eq!(exp_approx(-1.0e30), 0.0);
        assert_eq!(exp_approx(0.0), 1.0);
    }
}
