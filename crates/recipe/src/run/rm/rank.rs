//! Best-of-N with a reward model: an outcome model's score, or a process model's step scores
//! aggregated into one (Math-Shepherd reports the minimum; the product and the last step are
//! the other common choices), ranks each problem's samples for `bon@k` in eval.

use std::path::PathBuf;

use reasonlab_core::engine::Prompt;
use reasonlab_eval::Ranker;
use reasonlab_model::{BackendKind, device_for};
use reasonlab_reward::{ProcessReward, Reward, Sample};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::rm::rewards::{OutcomeRewardModel, ProcessRewardModel, Squash};
use serde::{Deserialize, Serialize};

use super::HeadSpec;
use crate::run::RunError;

/// How a process model's step scores become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The weakest step (Math-Shepherd).
    #[default]
    Min,
    /// The product of the step probabilities.
    Product,
    /// The last step's score.
    Last,
}

impl Aggregate {
    fn of(self, steps: &[f64]) -> f64 {
        match (self, steps.last()) {
            (_, None) => f64::NEG_INFINITY,
            (Aggregate::Min, _) => steps.iter().copied().fold(f64::INFINITY, f64::min),
            (Aggregate::Product, _) => steps.iter().product(),
            (Aggregate::Last, Some(&l)) => l,
        }
    }
}

/// A best-of-N reward model (`[rerank]` of an eval run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankSpec {
    /// A reward checkpoint, or a causal LM with `head`.
    pub model: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
    /// Process models: how step scores combine.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Process models: between steps.
    #[serde(default = "newline")]
    pub separator: String,
    /// Tensor backend: `flex` (CPU), `wgpu`, `vulkan` or `cuda`.
    #[serde(default)]
    pub backend: BackendKind,
}

fn newline() -> String {
    "\n".into()
}

enum Scorer {
    Outcome(OutcomeRewardModel),
    Process(ProcessRewardModel, Aggregate),
}

/// A reward model ranking samples.
pub struct RmRanker {
    scorer: Scorer,
    tok: Tokenizer,
}

impl RmRanker {
    pub fn load(spec: &RerankSpec) -> Result<Self, RunError> {
        let device = device_for(spec.backend, false)?;
        let rm = super::load(&spec.model, spec.head.as_ref(), 0, &device)?;
        let tok = Tokenizer::from_dir(&spec.model)?;
        let scorer = if rm.head().is_process() {
            Scorer::Process(
                ProcessRewardModel::new("prm".into(), rm, tok.clone(), spec.separator.clone()),
                spec.aggregate,
            )
        } else {
            Scorer::Outcome(OutcomeRewardModel::new(
                "orm".into(),
                rm,
                tok.clone(),
                Squash::None,
            ))
        };
        Ok(Self { scorer, tok })
    }
}

impl Ranker for RmRanker {
    fn rank(&self, prompt: &Prompt, completions: &[&str]) -> Result<Vec<f64>, String> {
        let text = match prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Messages(m) => self.tok.render_chat(m, true).map_err(|e| e.to_string())?,
        };
        let samples: Vec<Sample<'_>> = completions
            .iter()
            .map(|c| Sample {
                completion: c,
                gold: None,
                problem: None,
                prompt: Some(&text),
                extra: None,
            })
            .collect();
        Ok(match &self.scorer {
            Scorer::Outcome(m) => m
                .score_batch(&samples)
                .into_iter()
                .map(|s| s.unwrap_or(f64::NEG_INFINITY))
                .collect(),
            Scorer::Process(m, agg) => m
                .score_steps_batch(&samples)
                .iter()
                .map(|steps| agg.of(&steps.iter().map(|s| s.score).collect::<Vec<_>>()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_combine_step_scores() {
        let s = [0.9, 0.2, 0.8];
        assert_eq!(Aggregate::Min.of(&s), 0.2);
        assert!((Aggregate::Product.of(&s) - 0.144).abs() < 1e-12);
        assert_eq!(Aggregate::Last.of(&s), 0.8);
        assert_eq!(Aggregate::Min.of(&[]), f64::NEG_INFINITY);
    }
}
