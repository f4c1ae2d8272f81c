//! Reward configuration (the `rewards.toml` file) and the weighted sum it builds.
//!
//! The file mirrors the types field for field; every choice is an enum, unknown keys are
//! errors, and values are validated at load:
//!
//! ```toml
//! not_applicable = "skip"      # or "zero"
//!
//! [[reward]]
//! kind = "accuracy"
//! weight = 1.0
//! fallback = "none"            # or "last_number"
//! percent = "either"           # or "strip", "fraction"
//!
//! [[reward]]
//! kind = "think_format"
//! weight = 0.5
//!
//! [[reward]]
//! kind = "language_consistency"
//! weight = 0.1
//! target = "latin"             # or "cjk", "cyrillic", "greek", "arabic"
//! ```

use crate::accuracy::Accuracy;
use crate::error::Error;
use crate::language::{LanguageConsistency, Span};
use crate::think_format::{AnswerCheck, OpenTag, ThinkFormat};
use crate::{Reward, Sample};
use reasonlab_answer::{
    AnswerFormat, ExtractConfig, Fallback, MultipleBoxed, PercentPolicy, ThinkPolicy, VerifyConfig,
};
use reasonlab_text::Script;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a reward that does not apply enters the weighted sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotApplicable {
    /// Left out of the sum (its weight is not counted).
    #[default]
    Skip,
    /// Counted as a score of 0.
    Zero,
}

/// One `[[reward]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardSpec {
    Accuracy {
        weight: f64,
        /// Output key; defaults to the kind.
        #[serde(default)]
        name: Option<String>,
        /// Which extraction rule finds the answer (`auto`: all, in priority order).
        #[serde(default)]
        answer_format: AnswerFormat,
        #[serde(default)]
        fallback: Fallback,
        #[serde(default)]
        think: ThinkPolicy,
        #[serde(default)]
        multiple_boxed: MultipleBoxed,
        #[serde(default)]
        percent: PercentPolicy,
    },
    ThinkFormat {
        weight: f64,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        open_tag: OpenTag,
        #[serde(default)]
        answer: AnswerCheck,
    },
    LanguageConsistency {
        weight: f64,
        #[serde(default)]
        name: Option<String>,
        target: Script,
        #[serde(default)]
        span: Span,
    },
}

impl RewardSpec {
    fn weight(&self) -> f64 {
        match self {
            RewardSpec::Accuracy { weight, .. }
            | RewardSpec::ThinkFormat { weight, .. }
            | RewardSpec::LanguageConsistency { weight, .. } => *weight,
        }
    }

    fn name(&self) -> String {
        let (name, kind) = match self {
            RewardSpec::Accuracy { name, .. } => (name, "accuracy"),
            RewardSpec::ThinkFormat { name, .. } => (name, "think_format"),
            RewardSpec::LanguageConsistency { name, .. } => (name, "language_consistency"),
        };
        name.clone().unwrap_or_else(|| kind.to_string())
    }

    fn build(&self) -> Box<dyn Reward> {
        match *self {
            RewardSpec::Accuracy {
                answer_format,
                fallback,
                think,
                multiple_boxed,
                percent,
                ..
            } => Box::new(Accuracy {
                config: VerifyConfig {
                    extract: ExtractConfig {
                        format: answer_format,
                        fallback,
                        think,
                        multiple_boxed,
                    },
                    percent,
                },
            }),
            RewardSpec::ThinkFormat {
                open_tag, answer, ..
            } => Box::new(ThinkFormat { open_tag, answer }),
            RewardSpec::LanguageConsistency { target, span, .. } => {
                Box::new(LanguageConsistency { target, span })
            }
        }
    }
}

/// The whole `rewards.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    #[serde(default)]
    pub not_applicable: NotApplicable,
    pub reward: Vec<RewardSpec>,
}

impl RewardConfig {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<RewardConfig, Error> {
        let cfg: RewardConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<RewardConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RewardConfig::from_toml(&text)
    }

    /// Checks weights and names.
    pub fn validate(&self) -> Result<(), Error> {
        if self.reward.is_empty() {
            return Err(Error::Invalid("no [[reward]] tables".into()));
        }
        let mut names: Vec<String> = Vec::new();
        for spec in &self.reward {
            let (w, name) = (spec.weight(), spec.name());
            if !w.is_finite() {
                return Err(Error::Invalid(format!(
                    "reward `{name}`: weight {w} is not finite"
                )));
            }
            if names.contains(&name) {
                return Err(Error::Invalid(format!(
                    "two rewards named `{name}`; give one a `name = \"…\"`"
                )));
            }
            names.push(name);
        }
        Ok(())
    }

    /// Builds the weighted sum.
    /// The rewards' names, in configuration order (the keys of their scores).
    pub fn names(&self) -> Vec<String> {
        self.reward.iter().map(|s| s.name()).collect()
    }

    pub fn build(&self) -> WeightedSum {
        WeightedSum {
            parts: self
                .reward
                .iter()
                .map(|s| (s.name(), s.weight(), s.build()))
                .collect(),
            not_applicable: self.not_applicable,
        }
    }
}

/// A weighted sum of rewards.
pub struct WeightedSum {
    parts: Vec<(String, f64, Box<dyn Reward>)>,
    not_applicable: NotApplicable,
}

/// Per-reward scores and their weighted total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// `(name, score)` in configuration order; `None` = not applicable.
    pub scores: Vec<(String, Option<f64>)>,
    pub total: f64,
}

impl WeightedSum {
    /// A weighted sum of any rewards, including ones defined outside this crate (library
    /// users' own reward functions): `(name, weight, reward)` in output order.
    pub fn from_parts(
        parts: Vec<(String, f64, Box<dyn Reward>)>,
        not_applicable: NotApplicable,
    ) -> Self {
        Self {
            parts,
            not_applicable,
        }
    }

    /// The position of the first reward of `kind` (its index in [`Scored::scores`]).
    pub fn position(&self, kind: crate::RewardKind) -> Option<usize> {
        self.parts.iter().position(|(_, _, r)| r.kind() == kind)
    }

    /// The rewards' names, in output order.
    pub fn names(&self) -> Vec<String> {
        self.parts.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Scores one sample with every reward.
    pub fn score_all(&self, sample: &Sample<'_>) -> Scored {
        let mut total = 0.0;
        let mut scores = Vec::with_capacity(self.parts.len());
        for (name, weight, reward) in &self.parts {
            let s = reward.score(sample);
            if let (Some(v), _) = (s, self.not_applicable) {
                total += weight * v
            }
            scores.push((name.clone(), s));
        }
        Scored { scores, total }
    }

    /// [`WeightedSum::score_all`] of several samples, each reward scoring them as one batch.
    pub fn score_batch_all(&self, samples: &[Sample<'_>]) -> Vec<Scored> {
        let mut out: Vec<Scored> = samples
            .iter()
            .map(|_| Scored {
                scores: Vec::with_capacity(self.parts.len()),
                total: 0.0,
            })
            .collect();
        for (name, weight, reward) in &self.parts {
            for (o, s) in out.iter_mut().zip(reward.score_batch(samples)) {
                if let Some(v) = s {
                    o.total += weight * v;
                }
                o.scores.push((name.clone(), s));
            }
        }
        out
    }

    /// Add a reward after the configured ones (a reward model, say).
    pub fn push(&mut self, name: String, weight: f64, reward: Box<dyn Reward>) {
        self.parts.push((name, weight, reward));
    }
}

impl Reward for WeightedSum {
    fn name(&self) -> &str {
        "total"
    }

    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        Some(self.score_all(sample).total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
not_applicable = "skip"
[[reward]]
kind = "accuracy"
weight = 1.0
fallback = "none"
[[reward]]
kind = "think_format"
weight = 0.5
[[reward]]
kind = "language_consistency"
weight = 0.25
target = "latin"
"#;

    #[test]
    fn parses_and_sums() {
        let cfg = RewardConfig::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        let sum = cfg.build();
        let s = sum.score_all(&Sample {
            completion: "<think>we add the numbers</think> \\boxed{4}",
            gold: Some("4"),
            problem: None,
            prompt: None,
            extra: None,
        });
        assert_eq!(s.scores.len(), 3);
        assert!((s.total - 1.75).abs() < 1e-12, "{s:?}");
        let wrong = sum.score_all(&Sample {
            completion: "\\boxed{5}",
            gold: Some("4"),
            problem: None,
            prompt: None,
            extra: None,
        });
        // Accuracy 0, format 0, no words in the reasoning: language is not applicable.
        assert_eq!(wrong.scores[2].1, None);
        assert_eq!(wrong.total, 0.0);
    }

    #[test]
    fn rejects_unknown_keys_kinds_and_bad_values() {
        let bad = [
            "[[reward]]\nkind = \"accuracy\"\nweight = 1.0\nfallbak = \"none\"",
            "[[reward]]\nkind = \"length\"\nweight = 1.0",
            "[[reward]]\nkind = \"accuracy\"\nweight = 1.0\npercent = \"sometimes\"",
            "[[reward]]\nkind = \"language_consistency\"\nweight = 1.0",
            "[[reward]]\nkind = \"accuracy\"\nweight = nan",
            "[[reward]]\nkind = \"accuracy\"\nweight = 1.0\n[[reward]]\nkind = \"accuracy\"\nweight = 2.0",
            "not_applicable = \"skip\"\nreward = []",
        ];
        for b in bad {
            assert!(RewardConfig::from_toml(b).is_err(), "accepted: {b}");
        }
    }
}
