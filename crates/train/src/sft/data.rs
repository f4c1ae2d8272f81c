//! SFT records → token ids with a per-token loss flag.
//!
//! Two record shapes are accepted per JSONL line (TRL's conversational and prompt-completion
//! formats):
//!
//! - `{"messages": [{"role": "user", "content": …}, {"role": "assistant", "content": …}, …]}`
//!   rendered with the model's chat template; only assistant turns (with their end-of-turn
//!   tokens) are trained on.
//! - `{"prompt": …, "completion": …}`: with [`PromptFormat::Chat`] turned into a user and an
//!   assistant message; with [`PromptFormat::Raw`] encoded as `prompt + completion` followed by
//!   EOS, the completion (and EOS) trained on.
//!
//! Tool-integrated solutions (ToRA / DeepSeekMath §5): an assistant turn may contain code
//! blocks followed by their executed output in a ```` ```output ```` fence, and messages with
//! role `tool` carry outputs too. Outputs come from the interpreter, not the model, so they are
//! masked from the loss ([`EncodeSettings::mask_tool_outputs`]). Program-of-thought solutions
//! (Python in ```` ```python ```` fences) are plain assistant text and trained on in full.
//!
//! Assistant spans are found by rendering the conversation prefix by prefix: the text of turn
//! `k` lies between `render(messages[..k], add_generation_prompt = true)` and
//! `render(messages[..=k])`. Templates that rewrite earlier turns (R1-Distill drops the thinking
//! of past assistant turns) are rejected for multi-turn data with a clear error, not mis-masked.

use reasonlab_tokenize::{Message, Role, Tokenizer};
use serde::{Deserialize, Serialize};

use super::SftError;

/// One training record as read from JSONL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SftRecord {
    Chat { messages: Vec<Message> },
    PromptCompletion { prompt: String, completion: String },
}

/// How prompt/completion records are turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// A user turn and an assistant turn through the chat template.
    #[default]
    Chat,
    /// `prompt + completion + EOS`, no template (a chat record of one user and one assistant
    /// turn is read as prompt and completion).
    Raw,
}

/// What to do with an example longer than `max_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Keep the first `max_len` tokens.
    #[default]
    Truncate,
    /// Leave the example out.
    Drop,
}

/// Encoding settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodeSettings {
    pub format: PromptFormat,
    pub max_len: usize,
    pub overflow: Overflow,
    pub mask_tool_outputs: bool,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        Self {
            format: PromptFormat::Chat,
            max_len: 1024,
            overflow: Overflow::Truncate,
            mask_tool_outputs: true,
        }
    }
}

/// A tokenised example: `loss[i]` says whether token `i` is a training target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub loss: Vec<bool>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of target tokens.
    pub fn targets(&self) -> usize {
        self.loss.iter().skip(1).filter(|&&l| l).count()
    }
}

/// What happened to an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Kept(Encoded),
    Truncated(Encoded),
    /// Longer than `max_len` with [`Overflow::Drop`].
    Dropped,
    /// Nothing to train on (no assistant turn, empty completion).
    Empty,
}

/// Byte ranges `[start, end)` of `text` that are trained on.
type Spans = Vec<(usize, usize)>;

/// Remove ```` ```output … ``` ```` blocks from `spans`.
fn cut_tool_outputs(text: &str, spans: Spans) -> Spans {
    const OPEN: &str = "```output";
    let mut blocks = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(OPEN) {
        let start = from + i;
        let body = start + OPEN.len();
        let end = text[body..]
            .find("```")
            .map_or(text.len(), |j| body + j + 3);
        blocks.push((start, end));
        from = end;
    }
    let mut out = Vec::new();
    for (mut s, e) in spans {
        for &(bs, be) in &blocks {
            if be <= s || bs >= e {
                continue;
            }
            if bs > s {
                out.push((s, bs));
            }
            s = be.max(s);
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

fn assistant_spans(tok: &Tokenizer, messages: &[Message], full: &str) -> Result<Spans, SftError> {
    let mut spans = Vec::new();
    for (k, m) in messages.iter().enumerate() {
        if m.role != Role::Assistant {
            continue;
        }
        let before = tok.render_chat(&messages[..k], true)?;
        let upto = tok.render_chat(&messages[..=k], false)?;
        if !full.starts_with(&upto) || !upto.starts_with(&before) {
            return Err(SftError::TemplateNotPrefixStable { turn: k });
        }
        spans.push((before.len(), upto.len()));
    }
    Ok(spans)
}

/// Tokenise `record` and mark its trainable tokens.
pub fn encode(
    record: &SftRecord,
    tok: &Tokenizer,
    settings: &EncodeSettings,
) -> Result<Outcome, SftError> {
    let chat = |messages: &[Message]| -> Result<(String, Spans, bool), SftError> {
        let full = tok.render_chat(messages, false)?;
        let spans = assistant_spans(tok, messages, &full)?;
        Ok((full, spans, false))
    };
    let raw = |prompt: &str, completion: &str| {
        let text = format!("{prompt}{completion}");
        let n = text.len();
        (text, vec![(prompt.len(), n)], true)
    };
    let (text, mut spans, add_eos) = match (record, settings.format) {
        // Raw text for a base model without a chat template: a user turn and the assistant's
        // answer read as prompt and completion.
        (SftRecord::Chat { messages }, PromptFormat::Raw)
            if messages.len() == 2
                && messages[0].role == Role::User
                && messages[1].role == Role::Assistant =>
        {
            raw(&messages[0].content, &messages[1].content)
        }
        (SftRecord::Chat { messages }, _) => chat(messages)?,
        (SftRecord::PromptCompletion { prompt, completion }, PromptFormat::Chat) => chat(&[
            Message::new(Role::User, prompt.clone()),
            Message::new(Role::Assistant, completion.clone()),
        ])?,
        (SftRecord::PromptCompletion { prompt, completion }, PromptFormat::Raw) => {
            raw(prompt, completion)
        }
    };
    if settings.mask_tool_outputs {
        spans = cut_tool_outputs(&text, spans);
    }
    let special = add_eos;
    let (mut ids, offsets) = tok.encode_with_offsets(&text, special)?;
    let mut loss: Vec<bool> = offsets
        .iter()
        .map(|&(s, e)| e > s && spans.iter().any(|&(a, b)| s >= a && s < b))
        .collect();
    if add_eos && let Some(eos) = tok.eos_id() {
        ids.push(eos);
        loss.push(true);
    }
    if !loss.iter().skip(1).any(|&l| l) {
        return Ok(Outcome::Empty);
    }
    let mut enc = Encoded { ids, loss };
    if enc.len() > settings.max_len {
        match settings.overflow {
            Overflow::Drop => return Ok(Outcome::Dropped),
            Overflow::Truncate => {
                enc.ids.truncate(settings.max_len);
                enc.loss.truncate(settings.max_len);
                if enc.targets() == 0 {
                    return Ok(Outcome::Empty);
                }
                return Ok(Outcome::Truncated(enc));
            }
        }
    }
    Ok(Outcome::Kept(enc))
}

/// Counts of what encoding did, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EncodeSummary {
    pub kept: usize,
    pub truncated: usize,
    pub dropped: usize,
    pub empty: usize,
}

/// Encode every record; the summary counts truncated, dropped and empty examples.
pub fn encode_all(
    records: &[SftRecord],
    tok: &Tokenizer,
    settings: &EncodeSettings,
) -> Result<(Vec<Encoded>, EncodeSummary), SftError> {
    let mut out = Vec::with_capacity(records.len());
    let mut summary = EncodeSummary::default();
    for r in records {
        match encode(r, tok, settings)? {
            Outcome::Kept(e) => {
                summary.kept += 1;
                out.push(e);
            }
            Outcome::Truncated(e) => {
                summary.truncated += 1;
                out.push(e);
            }
            Outcome::Dropped => summary.dropped += 1,
            Outcome::Empty => summary.empty += 1,
        }
    }
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_blocks_are_cut_from_spans() {
        let text = "a```python\nprint(1)\n```\n```output\n1\n```\nso 1";
        let spans = cut_tool_outputs(text, vec![(0, text.len())]);
        let kept: String = spans.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(kept, "a```python\nprint(1)\n```\n\nso 1");
    }

    #[test]
    fn unterminated_output_runs_to_the_end() {
        let text = "x```output\n1";
        assert_eq!(cut_tool_outputs(text, vec![(0, text.len())]), vec![(0, 1)]);
    }
}
