//! An OpenAI-compatible HTTP server in front of an [`Engine`].
//!
//! Routes: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (OpenAI API
//! reference) with `model`, `prompt` / `messages`, `n`, `temperature`, `top_p`, `top_k` and
//! `min_p` (vLLM's extensions), `max_tokens` (`max_completion_tokens` too), `stop` (string or list), `seed`,
//! `logprobs` and `stream` (server-sent events, `data: [DONE]` at the end).
//!
//! **Batching.** Handlers do not call the engine; they queue the request to one batcher thread,
//! which waits up to `batch_wait` for more requests (or until `max_batch`), runs them in one
//! engine call — the engine decodes requests with equal settings together — and answers each.
//! Sample `j` of a request uses seed `seed + j` (a request without `seed` gets a random one), so
//! an answer does not depend on what it was batched with, and `n = 4` equals four requests with
//! `n = 1` and seeds `seed … seed + 3` (how the client splits `n`).
//!
//! **Errors** are JSON `{"error": {"message", "type", "param", "code"}}` with the status OpenAI
//! uses: 400 malformed JSON or an invalid parameter, 401 missing or wrong bearer token (when
//! `api_key` is set), 404 unknown model or route, 413 body over `max_body_bytes`, 500 engine
//! failure. Shutdown is graceful: in-flight requests finish.
//!
//! **Weight updates** (what a trainer calls between steps): `POST /update_weights_from_disk`
//! with `{"model_path": DIR}` loads a checkpoint in HF layout (SGLang's endpoint and reply,
//! `{"success", "message"}`); `POST /v1/load_lora_adapter` with `{"lora_name", "lora_path"}`
//! attaches a PEFT adapter to the base model the server started with and serves it under
//! `lora_name` as well as the base name (vLLM's endpoint; vLLM keeps several adapters at once,
//! this server one set of weights), and `POST /v1/unload_lora_adapter` forgets a name. Either
//! body may carry `policy_version` (reasonlab's extension; otherwise the count of updates so
//! far), which every later response reports as `policy_version`. The swap waits for the batch
//! being decoded. `return_token_ids: true` (vLLM's extension) adds each choice's `token_ids`.
//!
//! **Streaming** (`stream: true`): chunks in OpenAI's format as the engine decodes (text deltas;
//! the engine holds back as many bytes as the longest stop string, and incomplete UTF-8), then
//! each sample's finish reason and `data: [DONE]`. An error found before the first delta is
//! still a 4xx/5xx JSON response.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, Message, Output, Prompt, Request, Sampling, WeightUpdate,
};
use serde::Deserialize;

use crate::wire::{Choice, ChoiceMessage, CompletionResponse, Logprobs, Usage, WireMessage};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Required bearer token, if any.
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens_limit: usize,
    /// `max_tokens` when a request does not say.
    pub default_max_tokens: usize,
    /// Largest `n` accepted.
    pub max_n: usize,
    /// Most requests per engine call.
    pub max_batch: usize,
    /// How long the batcher waits for more requests after the first.
    pub batch_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            api_key: None,
            max_body_bytes: 4 << 20,
            max_tokens_limit: 32_768,
            default_max_tokens: 256,
            max_n: 64,
            max_batch: 64,
            batch_wait: Duration::from_millis(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

type Reply = oneshot::Sender<Result<Output, EngineError>>;

/// `(sample, text delta)` of a streamed request.
type Deltas = tokio::sync::mpsc::UnboundedSender<(usize, String)>;

struct Job {
    request: Request,
    reply: Reply,
    /// Set for `stream: true` requests.
    stream: Option<Deltas>,
}

struct AppState {
    model_id: String,
    /// Names of loaded LoRA adapters, also accepted as `model`.
    adapters: RwLock<Vec<String>>,
    /// Weight updates applied so far.
    updates: AtomicU64,
    engine: Arc<dyn Engine>,
    cfg: ServerConfig,
    queue: std_mpsc::Sender<Job>,
    created: u64,
}

impl AppState {
    fn serves(&self, name: &str) -> bool {
        name == self.model_id
            || self
                .adapters
                .read()
                .is_ok_and(|a| a.iter().any(|n| n == name))
    }
}

/// The batcher: blocks for a first job, gathers more for `wait` (up to `max`), runs them.
fn batcher(engine: Arc<dyn Engine>, rx: std_mpsc::Receiver<Job>, max: usize, wait: Duration) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + wait;
        while jobs.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let requests: Vec<Request> = jobs.iter().map(|j| j.request.clone()).collect();
        let streams: Vec<Option<Deltas>> = jobs.iter_mut().map(|j| j.stream.take()).collect();
        let results = engine.generate_streaming(&requests, &mut |r, sample, delta| {
            if let Some(Some(tx)) = streams.get(r) {
                let _ = tx.send((sample, delta.to_string()));
            }
        });
        drop(streams);
        tracing::debug!(batch = jobs.len(), "engine call");
        let mut results = results.into_iter();
        for job in jobs {
            let r = results.next().unwrap_or_else(|| {
                Err(EngineError::Internal(
                    "engine returned too few results".into(),
                ))
            });
            let _ = job.reply.send(r);
        }
    }
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with its status.
#[derive(Debug, Clone)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::NOT_FOUND if self.kind == "invalid_request_error" => {
                json!("model_not_found")
            }
            _ => Value::Null,
        };
        let body = json!({"error": {"message": self.message, "type": self.kind,
                                    "param": self.param, "code": code}});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

fn error(
    status: StatusCode,
    kind: &'static str,
    message: impl Into<String>,
    param: Option<&'static str>,
) -> ApiError {
    ApiError {
        status,
        kind,
        message: message.into(),
        param,
    }
}

fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        param,
    )
}

fn check_auth(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.cfg.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if g == key => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid API key",
            None,
        )),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing bearer token (Authorization: Bearer KEY)",
            None,
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

/// The fields both endpoints share (unknown fields are ignored, as OpenAI's server does).
#[derive(Debug, Deserialize)]
struct CommonBody {
    model: Option<String>,
    n: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    stop: Option<StopField>,
    seed: Option<serde_json::Number>,
    #[serde(default)]
    stream: bool,
    logprobs: Option<Value>,
    #[serde(default)]
    return_token_ids: bool,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    prompt: Value,
    #[serde(flatten)]
    common: CommonBody,
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    messages: Vec<WireMessage>,
    #[serde(flatten)]
    common: CommonBody,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}"), None))
}

/// Validate the shared fields into an engine request (prompt filled in by the caller).
fn engine_request(state: &AppState, c: &CommonBody, prompt: Prompt) -> Result<Request, ApiError> {
    match &c.model {
        Some(m) if state.serves(m) => {}
        Some(m) => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model `{m}` does not exist; this server serves `{}`",
                    state.model_id
                ),
                Some("model"),
            ));
        }
        None => return Err(bad_request("`model` is required", Some("model"))),
    }
    let n = c.n.unwrap_or(1);
    if n < 1 || n as usize > state.cfg.max_n {
        return Err(bad_request(
            format!("`n` must be between 1 and {}", state.cfg.max_n),
            Some("n"),
        ));
    }
    let max_tokens = c
        .max_completion_tokens
        .or(c.max_tokens)
        .unwrap_or(state.cfg.default_max_tokens as i64);
    if max_tokens < 1 || max_tokens as usize > state.cfg.max_tokens_limit {
        return Err(bad_request(
            format!(
                "`max_tokens` must be between 1 and {}, got {max_tokens}",
                state.cfg.max_tokens_limit
            ),
            Some("max_tokens"),
        ));
    }
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad_request(
            "`temperature` must be in [0, 2]",
            Some("temperature"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad_request("`top_p` must be in (0, 1]", Some("top_p")));
    }
    let top_k = match c.top_k {
        None | Some(-1) | Some(0) => None,
        Some(k) if k > 0 => Some(k as usize),
        Some(_) => {
            return Err(bad_request(
                "`top_k` must be positive (or -1 for none)",
                Some("top_k"),
            ));
        }
    };
    let min_p = c.min_p.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_p) {
        return Err(bad_request("`min_p` must be in [0, 1]", Some("min_p")));
    }
    let seed = match &c.seed {
        // u64 seeds (what our client sends) and negative i64 ones (wrapped) are both fine.
        Some(s) => match (s.as_u64(), s.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => i as u64,
            _ => return Err(bad_request("`seed` must be an integer", Some("seed"))),
        },
        // No seed asked for: a fresh one per request.
        None => fresh_u64(),
    };
    let stop = match &c.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    let logprobs = match &c.logprobs {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::Number(k)) => k.as_i64().is_some_and(|k| k >= 0),
        Some(_) => {
            return Err(bad_request(
                "`logprobs` must be a boolean or an integer",
                Some("logprobs"),
            ));
        }
    };
    Ok(Request {
        prompt,
        n: n as usize,
        sampling: Sampling {
            temperature: temperature as f32,
            top_p: top_p as f32,
            top_k,
            min_p: min_p as f32,
            max_new_tokens: max_tokens as usize,
            seed,
            stop,
        },
        logprobs,
    })
}

async fn run_engine(state: &AppState, request: Request) -> Result<Output, ApiError> {
    let (tx, rx) = oneshot::channel();
    enqueue(state, request, tx, None)?;
    engine_result(rx.await)
}

fn enqueue(
    state: &AppState,
    request: Request,
    reply: Reply,
    stream: Option<Deltas>,
) -> Result<(), ApiError> {
    state
        .queue
        .send(Job {
            request,
            reply,
            stream,
        })
        .map_err(|_| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the engine has stopped",
                None,
            )
        })
}

fn engine_result(
    r: Result<Result<Output, EngineError>, oneshot::error::RecvError>,
) -> Result<Output, ApiError> {
    match r {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(EngineError::Invalid(m))) => Err(bad_request(m, None)),
        Ok(Err(EngineError::Internal(m))) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            m,
            None,
        )),
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the engine dropped the request",
            None,
        )),
    }
}

/// A fresh pseudo-random value (the clock's nanoseconds through SplitMix64): request ids and
/// seeds of requests that do not give one.
fn fresh_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    reasonlab_core::rng::SplitMix64::seeded(t).next_u64()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fresh_u64())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn usage(out: &Output) -> Usage {
    let completion: usize = out.samples.iter().map(|s| s.completion_tokens).sum();
    Usage {
        prompt_tokens: out.prompt_tokens,
        completion_tokens: completion,
        total_tokens: out.prompt_tokens + completion,
    }
}

/// The `choices` of a response; `chat` picks the chat shapes, `token_ids` adds the ids.
fn choices(out: &Output, chat: bool, token_ids: bool) -> Vec<Choice> {
    out.samples
        .iter()
        .enumerate()
        .map(|(i, s)| Choice {
            index: i,
            text: (!chat).then(|| s.text.clone()),
            message: chat.then(|| ChoiceMessage {
                role: Some("assistant".into()),
                content: Some(s.text.clone()),
                reasoning_content: None,
            }),
            finish_reason: Some(s.finish_reason.as_str().into()),
            logprobs: s.logprobs.as_ref().map(|lp| Logprobs::new(lp, chat)),
            token_ids: if token_ids { s.token_ids.clone() } else { None },
        })
        .collect()
}

/// One SSE event.
fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// What every chunk of one streamed response repeats.
struct StreamHead {
    chat: bool,
    id: String,
    model: String,
    created: u64,
}

impl StreamHead {
    /// A chunk: `text` for sample `i` (chat: a delta, with `role` on the first), or the final
    /// chunk with its finish reason.
    fn chunk(
        &self,
        i: usize,
        text: Option<&str>,
        finish_reason: Option<FinishReason>,
        first: bool,
    ) -> Bytes {
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let choice = if self.chat {
            let delta = match (text, first) {
                (Some(t), true) => json!({"role": "assistant", "content": t}),
                (Some(t), false) => json!({"content": t}),
                (None, _) => json!({}),
            };
            json!({"index": i, "delta": delta, "finish_reason": finish_reason.map(FinishReason::as_str)})
        } else {
            json!({"index": i, "text": text.unwrap_or(""),
                   "finish_reason": finish_reason.map(FinishReason::as_str)})
        };
        event(
            &json!({"id": self.id, "object": object, "created": self.created,
                      "model": self.model, "choices": [choice]}),
        )
    }
}

/// Stream a request as server-sent events: a chunk per decoded text delta as the engine
/// produces it, then per sample the rest of its text and its finish reason, then `[DONE]`.
/// Errors the engine reports before the first delta (a prompt too long, …) are still 4xx
/// responses; later ones become an `error` event.
async fn stream(
    state: &AppState,
    request: Request,
    chat: bool,
    id: String,
) -> Result<Response, ApiError> {
    let (reply_tx, mut reply_rx) = oneshot::channel();
    let (delta_tx, mut delta_rx) = tokio::sync::mpsc::unbounded_channel();
    let n = request.n;
    enqueue(state, request, reply_tx, Some(delta_tx))?;
    // Wait for the first delta or the result, so early errors keep their status code.
    let first = tokio::select! {
        // Deltas first: with both ready, stream (the result is read after the deltas anyway).
        biased;
        d = delta_rx.recv() => d,
        r = &mut reply_rx => {
            // Finished without a delta (e.g. empty completions): send it whole.
            let out = engine_result(r)?;
            let head = StreamHead { chat, id, model: state.model_id.clone(), created: now() };
            let mut first_of = vec![true; n];
            return Ok(sse_body(finished_events(&out, &head, &[], &mut first_of)));
        }
    };
    let head = StreamHead {
        chat,
        id,
        model: state.model_id.clone(),
        created: now(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let mut sent = vec![0usize; n]; // bytes of each sample's text already sent
        let mut first_of = vec![true; n];
        let mut next = first;
        while let Some((i, delta)) = next {
            if i < n && !delta.is_empty() {
                let b = head.chunk(i, Some(&delta), None, first_of[i]);
                first_of[i] = false;
                sent[i] += delta.len();
                if tx.send(b).is_err() {
                    return; // the client went away
                }
            }
            next = delta_rx.recv().await;
        }
        match engine_result(reply_rx.await) {
            Ok(out) => {
                for b in finished_events(&out, &head, &sent, &mut first_of) {
                    let _ = tx.send(b);
                }
            }
            Err(e) => {
                let _ = tx.send(event(
                    &json!({"error": {"message": e.message, "type": e.kind}}),
                ));
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The closing events of a stream: each sample's unsent text, its finish reason, `[DONE]`.
fn finished_events(
    out: &Output,
    head: &StreamHead,
    sent: &[usize],
    first_of: &mut [bool],
) -> Vec<Bytes> {
    let mut events = Vec::new();
    for (i, s) in out.samples.iter().enumerate() {
        let done = sent.get(i).copied().unwrap_or(0);
        let rest = s.text.get(done..).unwrap_or("");
        if !rest.is_empty() || first_of.get(i).copied().unwrap_or(false) {
            events.push(head.chunk(i, Some(rest), None, first_of[i]));
            first_of[i] = false;
        }
        events.push(head.chunk(i, None, Some(s.finish_reason), false));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn sse_body(events: Vec<Bytes>) -> Response {
    let body: Vec<u8> = events.iter().flat_map(|b| b.iter().copied()).collect();
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from(body),
    )
        .into_response()
}

fn typed_response<T: serde::Serialize>(body: &T) -> Response {
    json_response(serde_json::to_value(body).unwrap_or(Value::Null))
}

fn json_response(body: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_auth(&state, &headers)?;
    let req: CompletionBody = parse(&body)?;
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        _ => {
            return Err(bad_request(
                "`prompt` must be a string (or a list of one string)",
                Some("prompt"),
            ));
        }
    };
    let er = engine_request(&state, &req.common, Prompt::Text(prompt))?;
    let id = new_id("cmpl");
    if req.common.stream {
        return stream(&state, er, false, id).await;
    }
    let out = run_engine(&state, er).await?;
    Ok(typed_response(&CompletionResponse {
        id,
        object: "text_completion".into(),
        created: now(),
        model: req.common.model.clone().unwrap_or_default(),
        choices: choices(&out, false, req.common.return_token_ids),
        usage: Some(usage(&out)),
        policy_version: out.samples.first().and_then(|s| s.policy_version),
    }))
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_auth(&state, &headers)?;
    let req: ChatBody = parse(&body)?;
    if req.messages.is_empty() {
        return Err(bad_request(
            "`messages` must not be empty",
            Some("messages"),
        ));
    }
    let messages = req
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_message(i))
        .collect::<Result<Vec<Message>, _>>()
        .map_err(|e| bad_request(e.to_string(), Some("messages")))?;
    let er = engine_request(&state, &req.common, Prompt::Messages(messages))?;
    let id = new_id("chatcmpl");
    if req.common.stream {
        return stream(&state, er, true, id).await;
    }
    let out = run_engine(&state, er).await?;
    Ok(typed_response(&CompletionResponse {
        id,
        object: "chat.completion".into(),
        created: now(),
        model: req.common.model.clone().unwrap_or_default(),
        choices: choices(&out, true, req.common.return_token_ids),
        usage: Some(usage(&out)),
        policy_version: out.samples.first().and_then(|s| s.policy_version),
    }))
}

async fn models(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_auth(&state, &headers)?;
    let mut names = vec![state.model_id.clone()];
    if let Ok(a) = state.adapters.read() {
        names.extend(a.iter().cloned());
    }
    let data: Vec<Value> = names
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": state.created, "owned_by": "reasonlab"}))
        .collect();
    Ok(json_response(json!({"object": "list", "data": data})))
}

/// `/update_weights_from_disk` (SGLang).
#[derive(Debug, Deserialize)]
struct FromDiskBody {
    model_path: String,
    policy_version: Option<u64>,
}

/// `/v1/load_lora_adapter` and `/v1/unload_lora_adapter` (vLLM).
#[derive(Debug, Deserialize)]
struct LoraBody {
    lora_name: String,
    #[serde(default)]
    lora_path: Option<String>,
    policy_version: Option<u64>,
}

/// Apply `update` on a blocking thread (it waits for the batch in flight); its version.
async fn apply_update(
    state: &Arc<AppState>,
    update: WeightUpdate,
    version: Option<u64>,
) -> Result<u64, ApiError> {
    let version = version.unwrap_or_else(|| state.updates.load(Ordering::SeqCst) + 1);
    let engine = state.engine.clone();
    let result = tokio::task::spawn_blocking(move || engine.update_weights(&update, version))
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
                None,
            )
        })?;
    match result {
        Ok(()) => {
            state.updates.fetch_add(1, Ordering::SeqCst);
            tracing::info!(version, "weights updated");
            Ok(version)
        }
        Err(EngineError::Invalid(m)) => Err(bad_request(m, None)),
        Err(EngineError::Internal(m)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            m,
            None,
        )),
    }
}

async fn update_from_disk(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = check_auth(&state, &headers) {
        return e.into_response();
    }
    let req: FromDiskBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let update = WeightUpdate::Full {
        dir: req.model_path.clone().into(),
    };
    // SGLang answers {"success", "message"}, with 400 on failure.
    match apply_update(&state, update, req.policy_version).await {
        Ok(v) => json_response(json!({"success": true, "policy_version": v,
            "message": format!("loaded {} as version {v}", req.model_path)})),
        Err(e) => (
            e.status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"success": false, "message": e.message}).to_string(),
        )
            .into_response(),
    }
}

async fn load_lora(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_auth(&state, &headers)?;
    let req: LoraBody = parse(&body)?;
    let Some(path) = req.lora_path.clone() else {
        return Err(bad_request("`lora_path` is required", Some("lora_path")));
    };
    if req.lora_name.is_empty() || req.lora_name == state.model_id {
        return Err(bad_request(
            "`lora_name` must be a new, non-empty name",
            Some("lora_name"),
        ));
    }
    let update = WeightUpdate::Lora {
        name: req.lora_name.clone(),
        dir: path.into(),
    };
    let v = apply_update(&state, update, req.policy_version).await?;
    if let Ok(mut a) = state.adapters.write()
        && !a.contains(&req.lora_name)
    {
        a.push(req.lora_name.clone());
    }
    // vLLM answers with a plain-text line.
    Ok((
        StatusCode::OK,
        format!(
            "Success: LoRA adapter '{}' added successfully (version {v}).",
            req.lora_name
        ),
    )
        .into_response())
}

async fn unload_lora(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_auth(&state, &headers)?;
    let req: LoraBody = parse(&body)?;
    let removed = state.adapters.write().is_ok_and(|mut a| {
        let before = a.len();
        a.retain(|n| *n != req.lora_name);
        a.len() < before
    });
    if !removed {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no adapter named `{}`", req.lora_name),
            Some("lora_name"),
        ));
    }
    Ok((
        StatusCode::OK,
        format!(
            "Success: LoRA adapter '{}' removed successfully.",
            req.lora_name
        ),
    )
        .into_response())
}

async fn not_found() -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "no such route",
        None,
    )
}

/// Oversized bodies: axum's limit answers 413 with plain text; give the JSON error instead.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request body too large",
            None,
        )
        .into_response();
    }
    resp
}

fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/update_weights_from_disk", post(update_from_disk))
        .route("/v1/load_lora_adapter", post(load_lora))
        .route("/v1/unload_lora_adapter", post(unload_lora))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// A running server (tests, benchmarks): its address and a handle to stop it.
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl ServerHandle {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting, let in-flight requests finish, join.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

fn build(engine: Arc<dyn Engine>, cfg: ServerConfig) -> (Router, std::thread::JoinHandle<()>) {
    let (tx, rx) = std_mpsc::channel();
    let (max, wait) = (cfg.max_batch.max(1), cfg.batch_wait);
    let model_id = engine.info().name;
    let batch_engine = engine.clone();
    let batch_thread = std::thread::spawn(move || batcher(batch_engine, rx, max, wait));
    let max_body = cfg.max_body_bytes;
    let state = Arc::new(AppState {
        model_id,
        adapters: RwLock::new(Vec::new()),
        updates: AtomicU64::new(0),
        engine,
        cfg,
        queue: tx,
        created: now(),
    });
    (router(state, max_body), batch_thread)
}

fn runtime() -> Result<tokio::runtime::Runtime, ServerError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Start a server on a background thread (port 0 picks a free one).
pub fn spawn(engine: Arc<dyn Engine>, cfg: ServerConfig) -> Result<ServerHandle, ServerError> {
    let listener = std::net::TcpListener::bind(cfg.addr).map_err(|source| ServerError::Bind {
        addr: cfg.addr,
        source,
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || -> Result<(), ServerError> {
        let rt = runtime()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (app, _batcher) = build(engine, cfg);
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await?;
            Ok(())
        })
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Serve in the foreground until Ctrl-C / SIGTERM; `on_ready` gets the bound address.
pub fn serve_blocking(
    engine: Arc<dyn Engine>,
    cfg: ServerConfig,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.addr,
                source,
            })?;
        on_ready(listener.local_addr()?);
        let (app, _batcher) = build(engine, cfg);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let ctrl_c = tokio::signal::ctrl_c();
                #[cfg(unix)]
                {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("installing the SIGTERM handler");
                    tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
                }
                #[cfg(not(unix))]
                {
                    let _ = ctrl_c.await;
                }
                tracing::info!("shutting down: finishing in-flight requests");
            })
            .await?;
        Ok(())
    })
}
