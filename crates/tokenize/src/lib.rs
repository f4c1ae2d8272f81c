//! Tokenizers and chat templates in the Hugging Face layout.
//!
//! - `tokenizer.json` is run by the `tokenizers` crate (the same code as the Python library).
//! - `tokenizer_config.json` gives the special tokens (`bos_token`, `eos_token`, `pad_token`, as
//!   strings or `AddedToken` objects) and `chat_template` (a string, or a list of
//!   `{name, template}` from which `default` is taken).
//! - A `chat_template.jinja` file beside them (what transformers 5 writes) wins over the config.
//!
//! Chat templates render with minijinja configured like transformers'
//! `_compile_jinja_template`: `trim_blocks`, `lstrip_blocks`, Python string methods
//! (`.strip()`, `.split()`, …), `raise_exception`, a `tojson` that does not escape HTML, and
//! `strftime_now`.

#![forbid(unsafe_code)]

mod template;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use template::ChatTemplate;

/// A token's `[start, end)` byte range in the encoded text.
pub type ByteSpan = (usize, usize);

/// Files that travel with the weights when a checkpoint is re-saved.
pub const SIDE_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Copy the tokenizer and generation files of `src` that exist into `dst`.
pub fn copy_side_files(src: &Path, dst: &Path) -> Result<(), TokenizeError> {
    for f in SIDE_FILES {
        let from = src.join(f);
        if from.exists() {
            std::fs::copy(&from, dst.join(f)).map_err(|source| TokenizeError::Io {
                path: from.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

pub use reasonlab_core::engine::{Message, Role};

/// Errors naming the file or template at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error(
        "the tokenizer has no chat template (no chat_template in tokenizer_config.json and no chat_template.jinja)"
    )]
    NoChatTemplate,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// A tokenizer with its special tokens and optional chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("pad_token", &self.pad_token)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// `"<s>"` or `{"content": "<s>", ...}` or null.
fn token_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, TokenizeError> {
    std::fs::read_to_string(path).map_err(|source| TokenizeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Tokenizer {
    /// Load `tokenizer.json` (+ `tokenizer_config.json`, `chat_template.jinja` if present).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizeError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
            if path.exists() {
                TokenizeError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                }
            } else {
                TokenizeError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                }
            }
        })?;
        let mut tok = Self {
            inner,
            bos_token: None,
            eos_token: None,
            pad_token: None,
            chat_template: None,
        };
        let config_path = dir.join("tokenizer_config.json");
        if config_path.exists() {
            let text = read(&config_path)?;
            let config: Value =
                serde_json::from_str(&text).map_err(|e| TokenizeError::Invalid {
                    path: config_path.clone(),
                    message: e.to_string(),
                })?;
            tok.bos_token = token_string(config.get("bos_token"));
            tok.eos_token = token_string(config.get("eos_token"));
            tok.pad_token = token_string(config.get("pad_token"));
            let template = match config.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            if let Some(t) = template {
                tok.chat_template = Some(ChatTemplate::new(&t).map_err(|e| match e {
                    TokenizeError::Template(m) => TokenizeError::Invalid {
                        path: config_path.clone(),
                        message: format!("chat_template: {m}"),
                    },
                    other => other,
                })?);
            }
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let t = read(&jinja)?;
            tok.chat_template =
                Some(ChatTemplate::new(&t).map_err(|e| TokenizeError::Invalid {
                    path: jinja.clone(),
                    message: e.to_string(),
                })?);
        }
        Ok(tok)
    }

    /// Wrap an in-memory `tokenizers::Tokenizer` (e.g. one just trained).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            bos_token: None,
            eos_token: None,
            pad_token: None,
            chat_template: None,
        }
    }

    /// The wrapped `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string (special or not).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of the eos token, if the config names one that exists.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Id to pad with: pad token, else eos, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_token
            .as_deref()
            .and_then(|t| self.token_id(t))
            .or_else(|| self.eos_id())
            .unwrap_or(0)
    }

    /// Encode text. `add_special_tokens` runs the post-processor (e.g. Llama's BOS), as in HF.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizeError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))
    }

    /// Encode text and return each token's byte range in `text` (special tokens written in the
    /// text included; tokens the post-processor adds get an empty range at 0).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<ByteSpan>), TokenizeError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| (e.get_ids().to_vec(), e.get_offsets().to_vec()))
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))
    }

    /// Decode ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizeError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizeError::Tokenizer(e.to_string()))
    }

    /// Render messages with the chat template (HF `apply_chat_template(tokenize=False)`).
    pub fn render_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizeError> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or(TokenizeError::NoChatTemplate)?;
        template.render(
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
    }

    /// Render and encode a chat; like HF, the rendered text is encoded without adding special
    /// tokens again (the template already placed them).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        let text = self.render_chat(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }

    /// Save `tokenizer.json` and a `tokenizer_config.json` with special tokens and template.
    pub fn save(&self, dir: &Path) -> Result<(), TokenizeError> {
        let io = |path: &Path, source| TokenizeError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join("tokenizer.json");
        self.inner
            .save(&path, false)
            .map_err(|e| TokenizeError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let mut config = serde_json::Map::new();
        config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
        for (key, value) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("pad_token", &self.pad_token),
        ] {
            config.insert(
                key.into(),
                value.clone().map(Value::String).unwrap_or(Value::Null),
            );
        }
        if let Some(t) = &self.chat_template {
            config.insert(
                "chat_template".into(),
                Value::String(t.source().to_string()),
            );
        }
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&Value::Object(config)).unwrap_or_default();
        std::fs::write(&path, text).map_err(|e| io(&path, e))
    }
}
