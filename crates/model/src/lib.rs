//! Causal language models from Hugging Face checkpoints, on burn.
//!
//! [`Model`] bundles a [`ModelConfig`] (from `config.json`), the decoder weights and the device
//! they live on. It loads `model.safetensors` (or shards with an index), F32/BF16/F16, tied or
//! untied heads; initialises at random from a config; saves back in the same layout; runs
//! forward passes over ragged batches with a KV cache; and computes teacher-forced per-token
//! log-probabilities that stay differentiable (the op SFT and GRPO train through).
//!
//! Every burn call of the project lives in this crate, `generate` and `train`; burn types leak
//! out only as `Tensor`/`Device`, re-exported from [`tensor`].

pub mod backend;
pub mod config;
pub mod decoder;
pub mod error;
pub mod gpus;
pub mod kernels;
pub mod lora;
pub mod reward;
mod step;
pub use kernels::{decode, fused, skinny};
pub mod weights;

use std::collections::BTreeMap;
use std::path::Path;

use reasonlab_core::fs::atomic_write as core_atomic_write;

use burn::module::{Module, Param, ParamId};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

pub use backend::{
    ActivationCheckpointing, BackendKind, Ceiling, CeilingUnit, DeviceInfo, GraphicsApi,
    MatmulUnits, Precision, Purpose, Training, data_parallel_workers, device_for,
    device_memory_bytes, max_buffer_bytes, measure_ceilings, open, open_for, open_for_training,
    open_inference,
};
pub use config::{Architecture, ModelConfig, RopeScaling, bench_config};
pub use decoder::CausalLm;
use decoder::{KeyMask, LayerCache, Rope};
pub use error::ModelError;
pub use lora::{LoraConfig, LoraTarget};
pub use reward::{RewardHead, RewardModel};
pub use weights::{Checkpoint, SaveDtype};

/// Tensor types used at this crate's boundary.
pub mod tensor {
    pub use burn::tensor::{Device, Int, Tensor, TensorData};
}
pub use burn;

use decode::MASKED;

/// (b, t, s) additive mask of `t` new queries per row over `s` keys, the last `t` of them
/// new: query i (absolute s − t + i) sees key j iff j ≤ s − t + i and key j is not padding
/// (`key_padding`, (b, s)).
fn mask_values(b: usize, t: usize, s: usize, key_padding: &[bool]) -> Vec<f32> {
    let past = s - t;
    let mut m = vec![0f32; b * t * s];
    for row in 0..b {
        for i in 0..t {
            let line = &mut m[(row * t + i) * s..(row * t + i + 1) * s];
            for (j, v) in line.iter_mut().enumerate() {
                if j > past + i || key_padding[row * s + j] {
                    *v = MASKED;
                }
            }
        }
    }
    m
}

/// Which of a batch's (b, t − 1) targets the log-probabilities are formed for.
#[derive(Debug, Clone, Copy)]
enum Targets<'a> {
    /// Every position (the LM head on all b · t hidden rows).
    All,
    /// Those with a non-zero weight, row-major (b, t − 1); the others come back as 0.
    Where(&'a [f32]),
}

/// A rectangular batch of token ids with per-token positions and key padding.
///
/// `ids`, `positions` and `padding` are row-major `(b, t)`. Padding slots hold a valid token
/// id (usually the pad or eos id) and are never attended to.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub padding: Vec<bool>,
    pub b: usize,
    pub t: usize,
}

/// Which side of a short sequence the padding goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadSide {
    /// Training and scoring: tokens start at column 0.
    Right,
    /// Generation: every prompt ends in the last column, so new tokens line up.
    Left,
}

impl TokenBatch {
    /// Rows `start..end` as a batch of their own.
    pub fn rows(&self, start: usize, end: usize) -> TokenBatch {
        let (a, z) = (start * self.t, end * self.t);
        TokenBatch {
            ids: self.ids[a..z].to_vec(),
            positions: self.positions[a..z].to_vec(),
            padding: self.padding[a..z].to_vec(),
            b: end - start,
            t: self.t,
        }
    }

    /// Columns `start..end` of every row as a batch of their own: a stretch of the prompts
    /// that a cache takes after the columns before it (chunked prefill).
    ///
    /// # Panics
    /// Where `start > end` or `end > t`.
    pub fn columns(&self, start: usize, end: usize) -> TokenBatch {
        fn take<T: Copy>(v: &[T], t: usize, start: usize, end: usize) -> Vec<T> {
            v.chunks(t.max(1))
                .flat_map(|row| row[start..end].iter().copied())
                .collect()
        }
        TokenBatch {
            ids: take(&self.ids, self.t, start, end),
            positions: take(&self.positions, self.t, start, end),
            padding: take(&self.padding, self.t, start, end),
            b: self.b,
            t: end - start,
        }
    }

    /// (b, t − 1) row-major: 1 where the target of a log-prob column is a real token, 0 where it
    /// is padding or the first token of a packed example (position 0 cannot be predicted from
    /// the example before it).
    pub fn target_weights(&self) -> Vec<f32> {
        let (b, t) = (self.b, self.t);
        (0..b)
            .flat_map(|row| {
                (row * t + 1..(row + 1) * t).map(|at| {
                    if self.padding[at] || self.positions[at] == 0 {
                        0.0
                    } else {
                        1.0
                    }
                })
            })
            .collect()
    }

    /// Pad `seqs` to a rectangle; positions count real tokens only (restart at 0 per row).
    pub fn pad(seqs: &[Vec<u32>], pad_id: u32, side: PadSide) -> Self {
        let b = seqs.len();
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![pad_id; b * t];
        let mut positions = vec![0u32; b * t];
        let mut padding = vec![true; b * t];
        for (row, seq) in seqs.iter().enumerate() {
            let offset = match side {
                PadSide::Right => 0,
                PadSide::Left => t - seq.len(),
            };
            for (i, &id) in seq.iter().enumerate() {
                let at = row * t + offset + i;
                ids[at] = id;
                positions[at] = i as u32;
                padding[at] = false;
            }
        }
        Self {
            ids,
            positions,
            padding,
            b,
            t,
        }
    }
}

/// Whether every row of a [`KvCache`] begins with its padding and has none after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum KeyPadding {
    /// Not looked at since the padding last changed.
    #[default]
    Unknown,
    /// Each row's count of leading padded keys.
    Leading(Vec<usize>),
    /// Some row has a padded key after a real one.
    Elsewhere,
}

/// Per-layer key/value cache of a batch being decoded.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    /// Positions per row to allocate when the first batch creates the buffers.
    reserved: usize,
    /// The most positions per row the buffers grow to ([`KvCache::limit`]).
    limit: Option<usize>,
    /// (b, s) row-major: whether each cached key is padding.
    padding: Vec<bool>,
    /// What [`KvCache::padded_prefixes`] found, kept while steps add keys that are not
    /// padding.
    prefixes: KeyPadding,
    b: usize,
}

impl KvCache {
    /// Number of cached positions per row.
    pub fn seq_len(&self) -> usize {
        self.padding.len().checked_div(self.b).unwrap_or(0)
    }

    /// Rows in the cache.
    pub fn batch_size(&self) -> usize {
        self.b
    }

    /// Positions per row the buffers hold before an append must regrow them (0 when empty).
    pub fn capacity(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .map_or(0, |l| l.k.dims()[2])
    }

    /// Make room for `positions` cached positions per row, so that appending up to that many
    /// never regrows (each regrowth copies the whole cache): a generator that knows its prompt
    /// length and `max_new_tokens` calls this once, best before the prefill (the buffers are
    /// then allocated at that size; afterwards, they are grown by one copy).
    pub fn reserve(&mut self, positions: usize) {
        self.reserved = self.reserved.max(positions);
        for layer in self.layers.iter_mut().flatten() {
            layer.reserve(positions);
        }
    }

    /// The most positions per row this cache will ever hold (a generation's longest prompt
    /// and its `max_new_tokens`): the buffers, which double their capacity when an append
    /// outgrows it, stop growing there, so a long generation does not hold up to twice the
    /// cache it needs (an append past it still gets its room).
    pub fn limit(&mut self, positions: usize) {
        self.limit = Some(positions);
        self.limit_layers();
    }

    /// Hands [`KvCache::limit`] to the layers' buffers (those created since included).
    fn limit_layers(&mut self) {
        let limit = self.limit.unwrap_or(usize::MAX);
        for layer in self.layers.iter_mut().flatten() {
            layer.limit = limit;
        }
    }

    /// The key padding (b, s) once `batch`'s tokens are appended.
    fn extended_padding(&self, batch: &TokenBatch) -> Vec<bool> {
        let (b, t, past) = (batch.b, batch.t, self.seq_len());
        let mut padding = Vec::with_capacity(b * (past + t));
        for row in 0..b {
            padding.extend_from_slice(&self.padding[row * past..(row + 1) * past]);
            padding.extend_from_slice(&batch.padding[row * t..(row + 1) * t]);
        }
        padding
    }

    /// Each row's count of leading padded keys, where every row's padding is such a prefix
    /// (left-padded prompts and what follows them); `None` where some row has a padded key
    /// after a real one.
    fn padded_prefixes(&mut self) -> Option<Vec<usize>> {
        if self.prefixes == KeyPadding::Unknown {
            let s = self.seq_len();
            let counts: Option<Vec<usize>> = (0..self.b)
                .map(|row| {
                    let keys = &self.padding[row * s..(row + 1) * s];
                    let start = keys.iter().position(|&p| !p).unwrap_or(s);
                    keys[start..].iter().all(|&p| !p).then_some(start)
                })
                .collect();
            self.prefixes = counts.map_or(KeyPadding::Elsewhere, KeyPadding::Leading);
        }
        match &self.prefixes {
            KeyPadding::Leading(counts) => Some(counts.clone()),
            _ => None,
        }
    }

    /// The padding with `batch`'s new keys appended ([`KvCache::extended_padding`]) in
    /// place of the old; the prefix counts hold while no new key is padding.
    fn set_padding(&mut self, padding: Vec<bool>, batch: &TokenBatch) {
        if batch.padding.iter().any(|&p| p) {
            self.prefixes = KeyPadding::Unknown;
        }
        self.padding = padding;
    }

    /// Whether some cached key is padding.
    fn any_padding(&self) -> bool {
        match &self.prefixes {
            KeyPadding::Leading(counts) => counts.iter().any(|&n| n > 0),
            _ => self.padding.iter().any(|&p| p),
        }
    }

    /// Keep only `rows` (in that order): finished sequences stop costing compute.
    pub fn select_rows(&mut self, rows: &[usize]) {
        if rows.len() == self.b && rows.iter().enumerate().all(|(i, &r)| i == r) {
            return;
        }
        let s = self.seq_len();
        let device = self.layers.iter().flatten().next().map(|c| c.k.device());
        if let Some(device) = device {
            let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
            for layer in self.layers.iter_mut().flatten() {
                // Whole buffers, so a reservation survives.
                layer.k = layer.k.clone().select(0, idx.clone());
                layer.v = layer.v.clone().select(0, idx.clone());
            }
        }
        self.prefixes = match std::mem::take(&mut self.prefixes) {
            KeyPadding::Leading(counts) => {
                KeyPadding::Leading(rows.iter().map(|&r| counts[r]).collect())
            }
            other => other,
        };
        self.padding = rows
            .iter()
            .flat_map(|&r| self.padding[r * s..(r + 1) * s].iter().copied())
            .collect();
        self.b = rows.len();
    }
}

/// HF name → (HF-layout shape, row-major values).
pub type HfTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A loaded or freshly initialised causal LM.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub net: CausalLm,
    inv_freq: Vec<f32>,
    device: tensor::Device,
    /// Set when LoRA adapters are attached ([`Model::add_lora`]).
    lora: Option<LoraConfig>,
    /// The type the forward pass computes in ([`Model::with_mixed_precision`]); f32 is off.
    compute: Precision,
}

/// The weights' float type for `precision`: f32 leaves it to the device.
fn weight_dtype(precision: Precision) -> Option<burn::tensor::DType> {
    match precision {
        Precision::F32 => None,
        p => Some(p.float_dtype().into()),
    }
}

/// The product of `factors` in u64, saturating at `u64::MAX` (buffer sizes).
fn saturating_product(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |bytes, &n| bytes.saturating_mul(n as u64))
}

/// (rows, cols) row-major → (cols, rows).
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    weights::transpose_with(rows, cols, |i| values[i])
}

impl Model {
    pub(crate) fn wrap(config: ModelConfig, mut net: CausalLm, device: tensor::Device) -> Self {
        assign_stable_ids(&mut net, config.tie_word_embeddings);
        let inv_freq = config
            .rope_inv_freq()
            .into_iter()
            .map(|f| f as f32)
            .collect();
        Self {
            config,
            net,
            inv_freq,
            device,
            lora: None,
            compute: Precision::F32,
        }
    }

    /// Mixed-precision training: every forward pass computes in `precision` (bf16, or f16 where
    /// the adapter has no bf16) from a cast of the weights, while the weights themselves — the
    /// master copy the optimiser updates, its moments, and what is saved — stay f32. The cast
    /// is part of the autodiff graph, so gradients arrive in f32. RMSNorm's statistics, the
    /// attention softmax, SwiGLU's activation and the loss's log-softmax run in f32; the
    /// matmuls, the residual stream and the other elementwise ops run in `precision` (a 16-bit
    /// forward over f32 master weights, as DeepSpeed's and Megatron's bf16 modes train;
    /// `torch.autocast` keeps the residual stream in f32 instead).
    ///
    /// For the GPU backends: refused on flex, and where the adapter lacks the type. Inference
    /// copies ([`Model::inference_copy`]: GRPO's rollouts, old-policy and reference log-probs)
    /// hold their weights in the compute type. f16 runs without loss scaling (its gradients may
    /// underflow where bf16's do not) and with its residual stream in f16 (large activations
    /// may overflow its range): prefer bf16 where the device has it.
    pub fn with_mixed_precision(self, precision: Precision) -> Result<Self, ModelError> {
        backend::check_mixed_precision(&self.device, precision)?;
        Ok(Self {
            compute: precision,
            ..self
        })
    }

    /// The compute type of mixed-precision training (f32 when it is off).
    pub fn mixed_precision(&self) -> Precision {
        self.compute
    }

    /// The network a forward pass runs: the weights themselves, or their cast to the
    /// mixed-precision compute type (tracked, so gradients reach the f32 weights).
    fn compute_net(&self) -> std::borrow::Cow<'_, CausalLm> {
        match self.compute {
            Precision::F32 => std::borrow::Cow::Borrowed(&self.net),
            p => std::borrow::Cow::Owned(decoder::cast_floats(self.net.clone(), p.float_dtype())),
        }
    }

    /// Freeze every base weight and attach LoRA adapters (only they train from now on).
    pub fn add_lora(self, cfg: &LoraConfig) -> Result<Self, ModelError> {
        if self.lora.is_some() {
            return Err(ModelError::Input(
                "LoRA adapters are already attached".into(),
            ));
        }
        let mut net = lora::attach(self.net.unpacked(), cfg, &self.device)?;
        // A classification head is new and small: it trains whole (PEFT's `modules_to_save`).
        net.score = net.score.map(|s| s.set_require_grad(true));
        Ok(Self {
            net,
            lora: Some(cfg.clone()),
            ..self
        })
    }

    /// The LoRA settings, when adapters are attached.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Fold the adapters into the base weights (a plain model again).
    pub fn merge_lora(self) -> Self {
        match self.lora {
            None => self,
            Some(_) => Self {
                net: lora::merge(self.net),
                lora: None,
                ..self
            },
        }
    }

    /// Attach the adapters saved in `dir` (`adapter_config.json`, `adapter_model.safetensors`)
    /// to this base model.
    pub fn load_adapter(self, dir: &Path) -> Result<Self, ModelError> {
        let cfg = lora::read_adapter_config(dir)?;
        let mut m = self.add_lora(&cfg)?;
        let device = m.device.clone();
        lora::load_adapter_weights(&mut m.net, dir, &device)?;
        Ok(m)
    }

    /// A randomly initialised model (transformers' initialisation, our seeded generator).
    pub fn random(config: ModelConfig, seed: u64, device: &tensor::Device) -> Self {
        let net = decoder::random_init(&config, seed, device, None);
        Self::wrap(config, net, device.clone())
    }

    /// [`Model::random`] with its weights in `precision` (f32: the device's float type), for
    /// inference: the forward passes, KV caches and activations then run in that type. bf16
    /// and f16 are for the GPU backends whose adapter has the type.
    pub fn random_as(
        config: ModelConfig,
        seed: u64,
        device: &tensor::Device,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        backend::check_inference_precision(device, precision, "this device")?;
        let net = decoder::random_init(&config, seed, device, weight_dtype(precision));
        Ok(Self::wrap(config, net, device.clone()))
    }

    /// Whether a model of `config` fits `device`'s largest buffer ([`max_buffer_bytes`]) in
    /// the device's float type: an error naming its largest weight where it does not, before
    /// anything is allocated (a GPU would otherwise fail at the first read of a result).
    pub fn check_fits(config: &ModelConfig, device: &tensor::Device) -> Result<(), ModelError> {
        Self::check_fits_as(config, device, Precision::F32)
    }

    /// [`Model::check_fits`] for weights in `precision` (f32: the device's float type).
    pub fn check_fits_as(
        config: &ModelConfig,
        device: &tensor::Device,
        precision: Precision,
    ) -> Result<(), ModelError> {
        let Some(limit) = max_buffer_bytes(device) else {
            return Ok(());
        };
        let dtype = weight_dtype(precision)
            .unwrap_or_else(|| burn::tensor::DType::from(device.settings().float_dtype));
        let (tensor, elements) = config.largest_weight();
        let bytes = (elements as u64).saturating_mul(dtype.size() as u64);
        if bytes <= limit {
            return Ok(());
        }
        let half = (elements as u64).saturating_mul(2);
        let hint = match dtype.size() > 2 && half <= limit {
            true => "; in bf16 or f16 (`--dtype`) it would fit for inference (training keeps \
                     f32 master weights)"
                .to_string(),
            false => "; `--backend flex` holds it in host memory".to_string(),
        };
        Err(ModelError::PastDeviceBuffer {
            what: format!("tensor `{tensor}`"),
            bytes,
            dtype: format!("{dtype:?}").to_lowercase(),
            limit,
            hint,
        })
    }

    /// Load `DIR/config.json` and the safetensors weights.
    pub fn load(dir: &Path, device: &tensor::Device) -> Result<Self, ModelError> {
        Self::load_as(dir, device, Precision::F32)
    }

    /// [`Model::load`] with the weights in `precision` (f32: the device's float type),
    /// whatever the checkpoint's dtype, each converted as it is read, for inference: the
    /// forward passes, KV caches and activations then run in that type. The device keeps its
    /// own float type, so one process can hold a bf16 model and train an f32 one on the same
    /// GPU ([`open_inference`]). bf16 and f16 are for the GPU backends whose adapter has the
    /// type.
    pub fn load_as(
        dir: &Path,
        device: &tensor::Device,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        backend::check_inference_precision(device, precision, "this device")?;
        let config = ModelConfig::from_dir(dir)?;
        Self::check_fits_as(&config, device, precision)?;
        let ckpt = Checkpoint::open(dir)?;
        Self::from_checkpoint_with(config, &ckpt, device, None, weight_dtype(precision))
    }

    /// Build from an opened checkpoint, checking every tensor's shape against the config (and
    /// the model against the device's largest buffer, [`Model::check_fits`]).
    pub fn from_checkpoint(
        config: ModelConfig,
        ckpt: &Checkpoint,
        device: &tensor::Device,
    ) -> Result<Self, ModelError> {
        Self::check_fits(&config, device)?;
        Self::from_checkpoint_with(config, ckpt, device, None, None)
    }

    /// [`Model::from_checkpoint`], with a `score` head of `(num_labels, bias)` read too when
    /// given (reward models), for a config its caller checked with [`Model::check_fits`]
    /// before opening the checkpoint; the weights in `dtype` (`None`: the device's float type).
    pub(crate) fn from_checkpoint_with(
        config: ModelConfig,
        ckpt: &Checkpoint,
        device: &tensor::Device,
        score: Option<(usize, bool)>,
        dtype: Option<burn::tensor::DType>,
    ) -> Result<Self, ModelError> {
        // A checkpoint with tie_word_embeddings=true but an explicit lm_head keeps the head.
        let has_head = ckpt.contains("lm_head.weight");
        let config = ModelConfig {
            tie_word_embeddings: config.tie_word_embeddings && !has_head,
            ..config
        };
        let mut net = decoder::random_init(
            &ModelConfig {
                initializer_range: 0.0,
                ..config.clone()
            },
            0,
            device,
            dtype,
        );
        if let Some((labels, bias)) = score {
            net.score = Some(decoder::Linear::zeros(
                config.hidden_size,
                labels,
                bias,
                device,
            ));
        }
        let mut missing = Ok(());
        let mut load = |name: &str, shape: &[usize], hf_transposed: bool| {
            let values = if hf_transposed {
                // HF (out, in) → ours (in, out)
                ckpt.tensor_f32_transposed(name, shape[1], shape[0])
            } else {
                ckpt.tensor_f32(name, shape)
            };
            match values {
                Ok(v) => Some(TensorData::new(v, shape.to_vec())),
                Err(e) => {
                    if missing.is_ok() {
                        missing = Err(e);
                    }
                    None
                }
            }
        };
        visit_named(&mut net, config.tie_word_embeddings, &mut |name, slot| {
            let shape = slot.shape();
            let is_matrix = shape.len() == 2 && name != "model.embed_tokens.weight";
            if let Some(data) = load(name, &shape, is_matrix) {
                slot.set(data, decoder::creation(device, dtype));
            }
        });
        missing?;
        Ok(Self::wrap(config, net, device.clone()))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &tensor::Device {
        &self.device
    }

    /// Tensors under their HF names and in HF layout ((out, in) matrices).
    pub fn hf_tensors(&self) -> Result<HfTensors, ModelError> {
        let mut out = BTreeMap::new();
        let mut err = Ok(());
        let mut net = self.net.clone();
        visit_named(
            &mut net,
            self.config.tie_word_embeddings,
            &mut |name, slot| {
                let shape = slot.shape();
                match slot.values() {
                    Ok(values) => {
                        if shape.len() == 2 && name != "model.embed_tokens.weight" {
                            let t = transpose(&values, shape[0], shape[1]);
                            out.insert(name.to_string(), (vec![shape[1], shape[0]], t));
                        } else {
                            out.insert(name.to_string(), (shape, values));
                        }
                    }
                    Err(e) => err = Err(e),
                }
            },
        );
        err?;
        Ok(out)
    }

    /// Write only the adapters, in PEFT's layout (`adapter_config.json`,
    /// `adapter_model.safetensors`), into `dir`; an error without LoRA attached.
    pub fn save_adapter(&self, dir: &Path) -> Result<(), ModelError> {
        let Some(cfg) = &self.lora else {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("the model has no LoRA adapters to save"),
            });
        };
        let mut net = self.net.clone();
        lora::save_adapter(&mut net, cfg, dir)
    }

    /// Write `config.json` and `model.safetensors` into `dir` (created if needed), each
    /// atomically (temp file, fsync, rename).
    ///
    /// With LoRA attached the merged weights are written (a plain HF checkpoint), and the
    /// adapters beside them in PEFT's layout.
    pub fn save(&self, dir: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
        if let Some(cfg) = &self.lora {
            self.clone().merge_lora().save(dir, dtype)?;
            let mut net = self.net.clone();
            return lora::save_adapter(&mut net, cfg, dir);
        }
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let tensors = self.hf_tensors()?;
        weights::write_safetensors(&dir.join("model.safetensors"), &tensors, dtype)?;
        drop(tensors);
        let mut config = self.config.to_hf_json();
        if dtype == SaveDtype::Bf16 {
            config["torch_dtype"] = "bfloat16".into();
        }
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        atomic_write(&dir.join("config.json"), text.as_bytes())?;
        // A shard index from an earlier save would shadow the new single file.
        let stale = dir.join("model.safetensors.index.json");
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|source| ModelError::Io {
                path: stale,
                source,
            })?;
        }
        Ok(())
    }

    /// Reject ids outside the vocabulary and sequences longer than the context.
    pub fn check_input(&self, ids: &[u32], len: usize) -> Result<(), ModelError> {
        let vocab = self.config.vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        let max = self.config.max_position_embeddings;
        if len > max {
            return Err(ModelError::ContextOverflow { len, max });
        }
        Ok(())
    }

    /// Forward `batch` after whatever `cache` holds; returns final hidden states (b, t, hidden).
    ///
    /// With a cache, the batch's keys are appended to it; the batch must have as many rows as
    /// the cache (or the cache must be empty).
    pub fn hidden(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, ModelError> {
        let h = self.hidden_of(&self.compute_net(), batch, cache)?;
        Ok(match h.dtype() {
            burn::tensor::DType::F32 => h,
            _ => h.cast(burn::tensor::FloatDType::F32),
        })
    }

    /// [`Model::hidden`] through `net` (the model's weights or their mixed-precision cast), in
    /// the compute type.
    fn hidden_of(
        &self,
        net: &CausalLm,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, ModelError> {
        self.hidden_from(net, batch, None, cache)
    }

    /// [`Model::hidden_of`] with the token ids already on the device when `device_ids` is
    /// given (b·t of them, standing for `batch.ids`).
    fn hidden_from(
        &self,
        net: &CausalLm,
        batch: &TokenBatch,
        device_ids: Option<Tensor<1, Int>>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, ModelError> {
        let (b, t) = (batch.b, batch.t);
        self.check_batch(batch)?;
        let ids = device_ids.unwrap_or_else(|| {
            let ids: Vec<i64> = batch.ids.iter().map(|&i| i as i64).collect();
            Tensor::<1, Int>::from_data(TensorData::new(ids, [b * t]), &self.device)
        });
        let x = net.embed(ids, b, t);
        let rope = Rope::new(
            &batch.positions,
            b,
            t,
            &self.inv_freq,
            &self.device,
            x.dtype(),
        );
        match cache {
            Some(cache) => {
                if cache.layers.is_empty() {
                    self.start_cache(cache, b, t);
                } else if cache.b != b {
                    return Err(ModelError::Input(format!(
                        "batch has {b} rows but the KV cache has {}",
                        cache.b
                    )));
                }
                cache.limit_layers();
                cache.set_padding(cache.extended_padding(batch), batch);
                let s = cache.seq_len();
                // One new token per row and no padded key: every key is visible.
                if t == 1 && !cache.any_padding() {
                    return Ok(net.backbone(x, &rope, KeyMask::All, Some(&mut cache.layers)));
                }
                // A GPU's decode step over rows that begin with padding: each row's count of
                // padded keys, not a (b, s) mask built and copied every step.
                let counts = fused::masks_by_padding_counts(&self.device, self.config.head_dim);
                let starts = (t == 1 && counts)
                    .then(|| cache.padded_prefixes())
                    .flatten();
                if let Some(starts) = starts {
                    let starts = starts.into_iter().map(|n| n as f32).collect::<Vec<_>>();
                    let starts = Tensor::from_data(TensorData::new(starts, [b]), &self.device);
                    let mask = KeyMask::Starts(&starts);
                    return Ok(net.backbone(x, &rope, mask, Some(&mut cache.layers)));
                }
                let m = mask_values(b, t, s, &cache.padding);
                let mask = Tensor::from_data(TensorData::new(m, [b, 1, 1, t, s]), &self.device);
                let mask = KeyMask::Additive(&mask);
                Ok(net.backbone(x, &rope, mask, Some(&mut cache.layers)))
            }
            None => {
                let mask = self.packed_mask(batch);
                Ok(net.backbone(x, &rope, KeyMask::Additive(&mask), None))
            }
        }
    }

    /// Logits for every position: (b, t, vocab), in the compute type.
    pub fn logits(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, ModelError> {
        let net = self.compute_net();
        Ok(net.head(self.hidden_of(&net, batch, cache)?))
    }

    /// Array lengths, token ids and positions of `batch` against the model.
    fn check_batch(&self, batch: &TokenBatch) -> Result<(), ModelError> {
        let n = batch.b * batch.t;
        if batch.ids.len() != n || batch.positions.len() != n || batch.padding.len() != n {
            return Err(ModelError::Input(format!(
                "batch arrays must have b*t = {n} entries"
            )));
        }
        let max_pos = batch.positions.iter().copied().max().unwrap_or(0) as usize;
        self.check_input(&batch.ids, max_pos + 1)
    }

    /// Logits of the last column only: (b, vocab). The head runs on one position per row,
    /// which is what sampling needs. With a cache it takes the fused path (`step.rs`) where
    /// that applies ([`Model::fused_last_logits`]): the same kernels in the same order, so the
    /// same logits, without a burn op per layer operation.
    pub fn last_logits(
        &self,
        batch: &TokenBatch,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor<2>, ModelError> {
        if batch.t == 0 {
            return Err(ModelError::Input(
                "a batch needs at least one token per row for its last logits".into(),
            ));
        }
        if let Some(cache) = cache.as_deref_mut()
            && let Some(logits) = self.fused_last_logits(batch, cache)?
        {
            return Ok(logits);
        }
        let net = self.compute_net();
        let h = self.hidden_of(&net, batch, cache)?;
        let [b, t, _] = h.dims();
        let last = h.narrow(1, t - 1, 1);
        Ok(net.head(last).reshape([b, self.config.vocab_size]))
    }

    /// The last logits (b, vocab) of a decode step whose token ids are already on the device,
    /// one per row (the tokens the previous step picked there), at `positions` (one per row),
    /// through `cache`: [`Model::last_logits`] of a one-column batch without padding, with no
    /// host copy of the ids, so generation can queue the step before it reads the tokens.
    /// The ids are not checked against the vocabulary: they come from this model's logits.
    /// It takes burn's ops, not the fused CPU step of [`Model::fused_last_logits`]: for the
    /// GPU backends.
    pub fn next_logits(
        &self,
        ids: Tensor<1, Int>,
        positions: &[u32],
        cache: &mut KvCache,
    ) -> Result<Tensor<2>, ModelError> {
        let b = positions.len();
        if ids.dims()[0] != b || b == 0 {
            return Err(ModelError::Input(format!(
                "a decode step takes one id per row: {} ids for {b} positions",
                ids.dims()[0]
            )));
        }
        let batch = TokenBatch {
            ids: vec![0; b],
            positions: positions.to_vec(),
            padding: vec![false; b],
            b,
            t: 1,
        };
        let net = self.compute_net();
        let h = self.hidden_from(&net, &batch, Some(ids), Some(cache))?;
        Ok(net.head(h).reshape([b, self.config.vocab_size]))
    }

    /// The KV cache's type: the one the forward computes in, the weights' (an inference copy
    /// of a mixed-precision model holds them in the compute type), or the compute type.
    pub fn cache_dtype(&self) -> burn::tensor::DType {
        match self.compute {
            Precision::F32 => self.net.model.embed_tokens.val().dtype(),
            p => p.float_dtype().into(),
        }
    }

    /// Bytes of one layer's key (or value) cache buffer for `rows` rows of `positions`
    /// positions: (rows, kv heads, positions, head dim) in the cache's type.
    /// (Saturates at `u64::MAX`.)
    pub fn kv_buffer_bytes(&self, rows: usize, positions: usize) -> u64 {
        let (kv, d) = (self.config.num_key_value_heads, self.config.head_dim);
        saturating_product(&[rows, kv, positions, d, self.cache_dtype().size()])
    }

    /// Bytes of `rows` rows of last-position logits as sampling reads them: (rows, vocab) in
    /// f32, whatever the compute type. (Saturates at `u64::MAX`.)
    pub fn logits_buffer_bytes(&self, rows: usize) -> u64 {
        saturating_product(&[rows, self.config.vocab_size, 4])
    }

    /// The first batch through an empty cache sets its row count and, when room was
    /// [`KvCache::reserve`]d beyond the batch, allocates buffers of that many positions.
    fn start_cache(&self, cache: &mut KvCache, b: usize, t: usize) {
        cache.layers = vec![None; self.config.num_hidden_layers];
        cache.b = b;
        cache.prefixes = KeyPadding::Unknown;
        if cache.reserved > t {
            let (kv, d) = (self.config.num_key_value_heads, self.config.head_dim);
            let dtype = self.cache_dtype();
            let empty = || Tensor::zeros([b, kv, cache.reserved, d], (&self.device, dtype));
            for slot in &mut cache.layers {
                *slot = Some(LayerCache::empty(empty(), empty()));
            }
        }
    }

    /// [`Model::last_logits`] with a cache — a prefill or a decode step — through the fused
    /// path (`step.rs`): `None`, with nothing changed but an empty cache started, where that
    /// path does not apply (autodiff or non-Flex tensors, LoRA, an MLP bias, more than
    /// [`decode::MAX_ROWS`] new tokens, a CPU without AVX-512 on x86-64). `last_logits`
    /// tries it first.
    pub fn fused_last_logits(
        &self,
        batch: &TokenBatch,
        cache: &mut KvCache,
    ) -> Result<Option<Tensor<2>>, ModelError> {
        let (b, t) = (batch.b, batch.t);
        if b == 0
            || t == 0
            || (!cache.layers.is_empty() && cache.b != b)
            || !step::applies(&self.net, b * t)
        {
            return Ok(None);
        }
        self.check_batch(batch)?;
        if cache.layers.is_empty() {
            self.start_cache(cache, b, t);
        }
        cache.limit_layers();
        let padding = cache.extended_padding(batch);
        let s = padding.len() / b;
        // One new token per row and no padded key: every key is visible.
        let bias = match t > 1 || padding.iter().any(|&p| p) {
            true => mask_values(b, t, s, &padding),
            false => Vec::new(),
        };
        let (cos, sin) = Rope::tables(&batch.positions, &self.inv_freq);
        let input = step::StepInput {
            ids: &batch.ids,
            t,
            cos: &cos,
            sin: &sin,
            bias: &bias,
        };
        let Some(logits) = step::logits(&self.net, &input, &mut cache.layers) else {
            return Ok(None);
        };
        cache.set_padding(padding, batch);
        let vocab = logits.len() / b;
        Ok(Some(Tensor::from_data(
            TensorData::new(logits, [b, vocab]),
            &self.device,
        )))
    }

    /// Teacher-forced log-probabilities `log p(x_t | x_<t)` for t = 1..T−1: (b, t − 1).
    ///
    /// Differentiable when the model lives on an autodiff device. Entries whose target is
    /// padding are meaningless; multiply by [`TokenBatch`]'s mask (or use
    /// [`Model::target_mask`]) before reducing, or ask only for the targets a loss weights with
    /// [`Model::token_logprobs_where`].
    pub fn token_logprobs(&self, batch: &TokenBatch) -> Result<Tensor<2>, ModelError> {
        Ok(self.logprobs_inner(batch, Targets::All, false)?.0)
    }

    /// [`Model::token_logprobs`] of the targets whose entry in `weights` (row-major
    /// (b, t − 1), a loss's mask) is non-zero; the other entries are 0. The LM head runs on
    /// those positions only (TRL's `logits_to_keep`, per token): a prompt, a tool's output or
    /// padding costs no (vocab)-wide row of logits, forward or backward. At Qwen2.5's
    /// vocabulary the head is about a quarter of a 0.5B model's forward FLOPs per token.
    pub fn token_logprobs_where(
        &self,
        batch: &TokenBatch,
        weights: &[f32],
    ) -> Result<Tensor<2>, ModelError> {
        Ok(self
            .logprobs_inner(batch, Targets::Where(weights), false)?
            .0)
    }

    /// [`Model::token_logprobs_where`] and, beside it, the entropy `−Σ_v p log p` of each
    /// predicted distribution at the same targets, (b, t − 1), detached (a diagnostic: GRPO
    /// logs it, TRL's `entropy`).
    pub fn token_logprobs_with_entropy(
        &self,
        batch: &TokenBatch,
        weights: &[f32],
    ) -> Result<(Tensor<2>, Tensor<2>), ModelError> {
        let (logp, entropy) = self.logprobs_inner(batch, Targets::Where(weights), true)?;
        Ok((logp, entropy.expect("asked for")))
    }

    fn logprobs_inner(
        &self,
        batch: &TokenBatch,
        targets: Targets<'_>,
        entropy: bool,
    ) -> Result<(Tensor<2>, Option<Tensor<2>>), ModelError> {
        if batch.t < 2 {
            return Err(ModelError::Input(
                "log-probs need sequences of at least 2 tokens".into(),
            ));
        }
        let (b, t) = (batch.b, batch.t);
        // The kept targets as (hidden row, output entry) pairs: target j of row r is predicted
        // by hidden row r·t + j and lands at entry r·(t − 1) + j.
        let (kept, none) = match targets {
            Targets::All => (None, false),
            Targets::Where(w) => {
                if w.len() != b * (t - 1) {
                    return Err(ModelError::Input(format!(
                        "target weights have {} entries, expected b × (t − 1) = {}",
                        w.len(),
                        b * (t - 1)
                    )));
                }
                let kept: Vec<(i64, i64)> = (w.iter().enumerate())
                    .filter(|(_, w)| **w != 0.0)
                    .map(|(at, _)| ((at + at / (t - 1)) as i64, at as i64))
                    .collect();
                match kept.len() {
                    // None: the head on one row, times 0 (a loss with no token still leads
                    // back to the weights).
                    0 => (Some(vec![(0, 0)]), true),
                    // Every target: the whole grid, with no gather.
                    n if n == w.len() => (None, false),
                    _ => (Some(kept), false),
                }
            }
        };
        let net = self.compute_net();
        let hidden = self.hidden_of(&net, batch, None)?; // (b, t, hidden)
        let width = hidden.dims()[2];
        let hidden = hidden.reshape([b * t, width]);
        let Some(kept) = kept else {
            // Every position's row (the last column's target a placeholder, dropped after):
            // the hidden states as they are, no (b, t − 1, hidden) copy.
            let targets: Vec<i64> = (0..b)
                .flat_map(|row| {
                    let next = batch.ids[row * t + 1..(row + 1) * t].iter();
                    next.map(|&i| i as i64).chain([0])
                })
                .collect();
            let targets =
                Tensor::<1, Int>::from_data(TensorData::new(targets, [b * t]), &self.device);
            let (logp, entropy) = net.head_logprobs(hidden, targets, entropy);
            let cut = |x: Tensor<1>| x.reshape([b, t]).narrow(1, 0, t - 1);
            return Ok((cut(logp), entropy.map(cut)));
        };
        let n = kept.len();
        let index =
            |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &self.device);
        let rows = index(kept.iter().map(|&(row, _)| row).collect());
        let entries = index(kept.iter().map(|&(_, at)| at).collect());
        let targets = index(
            kept.iter()
                .map(|&(row, _)| i64::from(batch.ids[row as usize + 1]))
                .collect(),
        );
        let (logp, entropy) = net.head_logprobs(hidden.select(0, rows), targets, entropy);
        let place = |x: Tensor<1>| {
            let x = if none { x.mul_scalar(0.0) } else { x };
            Tensor::<1>::zeros([b * (t - 1)], (&self.device, x.dtype()))
                .select_assign(0, entries.clone(), x, IndexingUpdateOp::Add)
                .reshape([b, t - 1])
        };
        Ok((place(logp), entropy.map(place)))
    }

    /// [`TokenBatch::target_weights`] as a tensor on this model's device.
    pub fn target_mask(&self, batch: &TokenBatch) -> Tensor<2> {
        let (b, t) = (batch.b, batch.t);
        let m = batch.target_weights();
        Tensor::from_data(TensorData::new(m, [b, t.saturating_sub(1)]), &self.device)
    }

    /// (b, 1, 1, t, t) additive mask of a batch without cache. A row may hold several packed
    /// examples: a real token at position 0 after column 0 starts a new example, and queries
    /// see only keys of their own example (block-diagonal causal attention, as transformers
    /// derives it from `position_ids` for padding-free batches).
    fn packed_mask(&self, batch: &TokenBatch) -> Tensor<5> {
        let (b, t) = (batch.b, batch.t);
        let mut m = vec![0f32; b * t * t];
        for row in 0..b {
            let base = row * t;
            let mut start = 0; // column where the current example begins
            for i in 0..t {
                if i > 0 && !batch.padding[base + i] && batch.positions[base + i] == 0 {
                    start = i;
                }
                let line = &mut m[(base + i) * t..(base + i + 1) * t];
                for (j, v) in line.iter_mut().enumerate() {
                    if j > i || j < start || batch.padding[base + j] {
                        *v = MASKED;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(m, [b, 1, 1, t, t]), &self.device)
    }

    /// A copy for inference: plain (non-autodiff) tensors on the same backend, so sampling and
    /// scoring with it build no autodiff graph. Moving an autodiff model with
    /// [`Model::to_device`] keeps its tensors tracked — every decode step then grows a graph
    /// that is never freed (measured: 10 GB per GRPO step on the benchmark model).
    ///
    /// The copy of a mixed-precision model holds its weights in the compute type (cast once),
    /// with its projections packed where [`Model::pack_projections`] packs (not with LoRA
    /// adapters attached); an f32 copy shares the original's weights, so it keeps them as
    /// they are.
    pub fn inference_copy(&self) -> Self {
        let net = match self.compute {
            Precision::F32 => self.net.valid(),
            // Cast once: the copy's weights are in the compute type, so its forward passes,
            // KV caches and activations are too, with no per-call cast.
            p => decoder::cast_floats(self.net.valid(), p.float_dtype()),
        };
        let copy = Self {
            net,
            device: self.device.clone().without_autodiff(),
            compute: Precision::F32,
            ..self.clone()
        };
        match self.compute {
            Precision::F32 => copy,
            _ => copy.pack_projections(),
        }
    }

    /// [`decoder::CausalLm::pack_projections`] where it pays: on a GPU backend, for a model
    /// without LoRA adapters that no optimiser updates (no autodiff device, no mixed-precision
    /// training). On flex, whose fused CPU path reads the separate weights, and elsewhere,
    /// the model as it is. Same logits, fewer kernels per step.
    pub fn pack_projections(self) -> Self {
        if crate::fused::is_flex(&self.device)
            || self.device.is_autodiff()
            || self.lora.is_some()
            || self.compute != Precision::F32
        {
            return self;
        }
        Self {
            net: self.net.pack_projections(),
            ..self
        }
    }

    /// Replace the network by `f(network)`, handing `f` the only handles on its weights: an
    /// optimiser's step then updates each parameter in place, where a clone of the network
    /// held here would make it copy every one first. Should `f` panic, the model is left with
    /// an empty network (no layers).
    pub fn map_net(&mut self, f: impl FnOnce(CausalLm) -> CausalLm) {
        let net = std::mem::replace(&mut self.net, CausalLm::vacant(&self.device));
        self.net = f(net);
    }

    /// A copy for another worker thread: same weights (shared, not copied), same parameter ids,
    /// but fresh autodiff leaves, so its backward pass runs in a graph of its own instead of
    /// merging into (and serialising behind) the original's. Gradients of the copy, keyed by
    /// parameter id, can be accumulated with the original's (data-parallel training).
    pub fn fork(&self) -> Self {
        Self {
            net: self.net.clone().unpacked().fork(&self.device),
            ..self.clone()
        }
    }

    /// Move to another device (e.g. to or from an autodiff device).
    ///
    /// Mixed precision stays on where the new device supports it; moving to flex (which trains
    /// in f32) turns it off.
    pub fn to_device(self, device: &tensor::Device) -> Self {
        let compute = match backend::check_mixed_precision(device, self.compute) {
            Ok(()) => self.compute,
            Err(_) => Precision::F32,
        };
        Self {
            net: self.net.unpacked().fork(device),
            device: device.clone(),
            compute,
            ..self
        }
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.net.num_params()
    }

    /// The device memory training this model cannot do with less of, in bytes: every weight
    /// in its type, and for each one that trains its gradient and AdamW's two moments in f32
    /// (12 bytes). Activations, a rollout's KV cache and a KL reference come on top, so a
    /// run can need more, never less. Full fine-tuning of Qwen2.5-7B: 7.6 B × 16 = 122 GB.
    pub fn training_floor_bytes(&self) -> u64 {
        struct Floor(u64);
        impl burn::module::ModuleVisitor for Floor {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                let n = value.shape().num_elements() as u64;
                let trains = if value.is_require_grad() { 12 } else { 0 };
                self.0 = self
                    .0
                    .saturating_add(n.saturating_mul(value.dtype().size() as u64 + trains));
            }
        }
        let mut floor = Floor(0);
        self.net.visit(&mut floor);
        floor.0
    }

    /// An error where [`Model::training_floor_bytes`] passes `memory`, the device's (`None`:
    /// unknown, no check), naming both and what would fit.
    pub fn check_training_floor(&self, memory: Option<u64>) -> Result<(), ModelError> {
        let (Some(memory), floor) = (memory, self.training_floor_bytes()) else {
            return Ok(());
        };
        if floor <= memory {
            return Ok(());
        }
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        Err(ModelError::Input(format!(
            "training this model needs at least {:.1} GiB of device memory (each weight, and \
             each trained weight's gradient and AdamW moments in f32), past the {:.1} GiB the \
             device has: train LoRA adapters (`lora`), a smaller model, or on `--backend flex`",
            gib(floor),
            gib(memory)
        )))
    }

    /// [`Model::check_training_floor`] against the memory of the device the model is on
    /// ([`device_memory_bytes`]): the trainers call it before their first step.
    pub fn check_trains_on_device(&self) -> Result<(), ModelError> {
        self.check_training_floor(device_memory_bytes(&self.device))
    }
}

/// A parameter slot seen while walking the model by HF name.
pub enum Slot<'a> {
    Matrix(&'a mut Param<Tensor<2>>),
    Vector(&'a mut Param<Tensor<1>>),
}

impl Slot<'_> {
    /// Our (in, out)-layout shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Slot::Matrix(p) => p.dims().to_vec(),
            Slot::Vector(p) => p.dims().to_vec(),
        }
    }

    fn set(&mut self, data: TensorData, options: burn::tensor::TensorCreationOptions) {
        match self {
            Slot::Matrix(p) => **p = Param::from_tensor(Tensor::from_data(data, options)),
            Slot::Vector(p) => **p = Param::from_tensor(Tensor::from_data(data, options)),
        }
    }

    /// Current values, row-major.
    pub fn values(&self) -> Result<Vec<f32>, ModelError> {
        match self {
            Slot::Matrix(p) => p.val().try_into_vec_as::<f32>(),
            Slot::Vector(p) => p.val().try_into_vec_as::<f32>(),
        }
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
    }
}

/// Give every parameter an id derived from its HF name (FNV-1a), so optimiser state saved by
/// one process matches the parameters of the same model loaded by another (burn keys optimiser
/// state by [`ParamId`]).
fn assign_stable_ids(net: &mut CausalLm, tied: bool) {
    visit_named(net, tied, &mut |name, slot| {
        let h = reasonlab_core::hash::fnv1a64(name.as_bytes());
        match slot {
            Slot::Matrix(p) => p.id = ParamId::from(h),
            Slot::Vector(p) => p.id = ParamId::from(h),
        }
    });
}

/// Visit every parameter with its HF name (`model.layers.0.self_attn.q_proj.weight`, ...).
/// `skip_head` omits `lm_head.weight` (tied embeddings).
pub fn visit_named(net: &mut CausalLm, skip_head: bool, f: &mut dyn FnMut(&str, &mut Slot<'_>)) {
    f(
        "model.embed_tokens.weight",
        &mut Slot::Matrix(&mut net.model.embed_tokens),
    );
    let linear =
        |prefix: &str, lin: &mut decoder::Linear, f: &mut dyn FnMut(&str, &mut Slot<'_>)| {
            f(
                &format!("{prefix}.weight"),
                &mut Slot::Matrix(&mut lin.weight),
            );
            if let Some(bias) = &mut lin.bias {
                f(&format!("{prefix}.bias"), &mut Slot::Vector(bias));
            }
        };
    for (i, layer) in net.model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        let attn = &mut layer.self_attn;
        linear(&format!("{p}.self_attn.q_proj"), &mut attn.q_proj, f);
        linear(&format!("{p}.self_attn.k_proj"), &mut attn.k_proj, f);
        linear(&format!("{p}.self_attn.v_proj"), &mut attn.v_proj, f);
        linear(&format!("{p}.self_attn.o_proj"), &mut attn.o_proj, f);
        if let Some(n) = &mut attn.q_norm {
            f(
                &format!("{p}.self_attn.q_norm.weight"),
                &mut Slot::Vector(&mut n.weight),
            );
        }
        if let Some(n) = &mut attn.k_norm {
            f(
                &format!("{p}.self_attn.k_norm.weight"),
                &mut Slot::Vector(&mut n.weight),
            );
        }
        linear(&format!("{p}.mlp.gate_proj"), &mut layer.mlp.gate_proj, f);
        linear(&format!("{p}.mlp.up_proj"), &mut layer.mlp.up_proj, f);
        linear(&format!("{p}.mlp.down_proj"), &mut layer.mlp.down_proj, f);
        f(
            &format!("{p}.input_layernorm.weight"),
            &mut Slot::Vector(&mut layer.input_layernorm.weight),
        );
        f(
            &format!("{p}.post_attention_layernorm.weight"),
            &mut Slot::Vector(&mut layer.post_attention_layernorm.weight),
        );
    }
    f(
        "model.norm.weight",
        &mut Slot::Vector(&mut net.model.norm.weight),
    );
    if !skip_head && let Some(head) = &mut net.lm_head {
        linear("lm_head", head, f);
    }
    if let Some(score) = &mut net.score {
        linear("score", score, f);
    }
}

pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    core_atomic_write(path, bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}
