//! Inference kernels for the decode step (no autodiff): the dense layers as [`skinny`] matmuls
//! with the bias folded in, RoPE in one pass, and attention over the KV cache in one pass per
//! (sequence, kv head).
//!
//! A decode step pushes a handful of rows (one new token per sequence) through the model, so
//! its cost is dominated not by arithmetic but by what surrounds it: gemm packing the weights on
//! every call, and for attention, a batch of tiny matmuls (`(n_rep, d) · (d, s)` per sequence
//! and kv head), a softmax and the copies between them. Profiling `bench generate` put 62% of
//! the time in gemm calls (9% of it packing) and 12% in the attention matmuls alone. With
//! those gone, a step is bound by memory bandwidth: it reads every weight once per group of
//! sequences, from L3 for all but the smallest models, hence the prefetching in [`skinny`].
//!
//! These run only on the plain Flex device ([`enabled`]); training (autodiff) and other
//! backends keep the composed burn ops in `decoder.rs`, and tests check that both paths agree.
//!
//! [`skinny`]: crate::skinny

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchTensorKind, Flex, backend_extension};
use burn::tensor::{DType, Device, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::fused::{dot8, exp_shifted, new_f32};

/// Most rows (sequences × new tokens) for which the decode kernels replace the composed ops;
/// longer prefills go through gemm, whose packing pays off there.
pub const MAX_ROWS: usize = 512;

/// Inference-only operations, implemented for `Flex` (an autodiff tensor never reaches them:
/// see [`enabled`]).
#[backend_extension(Flex)]
pub trait DecodeOps: Backend {
    /// `x (m, k) · w (k, n) + bias (n)`; a `bias` with no elements adds nothing.
    fn linear_rows(
        x: FloatTensor<Self>,
        w: &FloatTensor<Self>,
        bias: &FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `x (m, k) · eᵀ` for `e` (n, k): a tied LM head.
    fn linear_rows_nt(x: FloatTensor<Self>, e: &FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x + down(silu(gate(n)) · up(n))`, `n = rms_norm(x) · norm` (eps `eps`): `x` (m, hidden),
    /// `gate`, `up` (hidden, inter), `down` (inter, hidden).
    fn mlp_block_rows(
        x: FloatTensor<Self>,
        norm: &FloatTensor<Self>,
        eps: f32,
        gate: &FloatTensor<Self>,
        up: &FloatTensor<Self>,
        down: &FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// RoPE of `x` (b, t, n, d) with tables `cos`, `sin` (b, 1, t, d) (`sin` carrying
    /// rotate-half's sign, as in [`crate::decoder::Rope`]), times `scale`; same shape.
    fn rope_scaled(
        x: FloatTensor<Self>,
        cos: &FloatTensor<Self>,
        sin: &FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// Attention of `q` (b, t, h, d) (scaled and rotated) over `k`, `v` (b, kv, s, d), with an
    /// additive `bias` (b, t, s) or none (no elements): (b, t, h·d).
    fn attention_rows(
        q: FloatTensor<Self>,
        k: &FloatTensor<Self>,
        v: &FloatTensor<Self>,
        bias: &FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl DecodeOps for Flex {
    fn linear_rows(x: FlexTensor, w: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
        kernels::linear_rows(&x, w, bias)
    }
    fn linear_rows_nt(x: FlexTensor, e: &FlexTensor) -> FlexTensor {
        kernels::linear_rows_nt(&x, e)
    }
    fn mlp_block_rows(
        x: FlexTensor,
        norm: &FlexTensor,
        eps: f32,
        gate: &FlexTensor,
        up: &FlexTensor,
        down: &FlexTensor,
    ) -> FlexTensor {
        kernels::mlp_block(&x, norm, eps, gate, up, down)
    }
    fn rope_scaled(x: FlexTensor, cos: &FlexTensor, sin: &FlexTensor, scale: f32) -> FlexTensor {
        kernels::rope(&x, cos, sin, scale)
    }
    fn attention_rows(
        q: FlexTensor,
        k: &FlexTensor,
        v: &FlexTensor,
        bias: &FlexTensor,
    ) -> FlexTensor {
        kernels::attention(&q, k, v, bias)
    }
}

/// Whether `rows` rows of `x` through weight `w` take the decode kernels: at most
/// [`MAX_ROWS`] rows (and at least one) of untracked f32 Flex tensors, on a CPU the kernels
/// suit. (The kind of tensor is checked, not just the device: a model moved from an autodiff
/// device to the plain one keeps tracked weights.)
pub fn enabled<const D: usize>(rows: usize, x: &Tensor<D>, w: &Tensor<2>) -> bool {
    let plain = |k: DispatchTensorKind| matches!(k, DispatchTensorKind::Flex(_));
    (1..=MAX_ROWS).contains(&rows)
        && cpu_suits()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.device() == Device::flex()
        && plain(x.clone().into_dispatch().kind)
        && plain(w.clone().into_dispatch().kind)
}

/// The kernels are written for AVX-512 on x86-64; elsewhere their portable loops are what the
/// compiler vectorises with a native FMA (aarch64's NEON). An x86-64 CPU without AVX-512 keeps
/// burn's gemm, whose AVX2 kernels beat those loops (`mul_add` without the `fma` target
/// feature is a libm call per element).
pub(crate) fn cpu_suits() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

fn none(device: &Device) -> Tensor<1> {
    Tensor::empty([0], device)
}

/// `x (m, k) · w (k, n) [+ bias (n)]` → (m, n).
pub fn linear(x: Tensor<2>, w: &Tensor<2>, bias: Option<&Tensor<1>>) -> Tensor<2> {
    let bias = bias.cloned().unwrap_or_else(|| none(&x.device()));
    Tensor::from_dispatch(<Dispatch as DecodeOps>::linear_rows(
        x.into_dispatch(),
        &w.clone().into_dispatch(),
        &bias.into_dispatch(),
    ))
}

/// `x (m, k) · eᵀ` for `e` (n, k) → (m, n).
pub fn linear_nt(x: Tensor<2>, e: &Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DecodeOps>::linear_rows_nt(
        x.into_dispatch(),
        &e.clone().into_dispatch(),
    ))
}

/// `x + down(silu(gate(n)) · up(n))` with `n = rms_norm(x) · norm`: x (m, hidden) → same.
pub fn mlp_block(
    x: Tensor<2>,
    norm: &Tensor<1>,
    eps: f64,
    gate: &Tensor<2>,
    up: &Tensor<2>,
    down: &Tensor<2>,
) -> Tensor<2> {
    let w = |t: &Tensor<2>| t.clone().into_dispatch();
    Tensor::from_dispatch(<Dispatch as DecodeOps>::mlp_block_rows(
        x.into_dispatch(),
        &norm.clone().into_dispatch(),
        eps as f32,
        &w(gate),
        &w(up),
        &w(down),
    ))
}

/// RoPE times `scale` on `x` (b, t, n, d), tables (b, 1, t, d).
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>, scale: f32) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DecodeOps>::rope_scaled(
        x.into_dispatch(),
        &cos.clone().into_dispatch(),
        &sin.clone().into_dispatch(),
        scale,
    ))
}

/// Attention of `q` (b, t, h, d) over `k`, `v` (b, kv, s, d) with an optional additive mask
/// (b, t, s) → (b, t, h·d).
pub fn attention(q: Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, mask: Option<Tensor<3>>) -> Tensor<3> {
    let [b, t, h, d] = q.dims();
    let device = q.device();
    let bias = mask.map_or_else(|| none(&device), |m| m.reshape([-1]));
    let out: Tensor<3> = Tensor::from_dispatch(<Dispatch as DecodeOps>::attention_rows(
        q.into_dispatch(),
        &k.clone().into_dispatch(),
        &v.clone().into_dispatch(),
        &bias.into_dispatch(),
    ));
    out.reshape([b, t, h * d])
}

/// Splits work into parallel tasks only when there is enough of it (FMAs) to amortise them.
const PARALLEL_WORK: usize = 1 << 20;

/// Whether `work` FMAs are worth splitting over the cores: enough of them, and the caller is
/// not itself one of rayon's workers — generation decodes one group of sequences per worker,
/// GRPO scores micro-batches on each, and splitting inside them only added task overhead and
/// copies while the other core was busy anyway.
fn split(work: usize) -> bool {
    work >= PARALLEL_WORK
        && rayon::current_num_threads() > 1
        && rayon::current_thread_index().is_none()
}

pub(crate) mod kernels {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    use crate::fused::{dims, f32_rows as rows};

    /// A weight as the few-row kernel reads it: packed panels from [`PACKED`] when there is
    /// room, else the row-major buffer.
    pub(crate) enum Weight<'a> {
        Packed(Arc<Vec<f32>>),
        RowMajor(std::borrow::Cow<'a, [f32]>),
    }

    impl<'a> Weight<'a> {
        pub(crate) fn of(w: &'a FlexTensor) -> Self {
            match packed(w) {
                Some(p) => Weight::Packed(p),
                None => Weight::RowMajor(rows(w)),
            }
        }

        fn get(&self) -> crate::skinny::Weights<'_> {
            match self {
                Weight::Packed(p) => crate::skinny::Weights::Packed(p),
                Weight::RowMajor(r) => crate::skinny::Weights::RowMajor(r),
            }
        }
    }

    /// Packed copies of weights (see [`crate::skinny::pack`]), each beside a clone of the
    /// tensor it was made from. The clone pins the buffer: burn writes a tensor in place only
    /// when its buffer has no other owner, so a cached entry's source can never change under
    /// it, and a weight that is replaced (an optimiser step) is a new buffer, hence a new
    /// entry. Entries whose source only the cache still holds are dropped.
    struct PackedEntry {
        source: FlexTensor,
        panels: Arc<Vec<f32>>,
    }

    /// Keyed by (buffer address, start offset, rows, cols): the pinned source keeps the
    /// address from being reused while its entry lives.
    type Key = (usize, usize, usize, usize);

    static PACKED: Mutex<Option<HashMap<Key, PackedEntry>>> = Mutex::new(None);

    /// Most bytes of packed copies kept: small models are packed whole, large ones (where a
    /// second copy of the weights would cost gigabytes) stay row-major.
    const PACK_BUDGET: usize = 256 << 20;

    fn packed(w: &FlexTensor) -> Option<Arc<Vec<f32>>> {
        let d = dims(w);
        if d.len() != 2 || !w.is_contiguous() {
            return None;
        }
        let key = (
            w.bytes().as_ptr() as usize,
            w.layout().start_offset(),
            d[0],
            d[1],
        );
        let mut guard = PACKED.lock().unwrap_or_else(|e| e.into_inner());
        let cache = guard.get_or_insert_with(HashMap::new);
        if let Some(e) = cache.get(&key) {
            return Some(e.panels.clone());
        }
        cache.retain(|_, e| !e.source.is_unique());
        let used: usize = cache.values().map(|e| 4 * e.panels.len()).sum();
        if used + 4 * d[0] * d[1] > PACK_BUDGET {
            return None;
        }
        let panels = Arc::new(crate::skinny::pack(&rows(w), d[0], d[1]));
        let source = w.clone();
        cache.insert(
            key,
            PackedEntry {
                source,
                panels: panels.clone(),
            },
        );
        Some(panels)
    }

    /// Fills `out` (m × n) by `part(cols, buf)`, which writes columns `cols` into `buf`
    /// (m × cols.len()). With enough `work` (FMAs) the columns are split into blocks of whole
    /// `tile`s on parallel tasks and gathered; otherwise one call does all of them.
    fn columns(
        out: &mut [f32],
        m: usize,
        n: usize,
        work: usize,
        tile: usize,
        part: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
    ) {
        if !split(work) {
            return part(0..n, out);
        }
        let threads = rayon::current_num_threads();
        let per_task = n.div_ceil(tile).div_ceil(2 * threads).max(1) * tile;
        let blocks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(per_task)
            .map(|j| j..(j + per_task).min(n))
            .collect();
        let parts: Vec<Vec<f32>> = blocks
            .par_iter()
            .map(|cols| {
                let mut buf = vec![0f32; m * cols.len()];
                part(cols.clone(), &mut buf);
                buf
            })
            .collect();
        for (cols, buf) in blocks.iter().zip(&parts) {
            for (r, src) in buf.chunks(cols.len()).enumerate() {
                out[r * n + cols.start..r * n + cols.end].copy_from_slice(src);
            }
        }
    }

    pub fn linear_rows(x: &FlexTensor, w: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
        let (xd, wd) = (dims(x), dims(w));
        let (m, k, n) = (xd[0], wd[0], wd[1]);
        let (xs, bs) = (rows(x), rows(bias));
        let bias = (!bs.is_empty()).then_some(&bs[..]);
        let w = Weight::of(w);
        new_f32(&[m, n], |out| linear_into(out, &xs, &w, bias, [m, k, n]))
    }

    /// `out (m, n) = xs (m, k) · w (k, n) [+ bias (n)]`.
    pub(crate) fn linear_into(
        out: &mut [f32],
        xs: &[f32],
        w: &Weight,
        bias: Option<&[f32]>,
        [m, k, n]: [usize; 3],
    ) {
        columns(out, m, n, m * k * n, crate::skinny::COLS, |cols, buf| {
            crate::skinny::matmul(xs, w.get(), bias, buf, m, k, n, cols);
        })
    }

    /// Output columns are rows of `e` (a vocabulary for a tied head: the largest product in
    /// the model, so it too is split over the cores).
    pub fn linear_rows_nt(x: &FlexTensor, e: &FlexTensor) -> FlexTensor {
        let (xd, ed) = (dims(x), dims(e));
        let (m, k, n) = (xd[0], xd[1], ed[0]);
        let (xs, es) = (rows(x), rows(e));
        new_f32(&[m, n], |out| linear_nt_into(out, &xs, &es, [m, k, n]))
    }

    /// `out (m, n) = xs (m, k) · esᵀ` for `es` (n, k).
    pub(crate) fn linear_nt_into(out: &mut [f32], xs: &[f32], es: &[f32], [m, k, n]: [usize; 3]) {
        columns(out, m, n, m * k * n, 8, |cols, buf| {
            let e_rows = &es[cols.start * k..cols.end * k];
            crate::skinny::matmul_nt(xs, e_rows, buf, m, k, cols.len());
        })
    }

    /// `x + down(silu(gate(n)) · up(n))` with `n = rms_norm(x)`: the second half of a decoder
    /// layer as one call (five ops and their intermediate tensors otherwise).
    pub fn mlp_block(
        x: &FlexTensor,
        norm: &FlexTensor,
        eps: f32,
        gate: &FlexTensor,
        up: &FlexTensor,
        down: &FlexTensor,
    ) -> FlexTensor {
        let (xd, gd) = (dims(x), dims(gate));
        let (m, hidden, inter) = (xd[0], xd[1], gd[1]);
        let (xs, ns) = (rows(x), rows(norm));
        let (gs, us, ds) = (Weight::of(gate), Weight::of(up), Weight::of(down));
        new_f32(&[m, hidden], |out| {
            mlp_into(out, &xs, &ns, eps, [&gs, &us, &ds], [m, hidden, inter]);
        })
    }

    /// `out = xs + down(silu(gate(n)) · up(n))`, `n = rms_norm(xs) · ns`: `xs`, `out`
    /// (m, hidden); the weights (hidden, inter), (hidden, inter), (inter, hidden).
    pub(crate) fn mlp_into(
        out: &mut [f32],
        xs: &[f32],
        ns: &[f32],
        eps: f32,
        [gs, us, ds]: [&Weight; 3],
        [m, hidden, inter]: [usize; 3],
    ) {
        with_scratch(m * hidden + 3 * m * inter, |scratch| {
            // Every element below is written before it is read.
            let (normed, rest) = scratch.split_at_mut(m * hidden);
            let (g, rest) = rest.split_at_mut(m * inter);
            let (u, act) = rest.split_at_mut(m * inter);
            crate::fused::rms_norm_rows(normed, xs, ns, eps);
            let normed = &*normed;
            let work = m * hidden * inter;
            let tile = crate::skinny::COLS;
            let project = |w: &Weight, out: &mut [f32]| {
                columns(out, m, inter, work, tile, |cols, buf| {
                    crate::skinny::matmul(normed, w.get(), None, buf, m, hidden, inter, cols);
                });
            };
            project(gs, g);
            project(us, u);
            crate::fused::swiglu_chunk(act, g, u);
            let act = &*act;
            columns(out, m, hidden, work, tile, |cols, buf| {
                crate::skinny::matmul(act, ds.get(), None, buf, m, inter, hidden, cols);
            });
            out.iter_mut().zip(xs.iter()).for_each(|(o, r)| *o += r);
        })
    }

    thread_local! {
        /// Per-thread buffer for a kernel's intermediates: reused, so not zeroed on every call.
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Most floats a thread keeps in its scratch buffer (16 MB): decode steps fit many times
    /// over; a large model's long prefill takes a fresh buffer instead of pinning its size.
    const SCRATCH_KEEP: usize = 4 << 20;

    /// `f` on `len` floats of this thread's scratch buffer (a fresh one if the buffer is in use
    /// further up the stack, or `len` is over [`SCRATCH_KEEP`]). The contents are whatever the
    /// last user left.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        if len > SCRATCH_KEEP {
            return f(&mut vec![0.0; len]);
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                if buf.len() < len {
                    buf.resize(len, 0.0);
                }
                f(&mut buf[..len])
            }
            Err(_) => f(&mut vec![0.0; len]),
        })
    }

    pub fn rope(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, scale: f32) -> FlexTensor {
        let xd = dims(x);
        let (b, t, n, d) = (xd[0], xd[1], xd[2], xd[3]);
        let (xs, cs, ss) = (rows(x), rows(cos), rows(sin));
        new_f32(&xd, |out| {
            rope_into(out, &xs, &cs, &ss, [b * t, n, d], scale)
        })
    }

    /// RoPE times `scale` of `xs` (rows, n, d) into `out`, with tables `cs`, `ss` (rows, d).
    pub(crate) fn rope_into(
        out: &mut [f32],
        xs: &[f32],
        cs: &[f32],
        ss: &[f32],
        [rows, n, d]: [usize; 3],
        scale: f32,
    ) {
        for bt in 0..rows {
            let (c, s) = (&cs[bt * d..(bt + 1) * d], &ss[bt * d..(bt + 1) * d]);
            for head in 0..n {
                let at = (bt * n + head) * d;
                rope_row(&mut out[at..at + d], &xs[at..at + d], c, s, scale);
            }
        }
    }

    /// K and V are views into the cache buffers (b, kv, capacity, d): read in place (the whole
    /// buffer, with the view's start and strides) when the last axis is unit-stride and no
    /// stride is negative, else copied.
    fn view(x: &FlexTensor) -> (std::borrow::Cow<'_, [f32]>, usize, [usize; 4]) {
        let st = x.layout().strides();
        if st.iter().all(|&s| s >= 0) && st[3] == 1 {
            let (off, strides) = strided4(x);
            (std::borrow::Cow::Borrowed(x.storage::<f32>()), off, strides)
        } else {
            let c = x.to_contiguous();
            let (off, strides) = strided4(&c);
            (
                std::borrow::Cow::Owned(c.storage::<f32>().to_vec()),
                off,
                strides,
            )
        }
    }

    /// Element offsets of a rank-4 view: (start, strides).
    fn strided4(t: &FlexTensor) -> (usize, [usize; 4]) {
        let l = t.layout();
        let st = l.strides();
        (
            l.start_offset(),
            [
                st[0] as usize,
                st[1] as usize,
                st[2] as usize,
                st[3] as usize,
            ],
        )
    }

    pub fn attention(
        q: &FlexTensor,
        k: &FlexTensor,
        v: &FlexTensor,
        bias: &FlexTensor,
    ) -> FlexTensor {
        let qd = dims(q);
        let (b, t, h, d) = (qd[0], qd[1], qd[2], qd[3]);
        let kd = dims(k);
        let (kv, s) = (kd[1], kd[2]);
        let n_rep = h / kv;
        let qs = rows(q);
        let bs = rows(bias);
        let (ks, k_off, k_st) = view(k);
        let (vs, v_off, v_st) = view(v);
        let geo = Geometry {
            t,
            h,
            d,
            kv,
            s,
            k_off,
            k_st,
            v_off,
            v_st,
        };
        // Per (sequence, kv head): n_rep · t rows of d outputs, gathered into (b, t, h, d).
        let mut grouped = vec![0f32; b * kv * t * n_rep * d];
        attention_into(&mut grouped, &qs, &ks, &vs, &bs, &geo, b);
        new_f32(&[b, t, h * d], |out| {
            ungroup(out, &grouped, [b, t, h, kv, d])
        })
    }
}

/// Attention of `qs` (b, t, h, d) over the keys and values that `geo` places in `ks`, `vs`,
/// with an additive `bias` (b, t, s) or none (empty), into `out` (b, kv, t, n_rep, d): per
/// (sequence, kv head), its n_rep query heads × t queries. With t = 1 that is (b, h, d).
pub(crate) fn attention_into(
    out: &mut [f32],
    qs: &[f32],
    ks: &[f32],
    vs: &[f32],
    bias: &[f32],
    geo: &Geometry,
    b: usize,
) {
    let Geometry { t, h, d, kv, s, .. } = *geo;
    let task = |(bg, out_bg): (usize, &mut [f32])| {
        #[cfg(target_arch = "x86_64")]
        if avx512::attend(out_bg, qs, ks, vs, bias, geo, bg) {
            return;
        }
        attend(out_bg, qs, ks, vs, bias, geo, bg);
    };
    let out = &mut out[..b * kv * t * (h / kv) * d];
    let chunk = t * (h / kv) * d;
    if split(b * t * h * s * d * 2) {
        out.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(task);
    }
}

/// [`attention_into`]'s output (b, kv, t, n_rep, d) into the query layout (b, t, h, d), head
/// `g · n_rep + r` (transformers' `repeat_kv` order).
pub(crate) fn ungroup(out: &mut [f32], grouped: &[f32], [b, t, h, kv, d]: [usize; 5]) {
    let n_rep = h / kv;
    for bi in 0..b {
        for g in 0..kv {
            for ti in 0..t {
                for r in 0..n_rep {
                    let src = &grouped[(((bi * kv + g) * t + ti) * n_rep + r) * d..][..d];
                    let head = g * n_rep + r;
                    out[((bi * t + ti) * h + head) * d..][..d].copy_from_slice(src);
                }
            }
        }
    }
}

/// Sizes and cache-view offsets for [`attend`]: queries (b, t, h, d); keys and values (b,
/// kv, s, d) at element offsets `k_off`, `v_off` with strides `k_st`, `v_st`.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) t: usize,
    pub(crate) h: usize,
    pub(crate) d: usize,
    pub(crate) kv: usize,
    pub(crate) s: usize,
    pub(crate) k_off: usize,
    pub(crate) k_st: [usize; 4],
    pub(crate) v_off: usize,
    pub(crate) v_st: [usize; 4],
}

crate::fused::with_simd!(attend(out: &mut [f32], qs: &[f32], ks: &[f32], vs: &[f32], bias: &[f32], geo: &Geometry, bg: usize) {
    // One (sequence, kv head): its n_rep query heads × t queries, each a softmax over s keys.
    let Geometry { t, h, d, kv, s, k_off, k_st, v_off, v_st } = *geo;
    let n_rep = h / kv;
    let (bi, g) = (bg / kv, bg % kv);
    let kb = k_off + bi * k_st[0] + g * k_st[1];
    let vb = v_off + bi * v_st[0] + g * v_st[1];
    let mut scores = vec![0f32; s];
    for ti in 0..t {
        let bias_row = (!bias.is_empty()).then(|| &bias[(bi * t + ti) * s..(bi * t + ti + 1) * s]);
        // Keys from the first visible one (see [`first_visible`]).
        let j0 = bias_row.map_or(0, first_visible);
        let scores = &mut scores[j0..];
        for r in 0..n_rep {
            let head = g * n_rep + r;
            let qrow = &qs[((bi * t + ti) * h + head) * d..][..d];
            for (j, sc) in (j0..s).zip(scores.iter_mut()) {
                *sc = dot8(qrow, &ks[kb + j * k_st[2]..][..d]) + bias_row.map_or(0.0, |br| br[j]);
            }
            let inv = 1.0 / exp_shifted(scores);
            let o = &mut out[(ti * n_rep + r) * d..][..d];
            o.fill(0.0);
            for (j, &p) in (j0..s).zip(scores.iter()) {
                axpy(o, p * inv, &vs[vb + j * v_st[2]..][..d]);
            }
        }
    }
});

/// Additive bias of a key no query may see (padding, or after the query): finite, so rows that
/// are entirely padding stay NaN-free.
pub(crate) const MASKED: f32 = -1.0e30;

/// Index of the first key in `bias_row` that is not [`MASKED`] (0 when every key is).
///
/// Attention starts there: the keys before it are a row's left padding, whose weights are
/// exactly 0 anyway, but whose number shifts which partial sum (of the softmax's eight, of the
/// value sum's two) each visible key lands in. Skipping them makes a row's result independent
/// of how much padding its batch gave it — the same prompt gives the same logits alone or
/// beside a longer one. A row with every key masked (a padding query) keeps them all, so its
/// output stays finite.
pub(crate) fn first_visible(bias_row: &[f32]) -> usize {
    bias_row.iter().position(|&b| b != MASKED).unwrap_or(0)
}

crate::fused::with_simd!(rope_row(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], scale: f32) {
    // x·cos + cat(x2, x1)·sin, with rotate-half's sign already in `sin`.
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = (x1[i] * cos[i] + x2[i] * sin[i]) * scale;
        o2[i] = (x2[i] * cos[half + i] + x1[i] * sin[half + i]) * scale;
    }
});

#[inline(always)]
fn axpy(out: &mut [f32], a: f32, x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = a.mul_add(v, *o);
    }
}

/// [`attend`] with AVX-512 for the usual head dims (16, 32, 64, 128): a block of 16 keys is
/// scored at once — 16 accumulators over `d`, then one transpose-and-add tree (15 combines
/// instead of 16 horizontal sums) — and `Σ p_j v_j` keeps two sets of accumulators in flight.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Geometry;
    use crate::fused::exp_shifted;
    use crate::skinny::sum16;

    /// Returns false (doing nothing) when the CPU or the head dim does not suit.
    pub fn attend(
        out: &mut [f32],
        qs: &[f32],
        ks: &[f32],
        vs: &[f32],
        bias: &[f32],
        geo: &Geometry,
        bg: usize,
    ) -> bool {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return false;
        }
        // SAFETY: (all arms) AVX-512F is available; `group` checks every slice bound.
        unsafe {
            match geo.d {
                16 => group::<1>(out, qs, ks, vs, bias, geo, bg),
                32 => group::<2>(out, qs, ks, vs, bias, geo, bg),
                64 => group::<4>(out, qs, ks, vs, bias, geo, bg),
                128 => group::<8>(out, qs, ks, vs, bias, geo, bg),
                _ => return false,
            }
        }
        true
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn group<const DV: usize>(
        out: &mut [f32],
        qs: &[f32],
        ks: &[f32],
        vs: &[f32],
        bias: &[f32],
        geo: &Geometry,
        bg: usize,
    ) {
        let Geometry {
            t,
            h,
            d,
            kv,
            s,
            k_off,
            k_st,
            v_off,
            v_st,
        } = *geo;
        let n_rep = h / kv;
        let (bi, g) = (bg / kv, bg % kv);
        let kb = k_off + bi * k_st[0] + g * k_st[1];
        let vb = v_off + bi * v_st[0] + g * v_st[1];
        // Every key and value row read below lies inside the buffers.
        assert!(
            s == 0
                || (kb + (s - 1) * k_st[2] + d <= ks.len()
                    && vb + (s - 1) * v_st[2] + d <= vs.len())
        );
        assert!(out.len() >= t * n_rep * d && qs.len() >= (bi * t + t) * h * d);
        assert!(bias.is_empty() || bias.len() >= (bi * t + t) * s);
        let cache = Cache {
            k: ks[kb..].as_ptr(),
            k_stride: k_st[2],
            v: vs[vb..].as_ptr(),
            v_stride: v_st[2],
            s,
        };
        let mut scores = vec![0f32; 2 * s.next_multiple_of(16)];
        for ti in 0..t {
            let bias_row = (!bias.is_empty()).then(|| &bias[(bi * t + ti) * s..][..s]);
            // Keys from the first visible one (see [`super::first_visible`]).
            let j0 = bias_row.map_or(0, super::first_visible);
            let bias_row = bias_row.map(|row| &row[j0..]);
            // SAFETY: j0 ≤ s, so the shifted rows are still the cache's (bounded above).
            let cache = unsafe {
                Cache {
                    k: cache.k.add(j0 * cache.k_stride),
                    v: cache.v.add(j0 * cache.v_stride),
                    s: s - j0,
                    ..cache
                }
            };
            let mut r = 0;
            while r < n_rep {
                let q = &qs[((bi * t + ti) * h + g * n_rep + r) * d..];
                let o = &mut out[(ti * n_rep + r) * d..];
                // SAFETY: the asserts above bound the cache rows, and q and o hold the d
                // floats of each head taken (heads r.. of this group are adjacent in both).
                unsafe {
                    // Two heads per pass where their accumulators fit the 32 registers.
                    if DV <= 4 && r + 1 < n_rep {
                        heads::<DV, 2>(o, q, &cache, bias_row, &mut scores);
                        r += 2;
                    } else {
                        heads::<DV, 1>(o, q, &cache, bias_row, &mut scores);
                        r += 1;
                    }
                }
            }
        }
    }

    /// One (sequence, kv head)'s keys and values: `s` rows of each, `*_stride` floats apart.
    #[derive(Clone, Copy)]
    struct Cache {
        k: *const f32,
        k_stride: usize,
        v: *const f32,
        v_stride: usize,
        s: usize,
    }

    /// Attention of `H` (1 or 2) adjacent query heads (`q`, H × 16·DV floats) over `cache`,
    /// into `o` (same layout). With two heads every key and value row is loaded once for both;
    /// each head's arithmetic is unchanged — the same FMA chain per score, and `sum16` reduces
    /// every slot by the same tree, so a score does not depend on its slot (8 keys × 2 heads
    /// or 16 keys × 1 head per block).
    ///
    /// # Safety
    /// AVX-512F; `cache` describes readable rows; `q` and `o` hold H · 16·DV floats; `scores`
    /// holds 2 · s rounded up to 16.
    #[target_feature(enable = "avx512f")]
    unsafe fn heads<const DV: usize, const H: usize>(
        o: &mut [f32],
        q: &[f32],
        cache: &Cache,
        bias_row: Option<&[f32]>,
        scores: &mut [f32],
    ) {
        let block = 16 / H;
        let (s, d) = (cache.s, 16 * DV);
        let stride = s.next_multiple_of(16);
        assert!(q.len() >= H * d && o.len() >= H * d && scores.len() >= H * stride);
        // SAFETY: (whole body) bounds as asserted above and promised by the caller.
        unsafe {
            let qv: [[__m512; DV]; H] = std::array::from_fn(|hh| {
                std::array::from_fn(|c| _mm512_loadu_ps(q.as_ptr().add(hh * d + 16 * c)))
            });
            for j0 in (0..s).step_by(block) {
                let keys = (s - j0).min(block);
                let mut acc = [_mm512_setzero_ps(); 16];
                for jj in 0..block {
                    if jj >= keys {
                        break;
                    }
                    let kr = cache.k.add((j0 + jj) * cache.k_stride);
                    let kc: [__m512; DV] = std::array::from_fn(|c| _mm512_loadu_ps(kr.add(16 * c)));
                    for (hh, qh) in qv.iter().enumerate() {
                        let mut a = _mm512_mul_ps(qh[0], kc[0]);
                        for c in 1..DV {
                            a = _mm512_fmadd_ps(qh[c], kc[c], a);
                        }
                        acc[hh * block + jj] = a;
                    }
                }
                let sums = sum16(acc);
                if H == 1 {
                    _mm512_storeu_ps(scores.as_mut_ptr().add(j0), sums);
                } else {
                    let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sums));
                    _mm256_storeu_ps(scores.as_mut_ptr().add(j0), _mm512_castps512_ps256(sums));
                    _mm256_storeu_ps(scores.as_mut_ptr().add(stride + j0), _mm256_castpd_ps(hi));
                }
            }
            let mut inv = [0f32; H];
            for (hh, inv) in inv.iter_mut().enumerate() {
                let sc = &mut scores[hh * stride..][..s];
                if let Some(row) = bias_row {
                    sc.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                *inv = 1.0 / exp_shifted(sc);
            }
            let p = |hh: usize, j: usize| _mm512_set1_ps(*scores.get_unchecked(hh * stride + j));
            let mut even = [[_mm512_setzero_ps(); DV]; H];
            let mut odd = [[_mm512_setzero_ps(); DV]; H];
            let mut j = 0;
            while j + 1 < s {
                let (v0, v1) = (
                    cache.v.add(j * cache.v_stride),
                    cache.v.add((j + 1) * cache.v_stride),
                );
                let vc0: [__m512; DV] = std::array::from_fn(|c| _mm512_loadu_ps(v0.add(16 * c)));
                let vc1: [__m512; DV] = std::array::from_fn(|c| _mm512_loadu_ps(v1.add(16 * c)));
                for (hh, (eh, oh)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                    let (p0, p1) = (p(hh, j), p(hh, j + 1));
                    for (c, (e, od)) in eh.iter_mut().zip(oh.iter_mut()).enumerate() {
                        *e = _mm512_fmadd_ps(p0, vc0[c], *e);
                        *od = _mm512_fmadd_ps(p1, vc1[c], *od);
                    }
                }
                j += 2;
            }
            if j < s {
                let v0 = cache.v.add(j * cache.v_stride);
                for (hh, eh) in even.iter_mut().enumerate() {
                    let p0 = p(hh, j);
                    for (c, e) in eh.iter_mut().enumerate() {
                        *e = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0.add(16 * c)), *e);
                    }
                }
            }
            for (hh, (eh, oh)) in even.iter().zip(&odd).enumerate() {
                let scale = _mm512_set1_ps(inv[hh]);
                for (c, (e, od)) in eh.iter().zip(oh).enumerate() {
                    let v = _mm512_mul_ps(_mm512_add_ps(*e, *od), scale);
                    _mm512_storeu_ps(o.as_mut_ptr().add(hh * d + 16 * c), v);
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{Geometry, MASKED};
        use super::*;
        use crate::skinny::tests::values;

        /// A kv group of three query heads takes one two-head pass and one one-head pass; each
        /// head's output must equal a one-head pass of its own, bit for bit, at every head dim
        /// the kernel takes, with and without a bias (leading keys masked).
        #[test]
        fn two_head_passes_equal_one_head_passes() {
            if !crate::kernels::avx512_or_say("decode attention (grouped heads)") {
                return;
            }
            for d in [16, 32, 64, 128] {
                let (t, h, kv, s) = (2, 6, 2, 37);
                let n_rep = h / kv;
                let qs = values(t * h * d, 1);
                let (ks, vs) = (values(kv * s * d, 2), values(kv * s * d, 3));
                let st = [kv * s * d, s * d, d, 1];
                let geo = Geometry {
                    t,
                    h,
                    d,
                    kv,
                    s,
                    k_off: 0,
                    k_st: st,
                    v_off: 0,
                    v_st: st,
                };
                let mut masked = vec![0f32; t * s];
                masked[..5].fill(MASKED);
                masked[s..s + 5].fill(MASKED);
                masked[2 * s - 3..].fill(MASKED);
                for bias in [Vec::new(), masked] {
                    for g in 0..kv {
                        let mut grouped = vec![0f32; t * n_rep * d];
                        assert!(attend(&mut grouped, &qs, &ks, &vs, &bias, &geo, g));
                        for ti in 0..t {
                            let row = (!bias.is_empty()).then(|| &bias[ti * s..][..s]);
                            let j0 = row.map_or(0, super::super::first_visible);
                            let cache = Cache {
                                k: ks[g * s * d + j0 * d..].as_ptr(),
                                k_stride: d,
                                v: vs[g * s * d + j0 * d..].as_ptr(),
                                v_stride: d,
                                s: s - j0,
                            };
                            let mut scores = vec![0f32; 2 * s.next_multiple_of(16)];
                            for r in 0..n_rep {
                                let q = &qs[(ti * h + g * n_rep + r) * d..][..d];
                                let mut alone = vec![0f32; d];
                                let row = row.map(|b| &b[j0..]);
                                // SAFETY: AVX-512F checked above; the shifted rows are inside
                                // `ks` and `vs`.
                                unsafe {
                                    match d {
                                        16 => {
                                            heads::<1, 1>(&mut alone, q, &cache, row, &mut scores)
                                        }
                                        32 => {
                                            heads::<2, 1>(&mut alone, q, &cache, row, &mut scores)
                                        }
                                        64 => {
                                            heads::<4, 1>(&mut alone, q, &cache, row, &mut scores)
                                        }
                                        _ => heads::<8, 1>(&mut alone, q, &cache, row, &mut scores),
                                    }
                                }
                                let got = &grouped[(ti * n_rep + r) * d..][..d];
                                assert_eq!(got, &alone[..], "d={d} g={g} ti={ti} head {r}");
                            }
                        }
                    }
                }
            }
        }
    }
}
