//! A forward pass with a KV cache — a prefill, or a decode step of one new token per
//! sequence — through the whole model on raw buffers, for the last position's logits.
//!
//! The composed path ([`crate::Model::hidden`] then the head) issues some twenty burn ops per
//! layer: every one allocates a tensor, goes through dispatch, and the reshapes, views and
//! `slice_assign` of the cache append copy or re-describe buffers. On a model small enough
//! that its kernels cost nothing (hidden 64) that is ~0.1 ms per decode step, against
//! ~0.7 ms for the whole step of the `bench generate` model. Here the same kernels
//! ([`crate::decode`], [`crate::skinny`], [`crate::fused`]) run in the same order on slices:
//! the layer's keys and values are written straight into the cache buffers, attention reads
//! them in place and writes the layout the output projection takes, the intermediates live in
//! buffers allocated once per call, and the last layer computes only the last position's
//! query, attention and MLP. Every kept float is computed by the same code as on the composed
//! path, so the logits are bit-identical (`tests/decode.rs`: Qwen2, Llama and Qwen3 configs,
//! tied and untied, ragged padding, cache regrowth, prefill and decode steps).
//!
//! Taken only where the composed path would itself run the decode kernels: plain f32 Flex
//! weights (no autodiff, no LoRA), a plain MLP (no bias), at most [`MAX_ROWS`] new tokens, and
//! a CPU the kernels suit ([`crate::decode::enabled`]'s conditions).

use burn::backend::{BackendTensor, DispatchTensor, DispatchTensorKind};
use burn::tensor::{DType, Device, Tensor};
use burn_flex::FlexTensor;

use crate::decode::kernels::{Weight, linear_into, linear_nt_into, mlp_into, rope_into};
use crate::decode::{Geometry, MAX_ROWS, attention_into, cpu_suits, ungroup};
use crate::decoder::{CausalLm, DecoderLayer, LayerCache, Linear, RmsNorm};
use crate::fused::{dense, f32_rows, rms_norm_rows};

/// The buffer of an untracked f32 tensor on the plain Flex device; `None` otherwise.
fn plain<const D: usize>(t: Tensor<D>) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 || t.device() != Device::flex() {
        return None;
    }
    match t.into_dispatch().kind {
        DispatchTensorKind::Flex(BackendTensor::Float(f)) => Some(f),
        _ => None,
    }
}

fn tensor<const D: usize>(f: FlexTensor) -> Tensor<D> {
    Tensor::from_dispatch(DispatchTensor {
        kind: DispatchTensorKind::Flex(BackendTensor::Float(f)),
        autodiff: Default::default(),
    })
}

struct Norm {
    w: FlexTensor,
    eps: f32,
}

impl Norm {
    fn of(n: &RmsNorm) -> Option<Self> {
        Some(Self {
            w: plain(n.weight.val())?,
            eps: n.eps as f32,
        })
    }

    /// `out = rms_norm(x) · w` over rows of `w.len()`.
    fn apply(&self, out: &mut [f32], x: &[f32]) {
        rms_norm_rows(out, x, &f32_rows(&self.w), self.eps);
    }
}

/// A projection without LoRA: weight (k, n) and optional bias (n).
struct Dense {
    w: FlexTensor,
    bias: Option<FlexTensor>,
}

impl Dense {
    fn of(l: &Linear) -> Option<Self> {
        if l.lora.is_some() {
            return None;
        }
        let bias = match &l.bias {
            Some(b) => Some(plain(b.val())?),
            None => None,
        };
        Some(Self {
            w: plain(l.weight.val())?,
            bias,
        })
    }

    /// (k, n)
    fn dims(&self) -> (usize, usize) {
        let s = self.w.layout().shape();
        (s[0], s[1])
    }

    /// `out (m, n) = x (m, k) · w + bias`.
    fn apply(&self, out: &mut [f32], x: &[f32], m: usize) {
        let (k, n) = self.dims();
        let bias = self.bias.as_ref().map(f32_rows);
        linear_into(out, x, &Weight::of(&self.w), bias.as_deref(), [m, k, n]);
    }
}

/// One decoder layer's weights as buffers.
struct Layer {
    input_norm: Norm,
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    qk_norm: Option<(Norm, Norm)>,
    post_norm: Norm,
    /// gate, up, down
    mlp: [FlexTensor; 3],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Layer {
    fn of(l: &DecoderLayer) -> Option<Self> {
        let a = &l.self_attn;
        let mlp_plain = |p: &Linear| p.bias.is_none() && p.lora.is_none();
        let (gate, up, down) = (&l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj);
        if !(mlp_plain(gate) && mlp_plain(up) && mlp_plain(down)) {
            return None;
        }
        let qk_norm = match (&a.q_norm, &a.k_norm) {
            (Some(q), Some(k)) => Some((Norm::of(q)?, Norm::of(k)?)),
            (None, None) => None,
            _ => return None,
        };
        Some(Self {
            input_norm: Norm::of(&l.input_layernorm)?,
            q: Dense::of(&a.q_proj)?,
            k: Dense::of(&a.k_proj)?,
            v: Dense::of(&a.v_proj)?,
            o: Dense::of(&a.o_proj)?,
            qk_norm,
            post_norm: Norm::of(&l.post_attention_layernorm)?,
            mlp: [
                plain(gate.weight.val())?,
                plain(up.weight.val())?,
                plain(down.weight.val())?,
            ],
            heads: a.num_heads,
            kv_heads: a.num_kv_heads,
            head_dim: a.head_dim,
        })
    }
}

/// The new tokens of one forward pass: `ids` (b, t); the rotary tables `cos`, `sin` (b·t, d)
/// of their positions; the additive attention `bias` (b, t, s) over the cached keys plus the
/// new ones, or empty when every key is visible.
pub(crate) struct StepInput<'a> {
    pub ids: &'a [u32],
    pub t: usize,
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub bias: &'a [f32],
}

/// Whether `rows` new tokens through `net` can take this path, by the cheap checks (the rest,
/// per weight and cache buffer, are made by [`logits`]): a CPU the kernels suit, at most
/// [`MAX_ROWS`] rows, and plain f32 Flex weights (an autodiff model's are tracked).
pub(crate) fn applies(net: &CausalLm, rows: usize) -> bool {
    (1..=MAX_ROWS).contains(&rows) && cpu_suits() && plain(net.model.embed_tokens.val()).is_some()
}

/// Rows `t − 1, 2t − 1, …` (the last position of each sequence) of `x`, `width` floats each.
fn last_rows(x: &[f32], t: usize, width: usize) -> Vec<f32> {
    x.chunks(t * width)
        .flat_map(|seq| &seq[(t - 1) * width..])
        .copied()
        .collect()
}

/// Logits (b, vocab) at the last of `t` new tokens per row, appending their keys and values to
/// `caches` (a slot still empty gets buffers of exactly `t` positions); `None`, with nothing
/// changed, when this path does not apply (see the module docs).
///
/// Every layer computes keys and values for all `b·t` rows; the last layer computes queries,
/// attention, output projection and MLP for the last row of each sequence only — all that
/// the logits read (the composed path computes the other rows and drops them; every kernel
/// here is row-independent, so the kept rows come out the same).
pub(crate) fn logits(
    net: &CausalLm,
    input: &StepInput<'_>,
    caches: &mut [Option<LayerCache>],
) -> Option<Vec<f32>> {
    let layers: Vec<Layer> = net
        .model
        .layers
        .iter()
        .map(Layer::of)
        .collect::<Option<_>>()?;
    let embed = plain(net.model.embed_tokens.val())?;
    let final_norm = Norm::of(&net.model.norm)?;
    let head = match &net.lm_head {
        Some(l) => Some(Dense::of(l)?),
        None => None,
    };
    let t = input.t;
    let rows = input.ids.len();
    let b = rows / t.max(1);
    let plain_cache = |c: &Option<LayerCache>| match c {
        Some(c) => plain(c.k.clone()).is_some() && plain(c.v.clone()).is_some(),
        None => true,
    };
    if t == 0
        || !(1..=MAX_ROWS).contains(&rows)
        || !cpu_suits()
        || layers.is_empty()
        || layers.len() != caches.len()
        || !caches.iter().all(plain_cache)
    {
        return None;
    }
    let es = f32_rows(&embed);
    let (vocab, hidden) = {
        let s = embed.layout().shape();
        (s[0], s[1])
    };
    // The residual stream, gathered from the embedding rows: (b·t, hidden), then (b, hidden)
    // after the last layer's attention.
    let mut x = Vec::with_capacity(rows * hidden);
    for &id in input.ids {
        x.extend_from_slice(&es[id as usize * hidden..][..hidden]);
    }
    let d_rope = input.cos.len() / rows;
    let (last_cos, last_sin) = (
        last_rows(input.cos, t, d_rope),
        last_rows(input.sin, t, d_rope),
    );
    let n_layers = layers.len();
    // Buffers for every layer's intermediates, sized for the widest layer: allocated (and
    // zeroed) once per call, not per layer.
    let q_widest = layers
        .iter()
        .map(|l| l.heads * l.head_dim)
        .max()
        .unwrap_or(0);
    let kv_widest = layers
        .iter()
        .map(|l| l.kv_heads * l.head_dim)
        .max()
        .unwrap_or(0);
    let mut normed = vec![0f32; rows * hidden];
    let (mut k, mut v, mut k_rot) = (
        vec![0f32; rows * kv_widest],
        vec![0f32; rows * kv_widest],
        vec![0f32; rows * kv_widest],
    );
    let (mut q, mut q_rot, mut grouped, mut attn) = (
        vec![0f32; rows * q_widest],
        vec![0f32; rows * q_widest],
        vec![0f32; rows * q_widest],
        vec![0f32; rows * q_widest],
    );
    let mut next = vec![0f32; rows * hidden];
    let mut x_next = vec![0f32; rows * hidden];
    let mut x_rows = rows;
    for (li, (layer, slot)) in layers.iter().zip(caches.iter_mut()).enumerate() {
        let (h, kv, d) = (layer.heads, layer.kv_heads, layer.head_dim);
        let (qw, kvw) = (h * d, kv * d);
        let x_in = &x[..x_rows * hidden];
        let normed = &mut normed[..rows * hidden];
        layer.input_norm.apply(normed, x_in);
        // Keys and values of every new position, rotated, into the cache buffers
        // (b, kv, capacity, d).
        let (k, v, k_rot) = (
            &mut k[..rows * kvw],
            &mut v[..rows * kvw],
            &mut k_rot[..rows * kvw],
        );
        layer.k.apply(k, normed, rows);
        layer.v.apply(v, normed, rows);
        if let Some((_, kn)) = &layer.qk_norm {
            let k0 = k.to_vec();
            kn.apply(k, &k0);
        }
        rope_into(k_rot, k, input.cos, input.sin, [rows, kv, d], 1.0);
        let device = Device::flex();
        let cache = slot.get_or_insert_with(|| {
            let empty = || Tensor::zeros([b, kv, t, d], &device);
            LayerCache::empty(empty(), empty())
        });
        cache.make_room(t);
        let take = |t: &mut Tensor<4>| {
            let t = std::mem::replace(t, Tensor::empty([0, 0, 0, 0], &device));
            plain(t).map(dense)
        };
        let (Some(mut kb), Some(mut vb)) = (take(&mut cache.k), take(&mut cache.v)) else {
            unreachable!("checked above: every cache buffer is plain f32");
        };
        let cap = kb.layout().shape()[2];
        let at = cache.len;
        for (buf, new) in [(&mut kb, &*k_rot), (&mut vb, &*v)] {
            let store = buf.storage_mut::<f32>();
            for bi in 0..b {
                for ti in 0..t {
                    for g in 0..kv {
                        let src = &new[((bi * t + ti) * kv + g) * d..][..d];
                        store[((bi * kv + g) * cap + at + ti) * d..][..d].copy_from_slice(src);
                    }
                }
            }
        }
        cache.len += t;
        // Queries: every position, or in the last layer the last of each sequence.
        let last = li + 1 == n_layers && t > 1;
        let (tq, qrows) = if last { (1, b) } else { (t, rows) };
        let (q_in, cos, sin, bias, residual);
        let (last_in, last_bias, last_x);
        if last {
            last_in = last_rows(normed, t, hidden);
            last_bias = match input.bias.is_empty() {
                true => Vec::new(),
                false => last_rows(input.bias, t, cache.len),
            };
            last_x = last_rows(x_in, t, hidden);
            (q_in, cos, sin, bias, residual) = (
                &last_in[..],
                &last_cos[..],
                &last_sin[..],
                &last_bias[..],
                &last_x[..],
            );
        } else {
            (q_in, cos, sin, bias, residual) = (&*normed, input.cos, input.sin, input.bias, x_in);
        }
        let (q, q_rot) = (&mut q[..qrows * qw], &mut q_rot[..qrows * qw]);
        layer.q.apply(q, q_in, qrows);
        if let Some((qn, _)) = &layer.qk_norm {
            let q0 = q.to_vec();
            qn.apply(q, &q0);
        }
        rope_into(q_rot, q, cos, sin, [qrows, h, d], 1.0 / (d as f32).sqrt());
        let strides = [kv * cap * d, cap * d, d, 1];
        let geo = Geometry {
            t: tq,
            h,
            d,
            kv,
            s: cache.len,
            k_off: 0,
            k_st: strides,
            v_off: 0,
            v_st: strides,
        };
        // (b, kv, tq, n_rep, d): with tq = 1 that is (b, h·d), the layout `o` takes.
        let grouped = &mut grouped[..qrows * qw];
        attention_into(
            grouped,
            q_rot,
            kb.storage::<f32>(),
            vb.storage::<f32>(),
            bias,
            &geo,
            b,
        );
        cache.k = tensor(kb);
        cache.v = tensor(vb);
        let attn = if tq == 1 {
            &*grouped
        } else {
            let attn = &mut attn[..qrows * qw];
            ungroup(attn, grouped, [b, tq, h, kv, d]);
            &*attn
        };
        let next = &mut next[..qrows * hidden];
        layer.o.apply(next, attn, qrows);
        next.iter_mut().zip(residual).for_each(|(o, r)| *o += r);
        let [gate, up, down] = &layer.mlp;
        let inter = gate.layout().shape()[1];
        mlp_into(
            &mut x_next[..qrows * hidden],
            next,
            &f32_rows(&layer.post_norm.w),
            layer.post_norm.eps,
            [&Weight::of(gate), &Weight::of(up), &Weight::of(down)],
            [qrows, hidden, inter],
        );
        std::mem::swap(&mut x, &mut x_next);
        x_rows = qrows;
    }
    // With t = 1 (or after the last layer took the last rows) x holds b rows.
    let normed = &mut normed[..b * hidden];
    final_norm.apply(normed, &x[..b * hidden]);
    let logits = match head {
        Some(head) => {
            let mut logits = vec![0f32; b * head.dims().1];
            head.apply(&mut logits, normed, b);
            logits
        }
        None => {
            let mut logits = vec![0f32; b * vocab];
            linear_nt_into(&mut logits, normed, &es, [b, hidden, vocab]);
            logits
        }
    };
    Some(logits)
}
