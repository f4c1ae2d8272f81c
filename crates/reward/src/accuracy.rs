//! The accuracy reward: 1 when the completion's final answer is equivalent to the gold answer,
//! 0 otherwise (DeepSeek-R1 §2.2.2 "Accuracy rewards"); not applicable without a gold answer.

use crate::{Reward, Sample};
use reasonlab_answer::{VerifyConfig, verify};

/// Answer accuracy through [`reasonlab_answer::verify`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accuracy {
    pub config: VerifyConfig,
}

impl Reward for Accuracy {
    fn kind(&self) -> crate::RewardKind {
        crate::RewardKind::Accuracy
    }

    fn name(&self) -> &str {
        "accuracy"
    }

    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        let gold = sample.gold?;
        let v = verify(gold, sample.completion, sample.problem, &self.config);
        Some(if v.correct { 1.0 } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_not_applicable() {
        let acc = Accuracy::default();
        let s = |c: &'static str, g: Option<&'static str>| Sample {
            completion: c,
            gold: g,
            problem: None,
            prompt: None,
            extra: None,
        };
        assert_eq!(
            acc.score(&s("<think>x</think> \\boxed{4}", Some("4"))),
            Some(1.0)
        );
        assert_eq!(
            acc.score(&s("<think>x</think> \\boxed{5}", Some("4"))),
            Some(0.0)
        );
        assert_eq!(acc.score(&s("\\boxed{4}", None)), None);
    }
}
