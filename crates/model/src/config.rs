//! `config.json` of a Hugging Face causal LM, typed.
//!
//! Two layouts exist in the wild and both are read:
//! - transformers 4: `rope_theta` at the top level, optional `rope_scaling`
//!   (`{"rope_type": "llama3", "factor": 8.0, ...}`; older files say `"type"`);
//! - transformers 5: `rope_parameters: {"rope_theta": ..., "rope_type": ..., ...}`.
//!
//! Whatever the input layout, [`ModelConfig::to_hf_json`] writes the transformers 4 layout with
//! `rope_scaling`, which both transformers 4 and 5 load.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ModelError;

/// The decoder families we implement. They share one block structure and differ only in
/// where biases and norms sit (see [`ModelConfig::qkv_bias`], [`ModelConfig::qk_norm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5, Qwen2.5-Math, DeepSeek-R1-Distill-Qwen).
    Qwen2,
    /// `LlamaForCausalLM` (Llama 2/3, DeepSeekMath-7B, DeepSeek-R1-Distill-Llama).
    Llama,
    /// `Qwen3ForCausalLM`: Qwen2 without the q/k/v bias, plus RMSNorm on q and k per head.
    Qwen3,
}

impl Architecture {
    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "qwen2" => Some(Self::Qwen2),
            "llama" => Some(Self::Llama),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
            Self::Qwen3 => "qwen3",
        }
    }

    /// HF `architectures[0]`.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE (Su et al. 2021).
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent rescaling (transformers `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Decoder hyper-parameters, named as in `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v (and o for Llama/Qwen3 `attention_bias`).
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub initializer_range: f64,
}

/// The raw fields we read; unknown fields are ignored so new transformers releases still load.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    initializer_range: Option<f64>,
}

fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Read `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|e| e.in_file(&path))
    }

    /// Parse the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, ModelError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| ModelError::Config {
            path: None,
            field: "(json)".into(),
            message: e.to_string(),
        })?;
        let cfg_err = |field: &str, message: String| ModelError::Config {
            path: None,
            field: field.into(),
            message,
        };
        let model_type = raw
            .model_type
            .ok_or_else(|| cfg_err("model_type", "missing".into()))?;
        let architecture = Architecture::from_model_type(&model_type).ok_or_else(|| {
            cfg_err(
                "model_type",
                format!("unsupported model_type {model_type:?}; expected one of \"qwen2\", \"llama\", \"qwen3\""),
            )
        })?;
        let need = |v: Option<usize>, field: &str| -> Result<usize, ModelError> {
            match v {
                Some(0) => Err(cfg_err(field, "must be > 0".into())),
                Some(v) => Ok(v),
                None => Err(cfg_err(field, "missing".into())),
            }
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(cfg_err(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(cfg_err(
                    "head_dim",
                    format!(
                        "missing and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                    ),
                ));
            }
        };
        if head_dim % 2 != 0 {
            return Err(cfg_err(
                "head_dim",
                format!("{head_dim} must be even for RoPE"),
            ));
        }
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(cfg_err(
                "hidden_act",
                format!("expected \"silu\", found {act:?}"),
            ));
        }

        // transformers 5 puts theta and scaling together in `rope_parameters`.
        let (rope_theta, scaling_value) = match &raw.rope_parameters {
            Some(Value::Object(params)) => {
                let theta = params
                    .get("rope_theta")
                    .and_then(Value::as_f64)
                    .or(raw.rope_theta)
                    .unwrap_or(10_000.0);
                (theta, Some(Value::Object(params.clone())))
            }
            _ => (raw.rope_theta.unwrap_or(10_000.0), raw.rope_scaling.clone()),
        };
        let rope_scaling = parse_rope_scaling(scaling_value.as_ref())?;

        let tie_default = false;
        Ok(Self {
            architecture,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(tie_default),
            attention_bias: raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            bos_token_id: token_ids(raw.bos_token_id.as_ref()).first().copied(),
            eos_token_ids: token_ids(raw.eos_token_id.as_ref()),
            initializer_range: raw.initializer_range.unwrap_or(0.02),
        })
    }

    /// Whether q/k/v projections carry a bias (Qwen2 always; others per `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        matches!(self.architecture, Architecture::Qwen2) || self.attention_bias
    }

    /// Whether `o_proj` carries a bias (never for Qwen2).
    pub fn o_bias(&self) -> bool {
        !matches!(self.architecture, Architecture::Qwen2) && self.attention_bias
    }

    /// Whether each head's q and k are RMS-normalised before RoPE (Qwen3).
    pub fn qk_norm(&self) -> bool {
        matches!(self.architecture, Architecture::Qwen3)
    }

    /// Number of query heads sharing one key/value head (GQA group size).
    pub fn n_rep(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Rotary inverse frequencies, `head_dim / 2` of them, after scaling.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let dim = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / dim))
            .collect();
        match self.rope_scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// `config.json` in the transformers 4 layout (loads in transformers 4 and 5).
    pub fn to_hf_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "architectures".into(),
            json!([self.architecture.class_name()]),
        );
        m.insert("model_type".into(), json!(self.architecture.model_type()));
        m.insert("vocab_size".into(), json!(self.vocab_size));
        m.insert("hidden_size".into(), json!(self.hidden_size));
        m.insert("intermediate_size".into(), json!(self.intermediate_size));
        m.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        m.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        m.insert(
            "num_key_value_heads".into(),
            json!(self.num_key_value_heads),
        );
        m.insert("head_dim".into(), json!(self.head_dim));
        m.insert(
            "max_position_embeddings".into(),
            json!(self.max_position_embeddings),
        );
        m.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        m.insert("rope_theta".into(), json!(self.rope_theta));
        if self.rope_scaling != RopeScaling::Default {
            m.insert(
                "rope_scaling".into(),
                serde_json::to_value(self.rope_scaling).unwrap_or(Value::Null),
            );
        }
        m.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        m.insert("hidden_act".into(), json!("silu"));
        m.insert("initializer_range".into(), json!(self.initializer_range));
        m.insert("torch_dtype".into(), json!("float32"));
        m.insert("use_cache".into(), json!(true));
        if !matches!(self.architecture, Architecture::Qwen2) {
            m.insert("attention_bias".into(), json!(self.attention_bias));
        }
        if matches!(self.architecture, Architecture::Llama) {
            m.insert("mlp_bias".into(), json!(self.mlp_bias));
        }
        if let Some(bos) = self.bos_token_id {
            m.insert("bos_token_id".into(), json!(bos));
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => {
                m.insert("eos_token_id".into(), json!(one));
            }
            many => {
                m.insert("eos_token_id".into(), json!(many));
            }
        }
        Value::Object(m)
    }

    /// The largest weight matrix, under its HF name, and its element count: the embedding
    /// (and an untied head of its size) at any real vocabulary, an MLP projection or q's at
    /// small ones.
    pub fn largest_weight(&self) -> (&'static str, usize) {
        let h = self.hidden_size;
        [
            (
                "model.embed_tokens.weight",
                self.vocab_size.saturating_mul(h),
            ),
            (
                "model.layers.0.mlp.gate_proj.weight",
                h.saturating_mul(self.intermediate_size),
            ),
            (
                "model.layers.0.self_attn.q_proj.weight",
                h.saturating_mul(self.num_attention_heads.saturating_mul(self.head_dim)),
            ),
        ]
        .into_iter()
        .fold(("", 0), |a, b| if b.1 > a.1 { b } else { a })
    }

    /// Parameter count (embedding and head counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h + if self.qkv_bias() { q + 2 * kv } else { 0 };
        let mlp = 3 * h * self.intermediate_size;
        let norms = 2 * h + if self.qk_norm() { 2 * self.head_dim } else { 0 };
        let per_layer = attn + mlp + norms;
        let emb = self.vocab_size * h;
        emb + if self.tie_word_embeddings { 0 } else { emb }
            + h
            + per_layer * self.num_hidden_layers
    }
}

fn parse_rope_scaling(value: Option<&Value>) -> Result<RopeScaling, ModelError> {
    let Some(Value::Object(obj)) = value else {
        return Ok(RopeScaling::Default);
    };
    let err = |message: String| ModelError::Config {
        path: None,
        field: "rope_scaling".into(),
        message,
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64, ModelError> {
        obj.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| err(format!("rope_type {kind:?} needs a number {key:?}")))
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        }),
        other => Err(err(format!(
            "unsupported rope_type {other:?}; supported: default, linear, llama3"
        ))),
    }
}

/// The benchmark model of the model-core issue: Qwen2-style, vocab 512, hidden 256, 4 layers,
/// 4 heads / 2 KV heads, intermediate 688, RMSNorm 1e-6, rope θ 10000.
pub fn bench_config() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen2,
        vocab_size: 512,
        hidden_size: 256,
        intermediate_size: 688,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 64,
        max_position_embeddings: 512,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::Default,
        tie_word_embeddings: true,
        attention_bias: false,
        mlp_bias: false,
        bos_token_id: None,
        eos_token_ids: vec![],
        initializer_range: 0.02,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = r#"{"model_type":"llama","vocab_size":512,"hidden_size":64,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rope_theta":500000.0,
      "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
      "original_max_position_embeddings":64},"eos_token_id":[1,2]}"#;

    #[test]
    fn reads_transformers4_layout_with_llama3_scaling() {
        let c = ModelConfig::from_json_str(V4).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(
            c.rope_scaling,
            RopeScaling::Llama3 { factor: 8.0, .. }
        ));
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        // Scaling divides the lowest frequencies by `factor` and keeps the highest.
        let plain = ModelConfig {
            rope_scaling: RopeScaling::Default,
            ..c.clone()
        };
        let (a, b) = (c.rope_inv_freq(), plain.rope_inv_freq());
        assert_eq!(a[0], b[0]);
        assert!((a[7] - b[7] / 8.0).abs() < 1e-15);
    }

    #[test]
    fn reads_transformers5_layout() {
        let t = r#"{"model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":16,
          "num_hidden_layers":1,"num_attention_heads":2,"head_dim":4,
          "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}"#;
        let c = ModelConfig::from_json_str(t).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.rope_scaling, RopeScaling::Default);
        assert_eq!(c.num_key_value_heads, 2);
        assert!(c.qk_norm());
        // Round trip through the layout we write.
        let again = ModelConfig::from_json_str(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_model_type_names_the_field() {
        let e = ModelConfig::from_json_str(r#"{"model_type":"gpt2"}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("model_type") && msg.contains("gpt2"), "{msg}");
    }

    #[test]
    fn unsupported_rope_type_is_an_error() {
        let t = V4.replace("\"llama3\"", "\"yarn\"");
        let msg = ModelConfig::from_json_str(&t).unwrap_err().to_string();
        assert!(msg.contains("yarn"), "{msg}");
    }
}
