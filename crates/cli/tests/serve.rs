//! `reasonlab serve` on loopback: evaluation through HTTP equals evaluation in-process, 64
//! concurrent requests, and the 4xx errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use reasonlab_core::engine::{Engine, Message, Prompt, Request, Sampling};
use reasonlab_serve::client::{ClientConfig, OpenAiClient};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reasonlab"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `reasonlab serve` on a free port and wait for its "serving … on http://…" line.
fn serve(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = bin();
    cmd.args(["serve", "--port", "0", "--model"])
        .arg(root().join("fixtures/tiny-qwen2"))
        .args(extra)
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches("/v1")
        .to_string();
    Server { child, url }
}

/// A raw HTTP/1.1 request; returns (status, body).
fn http(url: &str, method: &str, path: &str, body: &str, headers: &[&str]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_string());
    }
    // Streamed responses: undo the chunked transfer encoding.
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    (status, out)
}

fn error_type(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    v["error"]["type"].as_str().unwrap().to_string()
}

#[test]
fn eval_through_http_equals_eval_in_process() {
    let server = serve(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("b.jsonl");
    std::fs::write(
        &bench,
        "{\"id\": \"a\", \"problem\": \"What is 2+2?\", \"answer\": \"4\"}\n\
         {\"id\": \"b\", \"problem\": \"Name a prime.\", \"answer\": \"7\"}\n\
         {\"id\": \"c\", \"problem\": \"1+1?\", \"answer\": \"2\"}\n",
    )
    .unwrap();
    let common = [
        "--n",
        "4",
        "--temperature",
        "1.0",
        "--top-p",
        "0.9",
        "--max-new-tokens",
        "12",
        "--seed",
        "11",
        "--template",
        "chat",
    ];
    let run = |source: &[&str], out: &str| {
        let o = bin()
            .args(["eval", "run", "--benchmark"])
            .arg(&bench)
            .args(source)
            .args(common)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(dir.path().join(out).join("completions.jsonl")).unwrap();
        let mut rows: Vec<(String, u64, String)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["id"].as_str().unwrap().to_string(),
                    v["sample"].as_u64().unwrap(),
                    v["completion"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let model = root().join("fixtures/tiny-qwen2").display().to_string();
    let local = run(&["--model", &model], "local");
    let remote = run(
        &[
            "--endpoint",
            &server.url,
            "--model-name",
            "tiny-qwen2",
            "--concurrency",
            "8",
        ],
        "http",
    );
    assert_eq!(local.len(), 12);
    assert_eq!(local, remote);
    // Not all identical: the seeds do differ per sample.
    assert!(local.iter().any(|r| r.2 != local[0].2));
}

#[test]
fn sixty_four_concurrent_requests_are_all_answered() {
    let server = serve(&["--max-batch", "64"], &[]);
    let mut cfg = ClientConfig::new(server.url.clone(), "tiny-qwen2");
    cfg.concurrency = 64;
    cfg.api_key_env = None;
    let client = OpenAiClient::new(cfg).unwrap();
    let requests: Vec<Request> = (0..64)
        .map(|i| Request {
            prompt: Prompt::Text(format!("Question {i}:")),
            n: 1,
            sampling: Sampling {
                temperature: 1.0,
                top_p: 1.0,
                max_new_tokens: 16,
                seed: i,
                ..Sampling::default()
            },
            logprobs: false,
        })
        .collect();
    let out = client.generate(&requests);
    assert_eq!(out.len(), 64);
    assert!(out.iter().all(|o| {
        let o = o.as_ref().unwrap();
        o.samples.len() == 1 && o.samples[0].completion_tokens > 0 && o.prompt_tokens > 0
    }));
}

#[test]
fn content_parts_developer_role_and_logprobs_cross_the_wire() {
    let server = serve(&[], &[]);
    // A chat message whose content is a list of text parts, as OpenAI's SDKs send it.
    let body = r#"{"model": "tiny-qwen2", "max_tokens": 4, "seed": 3, "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "1 + "}, {"type": "text", "text": "1?"}]}]}"#;
    let (status, text) = http(&server.url, "POST", "/v1/chat/completions", body, &[]);
    assert_eq!(status, 200, "{text}");
    let image = r#"{"model": "tiny-qwen2", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#;
    let (status, text) = http(&server.url, "POST", "/v1/chat/completions", image, &[]);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("image_url"), "{text}");
    // Log-probs asked for through the client come back per token, in both routes.
    let mut cfg = ClientConfig::new(server.url.clone(), "tiny-qwen2");
    cfg.api_key_env = None;
    let client = OpenAiClient::new(cfg).unwrap();
    for prompt in [
        Prompt::Text("Question 1:".into()),
        Prompt::Messages(vec![Message::user("Question 1:")]),
    ] {
        let req = Request {
            prompt,
            n: 1,
            sampling: Sampling {
                temperature: 1.0,
                top_p: 1.0,
                max_new_tokens: 6,
                seed: 5,
                ..Sampling::default()
            },
            logprobs: true,
        };
        let out = client.generate(&[req]).pop().unwrap().unwrap();
        let s = &out.samples[0];
        let lp = s.logprobs.as_ref().expect("log-probs");
        assert_eq!(lp.len(), s.completion_tokens);
        assert!(lp.iter().all(|t| t.logprob <= 0.0 && t.logprob.is_finite()));
    }
}

#[test]
fn bad_requests_get_the_right_4xx_with_a_json_error() {
    let server = serve(
        &[
            "--api-key-env",
            "REASONLAB_TEST_KEY",
            "--max-body-bytes",
            "2000",
        ],
        &[("REASONLAB_TEST_KEY", "sekret")],
    );
    let auth = "Authorization: Bearer sekret";
    let ok = r#"{"model": "tiny-qwen2", "prompt": "hi", "max_tokens": 4, "seed": 1}"#;
    let (status, body) = http(&server.url, "POST", "/v1/completions", ok, &[auth]);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let cases: [(&str, &str, &[&str], u16, &str); 7] = [
        ("/v1/completions", ok, &[], 401, "authentication_error"),
        (
            "/v1/completions",
            ok,
            &["Authorization: Bearer nope"],
            401,
            "authentication_error",
        ),
        (
            "/v1/completions",
            "{\"model\": ",
            &[auth],
            400,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            r#"{"model": "gpt-4", "prompt": "hi"}"#,
            &[auth],
            404,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model": "tiny-qwen2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}"#,
            &[auth],
            400,
            "invalid_request_error",
        ),
        (
            "/v1/completions",
            r#"{"model": "tiny-qwen2", "prompt": "hi", "max_tokens": 100000}"#,
            &[auth],
            400,
            "invalid_request_error",
        ),
        ("/v1/nothing", ok, &[auth], 404, "not_found_error"),
    ];
    for (path, body, headers, want, kind) in cases {
        let (status, text) = http(&server.url, "POST", path, body, headers);
        assert_eq!(status, want, "{path} {body}: {text}");
        assert_eq!(error_type(&text), kind, "{text}");
    }
    // A body over --max-body-bytes.
    let big = format!(
        r#"{{"model": "tiny-qwen2", "prompt": "{}"}}"#,
        "x".repeat(5000)
    );
    let (status, text) = http(&server.url, "POST", "/v1/completions", &big, &[auth]);
    assert_eq!(status, 413, "{text}");
    assert_eq!(error_type(&text), "invalid_request_error");
    // A prompt longer than the context: 400, not 500.
    let long = format!(
        r#"{{"model": "tiny-qwen2", "prompt": "{}", "max_tokens": 8}}"#,
        "word ".repeat(300)
    );
    let (status, text) = http(&server.url, "POST", "/v1/completions", &long, &[auth]);
    assert_eq!(status, 400, "{text}");
    // Streaming: SSE chunks then [DONE]; the text equals the non-streamed answer.
    let stream =
        r#"{"model": "tiny-qwen2", "prompt": "hi", "max_tokens": 4, "seed": 1, "stream": true}"#;
    let (status, text) = http(&server.url, "POST", "/v1/completions", stream, &[auth]);
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(streamed, v["choices"][0]["text"].as_str().unwrap());
    // A longer chat answer arrives in several deltas whose concatenation is the answer.
    let chat = |stream: bool| {
        format!(
            r#"{{"model": "tiny-qwen2", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 24, "seed": 5, "temperature": 0.8, "stream": {stream}}}"#
        )
    };
    let (status, whole) = http(
        &server.url,
        "POST",
        "/v1/chat/completions",
        &chat(false),
        &[auth],
    );
    assert_eq!(status, 200, "{whole}");
    let whole: serde_json::Value = serde_json::from_str(&whole).unwrap();
    let (status, text) = http(
        &server.url,
        "POST",
        "/v1/chat/completions",
        &chat(true),
        &[auth],
    );
    assert_eq!(status, 200, "{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|d| !d.is_empty())
        .collect();
    assert!(
        deltas.len() >= 4,
        "expected incremental deltas, got {deltas:?}"
    );
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        deltas.concat(),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let (status, models) = http(&server.url, "GET", "/v1/models", "", &[auth]);
    assert_eq!(status, 200);
    assert!(models.contains("\"tiny-qwen2\""), "{models}");
}
