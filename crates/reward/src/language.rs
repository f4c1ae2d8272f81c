//! The language-consistency reward: the share of the reasoning written in the target script
//! (DeepSeek-R1 §2.3.3: "calculated as the proportion of target language words in the CoT").
//! Script detection and word counting live in `reasonlab_text::script`; math is not counted.

use crate::{Reward, Sample};
use reasonlab_text::{Script, script_counts};
use serde::{Deserialize, Serialize};

/// Which part of the completion is measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    /// The text inside `<think>…</think>` (up to `</think>` when the prompt opened the block);
    /// the whole completion when it has no think tags.
    #[default]
    Reasoning,
    /// The whole completion.
    Completion,
}

/// Share of words in `target`; not applicable when the measured text has no words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanguageConsistency {
    pub target: Script,
    pub span: Span,
}

impl LanguageConsistency {
    /// The text the reward measures.
    pub fn measured<'a>(&self, completion: &'a str) -> &'a str {
        match self.span {
            Span::Completion => completion,
            Span::Reasoning => {
                let start = completion
                    .find("<think>")
                    .map_or(0, |p| p + "<think>".len());
                let end = completion[start..]
                    .find("</think>")
                    .map_or(completion.len(), |p| start + p);
                &completion[start..end]
            }
        }
    }
}

impl Reward for LanguageConsistency {
    fn kind(&self) -> crate::RewardKind {
        crate::RewardKind::LanguageConsistency
    }

    fn name(&self) -> &str {
        "language_consistency"
    }

    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        script_counts(self.measured(sample.completion)).share(self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(target: Script, completion: &str) -> Option<f64> {
        LanguageConsistency {
            target,
            span: Span::Reasoning,
        }
        .score(&Sample {
            completion,
            gold: None,
            problem: None,
            prompt: None,
            extra: None,
        })
    }

    #[test]
    fn mixed_reasoning_scores_the_share() {
        // 4 CJK characters and 4 English words inside the block; the answer is outside.
        let c = "<think>首先计算 then we add them</think> The answer is 5 words words";
        let zh = score(Script::Cjk, c).unwrap_or(-1.0);
        let en = score(Script::Latin, c).unwrap_or(-1.0);
        assert!((zh - 0.5).abs() < 1e-12, "{zh}");
        assert!((en - 0.5).abs() < 1e-12, "{en}");
    }

    #[test]
    fn pure_language_and_math_only() {
        assert_eq!(
            score(Script::Cjk, "<think>所以答案是五</think>5"),
            Some(1.0)
        );
        assert_eq!(
            score(Script::Latin, "<think>所以答案是五</think>5"),
            Some(0.0)
        );
        assert_eq!(score(Script::Latin, "<think>$1+1=2$</think>2"), None);
    }
}
