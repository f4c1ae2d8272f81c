//! A blocking OpenAI-compatible client implementing the generation protocol's [`Engine`].
//!
//! Text prompts go to `POST {base}/v1/completions`, message lists to
//! `POST {base}/v1/chat/completions` (OpenAI API reference; vLLM's server accepts the extra
//! `top_k` field, which is sent only when set). Requests run on `concurrency` threads; each is
//! retried with exponential backoff on 429, 5xx, timeouts and connection errors (honouring
//! `Retry-After` in seconds), and fails at once on other 4xx.
//!
//! Samples: with [`NMode::Split`] (the default) each sample is its own request with `n = 1` and
//! seed `seed + j`, so every completion has its exact `completion_tokens` and servers without
//! `n` support (llama.cpp) work. [`NMode::Native`] sends `n` once (shares the prompt's prefill on
//! vLLM); `usage.completion_tokens` is then a total, which is split over the choices in
//! proportion to their length, and missing choices are requested again.
//!
//! A request that asks for log-probs sends `logprobs` (`1` to `/v1/completions`, `true` to
//! `/v1/chat/completions`) and reads them back in either shape. A request the server rejects
//! (4xx) fails alone; a server that stays down fails the request and abandons the rest of the
//! batch.
//!
//! With `return_token_ids` the client asks for each choice's token ids (vLLM's
//! `return_token_ids`, reasonlab serve's too) and hands them on in [`Sample::token_ids`], so a
//! trainer never re-tokenises text; a response's `policy_version` (reasonlab serve) lands in
//! [`Sample::policy_version`]. [`OpenAiClient::update_weights_from_disk`],
//! [`OpenAiClient::load_lora_adapter`] and [`OpenAiClient::unload_lora_adapter`] call SGLang's and
//! vLLM's weight-update endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use reasonlab_core::engine::{
    Engine, EngineError, ModelInfo, Output, Prompt, Request, Sample, sha256_hex,
};
use serde_json::{Value, json};

use crate::wire::{CompletionResponse, WireMessage};

/// How `n > 1` samples are requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NMode {
    /// One request per sample (`n = 1`, seed + j).
    #[default]
    Split,
    /// One request with `n`.
    Native,
}

/// Client settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Server root, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is accepted).
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a bearer token when set).
    pub api_key_env: Option<String>,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles per retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Whole-request timeout (long generations need minutes).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub n_mode: NMode,
    /// Ask for each choice's token ids (`return_token_ids`; vLLM ≥ 0.10.2, reasonlab serve).
    pub return_token_ids: bool,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            concurrency: 16,
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(1800),
            connect_timeout: Duration::from_secs(10),
            n_mode: NMode::Split,
            return_token_ids: false,
        }
    }
}

/// Errors of the client, with the URL and what the server said.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building the HTTP client: {0}")]
    Build(String),
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: unexpected response: {message}")]
    BadResponse { url: String, message: String },
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("invalid setting {name} = {value}")]
    InvalidSetting { name: &'static str, value: String },
}

impl From<ClientError> for EngineError {
    /// A request the server refused (4xx) is invalid; anything else is an engine failure.
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Status { status, .. } if (400..500).contains(&status) => {
                EngineError::Invalid(e.to_string())
            }
            _ => EngineError::Internal(e.to_string()),
        }
    }
}

/// The client. Cheap to share across threads.
pub struct OpenAiClient {
    cfg: ClientConfig,
    /// The `model` of requests: `cfg.model`, or the adapter loaded last.
    model: RwLock<String>,
    http: reqwest::blocking::Client,
    api_key: Option<String>,
    root: String,
}

impl OpenAiClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        if cfg.concurrency == 0 {
            return Err(ClientError::InvalidSetting {
                name: "concurrency",
                value: "0".into(),
            });
        }
        let root = cfg
            .base_url
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_string();
        if !(root.starts_with("http://") || root.starts_with("https://")) {
            return Err(ClientError::InvalidSetting {
                name: "base_url",
                value: cfg.base_url.clone(),
            });
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let api_key = cfg
            .api_key_env
            .as_deref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|k| !k.is_empty());
        Ok(Self {
            model: RwLock::new(cfg.model.clone()),
            cfg,
            http,
            api_key,
            root,
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The server root (no `/v1`).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The `model` requests name now.
    pub fn model(&self) -> String {
        self.model
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|_| self.cfg.model.clone())
    }

    /// Name `model` in later requests (a LoRA adapter the server loaded).
    pub fn set_model(&self, model: &str) {
        if let Ok(mut m) = self.model.write() {
            *m = model.to_string();
        }
    }

    /// Whether the server answers `GET /v1/models` within `timeout`.
    pub fn is_up(&self, timeout: Duration) -> bool {
        let mut req = self
            .http
            .get(format!("{}/v1/models", self.root))
            .timeout(timeout);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        req.send().is_ok_and(|r| r.status().is_success())
    }

    /// SGLang's `POST /update_weights_from_disk`: the server loads the HF checkpoint in `dir`
    /// (a path the server can read) and reports `version` from then on.
    pub fn update_weights_from_disk(
        &self,
        dir: &std::path::Path,
        version: u64,
    ) -> Result<(), ClientError> {
        let path = "/update_weights_from_disk";
        let v = self.post(
            path,
            &json!({"model_path": dir.display().to_string(), "policy_version": version}),
        )?;
        if v.get("success").and_then(Value::as_bool) == Some(false) {
            return Err(ClientError::BadResponse {
                url: format!("{}{path}", self.root),
                message: v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("update failed")
                    .to_string(),
            });
        }
        Ok(())
    }

    /// vLLM's `POST /v1/load_lora_adapter`: the server serves the PEFT adapter in `dir` as
    /// `name`, and later requests name it.
    pub fn load_lora_adapter(
        &self,
        name: &str,
        dir: &std::path::Path,
        version: u64,
    ) -> Result<(), ClientError> {
        self.post_raw(
            "/v1/load_lora_adapter",
            &json!({"lora_name": name, "lora_path": dir.display().to_string(),
                    "policy_version": version}),
        )?;
        self.set_model(name);
        Ok(())
    }

    /// vLLM's `POST /v1/unload_lora_adapter`.
    pub fn unload_lora_adapter(&self, name: &str) -> Result<(), ClientError> {
        self.post_raw("/v1/unload_lora_adapter", &json!({ "lora_name": name }))
            .map(|_| ())
    }

    /// POST `body` to `path` with retries; the parsed JSON response.
    fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.root);
        let text = self.post_raw(path, body)?;
        serde_json::from_str(&text).map_err(|e| ClientError::BadResponse {
            url,
            message: e.to_string(),
        })
    }

    /// POST `body` to `path` with retries; the response's text.
    fn post_raw(&self, path: &str, body: &Value) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.root);
        let mut backoff = self.cfg.initial_backoff;
        let mut last = String::new();
        for attempt in 0..=self.cfg.max_retries {
            if attempt > 0 {
                tracing::warn!(%url, attempt, ?backoff, %last, "retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(self.cfg.max_backoff);
            }
            let mut req = self.http.post(&url).json(body);
            if let Some(key) = &self.api_key {
                req = req.bearer_auth(key);
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => {
                    // Connection refused/reset and timeouts are worth retrying.
                    last = e.to_string();
                    continue;
                }
            };
            let status = resp.status();
            if status.is_success() {
                return resp.text().map_err(|e| ClientError::BadResponse {
                    url: url.clone(),
                    message: e.to_string(),
                });
            }
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().unwrap_or_default();
            let body_text: String = text.chars().take(500).collect();
            if status.as_u16() == 429 || status.is_server_error() {
                last = format!("HTTP {}: {body_text}", status.as_u16());
                if let Some(ra) = retry_after {
                    backoff = ra.min(self.cfg.max_backoff);
                }
                continue;
            }
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                body: body_text,
            });
        }
        Err(ClientError::Exhausted {
            url,
            attempts: self.cfg.max_retries + 1,
            last,
        })
    }

    /// One HTTP call for `n` samples of `req` with `seed`: the samples in choice order and
    /// the prompt's token count.
    fn call(
        &self,
        req: &Request,
        n: usize,
        seed: u64,
    ) -> Result<(Vec<Sample>, usize), ClientError> {
        let s = &req.sampling;
        let model = self.model();
        let (path, mut body) = match &req.prompt {
            Prompt::Text(t) => ("/v1/completions", json!({ "model": model, "prompt": t })),
            Prompt::Messages(m) => (
                "/v1/chat/completions",
                json!({ "model": model,
                        "messages": m.iter().map(WireMessage::from).collect::<Vec<_>>() }),
            ),
        };
        let chat = matches!(req.prompt, Prompt::Messages(_));
        let obj = body.as_object_mut().expect("json! object");
        // A final assistant message is continued (vLLM's and reasonlab serve's reading).
        if let Prompt::Messages(m) = &req.prompt
            && m.last()
                .is_some_and(|l| l.role == reasonlab_core::engine::Role::Assistant)
        {
            obj.insert("continue_final_message".into(), json!(true));
            obj.insert("add_generation_prompt".into(), json!(false));
        }
        obj.insert("n".into(), json!(n));
        obj.insert("temperature".into(), json!(s.temperature));
        obj.insert("top_p".into(), json!(s.top_p));
        obj.insert("max_tokens".into(), json!(s.max_new_tokens));
        obj.insert("seed".into(), json!(seed));
        if let Some(k) = s.top_k {
            obj.insert("top_k".into(), json!(k));
        }
        if s.min_p > 0.0 {
            obj.insert("min_p".into(), json!(s.min_p));
        }
        if !s.stop.is_empty() {
            obj.insert("stop".into(), json!(s.stop));
        }
        if req.logprobs {
            obj.insert("logprobs".into(), if chat { json!(true) } else { json!(1) });
        }
        if self.cfg.return_token_ids {
            obj.insert("return_token_ids".into(), json!(true));
        }
        let url = format!("{}{path}", self.root);
        let value = self.post(path, &body)?;
        let resp: CompletionResponse =
            serde_json::from_value(value).map_err(|e| ClientError::BadResponse {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let mut choices = resp.choices;
        choices.sort_by_key(|c| c.index);
        let usage = resp.usage.unwrap_or_default();
        let total_tokens = usage.completion_tokens;
        let mut outs = Vec::with_capacity(choices.len());
        for c in choices.into_iter().take(n) {
            let finish_reason = c.finish();
            let text = match (c.text, c.message) {
                (Some(t), _) => t,
                (None, Some(m)) => {
                    let content = m.content.unwrap_or_default();
                    match m.reasoning_content.filter(|r| !r.is_empty()) {
                        Some(r) => format!("<think>\n{r}\n</think>\n\n{content}"),
                        None => content,
                    }
                }
                (None, None) => {
                    return Err(ClientError::BadResponse {
                        url,
                        message: "a choice has neither `text` nor `message`".into(),
                    });
                }
            };
            outs.push(Sample {
                text,
                finish_reason,
                completion_tokens: 0,
                logprobs: if req.logprobs {
                    c.logprobs.map(|l| l.into_tokens())
                } else {
                    None
                },
                token_ids: c.token_ids,
                policy_version: resp.policy_version,
            });
        }
        // usage.completion_tokens covers all choices: exact for one, split by length otherwise.
        let chars: usize = outs.iter().map(|o| o.text.chars().count()).sum();
        let count = outs.len();
        for o in &mut outs {
            o.completion_tokens = if count == 1 {
                total_tokens
            } else if chars == 0 {
                total_tokens / count.max(1)
            } else {
                (total_tokens as f64 * o.text.chars().count() as f64 / chars as f64).round()
                    as usize
            };
        }
        Ok((outs, usage.prompt_tokens))
    }

    /// Samples of one request: sample `j` alone in split mode, all of them otherwise.
    fn samples(
        &self,
        req: &Request,
        split_index: Option<usize>,
    ) -> Result<(Vec<Sample>, usize), ClientError> {
        match split_index {
            Some(j) => self.call(req, 1, req.sampling.seed.wrapping_add(j as u64)),
            None => {
                let mut outs = Vec::with_capacity(req.n);
                let mut prompt_tokens = 0;
                while outs.len() < req.n {
                    let (got, p) = self.call(
                        req,
                        req.n - outs.len(),
                        req.sampling.seed.wrapping_add(outs.len() as u64),
                    )?;
                    if got.is_empty() {
                        return Err(ClientError::BadResponse {
                            url: self.root.clone(),
                            message: "no choices returned".into(),
                        });
                    }
                    prompt_tokens = p;
                    outs.extend(got);
                }
                Ok((outs, prompt_tokens))
            }
        }
    }
}

/// The outputs of one job, filled in by a worker thread.
type JobResult = Result<(Vec<Sample>, usize), ClientError>;

impl Engine for OpenAiClient {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.model(),
            // No model files to hash behind an endpoint: the server and model name stand in.
            hash: sha256_hex(format!("{}\n{}", self.root, self.cfg.model).as_bytes()),
            location: self.root.clone(),
        }
    }

    /// Completions arrive whole: no deltas are sent.
    fn generate_streaming(
        &self,
        requests: &[Request],
        _on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        // Work items: (request, Some(sample)) in split mode, (request, None) in native mode.
        let jobs: Vec<(usize, Option<usize>)> = requests
            .iter()
            .enumerate()
            .flat_map(|(i, r)| match self.cfg.n_mode {
                NMode::Split => (0..r.n).map(|j| (i, Some(j))).collect::<Vec<_>>(),
                NMode::Native => vec![(i, None)],
            })
            .collect();
        let results: Vec<Mutex<Option<JobResult>>> =
            jobs.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        // Set when the server stayed unreachable: the remaining jobs are abandoned.
        let down = std::sync::atomic::AtomicBool::new(false);
        let workers = self.cfg.concurrency.min(jobs.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        if down.load(Ordering::Relaxed) {
                            break;
                        }
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, split)) = jobs.get(j) else {
                            break;
                        };
                        let r = self.samples(&requests[i], split);
                        if matches!(
                            r,
                            Err(ClientError::Exhausted { .. } | ClientError::Transport { .. })
                        ) {
                            down.store(true, Ordering::Relaxed);
                        }
                        if let Ok(mut slot) = results[j].lock() {
                            *slot = Some(r);
                        }
                    }
                });
            }
        });
        let mut outs: Vec<Result<Output, EngineError>> = requests
            .iter()
            .map(|r| {
                Ok(Output {
                    prompt_tokens: 0,
                    samples: Vec::with_capacity(r.n),
                })
            })
            .collect();
        for ((i, _), slot) in jobs.iter().zip(results) {
            let r = match slot.into_inner() {
                Ok(Some(r)) => r.map_err(EngineError::from),
                Ok(None) => Err(EngineError::Internal(
                    "request abandoned after the server stayed unreachable".into(),
                )),
                Err(_) => Err(EngineError::Internal("a worker thread panicked".into())),
            };
            match (&mut outs[*i], r) {
                (Ok(o), Ok((samples, prompt_tokens))) => {
                    o.samples.extend(samples);
                    o.prompt_tokens = prompt_tokens;
                }
                (slot @ Ok(_), Err(e)) => *slot = Err(e),
                (Err(_), _) => {}
            }
        }
        outs
    }
}
