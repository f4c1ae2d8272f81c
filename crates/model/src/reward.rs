//! Outcome reward models in transformers' layout: a decoder plus a linear `score` head read at
//! each sequence's last non-pad token (`Qwen2ForSequenceClassification`,
//! `LlamaForSequenceClassification`, … with `num_labels` outputs; `score.weight` is
//! (num_labels, hidden) without bias). The backbone is the causal LM's, so every architecture
//! [`Model`] loads works here; the checkpoint has no `lm_head`.

use std::path::Path;

use crate::{Checkpoint, Model, ModelConfig, ModelError, TokenBatch};

/// A reward model: the backbone and its score head.
pub struct RewardModel {
    model: Model,
    /// (num_labels, hidden), row-major as in the checkpoint.
    score: Vec<f32>,
    num_labels: usize,
}

impl RewardModel {
    /// Load `DIR/config.json` and the safetensors weights (`model.*` and `score.weight`).
    pub fn load(dir: &Path, device: &crate::tensor::Device) -> Result<Self, ModelError> {
        let config = ModelConfig::from_dir(dir)?;
        let num_labels = num_labels(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        let hidden = config.hidden_size;
        let score = ckpt.tensor_f32("score.weight", &[num_labels, hidden])?;
        // No language-model head: load the backbone as if the head were tied to it.
        let backbone = ModelConfig {
            tie_word_embeddings: true,
            ..config
        };
        let model = Model::from_checkpoint(backbone, &ckpt, device)?;
        Ok(Self {
            model,
            score,
            num_labels,
        })
    }

    /// The backbone (for its config and device).
    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// The scores of every row of `batch`, read at its last non-pad token: (b, num_labels).
    pub fn scores(&self, batch: &TokenBatch) -> Result<Vec<Vec<f32>>, ModelError> {
        let (b, t) = (batch.b, batch.t);
        let h = self.model.hidden(batch, None)?; // (b, t, hidden)
        let hidden = self.model.config.hidden_size;
        let values: Vec<f32> = h
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        (0..b)
            .map(|row| {
                let last = (0..t)
                    .rev()
                    .find(|&j| !batch.padding[row * t + j])
                    .ok_or_else(|| ModelError::Backend(format!("row {row} is all padding")))?;
                let x = &values[(row * t + last) * hidden..][..hidden];
                Ok((0..self.num_labels)
                    .map(|l| {
                        let w = &self.score[l * hidden..][..hidden];
                        x.iter().zip(w).map(|(a, b)| a * b).sum()
                    })
                    .collect())
            })
            .collect()
    }
}

/// `num_labels` of a classification config: the field, else the size of `id2label`, else 1.
fn num_labels(dir: &Path) -> Result<usize, ModelError> {
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
    Ok(v.get("num_labels")
        .and_then(serde_json::Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| {
            v.get("id2label")
                .and_then(|m| m.as_object())
                .map(|m| m.len())
        })
        .unwrap_or(1)
        .max(1))
}
