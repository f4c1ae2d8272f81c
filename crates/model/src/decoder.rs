//! The decoder shared by Qwen2, Qwen3 and Llama, with field names equal to the HF weight names
//! (`model.layers.{i}.self_attn.q_proj.weight`, ...), so the code reads like the checkpoint.
//!
//! Shapes use `b` batch, `t` new tokens, `s` keys (cached + new), `h` query heads, `kv` key/value
//! heads, `d` head dim, `n_rep = h / kv`. Attention follows transformers' eager implementation
//! (`Qwen2Attention`, `LlamaAttention`): RoPE on q and k (rotate-half form), grouped-query
//! attention, softmax in f32, additive mask.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use reasonlab_core::rng::SplitMix64;

use crate::config::ModelConfig;

/// A dense layer holding its weight as `(in, out)`, the transpose of the HF `(out, in)` layout;
/// the transpose happens once at load and save time, not at every forward.
#[derive(Module, Debug)]
pub struct Linear {
    /// (in, out)
    pub weight: Param<Tensor<2>>,
    /// (out)
    pub bias: Option<Param<Tensor<1>>>,
    /// A low-rank adapter (Hu et al. 2021), when LoRA is on: `y = xW + b + scale·(xA)B`.
    pub lora: Option<LoraAdapter>,
}

/// LoRA factors: `a` (in, r), `b` (r, out), `scale = alpha / r`.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<2>>,
    #[module(skip)]
    pub scale: f64,
}

impl Linear {
    /// A zeroed (in, out) layer: the placeholder a checkpoint load fills.
    pub fn zeros(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Self {
        Self::normal(d_in, d_out, bias, 0.0, 0, device)
    }

    /// An (in, out) layer initialised as transformers does: weights normal(0, `std`) from a
    /// seeded generator, bias zero.
    pub fn normal(
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f64,
        seed: u64,
        device: &Device,
    ) -> Self {
        let mut rng = SplitMix64::from_state(seed);
        Init {
            rng: &mut rng,
            std,
            device,
            dtype: None,
        }
        .linear(d_in, d_out, bias)
    }

    /// `x`: (b, t, in) → (b, t, out)
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d_in] = x.dims();
        let d_out = self.weight.dims()[1];
        let w = self.weight.val();
        // Under mixed precision the input may be f32 (the final norm's output): a matmul
        // computes in its weight's type.
        let x = same_type(x, w.dtype()).reshape([b * t, d_in]);
        if self.lora.is_none() && crate::decode::enabled(b * t, &x, &w) {
            let bias = self.bias.as_ref().map(|p| p.val());
            return crate::decode::linear(x, &w, bias.as_ref()).reshape([b, t, d_out]);
        }
        let y = self.product(x, w); // (b*t, out)
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, t, d_out])
    }

    /// [`Linear::forward`] without adding the bias, for a caller that folds it into its next
    /// kernel: (b, t, in) → (b, t, out).
    pub fn forward_unbiased(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d_in] = x.dims();
        let w = self.weight.val();
        let d_out = w.dims()[1];
        let x = same_type(x, w.dtype()).reshape([b * t, d_in]);
        self.product(x, w).reshape([b, t, d_out])
    }

    /// `x · W` and the LoRA term: (rows, in) → (rows, out).
    fn product(&self, x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
        let mut y = crate::fused::matmul(x.clone(), w);
        if let Some(l) = &self.lora {
            // Adapters are f32 where the base may be 16-bit (`Model::load_as`).
            let (a, b) = (
                same_type(l.a.val(), x.dtype()),
                same_type(l.b.val(), x.dtype()),
            );
            let down = crate::fused::matmul(x, a);
            y = y + crate::fused::matmul(down, b).mul_scalar(l.scale);
        }
        y
    }
}

/// `x` in `dtype` (itself when it already is).
pub(crate) fn same_type<const D: usize>(x: Tensor<D>, dtype: burn::tensor::DType) -> Tensor<D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(FloatDType::from(dtype))
    }
}

/// Every float weight of `net` cast to `dtype`, each cast recorded by autodiff (on a tracked
/// model the gradients flow back, in f32, to the original weights); parameter ids are kept.
/// Packed projections are dropped ([`CausalLm::unpacked`]).
pub fn cast_floats(net: CausalLm, dtype: FloatDType) -> CausalLm {
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| same_type(t, dtype.into()))
        }
    }
    net.unpacked().map(&mut Cast(dtype))
}

/// Root-mean-square layer norm (Zhang & Sennrich 2019), computed in f32 like HF's `Qwen2RMSNorm`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// (dim)
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    /// Normalise over the last dimension of a tensor of any rank.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::fused::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Per-position rotary tables, computed on the host for arbitrary (ragged) position ids.
pub struct Rope {
    /// (b, 1, t, d): cos of `cat(freqs, freqs)`
    pub cos: Tensor<4>,
    /// (b, 1, t, d): `cat(-sin, sin)` of the same angles
    pub sin: Tensor<4>,
    /// On the GPU backends, where every op is a kernel launch: see [`Rope::apply_heads`].
    gpu: Option<GpuRope>,
}

/// The GPU backends' RoPE inputs: q's attention scale folded into its tables on the host (one
/// product fewer), and the index that `rotate_half` is as one `select` of the last dimension's
/// halves in swapped order (a concatenation is two copies) for the composed op.
struct GpuRope {
    /// (d): `d/2, …, d−1, 0, …, d/2−1`, so that `x.select(3, rotate) = cat(x2, x1)`.
    rotate: Tensor<1, Int>,
    /// (b, t, 1, d): [`Rope::cos`] and [`Rope::sin`] times `scale`, for q, in the
    /// (b, t, heads, d) layout of the projections.
    cos_q: Tensor<4>,
    sin_q: Tensor<4>,
    scale: f64,
}

impl Rope {
    /// `positions`: (b * t) row-major absolute positions; `inv_freq`: d / 2 frequencies;
    /// `dtype`: the activations' float type (the tables are made in it).
    pub fn new(
        positions: &[u32],
        b: usize,
        t: usize,
        inv_freq: &[f32],
        device: &Device,
        dtype: burn::tensor::DType,
    ) -> Self {
        let (cos, sin) = Self::tables(positions, inv_freq);
        let d = 2 * inv_freq.len();
        let upload = |values: Vec<f32>, shape: [usize; 4]| {
            Tensor::from_data(TensorData::new(values, shape), (device, dtype))
        };
        let gpu = (!crate::fused::is_flex(device)).then(|| {
            // The attention's 1/√d, as `Attention::forward` computes it.
            let scale = 1.0 / (d as f64).sqrt();
            let scaled = |v: &[f32]| v.iter().map(|x| (*x as f64 * scale) as f32).collect();
            let rotate: Vec<i64> = (0..d).map(|j| ((j + d / 2) % d) as i64).collect();
            GpuRope {
                rotate: Tensor::from_data(TensorData::new(rotate, [d]), device),
                cos_q: upload(scaled(&cos), [b, t, 1, d]),
                sin_q: upload(scaled(&sin), [b, t, 1, d]),
                scale,
            }
        });
        Self {
            cos: upload(cos, [b, 1, t, d]),
            sin: upload(sin, [b, 1, t, d]),
            gpu,
        }
    }

    /// Whether [`Rope::apply_heads`] takes the projection's bias into its kernel (the GPU
    /// backends), so that the projection need not add it ([`Linear::forward_unbiased`]).
    pub fn folds_bias(&self) -> bool {
        self.gpu.is_some()
    }

    /// `x`: (b, t, heads, d) as the projections give it, plus `bias` (heads·d) when the
    /// projection left it out → (b, heads, t, d) with RoPE applied and, for q, multiplied by
    /// `scale`.
    ///
    /// On flex: [`Rope::apply`] on the (b, heads, t, d) view, then the scale. On the GPU
    /// backends, in the projections' layout with q's scale in its tables: one fused kernel
    /// ([`crate::fused::rope`]) with the bias, where the other order takes seven for q and six
    /// for k.
    pub fn apply_heads(
        &self,
        x: Tensor<4>,
        scale: Option<f64>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<4> {
        let gpu = self
            .gpu
            .as_ref()
            .filter(|g| scale.is_none_or(|s| s == g.scale));
        let Some(g) = gpu else {
            let x = match bias {
                Some(bias) => {
                    let [b, t, heads, d] = x.dims();
                    (x.reshape([b * t, heads * d]) + bias.unsqueeze::<2>())
                        .reshape([b, t, heads, d])
                }
                None => x,
            };
            let y = self.apply(x.swap_dims(1, 2));
            return match scale {
                Some(s) => y.mul_scalar(s),
                None => y,
            };
        };
        // (b, 1, t, d) and (b, t, 1, d) hold the same values in the same order: a reshape.
        let [b, t, _, d] = x.dims();
        let (cos, sin) = match scale {
            Some(_) => (g.cos_q.clone(), g.sin_q.clone()),
            None => (
                self.cos.clone().reshape([b, t, 1, d]),
                self.sin.clone().reshape([b, t, 1, d]),
            ),
        };
        let dtype = x.dtype();
        let (cos, sin) = (same_type(cos, dtype), same_type(sin, dtype));
        let bias = bias.map(|b| same_type(b, dtype));
        let layout = crate::fused::RopeLayout::HeadsFirst;
        crate::fused::rope(x, cos, sin, g.rotate.clone(), bias, layout)
    }

    /// q's tables with its attention scale `scale` folded in, as (b·t, d) rows in `dtype`: on
    /// the GPU backends, where the tables were made with that scale.
    pub fn query_tables(
        &self,
        scale: f64,
        dtype: burn::tensor::DType,
    ) -> Option<(Tensor<2>, Tensor<2>)> {
        let g = self.gpu.as_ref().filter(|g| g.scale == scale)?;
        let [b, t, _, d] = g.cos_q.dims();
        let rows = |x: &Tensor<4>| same_type(x.clone().reshape([b * t, d]), dtype);
        Some((rows(&g.cos_q), rows(&g.sin_q)))
    }

    /// k's tables in the projections' (b, t, 1, d) layout, in `dtype`: (cos, sin).
    pub fn key_tables(&self, dtype: burn::tensor::DType) -> (Tensor<4>, Tensor<4>) {
        // (b, 1, t, d) and (b, t, 1, d) hold the same values in the same order: a reshape.
        let [b, _, t, d] = self.cos.dims();
        let table = |x: &Tensor<4>| same_type(x.clone().reshape([b, t, 1, d]), dtype);
        (table(&self.cos), table(&self.sin))
    }

    /// The tables as (positions, d) row-major buffers: (cos, sin).
    pub fn tables(positions: &[u32], inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let half = inv_freq.len();
        let d = 2 * half;
        let mut cos = vec![0f32; positions.len() * d];
        let mut sin = vec![0f32; positions.len() * d];
        for (row, &pos) in positions.iter().enumerate() {
            for (i, &f) in inv_freq.iter().enumerate() {
                // f32 product then f32 cos/sin, as transformers computes `freqs` and `emb`.
                let angle = pos as f32 * f;
                let (s, c) = angle.sin_cos();
                cos[row * d + i] = c;
                cos[row * d + half + i] = c;
                // The sign of rotate_half's `-x2` lives in the table, saving a negation per call.
                sin[row * d + i] = -s;
                sin[row * d + half + i] = s;
            }
        }
        (cos, sin)
    }

    /// `x`: (b, heads, t, d) → same shape, `x·cos + rotate_half(x)·sin`
    /// (= `x·cos + cat(x2, x1)·[-sin, sin]`).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let d = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let swapped = Tensor::cat(vec![x2, x1], 3);
        // The tables in the activations' type (transformers' `cos.to(x.dtype)`).
        let (cos, sin) = (
            same_type(self.cos.clone(), x.dtype()),
            same_type(self.sin.clone(), x.dtype()),
        );
        x * cos + swapped * sin
    }
}

/// Cached keys and values of one layer: (b, kv, capacity, d) buffers whose first `len`
/// positions are filled. Appending writes in place (`slice_assign` on a uniquely owned buffer)
/// instead of copying the whole cache with `cat` at every step; the buffer grows geometrically,
/// up to `limit` positions.
#[derive(Clone, Debug)]
pub struct LayerCache {
    pub k: Tensor<4>,
    pub v: Tensor<4>,
    pub len: usize,
    /// The most positions the buffers grow to ahead of need ([`crate::KvCache::limit`]):
    /// doubling stops there; `usize::MAX` when nothing bounds it.
    pub limit: usize,
}

impl LayerCache {
    /// Filled keys and values, (b, kv, len, d) views of the buffers.
    pub fn views(&self) -> (Tensor<4>, Tensor<4>) {
        (
            self.k.clone().narrow(2, 0, self.len),
            self.v.clone().narrow(2, 0, self.len),
        )
    }

    /// Append (b, kv, t, d) keys and values to the layer's slot, creating the cache on first
    /// use; returns all the cached keys and values, (b, kv, len, d).
    fn extend(slot: &mut Option<Self>, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match slot {
            Some(layer) => {
                layer.append(k, v);
                layer.views()
            }
            None => {
                let len = k.dims()[2];
                let limit = usize::MAX;
                slot.insert(LayerCache { k, v, len, limit }).views()
            }
        }
    }

    /// No positions yet, in (b, kv, capacity, d) buffers.
    pub(crate) fn empty(k: Tensor<4>, v: Tensor<4>) -> Self {
        let limit = usize::MAX;
        Self {
            k,
            v,
            len: 0,
            limit,
        }
    }

    /// Grow the buffers to hold `capacity` positions (one copy of the filled part); no-op when
    /// they already do.
    pub fn reserve(&mut self, capacity: usize) {
        let [b, kv, cap, d] = self.k.dims();
        if capacity <= cap {
            return;
        }
        let grow = |buf: Tensor<4>| {
            let extra = Tensor::zeros([b, kv, capacity - cap, d], (&buf.device(), buf.dtype()));
            Tensor::cat(vec![buf, extra], 2)
        };
        self.k = grow(self.k.clone());
        self.v = grow(self.v.clone());
    }

    /// Room for `t` more positions: beyond the capacity, the buffers grow geometrically, to
    /// at most `limit` positions (or what `t` needs, where that is more).
    pub(crate) fn make_room(&mut self, t: usize) {
        let cap = self.k.dims()[2];
        let need = self.len + t;
        if need > cap {
            self.reserve(need.max(2 * cap).max(64).min(self.limit.max(need)));
        }
    }

    /// Append a step's keys and values as the projections give them, through
    /// [`crate::fused::append_kv`]: one kernel on the GPU backends.
    fn append_projected(&mut self, step: crate::fused::KvStep) {
        let t = step.k.dims()[1];
        self.make_room(t);
        let device = step.k.device();
        let k_buf = std::mem::replace(&mut self.k, Tensor::empty([0, 0, 0, 0], &device));
        let v_buf = std::mem::replace(&mut self.v, Tensor::empty([0, 0, 0, 0], &device));
        (self.k, self.v) = crate::fused::append_kv(k_buf, v_buf, step, self.len);
        self.len += t;
    }

    /// Append (b, kv, t, d) keys and values.
    fn append(&mut self, k: Tensor<4>, v: Tensor<4>) {
        let [b, kv, t, d] = k.dims();
        self.make_room(t);
        let need = self.len + t;
        let range = self.len..need;
        let buf = std::mem::replace(&mut self.k, Tensor::empty([0, 0, 0, 0], &k.device()));
        self.k = buf.slice_assign([0..b, 0..kv, range.clone(), 0..d], k);
        let buf = std::mem::replace(&mut self.v, Tensor::empty([0, 0, 0, 0], &v.device()));
        self.v = buf.slice_assign([0..b, 0..kv, range, 0..d], v);
        self.len = need;
    }
}

/// The keys each of a pass's new tokens may see.
#[derive(Debug, Clone, Copy)]
pub enum KeyMask<'a> {
    /// Every key: one new token per row and no padded key.
    All,
    /// (b, 1, 1, t, s) additive: 0 where the key is visible, −1e30 where not.
    Additive(&'a Tensor<5>),
    /// A decode step (one new token per row) whose rows begin with padding: row r's first
    /// `starts[r]` keys are padding, the rest visible. (b) counts in f32 on the device: the
    /// GPU's decode kernels read them in place of a (b, s) mask built and copied every step.
    Starts(&'a Tensor<1>),
}

impl KeyMask<'_> {
    /// As (b, t, s) additive values, `None` when every key is visible.
    pub fn additive(self, b: usize, t: usize, s: usize) -> Option<Tensor<3>> {
        match self {
            KeyMask::All => None,
            KeyMask::Additive(m) => Some(m.clone().reshape([b, t, s])),
            KeyMask::Starts(_) => self.decode(b, s).additive(s),
        }
    }

    /// As a decode step's mask ([`crate::fused::DecodeMask`]): `t` is 1.
    pub fn decode(self, b: usize, s: usize) -> crate::fused::DecodeMask {
        use crate::fused::DecodeMask;
        match self {
            KeyMask::All => DecodeMask::None,
            KeyMask::Additive(m) => DecodeMask::Additive(m.clone().reshape([b, 1, s])),
            KeyMask::Starts(starts) => DecodeMask::Starts(starts.clone()),
        }
    }
}

/// Multi-head attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3 only: RMSNorm over each head's `d` values of q and k.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
    /// q's, k's and v's weights side by side, (hidden, (h + 2·kv)·d), where
    /// [`CausalLm::pack_projections`] packed them for inference (vLLM's `qkv_proj`): one matmul
    /// instead of three, `q_proj`, `k_proj` and `v_proj` holding views into it. The biases
    /// stay in the three layers.
    #[module(skip)]
    pub qkv: Option<Tensor<2>>,
}

impl Attention {
    /// `x`: (b, t, hidden); `mask`: which keys each query sees ([`KeyMask`]);
    /// returns (b, t, hidden).
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: KeyMask<'_>,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        if crate::decode::enabled(b * t, &x, &self.q_proj.weight.val()) {
            return self.forward_rows(x, rope, mask, cache);
        }
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = h / kv;
        let split = |y: Tensor<3>, n: usize| y.reshape([b, t, n, d]); // (b, t, n, d)
        // q's and k's biases go into the RoPE kernel where it takes them (not past a q/k norm).
        let fold = rope.folds_bias() && self.q_norm.is_none() && self.k_norm.is_none();
        let project = |l: &Linear, x: Tensor<3>, n: usize| match fold {
            true => (
                split(l.forward_unbiased(x), n),
                l.bias.as_ref().map(|p| p.val()),
            ),
            false => (split(l.forward(x), n), None),
        };
        // A step onto an existing cache at inference on the GPU: k's RoPE, both biases and the
        // append in one kernel (`fused::append_kv`).
        let append = fold
            && matches!(cache.as_deref(), Some(Some(_)))
            && crate::fused::fuses_kv_append(&x.device());
        // Without a cache (training, scoring), v's bias goes into attention, which adds it as
        // the values load (flash attention; `fused::attention` adds it otherwise).
        let v_folds = append || (fold && cache.is_none() && t > 1);
        let ((mut q, q_bias), (mut k, k_bias), (v, mut v_bias)) = match &self.qkv {
            // One matmul; q, k and v are column slices of its rows (b, t, n, d), which the
            // decode kernels read in place.
            Some(w) => {
                let [hidden, width] = w.dims();
                let x = same_type(x, w.dtype()).reshape([b * t, hidden]);
                // Heads sliced after the reshape: views (burn reshapes a strided view by
                // copying it).
                let y = crate::fused::matmul(x, w.clone()).reshape([b, t, width / d, d]);
                let mut at = 0;
                let mut cut = |l: &Linear, n: usize, folds: bool| {
                    let part = y.clone().slice([0..b, 0..t, at..at + n, 0..d]);
                    at += n;
                    let bias = l.bias.as_ref().map(|p| p.val());
                    match (folds, bias) {
                        (false, Some(bias)) => (part + bias.reshape([1, 1, n, d]), None),
                        (_, bias) => (part, bias.filter(|_| folds)),
                    }
                };
                (
                    cut(&self.q_proj, h, fold),
                    cut(&self.k_proj, kv, fold),
                    cut(&self.v_proj, kv, v_folds),
                )
            }
            None => (
                project(&self.q_proj, x.clone(), h),
                project(&self.k_proj, x.clone(), kv),
                match v_folds {
                    true => project(&self.v_proj, x, kv),
                    false => (split(self.v_proj.forward(x), kv), None),
                },
            ),
        }; // (b, t, kv, d)
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(q);
            k = kn.forward(k);
        }
        // Scale q (b, h, t, d) rather than the scores (b, h, t, s): s/d times fewer elements,
        // and exact for the usual power-of-two head dims.
        let scale = 1.0 / (d as f64).sqrt();
        // A decode step onto the cache on the GPU: q's RoPE and bias go into the attention
        // kernel (`fused::decode_attention_with_rope`), q staying as the projection gives it,
        // (b, 1, h, d), the same order as (b, h, 1, d).
        let query_rope = match append && t == 1 {
            true => rope.query_tables(scale, q.dtype()),
            false => None,
        };
        let (q, query_rope) = match query_rope {
            Some((cos, sin)) => {
                let bias = q_bias.map(|b| same_type(b, q.dtype()));
                (q, Some(crate::fused::QueryRope { cos, sin, bias }))
            }
            None => (rope.apply_heads(q, Some(scale), q_bias), None), // (b, h, t, d)
        };
        let (k, v) = match cache {
            Some(Some(layer)) if append => {
                let dtype = k.dtype();
                let biases = match (k_bias, v_bias.take()) {
                    (None, None) => None,
                    // One projection without a bias adds zeros.
                    (kb, vb) => {
                        let zeros = || Tensor::zeros([kv * d], (&k.device(), dtype));
                        let kb = same_type(kb.unwrap_or_else(zeros), dtype);
                        Some((kb, same_type(vb.unwrap_or_else(zeros), dtype)))
                    }
                };
                let (cos, sin) = rope.key_tables(dtype);
                layer.append_projected(crate::fused::KvStep {
                    k,
                    v,
                    cos,
                    sin,
                    biases,
                });
                layer.views()
            }
            Some(slot) => {
                let k = rope.apply_heads(k, None, k_bias); // (b, kv, t, d)
                LayerCache::extend(slot, k, v.swap_dims(1, 2))
            }
            None => (rope.apply_heads(k, None, k_bias), v.swap_dims(1, 2)),
        };
        let s = k.dims()[2];
        // Grouped-query attention without copying k/v: query heads h = g * n_rep + r share
        // kv head g (transformers `repeat_kv`), so fold r into the query-length axis.
        let out = match query_rope {
            // q as the projection gave it, (b, 1, h, d): the kernel reads it in place.
            Some(r) => crate::fused::decode_attention_with_rope(q, k, v, mask.decode(b, s), r),
            None => {
                let q = q.reshape([b, kv, n_rep * t, d]);
                match t {
                    // (b, kv, n_rep, d): the order of (b, 1, h, d).
                    1 => crate::fused::decode_attention(q, k, v, mask.decode(b, s)),
                    // (b, t, h, d): flash attention writes it so, and takes v's gradient
                    // the same way, so no copy moves the heads axis; the composed ops swap
                    // their heads-first output (a copy in the reshape below).
                    _ => crate::fused::attention(q, k, v, v_bias, t, mask.additive(b, t, s)),
                }
            }
        };
        self.o_proj.forward(out.reshape([b, t, h * d]))
    }
}

impl Attention {
    /// [`Attention::forward`] through the inference kernels of [`crate::decode`] (plain Flex,
    /// few rows): q, k, v stay in the (b, t, heads, d) layout the projections produce, RoPE is
    /// one pass, and attention one pass per (sequence, kv head) over the cache in place.
    fn forward_rows(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: KeyMask<'_>,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let mut q = self.q_proj.forward(x.clone()).reshape([b, t, h, d]);
        let mut k = self.k_proj.forward(x.clone()).reshape([b, t, kv, d]);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, t, kv, d])
            .swap_dims(1, 2); // (b, kv, t, d)
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(q);
            k = kn.forward(k);
        }
        let scale = 1.0 / (d as f32).sqrt();
        let q = crate::decode::rope(q, &rope.cos, &rope.sin, scale);
        let k = crate::decode::rope(k, &rope.cos, &rope.sin, 1.0).swap_dims(1, 2); // (b, kv, t, d)
        let (k, v) = match cache {
            Some(slot) => LayerCache::extend(slot, k, v),
            None => (k, v),
        };
        let s = k.dims()[2];
        let out = crate::decode::attention(q, &k, &v, mask.additive(b, t, s));
        self.o_proj.forward(out)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    /// Gate's and up's weights side by side, (hidden, 2·intermediate), where
    /// [`CausalLm::pack_projections`] packed them (vLLM's `gate_up_proj`); `gate_proj` and
    /// `up_proj` hold views into it.
    #[module(skip)]
    pub gate_up: Option<Tensor<2>>,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if let Some(w) = &self.gate_up {
            // One matmul; SwiGLU reads the two halves of its rows in place.
            let [b, t, hidden] = x.dims();
            let x = same_type(x, w.dtype()).reshape([b * t, hidden]);
            let width = w.dims()[1] / 2;
            // Sliced after the reshape: views of the (b, t) rows, no copy.
            let y = crate::fused::matmul(x, w.clone()).reshape([b, t, 2 * width]);
            let gate = y.clone().slice([0..b, 0..t, 0..width]);
            let up = y.slice([0..b, 0..t, width..2 * width]);
            return self.down_proj.forward(crate::fused::swiglu(gate, up));
        }
        let gate = self.gate_proj.forward(x.clone());
        self.down_proj
            .forward(crate::fused::swiglu(gate, self.up_proj.forward(x)))
    }
}

/// Pre-norm transformer block.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

/// The residual stream between blocks: its sum, or (on the GPU backends) a
/// residual and an update not yet added to it, which the next norm adds in its own kernel
/// ([`crate::fused::add_rms_norm`]).
pub struct Stream {
    residual: Tensor<3>,
    update: Option<Tensor<3>>,
}

impl Stream {
    /// A stream that is its sum already.
    pub fn sum(x: Tensor<3>) -> Self {
        Self {
            residual: x,
            update: None,
        }
    }

    /// `residual + update`, left for the next norm to add.
    pub fn parts(update: Tensor<3>, residual: Tensor<3>) -> Self {
        Self {
            residual,
            update: Some(update),
        }
    }

    /// The stream's sum, and `norm` applied to it: (sum, normalised).
    pub fn norm(self, norm: &RmsNorm) -> (Tensor<3>, Tensor<3>) {
        match self.update {
            None => (self.residual.clone(), norm.forward(self.residual)),
            Some(update) => {
                crate::fused::add_rms_norm(update, self.residual, norm.weight.val(), norm.eps)
            }
        }
    }
}

impl DecoderLayer {
    /// One block on the residual stream `x` (b, t, hidden). Its two residual additions go into
    /// the norms after them where [`crate::fused::fuses_add_rms_norm`]: the attention's into
    /// the MLP's norm, the MLP's into the next block's (the stream returns as
    /// [`Stream::parts`]).
    pub fn forward(
        &self,
        x: Stream,
        rope: &Rope,
        mask: KeyMask<'_>,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Stream {
        let (residual, normed) = x.norm(&self.input_layernorm);
        let attended = self.self_attn.forward(normed, rope, mask, cache);
        let [b, t, hidden] = attended.dims();
        let mlp = &self.mlp;
        let norm = &self.post_attention_layernorm;
        let plain = |l: &Linear| l.bias.is_none() && l.lora.is_none();
        let (gate, up, down) = (&mlp.gate_proj, &mlp.up_proj, &mlp.down_proj);
        if plain(gate)
            && plain(up)
            && plain(down)
            && crate::decode::enabled(b * t, &attended, &gate.weight.val())
        {
            let x = (attended + residual).reshape([b * t, hidden]);
            let (g, u, d) = (gate.weight.val(), up.weight.val(), down.weight.val());
            return Stream::sum(
                crate::decode::mlp_block(x, &norm.weight.val(), norm.eps, &g, &u, &d)
                    .reshape([b, t, hidden]),
            );
        }
        if crate::fused::fuses_add_rms_norm(&attended.device()) {
            let (x, normed) = Stream::parts(attended, residual).norm(norm);
            return Stream::parts(self.mlp.forward(normed), x);
        }
        let x = attended + residual;
        Stream::sum(self.mlp.forward(norm.forward(x.clone())) + x)
    }
}

/// The (in, out) weights of `layers` side by side in one (in, Σ out) matrix, each layer's
/// weight replaced by its columns of it (a view where the offsets allow; burn copies
/// otherwise).
fn pack(layers: &mut [&mut Linear]) -> Tensor<2> {
    let packed = Tensor::cat(layers.iter().map(|l| l.weight.val()).collect(), 1).detach();
    let rows = packed.dims()[0];
    let mut at = 0;
    for l in layers.iter_mut() {
        let n = l.weight.dims()[1];
        let view = packed.clone().slice([0..rows, at..at + n]);
        l.weight = Param::initialized(l.weight.id, view);
        at += n;
    }
    packed
}

/// `model.*` of the checkpoint.
#[derive(Module, Debug)]
pub struct Backbone {
    /// (vocab, hidden)
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
}

/// The causal LM: backbone plus `lm_head` (absent when tied to `embed_tokens`).
#[derive(Module, Debug)]
pub struct CausalLm {
    pub model: Backbone,
    pub lm_head: Option<Linear>,
    /// A classification head, `score` in transformers (reward models): (hidden, num_labels).
    pub score: Option<Linear>,
}

impl CausalLm {
    /// Each layer's q, k and v weights packed side by side into one (hidden, (h + 2·kv)·d)
    /// matrix ([`Attention::qkv`]) and gate's and up's into one (hidden, 2·intermediate)
    /// ([`Mlp::gate_up`]), for inference: a decode step on a GPU backend then runs 9 kernels
    /// per layer instead of 12, and a prefill two matmuls fewer. The separate layers' weights
    /// become column views into the packed matrices, so the weights are held once. Layers with
    /// a LoRA adapter, and an MLP with biases, stay as they are.
    ///
    /// For inference only: an optimiser step replaces the separate weights and leaves the
    /// packed ones behind.
    pub fn pack_projections(mut self) -> Self {
        let plain = |l: &Linear| l.lora.is_none();
        for layer in &mut self.model.layers {
            let a = &mut layer.self_attn;
            if a.qkv.is_none() && plain(&a.q_proj) && plain(&a.k_proj) && plain(&a.v_proj) {
                a.qkv = Some(pack(&mut [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj]));
            }
            let m = &mut layer.mlp;
            let unbiased = m.gate_proj.bias.is_none() && m.up_proj.bias.is_none();
            if m.gate_up.is_none() && unbiased && plain(&m.gate_proj) && plain(&m.up_proj) {
                m.gate_up = Some(pack(&mut [&mut m.gate_proj, &mut m.up_proj]));
            }
        }
        self
    }

    /// Without packed projections: every layer computes from its own weights again (which
    /// keep their values). What maps the weights to new tensors (a cast, a move to another
    /// device) goes through this, so that no packed copy is left behind.
    pub fn unpacked(mut self) -> Self {
        for layer in &mut self.model.layers {
            layer.self_attn.qkv = None;
            layer.mlp.gate_up = None;
        }
        self
    }

    /// A network of no layers whose two weights are never made (they would be empty if
    /// read): what [`crate::Model::map_net`] leaves in place of the network it hands on, at
    /// no cost on any device.
    pub(crate) fn vacant(device: &Device) -> Self {
        /// A parameter of no elements, never made.
        fn never_made<const D: usize>(device: &Device) -> Param<Tensor<D>> {
            Param::uninitialized(
                ParamId::new(),
                |device: &Device, _| Tensor::<D>::empty([0; D], device),
                device.clone(),
                false,
                [0; D].into(),
            )
        }
        Self {
            model: Backbone {
                embed_tokens: never_made(device),
                layers: Vec::new(),
                norm: RmsNorm {
                    weight: never_made(device),
                    eps: 0.0,
                },
            },
            lm_head: None,
            score: None,
        }
    }

    /// Token ids (b * t, row-major) → embeddings (b, t, hidden).
    pub fn embed(&self, ids: Tensor<1, Int>, b: usize, t: usize) -> Tensor<3> {
        let hidden = self.model.embed_tokens.dims()[1];
        self.model
            .embed_tokens
            .val()
            .select(0, ids)
            .reshape([b, t, hidden])
    }

    /// Run every block and the final norm: (b, t, hidden) → (b, t, hidden).
    pub fn backbone(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: KeyMask<'_>,
        mut cache: Option<&mut Vec<Option<LayerCache>>>,
    ) -> Tensor<3> {
        let mut stream = Stream::sum(x);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c[i]);
            stream = layer.forward(stream, rope, mask, slot);
        }
        stream.norm(&self.model.norm).1
    }

    /// Final hidden states → logits: (b, t, hidden) → (b, t, vocab).
    pub fn head(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => {
                let [b, t, hidden] = x.dims();
                let emb = self.model.embed_tokens.val(); // (vocab, hidden)
                let vocab = emb.dims()[0];
                if crate::decode::enabled(b * t, &x, &emb) {
                    let x = x.reshape([b * t, hidden]);
                    return crate::decode::linear_nt(x, &emb).reshape([b, t, vocab]);
                }
                let x = same_type(x, emb.dtype()).reshape([b * t, hidden]);
                crate::fused::matmul(x, emb.transpose()).reshape([b, t, vocab])
            }
        }
    }

    /// Final hidden states → each row's log-probability of its target, and (when `entropy`)
    /// the predicted distribution's entropy (detached): `x` (rows, hidden), `targets` (rows)
    /// → (rows) each. Through [`crate::fused::head_logprobs`], which holds the (rows, vocab)
    /// logits whole only in training without activation checkpointing; a head with a bias or a
    /// LoRA adapter forms them whole through [`CausalLm::head`].
    pub fn head_logprobs(
        &self,
        x: Tensor<2>,
        targets: Tensor<1, Int>,
        entropy: bool,
    ) -> (Tensor<1>, Option<Tensor<1>>) {
        let w = match &self.lm_head {
            Some(head) if head.bias.is_some() || head.lora.is_some() => {
                let [rows, hidden] = x.dims();
                let logits = self.head(x.reshape([1, rows, hidden]));
                let vocab = logits.dims()[2];
                return crate::fused::token_logprobs(
                    logits.reshape([rows, vocab]),
                    targets,
                    entropy,
                );
            }
            Some(head) => head.weight.val(), // (hidden, vocab)
            None => self.model.embed_tokens.val().transpose(), // tied: (hidden, vocab) view
        };
        let x = same_type(x, w.dtype());
        crate::fused::head_logprobs(x, w, targets, entropy)
    }

    /// The config-derived sizes, read back from the weights.
    pub fn vocab_size(&self) -> usize {
        self.model.embed_tokens.dims()[0]
    }
}

/// Initialise like transformers' `_init_weights`: normal(0, initializer_range) for matrices,
/// zeros for biases, ones for norms — from our own seeded generator so a seed fixes the model
/// whatever the backend.
pub(crate) struct Init<'a> {
    pub rng: &'a mut SplitMix64,
    pub std: f64,
    pub device: &'a Device,
    /// The weights' float type; `None`: the device's.
    pub dtype: Option<burn::tensor::DType>,
}

impl Init<'_> {
    pub fn matrix(&mut self, rows: usize, cols: usize) -> Param<Tensor<2>> {
        // std 0 is the placeholder a checkpoint load overwrites: a zeroed allocation, whose
        // pages are never touched, instead of 1.5 G normal draws for a 1.5B model.
        let values: Vec<f32> = if self.std == 0.0 {
            vec![0.0; rows * cols]
        } else {
            (0..rows * cols)
                .map(|_| (self.rng.normal() * self.std) as f32)
                .collect()
        };
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [rows, cols]),
            self.options(),
        ))
    }

    pub fn constant(&self, n: usize, value: f32) -> Param<Tensor<1>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![value; n], [n]),
            self.options(),
        ))
    }

    /// Where and in which type the weights are made.
    fn options(&self) -> burn::tensor::TensorCreationOptions {
        creation(self.device, self.dtype)
    }

    pub fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        Linear {
            weight: self.matrix(d_in, d_out),
            bias: bias.then(|| self.constant(d_out, 0.0)),
            lora: None,
        }
    }

    pub fn norm(&self, n: usize, eps: f64) -> RmsNorm {
        RmsNorm {
            weight: self.constant(n, 1.0),
            eps,
        }
    }
}

/// Tensors made on `device` in `dtype`, or in the device's float type where `None`.
pub(crate) fn creation(
    device: &Device,
    dtype: Option<burn::tensor::DType>,
) -> burn::tensor::TensorCreationOptions {
    match dtype {
        Some(dtype) => (device, dtype).into(),
        None => device.into(),
    }
}

/// Build a randomly initialised model from a config, its weights in `dtype` (`None`: the
/// device's float type).
pub(crate) fn random_init(
    config: &ModelConfig,
    seed: u64,
    device: &Device,
    dtype: Option<burn::tensor::DType>,
) -> CausalLm {
    let mut rng = SplitMix64::from_state(seed);
    let mut init = Init {
        rng: &mut rng,
        std: config.initializer_range,
        device,
        dtype,
    };
    let (hd, h, kv) = (
        config.head_dim,
        config.num_attention_heads,
        config.num_key_value_heads,
    );
    let hidden = config.hidden_size;
    let eps = config.rms_norm_eps;
    let embed_tokens = init.matrix(config.vocab_size, hidden);
    let layers = (0..config.num_hidden_layers)
        .map(|_| DecoderLayer {
            self_attn: Attention {
                q_proj: init.linear(hidden, h * hd, config.qkv_bias()),
                k_proj: init.linear(hidden, kv * hd, config.qkv_bias()),
                v_proj: init.linear(hidden, kv * hd, config.qkv_bias()),
                o_proj: init.linear(h * hd, hidden, config.o_bias()),
                q_norm: config.qk_norm().then(|| init.norm(hd, eps)),
                k_norm: config.qk_norm().then(|| init.norm(hd, eps)),
                num_heads: h,
                num_kv_heads: kv,
                head_dim: hd,
                qkv: None,
            },
            mlp: Mlp {
                gate_proj: init.linear(hidden, config.intermediate_size, config.mlp_bias),
                up_proj: init.linear(hidden, config.intermediate_size, config.mlp_bias),
                down_proj: init.linear(config.intermediate_size, hidden, config.mlp_bias),
                gate_up: None,
            },
            input_layernorm: init.norm(hidden, eps),
            post_attention_layernorm: init.norm(hidden, eps),
        })
        .collect();
    let norm = init.norm(hidden, eps);
    let lm_head =
        (!config.tie_word_embeddings).then(|| init.linear(hidden, config.vocab_size, false));
    CausalLm {
        model: Backbone {
            embed_tokens,
            layers,
            norm,
        },
        lm_head,
        score: None,
    }
}
