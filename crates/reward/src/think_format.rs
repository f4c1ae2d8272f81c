//! The format reward: the completion holds exactly one `<think>…</think>` block with some
//! reasoning in it, followed by an answer (DeepSeek-R1 §2.2.2 "Format rewards": "enforces the
//! model to put its thinking process between '<think>' and '</think>' tags").

use crate::{Reward, Sample};
use serde::{Deserialize, Serialize};

/// Where the opening tag lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenTag {
    /// The completion starts with `<think>` (after optional whitespace).
    #[default]
    InCompletion,
    /// The chat template already ends the prompt with `<think>` (DeepSeek-R1-Distill, QwQ
    /// templates), so the completion must not contain one.
    InPrompt,
}

/// What counts as "an answer" after `</think>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerCheck {
    /// Any non-whitespace text.
    #[default]
    NonEmpty,
    /// A `\boxed{…}` answer.
    Boxed,
    /// One `<answer>…</answer>` block with something in it (R1-Zero's template): the format
    /// reward then checks both tags.
    AnswerTag,
}

/// 1 for a well-formed completion, 0 otherwise. Always applicable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThinkFormat {
    pub open_tag: OpenTag,
    pub answer: AnswerCheck,
}

impl ThinkFormat {
    /// True when `completion` is well formed.
    pub fn is_well_formed(&self, completion: &str) -> bool {
        let opens = completion.matches("<think>").count();
        let closes = completion.matches("</think>").count();
        let body = match self.open_tag {
            OpenTag::InCompletion => {
                if opens != 1 || closes != 1 {
                    return false;
                }
                match completion.trim_start().strip_prefix("<think>") {
                    Some(rest) => rest,
                    None => return false,
                }
            }
            OpenTag::InPrompt => {
                if opens != 0 || closes != 1 {
                    return false;
                }
                completion
            }
        };
        let Some((reasoning, answer)) = body.split_once("</think>") else {
            return false;
        };
        if reasoning.trim().is_empty() || answer.trim().is_empty() {
            return false;
        }
        match self.answer {
            AnswerCheck::NonEmpty => true,
            AnswerCheck::Boxed => !reasonlab_answer::extract::boxed_contents(answer).is_empty(),
            AnswerCheck::AnswerTag => {
                let body = answer.trim();
                body.matches("<answer>").count() == 1
                    && body.matches("</answer>").count() == 1
                    && body
                        .strip_prefix("<answer>")
                        .and_then(|b| b.strip_suffix("</answer>"))
                        .is_some_and(|inner| !inner.trim().is_empty())
            }
        }
    }
}

impl Reward for ThinkFormat {
    fn kind(&self) -> crate::RewardKind {
        crate::RewardKind::ThinkFormat
    }

    fn name(&self) -> &str {
        "think_format"
    }

    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        Some(if self.is_well_formed(sample.completion) {
            1.0
        } else {
            0.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_block_followed_by_an_answer() {
        let f = ThinkFormat::default();
        assert!(f.is_well_formed("<think>reason</think>The answer is 4."));
        assert!(f.is_well_formed("\n<think>\nreason\n</think>\n\\boxed{4}"));
        assert!(!f.is_well_formed("<think>reason</think>"), "no answer");
        assert!(!f.is_well_formed("<think></think>4"), "no reasoning");
        assert!(
            !f.is_well_formed("<think>a</think><think>b</think>4"),
            "two blocks"
        );
        assert!(
            !f.is_well_formed("4 <think>a</think> 4"),
            "text before the block"
        );
        assert!(!f.is_well_formed("<think>a"), "unclosed");
        assert!(!f.is_well_formed("plain answer 4"));
    }

    #[test]
    fn prompt_opened_and_boxed_variants() {
        let f = ThinkFormat {
            open_tag: OpenTag::InPrompt,
            answer: AnswerCheck::Boxed,
        };
        assert!(f.is_well_formed("reason</think> so \\boxed{4}"));
        assert!(!f.is_well_formed("reason</think> so 4"));
        assert!(!f.is_well_formed("<think>reason</think> \\boxed{4}"));
    }

    #[test]
    fn answer_tag_variant_checks_both_tags() {
        let f = ThinkFormat {
            open_tag: OpenTag::InCompletion,
            answer: AnswerCheck::AnswerTag,
        };
        assert!(f.is_well_formed("<think> 3 + 4 = 7 </think> <answer> 7 </answer>"));
        assert!(f.is_well_formed("<think>3 + 4 = 7</think><answer>7</answer>\n"));
        assert!(
            !f.is_well_formed("<think>3 + 4 = 7</think> 7"),
            "no answer tags"
        );
        assert!(
            !f.is_well_formed("<think>x</think> <answer> </answer>"),
            "empty answer"
        );
        assert!(
            !f.is_well_formed("<think>x</think> <answer>7</answer> <answer>8</answer>"),
            "two answers"
        );
        assert!(
            !f.is_well_formed("<think>x</think> <answer>7</answer> and more"),
            "text after the answer"
        );
        assert!(!f.is_well_formed("<think>x</think> <answer>7"), "unclosed");
    }
}
