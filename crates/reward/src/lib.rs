//! Rule-based rewards for GRPO and evaluation, as in DeepSeek-R1 §2.2.2 and §2.3.3: answer
//! accuracy, a `<think>…</think>` format reward, and a language-consistency reward, combined as
//! a weighted sum configured in TOML.
//!
//! Every reward is a pure function of its input ([`Sample`]): `Send + Sync`, deterministic,
//! bounded in time and memory, with no signals, subprocesses or global state, so it can run on
//! any thread of a rollout worker. The JSONL entry points behind `reasonlab verify` and
//! `reasonlab reward` live in [`stream`]; the verifier benchmark in [`bench`].

#![forbid(unsafe_code)]

pub mod accuracy;
pub mod bench;
pub mod config;
pub mod error;
pub mod language;
pub mod stream;
pub mod think_format;

pub use accuracy::Accuracy;
pub use bench::{BenchReport, bench_verify};
pub use config::{NotApplicable, RewardConfig, RewardSpec, WeightedSum};
pub use error::Error;
pub use language::{LanguageConsistency, Span};
pub use stream::{RewardStats, VerifyStats, reward_stream, verify_stream, verify_stream_with};
pub use think_format::{AnswerCheck, OpenTag, ThinkFormat};

/// What a reward sees of one rollout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample<'a> {
    /// The model's completion (without the prompt).
    pub completion: &'a str,
    /// The reference answer, when the task has one.
    pub gold: Option<&'a str>,
    /// The problem text (used for multiple-choice options).
    pub problem: Option<&'a str>,
    /// The text the model was prompted with, when known (a reward model scores prompt +
    /// completion, as it was trained).
    pub prompt: Option<&'a str>,
    /// The dataset row's other columns, for rewards that need them (as TRL passes extra
    /// columns to reward functions); `None` when the caller has none.
    pub extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// One reasoning step's reward: the step ends at byte `end` of the completion (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepScore {
    pub end: usize,
    pub score: f64,
}

/// A process reward (DeepSeekMath §4.1.3, Math-Shepherd): a score at the end of every reasoning
/// step of a completion, instead of one at its end. A process reward model implements it; the
/// GRPO trainer turns the step scores into per-token advantages.
pub trait ProcessReward: Send + Sync {
    fn name(&self) -> &str;
    /// The steps of `sample.completion` with their scores, in order of their ends.
    fn score_steps(&self, sample: &Sample<'_>) -> Vec<StepScore>;
    /// [`ProcessReward::score_steps`] of several samples at once (a model scores them in one
    /// batch); one entry per sample, in order.
    fn score_steps_batch(&self, samples: &[Sample<'_>]) -> Vec<Vec<StepScore>> {
        samples.iter().map(|s| self.score_steps(s)).collect()
    }
}

/// What a reward measures, so that callers find a reward by its kind rather than its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// The final answer matches the reference (the accuracy metric of a GRPO run).
    Accuracy,
    ThinkFormat,
    LanguageConsistency,
    /// A reward defined outside this crate.
    Custom,
}

/// A reward: a score, or `None` when it does not apply to this sample (for example accuracy
/// without a gold answer, or language share of a completion with no words).
pub trait Reward: Send + Sync {
    /// A short stable name, used as the key in reward output.
    fn name(&self) -> &str;
    /// What it measures; rewards defined outside this crate are [`RewardKind::Custom`].
    fn kind(&self) -> RewardKind {
        RewardKind::Custom
    }
    /// The score, usually in `[0, 1]`.
    fn score(&self, sample: &Sample<'_>) -> Option<f64>;
    /// [`Reward::score`] of several samples at once (a reward model scores them in one batch);
    /// one entry per sample, in order.
    fn score_batch(&self, samples: &[Sample<'_>]) -> Vec<Option<f64>> {
        samples.iter().map(|s| self.score(s)).collect()
    }
}
