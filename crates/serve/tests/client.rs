//! The client against a tiny HTTP server started by each test on 127.0.0.1 (std only).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, Message, Prompt, Request, Sample, Sampling,
};
use reasonlab_serve::client::{ClientConfig, NMode, OpenAiClient};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    auth: Option<String>,
    body: Value,
}

type Handler = dyn Fn(usize, &Seen) -> (u16, String, Option<Duration>) + Send + Sync;

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    max_in_flight: Arc<AtomicUsize>,
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        path,
        auth,
        body: serde_json::from_slice(&body).ok()?,
    })
}

/// Every connection on its own thread; `handler(call_number, request)` gives status, body and
/// an optional delay before answering.
fn serve(handler: Box<Handler>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let handler: Arc<Handler> = Arc::from(handler);
    let (seen2, max2) = (seen.clone(), max_in_flight.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (seen, handler, in_flight, max) = (
                seen2.clone(),
                handler.clone(),
                in_flight.clone(),
                max2.clone(),
            );
            std::thread::spawn(move || {
                let Some(req) = read_request(&mut stream) else {
                    return;
                };
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                let call = {
                    let mut s = seen.lock().unwrap();
                    s.push(req.clone());
                    s.len() - 1
                };
                let (status, body, delay) = handler(call, &req);
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let extra = if status == 429 {
                    "Retry-After: 0\r\n"
                } else {
                    ""
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Server {
        url,
        seen,
        max_in_flight,
    }
}

fn completion(text: &str, finish: &str, tokens: usize) -> String {
    json!({"choices": [{"index": 0, "text": text, "finish_reason": finish}],
           "usage": {"completion_tokens": tokens}})
    .to_string()
}

fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, "tiny");
    c.initial_backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(50);
    c.max_retries = 3;
    c.timeout = Duration::from_secs(10);
    // A variable cargo always sets for test binaries, so no `set_var` is needed.
    c.api_key_env = Some("CARGO_PKG_NAME".into());
    c
}

fn request(prompt: Prompt, n: usize) -> Request {
    Request {
        prompt,
        n,
        sampling: Sampling {
            temperature: 0.6,
            top_p: 0.95,
            top_k: None,
            max_new_tokens: 64,
            seed: 100,
            stop: vec!["\nQ:".into()],
            ..Sampling::default()
        },
        logprobs: false,
    }
}

/// The samples of every request, or the first request's error.
fn samples_of(
    client: &OpenAiClient,
    requests: &[Request],
) -> Result<Vec<Vec<Sample>>, EngineError> {
    client
        .generate(requests)
        .into_iter()
        .map(|r| r.map(|o| o.samples))
        .collect()
}

#[test]
fn text_prompts_use_completions_with_every_setting() {
    let server = serve(Box::new(|call, _| {
        (
            200,
            completion(&format!("\\boxed{{{call}}}"), "length", 7),
            None,
        )
    }));
    let client = OpenAiClient::new(config(&format!("{}/v1/", server.url))).unwrap();
    let out = samples_of(&client, &[request(Prompt::Text("1+1=".into()), 3)]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), 3);
    assert!(
        out[0]
            .iter()
            .all(|o| o.finish_reason == FinishReason::Length)
    );
    assert!(out[0].iter().all(|o| o.completion_tokens == 7));
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "split mode: one HTTP request per sample");
    let mut seeds: Vec<u64> = seen
        .iter()
        .map(|s| s.body["seed"].as_u64().unwrap())
        .collect();
    seeds.sort();
    assert_eq!(seeds, vec![100, 101, 102]);
    let b = &seen[0].body;
    assert_eq!(seen[0].path, "/v1/completions");
    assert_eq!(b["model"], "tiny");
    assert_eq!(b["prompt"], "1+1=");
    assert_eq!(b["n"], 1);
    assert_eq!(b["max_tokens"], 64);
    assert!((b["temperature"].as_f64().unwrap() - 0.6).abs() < 1e-6);
    assert!((b["top_p"].as_f64().unwrap() - 0.95).abs() < 1e-6);
    assert_eq!(b["stop"], json!(["\nQ:"]));
    assert!(b.get("top_k").is_none());
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer reasonlab-serve"));
}

#[test]
fn messages_use_chat_completions_and_keep_reasoning() {
    let server = serve(Box::new(|_, _| {
        let body = json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "\\boxed{4}", "reasoning_content": "2+2"}}],
            "usage": {"completion_tokens": 9}});
        (200, body.to_string(), None)
    }));
    let mut cfg = config(&server.url);
    cfg.api_key_env = Some("REASONLAB_SURELY_UNSET_KEY".into());
    let client = OpenAiClient::new(cfg).unwrap();
    let msgs = vec![Message::user("2+2?")];
    let out = samples_of(&client, &[request(Prompt::Messages(msgs), 1)]).unwrap();
    assert_eq!(out[0][0].text, "<think>\n2+2\n</think>\n\n\\boxed{4}");
    assert_eq!(out[0][0].completion_tokens, 9);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].body["messages"],
        json!([{"role": "user", "content": "2+2?"}])
    );
    assert_eq!(seen[0].auth, None);
}

#[test]
fn retries_500_and_429_then_succeeds() {
    let server = serve(Box::new(|call, _| match call {
        0 => (500, "{\"error\": \"overloaded\"}".into(), None),
        1 => (429, "{\"error\": \"slow down\"}".into(), None),
        _ => (200, completion("ok", "stop", 1), None),
    }));
    let client = OpenAiClient::new(config(&server.url)).unwrap();
    let out = samples_of(&client, &[request(Prompt::Text("x".into()), 1)]).unwrap();
    assert_eq!(out[0][0].text, "ok");
    assert_eq!(server.seen.lock().unwrap().len(), 3);
}

#[test]
fn client_errors_fail_fast_with_the_body() {
    let server = serve(Box::new(|_, _| {
        (
            400,
            "{\"error\": {\"message\": \"max_tokens too big\"}}".into(),
            None,
        )
    }));
    let client = OpenAiClient::new(config(&server.url)).unwrap();
    let err = samples_of(&client, &[request(Prompt::Text("x".into()), 1)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("max_tokens too big"),
        "{err}"
    );
    assert_eq!(server.seen.lock().unwrap().len(), 1, "no retry on 400");
}

#[test]
fn persistent_5xx_gives_up_after_max_retries() {
    let server = serve(Box::new(|_, _| (503, "{}".into(), None)));
    let client = OpenAiClient::new(config(&server.url)).unwrap();
    let err = samples_of(&client, &[request(Prompt::Text("x".into()), 1)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after 4 attempts"), "{err}");
    assert_eq!(server.seen.lock().unwrap().len(), 4);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = OpenAiClient::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
    let err = samples_of(&client, &[request(Prompt::Text("x".into()), 1)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("gave up after 4 attempts"), "{err}");
}

#[test]
fn timeout_is_retried() {
    let server = serve(Box::new(|call, _| {
        let delay = (call == 0).then(|| Duration::from_millis(1500));
        (200, completion("late", "stop", 1), delay)
    }));
    let mut cfg = config(&server.url);
    cfg.timeout = Duration::from_millis(300);
    let client = OpenAiClient::new(cfg).unwrap();
    let out = samples_of(&client, &[request(Prompt::Text("x".into()), 1)]).unwrap();
    assert_eq!(out[0][0].text, "late");
    assert_eq!(server.seen.lock().unwrap().len(), 2);
}

#[test]
fn bounded_concurrency_answers_everything_in_order() {
    let server = serve(Box::new(|_, req| {
        let p = req.body["prompt"].as_str().unwrap_or("").to_string();
        (
            200,
            completion(&p, "stop", 1),
            Some(Duration::from_millis(40)),
        )
    }));
    let mut cfg = config(&server.url);
    cfg.concurrency = 6;
    let client = OpenAiClient::new(cfg).unwrap();
    let requests: Vec<Request> = (0..32)
        .map(|i| request(Prompt::Text(format!("p{i}")), 2))
        .collect();
    let out = samples_of(&client, &requests).unwrap();
    assert_eq!(out.len(), 32);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.len(), 2);
        assert!(o.iter().all(|g| g.text == format!("p{i}")));
    }
    let max = server.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=6).contains(&max), "max in flight {max}");
    assert_eq!(server.seen.lock().unwrap().len(), 64);
}

#[test]
fn native_n_requests_missing_choices_again() {
    // A server that returns at most two choices per request.
    let server = serve(Box::new(|_, req| {
        let n = req.body["n"].as_u64().unwrap() as usize;
        let choices: Vec<Value> = (0..n.min(2))
            .map(|i| json!({"index": i, "text": "ab".repeat(i + 1), "finish_reason": "stop"}))
            .collect();
        let tokens = 3 * choices.len();
        (
            200,
            json!({"choices": choices, "usage": {"completion_tokens": tokens}}).to_string(),
            None,
        )
    }));
    let mut cfg = config(&server.url);
    cfg.n_mode = NMode::Native;
    let client = OpenAiClient::new(cfg).unwrap();
    let out = samples_of(&client, &[request(Prompt::Text("x".into()), 3)]).unwrap();
    assert_eq!(out[0].len(), 3);
    // 6 tokens over texts of 2 and 4 chars: 2 and 4.
    assert_eq!(out[0][0].completion_tokens, 2);
    assert_eq!(out[0][1].completion_tokens, 4);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let mut asks: Vec<(u64, u64)> = seen
        .iter()
        .map(|s| {
            (
                s.body["n"].as_u64().unwrap(),
                s.body["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    asks.sort();
    assert_eq!(asks, vec![(1, 102), (3, 100)]);
}

#[test]
fn describe_hashes_endpoint_and_model() {
    let a = OpenAiClient::new(ClientConfig::new("http://h:1/v1", "m")).unwrap();
    let b = OpenAiClient::new(ClientConfig::new("http://h:1", "m")).unwrap();
    let c = OpenAiClient::new(ClientConfig::new("http://h:1", "m2")).unwrap();
    assert_eq!(a.info().hash, b.info().hash);
    assert_ne!(a.info().hash, c.info().hash);
    assert!(OpenAiClient::new(ClientConfig::new("h:1", "m")).is_err());
}

#[test]
fn run_eval_through_http_end_to_end() {
    // "Return N" → \boxed{N} for even seeds, \boxed{0} for odd ones.
    let server = serve(Box::new(|_, req| {
        let p = req.body["prompt"].as_str().unwrap_or("");
        let n = p.trim_start_matches("Return ");
        let seed = req.body["seed"].as_u64().unwrap();
        let text = if seed % 2 == 0 {
            format!("\\boxed{{{n}}}")
        } else {
            "\\boxed{0}".into()
        };
        (200, completion(&text, "stop", 3), None)
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.jsonl");
    let rows: String = (1..=4)
        .map(|i| {
            format!("{{\"id\": \"q{i}\", \"problem\": \"Return {i}\", \"answer\": \"{i}\"}}\n")
        })
        .collect();
    std::fs::write(&path, rows).unwrap();
    let bench = reasonlab_eval::Benchmark::parse(path.to_str().unwrap()).unwrap();
    let cfg =
        reasonlab_eval::EvalConfig::new(vec![bench], reasonlab_eval::PromptTemplate::Plain, 4);
    let client = OpenAiClient::new(config(&server.url)).unwrap();
    let out = dir.path().join("run");
    let run = reasonlab_eval::run_eval(&client, &cfg, &out).unwrap();
    // Split mode: seeds s, s+1, s+2, s+3 per problem → exactly half are right.
    assert_eq!(
        run.benchmarks[0].scores.metrics[&reasonlab_eval::MetricKey::PassAt(1)].mean,
        0.5
    );
    assert_eq!(server.seen.lock().unwrap().len(), 16);
    assert_eq!(run.model.location, server.url);
    // Rerun: everything reused, no HTTP traffic.
    reasonlab_eval::run_eval(&client, &cfg, &out).unwrap();
    assert_eq!(server.seen.lock().unwrap().len(), 16);
}

#[test]
fn a_final_assistant_message_is_sent_to_be_continued() {
    let reply = json!({"choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "42"}}], "usage": {"completion_tokens": 1}})
    .to_string();
    let server = serve(Box::new(move |_, _| (200, reply.clone(), None)));
    let client = OpenAiClient::new(config(&format!("{}/v1/", server.url))).unwrap();
    let plain = Prompt::Messages(vec![Message::user("6 * 7?")]);
    let partial = Prompt::Messages(vec![
        Message::user("6 * 7?"),
        Message::assistant("```python\nprint(6 * 7)\n```\n```output\n42\n```\n"),
    ]);
    samples_of(&client, &[request(plain, 1), request(partial, 1)]).unwrap();
    let seen = server.seen.lock().unwrap();
    let by_len = |n: usize| {
        seen.iter()
            .find(|s| s.body["messages"].as_array().map(Vec::len) == Some(n))
            .unwrap()
            .body
            .clone()
    };
    let (first, second) = (by_len(1), by_len(2));
    assert!(first.get("continue_final_message").is_none());
    assert_eq!(second["continue_final_message"], true);
    assert_eq!(second["add_generation_prompt"], false);
}
