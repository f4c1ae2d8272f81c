//! Reward-model records → [`RmExample`]s, in TRL's dataset formats:
//!
//! - preference (pairwise): `{"chosen", "rejected"}` with an optional `"prompt"` and `"margin"`;
//!   texts are joined as `prompt + chosen` and end in EOS (added when missing), message lists
//!   (`prompt` + `chosen` turns) go through the chat template — as TRL's `RewardTrainer` does;
//! - unpaired (pointwise): `{"prompt", "completion", "label"}`, `label` a bool or a number in
//!   [0, 1], encoded like one side of a pair;
//! - stepwise supervision (process): `{"prompt", "completions": [step, …], "labels": [bool or
//!   number, …]}`; encoded as TRL's `PRMTrainer` does: prompt tokens, then each step's tokens
//!   followed by the separator's, the step's label on its last token (the separator's), no
//!   special tokens (TRL also puts a BOS first for tokenizers that have one, such as Llama's).

use reasonlab_tokenize::{Message, Tokenizer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Objective, RmExample};

/// How records are tokenised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmEncodeSettings {
    /// Longest sequence kept: outcome examples (either side of a pair) over it are left out
    /// (TRL's filter); step lists are cut to it, losing the steps that end beyond it.
    pub max_length: usize,
    /// Text placed after every step (process).
    pub step_separator: String,
    /// Train on the last step's label only (process; held-out metrics keep every step).
    pub train_on_last_step_only: bool,
}

impl Default for RmEncodeSettings {
    fn default() -> Self {
        Self {
            max_length: 1024,
            step_separator: "\n".into(),
            train_on_last_step_only: false,
        }
    }
}

/// A text or a list of messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Messages(Vec<Message>),
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    v.get(name).ok_or_else(|| format!("missing `{name}`"))
}

fn content(v: &Value, name: &str) -> Result<Content, String> {
    serde_json::from_value(field(v, name)?.clone())
        .map_err(|_| format!("`{name}` must be a string or a list of messages"))
}

/// A label: a bool, or a number in [0, 1].
fn label(v: &Value, what: &str) -> Result<f32, String> {
    match v {
        Value::Bool(b) => Ok(f32::from(u8::from(*b))),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(x as f32),
            _ => Err(format!("{what} must be in [0, 1], got {n}")),
        },
        other => Err(format!("{what} must be a bool or a number, got {other}")),
    }
}

/// `prompt + side`, tokenised: texts with the tokenizer's special tokens and a final EOS,
/// messages through the chat template.
fn encode_side(
    tok: &Tokenizer,
    prompt: Option<&Content>,
    side: &Content,
) -> Result<Vec<u32>, String> {
    match (prompt, side) {
        (None, Content::Text(s)) => text_with_eos(tok, s),
        (Some(Content::Text(p)), Content::Text(s)) => text_with_eos(tok, &format!("{p}{s}")),
        (None, Content::Messages(m)) => tok.encode_chat(m, false).map_err(|e| e.to_string()),
        (Some(Content::Messages(p)), Content::Messages(m)) => {
            let all: Vec<Message> = p.iter().chain(m).cloned().collect();
            tok.encode_chat(&all, false).map_err(|e| e.to_string())
        }
        _ => Err("`prompt` and the completion must both be texts or both message lists".into()),
    }
}

fn text_with_eos(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, String> {
    let mut ids = tok.encode(text, true).map_err(|e| e.to_string())?;
    if let Some(eos) = tok.eos_id()
        && ids.last() != Some(&eos)
    {
        ids.push(eos);
    }
    Ok(ids)
}

/// One JSONL record as an example of `objective`: `Ok(None)` when it is over `max_length` and
/// left out; `Err` with the reason when it is malformed.
pub fn encode_record(
    v: &Value,
    objective: Objective,
    tok: &Tokenizer,
    settings: &RmEncodeSettings,
    training: bool,
) -> Result<Option<RmExample>, String> {
    let prompt = match v.get("prompt") {
        Some(_) => Some(content(v, "prompt")?),
        None => None,
    };
    let max = settings.max_length.max(1);
    match objective {
        Objective::Pairwise => {
            let chosen = encode_side(tok, prompt.as_ref(), &content(v, "chosen")?)?;
            let rejected = encode_side(tok, prompt.as_ref(), &content(v, "rejected")?)?;
            let margin = match v.get("margin") {
                None | Some(Value::Null) => 0.0,
                Some(m) => m.as_f64().ok_or("`margin` must be a number")? as f32,
            };
            Ok(
                (chosen.len() <= max && rejected.len() <= max).then_some(RmExample::Pair {
                    chosen,
                    rejected,
                    margin,
                }),
            )
        }
        Objective::Pointwise => {
            let ids = encode_side(tok, prompt.as_ref(), &content(v, "completion")?)?;
            let label = label(field(v, "label")?, "`label`")?;
            Ok((ids.len() <= max).then_some(RmExample::Labelled { ids, label }))
        }
        Objective::Process => {
            let Some(Content::Text(prompt)) = prompt else {
                return Err("`prompt` must be a string for step labels".into());
            };
            let steps: Vec<String> = serde_json::from_value(field(v, "completions")?.clone())
                .map_err(|_| "`completions` must be a list of step strings".to_string())?;
            let labels = field(v, "labels")?
                .as_array()
                .ok_or("`labels` must be a list")?;
            if labels.len() != steps.len() || steps.is_empty() {
                return Err(format!(
                    "{} steps but {} labels (one label per step, at least one step)",
                    steps.len(),
                    labels.len()
                ));
            }
            let labels: Vec<f32> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| label(l, &format!("label {i}")))
                .collect::<Result<_, _>>()?;
            let (mut ids, mut ends) = encode_steps(tok, &prompt, &steps, &settings.step_separator)?;
            ids.truncate(max);
            let kept = ends.iter().filter(|&&e| e < max).count();
            ends.truncate(kept);
            let mut labels = labels;
            labels.truncate(kept);
            if settings.train_on_last_step_only && training && kept == steps.len() {
                let last = labels.len() - 1;
                ends.drain(..last);
                labels.drain(..last);
            }
            Ok((!ends.is_empty()).then_some(RmExample::Steps { ids, ends, labels }))
        }
    }
}

/// A prompt and its steps as TRL's `PRMTrainer` tokenises them (see the module docs): the ids
/// and the index of each step's last token.
pub fn encode_steps(
    tok: &Tokenizer,
    prompt: &str,
    steps: &[String],
    separator: &str,
) -> Result<(Vec<u32>, Vec<usize>), String> {
    let sep = tok.encode(separator, false).map_err(|e| e.to_string())?;
    let mut ids = tok.encode(prompt, false).map_err(|e| e.to_string())?;
    let mut ends = Vec::with_capacity(steps.len());
    for step in steps {
        ids.extend(tok.encode(step, false).map_err(|e| e.to_string())?);
        ids.extend(&sep);
        if ids.is_empty() {
            return Err("an empty prompt with an empty first step".into());
        }
        ends.push(ids.len() - 1);
    }
    Ok((ids, ends))
}
