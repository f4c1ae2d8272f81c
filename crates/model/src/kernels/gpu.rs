//! Fused GPU kernels, written in cubecl's kernel language and run by burn's GPU backends
//! (wgpu, vulkan, cuda) through a backend extension: what burn's composed ops run as a chain of
//! kernels, each reading and writing the whole tensor, becomes one kernel, forward and
//! backward.
//!
//! | op | composed kernels | fused |
//! | --- | ---: | ---: |
//! | RMSNorm: square, mean, + eps, sqrt, divide, weight product | 6 | 1 |
//! | the residual addition and the next RMSNorm | 7 | 1 |
//! | a decode step's k and v into the KV cache: k's RoPE, both biases, two appends | 7 | 1 |
//! | attention softmax (with its mask: add, then max, subtract, exp, sum, divide) | 5 or 6 | 1 |
//! | SwiGLU's `silu(gate) · up` | 5 | 1 |
//! | RoPE on q or k with the projection's bias: the bias add, the swapped halves, two products, a sum | 5 | 1 |
//! | attention over several queries: scores, softmax, weighted sum (backward: 5) | 3 | 1 (2) |
//! | a decode step's attention over the KV cache (inference) | 7 | 1 |
//! | token log-probabilities and entropies: log-softmax, gather (backward: 1) | 7 or more | 1 |
//! | a filtered draw's candidates (top-k, top-p, min-p; inference) | a sort | 1 |
//! | an AdamW step of one parameter (in place) | 14 | 1 |
//!
//! Each kernel reads its inputs in their type (f32, f16, bf16), computes in f32 and writes the
//! input's type, as the composed path does with its casts (transformers' `Qwen2RMSNorm` and
//! `softmax(…, dtype=float32)`). The row kernels (RMSNorm, softmax) give each row one cube of
//! up to 256 units (RMSNorm's backward with the weight's gradient: 8 rows in turn), which stride over the row and combine their partial sums and maxima in
//! shared memory; the elementwise ones (SwiGLU, RoPE) a unit per element. Flash attention
//! ([`GpuOps::attention`]) keeps tiles of 16 queries and 16 keys in shared memory and never
//! writes the scores (FlashAttention-2's algorithm, its backward pass recomputing the
//! probabilities from two statistics per row).
//!
//! [`GpuOps`] holds the forward ops and [`GpuGrads`] their backward kernels; `GpuOps` on
//! `Autodiff<B>` records each op with a backward step that calls `GpuGrads` (RMSNorm's weight
//! gradient is summed in parts by its input-gradient kernel, then over the parts). The tests
//! in `crates/train/tests/gpu_kernels.rs` check every kernel and gradient against the composed
//! ops on the same device.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension,
};
use burn::tensor::{FloatDType, Int, Shape, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cube::{
    adamw_kernel, append_kv_kernel, decode_attention_kernel, decode_combine_kernel,
    decode_group_kernel, filter_kernel, flash_attention_dkv_kernel, flash_attention_dq_kernel,
    flash_attention_kernel, logprobs_backward_in_place_kernel, logprobs_backward_kernel,
    logprobs_kernel, rms_norm_backward_kernel, rms_norm_kernel, rope_kernel, sample_kernel,
    softmax_backward_kernel, softmax_kernel, swiglu_backward_kernel, swiglu_kernel,
};
use cubecl::prelude::{CubeCount, CubeDim};

pub use super::fused::AdamWScalars;
use super::fused::{self, DecodeKernel, DecodeSplit};

/// The decoder's elementwise and row ops fused into one kernel each on burn's cubecl
/// backends; differentiable through [`GpuGrads`].
#[backend_extension(Cube: cfg(feature = "gpu-kernels"), Fusion: cfg(feature = "fusion"), Autodiff)]
pub trait GpuOps: Backend {
    /// `softmax(x + bias)` over the last dimension in f32, in `x`'s type. `x`: (b, kv, m, s),
    /// `bias`: (b, t, s) with `m` a multiple of `t`; row `j` of head group `(i, h)` adds
    /// `bias[i, j mod t]`.
    #[fusion(dtype = x, shape = x)]
    fn masked_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `softmax(x)` over the last dimension in f32, in `x`'s type.
    #[fusion(dtype = x, shape = x)]
    fn softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `silu(gate) · up` in f32, in `gate`'s type; same shapes.
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x / sqrt(mean(x²) + eps)` over the last dimension in f32, cast to `x`'s type, times
    /// `weight` (last dim, in `x`'s type).
    #[fusion(dtype = x, shape = x)]
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// The residual stream's add and the next RMSNorm in one kernel: `(x + residual,
    /// rms_norm(x + residual) · weight)`, the sum in `x`'s type (as the composed add rounds
    /// it), the norm as [`GpuOps::rms_norm`]; `x`, `residual` of one shape. Under autodiff the
    /// sum and the norm are two nodes of the graph, the add's gradient passing straight through.
    #[fusion(meta = |x, _residual, _weight, _eps| (x.clone(), x.clone()))]
    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// RoPE in the projections' layout, in f32, in `x`'s type: `x`: (b, t, heads, d),
    /// `cos`, `sin`: (b, t, 1, d) with rotate_half's sign in `sin`;
    /// `x·cos + cat(x₂, x₁)·sin` with `x₁`, `x₂` the halves of the last dimension. When
    /// `biased`, `x + bias` (added in `x`'s type, as the projection would) takes `x`'s place:
    /// `bias` (heads·d), the projection's bias folded into this kernel; else unread.
    #[fusion(dtype = x, shape = x)]
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        biased: bool,
    ) -> FloatTensor<Self>;
    /// [`GpuOps::rope`] written heads first: (b, heads, t, d), contiguous, the layout
    /// attention reads, so that no copy moves the heads axis.
    #[fusion(dtype = x, shape = {
        let mut shape = x.clone();
        shape.swap(1, 2);
        shape
    })]
    fn rope_heads_first(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        biased: bool,
    ) -> FloatTensor<Self>;
    /// Flash attention: `softmax(q·kᵀ + bias)·v` in f32, in `q`'s type, without the
    /// (m, s) scores ever reaching device memory, written in the projections' layout (b, t,
    /// h, d) (`h = kv·m/t` query heads), which the output projection reads as it is. `q`:
    /// (b, kv, m, d) with the scale applied and `m` a multiple of `t` (row `j` is query `j
    /// mod t` of query head `i·m/t + j / t`, the `m / t` query heads sharing kv head `i`
    /// folded into its rows); `k`: (b, kv, s, d), `v`: (b, s, kv, d) as the projection gives
    /// it, both any strides; `v_bias`: (kv·d) in `v`'s type, the v projection's bias, added to
    /// each value as it loads when `biased`; `bias`: (b, t, s) additive, read only when
    /// `masked`; `d` ≤ [`super::fused::FLASH_MAX_HEAD_DIM`].
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = q, shape = attention_shape(q, *t))]
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        v_bias: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> FloatTensor<Self>;
    /// Each row's log-probability of its target under the softmax of `logits` (rows, vocab),
    /// and the distribution's entropy `−Σ p log p` (a constant: no gradient), both (rows) in
    /// f32, without the (rows, vocab) log-softmax in device memory. `targets`: (rows); a target
    /// outside the vocabulary gives −3e38 (WGSL has no infinity).
    #[fusion(meta = |logits, _targets| (rows_spec(logits, 1), rows_spec(logits, 1)))]
    fn token_logprobs(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The LM head and the token log-probabilities ([`super::fused::head_logprobs`]): each
    /// row's log-probability of its target under `softmax(x · w)` and the distribution's
    /// entropy (a constant), both (rows) in f32; `x` (rows, k), `w` (k, vocab), `chunk` rows
    /// of logits at a time: with more rows than that, the (rows, vocab) logits are never
    /// whole in device memory (and are recomputed in the backward pass).
    #[fusion(meta = |x, _w, _targets, _chunk| (rows_spec(x, 1), rows_spec(x, 1)))]
    fn head_logprobs(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The backward passes of [`GpuOps`], one kernel each, for its autodiff implementation.
#[backend_extension(Cube: cfg(feature = "gpu-kernels"), Fusion: cfg(feature = "fusion"))]
pub trait GpuGrads: Backend {
    /// The softmax's backward over the last dimension, `dx = y ⊙ (dy − Σ dy ⊙ y)`, in f32, in
    /// `y`'s type (the mask is a constant: no gradient).
    #[fusion(dtype = y, shape = y)]
    fn softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;
    /// SwiGLU's backward in one kernel, in f32: (`dy · up · σ(g)(1 + g(1 − σ(g)))` for `gate`
    /// when `gate_grad`, else one unwritten element; `dy · silu(g)` for `up`), each in
    /// `gate`'s type (the model gives `up` the same).
    #[fusion(meta = |gate, _up, _dy, gate_grad| (spec_or_one(gate, gate_grad), gate.clone()))]
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        gate_grad: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// RoPE's backward (the rotation's transpose): `dx_j = dy_j·cos_j + dy_p·sin_p` with
    /// `p = (j + d/2) mod d`, in f32, in `dy`'s type; shapes as [`GpuOps::rope`].
    #[fusion(dtype = dy, shape = dy)]
    fn rope_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// [`GpuGrads::rope_backward`] of [`GpuOps::rope_heads_first`]: `dy` (b, heads, t, d),
    /// the result in the input's (b, t, heads, d).
    #[fusion(dtype = dy, shape = {
        let mut shape = dy.clone();
        shape.swap(1, 2);
        shape
    })]
    fn rope_backward_heads_first(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// RMSNorm's backward in one kernel: the gradient for `x`, in f32, in `x`'s type: with
    /// `g = w ⊙ dy` and `r = sqrt(mean(x²) + eps)` per row, `dx = g / r − x · Σ(g ⊙ x) /
    /// (d · r³)`; and, when `weight_grad`, the weight's gradient in parts: (⌈rows /
    /// [`NORM_ROWS_PER_CUBE`]⌉, d) f32, each row `Σ dy ⊙ x̂` over a block of that many rows
    /// (x̂ the normalised `x` rounded to its type, as the forward multiplies it), whose sum
    /// over the blocks is the gradient (else one unwritten element).
    #[fusion(meta = |x, _weight, _dy, _eps, weight_grad| (x.clone(), norm_parts_spec(x, weight_grad)))]
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
        weight_grad: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// [`GpuOps::attention`] and each query row's softmax statistics, which its backward pass
    /// needs: (b·kv·m, 2) f32, the row's largest score `M` and `ln Σ exp(score − M)` (kept
    /// apart, not as their sum: a row whose every key is masked has `M` ≈ −1e30, which would
    /// absorb the logarithm).
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |q, _k, _v, _v_bias, _bias, _masked, _biased, t| (attention_spec(q, *t), rows_spec(q, 2)))]
    fn attention_with_stats(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        v_bias: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// Flash attention's backward pass (FlashAttention-2's: the probabilities recomputed from
    /// the row statistics one tile at a time), as `(dq, dk, dv)` in the types and shapes of
    /// `q`, `k`, `v`, contiguous (dv in the projection's layout, as v is given); `out` and
    /// `dout` in [`GpuOps::attention`]'s (b, t, h, d) (the mask is a constant: no gradient).
    /// With `Δᵢ = dOᵢ·Oᵢ`, `Pᵢⱼ = exp(Sᵢⱼ − Mᵢ − ln Σᵢ)` and `dSᵢⱼ = Pᵢⱼ (dOᵢ·vⱼ − Δᵢ)`:
    /// `dq = dS·k`, `dk = dSᵀ·q`, `dv = Pᵀ·dO`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = |q, k, v, _v_bias, _bias, _out, _stats, _dout, _masked, _biased, _t| (q.clone(), k.clone(), v.clone()))]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        v_bias: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// [`GpuOps::token_logprobs`] and each row's softmax statistics (rows, 2): the largest
    /// logit and `ln Σ exp(logit − max)`.
    #[fusion(meta = |logits, _targets| (rows_spec(logits, 1), rows_spec(logits, 1), rows_spec(logits, 2)))]
    fn token_logprobs_with_stats(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// The log-probabilities' backward pass: `dlogits = dlogp · (onehot(target) − softmax)`
    /// per row, in `logits`' type.
    #[fusion(dtype = logits, shape = logits)]
    fn token_logprobs_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        stats: FloatTensor<Self>,
        dlogp: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// A spec of `columns` f32 values per row of `x` (its last dimension the row), for burn's
/// fusion: (rows) for one, (rows, columns) otherwise.
#[cfg(feature = "fusion")]
fn rows_spec(
    x: &burn::backend::fusion::custom::TensorSpec,
    columns: usize,
) -> burn::backend::fusion::custom::TensorSpec {
    let rows = x.shape.num_elements() / x.shape[x.shape.num_dims() - 1].max(1);
    let shape = match columns {
        1 => Shape::new([rows]),
        _ => Shape::new([rows, columns]),
    };
    burn::backend::fusion::custom::TensorSpec::new(shape, burn::tensor::DType::F32)
}

/// `x`'s spec where `keep`, else one element of its type: an output a flag leaves unwritten.
#[cfg(feature = "fusion")]
fn spec_or_one(
    x: &burn::backend::fusion::custom::TensorSpec,
    keep: &bool,
) -> burn::backend::fusion::custom::TensorSpec {
    match keep {
        true => x.clone(),
        false => burn::backend::fusion::custom::TensorSpec::new(Shape::new([1]), x.dtype),
    }
}

/// The spec of [`GpuOps::attention`]'s output for `q`, for burn's fusion.
#[cfg(feature = "fusion")]
fn attention_spec(
    q: &burn::backend::fusion::custom::TensorSpec,
    t: usize,
) -> burn::backend::fusion::custom::TensorSpec {
    burn::backend::fusion::custom::TensorSpec::new(attention_shape(&q.shape, t), q.dtype)
}

/// [`GpuOps::attention`]'s output shape, (b, t, h, d), for `q` (b, kv, m, d) of `t` queries
/// per row: `h = kv·m/t`.
fn attention_shape(q: &Shape, t: usize) -> Shape {
    let (b, kv, m, d) = (q[0], q[1], q[2], q[3]);
    Shape::new([b, t, kv * m / t.max(1), d])
}

/// The spec of [`GpuGrads::rms_norm_backward`]'s weight-gradient parts, for burn's fusion.
#[cfg(feature = "fusion")]
fn norm_parts_spec(
    x: &burn::backend::fusion::custom::TensorSpec,
    weight_grad: &bool,
) -> burn::backend::fusion::custom::TensorSpec {
    let d = x.shape[x.shape.num_dims() - 1];
    let rows = x.shape.num_elements() / d.max(1);
    let shape = norm_parts_shape(rows, d, *weight_grad);
    burn::backend::fusion::custom::TensorSpec::new(shape, burn::tensor::DType::F32)
}

/// The shape of RMSNorm's weight-gradient parts for `rows` rows of `d`: a row per cube of
/// [`NORM_ROWS_PER_CUBE`] rows, or one unwritten element without the weight's gradient.
fn norm_parts_shape(rows: usize, d: usize, weight_grad: bool) -> Shape {
    match weight_grad {
        true => Shape::new([rows.div_ceil(NORM_ROWS_PER_CUBE), d]),
        false => Shape::new([1]),
    }
}

/// Rows of `x` per cube of RMSNorm's backward kernel when it also sums the weight's gradient:
/// each cube adds up its rows' `dy ⊙ x̂` per column in its units' registers and writes one row of parts,
/// so the (rows, d) products never reach device memory, while a batch of 8 × 512 tokens still
/// runs 512 cubes.
pub const NORM_ROWS_PER_CUBE: usize = 8;

/// Kernels without a backward pass, routed only for tensors without autodiff: inference
/// (decoding, drawing, the KV cache) and the optimiser's step.
#[backend_extension(Cube: cfg(feature = "gpu-kernels"), Fusion: cfg(feature = "fusion"))]
pub trait GpuDecode: Backend {
    /// Attention of one new query per row over the cached keys, flash-decoding style (the
    /// scores never leave the cube; one kernel, two where [`DecodeKernel::split`] cuts the
    /// keys across cubes): `softmax(q·kᵀ + bias)·v` in f32, in `q`'s type, in `q`'s shape.
    /// `q`: (b, kv, n_rep, d), the `n_rep` query heads of each kv head, or (b, 1, h, d) with
    /// the same elements (each sequence's h·d contiguous, the sequences any distance apart:
    /// a view into a packed projection's rows): with the scale applied, or,
    /// when `rotate`, as the projection gives it, RoPE applied on loading as the RoPE kernel
    /// does (`cos`, `sin`: (b, d) in `q`'s type with the scale folded in; `q_bias`: (kv·n_rep·d),
    /// added first, when `biased`); `k`, `v`: (b, kv, s, d), any strides (views of the cache's
    /// buffers); `bias`: (b, s) additive, read only when `masked`, or with `prefix` each
    /// sequence's count of leading padded keys, (b) in f32 (the keys before it masked); `d` ≤
    /// [`super::fused::DECODE_MAX_HEAD_DIM`]. Tensors a flag leaves unread may be any.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = q, shape = q)]
    fn decode_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        q_bias: FloatTensor<Self>,
        masked: bool,
        prefix: bool,
        rotate: bool,
        biased: bool,
    ) -> FloatTensor<Self>;
    /// `logits` (rows, vocab) with every entry that a filtered draw at temperature `1 /
    /// inv_temperature` leaves out set to −3e38 (f16: −65,504), in `logits`' type: outside the
    /// `top_k` most likely (0: no limit), past the shortest prefix by probability whose mass
    /// reaches `top_p` (1: no limit), or below `min_p` times the likeliest's probability (0: no
    /// floor). The order is probability descending, then index ascending, as on the host.
    #[fusion(dtype = logits, shape = logits)]
    fn filter_logits(
        logits: FloatTensor<Self>,
        inv_temperature: f64,
        top_k: usize,
        top_p: f64,
        min_p: f64,
    ) -> FloatTensor<Self>;
    /// A decode step's keys and values into a layer's KV cache in one kernel: RoPE on
    /// `k + k_bias` and `v + v_bias` (biases (kv·d), read when `biased`), from the projections'
    /// (b, t, kv, d) layout, written at positions `len..len + t` of the (b, kv, capacity, d)
    /// buffers `k_cache`, `v_cache`, in place when they are uniquely owned (else copied
    /// first); returns the buffers. `cos`, `sin`: (b, t, 1, d) as [`GpuOps::rope`]'s.
    #[fusion(meta = |k_cache, v_cache, _k, _v, _cos, _sin, _k_bias, _v_bias, _biased, _len| (k_cache.clone(), v_cache.clone()))]
    #[allow(clippy::too_many_arguments)]
    fn append_kv(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        k_bias: FloatTensor<Self>,
        v_bias: FloatTensor<Self>,
        biased: bool,
        len: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// One AdamW step for one parameter in one kernel, as burn's `AdamW` computes it op by
    /// op: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, then
    /// `p ← p·(1 − lr·wd) − lr·(m/c₁) / (√(v/c₂) + ε)` with `c = 1 − βᵗ`. `param`, `grad`,
    /// `m`, `v` of one shape and type; `param`, `m`, `v` are updated in place when nothing
    /// else holds them (else copied first) and returned. `scalars`: see [`AdamWScalars`].
    #[fusion(meta = |param, _grad, m, v, _scalars| (param.clone(), m.clone(), v.clone()))]
    fn adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scalars: AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// One draw per row of `weights_from` (rows, vocab), in one kernel: the first token whose
    /// cumulative weight `exp((x − max)·inv_temperature)`, in vocabulary order, exceeds
    /// `uniforms[row]` (rows, f32, in [0, 1)) times the row's total (the host sampler's inverse
    /// CDF; entries at −3e38 or −65,504 in f16, a filter's leavings, weigh nothing). Returns the
    /// tokens as f32 (exact below 2²⁴) and, when `logprobs`, their log-probabilities under the
    /// softmax of `logits` (the unfiltered row at temperature 1; else zeros), each (rows). Unless
    /// `filtered`, `weights_from` is `logits` itself, whose maximum (and at temperature 1
    /// normaliser) the draw has computed already.
    #[fusion(meta = |weights_from, _logits, _uniforms, _inv_temperature, _logprobs, _filtered| (rows_spec(weights_from, 1), rows_spec(weights_from, 1)))]
    fn sample(
        weights_from: FloatTensor<Self>,
        logits: FloatTensor<Self>,
        uniforms: FloatTensor<Self>,
        inv_temperature: f64,
        logprobs: bool,
        filtered: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Most units per cube of the row kernels.
const ROW_UNITS: usize = 256;
/// Units per cube of the elementwise kernel.
const ELEMENT_UNITS: u32 = 256;
/// The most cubes along one grid axis.
const GRID_AXIS: usize = 65_535;

impl GpuOps for CubeBackend {
    fn add_rms_norm(
        x: CubeTensor,
        residual: CubeTensor,
        weight: CubeTensor,
        eps: f64,
    ) -> (CubeTensor, CubeTensor) {
        let (sum, out) = rms_norm_launch(x, Some(residual), weight, eps);
        (sum.expect("asked for"), out)
    }

    fn masked_softmax(x: CubeTensor, bias: CubeTensor) -> CubeTensor {
        let [_, kv, m, _] = dims::<4>(&x);
        let t = dims::<3>(&bias)[1];
        softmax_rows(x, Some((bias, kv * m, t)))
    }

    fn softmax(x: CubeTensor) -> CubeTensor {
        softmax_rows(x, None)
    }

    fn swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        // Gate and up may be the two halves of one packed projection's output.
        let lead = gate.meta.shape().len() - 1;
        let (gate, gate_stride) = strided_rows(gate, lead);
        let (up, up_stride) = strided_rows(up, lead);
        let out = like(&gate);
        let n = gate.meta.shape().num_elements();
        let width = gate.meta.shape()[lead];
        swiglu_kernel::launch(
            &gate.client,
            grid(n.div_ceil(ELEMENT_UNITS as usize)),
            CubeDim::new_1d(ELEMENT_UNITS),
            gate.clone().into_tensor_arg(),
            up.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n,
            width,
            gate_stride,
            up_stride,
            [
                dtype_to_storage_type(gate.dtype),
                dtype_to_storage_type(up.dtype),
            ],
        );
        out
    }

    fn rope(
        x: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        bias: CubeTensor,
        biased: bool,
    ) -> CubeTensor {
        rope_launch(x, cos, sin, biased.then_some(bias), false, false)
    }

    fn rope_heads_first(
        x: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        bias: CubeTensor,
        biased: bool,
    ) -> CubeTensor {
        rope_launch(x, cos, sin, biased.then_some(bias), false, true)
    }

    fn attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        v_bias: CubeTensor,
        bias: CubeTensor,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> CubeTensor {
        flash_forward(q, k, v, v_bias, bias, masked, biased, t).0
    }

    fn token_logprobs(logits: CubeTensor, targets: CubeTensor) -> (CubeTensor, CubeTensor) {
        let (logp, entropy, _) = logprobs_forward(logits, targets);
        (logp, entropy)
    }

    fn head_logprobs(
        x: CubeTensor,
        w: CubeTensor,
        targets: CubeTensor,
        chunk: usize,
    ) -> (CubeTensor, CubeTensor) {
        let (logp, entropy, _, _) = head_forward::<Self>(x, w, targets, chunk);
        (logp, entropy)
    }

    fn rms_norm(x: CubeTensor, weight: CubeTensor, eps: f64) -> CubeTensor {
        rms_norm_launch(x, None, weight, eps).1
    }
}

impl GpuGrads for CubeBackend {
    fn softmax_backward(y: CubeTensor, dy: CubeTensor) -> CubeTensor {
        let (y, dy) = (into_contiguous(y), into_contiguous(dy));
        let (rows, s) = row_layout(&y);
        let out = like(&y);
        let units = row_units(s);
        softmax_backward_kernel::launch(
            &y.client,
            grid(rows),
            CubeDim::new_1d(units as u32),
            y.clone().into_tensor_arg(),
            dy.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows,
            s,
            units,
            [
                dtype_to_storage_type(y.dtype),
                dtype_to_storage_type(dy.dtype),
            ],
        );
        out
    }

    fn swiglu_backward(
        gate: CubeTensor,
        up: CubeTensor,
        dy: CubeTensor,
        gate_grad: bool,
    ) -> (CubeTensor, CubeTensor) {
        let (gate, up, dy) = (
            into_contiguous(gate),
            into_contiguous(up),
            into_contiguous(dy),
        );
        let (d_gate, d_up) = (like_or_one(&gate, gate_grad), like(&gate));
        let n = gate.meta.shape().num_elements();
        swiglu_backward_kernel::launch(
            &gate.client,
            grid(n.div_ceil(ELEMENT_UNITS as usize)),
            CubeDim::new_1d(ELEMENT_UNITS),
            gate.clone().into_tensor_arg(),
            up.clone().into_tensor_arg(),
            dy.clone().into_tensor_arg(),
            d_gate.clone().into_tensor_arg(),
            d_up.clone().into_tensor_arg(),
            n,
            gate_grad,
            [
                dtype_to_storage_type(gate.dtype),
                dtype_to_storage_type(dy.dtype),
                dtype_to_storage_type(up.dtype),
            ],
        );
        (d_gate, d_up)
    }

    fn rope_backward(dy: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        rope_launch(dy, cos, sin, None, true, false)
    }

    fn rope_backward_heads_first(dy: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        rope_launch(dy, cos, sin, None, true, true)
    }

    fn rms_norm_backward(
        x: CubeTensor,
        weight: CubeTensor,
        dy: CubeTensor,
        eps: f64,
        weight_grad: bool,
    ) -> (CubeTensor, CubeTensor) {
        let (x, weight, dy) = (
            into_contiguous(x),
            into_contiguous(weight),
            into_contiguous(dy),
        );
        let (rows, d) = row_layout(&x);
        let out = like(&x);
        let units = row_units(d);
        let per_cube = if weight_grad { NORM_ROWS_PER_CUBE } else { 1 };
        let cubes = rows.div_ceil(per_cube);
        let parts = empty_device_contiguous_dtype(
            x.client.clone(),
            x.device.clone(),
            norm_parts_shape(rows, d, weight_grad),
            burn::tensor::DType::F32,
        );
        rms_norm_backward_kernel::launch(
            &x.client,
            grid(cubes),
            CubeDim::new_1d(units as u32),
            x.clone().into_tensor_arg(),
            weight.clone().into_tensor_arg(),
            dy.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            parts.clone().into_tensor_arg(),
            rows,
            d,
            eps as f32,
            units,
            per_cube,
            d.div_ceil(units),
            weight_grad,
            [
                dtype_to_storage_type(x.dtype),
                dtype_to_storage_type(weight.dtype),
                dtype_to_storage_type(dy.dtype),
            ],
        );
        (out, parts)
    }

    fn token_logprobs_with_stats(
        logits: CubeTensor,
        targets: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        logprobs_forward(logits, targets)
    }

    fn token_logprobs_backward(
        logits: CubeTensor,
        targets: CubeTensor,
        stats: CubeTensor,
        dlogp: CubeTensor,
    ) -> CubeTensor {
        let (logits, targets, stats, dlogp) = (
            into_contiguous(logits),
            into_contiguous(targets),
            into_contiguous(stats),
            into_contiguous(dlogp),
        );
        let vocab = row_layout(&logits).1;
        let n = logits.meta.shape().num_elements();
        let dtypes = [
            dtype_to_storage_type(logits.dtype),
            dtype_to_storage_type(dlogp.dtype),
            dtype_to_storage_type(targets.dtype),
        ];
        // Logits nothing else holds (the head's, consumed by its backward pass) take their
        // gradient in place: no second (rows, vocab) block.
        if logits.can_mut() {
            logprobs_backward_in_place_kernel::launch(
                &logits.client,
                grid(n.div_ceil(ELEMENT_UNITS as usize)),
                CubeDim::new_1d(ELEMENT_UNITS),
                logits.clone().into_tensor_arg(),
                targets.into_tensor_arg(),
                stats.into_tensor_arg(),
                dlogp.into_tensor_arg(),
                n,
                vocab,
                dtypes,
            );
            return logits;
        }
        let out = like(&logits);
        logprobs_backward_kernel::launch(
            &logits.client,
            grid(n.div_ceil(ELEMENT_UNITS as usize)),
            CubeDim::new_1d(ELEMENT_UNITS),
            logits.clone().into_tensor_arg(),
            targets.clone().into_tensor_arg(),
            stats.into_tensor_arg(),
            dlogp.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n,
            vocab,
            dtypes,
        );
        out
    }

    fn attention_with_stats(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        v_bias: CubeTensor,
        bias: CubeTensor,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> (CubeTensor, CubeTensor) {
        flash_forward(q, k, v, v_bias, bias, masked, biased, t)
    }

    fn attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        v_bias: CubeTensor,
        bias: CubeTensor,
        out: CubeTensor,
        stats: CubeTensor,
        dout: CubeTensor,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (q, out, dout, stats) = (
            into_contiguous(q),
            into_contiguous(out),
            into_contiguous(dout),
            into_contiguous(stats),
        );
        let bias = mask_contiguous(bias, masked);
        let v_bias = mask_contiguous(v_bias, biased);
        let [b, kv, m, d] = dims::<4>(&q);
        let s = dims::<4>(&k)[2];
        // dv in v's (b, s, kv, d), contiguous; v read as (b, kv, s, d), as k is.
        let (dq, dk, dv) = (like(&q), like(&k), like(&v));
        let mut v = v;
        v.meta.swap(1, 2);
        let delta = f32_rows(&q, [b * kv * m]);
        let block = flash_block(&q, d);
        let types = [
            dtype_to_storage_type(q.dtype),
            dtype_to_storage_type(bias.dtype),
            dtype_to_storage_type(dout.dtype),
        ];
        flash_attention_dq_kernel::launch(
            &q.client,
            grid(b * kv * m.div_ceil(block)),
            CubeDim::new_1d(flash_units(block) as u32),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            v_bias.clone().into_tensor_arg(),
            bias.clone().into_tensor_arg(),
            out.into_tensor_arg(),
            dout.clone().into_tensor_arg(),
            stats.clone().into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            b * kv,
            kv,
            m,
            t,
            s,
            d,
            block,
            masked,
            biased,
            types,
        );
        flash_attention_dkv_kernel::launch(
            &q.client,
            grid(b * kv * s.div_ceil(block)),
            CubeDim::new_1d(flash_units(block) as u32),
            q.clone().into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            v_bias.into_tensor_arg(),
            bias.into_tensor_arg(),
            dout.into_tensor_arg(),
            stats.into_tensor_arg(),
            delta.into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            b * kv,
            kv,
            m,
            t,
            s,
            d,
            block,
            masked,
            biased,
            types,
        );
        (dq, dk, dv)
    }
}

/// [`GpuGrads::token_logprobs_with_stats`] on the cubecl backends: (logp, entropy, stats).
fn logprobs_forward(
    logits: CubeTensor,
    targets: CubeTensor,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (logits, targets) = (into_contiguous(logits), into_contiguous(targets));
    let (rows, vocab) = row_layout(&logits);
    let (logp, entropy) = (f32_rows(&logits, [rows]), f32_rows(&logits, [rows]));
    let stats = f32_rows(&logits, [rows, 2]);
    let units = row_units(vocab);
    logprobs_kernel::launch(
        &logits.client,
        grid(rows),
        CubeDim::new_1d(units as u32),
        logits.clone().into_tensor_arg(),
        targets.clone().into_tensor_arg(),
        logp.clone().into_tensor_arg(),
        entropy.clone().into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        rows,
        vocab,
        units,
        [
            dtype_to_storage_type(logits.dtype),
            dtype_to_storage_type(targets.dtype),
        ],
    );
    (logp, entropy, stats)
}

/// Rows `start..start + n` of `rows` chunks of `chunk` each: (start, n) per chunk.
fn row_chunks(rows: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..rows)
        .step_by(chunk)
        .map(move |start| (start, chunk.min(rows - start)))
}

/// What [`head_forward`] gives: (rows) log-probabilities and entropies, the (rows, 2)
/// statistics of [`GpuGrads::token_logprobs_with_stats`], and the logits when one chunk.
type Head<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
);

/// [`GpuOps::head_logprobs`] through burn's matmul and the log-prob kernel, chunk by chunk.
/// Each chunk's logits are freed once their row statistics are taken, unless there is only
/// one (then they are returned).
fn head_forward<B: GpuGrads>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    targets: IntTensor<B>,
    chunk: usize,
) -> Head<B> {
    let rows = x.shape()[0];
    if rows <= chunk {
        let logits = B::float_matmul(x, w);
        let (logp, entropy, stats) = B::token_logprobs_with_stats(logits.clone(), targets);
        return (logp, entropy, stats, Some(logits));
    }
    let (mut logp, mut entropy, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    for (start, n) in row_chunks(rows, chunk) {
        let range = [burn::tensor::Slice::from(start..start + n)];
        let logits = B::float_matmul(B::float_slice(x.clone(), &range), w.clone());
        let (lp, ent, st) =
            B::token_logprobs_with_stats(logits, B::int_slice(targets.clone(), &range));
        logp.push(lp);
        entropy.push(ent);
        stats.push(st);
    }
    (
        B::float_cat(logp, 0),
        B::float_cat(entropy, 0),
        B::float_cat(stats, 0),
        None,
    )
}

/// What [`head_backward`] reads: x, w, the targets, the statistics and the kept logits.
type HeadState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    IntTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
);

/// The backward pass of [`head_forward`], chunk by chunk: the chunk's logits (kept, or
/// recomputed),
/// `dlogits` from [`GpuGrads::token_logprobs_backward`], then `dx = dlogits · wᵀ` and
/// `dw += xᵀ · dlogits`, each only when asked for.
fn head_backward<B: GpuGrads>(
    (x, w, targets, stats, mut kept): HeadState<B>,
    dlogp: FloatTensor<B>,
    chunk: usize,
    want: (bool, bool),
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    let rows = x.shape()[0];
    let (mut dx, mut dw) = (Vec::new(), None::<FloatTensor<B>>);
    for (start, n) in row_chunks(rows, chunk) {
        let (xc, tc, sc, dc) = match rows <= chunk {
            true => (x.clone(), targets.clone(), stats.clone(), dlogp.clone()),
            false => {
                let range = [burn::tensor::Slice::from(start..start + n)];
                (
                    B::float_slice(x.clone(), &range),
                    B::int_slice(targets.clone(), &range),
                    B::float_slice(stats.clone(), &range),
                    B::float_slice(dlogp.clone(), &range),
                )
            }
        };
        let logits = match kept.take() {
            Some(logits) => logits,
            None => B::float_matmul(xc.clone(), w.clone()),
        };
        let dlogits = B::token_logprobs_backward(logits, tc, sc, dc);
        if want.0 {
            dx.push(B::float_matmul(
                dlogits.clone(),
                B::float_transpose(w.clone()),
            ));
        }
        if want.1 {
            let part = B::float_matmul(B::float_transpose(xc), dlogits);
            dw = Some(match dw {
                // Several chunks' parts add up in f32, not in a 16-bit type.
                Some(sum) => B::float_add(sum, B::float_cast(part, FloatDType::F32)),
                None if rows > chunk => B::float_cast(part, FloatDType::F32),
                None => part,
            });
        }
    }
    let dw = dw.map(|dw| match w.dtype() {
        dtype if dtype == dw.dtype() => dw,
        dtype => B::float_cast(dw, FloatDType::from(dtype)),
    });
    let dx = match dx.len() {
        0 => None,
        1 => dx.pop(),
        _ => Some(B::float_cat(dx, 0)),
    };
    (dx, dw)
}

/// [`GpuGrads::attention_with_stats`] on the cubecl backends.
#[allow(clippy::too_many_arguments)]
fn flash_forward(
    q: CubeTensor,
    k: CubeTensor,
    mut v: CubeTensor,
    v_bias: CubeTensor,
    bias: CubeTensor,
    masked: bool,
    biased: bool,
    t: usize,
) -> (CubeTensor, CubeTensor) {
    let q = into_contiguous(q);
    let bias = mask_contiguous(bias, masked);
    let v_bias = mask_contiguous(v_bias, biased);
    let [b, kv, m, d] = dims::<4>(&q);
    let s = dims::<4>(&k)[2];
    let out = empty_device_contiguous_dtype(
        q.client.clone(),
        q.device.clone(),
        attention_shape(q.meta.shape(), t),
        q.dtype,
    );
    v.meta.swap(1, 2); // (b, kv, s, d), as the kernel reads k
    let stats = f32_rows(&q, [b * kv * m, 2]);
    let block = flash_block(&q, d);
    flash_attention_kernel::launch(
        &q.client,
        grid(b * kv * m.div_ceil(block)),
        CubeDim::new_1d(flash_units(block) as u32),
        q.clone().into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        v_bias.into_tensor_arg(),
        bias.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        stats.clone().into_tensor_arg(),
        b * kv,
        kv,
        m,
        t,
        s,
        d,
        block,
        masked,
        biased,
        [
            dtype_to_storage_type(q.dtype),
            dtype_to_storage_type(bias.dtype),
        ],
    );
    (out, stats)
}

/// An attention kernel's mask (or v's bias), contiguous when it is read (where its flag is off,
/// it stands for nothing).
fn mask_contiguous(bias: CubeTensor, masked: bool) -> CubeTensor {
    match masked {
        true => into_contiguous(bias),
        false => bias,
    }
}

/// An uninitialised f32 tensor of `shape` on `t`'s device (per-row statistics).
fn f32_rows<const D: usize>(t: &CubeTensor, shape: [usize; D]) -> CubeTensor {
    empty_device_contiguous_dtype(
        t.client.clone(),
        t.device.clone(),
        Shape::new(shape),
        burn::tensor::DType::F32,
    )
}

/// Shared memory of the flash kernels, in bytes, for `block` rows by `block` keys at head dim
/// `d`: four tiles of `block` rows (padded by one column against bank conflicts), two
/// `block × block` tiles of scores, weights or gradients, and two flags.
fn flash_shared_bytes(block: usize, d: usize) -> usize {
    4 * (4 * block * (d + 1) + 2 * block * block + 2)
}

/// The units of a flash kernel's cube for tiles of `block` rows and keys: one per 2 × 2 share
/// of the tile's pairs.
fn flash_units(block: usize) -> usize {
    block * block / 4
}

/// The flash kernels' tile size at head dim `d`: 16 (a cube of 64 units, [`flash_units`])
/// where the device's shared memory holds it, else 8 or 4.
fn flash_block(t: &CubeTensor, d: usize) -> usize {
    let limit = t.client.properties().hardware.max_shared_memory_size;
    [16, 8]
        .into_iter()
        .find(|&b| flash_shared_bytes(b, d) <= limit)
        .unwrap_or(4)
}

/// The decode attention kernel for `n_rep` query rows per kv head of dim `d` on `q`'s device
/// ([`DecodeKernel::plan`] with its units per cube and shared memory).
fn decode_kernel(q: &CubeTensor, n_rep: usize, d: usize) -> DecodeKernel {
    let hardware = &q.client.properties().hardware;
    DecodeKernel::plan(
        n_rep,
        d,
        hardware.max_units_per_cube as usize,
        hardware.max_shared_memory_size,
    )
}

impl GpuDecode for CubeBackend {
    fn decode_attention(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        bias: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        q_bias: CubeTensor,
        masked: bool,
        prefix: bool,
        rotate: bool,
        biased: bool,
    ) -> CubeTensor {
        // q may be a column slice of one packed projection's output: each sequence's heads
        // contiguous, `q_stride` apart.
        let (q, q_stride) = strided_rows(q, 1);
        let bias = mask_contiguous(bias, masked);
        let (cos, sin) = match rotate {
            true => (into_contiguous(cos), into_contiguous(sin)),
            false => (q.clone(), q.clone()),
        };
        let q_bias = match biased {
            true => into_contiguous(q_bias),
            false => q.clone(),
        };
        // q (b, kv, n_rep, d) or, as the projection gives it, (b, 1, h, d): the same elements.
        let [b, _, _, d] = dims::<4>(&q);
        let [_, kv, s, _] = dims::<4>(&k);
        let n_rep = q.meta.shape().num_elements() / (b * kv * d);
        let out = like(&q); // q's shape, contiguous
        let plan = decode_kernel(&q, n_rep, d);
        if let DecodeKernel::Group { tile } = plan {
            let groups = b * kv;
            let (chunks, chunk_keys) = match DecodeSplit::current() {
                DecodeSplit::Auto => plan.split(groups, s),
                DecodeSplit::Never => (1, s),
            };
            let split = chunks > 1;
            // Each chunk's normalised sums (groups, chunks, n_rep, d) and log-sum-exps where
            // the keys are split; a stand-in otherwise.
            let (part_out, part_lse) = match split {
                true => (
                    f32_rows(&q, [groups * chunks * n_rep * d]),
                    f32_rows(&q, [groups * chunks * n_rep]),
                ),
                false => (f32_rows(&q, [1]), f32_rows(&q, [1])),
            };
            decode_group_kernel::launch(
                &q.client,
                grid(groups * chunks),
                CubeDim::new_1d((n_rep * d) as u32),
                q.clone().into_tensor_arg(),
                k.clone().into_tensor_arg(),
                v.into_tensor_arg(),
                bias.clone().into_tensor_arg(),
                cos.into_tensor_arg(),
                sin.into_tensor_arg(),
                q_bias.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                part_out.clone().into_tensor_arg(),
                part_lse.clone().into_tensor_arg(),
                groups * chunks,
                kv,
                s,
                chunks,
                chunk_keys,
                q_stride,
                n_rep,
                d,
                tile,
                masked,
                prefix,
                rotate,
                biased,
                split,
                [
                    dtype_to_storage_type(q.dtype),
                    dtype_to_storage_type(bias.dtype),
                ],
            );
            if split {
                decode_combine_kernel::launch(
                    &q.client,
                    grid(groups * n_rep),
                    CubeDim::new_1d(d as u32),
                    part_out.into_tensor_arg(),
                    part_lse.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    groups * n_rep,
                    n_rep,
                    chunks,
                    d,
                    dtype_to_storage_type(q.dtype),
                );
            }
            return out;
        }
        let rows = b * kv * n_rep;
        let units = row_units(d);
        decode_attention_kernel::launch(
            &q.client,
            grid(rows),
            CubeDim::new_1d(units as u32),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.into_tensor_arg(),
            bias.clone().into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            q_bias.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows,
            kv,
            n_rep,
            s,
            d,
            q_stride,
            units,
            masked,
            prefix,
            rotate,
            biased,
            [
                dtype_to_storage_type(q.dtype),
                dtype_to_storage_type(bias.dtype),
            ],
        );
        out
    }

    fn filter_logits(
        logits: CubeTensor,
        inv_temperature: f64,
        top_k: usize,
        top_p: f64,
        min_p: f64,
    ) -> CubeTensor {
        let logits = into_contiguous(logits);
        let (rows, vocab) = row_layout(&logits);
        let out = like(&logits);
        let units = row_units(vocab);
        filter_kernel::launch(
            &logits.client,
            grid(rows),
            CubeDim::new_1d(units as u32),
            logits.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows,
            vocab,
            inv_temperature as f32,
            if top_k < vocab { top_k } else { 0 },
            top_p as f32,
            min_p as f32,
            units,
            dtype_to_storage_type(logits.dtype),
        );
        out
    }

    fn append_kv(
        k_cache: CubeTensor,
        v_cache: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        cos: CubeTensor,
        sin: CubeTensor,
        k_bias: CubeTensor,
        v_bias: CubeTensor,
        biased: bool,
        len: usize,
    ) -> (CubeTensor, CubeTensor) {
        let (k_cache, v_cache) = (writable(k_cache), writable(v_cache));
        // k and v may be column slices of one packed projection's output.
        let (k, k_stride) = strided_rows(k, 2);
        let (v, v_stride) = strided_rows(v, 2);
        let (cos, sin) = (into_contiguous(cos), into_contiguous(sin));
        let (k_bias, v_bias) = (into_contiguous(k_bias), into_contiguous(v_bias));
        let [_, t, kv, d] = dims::<4>(&k);
        let capacity = dims::<4>(&k_cache)[2];
        assert!(len + t <= capacity, "the cache has room for the step");
        let n = k.meta.shape().num_elements();
        append_kv_kernel::launch(
            &k.client,
            grid(n.div_ceil(ELEMENT_UNITS as usize)),
            CubeDim::new_1d(ELEMENT_UNITS),
            k.clone().into_tensor_arg(),
            v.into_tensor_arg(),
            cos.clone().into_tensor_arg(),
            sin.into_tensor_arg(),
            k_bias.into_tensor_arg(),
            v_bias.into_tensor_arg(),
            k_cache.clone().into_tensor_arg(),
            v_cache.clone().into_tensor_arg(),
            n,
            t,
            kv,
            d,
            capacity,
            len,
            k_stride,
            v_stride,
            biased,
            [
                dtype_to_storage_type(k.dtype),
                dtype_to_storage_type(cos.dtype),
            ],
        );
        (k_cache, v_cache)
    }

    fn adamw(
        param: CubeTensor,
        grad: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        s: AdamWScalars,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (param, m, v) = (writable(param), writable(m), writable(v));
        let grad = into_contiguous(grad);
        let n = param.meta.shape().num_elements();
        adamw_kernel::launch(
            &param.client,
            grid(n.div_ceil(ELEMENT_UNITS as usize)),
            CubeDim::new_1d(ELEMENT_UNITS),
            param.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            m.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            n,
            s.beta1,
            s.beta2,
            s.correction1,
            s.correction2,
            s.eps,
            s.lr,
            s.decay,
            dtype_to_storage_type(param.dtype),
        );
        (param, m, v)
    }

    fn sample(
        weights_from: CubeTensor,
        logits: CubeTensor,
        uniforms: CubeTensor,
        inv_temperature: f64,
        logprobs: bool,
        filtered: bool,
    ) -> (CubeTensor, CubeTensor) {
        let weights_from = into_contiguous(weights_from);
        let logits = into_contiguous(logits);
        let uniforms = into_contiguous(uniforms);
        let (rows, vocab) = row_layout(&weights_from);
        let (tokens, logp) = (
            f32_rows(&weights_from, [rows]),
            f32_rows(&weights_from, [rows]),
        );
        let units = row_units(vocab);
        sample_kernel::launch(
            &weights_from.client,
            grid(rows),
            CubeDim::new_1d(units as u32),
            weights_from.clone().into_tensor_arg(),
            logits.clone().into_tensor_arg(),
            uniforms.clone().into_tensor_arg(),
            tokens.clone().into_tensor_arg(),
            logp.clone().into_tensor_arg(),
            rows,
            vocab,
            inv_temperature as f32,
            units,
            logprobs,
            filtered,
            [
                dtype_to_storage_type(weights_from.dtype),
                dtype_to_storage_type(uniforms.dtype),
            ],
        );
        (tokens, logp)
    }
}

/// Register `grad` for `parent` when it is tracked (burn does not export the node type, so a
/// macro rather than a function).
macro_rules! register {
    ($grads:expr, $parent:expr, $grad:expr) => {
        if let Some(p) = $parent {
            $grads.register::<B>(p.id, $grad);
        }
    };
}

/// The softmax's backward, from its output (the mask, if any, is a constant).
#[derive(Debug)]
struct SoftmaxGrad;

impl<B: GpuGrads> Backward<B, 1> for SoftmaxGrad {
    /// The softmax output.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        register!(grads, parent, B::softmax_backward(ops.state, dy));
    }
}

/// `x`'s softmax (`bias`, a constant, added when given) recorded for its backward.
fn softmax_tracked<B: GpuOps + GpuGrads, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
) -> FloatTensor<Autodiff<B, C>> {
    let (x, node) = x.into_parts();
    let forward = |x| match bias {
        Some(bias) => B::masked_softmax(x, bias.into_primitive()),
        None => <B as GpuOps>::softmax(x),
    };
    match SoftmaxGrad.prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = forward(x);
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x)),
    }
}

/// Flash attention's backward node: the gradients of q, k, v and, as its fourth parent where
/// `biased`, v's bias (v's gradient summed over the rows: the bias is added to every row).
#[derive(Debug)]
struct AttentionGrad {
    masked: bool,
    biased: bool,
    t: usize,
}

/// (q, k, v, v's bias, mask, out, stats): the inputs, the output and its rows' softmax
/// statistics (the probabilities are recomputed, never kept).
type AttentionState<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

impl<B: GpuGrads, const N: usize> Backward<B, N> for AttentionGrad {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let (q, k, v, v_bias, bias, out, stats) = ops.state;
        let (dq, dk, dv) = B::attention_backward(
            q,
            k,
            v,
            v_bias,
            bias,
            out,
            stats,
            dout,
            self.masked,
            self.biased,
            self.t,
        );
        let parents = ops.parents;
        // v's bias, where it is a parent (N = 4) and trains (a frozen one, as under LoRA, is
        // `None`: no sum).
        let pb = parents.get(3).cloned().flatten();
        if pb.is_some() {
            // dv: (b, s, kv, d), contiguous.
            let shape = dv.shape();
            let width = shape[2] * shape[3];
            let rows = Shape::new([shape.num_elements() / width, width]);
            let summed = B::float_sum_dim(B::float_reshape(dv.clone(), rows), 0);
            register!(grads, pb, B::float_reshape(summed, Shape::new([width])));
        }
        register!(grads, parents[0].clone(), dq);
        register!(grads, parents[1].clone(), dk);
        register!(grads, parents[2].clone(), dv);
    }
}

/// (q, k, v, v's bias, mask): [`GpuOps::attention`]'s tensors.
type AttentionInputs<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

/// [`GpuOps::attention`] under autodiff with `N` tracked inputs: q, k, v, and v's bias when
/// the node's `biased`.
fn attention_tracked<B: GpuOps + GpuGrads, C: CheckpointStrategy, const N: usize>(
    grad: AttentionGrad,
    nodes: [burn::backend::autodiff::ops::NodeGuard; N],
    (q, k, v, v_bias, bias): AttentionInputs<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let AttentionGrad { masked, biased, t } = grad;
    match grad.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (out, stats) = B::attention_with_stats(
                q.clone(),
                k.clone(),
                v.clone(),
                v_bias.clone(),
                bias.clone(),
                masked,
                biased,
                t,
            );
            prep.finish((q, k, v, v_bias, bias, out.clone(), stats), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(<B as GpuOps>::attention(
            q, k, v, v_bias, bias, masked, biased, t,
        )),
    }
}

/// RoPE on `x` (and `bias`, when given) recorded for its backward: the rotation's transpose
/// for `x`, summed over (b, t) for the bias; `heads_first` as [`GpuOps::rope_heads_first`].
fn rope_tracked<B: GpuOps + GpuGrads, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    cos: FloatTensor<Autodiff<B, C>>,
    sin: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    heads_first: bool,
) -> FloatTensor<Autodiff<B, C>> {
    /// `dx` from `dy` with the rotation's transpose.
    fn backward<B: GpuGrads>(
        dy: FloatTensor<B>,
        (cos, sin): (FloatTensor<B>, FloatTensor<B>),
        heads_first: bool,
    ) -> FloatTensor<B> {
        match heads_first {
            true => B::rope_backward_heads_first(dy, cos, sin),
            false => B::rope_backward(dy, cos, sin),
        }
    }
    fn forward<B: GpuOps>(
        x: FloatTensor<B>,
        (cos, sin): (FloatTensor<B>, FloatTensor<B>),
        bias: Option<FloatTensor<B>>,
        heads_first: bool,
    ) -> FloatTensor<B> {
        let biased = bias.is_some();
        // Unbiased, `x` stands in for the bias argument (never read).
        let bias = bias.unwrap_or_else(|| x.clone());
        match heads_first {
            true => B::rope_heads_first(x, cos, sin, bias, biased),
            false => B::rope(x, cos, sin, bias, biased),
        }
    }

    #[derive(Debug)]
    struct RopeGrad {
        heads_first: bool,
    }

    impl<B: GpuGrads> Backward<B, 1> for RopeGrad {
        /// (cos, sin): constants.
        type State = (FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let dy = grads.consume::<B>(&ops.node);
            let [parent] = ops.parents;
            register!(
                grads,
                parent,
                backward::<B>(dy, ops.state, self.heads_first)
            );
        }
    }

    #[derive(Debug)]
    struct BiasedRopeGrad {
        heads_first: bool,
    }

    impl<B: GpuGrads> Backward<B, 2> for BiasedRopeGrad {
        /// (cos, sin): constants.
        type State = (FloatTensor<B>, FloatTensor<B>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let dy = grads.consume::<B>(&ops.node);
            let [px, pb] = ops.parents;
            let dx = backward::<B>(dy, ops.state, self.heads_first); // (b, t, heads, d)
            if pb.is_some() {
                let shape = dx.shape();
                let width = shape[2] * shape[3];
                let rows = Shape::new([shape.num_elements() / width, width]);
                let summed = B::float_sum_dim(B::float_reshape(dx.clone(), rows), 0);
                register!(grads, pb, B::float_reshape(summed, Shape::new([width])));
            }
            register!(grads, px, dx);
        }
    }

    let (x, x_node) = x.into_parts();
    let tables = (cos.into_primitive(), sin.into_primitive());
    let Some(bias) = bias else {
        return match (RopeGrad { heads_first })
            .prepare::<C>([x_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward::<B>(x, tables.clone(), None, heads_first);
                prep.finish(tables, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward::<B>(x, tables, None, heads_first)),
        };
    };
    let (bias, bias_node) = bias.into_parts();
    match (BiasedRopeGrad { heads_first })
        .prepare::<C>([x_node, bias_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = forward::<B>(x, tables.clone(), Some(bias), heads_first);
            prep.finish(tables, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward::<B>(x, tables, Some(bias), heads_first)),
    }
}

/// RMSNorm's backward node, holding its eps: the gradients of `x` and of the weight from one
/// kernel ([`GpuGrads::rms_norm_backward`]) and a sum over its per-block parts.
#[derive(Debug)]
struct RmsNormGrad(f64);

impl<B: GpuOps + GpuGrads> Backward<B, 2> for RmsNormGrad {
    /// (x, weight)
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        let [px, pw] = ops.parents;
        let shape = w.shape();
        let dtype = w.dtype();
        let (dx, parts) = B::rms_norm_backward(x, w, dy, self.0, pw.is_some());
        if pw.is_some() {
            // dw = Σ over rows of dy ⊙ x̂, x̂ the normalised x in its type (the
            // forward's `weight * x̂.to(dtype)`), summed in f32: the kernel's parts,
            // one per block of rows, summed here, in the weight's type.
            let dw = B::float_reshape(B::float_sum_dim(parts, 0), shape);
            let dw = match dw.dtype() == dtype {
                true => dw,
                false => B::float_cast(dw, dtype.into()),
            };
            register!(grads, pw, dw);
        }
        register!(grads, px, dx);
    }
}

/// The residual stream's add, fused into the norm after it ([`GpuOps::add_rms_norm`]): its
/// gradient is the sum's, for both summands.
#[derive(Debug)]
struct ResidualAddGrad;

impl<B: Backend> Backward<B, 2> for ResidualAddGrad {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [px, pr] = ops.parents;
        register!(grads, px, dy.clone());
        register!(grads, pr, dy);
    }
}

impl<B: GpuOps + GpuGrads, C: CheckpointStrategy> GpuOps for Autodiff<B, C> {
    fn masked_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_tracked::<B, C>(x, Some(bias))
    }

    fn softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_tracked::<B, C>(x, None)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SwiGluGrad;

        impl<B: GpuGrads> Backward<B, 2> for SwiGluGrad {
            /// (gate, up)
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dy = grads.consume::<B>(&ops.node);
                let (gate, up) = ops.state;
                let [pg, pu] = ops.parents;
                let (d_gate, d_up) = B::swiglu_backward(gate, up, dy, pg.is_some());
                register!(grads, pg, d_gate);
                register!(grads, pu, d_up);
            }
        }

        let (gate, gate_node) = gate.into_parts();
        let (up, up_node) = up.into_parts();
        match SwiGluGrad
            .prepare::<C>([gate_node, up_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::swiglu(gate.clone(), up.clone());
                prep.finish((gate, up), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate, up)),
        }
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let (x, x_node) = x.into_parts();
        let (w, w_node) = weight.into_parts();
        match RmsNormGrad(eps)
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::rms_norm(x.clone(), w.clone(), eps);
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(x, w, eps)),
        }
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (x, x_node) = x.into_parts();
        let (r, r_node) = residual.into_parts();
        let (w, w_node) = weight.into_parts();
        let (sum, normed) = B::add_rms_norm(x, r, w.clone(), eps);
        // Kept, not recomputed: the sum is the next residual and the norm's saved input.
        let sum = ResidualAddGrad
            .prepare::<C>([x_node, r_node])
            .compute_bound()
            .stateless(sum);
        let (saved, sum_node) = sum.clone().into_parts();
        let normed = match RmsNormGrad(eps)
            .prepare::<C>([sum_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((saved, w), normed),
            OpsKind::UnTracked(prep) => prep.finish(normed),
        };
        (sum, normed)
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        biased: bool,
    ) -> FloatTensor<Self> {
        rope_tracked::<B, C>(x, cos, sin, biased.then_some(bias), false)
    }

    fn rope_heads_first(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        biased: bool,
    ) -> FloatTensor<Self> {
        rope_tracked::<B, C>(x, cos, sin, biased.then_some(bias), true)
    }

    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        v_bias: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        masked: bool,
        biased: bool,
        t: usize,
    ) -> FloatTensor<Self> {
        let (q, q_node) = q.into_parts();
        let (k, k_node) = k.into_parts();
        let (v, v_node) = v.into_parts();
        let bias = bias.into_primitive(); // a constant: no gradient flows to the mask
        let grad = AttentionGrad { masked, biased, t };
        match biased {
            true => {
                let (v_bias, b_node) = v_bias.into_parts();
                let nodes = [q_node, k_node, v_node, b_node];
                attention_tracked::<B, C, 4>(grad, nodes, (q, k, v, v_bias, bias))
            }
            false => {
                // Unbiased, the stand-in for v's bias is never read and has no gradient.
                let v_bias = v_bias.into_primitive();
                let nodes = [q_node, k_node, v_node];
                attention_tracked::<B, C, 3>(grad, nodes, (q, k, v, v_bias, bias))
            }
        }
    }

    fn token_logprobs(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct LogprobsGrad;

        impl<B: GpuGrads> Backward<B, 1> for LogprobsGrad {
            /// (logits, targets, stats): the softmax is recomputed from the statistics, never
            /// kept.
            type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dlogp = grads.consume::<B>(&ops.node);
                let (logits, targets, stats) = ops.state;
                let [parent] = ops.parents;
                let dlogits = B::token_logprobs_backward(logits, targets, stats, dlogp);
                register!(grads, parent, dlogits);
            }
        }

        let (logits, node) = logits.into_parts();
        let constant = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        match LogprobsGrad.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (logp, entropy, stats) =
                    B::token_logprobs_with_stats(logits.clone(), targets.clone());
                let logp = prep.finish((logits, targets, stats), logp);
                (logp, constant(entropy))
            }
            OpsKind::UnTracked(prep) => {
                let (logp, entropy) = <B as GpuOps>::token_logprobs(logits, targets);
                (prep.finish(logp), constant(entropy))
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
        struct HeadGrad(usize);

        impl<B: GpuGrads> Backward<B, 2> for HeadGrad {
            /// (x, w, targets, stats, the logits when one chunk): each chunk's logits are
            /// otherwise recomputed.
            type State = HeadState<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let dlogp = grads.consume::<B>(&ops.node);
                let [px, pw] = ops.parents;
                let want = (px.is_some(), pw.is_some());
                let (dx, dw) = head_backward::<B>(ops.state, dlogp, self.0, want);
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
        let constant = <Autodiff<B, C> as AutodiffBackend>::from_inner;
        match HeadGrad(chunk)
            .prepare::<C>([x_node, w_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (logp, entropy, stats, logits) =
                    head_forward::<B>(x.clone(), w.clone(), targets.clone(), chunk);
                let logp = prep.finish((x, w, targets, stats, logits), logp);
                (logp, constant(entropy))
            }
            OpsKind::UnTracked(prep) => {
                let (logp, entropy) = <B as GpuOps>::head_logprobs(x, w, targets, chunk);
                (prep.finish(logp), constant(entropy))
            }
        }
    }
}

/// `t` as a contiguous tensor a kernel may write in place: itself where nothing else holds its
/// buffer (as burn's `slice_assign` decides), else a copy, announced by a debug event with
/// the target [`fused::COPY_EVENTS`] (a weight copied by every optimiser step, a KV cache by every
/// decode step, is memory traffic a caller can avoid by letting go of its handle).
fn writable(t: CubeTensor) -> CubeTensor {
    if !t.is_contiguous() {
        into_contiguous(t)
    } else if t.can_mut() {
        t
    } else {
        let bytes = t.meta.shape().num_elements() * t.dtype.size();
        tracing::debug!(
            target: fused::COPY_EVENTS,
            bytes,
            "a kernel that writes in place copies a buffer held elsewhere"
        );
        t.copy()
    }
}

/// RMSNorm over the last dimension of `x`, or of `x + residual` when given: (the sum, when
/// asked for, and) the normalised rows times `weight`.
fn rms_norm_launch(
    x: CubeTensor,
    residual: Option<CubeTensor>,
    weight: CubeTensor,
    eps: f64,
) -> (Option<CubeTensor>, CubeTensor) {
    let (x, weight) = (into_contiguous(x), into_contiguous(weight));
    let add = residual.is_some();
    // The sum goes into `x`'s buffer where nothing else holds it, as burn's add does.
    let in_place = add && x.can_mut();
    // Without a residual, `x` stands in for it and one element for the sum (neither is read or
    // written); adding in place, the residual stands in for `x` (unread): an output must not
    // alias an input.
    let residual = residual.map_or_else(|| x.clone(), into_contiguous);
    let (rows, d) = row_layout(&x);
    let out = like(&x);
    let (x, sum) = match in_place {
        true => (residual.clone(), x),
        false => {
            let sum = like_or_one(&x, add);
            (x, sum)
        }
    };
    let units = row_units(d);
    rms_norm_kernel::launch(
        &x.client,
        grid(rows),
        CubeDim::new_1d(units as u32),
        x.clone().into_tensor_arg(),
        residual.into_tensor_arg(),
        weight.clone().into_tensor_arg(),
        sum.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        d,
        eps as f32,
        units,
        add,
        in_place,
        [
            dtype_to_storage_type(x.dtype),
            dtype_to_storage_type(weight.dtype),
        ],
    );
    (add.then_some(sum), out)
}

/// RoPE on `x` (b, t, heads, d), plus `bias` (heads·d) first when given, with (b, t, 1, d)
/// tables, or its transpose (the backward). `heads_first`: the rotated side is (b, heads, t, d)
/// (the forward's output, the backward's input).
fn rope_launch(
    x: CubeTensor,
    cos: CubeTensor,
    sin: CubeTensor,
    bias: Option<CubeTensor>,
    transpose: bool,
    heads_first: bool,
) -> CubeTensor {
    // Forward, x may be a column slice of a packed projection's output (its (b, t) rows
    // `x_stride` apart); the backward's gradient is read contiguous.
    let (x, x_stride) = match transpose {
        false => strided_rows(x, 2),
        true => {
            let x = into_contiguous(x);
            let stride = dims::<4>(&x)[2] * dims::<4>(&x)[3];
            (x, stride)
        }
    };
    let (cos, sin) = (into_contiguous(cos), into_contiguous(sin));
    let biased = bias.is_some();
    // Unbiased, `x` stands in for the bias argument (the kernel never reads it).
    let bias = bias.map_or_else(|| x.clone(), into_contiguous);
    let shape = dims::<4>(&x);
    let [b, t, heads, d] = match heads_first && transpose {
        true => [shape[0], shape[2], shape[1], shape[3]],
        false => shape,
    };
    let out_shape = match (heads_first, transpose) {
        (true, false) => [b, heads, t, d],
        _ => [b, t, heads, d],
    };
    let out = empty_device_contiguous_dtype(
        x.client.clone(),
        x.device.clone(),
        Shape::new(out_shape),
        x.dtype,
    );
    let n = x.meta.shape().num_elements();
    rope_kernel::launch(
        &x.client,
        grid(n.div_ceil(ELEMENT_UNITS as usize)),
        CubeDim::new_1d(ELEMENT_UNITS),
        x.clone().into_tensor_arg(),
        cos.clone().into_tensor_arg(),
        sin.into_tensor_arg(),
        bias.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        n,
        t,
        heads,
        d,
        x_stride,
        biased,
        transpose,
        heads_first,
        [
            dtype_to_storage_type(x.dtype),
            dtype_to_storage_type(cos.dtype),
        ],
    );
    out
}

/// Softmax over the last dimension of `x`, adding `bias` (b, t, s) row `(r / per_batch, r mod t)`
/// to row `r` when given as `(bias, per_batch, t)`.
fn softmax_rows(x: CubeTensor, bias: Option<(CubeTensor, usize, usize)>) -> CubeTensor {
    let x = into_contiguous(x);
    let (rows, s) = row_layout(&x);
    let out = like(&x);
    let units = row_units(s);
    let masked = bias.is_some();
    // Unmasked, `x` stands in for the bias argument; the kernel never reads it.
    let (bias, per_batch, t) = match bias {
        Some((bias, per_batch, t)) => (into_contiguous(bias), per_batch, t),
        None => (x.clone(), rows, 1),
    };
    softmax_kernel::launch(
        &x.client,
        grid(rows),
        CubeDim::new_1d(units as u32),
        x.clone().into_tensor_arg(),
        bias.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows,
        per_batch,
        t,
        s,
        units,
        masked,
        [
            dtype_to_storage_type(x.dtype),
            dtype_to_storage_type(bias.dtype),
        ],
    );
    out
}

/// A tensor as rows of its last dimension: (rows, row length).
fn row_layout(t: &CubeTensor) -> (usize, usize) {
    let shape = t.meta.shape();
    let len = shape[shape.num_dims() - 1];
    (shape.num_elements() / len.max(1), len)
}

/// The dims of a rank-`D` tensor.
fn dims<const D: usize>(t: &CubeTensor) -> [usize; D] {
    let shape: &Shape = t.meta.shape();
    std::array::from_fn(|i| shape[i])
}

/// An uninitialised contiguous tensor of `t`'s shape and type on its device.
fn like(t: &CubeTensor) -> CubeTensor {
    empty_device_contiguous_dtype(
        t.client.clone(),
        t.device.clone(),
        t.meta.shape().clone(),
        t.dtype,
    )
}

/// [`like`] where `keep`, else one element of `t`'s type: an output a flag leaves unwritten
/// (as [`spec_or_one`] declares it to burn's fusion).
fn like_or_one(t: &CubeTensor, keep: bool) -> CubeTensor {
    let shape = match keep {
        true => t.meta.shape().clone(),
        false => Shape::new([1]),
    };
    empty_device_contiguous_dtype(t.client.clone(), t.device.clone(), shape, t.dtype)
}

/// `x` read as rows — its first `lead` axes index the rows, the others are one contiguous row
/// each — and the distance between consecutive rows, in elements. A view whose rows sit further
/// apart than their length stays as it is: a column slice of a wider tensor, as q, k and v are
/// of one packed projection's output ([`crate::decoder::Attention::qkv`]). Any other layout is
/// copied contiguous (rows `len` apart).
fn strided_rows(x: CubeTensor, lead: usize) -> (CubeTensor, usize) {
    let shape: &Shape = x.meta.shape();
    let len: usize = (lead..shape.len()).map(|i| shape[i]).product();
    if x.is_contiguous() {
        return (x, len);
    }
    let strides = x.meta.strides();
    // Axes of one element may carry any stride.
    let mut expect = 1;
    let mut rows_fit = true;
    for i in (lead..shape.len()).rev() {
        rows_fit &= shape[i] == 1 || strides[i] == expect;
        expect *= shape[i];
    }
    // The leading axes: the innermost one longer than 1 sets the row stride, the outer ones
    // are its multiples.
    let mut stride = None;
    let mut inner = 1;
    for i in (0..lead).rev() {
        if shape[i] == 1 {
            continue;
        }
        let step = *stride.get_or_insert(strides[i]);
        rows_fit &= strides[i] == step * inner;
        inner *= shape[i];
    }
    let stride = stride.unwrap_or(len);
    match rows_fit && stride >= len {
        true => (x, stride),
        false => (into_contiguous(x), len),
    }
}

/// Units per cube for a row of `len`: a power of two from 32 to [`ROW_UNITS`].
fn row_units(len: usize) -> usize {
    len.next_power_of_two().clamp(32, ROW_UNITS)
}

/// `cubes` cubes as a grid within the per-axis limit (the kernels skip the surplus).
fn grid(cubes: usize) -> CubeCount {
    let cubes = cubes.max(1);
    let x = cubes.min(GRID_AXIS);
    CubeCount::Static(x as u32, cubes.div_ceil(x) as u32, 1)
}

/// The kernels, in cubecl's language (its `Tensor` is a kernel argument, not burn's tensor).
mod cube {
    use cubecl::prelude::*;

    /// The sum over the cube's units of each one's `value` (`units` a power of two, the cube's
    /// size), through shared memory; every unit gets it.
    #[cube]
    fn cube_sum(value: f32, #[comptime] units: usize) -> f32 {
        let mut partial = Shared::new_slice(units);
        let unit = UNIT_POS_X as usize;
        partial[unit] = value;
        sync_cube();
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if unit < stride {
                let (a, b) = (partial[unit], partial[unit + stride]);
                partial[unit] = a + b;
            }
            sync_cube();
            stride /= 2;
        }
        let total = partial[0];
        // Every unit has read it before any can write the next reduction's partials.
        sync_cube();
        total
    }

    /// The maximum over the cube's units of each one's `value`, as [`cube_sum`].
    #[cube]
    fn cube_max(value: f32, #[comptime] units: usize) -> f32 {
        let mut partial = Shared::new_slice(units);
        let unit = UNIT_POS_X as usize;
        partial[unit] = value;
        sync_cube();
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if unit < stride {
                let (a, b) = (partial[unit], partial[unit + stride]);
                partial[unit] = f32::max(a, b);
            }
            sync_cube();
            stride /= 2;
        }
        let total = partial[0];
        // Every unit has read it before any can write the next reduction's partials.
        sync_cube();
        total
    }

    /// The maximum over the row of `len` values at `start` in `x`, every unit getting it: the
    /// units stride over the row, then [`cube_max`].
    #[cube]
    fn row_max<F: Float>(x: &Tensor<F>, start: usize, len: usize, #[comptime] units: usize) -> f32 {
        let mut max = f32::new(-3.0e38);
        let mut i = UNIT_POS_X as usize;
        while i < len {
            max = f32::max(max, f32::cast_from(x[start + i]));
            i += units;
        }
        cube_max(max, units)
    }

    /// One cube per row of `x` (rows, s): `softmax(x + bias)` in f32 when `masked`, else
    /// `softmax(x)`. Row `r` belongs to batch `r / per_batch` (`per_batch` = kv·m rows) and
    /// adds its bias row `r mod t` (rows cycle through the t queries, and `m` is a multiple of
    /// `t`).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn softmax_kernel<F: Float, G: Float>(
        x: &Tensor<F>,
        bias: &Tensor<G>,
        out: &mut Tensor<F>,
        rows: usize,
        per_batch: usize,
        t: usize,
        s: usize,
        #[comptime] units: usize,
        #[comptime] masked: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let start = row * s;
        let bias_start = ((row / per_batch) * t + row % t) * s;
        let unit = UNIT_POS_X as usize;
        let mut max = f32::new(-3.0e38);
        let mut i = unit;
        while i < s {
            max = f32::max(max, score(x, bias, start, bias_start, i, masked));
            i += units;
        }
        let max = cube_max(max, units);
        let mut sum = f32::new(0.0);
        let mut i = unit;
        while i < s {
            sum += f32::exp(score(x, bias, start, bias_start, i, masked) - max);
            i += units;
        }
        let sum = cube_sum(sum, units);
        let mut i = unit;
        while i < s {
            let p = f32::exp(score(x, bias, start, bias_start, i, masked) - max) / sum;
            out[start + i] = F::cast_from(p);
            i += units;
        }
    }

    /// Column `i` of a row's scores in f32: `x[start + i]`, plus `bias[bias_start + i]` when
    /// `masked`.
    #[cube]
    fn score<F: Float, G: Float>(
        x: &Tensor<F>,
        bias: &Tensor<G>,
        start: usize,
        bias_start: usize,
        i: usize,
        #[comptime] masked: bool,
    ) -> f32 {
        let mut v = f32::cast_from(x[start + i]);
        if masked {
            v += f32::cast_from(bias[bias_start + i]);
        }
        v
    }

    /// `silu(gate) · up = gate · up / (1 + exp(−gate))` in f32, one unit per element of the
    /// contiguous `out` (rows of `width`); `gate`'s and `up`'s rows start `gate_stride` and
    /// `up_stride` elements apart ([`super::strided_rows`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn swiglu_kernel<F: Float, G: Float>(
        gate: &Tensor<F>,
        up: &Tensor<G>,
        out: &mut Tensor<F>,
        n: usize,
        width: usize,
        gate_stride: usize,
        up_stride: usize,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        let (row, c) = (i / width, i % width);
        let g = f32::cast_from(gate[row * gate_stride + c]);
        let u = f32::cast_from(up[row * up_stride + c]);
        out[i] = F::cast_from(g * u / (f32::new(1.0) + f32::exp(-g)));
    }

    /// RoPE, one unit per element of `x` (b·t, heads, d): element `(r, h, j)` is
    /// `x[r, h, j]·cos[r, j] + x[r, h, p]·sin[r, j]` with `p = (j + d/2) mod d` in f32, or with
    /// `transpose` (the backward) `x[r, h, j]·cos[r, j] + x[r, h, p]·sin[r, p]`.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn rope_kernel<F: Float, G: Float>(
        x: &Tensor<F>,
        cos: &Tensor<G>,
        sin: &Tensor<G>,
        bias: &Tensor<F>,
        out: &mut Tensor<F>,
        n: usize,
        t: usize,
        heads: usize,
        d: usize,
        x_stride: usize,
        #[comptime] biased: bool,
        #[comptime] transpose: bool,
        #[comptime] heads_first: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        // `i` runs over the (b, t, heads, d) side; `at_heads_first` is the same element in a
        // (b, heads, t, d) layout, which the rotated side takes when `heads_first`.
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        let j = i % d;
        let head = (i / d) % heads;
        let position = i / (heads * d); // b·t + τ
        let row = position * d;
        let at_heads_first = ((position / t * heads + head) * t + position % t) * d + j;
        let p = (j + d / 2) % d;
        let mut sin_at = row + j;
        if transpose {
            sin_at = row + p;
        }
        // Forward, `x`'s (b, t) rows sit `x_stride` apart ([`super::strided_rows`]).
        let mut src = position * x_stride + i % (heads * d);
        let mut dst = i;
        if heads_first {
            if transpose {
                src = at_heads_first;
            } else {
                dst = at_heads_first;
            }
        }
        let mut xj = x[src];
        let mut xp = x[src - j + p];
        if biased {
            // The projection's bias, added in `x`'s type as the projection would.
            let at = head * d + j;
            xj += bias[at];
            xp += bias[at - j + p];
        }
        let y = f32::cast_from(xj) * f32::cast_from(cos[row + j])
            + f32::cast_from(xp) * f32::cast_from(sin[sin_at]);
        out[dst] = F::cast_from(y);
    }

    /// One cube per row of `y` (rows, s): `dx = y ⊙ (dy − Σ dy ⊙ y)` in f32.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn softmax_backward_kernel<F: Float, G: Float>(
        y: &Tensor<F>,
        dy: &Tensor<G>,
        out: &mut Tensor<F>,
        rows: usize,
        s: usize,
        #[comptime] units: usize,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let start = row * s;
        let unit = UNIT_POS_X as usize;
        let mut dot = f32::new(0.0);
        let mut i = unit;
        while i < s {
            dot += f32::cast_from(y[start + i]) * f32::cast_from(dy[start + i]);
            i += units;
        }
        let dot = cube_sum(dot, units);
        let mut i = unit;
        while i < s {
            let v = f32::cast_from(y[start + i]) * (f32::cast_from(dy[start + i]) - dot);
            out[start + i] = F::cast_from(v);
            i += units;
        }
    }

    /// SwiGLU's backward, one unit per element, in f32: `up`'s gradient, and `gate`'s when
    /// `gate_grad`.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn swiglu_backward_kernel<F: Float, G: Float, H: Float>(
        gate: &Tensor<F>,
        up: &Tensor<H>,
        dy: &Tensor<G>,
        d_gate: &mut Tensor<F>,
        d_up: &mut Tensor<F>,
        n: usize,
        #[comptime] gate_grad: bool,
        #[define(F, G, H)] _dtypes: [ElemType; 3],
    ) {
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        let g = f32::cast_from(gate[i]);
        let sigmoid = f32::new(1.0) / (f32::new(1.0) + f32::exp(-g));
        let dy = f32::cast_from(dy[i]);
        if gate_grad {
            let u = f32::cast_from(up[i]);
            let grad = dy * u * sigmoid * (f32::new(1.0) + g * (f32::new(1.0) - sigmoid));
            d_gate[i] = F::cast_from(grad);
        }
        d_up[i] = F::cast_from(dy * g * sigmoid);
    }

    /// RMSNorm's gradient for `x` (rows, d) in f32, with `g = weight ⊙ dy` and
    /// `r = sqrt(mean(x²) + eps)`: `g / r − x · Σ(g ⊙ x) / (d · r³)`, a cube per
    /// `rows_per_cube` rows taken one after another. With `weight_grad`, each unit also adds
    /// up `dy ⊙ x̂` (x̂ = x / r rounded to `x`'s type, as the forward multiplies it) over the
    /// cube's rows for its `per` columns (`unit`, `unit + units`, …) and writes the sums as the
    /// cube's row of `parts` (cubes, d).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn rms_norm_backward_kernel<F: Float, G: Float, H: Float>(
        x: &Tensor<F>,
        weight: &Tensor<G>,
        dy: &Tensor<H>,
        out: &mut Tensor<F>,
        parts: &mut Tensor<f32>,
        rows: usize,
        d: usize,
        eps: f32,
        #[comptime] units: usize,
        #[comptime] rows_per_cube: usize,
        #[comptime] per: usize,
        #[comptime] weight_grad: bool,
        #[define(F, G, H)] _dtypes: [ElemType; 3],
    ) {
        let first = CUBE_POS * rows_per_cube;
        if first >= rows {
            terminate!();
        }
        let unit = UNIT_POS_X as usize;
        let mut acc = Array::<f32>::new(per);
        #[unroll]
        for c in 0..per {
            acc[c] = f32::new(0.0);
        }
        let end = usize::min(first + rows_per_cube, rows);
        let mut row = first;
        while row < end {
            let start = row * d;
            let mut squares = f32::new(0.0);
            let mut dot = f32::new(0.0);
            let mut i = unit;
            while i < d {
                let v = f32::cast_from(x[start + i]);
                squares += v * v;
                dot += v * f32::cast_from(weight[i]) * f32::cast_from(dy[start + i]);
                i += units;
            }
            let r = f32::sqrt(cube_sum(squares, units) / f32::cast_from(d) + eps);
            let dot = cube_sum(dot, units);
            let k = dot / (f32::cast_from(d) * r * r * r);
            // Unrolled, so that each column's sum has a register of its own.
            #[unroll]
            for c in 0..per {
                let i = unit + c * units;
                if i < d {
                    let xi = f32::cast_from(x[start + i]);
                    let dyi = f32::cast_from(dy[start + i]);
                    let v = f32::cast_from(weight[i]) * dyi / r - xi * k;
                    out[start + i] = F::cast_from(v);
                    if weight_grad {
                        let x_hat = f32::cast_from(F::cast_from(xi / r));
                        acc[c] += dyi * x_hat;
                    }
                }
            }
            row += 1;
        }
        if weight_grad {
            let base = CUBE_POS * d;
            #[unroll]
            for c in 0..per {
                let i = unit + c * units;
                if i < d {
                    parts[base + i] = acc[c];
                }
            }
        }
    }

    /// One cube per query row (b·kv·n_rep rows of `q`, one unit per head dimension): the keys
    /// go by tiles of `units`, each unit scoring one key; an online softmax (running maximum
    /// `m` and normaliser `l`, earlier sums rescaled by `exp(m_old − m_new)`) folds each tile's
    /// weights into the unit's output dimension. With `rotate`, the query row is rotated on
    /// loading as [`rope_kernel`] rotates it (its bias added in `q`'s type when `biased`, the
    /// result rounded to `q`'s type), so the step needs no RoPE kernel of its own for q.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn decode_attention_kernel<F: Float, G: Float>(
        q: &Tensor<F>,
        k: &Tensor<F>,
        v: &Tensor<F>,
        bias: &Tensor<G>,
        cos: &Tensor<F>,
        sin: &Tensor<F>,
        q_bias: &Tensor<F>,
        out: &mut Tensor<F>,
        rows: usize,
        kv: usize,
        n_rep: usize,
        s: usize,
        d: usize,
        q_stride: usize,
        #[comptime] units: usize,
        #[comptime] masked: bool,
        #[comptime] prefix: bool,
        #[comptime] rotate: bool,
        #[comptime] biased: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let head = row / n_rep; // batch · kv + kv head
        let batch = head / kv;
        let group = head % kv;
        let k_base = batch * k.stride(0) + group * k.stride(1);
        let v_base = batch * v.stride(0) + group * v.stride(1);
        let unit = UNIT_POS_X as usize;
        let mut query = Shared::new_slice(units);
        let mut weights = Shared::new_slice(units);
        if unit < d {
            query[unit] = query_element::<F>(
                q,
                cos,
                sin,
                q_bias,
                row,
                unit,
                batch,
                kv * n_rep,
                d,
                q_stride,
                rotate,
                biased,
            );
        }
        sync_cube();
        let mut m = f32::new(-3.0e38);
        let mut l = f32::new(0.0);
        let mut acc = f32::new(0.0);
        let mut tile = 0;
        while tile < s {
            let j = tile + unit;
            let mut score = f32::new(-3.0e38);
            if j < s {
                let mut dot = f32::new(0.0);
                for c in 0..d {
                    dot += query[c] * f32::cast_from(k[k_base + j * k.stride(2) + c * k.stride(3)]);
                }
                score = dot + key_bias::<G>(bias, batch, s, j, true, masked, prefix);
            }
            let new_m = f32::max(m, cube_max(score, units));
            let mut p = f32::new(0.0);
            if j < s {
                p = f32::exp(score - new_m);
            }
            weights[unit] = p;
            let tile_sum = cube_sum(p, units);
            let correction = f32::exp(m - new_m);
            l = l * correction + tile_sum;
            acc *= correction;
            if unit < d {
                for jj in 0..units {
                    if tile + jj < s {
                        let at = v_base + (tile + jj) * v.stride(2) + unit * v.stride(3);
                        acc += weights[jj] * f32::cast_from(v[at]);
                    }
                }
            }
            m = new_m;
            sync_cube();
            tile += units;
        }
        if unit < d {
            out[row * d + unit] = F::cast_from(acc / l);
        }
    }

    /// Element `c` of query row `row` of a decode step's `q` (rows of `d`, `heads` per batch
    /// row), as the decode kernels load it in f32: as stored, or, with `rotate`, rotated as
    /// [`rope_kernel`] rotates it (the projection's bias added first in `q`'s type when
    /// `biased`, the result rounded to `q`'s type), from the tables' row `batch`.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn query_element<F: Float>(
        q: &Tensor<F>,
        cos: &Tensor<F>,
        sin: &Tensor<F>,
        q_bias: &Tensor<F>,
        row: usize,
        c: usize,
        batch: usize,
        heads: usize,
        d: usize,
        q_stride: usize,
        #[comptime] rotate: bool,
        #[comptime] biased: bool,
    ) -> f32 {
        // Sequence `batch`'s heads·d query elements start `q_stride` after the previous one's.
        let base = batch * q_stride + (row % heads) * d;
        let mut xj = q[base + c];
        let mut value = f32::cast_from(xj);
        if rotate {
            let p = (c + d / 2) % d;
            let mut xp = q[base + p];
            if biased {
                // The projection's bias, added in `q`'s type as the projection would.
                let at = (row % heads) * d;
                xj += q_bias[at + c];
                xp += q_bias[at + p];
            }
            let y = f32::cast_from(xj) * f32::cast_from(cos[batch * d + c])
                + f32::cast_from(xp) * f32::cast_from(sin[batch * d + c]);
            value = f32::cast_from(F::cast_from(y));
        }
        value
    }

    /// [`decode_attention_kernel`] with the `n_rep` query rows of one (batch, kv head) in one
    /// cube, a unit per (query row, head dimension): the keys go by tiles of `tile` keys
    /// (`d / tile` a power of two, [`DecodeKernel::plan`]), loaded once for the group into
    /// shared memory by all its units with consecutive units on consecutive elements, where a
    /// cube per row reads each key `n_rep` times from device memory, a key row per unit. Per
    /// tile, the group's `n_rep · tile` (query, key) pairs are scored by `d / tile` units each
    /// (unit `u` takes pair `u mod (n_rep · tile)` over the dimensions of its part
    /// `u / (n_rep · tile)`; the parts' partial dots summed in order), one unit per row takes
    /// the tile into its row's running maximum and normaliser (the tile's weights written back
    /// in place of the scores), and each unit folds the weights into its output element,
    /// reading the values where consecutive units read consecutive elements and the group's
    /// rows read the same ones. The query rows load as the other kernel loads them (`rotate`,
    /// `biased`). With `split_keys`, cube `group · chunks + chunk` takes the group's keys
    /// `chunk · chunk_keys ..` (up to `chunk_keys` of them, [`DecodeKernel::split`]) and
    /// writes its rows' normalised sums to `part_out` (cubes, n_rep, d) and their log-sum-exps
    /// to `part_lse` (cubes, n_rep), in f32, for [`decode_combine_kernel`]; else `chunks` is 1
    /// and the rows go to `out`.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn decode_group_kernel<F: Float, G: Float>(
        q: &Tensor<F>,
        k: &Tensor<F>,
        v: &Tensor<F>,
        bias: &Tensor<G>,
        cos: &Tensor<F>,
        sin: &Tensor<F>,
        q_bias: &Tensor<F>,
        out: &mut Tensor<F>,
        part_out: &mut Tensor<f32>,
        part_lse: &mut Tensor<f32>,
        cubes: usize,
        kv: usize,
        s: usize,
        chunks: usize,
        chunk_keys: usize,
        q_stride: usize,
        #[comptime] n_rep: usize,
        #[comptime] d: usize,
        #[comptime] tile: usize,
        #[comptime] masked: bool,
        #[comptime] prefix: bool,
        #[comptime] rotate: bool,
        #[comptime] biased: bool,
        #[comptime] split_keys: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let cube = CUBE_POS; // (batch · kv + kv head) · chunks + chunk
        if cube >= cubes {
            terminate!();
        }
        let group = cube / chunks;
        // The chunk's keys: all `s` unless they are split.
        let mut first = (cube % chunks) * chunk_keys;
        let end = usize::min(s, first + chunk_keys);
        let batch = group / kv;
        let (k_base, v_base) = (head_base::<F>(k, group, kv), head_base::<F>(v, group, kv));
        let units = comptime!(n_rep * d);
        let pairs = comptime!(n_rep * tile);
        let split = comptime!(d / tile);
        let unit = UNIT_POS_X as usize;
        let (r, c) = (unit / d, unit % d);
        let row = group * n_rep + r;
        // The pair this unit scores and the part of its dimensions: units `0..pairs` hold the
        // first part of every pair, so they also sum the parts.
        let (part, pair) = (unit / pairs, unit % pairs);
        let (qr, j) = (pair / tile, pair % tile);
        let mut query = Shared::new_slice(comptime!(n_rep * (d + 1)));
        let mut keys = Shared::new_slice(comptime!(tile * (d + 1)));
        let mut weights = Shared::new_slice(pairs);
        let mut partials = Shared::new_slice(comptime!(if split > 1 { units } else { 1 }));
        let mut row_max = Shared::new_slice(n_rep);
        let mut row_sum = Shared::new_slice(n_rep);
        let mut row_scale = Shared::new_slice(n_rep);
        query[r * (d + 1) + c] = query_element::<F>(
            q,
            cos,
            sin,
            q_bias,
            row,
            c,
            batch,
            kv * n_rep,
            d,
            q_stride,
            rotate,
            biased,
        );
        if unit < n_rep {
            row_max[unit] = f32::new(-3.0e38);
            row_sum[unit] = f32::new(0.0);
        }
        let mut acc = f32::new(0.0);
        while first < end {
            load_keys::<F>(k, &mut keys, k_base, first, end, d, tile, units);
            sync_cube();
            let live = first + j < end;
            let mut dot = f32::new(0.0);
            if live {
                let (at_q, at_k) = (qr * (d + 1) + part * tile, j * (d + 1) + part * tile);
                dot = span_dot(&query, at_q, &keys, at_k, tile);
            }
            if comptime!(split > 1) {
                partials[unit] = dot;
                sync_cube();
                if unit < pairs {
                    dot = f32::new(0.0);
                    for p in 0..split {
                        dot += partials[p * pairs + unit];
                    }
                }
            }
            if unit < pairs {
                let mut score = f32::new(-3.0e38);
                if live {
                    score = dot + key_bias::<G>(bias, batch, s, first + j, live, masked, prefix);
                }
                weights[unit] = score;
            }
            sync_cube();
            if unit < n_rep {
                let old = row_max[unit];
                let mut new = old;
                for x in 0..tile {
                    new = f32::max(new, weights[unit * tile + x]);
                }
                let mut sum = f32::new(0.0);
                for x in 0..tile {
                    let mut w = f32::new(0.0);
                    if first + x < end {
                        w = f32::exp(weights[unit * tile + x] - new);
                    }
                    weights[unit * tile + x] = w;
                    sum += w;
                }
                let scale = f32::exp(old - new);
                row_max[unit] = new;
                row_scale[unit] = scale;
                row_sum[unit] = row_sum[unit] * scale + sum;
            }
            sync_cube();
            let mut add = f32::new(0.0);
            for x in 0..tile {
                if first + x < end {
                    let at = v_base + (first + x) * v.stride(2) + c * v.stride(3);
                    add += weights[r * tile + x] * f32::cast_from(v[at]);
                }
            }
            acc = acc * row_scale[r] + add;
            sync_cube();
            first += tile;
        }
        if split_keys {
            let at = cube * n_rep + r;
            part_out[at * d + c] = acc / row_sum[r];
            if c == 0 {
                part_lse[at] = row_max[r] + f32::ln(row_sum[r]);
            }
        } else {
            out[row * d + c] = F::cast_from(acc / row_sum[r]);
        }
    }

    /// The rows of a decode step whose keys [`decode_group_kernel`] split into `chunks`: one
    /// cube per query row (`rows` of them, `n_rep` per group), a unit per head dimension,
    /// each chunk's normalised sum weighted by `exp(lse_chunk − max lse)` over the weights'
    /// sum (a chunk whose keys are all masked has a log-sum-exp near −1e30, so no weight; a
    /// row with every key masked, which a decode step never has, gets the mean of the chunks'
    /// means where the unsplit kernel gives the mean of the values).
    #[cube(launch)]
    pub(super) fn decode_combine_kernel<F: Float>(
        part_out: &Tensor<f32>,
        part_lse: &Tensor<f32>,
        out: &mut Tensor<F>,
        rows: usize,
        n_rep: usize,
        chunks: usize,
        #[comptime] d: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let c = UNIT_POS_X as usize;
        let (group, r) = (row / n_rep, row % n_rep);
        let first = group * chunks * n_rep + r;
        let mut top = f32::new(-3.0e38);
        for chunk in 0..chunks {
            top = f32::max(top, part_lse[first + chunk * n_rep]);
        }
        let mut sum = f32::new(0.0);
        let mut weight = f32::new(0.0);
        for chunk in 0..chunks {
            let at = first + chunk * n_rep;
            let w = f32::exp(part_lse[at] - top);
            sum += w * part_out[at * d + c];
            weight += w;
        }
        out[row * d + c] = F::cast_from(sum / weight);
    }

    /// One cube per row of `x` (rows, d): `x / sqrt(mean(x²) + eps)` in f32, cast to `x`'s type,
    /// times `weight`. With `add`, of `x + residual`, written to `sum` too; `in_place`: `sum`
    /// holds `x` to begin with (and `x` is unread).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn rms_norm_kernel<F: Float, G: Float>(
        x: &Tensor<F>,
        residual: &Tensor<F>,
        weight: &Tensor<G>,
        sum: &mut Tensor<F>,
        out: &mut Tensor<F>,
        rows: usize,
        d: usize,
        eps: f32,
        #[comptime] units: usize,
        #[comptime] add: bool,
        #[comptime] in_place: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let start = row * d;
        let unit = UNIT_POS_X as usize;
        let mut squares = f32::new(0.0);
        let mut i = unit;
        while i < d {
            let xi = if in_place {
                sum[start + i]
            } else {
                x[start + i]
            };
            let mut xi = xi;
            if add {
                // The residual stream's add, in `x`'s type as the composed add rounds it.
                xi += residual[start + i];
                sum[start + i] = xi;
            }
            let v = f32::cast_from(xi);
            squares += v * v;
            i += units;
        }
        let norm = f32::sqrt(cube_sum(squares, units) / f32::cast_from(d) + eps);
        let mut i = unit;
        while i < d {
            // The sum as this unit wrote it above.
            let xi = if add { sum[start + i] } else { x[start + i] };
            let v = F::cast_from(f32::cast_from(xi) / norm);
            out[start + i] = v * F::cast_from(weight[i]);
            i += units;
        }
    }
    /// Whether a score with this bias, in a row whose running maximum (in the backward pass,
    /// its final one) is `row`, must be computed: a masked key (bias at or below −1e29;
    /// reasonlab masks with −1e30) adds exactly zero once its row has seen a visible key, so a
    /// tile of such keys is skipped (the causal mask's upper half). A row that has seen none
    /// keeps every key, as the composed softmax does.
    #[cube]
    fn needed(live: bool, bias: f32, row: f32) -> bool {
        live && (bias > f32::new(-1.0e29) || row <= f32::new(-1.0e29))
    }

    /// Whether any unit of the cube passes `need`, the same answer in every unit, behind one
    /// barrier (a cube-wide reduction takes ten): the units that pass set `flags[parity]`,
    /// which unit 0 cleared in the previous tile, and unit 0 clears the other flag for the
    /// next. The caller alternates `parity` from tile to tile, starts with `flags[0]` at 0, and
    /// passes a barrier between the answer and the next tile's test (the work of a tile that
    /// passes has its own; one that does not adds one), so that no clear meets a set or a
    /// read.
    #[cube]
    fn any_unit(flags: &mut Shared<[f32]>, parity: usize, need: bool) -> bool {
        if need {
            flags[parity] = f32::new(1.0);
        }
        if UNIT_POS_X == 0 {
            flags[1 - parity] = f32::new(0.0);
        }
        sync_cube();
        flags[parity] > f32::new(0.0)
    }

    /// A mask entry in f32, −∞ (a 16-bit mask's −1e30) read as −1e30: a row whose every key
    /// is masked then averages them, as in f32, instead of dividing zero by zero.
    #[cube]
    fn mask_value<G: Float>(bias: G) -> f32 {
        f32::max(f32::cast_from(bias), f32::new(-1.0e30))
    }

    /// Where the flash kernels' rows of one (batch, kv head) lie in a tensor of rows of `d`
    /// contiguous values: row `j` is flat row `base + (j / span)·outer + (j mod span)·inner`
    /// ([`row_at`]). Heads first, (b, kv, m, d) ([`heads_first`]): `base` the head's first row,
    /// `inner` 1, `span` past the last row; the projections' queries, (b, t, kv·n_rep, d)
    /// ([`query_rows`]), where row `j` is query `j mod t` of the head's `j / t`-th query head:
    /// `span` t, `outer` 1, `inner` kv·n_rep; their keys or values, (b, s, kv, d)
    /// ([`key_rows`]): `span` s, `inner` kv.
    #[derive(CubeType, Clone, Copy)]
    #[expand(derive(Clone, Copy))]
    struct Rows {
        base: usize,
        span: usize,
        outer: usize,
        inner: usize,
    }

    /// The flat row that holds row `j` of a head's rows placed as `rows` says.
    #[cube]
    fn row_at(j: usize, rows: Rows) -> usize {
        rows.base + (j / rows.span) * rows.outer + (j % rows.span) * rows.inner
    }

    /// The `len` rows of (batch, kv head) `head` in a heads-first (b, kv, len, d) tensor.
    #[cube]
    fn heads_first(head: usize, len: usize) -> Rows {
        Rows {
            base: head * len,
            span: len,
            outer: 0,
            inner: 1,
        }
    }

    /// The `m` query rows of (batch, kv head) `head` (its `m / t` query heads folded into
    /// them) in the projections' (b, t, kv·m/t, d) layout: query head `g·(m/t) + j / t` of
    /// kv head `g`, query `j mod t`.
    #[cube]
    fn query_rows(head: usize, kv: usize, m: usize, t: usize) -> Rows {
        let n_rep = m / t;
        Rows {
            base: (head / kv) * t * kv * n_rep + (head % kv) * n_rep,
            span: t,
            outer: 1,
            inner: kv * n_rep,
        }
    }

    /// The `s` key rows of (batch, kv head) `head` in the projections' (b, s, kv, d) layout.
    #[cube]
    fn key_rows(head: usize, kv: usize, s: usize) -> Rows {
        Rows {
            base: (head / kv) * s * kv + head % kv,
            span: s,
            outer: 0,
            inner: kv,
        }
    }

    /// Rows `first..first + block` of `x` (rows of `d`, placed as `rows` says) into `tile`
    /// (rows padded to `d + 1`), zeros past row `end`; loaded by the cube's `units` units,
    /// consecutive units on consecutive elements.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn load_rows<F: Float>(
        x: &Tensor<F>,
        tile: &mut Shared<[f32]>,
        rows: Rows,
        first: usize,
        end: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] units: usize,
    ) {
        let mut e = UNIT_POS_X as usize;
        while e < block * d {
            let (row, col) = (e / d, e % d);
            let mut value = f32::new(0.0);
            if first + row < end {
                value = f32::cast_from(x[row_at(first + row, rows) * d + col]);
            }
            tile[row * (d + 1) + col] = value;
            e += units;
        }
    }

    /// Keys `first..first + block` of a (b, kv, s, d) tensor with any strides, from the head at
    /// `base` (`batch·stride₀ + group·stride₁`), into `tile` (rows padded to `d + 1`), zeros
    /// past key `s`; loaded by the cube's `units` units, consecutive units on consecutive
    /// elements.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn load_keys<F: Float>(
        x: &Tensor<F>,
        tile: &mut Shared<[f32]>,
        base: usize,
        first: usize,
        s: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] units: usize,
    ) {
        let mut e = UNIT_POS_X as usize;
        while e < block * d {
            let (key, col) = (e / d, e % d);
            let mut value = f32::new(0.0);
            if first + key < s {
                value = f32::cast_from(x[base + (first + key) * x.stride(2) + col * x.stride(3)]);
            }
            tile[key * (d + 1) + col] = value;
            e += units;
        }
    }

    /// Keys and values `first..first + block` of (batch, kv head) `head` (of `kv` per batch
    /// row) into `ks` and `vs` ([`load_keys`]), v's projection bias (kv·d; the head's `d`
    /// values at `(head mod kv)·d`) added to the values where `biased`, each sum rounded to
    /// v's type as the projection's addition rounds it.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn load_keys_values<F: Float>(
        k: &Tensor<F>,
        v: &Tensor<F>,
        v_bias: &Tensor<F>,
        ks: &mut Shared<[f32]>,
        vs: &mut Shared<[f32]>,
        head: usize,
        kv: usize,
        first: usize,
        s: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] units: usize,
        #[comptime] biased: bool,
    ) {
        load_keys::<F>(
            k,
            ks,
            head_base::<F>(k, head, kv),
            first,
            s,
            d,
            block,
            units,
        );
        load_keys::<F>(
            v,
            vs,
            head_base::<F>(v, head, kv),
            first,
            s,
            d,
            block,
            units,
        );
        if biased {
            // Each unit adds to the elements it loaded: no barrier between.
            let group = head % kv;
            let mut e = UNIT_POS_X as usize;
            while e < block * d {
                let (key, col) = (e / d, e % d);
                if first + key < s {
                    let at = key * (d + 1) + col;
                    let sum = vs[at] + f32::cast_from(v_bias[group * d + col]);
                    vs[at] = f32::cast_from(F::cast_from(sum));
                }
                e += units;
            }
        }
    }

    /// Where (batch, kv head) `head` = batch · kv + group starts in a (b, kv, ·, d) tensor of
    /// any strides.
    #[cube]
    fn head_base<F: Float>(x: &Tensor<F>, head: usize, kv: usize) -> usize {
        (head / kv) * x.stride(0) + (head % kv) * x.stride(1)
    }

    /// A decode step's mask term for key `key` of sequence `batch` (`s` keys per row), when
    /// `masked` and the pair is `live`: with `prefix`, `bias` holds each sequence's count of
    /// leading padded keys (as floats) and the term is −1e30 below it, else 0; otherwise the
    /// (b, s) additive mask's entry, as [`bias_at`] reads it.
    #[cube]
    fn key_bias<G: Float>(
        bias: &Tensor<G>,
        batch: usize,
        s: usize,
        key: usize,
        live: bool,
        #[comptime] masked: bool,
        #[comptime] prefix: bool,
    ) -> f32 {
        let mut b = f32::new(0.0);
        if prefix {
            if live && key < usize::cast_from(bias[batch]) {
                b = f32::new(-1.0e30);
            }
        } else {
            b = bias_at::<G>(bias, batch * s + key, live, masked);
        }
        b
    }

    /// The mask entry at `at` in f32 when `masked` and the (query, key) pair is `live`, else 0.
    #[cube]
    fn bias_at<G: Float>(bias: &Tensor<G>, at: usize, live: bool, #[comptime] masked: bool) -> f32 {
        let mut b = f32::new(0.0);
        if masked && live {
            b = mask_value::<G>(bias[at]);
        }
        b
    }

    /// The mask terms of a unit's 2 × 2 share of a tile's pairs — queries `query` and `query +
    /// half` of the `m` rows (the sequence's row `row0 + query mod t` of the (b, t, s) mask),
    /// keys `key` and `key + half` of `s` — into `biases[2i + j]`, and whether any pair must be
    /// computed ([`needed`], with the rows' maxima `row_max`).
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn share_biases<G: Float>(
        bias: &Tensor<G>,
        biases: &mut Array<f32>,
        row_max: &Array<f32>,
        row0: usize,
        m: usize,
        t: usize,
        s: usize,
        query: usize,
        key: usize,
        #[comptime] half: usize,
        #[comptime] masked: bool,
    ) -> bool {
        let mut need = false;
        #[unroll]
        for i in 0..2 {
            let query = query + i * half;
            #[unroll]
            for j in 0..2 {
                let key = key + j * half;
                let live = query < m && key < s;
                let b = bias_at::<G>(bias, (row0 + query % t) * s + key, live, masked);
                biases[2 * i + j] = b;
                need = need || needed(live, b, row_max[i]);
            }
        }
        need
    }

    /// `out[2i + j]` = the dot product of padded tile rows `a[ra + i·half]` and `b[rb +
    /// j·half]`, for `i`, `j` in {0, 1}: a unit's 2 × 2 share of the products of two tiles'
    /// rows (each row read once for two products), each dot summed in order.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn pair_dots(
        out: &mut Array<f32>,
        a: &Shared<[f32]>,
        ra: usize,
        b: &Shared<[f32]>,
        rb: usize,
        #[comptime] half: usize,
        #[comptime] d: usize,
    ) {
        let (a0, a1) = (ra * (d + 1), (ra + half) * (d + 1));
        let (b0, b1) = (rb * (d + 1), (rb + half) * (d + 1));
        let mut s00 = f32::new(0.0);
        let mut s01 = f32::new(0.0);
        let mut s10 = f32::new(0.0);
        let mut s11 = f32::new(0.0);
        for x in 0..d {
            let (x0, x1) = (a[a0 + x], a[a1 + x]);
            let (y0, y1) = (b[b0 + x], b[b1 + x]);
            s00 += x0 * y0;
            s01 += x0 * y1;
            s10 += x1 * y0;
            s11 += x1 * y1;
        }
        out[0] = s00;
        out[1] = s01;
        out[2] = s10;
        out[3] = s11;
    }

    /// Adds `Σⱼ w[row, j] · tile[j, col]` over the `block` rows of `tile` (padded to `d + 1`)
    /// to a unit's share of a `block × d` result kept in registers: rows `pr` and `pr + half`,
    /// columns `pc + k·half` (`half` = block / 2), element `i·cols + k` of `acc`; `w` a
    /// `block × block` tile, row-major. With `sums`, also `Σⱼ w[row, j]` to `sum[i]`.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn add_products(
        acc: &mut Array<f32>,
        sum: &mut Array<f32>,
        weights: &Shared<[f32]>,
        tile: &Shared<[f32]>,
        pr: usize,
        pc: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] sums: bool,
    ) {
        let half = comptime!(block / 2);
        let cols = comptime!(d.div_ceil(block / 2));
        for j in 0..block {
            #[unroll]
            for i in 0..2 {
                let w = weights[(pr + i * half) * block + j];
                if sums {
                    sum[i] += w;
                }
                #[unroll]
                for k in 0..cols {
                    let col = pc + k * half;
                    if col < d {
                        acc[i * cols + k] += w * tile[j * (d + 1) + col];
                    }
                }
            }
        }
    }

    /// Writes a unit's share of a `block × d` result (as [`add_products`] keeps it, times
    /// `scale[i]` per row) to rows `first..first + block` of `out` (rows of `d`, placed as
    /// `rows` says), up to row `end`.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn store_rows<F: Float>(
        out: &mut Tensor<F>,
        acc: &Array<f32>,
        scale: &Array<f32>,
        rows: Rows,
        first: usize,
        end: usize,
        pr: usize,
        pc: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
    ) {
        let half = comptime!(block / 2);
        let cols = comptime!(d.div_ceil(block / 2));
        #[unroll]
        for i in 0..2 {
            let row = first + pr + i * half;
            if row < end {
                let at = row_at(row, rows) * d;
                #[unroll]
                for k in 0..cols {
                    let col = pc + k * half;
                    if col < d {
                        out[at + col] = F::cast_from(acc[i * cols + k] * scale[i]);
                    }
                }
            }
        }
    }

    /// `Σₓ a[at_a + x] · b[at_b + x]` over `len` elements, in order.
    #[cube]
    fn span_dot(
        a: &Shared<[f32]>,
        at_a: usize,
        b: &Shared<[f32]>,
        at_b: usize,
        #[comptime] len: usize,
    ) -> f32 {
        let mut dot = f32::new(0.0);
        for x in 0..len {
            dot += a[at_a + x] * b[at_b + x];
        }
        dot
    }

    /// An `Array` of `n` copies of `value`.
    #[cube]
    fn filled(value: f32, #[comptime] n: usize) -> Array<f32> {
        let mut a = Array::<f32>::new(n);
        #[unroll]
        for i in 0..n {
            a[i] = value;
        }
        a
    }

    /// Flash attention's forward pass: one cube per `block` query rows of one (batch, kv
    /// head), `(block / 2)²` units, each scoring a 2 × 2 share of a tile's (query, key) pairs
    /// (rows `pr`, `pr + block/2`; keys `pc`, `pc + block/2`: each q and k value it reads
    /// serves two products). Keys go by tiles of `block`, held with q's rows in shared memory:
    /// the scores, then each row's running maximum (every unit of a row finds the same one,
    /// kept in its registers) and the tile's weights `exp(score − max)`, then each unit folds
    /// the weights into its share of the output (two rows, every `block/2`-th column, in
    /// registers), earlier sums rescaled by `exp(m_old − m_new)`, and adds up its rows'
    /// normalisers on the way. Writes the output, in the projections' (b, t, h, d)
    /// ([`query_rows`]), and each row's maximum and log-sum.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn flash_attention_kernel<F: Float, G: Float>(
        q: &Tensor<F>,
        k: &Tensor<F>,
        v: &Tensor<F>,
        v_bias: &Tensor<F>,
        bias: &Tensor<G>,
        out: &mut Tensor<F>,
        stats: &mut Tensor<f32>,
        heads: usize,
        kv: usize,
        m: usize,
        t: usize,
        s: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] masked: bool,
        #[comptime] biased: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let blocks = m.div_ceil(block);
        if CUBE_POS >= heads * blocks {
            terminate!();
        }
        let head = CUBE_POS / blocks; // batch · kv + kv head
        let first = (CUBE_POS % blocks) * block;
        let batch = head / kv;
        let unit = UNIT_POS_X as usize;
        let half = comptime!(block / 2);
        let units = comptime!(block * block / 4);
        let cols = comptime!(d.div_ceil(block / 2));
        let (pr, pc) = (unit / half, unit % half);
        let mut qs = Shared::new_slice(comptime!(block * (d + 1)));
        let mut ks = Shared::new_slice(comptime!(block * (d + 1)));
        let mut vs = Shared::new_slice(comptime!(block * (d + 1)));
        let mut scores = Shared::new_slice(comptime!(block * block));
        let mut probs = Shared::new_slice(comptime!(block * block));
        let mut flags = Shared::new_slice(2usize);
        load_rows::<F>(q, &mut qs, heads_first(head, m), first, m, d, block, units);
        if unit == 0 {
            flags[0] = f32::new(0.0);
        }
        let mut acc = filled(f32::new(0.0), comptime!(2 * cols));
        let mut row_max = filled(f32::new(-3.0e38), 2usize);
        let mut row_sum = filled(f32::new(0.0), 2usize);
        let mut scale = filled(f32::new(0.0), 2usize);
        let mut pair = filled(f32::new(0.0), 4usize);
        let mut biases = filled(f32::new(0.0), 4usize);
        sync_cube();
        let mut tile = 0;
        let mut parity = 0;
        while tile < s {
            let need = share_biases::<G>(
                bias,
                &mut biases,
                &row_max,
                batch * t,
                m,
                t,
                s,
                first + pr,
                tile + pc,
                half,
                masked,
            );
            if any_unit(&mut flags, parity, need) {
                load_keys_values::<F>(
                    k, v, v_bias, &mut ks, &mut vs, head, kv, tile, s, d, block, units, biased,
                );
                sync_cube();
                pair_dots(&mut pair, &qs, pr, &ks, pc, half, d);
                #[unroll]
                for i in 0..2 {
                    let query = first + pr + i * half;
                    #[unroll]
                    for j in 0..2 {
                        let key = tile + pc + j * half;
                        let mut score = f32::new(-3.0e38);
                        if query < m && key < s {
                            score = pair[2 * i + j] + biases[2 * i + j];
                        }
                        pair[2 * i + j] = score;
                        scores[(pr + i * half) * block + pc + j * half] = score;
                    }
                }
                sync_cube();
                #[unroll]
                for i in 0..2 {
                    let row = (pr + i * half) * block;
                    let old = row_max[i];
                    let mut new = old;
                    for j in 0..block {
                        new = f32::max(new, scores[row + j]);
                    }
                    row_max[i] = new;
                    scale[i] = f32::exp(old - new);
                    #[unroll]
                    for j in 0..2 {
                        let key = tile + pc + j * half;
                        let mut p = f32::new(0.0);
                        if first + pr + i * half < m && key < s {
                            p = f32::exp(pair[2 * i + j] - new);
                        }
                        probs[row + pc + j * half] = p;
                    }
                }
                sync_cube();
                #[unroll]
                for i in 0..2 {
                    row_sum[i] *= scale[i];
                    #[unroll]
                    for c in 0..cols {
                        acc[i * cols + c] *= scale[i];
                    }
                }
                add_products(&mut acc, &mut row_sum, &probs, &vs, pr, pc, d, block, true);
            } else {
                sync_cube();
            }
            parity = 1 - parity;
            tile += block;
        }
        #[unroll]
        for i in 0..2 {
            scale[i] = f32::new(1.0) / row_sum[i];
        }
        store_rows::<F>(
            out,
            &acc,
            &scale,
            query_rows(head, kv, m, t),
            first,
            m,
            pr,
            pc,
            d,
            block,
        );
        #[unroll]
        for i in 0..2 {
            let query = first + pr + i * half;
            if pc == 0 && query < m {
                stats[2 * (head * m + query)] = row_max[i];
                stats[2 * (head * m + query) + 1] = f32::ln(row_sum[i]);
            }
        }
    }

    /// Flash attention's backward pass for q, laid out as [`flash_attention_kernel`]: each
    /// row's `Δ = dO·O` first (written for [`flash_attention_dkv_kernel`]), then per key tile
    /// `P = exp(S − M − ln Σ)`, `dS = P (dO·vᵀ − Δ)` (S and dO·vᵀ by 2 × 2 shares of pairs)
    /// and `dq += dS·k`.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn flash_attention_dq_kernel<F: Float, G: Float, H: Float>(
        q: &Tensor<F>,
        k: &Tensor<F>,
        v: &Tensor<F>,
        v_bias: &Tensor<F>,
        bias: &Tensor<G>,
        out: &Tensor<F>,
        dout: &Tensor<H>,
        stats: &Tensor<f32>,
        dq: &mut Tensor<F>,
        delta: &mut Tensor<f32>,
        heads: usize,
        kv: usize,
        m: usize,
        t: usize,
        s: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] masked: bool,
        #[comptime] biased: bool,
        #[define(F, G, H)] _dtypes: [ElemType; 3],
    ) {
        let blocks = m.div_ceil(block);
        if CUBE_POS >= heads * blocks {
            terminate!();
        }
        let head = CUBE_POS / blocks;
        let first = (CUBE_POS % blocks) * block;
        let batch = head / kv;
        let unit = UNIT_POS_X as usize;
        let half = comptime!(block / 2);
        let units = comptime!(block * block / 4);
        let cols = comptime!(d.div_ceil(block / 2));
        let (pr, pc) = (unit / half, unit % half);
        let mut qs = Shared::new_slice(comptime!(block * (d + 1)));
        let mut dos = Shared::new_slice(comptime!(block * (d + 1)));
        let mut ks = Shared::new_slice(comptime!(block * (d + 1)));
        let mut vs = Shared::new_slice(comptime!(block * (d + 1)));
        let mut grads = Shared::new_slice(comptime!(block * block));
        let mut flags = Shared::new_slice(2usize);
        let out_rows = query_rows(head, kv, m, t);
        load_rows::<F>(q, &mut qs, heads_first(head, m), first, m, d, block, units);
        load_rows::<H>(dout, &mut dos, out_rows, first, m, d, block, units);
        // Δ per row: each unit sums its columns of its two rows, then each adds up its rows'.
        #[unroll]
        for i in 0..2 {
            let query = first + pr + i * half;
            let mut partial = f32::new(0.0);
            if query < m {
                let at = row_at(query, out_rows) * d;
                #[unroll]
                for c in 0..cols {
                    let col = pc + c * half;
                    if col < d {
                        partial += f32::cast_from(dout[at + col]) * f32::cast_from(out[at + col]);
                    }
                }
            }
            grads[(pr + i * half) * half + pc] = partial;
        }
        if unit == 0 {
            flags[0] = f32::new(0.0);
        }
        sync_cube();
        let mut row_delta = filled(f32::new(0.0), 2usize);
        let mut row_max = filled(f32::new(0.0), 2usize);
        let mut row_log_sum = filled(f32::new(0.0), 2usize);
        #[unroll]
        for i in 0..2 {
            let query = first + pr + i * half;
            let mut sum = f32::new(0.0);
            for u in 0..half {
                sum += grads[(pr + i * half) * half + u];
            }
            row_delta[i] = sum;
            if query < m {
                row_max[i] = stats[2 * (head * m + query)];
                row_log_sum[i] = stats[2 * (head * m + query) + 1];
                if pc == 0 {
                    delta[head * m + query] = sum;
                }
            }
        }
        let mut acc = filled(f32::new(0.0), comptime!(2 * cols));
        let mut unused = filled(f32::new(0.0), 2usize);
        let mut scores = filled(f32::new(0.0), 4usize);
        let mut dp = filled(f32::new(0.0), 4usize);
        let mut biases = filled(f32::new(0.0), 4usize);
        let ones = filled(f32::new(1.0), 2usize);
        // The first tile's gradients go over the Δ partials behind two barriers, its test's and
        // its loads'.
        let mut tile = 0;
        let mut parity = 0;
        while tile < s {
            let need = share_biases::<G>(
                bias,
                &mut biases,
                &row_max,
                batch * t,
                m,
                t,
                s,
                first + pr,
                tile + pc,
                half,
                masked,
            );
            if any_unit(&mut flags, parity, need) {
                load_keys_values::<F>(
                    k, v, v_bias, &mut ks, &mut vs, head, kv, tile, s, d, block, units, biased,
                );
                sync_cube();
                pair_dots(&mut scores, &qs, pr, &ks, pc, half, d);
                pair_dots(&mut dp, &dos, pr, &vs, pc, half, d);
                #[unroll]
                for i in 0..2 {
                    let query = first + pr + i * half;
                    #[unroll]
                    for j in 0..2 {
                        let key = tile + pc + j * half;
                        let mut ds = f32::new(0.0);
                        if query < m && key < s {
                            let score = scores[2 * i + j] + biases[2 * i + j];
                            let p = f32::exp(score - row_max[i] - row_log_sum[i]);
                            ds = p * (dp[2 * i + j] - row_delta[i]);
                        }
                        grads[(pr + i * half) * block + pc + j * half] = ds;
                    }
                }
                sync_cube();
                add_products(&mut acc, &mut unused, &grads, &ks, pr, pc, d, block, false);
            } else {
                sync_cube();
            }
            parity = 1 - parity;
            tile += block;
        }
        store_rows::<F>(
            dq,
            &acc,
            &ones,
            heads_first(head, m),
            first,
            m,
            pr,
            pc,
            d,
            block,
        );
    }

    /// Flash attention's backward pass for k and v: one cube per `block` keys of one (batch,
    /// kv head), `(block / 2)²` units; the query rows of every head sharing the kv head go by
    /// tiles, each unit computing `P` and `dS` for a 2 × 2 share of the (key, query) pairs,
    /// then adding `dSᵀ·q` to dk and `Pᵀ·dO` to dv for its two keys (kept in registers); dk
    /// is written heads first, dv in the projection's (b, s, kv, d) ([`key_rows`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn flash_attention_dkv_kernel<F: Float, G: Float, H: Float>(
        q: &Tensor<F>,
        k: &Tensor<F>,
        v: &Tensor<F>,
        v_bias: &Tensor<F>,
        bias: &Tensor<G>,
        dout: &Tensor<H>,
        stats: &Tensor<f32>,
        delta: &Tensor<f32>,
        dk: &mut Tensor<F>,
        dv: &mut Tensor<F>,
        heads: usize,
        kv: usize,
        m: usize,
        t: usize,
        s: usize,
        #[comptime] d: usize,
        #[comptime] block: usize,
        #[comptime] masked: bool,
        #[comptime] biased: bool,
        #[define(F, G, H)] _dtypes: [ElemType; 3],
    ) {
        let blocks = s.div_ceil(block);
        if CUBE_POS >= heads * blocks {
            terminate!();
        }
        let head = CUBE_POS / blocks;
        let first_key = (CUBE_POS % blocks) * block;
        let batch = head / kv;
        let unit = UNIT_POS_X as usize;
        let half = comptime!(block / 2);
        let units = comptime!(block * block / 4);
        let cols = comptime!(d.div_ceil(block / 2));
        // This unit's keys are `pr` and `pr + half`, its queries of each tile `pc`, `pc + half`.
        let (pr, pc) = (unit / half, unit % half);
        let mut ks = Shared::new_slice(comptime!(block * (d + 1)));
        let mut vs = Shared::new_slice(comptime!(block * (d + 1)));
        let mut qs = Shared::new_slice(comptime!(block * (d + 1)));
        let mut dos = Shared::new_slice(comptime!(block * (d + 1)));
        let mut probs = Shared::new_slice(comptime!(block * block));
        let mut grads = Shared::new_slice(comptime!(block * block));
        let mut flags = Shared::new_slice(2usize);
        if unit == 0 {
            flags[0] = f32::new(0.0);
        }
        load_keys_values::<F>(
            k, v, v_bias, &mut ks, &mut vs, head, kv, first_key, s, d, block, units, biased,
        );
        let mut dk_acc = filled(f32::new(0.0), comptime!(2 * cols));
        let mut dv_acc = filled(f32::new(0.0), comptime!(2 * cols));
        let mut unused = filled(f32::new(0.0), 2usize);
        let mut scores = filled(f32::new(0.0), 4usize);
        let mut dp = filled(f32::new(0.0), 4usize);
        let mut biases = filled(f32::new(0.0), 4usize);
        let mut maxes = filled(f32::new(0.0), 2usize);
        let mut log_sums = filled(f32::new(0.0), 2usize);
        let mut deltas = filled(f32::new(0.0), 2usize);
        let ones = filled(f32::new(1.0), 2usize);
        sync_cube();
        let out_rows = query_rows(head, kv, m, t);
        let mut tile = 0;
        let mut parity = 0;
        while tile < m {
            let mut need = false;
            #[unroll]
            for j in 0..2 {
                let query = tile + pc + j * half;
                let mut max = f32::new(0.0);
                let mut log_sum = f32::new(0.0);
                let mut dl = f32::new(0.0);
                if query < m {
                    max = stats[2 * (head * m + query)];
                    log_sum = stats[2 * (head * m + query) + 1];
                    dl = delta[head * m + query];
                }
                maxes[j] = max;
                log_sums[j] = log_sum;
                deltas[j] = dl;
                #[unroll]
                for i in 0..2 {
                    let key = first_key + pr + i * half;
                    let live = query < m && key < s;
                    let at = (batch * t + query % t) * s + key;
                    let b = bias_at::<G>(bias, at, live, masked);
                    biases[2 * i + j] = b;
                    need = need || needed(live, b, max);
                }
            }
            if any_unit(&mut flags, parity, need) {
                load_rows::<F>(q, &mut qs, heads_first(head, m), tile, m, d, block, units);
                load_rows::<H>(dout, &mut dos, out_rows, tile, m, d, block, units);
                sync_cube();
                pair_dots(&mut scores, &ks, pr, &qs, pc, half, d);
                pair_dots(&mut dp, &vs, pr, &dos, pc, half, d);
                #[unroll]
                for i in 0..2 {
                    let key = first_key + pr + i * half;
                    #[unroll]
                    for j in 0..2 {
                        let query = tile + pc + j * half;
                        let mut p = f32::new(0.0);
                        let mut ds = f32::new(0.0);
                        if query < m && key < s {
                            let score = scores[2 * i + j] + biases[2 * i + j];
                            p = f32::exp(score - maxes[j] - log_sums[j]);
                            ds = p * (dp[2 * i + j] - deltas[j]);
                        }
                        probs[(pr + i * half) * block + pc + j * half] = p;
                        grads[(pr + i * half) * block + pc + j * half] = ds;
                    }
                }
                sync_cube();
                add_products(
                    &mut dk_acc,
                    &mut unused,
                    &grads,
                    &qs,
                    pr,
                    pc,
                    d,
                    block,
                    false,
                );
                add_products(
                    &mut dv_acc,
                    &mut unused,
                    &probs,
                    &dos,
                    pr,
                    pc,
                    d,
                    block,
                    false,
                );
            } else {
                sync_cube();
            }
            parity = 1 - parity;
            tile += block;
        }
        store_rows::<F>(
            dk,
            &dk_acc,
            &ones,
            heads_first(head, s),
            first_key,
            s,
            pr,
            pc,
            d,
            block,
        );
        store_rows::<F>(
            dv,
            &dv_acc,
            &ones,
            key_rows(head, kv, s),
            first_key,
            s,
            pr,
            pc,
            d,
            block,
        );
    }

    /// An entry's place in the draw's order as an unsigned key, larger for likelier tokens:
    /// the bits of `d = x − max` (≤ 0, the host's weight `exp(d / T)` before the exponential),
    /// a negative's flipped so that keys order as the floats do.
    #[cube]
    fn order_key(d: f32) -> u32 {
        let bits = u32::reinterpret(d);
        let mut key = 4294967295u32 - bits;
        if bits < 2147483648u32 {
            key = bits + 2147483648u32;
        }
        key
    }

    /// Whether the cut `(key, last)` through the draw's order (probability descending, then
    /// index ascending) keeps the entry at index `i` with key `at`: those whose [`order_key`]
    /// is above `key`, and those at `key` up to index `last`.
    #[cube]
    fn keeps(key: u32, last: usize, at: u32, i: usize) -> bool {
        at > key || (at == key && i <= last)
    }

    /// What the cut `(key, last)` keeps of the row at `start`, the same in every unit: the
    /// count of entries, or when `by_mass` the sum of their weights
    /// `exp((x − max)·inv_temperature)`.
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn kept<F: Float>(
        logits: &Tensor<F>,
        start: usize,
        vocab: usize,
        max: f32,
        inv_temperature: f32,
        key: u32,
        last: usize,
        by_mass: bool,
        #[comptime] units: usize,
    ) -> f32 {
        let mut sum = f32::new(0.0);
        let mut i = UNIT_POS_X as usize;
        while i < vocab {
            let d = f32::cast_from(logits[start + i]) - max;
            if keeps(key, last, order_key(d), i) {
                if by_mass {
                    sum += f32::exp(d * inv_temperature);
                } else {
                    sum += 1.0;
                }
            }
            i += units;
        }
        cube_sum(sum, units)
    }

    /// The key of the shortest cut whose [`kept`] count (or mass, when `by_mass`) reaches
    /// `need`: the largest key whose entries and those above it reach it, by bisection (32
    /// steps at most; at key 0 the cut keeps everything, at 2³¹, the key of `d` = 0, the
    /// maximum and its ties).
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn cut_key<F: Float>(
        logits: &Tensor<F>,
        start: usize,
        vocab: usize,
        max: f32,
        inv_temperature: f32,
        need: f32,
        by_mass: bool,
        #[comptime] units: usize,
    ) -> u32 {
        let mut lo = 0u32;
        let mut hi = 2147483648u32;
        let everything = vocab - 1;
        while lo < hi {
            let mid = hi - (hi - lo) / 2;
            let sum = kept::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                mid,
                everything,
                by_mass,
                units,
            );
            if sum >= need {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// The last index of the shortest cut at `key` ([`cut_key`]) whose [`kept`] count (or
    /// mass) reaches `need`: by bisection over the indices of the entries at `key` (no step
    /// when one entry holds it).
    #[allow(clippy::too_many_arguments)]
    #[cube]
    fn cut_last<F: Float>(
        logits: &Tensor<F>,
        start: usize,
        vocab: usize,
        max: f32,
        inv_temperature: f32,
        key: u32,
        need: f32,
        by_mass: bool,
        #[comptime] units: usize,
    ) -> usize {
        // The first and last index at `key`, as floats (exact below 2²⁴) for the cube's
        // maximum; with none there (not for a key from `cut_key`), no step and the row's end.
        let mut first = -f32::cast_from(vocab - 1);
        let mut last = f32::new(0.0);
        let mut i = UNIT_POS_X as usize;
        while i < vocab {
            if order_key(f32::cast_from(logits[start + i]) - max) == key {
                first = f32::max(first, -f32::cast_from(i));
                last = f32::max(last, f32::cast_from(i));
            }
            i += units;
        }
        let mut lo = usize::cast_from(-cube_max(first, units));
        let mut hi = usize::cast_from(cube_max(last, units));
        while lo < hi {
            let mid = (lo + hi) / 2;
            let sum = kept::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                key,
                mid,
                by_mass,
                units,
            );
            if sum >= need {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// One cube per row of `logits` (rows, vocab): the row with every entry that a filtered draw
    /// leaves out set to −3e38 (f16: −65,504, its lowest value). The draw's order is by `d = x −
    /// max` descending, then index ascending; `top_k` (0: none) keeps its first `top_k` entries,
    /// `top_p` (≥ 1: none) the shortest prefix whose weight reaches `top_p` times that of the
    /// `top_k` kept, and `min_p` (≤ 0: none) the entries of weight `exp(d·inv_temperature)` ≥
    /// `min_p`. Each prefix is found by bisection over the order, a pass over the row per step, so
    /// nothing is sorted.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn filter_kernel<F: Float>(
        logits: &Tensor<F>,
        out: &mut Tensor<F>,
        rows: usize,
        vocab: usize,
        inv_temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        #[comptime] units: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let start = row * vocab;
        let unit = UNIT_POS_X as usize;
        let max = row_max::<F>(logits, start, vocab, units);
        // The cut (key, last) keeps everything until a filter shortens it.
        let mut key = 0u32;
        let mut last = vocab - 1;
        if top_k > 0 {
            let need = f32::cast_from(top_k);
            key = cut_key::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                need,
                false,
                units,
            );
            last = cut_last::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                key,
                need,
                false,
                units,
            );
        }
        if top_p < 1.0 {
            let total = kept::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                key,
                last,
                true,
                units,
            );
            let need = top_p * total;
            let p_key = cut_key::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                need,
                true,
                units,
            );
            let p_last = cut_last::<F>(
                logits,
                start,
                vocab,
                max,
                inv_temperature,
                p_key,
                need,
                true,
                units,
            );
            // The shorter of the two cuts.
            if p_key > key || (p_key == key && p_last < last) {
                key = p_key;
                last = p_last;
            }
        }
        // What is left out: −3e38, or the type's lowest finite value where that is higher
        // (f16: −65,504; WGSL has no infinity, nor an f16 literal past its range).
        let left_out = F::cast_from(f32::max(-3.0e38, f32::cast_from(F::min_value())));
        let mut i = unit;
        while i < vocab {
            let x = logits[start + i];
            let d = f32::cast_from(x) - max;
            let mut keep = keeps(key, last, order_key(d), i);
            if min_p > 0.0 && f32::exp(d * inv_temperature) < min_p {
                keep = false;
            }
            if keep {
                out[start + i] = x;
            } else {
                out[start + i] = left_out;
            }
            i += units;
        }
    }

    /// One cube per row: an inverse-CDF draw in vocabulary order (see [`GpuDecode::sample`]).
    /// Unit `u` owns the contiguous segment `[u·len, (u + 1)·len)` of the row and sums its
    /// weights; a scan over the cube gives each segment its cumulative start; the unit whose
    /// segment holds `uniform · total` walks it to the token (when rounding puts the target at
    /// or past the total, the last segment with weight takes it, at its last weighted token).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn sample_kernel<F: Float, G: Float>(
        weights_from: &Tensor<F>,
        logits: &Tensor<F>,
        uniforms: &Tensor<G>,
        tokens: &mut Tensor<f32>,
        logp: &mut Tensor<f32>,
        rows: usize,
        vocab: usize,
        inv_temperature: f32,
        #[comptime] units: usize,
        #[comptime] logprobs: bool,
        #[comptime] filtered: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let start = row * vocab;
        let unit = UNIT_POS_X as usize;
        let max = row_max::<F>(weights_from, start, vocab, units);
        // This unit's segment and its weight.
        let len = vocab.div_ceil(units);
        let first = unit * len;
        let end = usize::min(first + len, vocab);
        let mut own = f32::new(0.0);
        let mut i = first;
        while i < end {
            own += f32::exp((f32::cast_from(weights_from[start + i]) - max) * inv_temperature);
            i += 1;
        }
        // Inclusive scan of the segments' weights (Hillis–Steele).
        let mut scan = Shared::new_slice(units);
        scan[unit] = own;
        sync_cube();
        let mut offset = 1usize;
        while offset < units {
            let mut before = f32::new(0.0);
            if unit >= offset {
                before = scan[unit - offset];
            }
            sync_cube();
            scan[unit] += before;
            sync_cube();
            offset *= 2;
        }
        let inclusive = scan[unit];
        let total = scan[units - 1];
        let mut exclusive = f32::new(0.0);
        if unit > 0 {
            exclusive = scan[unit - 1];
        }
        // The last segment with weight, for a target that rounding puts at or past the total.
        let mut weighted = f32::new(-1.0);
        if own > 0.0 {
            weighted = f32::cast_from(unit);
        }
        let last_weighted = cube_max(weighted, units);
        // The log-prob's normaliser `Σ exp(x − max)` over the unfiltered row: the draw's total
        // when it drew from that row at temperature 1, else a pass of its own.
        let mut sum = total;
        let mut lmax = max;
        if logprobs {
            if filtered {
                lmax = row_max::<F>(logits, start, vocab, units);
            }
            if filtered || inv_temperature != 1.0 {
                let mut partial = f32::new(0.0);
                let mut i = unit;
                while i < vocab {
                    partial += f32::exp(f32::cast_from(logits[start + i]) - lmax);
                    i += units;
                }
                sum = cube_sum(partial, units);
            }
        }
        let target = f32::cast_from(uniforms[row]) * total;
        let past = target >= total && f32::cast_from(unit) == last_weighted;
        if own > 0.0 && ((exclusive <= target && target < inclusive) || past) {
            // Walk the segment: the first token whose running weight exceeds what is left,
            // else (rounding) its last token with weight.
            let rest = target - exclusive;
            let mut acc = f32::new(0.0);
            let mut token = first;
            let mut found = false;
            let mut i = first;
            while i < end && !found {
                let w = f32::exp((f32::cast_from(weights_from[start + i]) - max) * inv_temperature);
                if w > 0.0 {
                    token = i;
                    acc += w;
                    if acc > rest && !past {
                        found = true;
                    }
                }
                i += 1;
            }
            tokens[row] = f32::cast_from(token);
            let mut lp = f32::new(0.0);
            if logprobs {
                lp = f32::cast_from(logits[start + token]) - lmax - f32::ln(sum);
            }
            logp[row] = lp;
        }
    }

    /// A unit per element of `k`, `v` (b, t, kv, d): `k_cache[b, h, len + τ, j]` gets RoPE of
    /// `k + k_bias` (as [`rope_kernel`] computes it), `v_cache` the same place `v + v_bias`.
    /// Each (b, τ) row of kv·d elements of `k` starts `k_stride` elements after the one before
    /// (of `v`, `v_stride`; [`super::strided_rows`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn append_kv_kernel<F: Float, G: Float>(
        k: &Tensor<F>,
        v: &Tensor<F>,
        cos: &Tensor<G>,
        sin: &Tensor<G>,
        k_bias: &Tensor<F>,
        v_bias: &Tensor<F>,
        k_cache: &mut Tensor<F>,
        v_cache: &mut Tensor<F>,
        n: usize,
        t: usize,
        kv: usize,
        d: usize,
        capacity: usize,
        len: usize,
        k_stride: usize,
        v_stride: usize,
        #[comptime] biased: bool,
        #[define(F, G)] _dtypes: [ElemType; 2],
    ) {
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        let j = i % d;
        let head = (i / d) % kv;
        let position = i / (kv * d); // b·t + τ
        let within = i % (kv * d);
        let row = position * d;
        let p = (j + d / 2) % d;
        let at = position * k_stride + within;
        let mut kj = k[at];
        let mut kp = k[at - j + p];
        let mut vj = v[position * v_stride + within];
        if biased {
            let at = head * d + j;
            kj += k_bias[at];
            kp += k_bias[at - j + p];
            vj += v_bias[at];
        }
        let y = f32::cast_from(kj) * f32::cast_from(cos[row + j])
            + f32::cast_from(kp) * f32::cast_from(sin[row + j]);
        let batch = position / t;
        let step = position % t;
        let dst = ((batch * kv + head) * capacity + len + step) * d + j;
        k_cache[dst] = F::cast_from(y);
        v_cache[dst] = vj;
    }

    /// A unit per element: one AdamW step of `param` with `grad`, updating `m`, `v` and
    /// `param` in place, in their type, in the order of burn's ops (see
    /// [`super::GpuDecode::adamw`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn adamw_kernel<F: Float>(
        param: &mut Tensor<F>,
        grad: &Tensor<F>,
        m: &mut Tensor<F>,
        v: &mut Tensor<F>,
        n: usize,
        beta1: f32,
        beta2: f32,
        correction1: f32,
        correction2: f32,
        eps: f32,
        lr: f32,
        decay: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        let g = grad[i];
        let one = F::new(1.0);
        let m1 = m[i] * F::cast_from(beta1) + g * (one - F::cast_from(beta1));
        let m2 = v[i] * F::cast_from(beta2) + g * g * (one - F::cast_from(beta2));
        m[i] = m1;
        v[i] = m2;
        let step = (m1 / F::cast_from(correction1))
            / (F::sqrt(m2 / F::cast_from(correction2)) + F::cast_from(eps));
        param[i] = param[i] * F::cast_from(decay) - step * F::cast_from(lr);
    }

    /// The target's index in a row of `vocab`, or `vocab` when it lies outside (a negative
    /// target wraps to a large index).
    #[cube]
    fn target_index<I: Int>(target: I, vocab: usize) -> usize {
        let mut at = usize::cast_from(target);
        if at > vocab {
            at = vocab;
        }
        at
    }

    /// One cube per row of `logits` (rows, vocab): the row's maximum, then `Σ exp(x − max)`
    /// and `Σ exp(x − max)·x` in one pass; `logp = x[target] − max − ln Σ` (−3e38 for a target
    /// outside the vocabulary), `entropy = max + ln Σ − Σ p·x`, and the statistics
    /// `(max, ln Σ)` for the backward pass.
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn logprobs_kernel<F: Float, I: Int>(
        logits: &Tensor<F>,
        targets: &Tensor<I>,
        logp: &mut Tensor<f32>,
        entropy: &mut Tensor<f32>,
        stats: &mut Tensor<f32>,
        rows: usize,
        vocab: usize,
        #[comptime] units: usize,
        #[define(F, I)] _dtypes: [ElemType; 2],
    ) {
        let row = CUBE_POS;
        if row >= rows {
            terminate!();
        }
        let start = row * vocab;
        let unit = UNIT_POS_X as usize;
        let max = row_max::<F>(logits, start, vocab, units);
        let mut sum = f32::new(0.0);
        let mut weighted = f32::new(0.0);
        let mut i = unit;
        while i < vocab {
            let x = f32::cast_from(logits[start + i]);
            let e = f32::exp(x - max);
            sum += e;
            weighted += e * x;
            i += units;
        }
        let sum = cube_sum(sum, units);
        let weighted = cube_sum(weighted, units);
        if unit == 0 {
            let log_sum = f32::ln(sum);
            let at = target_index::<I>(targets[row], vocab);
            let mut lp = f32::new(-3.0e38);
            if at < vocab {
                lp = f32::cast_from(logits[start + at]) - max - log_sum;
            }
            logp[row] = lp;
            entropy[row] = max + log_sum - weighted / sum;
            stats[2 * row] = max;
            stats[2 * row + 1] = log_sum;
        }
    }

    /// The log-probabilities' gradient at logit `i` of a row of `vocab` whose value is `x`:
    /// `dlogp[row] · ([j = target] − exp(x − max − ln Σ))`.
    #[cube]
    fn logprob_gradient<F: Float, G: Float, I: Int>(
        x: F,
        targets: &Tensor<I>,
        stats: &Tensor<f32>,
        dlogp: &Tensor<G>,
        i: usize,
        vocab: usize,
    ) -> F {
        let row = i / vocab;
        let p = f32::exp(f32::cast_from(x) - stats[2 * row] - stats[2 * row + 1]);
        let mut hit = f32::new(0.0);
        if target_index::<I>(targets[row], vocab) == i % vocab {
            hit = f32::new(1.0);
        }
        F::cast_from(f32::cast_from(dlogp[row]) * (hit - p))
    }

    /// The log-probabilities' backward pass, one unit per logit ([`logprob_gradient`]).
    #[allow(clippy::too_many_arguments)]
    #[cube(launch)]
    pub(super) fn logprobs_backward_kernel<F: Float, G: Float, I: Int>(
        logits: &Tensor<F>,
        targets: &Tensor<I>,
        stats: &Tensor<f32>,
        dlogp: &Tensor<G>,
        out: &mut Tensor<F>,
        n: usize,
        vocab: usize,
        #[define(F, G, I)] _dtypes: [ElemType; 3],
    ) {
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        out[i] = logprob_gradient::<F, G, I>(logits[i], targets, stats, dlogp, i, vocab);
    }

    /// [`logprobs_backward_kernel`] writing the gradient over the logits (each unit reads and
    /// writes its own element).
    #[cube(launch)]
    pub(super) fn logprobs_backward_in_place_kernel<F: Float, G: Float, I: Int>(
        logits: &mut Tensor<F>,
        targets: &Tensor<I>,
        stats: &Tensor<f32>,
        dlogp: &Tensor<G>,
        n: usize,
        vocab: usize,
        #[define(F, G, I)] _dtypes: [ElemType; 3],
    ) {
        let i = ABSOLUTE_POS;
        if i >= n {
            terminate!();
        }
        logits[i] = logprob_gradient::<F, G, I>(logits[i], targets, stats, dlogp, i, vocab);
    }
}

/// [`GpuOps::masked_softmax`] on high-level tensors.
pub fn masked_softmax(x: Tensor<4>, bias: Tensor<3>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as GpuOps>::masked_softmax(
        x.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// [`GpuOps::softmax`] on high-level tensors.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GpuOps>::softmax(x.into_dispatch()))
}

/// [`GpuOps::swiglu`] on high-level tensors.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GpuOps>::swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

/// An attention kernel's mask argument and whether it is one: unmasked, `q` stands in for it
/// (the kernels never read it).
fn bias_argument<const D: usize>(
    q: &Tensor<4>,
    bias: Option<Tensor<D>>,
) -> (FloatTensor<Dispatch>, bool) {
    match bias {
        Some(b) => (b.into_dispatch(), true),
        None => (q.clone().into_dispatch(), false),
    }
}

/// [`GpuDecode::decode_attention`] on high-level tensors: `q` (b, kv, n_rep, d), `k`, `v`
/// (b, kv, s, d), `bias` (b, s) when some key is masked; `rope`: q's RoPE to apply on loading
/// (then `q` is as the projection gives it).
pub fn decode_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: super::fused::DecodeMask,
    rope: Option<super::fused::QueryRope>,
) -> Tensor<4> {
    use super::fused::DecodeMask;
    let [b, _, s, _] = k.dims();
    let (bias, masked, prefix) = match mask {
        DecodeMask::None => (q.clone().into_dispatch(), false, false),
        DecodeMask::Additive(m) => (m.reshape([b, s]).into_dispatch(), true, false),
        DecodeMask::Starts(starts) => (starts.into_dispatch(), true, true),
    };
    let stand_in = || q.clone().into_dispatch();
    let (cos, sin, q_bias, rotate, biased) = match rope {
        Some(r) => {
            let biased = r.bias.is_some();
            let q_bias = r.bias.map(Tensor::into_dispatch).unwrap_or_else(stand_in);
            (
                r.cos.into_dispatch(),
                r.sin.into_dispatch(),
                q_bias,
                true,
                biased,
            )
        }
        None => (stand_in(), stand_in(), stand_in(), false, false),
    };
    Tensor::from_dispatch(<Dispatch as GpuDecode>::decode_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        bias,
        cos,
        sin,
        q_bias,
        masked,
        prefix,
        rotate,
        biased,
    ))
}

/// [`GpuDecode::filter_logits`] on high-level tensors: `logits` (rows, vocab).
pub fn filter_logits(
    logits: Tensor<2>,
    inv_temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as GpuDecode>::filter_logits(
        logits.into_dispatch(),
        inv_temperature as f64,
        top_k,
        top_p as f64,
        min_p as f64,
    ))
}

/// [`GpuDecode::sample`] on high-level tensors: `logits` (rows, vocab), drawn from, or from
/// `filtered` (rows, vocab) when given; `uniforms` (rows) f32; the tokens (as f32) and their
/// log-probs, each (rows).
pub fn sample(
    logits: Tensor<2>,
    filtered: Option<Tensor<2>>,
    uniforms: Tensor<1>,
    inv_temperature: f32,
    logprobs: bool,
) -> (Tensor<1>, Tensor<1>) {
    let is_filtered = filtered.is_some();
    let weights_from = filtered.unwrap_or_else(|| logits.clone());
    let (tokens, logp) = <Dispatch as GpuDecode>::sample(
        weights_from.into_dispatch(),
        logits.into_dispatch(),
        uniforms.into_dispatch(),
        inv_temperature as f64,
        logprobs,
        is_filtered,
    );
    (Tensor::from_dispatch(tokens), Tensor::from_dispatch(logp))
}

/// [`GpuOps::add_rms_norm`] on high-level tensors: `(x + residual, rms_norm(x + residual))`.
pub fn add_rms_norm<const D: usize>(
    x: Tensor<D>,
    residual: Tensor<D>,
    weight: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<D>) {
    let (sum, out) = <Dispatch as GpuOps>::add_rms_norm(
        x.into_dispatch(),
        residual.into_dispatch(),
        weight.into_dispatch(),
        eps,
    );
    (Tensor::from_dispatch(sum), Tensor::from_dispatch(out))
}

/// [`GpuDecode::append_kv`] on high-level tensors: the (b, kv, capacity, d) buffers with
/// positions `len..len + t` written from `step`.
pub fn append_kv(
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    step: super::fused::KvStep,
    len: usize,
) -> (Tensor<4>, Tensor<4>) {
    let (k, v) = (step.k, step.v);
    let (k_bias, v_bias, biased) = match step.biases {
        Some((kb, vb)) => (kb.into_dispatch(), vb.into_dispatch(), true),
        None => (k.clone().into_dispatch(), v.clone().into_dispatch(), false),
    };
    let (k_cache, v_cache) = <Dispatch as GpuDecode>::append_kv(
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        step.cos.into_dispatch(),
        step.sin.into_dispatch(),
        k_bias,
        v_bias,
        biased,
        len,
    );
    (
        Tensor::from_dispatch(k_cache),
        Tensor::from_dispatch(v_cache),
    )
}

/// [`GpuDecode::adamw`] on high-level tensors: (param, m, v) after the step.
pub fn adamw<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    scalars: AdamWScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let (p, m, v) = <Dispatch as GpuDecode>::adamw(
        param.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        scalars,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// [`GpuOps::attention`] on high-level tensors: `q` (b, kv, m, d), `k` (b, kv, s, d), `v`
/// (b, s, kv, d), `v_bias` (kv·d) the v projection's bias when it is to be added, `bias`
/// (b, t, s) when some key is masked; (b, t, kv·m/t, d).
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    v_bias: Option<Tensor<1>>,
    bias: Option<Tensor<3>>,
    t: usize,
) -> Tensor<4> {
    let (bias, masked) = bias_argument(&q, bias);
    let (v_bias, biased) = match v_bias {
        Some(b) => (
            crate::decoder::same_type(b, v.dtype()).into_dispatch(),
            true,
        ),
        None => (v.clone().into_dispatch(), false),
    };
    Tensor::from_dispatch(<Dispatch as GpuOps>::attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        v_bias,
        bias,
        masked,
        biased,
        t,
    ))
}

/// [`GpuOps::token_logprobs`] on high-level tensors: `logits` (rows, vocab), `targets` (rows);
/// (log-probabilities, entropies), each (rows) in f32.
pub fn token_logprobs(logits: Tensor<2>, targets: Tensor<1, Int>) -> (Tensor<1>, Tensor<1>) {
    let (logp, entropy) =
        <Dispatch as GpuOps>::token_logprobs(logits.into_dispatch(), targets.into_dispatch());
    (Tensor::from_dispatch(logp), Tensor::from_dispatch(entropy))
}

/// [`GpuOps::head_logprobs`] on high-level tensors: (logp, entropy).
pub fn head_logprobs(
    x: Tensor<2>,
    w: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> (Tensor<1>, Tensor<1>) {
    let (logp, entropy) = <Dispatch as GpuOps>::head_logprobs(
        x.into_dispatch(),
        w.into_dispatch(),
        targets.into_dispatch(),
        chunk,
    );
    (Tensor::from_dispatch(logp), Tensor::from_dispatch(entropy))
}

/// [`GpuOps::rope_heads_first`] on high-level tensors: (b, t, heads, d) in, (b, heads, t, d)
/// out, `bias` (heads·d) added first when given.
pub fn rope_heads_first(
    x: Tensor<4>,
    cos: Tensor<4>,
    sin: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    let (bias, biased) = match bias {
        Some(b) => (b.into_dispatch(), true),
        None => (x.clone().into_dispatch(), false),
    };
    Tensor::from_dispatch(<Dispatch as GpuOps>::rope_heads_first(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        bias,
        biased,
    ))
}

/// [`GpuOps::rope`] on high-level tensors, `bias` (heads·d) added first when given.
pub fn rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
    let (bias, biased) = match bias {
        Some(b) => (b.into_dispatch(), true),
        None => (x.clone().into_dispatch(), false),
    };
    Tensor::from_dispatch(<Dispatch as GpuOps>::rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        bias,
        biased,
    ))
}

/// [`GpuOps::rms_norm`] on high-level tensors.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GpuOps>::rms_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        eps,
    ))
}

/// What a device-to-host read returns.
type ReadResult = Result<Vec<cubecl::bytes::Bytes>, cubecl::server::ServerError>;

/// A device-to-host copy queued on the GPU's stream when it is made: its place in the queue is
/// before whatever launches after it, so the host can queue more work and collect the values
/// when the copy is done ([`super::fused::ReadAhead`]).
pub(crate) struct QueuedRead {
    read:
        Result<ReadResult, std::pin::Pin<Box<dyn std::future::Future<Output = ReadResult> + Send>>>,
    shape: Shape,
    dtype: burn::tensor::DType,
}

/// Queue the copy of `x` to the host now, where `x` lives on a cubecl backend without burn's
/// fusion (whose tensors are recorded lazily); `x` back otherwise.
pub(crate) fn queue_read(x: Tensor<1>) -> Result<QueuedRead, Box<Tensor<1>>> {
    #[cfg(not(feature = "fusion"))]
    {
        use burn::backend::{DispatchTensor, DispatchTensorKind};
        use std::task::{Context, Poll, Waker};
        let DispatchTensor { kind, autodiff } = x.into_dispatch();
        match kind {
            DispatchTensorKind::Cube(t) => {
                let t = into_contiguous(t.float());
                let (shape, dtype) = (t.meta.shape().clone(), t.dtype);
                let copy = cubecl::server::CopyDescriptor::new(
                    t.handle.clone().binding(),
                    shape.clone(),
                    t.meta.strides().clone(),
                    t.elem_size(),
                );
                let client = t.client.clone();
                let mut read: std::pin::Pin<
                    Box<dyn std::future::Future<Output = ReadResult> + Send>,
                > = Box::pin(async move { client.read_tensor_async(vec![copy]).await });
                // The first poll submits the copy, here and now; the rest waits for the device.
                let read = match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(done) => Ok(done),
                    Poll::Pending => Err(read),
                };
                Ok(QueuedRead { read, shape, dtype })
            }
            #[allow(unreachable_patterns)]
            kind => Err(Box::new(Tensor::from_dispatch(DispatchTensor {
                kind,
                autodiff,
            }))),
        }
    }
    #[cfg(feature = "fusion")]
    Err(Box::new(x))
}

impl QueuedRead {
    /// Wait for the copy and convert the values to f32.
    pub(crate) fn wait(self) -> Result<Vec<f32>, crate::ModelError> {
        let failed = |e: String| crate::ModelError::Input(format!("reading from the GPU: {e}"));
        let done = match self.read {
            Ok(done) => done,
            Err(pending) => cubecl::future::block_on(pending),
        };
        let mut bytes = done.map_err(|e| failed(format!("{e:?}")))?;
        let bytes = bytes.pop().ok_or_else(|| failed("no bytes".into()))?;
        burn::tensor::TensorData::from_bytes(bytes, self.shape, self.dtype)
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| failed(format!("{e:?}")))
    }
}
