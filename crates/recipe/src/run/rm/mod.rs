//! Reward models: `reasonlab rm train` ([`train`]), `rm score` ([`score`]), `rm label`
//! ([`label`]), best-of-N in eval ([`rank`]), and how a reward model is named in a config
//! ([`HeadSpec`], [`load`]).

pub mod label;
pub mod rank;
pub mod score;
pub mod train;

use std::path::Path;

use reasonlab_model::tensor::Device;
use reasonlab_model::{Model, RewardHead, RewardModel};
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

pub use label::{Estimate, LabelConfig, LabelSummary};
pub use rank::{Aggregate, RerankSpec, RmRanker};
pub use score::{RmScoreConfig, RmScoreSummary, score_file};
pub use train::{RmConfig, RmFile, RmSummary};

use super::RunError;

/// A reward head as a config names it: `"sequence"`, `"token"`, or
/// `{ good_token = { good = "+", bad = "-" } }` (the Math-Shepherd reading of a causal LM, by
/// token text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HeadSpec {
    Sequence,
    Token,
    GoodToken { good: String, bad: String },
}

impl HeadSpec {
    /// The head, with token texts resolved to ids.
    pub fn resolve(&self, tok: &Tokenizer) -> Result<RewardHead, RunError> {
        Ok(match self {
            HeadSpec::Sequence => RewardHead::Sequence,
            HeadSpec::Token => RewardHead::Token,
            HeadSpec::GoodToken { good, bad } => RewardHead::GoodToken {
                good: token_id(tok, good)?,
                bad: token_id(tok, bad)?,
            },
        })
    }
}

/// The id of a token given by its text: a vocabulary entry, else text that encodes to one id.
fn token_id(tok: &Tokenizer, text: &str) -> Result<u32, RunError> {
    if let Some(id) = tok.token_id(text) {
        return Ok(id);
    }
    match tok.encode(text, false)?.as_slice() {
        [id] => Ok(*id),
        ids => Err(RunError::Invalid(format!(
            "{text:?} is {} tokens; a good or bad token must be one",
            ids.len()
        ))),
    }
}

/// Whether `dir` holds a classification checkpoint (`*ForSequenceClassification` or
/// `*ForTokenClassification`) rather than a causal LM.
pub fn is_reward_checkpoint(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["architectures"][0].as_str().map(str::to_string))
        .is_some_and(|a| {
            a.ends_with("ForSequenceClassification") || a.ends_with("ForTokenClassification")
        })
}

/// The reward model in `dir`: a classification checkpoint as it is (`head`, when given, must
/// agree), or a causal LM read with `head` — a fresh outcome or token head drawn from `seed`,
/// or the Math-Shepherd good-token reading.
pub fn load(
    dir: &Path,
    head: Option<&HeadSpec>,
    seed: u64,
    device: &Device,
) -> Result<RewardModel, RunError> {
    if is_reward_checkpoint(dir) {
        let rm = RewardModel::load(dir, device)?;
        if let Some(h) = head {
            let want = h.resolve(&Tokenizer::from_dir(dir)?)?;
            if want != rm.head() {
                return Err(RunError::Invalid(format!(
                    "{} is a {:?} reward model, not {want:?}",
                    dir.display(),
                    rm.head()
                )));
            }
        }
        return Ok(rm);
    }
    let Some(head) = head else {
        return Err(RunError::Invalid(format!(
            "{} is a causal LM: name the reward head to read or add (sequence, token or \
             good_token)",
            dir.display()
        )));
    };
    let head = head.resolve(&Tokenizer::from_dir(dir)?)?;
    Ok(RewardModel::from_lm(Model::load(dir, device)?, head, seed)?)
}
