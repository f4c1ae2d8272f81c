//! The OpenAI wire format, one set of serde types for the [`crate::server`] and the
//! [`crate::client`].
//!
//! Requests are read as leniently as OpenAI, vLLM and SGLang read them: a chat message's
//! `content` may be a string, a list of content parts (`[{"type": "text", "text": …}]`, joined
//! in order) or null; the `developer` role (OpenAI's newer name for `system`) is read as
//! `system`. Responses carry `logprobs` in the completions shape (`tokens`, `token_logprobs`)
//! or the chat shape (`content: [{token, logprob}]`), and the client reads a chat message's
//! `reasoning_content` (vLLM's and SGLang's reasoning parsers, DeepSeek's API).

use reasonlab_core::engine::{FinishReason, Message, Role, TokenLogprob};
use serde::{Deserialize, Serialize};

/// A chat message as clients send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Content,
}

/// A message's content: a string, a list of parts, or nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
    #[default]
    Null,
}

/// One content part; only `text` parts can reach a text model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Why a wire message cannot become a [`Message`]; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "messages[{index}].role: unknown role {role:?} (system, developer, user, assistant, tool)"
    )]
    Role { index: usize, role: String },
    #[error("messages[{index}].content[{part}]: a {kind:?} part cannot be read by a text model")]
    Part {
        index: usize,
        part: usize,
        kind: String,
    },
}

impl WireMessage {
    /// The protocol message; `index` names the message in errors.
    pub fn into_message(self, index: usize) -> Result<Message, WireError> {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => {
                return Err(WireError::Role {
                    index,
                    role: self.role,
                });
            }
        };
        let content = match self.content {
            Content::Text(t) => t,
            Content::Null => String::new(),
            Content::Parts(parts) => {
                let mut text = String::new();
                for (part, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text" | "input_text", Some(t)) => text.push_str(&t),
                        (_, _) => {
                            return Err(WireError::Part {
                                index,
                                part,
                                kind: p.kind,
                            });
                        }
                    }
                }
                text
            }
        };
        Ok(Message { role, content })
    }
}

impl From<&Message> for WireMessage {
    fn from(m: &Message) -> Self {
        Self {
            role: m.role.as_str().to_string(),
            content: Content::Text(m.content.clone()),
        }
    }
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub completion_tokens: usize,
    #[serde(default)]
    pub total_tokens: usize,
}

/// The assistant message of a chat choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChoiceMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    /// vLLM / SGLang reasoning parsers and DeepSeek's API put the thinking here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// Per-token log-probs in either response shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Logprobs {
    /// `/v1/chat/completions`: `{"content": [{"token", "logprob", …}]}`.
    Chat { content: Vec<TokenLogprob> },
    /// `/v1/completions`: `{"tokens": [...], "token_logprobs": [...]}` (null for a prompt
    /// token some servers echo).
    Text {
        tokens: Vec<String>,
        token_logprobs: Vec<Option<f32>>,
    },
}

impl Logprobs {
    /// The chat or completions shape of `tokens`.
    pub fn new(tokens: &[TokenLogprob], chat: bool) -> Self {
        if chat {
            Logprobs::Chat {
                content: tokens.to_vec(),
            }
        } else {
            Logprobs::Text {
                tokens: tokens.iter().map(|t| t.token.clone()).collect(),
                token_logprobs: tokens.iter().map(|t| Some(t.logprob)).collect(),
            }
        }
    }

    /// One entry per generated token.
    pub fn into_tokens(self) -> Vec<TokenLogprob> {
        match self {
            Logprobs::Chat { content } => content,
            Logprobs::Text {
                tokens,
                token_logprobs,
            } => tokens
                .into_iter()
                .zip(token_logprobs)
                .map(|(token, p)| TokenLogprob {
                    token,
                    logprob: p.unwrap_or(f32::NAN),
                })
                .collect(),
        }
    }
}

/// One choice of a (non-streamed) response: `text` for completions, `message` for chat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ChoiceMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<Logprobs>,
    /// The generated token ids, when the request set `return_token_ids` (vLLM's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
}

impl Choice {
    /// The finish reason as the protocol knows it: only `length` means truncated.
    pub fn finish(&self) -> FinishReason {
        match self.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        }
    }
}

/// A `text_completion` or `chat.completion` response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// reasonlab's extension: the version of the weights that answered (the last weight
    /// update's), so a trainer can check each sample's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_parts_and_developer_role_are_read() {
        let m: WireMessage = serde_json::from_str(
            r#"{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]}"#,
        )
        .unwrap();
        assert_eq!(m.into_message(0).unwrap(), Message::system("Be brief."));
        let m: WireMessage =
            serde_json::from_str(r#"{"role": "assistant", "content": null}"#).unwrap();
        assert_eq!(m.into_message(1).unwrap(), Message::assistant(""));
        let m: WireMessage = serde_json::from_str(
            r#"{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}"#,
        )
        .unwrap();
        let err = m.into_message(2).unwrap_err().to_string();
        assert!(
            err.contains("messages[2].content[0]") && err.contains("image_url"),
            "{err}"
        );
        let m: WireMessage = serde_json::from_str(r#"{"role": "robot", "content": "x"}"#).unwrap();
        assert!(m.into_message(0).is_err());
    }

    #[test]
    fn logprobs_round_trip_in_both_shapes() {
        let toks = vec![
            TokenLogprob {
                token: "4".into(),
                logprob: -0.5,
            },
            TokenLogprob {
                token: "2".into(),
                logprob: -1.0,
            },
        ];
        for chat in [true, false] {
            let json = serde_json::to_string(&Logprobs::new(&toks, chat)).unwrap();
            let back: Logprobs = serde_json::from_str(&json).unwrap();
            assert_eq!(back.into_tokens(), toks, "{json}");
        }
    }
}
