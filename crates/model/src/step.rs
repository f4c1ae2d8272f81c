//! One decode step — one new token per sequence — through the whole model on raw buffers.
//!
//! The composed path ([`crate::Model::hidden`] then the head) issues some twenty burn ops per
//! layer: every one allocates a tensor, goes through dispatch, and the reshapes, views and
//! `slice_assign` of the cache append copy or re-describe buffers. On a model small enough
//! that its kernels cost nothing (hidden 64) that is ~0.1 ms per decode step, against
//! ~0.7 ms for the whole step of the `bench generate` model. Here the same kernels
//! ([`crate::decode`], [`crate::skinny`], [`crate::fused`]) run in the same order on slices:
//! the layer's keys and values are written straight into the cache buffers, attention reads
//! them in place and writes the (b, h·d) layout the output projection takes, and the
//! intermediates live in one buffer per step. Every float is computed by the same code as on
//! the composed path, so the logits are bit-identical (`tests/decode.rs` checks it on Qwen2,
//! Llama and Qwen3 configs, tied and untied, with ragged padding and cache regrowth).
//!
//! Taken only where the composed path would itself run the decode kernels: plain f32 Flex
//! weights (no autodiff, no LoRA), a plain MLP (no bias), a CPU the kernels suit
//! ([`crate::decode::enabled`]'s conditions), and a cache that already holds the prompt.

use burn::backend::{BackendTensor, DispatchTensor, DispatchTensorKind};
use burn::tensor::{DType, Device, Tensor};
use burn_flex::FlexTensor;

use crate::decode::kernels::{Weight, linear_into, linear_nt_into, mlp_into, rope_into};
use crate::decode::{Geometry, MAX_ROWS, attention_into, cpu_suits};
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

/// The inputs of one step: `ids` and the rotary tables `cos`, `sin` (b, d) of the new tokens'
/// positions, and the additive attention `bias` (b, s) over the cached keys plus the new one,
/// or empty when every key is visible.
pub(crate) struct StepInput<'a> {
    pub ids: &'a [u32],
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub bias: &'a [f32],
}

/// Logits (b, vocab) for one new token per row, appending its keys and values to `caches`;
/// `None`, with nothing changed, when the step cannot take this path (see the module docs).
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
    let b = input.ids.len();
    let plain_cache =
        |c: &LayerCache| c.len > 0 && plain(c.k.clone()).is_some() && plain(c.v.clone()).is_some();
    if !(1..=MAX_ROWS).contains(&b)
        || !cpu_suits()
        || layers.len() != caches.len()
        || !caches.iter().all(|c| c.as_ref().is_some_and(plain_cache))
    {
        return None;
    }
    let es = f32_rows(&embed);
    let (vocab, hidden) = {
        let s = embed.layout().shape();
        (s[0], s[1])
    };
    // The residual stream, gathered from the embedding rows.
    let mut x = Vec::with_capacity(b * hidden);
    for &id in input.ids {
        x.extend_from_slice(&es[id as usize * hidden..][..hidden]);
    }
    let widest = layers
        .iter()
        .map(|l| l.q.dims().1.max(hidden))
        .max()
        .unwrap_or(hidden);
    let mut normed = vec![0f32; b * hidden];
    let mut q = vec![0f32; b * widest];
    let mut q_rot = vec![0f32; b * widest];
    let mut attn = vec![0f32; b * widest];
    let mut next = vec![0f32; b * hidden];
    for (layer, slot) in layers.iter().zip(caches.iter_mut()) {
        let cache = slot.as_mut()?;
        let (h, kv, d) = (layer.heads, layer.kv_heads, layer.head_dim);
        let (qw, kvw) = (h * d, kv * d);
        layer.input_norm.apply(&mut normed, &x);
        let (q, q_rot, attn) = (&mut q[..b * qw], &mut q_rot[..b * qw], &mut attn[..b * qw]);
        let mut k = vec![0f32; b * kvw];
        let mut k_rot = vec![0f32; b * kvw];
        let mut v = vec![0f32; b * kvw];
        layer.q.apply(q, &normed, b);
        layer.k.apply(&mut k, &normed, b);
        layer.v.apply(&mut v, &normed, b);
        if let Some((qn, kn)) = &layer.qk_norm {
            let (q0, k0) = (q.to_vec(), k.clone());
            qn.apply(q, &q0);
            kn.apply(&mut k, &k0);
        }
        let scale = 1.0 / (d as f32).sqrt();
        rope_into(q_rot, q, input.cos, input.sin, [b, h, d], scale);
        rope_into(&mut k_rot, &k, input.cos, input.sin, [b, kv, d], 1.0);
        // Append this step's keys and values in place: (b, kv, capacity, d) buffers.
        cache.make_room(1);
        let device = cache.k.device();
        let take = |t: &mut Tensor<4>| {
            let t = std::mem::replace(t, Tensor::empty([0, 0, 0, 0], &device));
            plain(t).map(dense)
        };
        let (Some(mut kb), Some(mut vb)) = (take(&mut cache.k), take(&mut cache.v)) else {
            unreachable!("checked above: every cache buffer is plain f32");
        };
        let cap = kb.layout().shape()[2];
        let at = cache.len;
        for (buf, rows) in [(&mut kb, &k_rot), (&mut vb, &v)] {
            let store = buf.storage_mut::<f32>();
            for bg in 0..b * kv {
                store[(bg * cap + at) * d..][..d].copy_from_slice(&rows[bg * d..][..d]);
            }
        }
        cache.len += 1;
        let strides = [kv * cap * d, cap * d, d, 1];
        let geo = Geometry {
            t: 1,
            h,
            d,
            kv,
            s: cache.len,
            k_off: 0,
            k_st: strides,
            v_off: 0,
            v_st: strides,
        };
        // (b, kv, n_rep, d) with t = 1 is (b, h·d), the layout `o` takes.
        attention_into(
            attn,
            q_rot,
            kb.storage::<f32>(),
            vb.storage::<f32>(),
            input.bias,
            &geo,
            b,
        );
        cache.k = tensor(kb);
        cache.v = tensor(vb);
        layer.o.apply(&mut next, attn, b);
        next.iter_mut().zip(&x).for_each(|(o, r)| *o += r);
        let [gate, up, down] = &layer.mlp;
        let inter = gate.layout().shape()[1];
        mlp_into(
            &mut x,
            &next,
            &f32_rows(&layer.post_norm.w),
            layer.post_norm.eps,
            [&Weight::of(gate), &Weight::of(up), &Weight::of(down)],
            [b, hidden, inter],
        );
    }
    final_norm.apply(&mut normed, &x);
    let logits = match head {
        Some(head) => {
            let mut logits = vec![0f32; b * head.dims().1];
            head.apply(&mut logits, &normed, b);
            logits
        }
        None => {
            let mut logits = vec![0f32; b * vocab];
            linear_nt_into(&mut logits, &normed, &es, [b, hidden, vocab]);
            logits
        }
    };
    Some(logits)
}
