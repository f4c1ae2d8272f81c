//! Reward models as GRPO rewards: an outcome model as a [`Reward`] (one score per completion,
//! summed with the rule rewards by weight and normalised per group — outcome supervision) and a
//! process model as a [`ProcessReward`] (a score at every step end — process supervision,
//! DeepSeekMath §4.1.3). Both score a whole group in one forward pass of the inference path.
//!
//! The model reads what it was trained on: the prompt the policy saw followed by the
//! completion (plain text with the tokenizer's special tokens and a final EOS for an outcome
//! model; TRL's stepwise layout, the completion split on the separator, for a process model).

use reasonlab_model::{Model, PadSide, RewardModel, TokenBatch};
use reasonlab_reward::{ProcessReward, Reward, RewardKind, Sample, StepScore};
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

use super::data::encode_steps;

/// How an outcome model's logit becomes a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Squash {
    /// The raw score (a Bradley–Terry model's scale; DeepSeekMath normalises it per group).
    #[default]
    None,
    /// `σ(score)` in [0, 1]: a pointwise model's probability of a correct answer, on the
    /// scale of the rule rewards.
    Sigmoid,
}

/// An outcome reward model as a reward.
pub struct OutcomeRewardModel {
    name: String,
    rm: RewardModel,
    tok: Tokenizer,
    squash: Squash,
}

impl OutcomeRewardModel {
    /// `rm` is moved to an inference copy (no autodiff graph while scoring).
    pub fn new(name: String, rm: RewardModel, tok: Tokenizer, squash: Squash) -> Self {
        let model = rm.model().inference_copy();
        Self {
            name,
            rm: rm.with_model(model),
            tok,
            squash,
        }
    }

    fn ids(&self, s: &Sample<'_>) -> Option<Vec<u32>> {
        let text = format!("{}{}", s.prompt.unwrap_or_default(), s.completion);
        let mut ids = self.tok.encode(&text, true).ok()?;
        if let Some(eos) = self.tok.eos_id()
            && ids.last() != Some(&eos)
        {
            ids.push(eos);
        }
        fits(self.rm.model(), ids)
    }
}

/// `ids` when the model's context holds them (else a warning and `None`: not applicable).
fn fits(model: &Model, ids: Vec<u32>) -> Option<Vec<u32>> {
    let max = model.config.max_position_embeddings;
    if ids.is_empty() || ids.len() > max {
        tracing::warn!(
            tokens = ids.len(),
            max,
            "reward model input does not fit; not scored"
        );
        return None;
    }
    Some(ids)
}

impl Reward for OutcomeRewardModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> RewardKind {
        RewardKind::Custom
    }

    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        self.score_batch(std::slice::from_ref(sample))[0]
    }

    fn score_batch(&self, samples: &[Sample<'_>]) -> Vec<Option<f64>> {
        let ids: Vec<Option<Vec<u32>>> = samples.iter().map(|s| self.ids(s)).collect();
        let seqs: Vec<Vec<u32>> = ids.iter().flatten().cloned().collect();
        let mut scores = if seqs.is_empty() {
            Vec::new()
        } else {
            let batch = TokenBatch::pad(&seqs, self.tok.pad_id(), PadSide::Right);
            match self.rm.scores(&batch) {
                Ok(s) => s.into_iter().map(|v| v[0]).collect(),
                Err(e) => {
                    tracing::warn!("reward model failed: {e}");
                    return vec![None; samples.len()];
                }
            }
        }
        .into_iter();
        ids.iter()
            .map(|i| {
                i.as_ref().and_then(|_| scores.next()).map(|x| {
                    let x = f64::from(x);
                    match self.squash {
                        Squash::None => x,
                        Squash::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                    }
                })
            })
            .collect()
    }
}

/// A process reward model as a process reward: P(good) at the end of every step.
pub struct ProcessRewardModel {
    name: String,
    rm: RewardModel,
    tok: Tokenizer,
    separator: String,
}

impl ProcessRewardModel {
    /// `rm` is moved to an inference copy (no autodiff graph while scoring).
    pub fn new(name: String, rm: RewardModel, tok: Tokenizer, separator: String) -> Self {
        let model = rm.model().inference_copy();
        Self {
            name,
            rm: rm.with_model(model),
            tok,
            separator,
        }
    }

    /// The steps of a completion (trimmed, non-empty pieces between separators) with the byte
    /// where each ends (after its separator, when one follows).
    pub fn steps<'a>(&self, completion: &'a str) -> Vec<(&'a str, usize)> {
        split_steps(completion, &self.separator)
    }
}

/// The trimmed, non-empty pieces of `text` between `sep`s, each with the byte where it ends
/// (after its separator, when one follows).
pub fn split_steps<'a>(text: &'a str, sep: &str) -> Vec<(&'a str, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in text.split(sep) {
        let end = (start + piece.len() + sep.len()).min(text.len());
        if !piece.trim().is_empty() {
            out.push((piece.trim(), end));
        }
        start += piece.len() + sep.len();
    }
    out
}

impl ProcessReward for ProcessRewardModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn score_steps(&self, sample: &Sample<'_>) -> Vec<StepScore> {
        self.score_steps_batch(std::slice::from_ref(sample))
            .pop()
            .unwrap_or_default()
    }

    fn score_steps_batch(&self, samples: &[Sample<'_>]) -> Vec<Vec<StepScore>> {
        let mut rows = Vec::new(); // (sample index, ids, token ends, byte ends)
        for (i, s) in samples.iter().enumerate() {
            let steps = self.steps(s.completion);
            if steps.is_empty() {
                continue;
            }
            let texts: Vec<String> = steps.iter().map(|(t, _)| t.to_string()).collect();
            let Ok((ids, ends)) = encode_steps(
                &self.tok,
                s.prompt.unwrap_or_default(),
                &texts,
                &self.separator,
            ) else {
                continue;
            };
            if let Some(ids) = fits(self.rm.model(), ids) {
                rows.push((i, ids, ends, steps.iter().map(|s| s.1).collect::<Vec<_>>()));
            }
        }
        let mut out = vec![Vec::new(); samples.len()];
        if rows.is_empty() {
            return out;
        }
        let seqs: Vec<Vec<u32>> = rows.iter().map(|r| r.1.clone()).collect();
        let ends: Vec<Vec<usize>> = rows.iter().map(|r| r.2.clone()).collect();
        let batch = TokenBatch::pad(&seqs, self.tok.pad_id(), PadSide::Right);
        match self.rm.step_probs(&batch, &ends) {
            Ok(probs) => {
                for ((i, _, _, bytes), p) in rows.iter().zip(probs) {
                    out[*i] = bytes
                        .iter()
                        .zip(p)
                        .map(|(&end, score)| StepScore {
                            end,
                            score: f64::from(score),
                        })
                        .collect();
                }
            }
            Err(e) => tracing::warn!("process reward model failed: {e}"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_end_after_their_separator() {
        let s = split_steps("a = 1\n\nb = 2\nThe answer is 2.", "\n");
        assert_eq!(
            s,
            vec![("a = 1", 6), ("b = 2", 13), ("The answer is 2.", 29)]
        );
        assert_eq!(split_steps("", "\n"), vec![]);
    }
}
