//! Reward models in the layouts transformers uses, on the causal LM's backbone (so every
//! architecture [`Model`] loads works here):
//!
//! - **outcome** (`*ForSequenceClassification`): a linear `score` head without bias,
//!   (num_labels, hidden), read at each sequence's last non-pad token;
//! - **process** (`*ForTokenClassification`): a `score` head with bias read at every token; a
//!   step's score is its probability of label 1 ("good") at the step's last token;
//! - **process, Math-Shepherd convention**: a plain causal LM whose step score is
//!   `softmax(logit_good, logit_bad)[good]` at a step tag, which is how released PRMs such as
//!   Math-Shepherd's ship. No new layer; only the two head rows are computed.
//!
//! Every head reduces to one *reward logit* per position ([`RewardModel::reward_logits`],
//! (b, t), differentiable): the outcome score itself, or the logit whose sigmoid is the
//! probability that a step is good (`l₁ − l₀` for two labels, `l_good − l_bad` for the
//! Math-Shepherd convention), so a binary cross-entropy on it equals transformers' two-class
//! cross-entropy.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::decoder::Linear;
use crate::{Checkpoint, Model, ModelConfig, ModelError, SaveDtype, TokenBatch};

/// Where a reward model's score comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardHead {
    /// `*ForSequenceClassification`: one score per sequence (outcome reward model).
    Sequence,
    /// `*ForTokenClassification`: a score per token, read at step ends (process reward model).
    Token,
    /// A causal LM read at step tags: P(good) = softmax over the `good` and `bad` token logits.
    GoodToken { good: u32, bad: u32 },
}

impl RewardHead {
    /// The transformers class suffix of this head's checkpoints.
    pub fn class_suffix(self) -> &'static str {
        match self {
            RewardHead::Sequence => "ForSequenceClassification",
            RewardHead::Token => "ForTokenClassification",
            RewardHead::GoodToken { .. } => "ForCausalLM",
        }
    }

    /// Whether the head scores steps (a process reward model).
    pub fn is_process(self) -> bool {
        !matches!(self, RewardHead::Sequence)
    }

    /// One reward logit per position of `model` (this head's backbone), (b, t),
    /// differentiable on an autodiff device: the outcome score (one-label sequence head), or
    /// the logit whose sigmoid is P(good) (`l₁ − l₀` for a two-label token head, `l₀` for a
    /// one-label one, `l_good − l_bad` for the Math-Shepherd convention). Errors for a
    /// sequence head with more than one label.
    pub fn reward_logits(self, model: &Model, batch: &TokenBatch) -> Result<Tensor<2>, ModelError> {
        let (b, t) = (batch.b, batch.t);
        let h = model.hidden(batch, None)?; // (b, t, hidden)
        let logits = match self {
            RewardHead::GoodToken { good, bad } => {
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(vec![good as i64, bad as i64], [2]),
                    model.device(),
                );
                let w = match &model.net.lm_head {
                    Some(head) => head.weight.val().select(1, idx), // (hidden, 2)
                    None => model
                        .net
                        .model
                        .embed_tokens
                        .val()
                        .select(0, idx)
                        .transpose(),
                };
                let hidden = w.dims()[0];
                // `h` is f32 (`Model::hidden`); the head's weights may not be (an inference
                // copy of a mixed-precision model).
                let w = crate::decoder::same_type(w, h.dtype());
                h.reshape([b * t, hidden]).matmul(w).reshape([b, t, 2])
            }
            RewardHead::Sequence | RewardHead::Token => {
                let score = model.net.score.as_ref().ok_or_else(|| {
                    ModelError::Input("the reward model has no score head".into())
                })?;
                score.forward(h) // (b, t, num_labels)
            }
        };
        // Rewards and their losses in f32, whatever type the head computed in.
        let logits = crate::decoder::same_type(logits, burn::tensor::DType::F32);
        let labels = logits.dims()[2];
        let pick = |i: usize| logits.clone().narrow(2, i, 1).reshape([b, t]);
        Ok(match (self, labels) {
            (RewardHead::GoodToken { .. }, _) => pick(0) - pick(1),
            (_, 1) => pick(0),
            (RewardHead::Token, 2) => pick(1) - pick(0),
            (head, n) => {
                return Err(ModelError::Input(format!(
                    "a {head:?} head with {n} labels has no single reward logit"
                )));
            }
        })
    }
}

/// A reward model: a backbone and its head.
#[derive(Debug, Clone)]
pub struct RewardModel {
    model: Model,
    head: RewardHead,
    num_labels: usize,
    /// `tie_word_embeddings` of the checkpoint the backbone came from (written back on save).
    tied: bool,
}

impl RewardModel {
    /// Load a `*ForSequenceClassification` or `*ForTokenClassification` checkpoint (`DIR/config.json`
    /// and the safetensors weights: `model.*` and `score.*`). A causal LM is read with
    /// [`RewardModel::load_good_token`].
    pub fn load(dir: &Path, device: &crate::tensor::Device) -> Result<Self, ModelError> {
        let config = ModelConfig::from_dir(dir)?;
        let meta = read_meta(dir)?;
        let head = match meta.architecture.as_deref() {
            Some(a) if a.ends_with("ForSequenceClassification") => RewardHead::Sequence,
            Some(a) if a.ends_with("ForTokenClassification") => RewardHead::Token,
            other => {
                return Err(ModelError::Config {
                    path: Some(dir.join("config.json")),
                    field: "architectures".into(),
                    message: format!(
                        "{other:?} is not a reward model (expected *ForSequenceClassification or \
                         *ForTokenClassification; a causal LM scores steps with the \
                         Math-Shepherd convention, which needs its good and bad tokens)"
                    ),
                });
            }
        };
        Model::check_fits(&config, device)?;
        let ckpt = Checkpoint::open(dir)?;
        let bias = ckpt.contains("score.bias");
        let tied = config.tie_word_embeddings;
        // No language-model head: load the backbone as if the head were tied to it.
        let backbone = ModelConfig {
            tie_word_embeddings: true,
            ..config
        };
        let model = Model::from_checkpoint_with(
            backbone,
            &ckpt,
            device,
            Some((meta.num_labels, bias)),
            None,
        )?;
        Ok(Self {
            model,
            head,
            num_labels: meta.num_labels,
            tied,
        })
    }

    /// A causal LM read as a process reward model at step tags, Math-Shepherd style.
    pub fn load_good_token(
        dir: &Path,
        device: &crate::tensor::Device,
        good: u32,
        bad: u32,
    ) -> Result<Self, ModelError> {
        Self::from_lm(
            Model::load(dir, device)?,
            RewardHead::GoodToken { good, bad },
            0,
        )
    }

    /// A reward model on `model`'s backbone with a fresh head (transformers' initialisation:
    /// normal(0, initializer_range) weights from `seed`, zero bias): a one-label outcome head, a
    /// two-label token head, or, for [`RewardHead::GoodToken`], the causal LM itself.
    pub fn from_lm(model: Model, head: RewardHead, seed: u64) -> Result<Self, ModelError> {
        let tied = model.config.tie_word_embeddings;
        let vocab = model.config.vocab_size as u32;
        let (labels, bias) = match head {
            RewardHead::Sequence => (1, false),
            RewardHead::Token => (2, true),
            RewardHead::GoodToken { good, bad } => {
                if good >= vocab || bad >= vocab || good == bad {
                    return Err(ModelError::Input(format!(
                        "good and bad tokens must be two ids below the vocabulary size {vocab} \
                         (got {good} and {bad})"
                    )));
                }
                return Ok(Self {
                    model,
                    head,
                    num_labels: 2,
                    tied,
                });
            }
        };
        if model.lora().is_some() {
            return Err(ModelError::Input(
                "attach LoRA after the reward head, not before".into(),
            ));
        }
        let mut model = model;
        let device = model.device().clone();
        let hidden = model.config.hidden_size;
        let std = model.config.initializer_range;
        model.net.lm_head = None;
        model.net.score = Some(Linear::normal(hidden, labels, bias, std, seed, &device));
        model.config.tie_word_embeddings = true;
        let model = Model::wrap(model.config, model.net, device);
        Ok(Self {
            model,
            head,
            num_labels: labels,
            tied,
        })
    }

    /// The backbone (for its config and device).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The backbone alone, holding no other reference to its weights (a trainer replaces them
    /// step by step, and a reference kept elsewhere would keep the first ones alive).
    pub fn into_model(self) -> Model {
        self.model
    }

    /// The backbone, to train it or attach LoRA ([`Model::add_lora`] keeps the head trainable).
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// Replace the backbone (after a training step or LoRA); the head kind stays.
    pub fn with_model(self, model: Model) -> Self {
        Self { model, ..self }
    }

    pub fn head(&self) -> RewardHead {
        self.head
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// One reward logit per position, (b, t): [`RewardHead::reward_logits`] of this model.
    pub fn reward_logits(&self, batch: &TokenBatch) -> Result<Tensor<2>, ModelError> {
        self.head.reward_logits(&self.model, batch)
    }

    /// The scores of every row of `batch`, read at its last non-pad token: (b, num_labels)
    /// raw logits of a sequence head, or, for a process head, the row's reward logit there.
    pub fn scores(&self, batch: &TokenBatch) -> Result<Vec<Vec<f32>>, ModelError> {
        let last = last_tokens(batch)?;
        if self.head == RewardHead::Sequence && self.num_labels > 1 {
            let h = self.model.hidden(batch, None)?;
            let score = self
                .model
                .net
                .score
                .as_ref()
                .expect("sequence heads have one");
            let all = host(
                score
                    .forward(h)
                    .reshape([batch.b * batch.t, self.num_labels]),
            )?;
            let n = self.num_labels;
            return Ok(last
                .iter()
                .map(|&at| all[at * n..(at + 1) * n].to_vec())
                .collect());
        }
        let all = host(self.reward_logits(batch)?.reshape([batch.b * batch.t]))?;
        Ok(last.iter().map(|&at| vec![all[at]]).collect())
    }

    /// Process scores: for each row, P(good) at each of its step-end columns (`ends[row]`).
    pub fn step_probs(
        &self,
        batch: &TokenBatch,
        ends: &[Vec<usize>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        if ends.len() != batch.b || ends.iter().flatten().any(|&c| c >= batch.t) {
            return Err(ModelError::Input(
                "step ends must name one list of columns per row, inside the batch".into(),
            ));
        }
        let t = batch.t;
        let all = host(self.reward_logits(batch)?.reshape([batch.b * t]))?;
        Ok(ends
            .iter()
            .enumerate()
            .map(|(row, cols)| cols.iter().map(|&c| sigmoid(all[row * t + c])).collect())
            .collect())
    }

    /// Write the checkpoint in transformers' layout (`config.json` with the head's
    /// architecture and labels, `model.safetensors`), each file atomically. A Math-Shepherd
    /// model is saved as the causal LM it is; LoRA adapters are merged first.
    pub fn save(&self, dir: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
        let model = self.model.clone().merge_lora();
        if let RewardHead::GoodToken { .. } = self.head {
            return model.save(dir, dtype);
        }
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let tensors = model.hf_tensors()?;
        crate::weights::write_safetensors(&dir.join("model.safetensors"), &tensors, dtype)?;
        drop(tensors);
        let mut config = model.config.to_hf_json();
        let arch = config["architectures"][0]
            .as_str()
            .unwrap_or("Qwen2ForCausalLM")
            .trim_end_matches("ForCausalLM")
            .to_string();
        config["architectures"] =
            serde_json::json!([format!("{arch}{}", self.head.class_suffix())]);
        config["tie_word_embeddings"] = self.tied.into();
        config["num_labels"] = self.num_labels.into();
        let labels: serde_json::Map<_, _> = (0..self.num_labels)
            .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
            .collect();
        let ids: serde_json::Map<_, _> = (0..self.num_labels)
            .map(|i| (format!("LABEL_{i}"), i.into()))
            .collect();
        config["id2label"] = labels.into();
        config["label2id"] = ids.into();
        if dtype == SaveDtype::Bf16 {
            config["torch_dtype"] = "bfloat16".into();
        }
        let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
        crate::atomic_write(&dir.join("config.json"), text.as_bytes())
    }
}

/// Flat (row · t + column) index of each row's last non-pad token.
pub fn last_tokens(batch: &TokenBatch) -> Result<Vec<usize>, ModelError> {
    let t = batch.t;
    (0..batch.b)
        .map(|row| {
            (0..t)
                .rev()
                .find(|&j| !batch.padding[row * t + j])
                .map(|j| row * t + j)
                .ok_or_else(|| ModelError::Input(format!("row {row} is all padding")))
        })
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn host<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    x.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
}

/// What a classification config says beyond the decoder's fields.
struct Meta {
    architecture: Option<String>,
    num_labels: usize,
}

/// `architectures[0]`, and `num_labels`: the field, else the size of `id2label`, else 2
/// (transformers' default, which it leaves out of the files it writes).
fn read_meta(dir: &Path) -> Result<Meta, ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: Some(path.clone()),
        field: "num_labels".into(),
        message: e.to_string(),
    })?;
    let num_labels = v
        .get("num_labels")
        .and_then(serde_json::Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| {
            v.get("id2label")
                .and_then(|m| m.as_object())
                .map(|m| m.len())
        })
        .unwrap_or(2)
        .max(1);
    let architecture = v["architectures"][0].as_str().map(str::to_string);
    Ok(Meta {
        architecture,
        num_labels,
    })
}
