//! `reasonlab sft`, `pretrain`, `sample` and `distill` end to end, with a teacher served by the
//! test itself on 127.0.0.1 (std only).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reasonlab"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sft_example_runs_as_written_and_lowers_held_out_loss() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped example, with `out` pointed into the temp dir.
    let text = std::fs::read_to_string(root().join("examples/sft-tiny.toml")).unwrap();
    let out = dir.path().join("sft-tiny");
    let text = text.replace(
        "out = \"../runs/sft-tiny\"",
        &format!("out = {:?}", out.display().to_string()),
    );
    let cfg = root().join("examples").join(".sft-tiny-test.toml");
    std::fs::write(&cfg, text).unwrap();
    let stdout = run_ok(bin().args(["sft", "--config"]).arg(&cfg));
    std::fs::remove_file(&cfg).ok();
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let before = summary["held_out_loss_before"].as_f64().unwrap();
    let after = summary["held_out_loss_after"].as_f64().unwrap();
    assert!(after < before - 0.5, "held-out loss {before} → {after}");
    let metrics = lines(&out.join("metrics.jsonl"));
    assert!(metrics.len() >= 10);
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["step"].as_u64().unwrap(), i as u64 + 1);
        assert!(m["loss"].as_f64().unwrap().is_finite());
    }
    assert!(out.join("plots/report.html").exists());
    // The final checkpoint is a loadable HF model.
    let last = summary["model"].as_str().unwrap();
    run_ok(bin().args(["model", "info", "--model", last]));
}

#[test]
fn pretrain_reports_realised_mixture_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut math = String::new();
    for i in 0..40 {
        if i == 2 {
            math.push_str("{not json\n");
        }
        math.push_str(&format!(
            "{{\"text\": \"Lemma {i}. If x + {i} = {}, then x = 1.\"}}\n",
            i + 1
        ));
    }
    std::fs::write(d.join("math.jsonl"), math).unwrap();
    // Plain-text sources are one document per file.
    let mut web = Vec::new();
    for i in 0..10 {
        let name = format!("web{i}.txt");
        std::fs::write(d.join(&name), format!("Day {i}: the market was busy.")).unwrap();
        web.push(name);
    }
    let cfg = format!(
        r#"model = {model:?}
out = {out:?}
preset = "deepseekmath"
save_every = 2
[train]
steps = 4
seq_len = 32
batch_size = 2
[[source]]
name = "math"
paths = ["math.jsonl"]
[[source]]
name = "natural_language"
paths = {web:?}
"#,
        model = root().join("fixtures/tiny-qwen2").display().to_string(),
        out = d.join("run").display().to_string(),
    );
    std::fs::write(d.join("pretrain.toml"), cfg).unwrap();
    let stdout = run_ok(
        bin()
            .args(["pretrain", "--config"])
            .arg(d.join("pretrain.toml")),
    );
    assert!(stdout.contains("math"), "{stdout}");
    let metrics = lines(&d.join("run/metrics.jsonl"));
    assert_eq!(metrics.len(), 4);
    let p = &metrics[3]["proportions"];
    // 0.56 : 0.10 renormalised is 0.848 : 0.152.
    let share = p["math"].as_f64().unwrap();
    assert!((share - 0.848).abs() < 0.1, "{p}");
    // --strict stops at the malformed line, naming file and line.
    std::fs::remove_dir_all(d.join("run")).unwrap();
    let out = bin()
        .args(["pretrain", "--strict", "--config"])
        .arg(d.join("pretrain.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("math.jsonl:3"),
        "{err}"
    );
    // Resume after the run is complete adds no step.
    std::fs::remove_dir_all(d.join("run")).ok();
    run_ok(
        bin()
            .args(["pretrain", "--config"])
            .arg(d.join("pretrain.toml")),
    );
    run_ok(
        bin()
            .args(["pretrain", "--resume", "--config"])
            .arg(d.join("pretrain.toml")),
    );
    assert_eq!(lines(&d.join("run/metrics.jsonl")).len(), 4);
}

/// An OpenAI-compatible teacher on loopback. Its answer to a problem is `\boxed{<gold>}` for
/// problems whose id ends in an even digit and a wrong one otherwise; the problem whose text
/// contains `poison` gets HTTP 500 every time and `garbage` gets a non-JSON body.
struct Teacher {
    url: String,
    calls: Arc<AtomicUsize>,
}

fn teacher(delay: Duration) -> Teacher {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let calls = c2.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    let h = h.trim_end().to_ascii_lowercase();
                    if h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let prompt = req["messages"][0]["content"]
                    .as_str()
                    .or(req["prompt"].as_str())
                    .unwrap_or("")
                    .to_string();
                let (status, text) = if prompt.contains("poison") {
                    (500, "{\"error\": {\"message\": \"boom\"}}".to_string())
                } else if prompt.contains("garbage") {
                    (200, "<html>not json".to_string())
                } else {
                    // "What is N + N?" → 2N
                    let n: i64 = prompt
                        .split_whitespace()
                        .nth(2)
                        .and_then(|w| w.parse().ok())
                        .unwrap_or(0);
                    let answer = if n % 2 == 0 { 2 * n } else { 2 * n + 1 };
                    let content = format!("<think>{n}+{n}</think> \\boxed{{{answer}}}");
                    (
                        200,
                        serde_json::json!({
                            "id": "x", "object": "chat.completion", "model": req["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "text": content,
                                         "message": {"role": "assistant", "content": content}}],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
                        })
                        .to_string(),
                    )
                };
                let reason = if status == 200 {
                    "OK"
                } else {
                    "Internal Server Error"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    Teacher { url, calls }
}

fn problems(dir: &Path, n: usize, bad: bool) -> PathBuf {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "{{\"id\": \"p{i:03}\", \"problem\": \"What is {i} + {i}?\", \"answer\": \"{}\"}}\n",
            2 * i
        ));
    }
    if bad {
        s.push_str("{\"id\": \"poisoned\", \"problem\": \"poison\", \"answer\": \"1\"}\n");
        s.push_str("{\"id\": \"garbled\", \"problem\": \"garbage\", \"answer\": \"1\"}\n");
    }
    let p = dir.join("problems.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn distill_config(dir: &Path, url: &str) -> PathBuf {
    let cfg = format!(
        r#"student = {student:?}
data = "problems.jsonl"
out = "run"
template = "chat"
k = 2
chunk_size = 4
[teacher]
endpoint = {url:?}
model_name = "teacher"
api_key_env = "REASONLAB_TEST_NO_KEY"
concurrency = 4
max_retries = 1
timeout_s = 20
[sampling]
max_new_tokens = 64
temperature = 0.6
[filter]
keep = "correct"
dedup = true
[sft]
epochs = 1
batch_size = 4
[sft.encode]
max_len = 128
"#,
        student = root().join("fixtures/tiny-qwen2").display().to_string(),
    );
    let p = dir.join("distill.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn trace_ids(path: &Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in lines(path) {
        *m.entry(v["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn distill_killed_mid_run_then_rerun_has_no_duplicate_and_no_missing_id() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    problems(dir.path(), n, false);
    let t = teacher(Duration::from_millis(30));
    let cfg = distill_config(dir.path(), &t.url);
    let traces = dir.path().join("run/traces.jsonl");
    let ledger = dir.path().join("run/traces.jsonl.ledger.jsonl");
    let mut child = bin()
        .args(["distill", "--traces-only", "--config"])
        .arg(&cfg)
        .spawn()
        .unwrap();
    // Kill it once a few problems are recorded.
    let start = std::time::Instant::now();
    loop {
        let done = std::fs::read_to_string(&ledger)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if done >= 8 || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&ledger).unwrap().lines().count();
    assert!(partial < n, "the run finished before it was killed");
    // A crash can also leave a torn line and records the ledger does not confirm.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&traces)
        .unwrap();
    write!(f, "{{\"id\": \"p039\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is 39 + 39?\"}}]}}\n{{\"id\": \"p0").unwrap();
    drop(f);
    let stdout = run_ok(
        bin()
            .args(["distill", "--traces-only", "--config"])
            .arg(&cfg),
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        summary["repaired_records"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    assert_eq!(summary["failed"], 0);
    // Every even problem kept exactly its 1 distinct correct trace (dedup), odd ones nothing.
    let ids = trace_ids(&traces);
    for i in 0..n {
        let id = format!("p{i:03}");
        let want = usize::from(i % 2 == 0);
        assert_eq!(ids.get(&id).copied().unwrap_or(0), want, "{id}");
    }
    let ledger_ids: Vec<String> = lines(&ledger)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = ledger_ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n);
    assert_eq!(ledger_ids.len(), n, "a problem was recorded twice");
    // Records carry provenance.
    let first = &lines(&traces)[0];
    assert_eq!(first["provenance"]["model"]["name"], "teacher");
    assert_eq!(first["messages"][1]["role"], "assistant");
}

#[test]
fn a_failing_teacher_is_recorded_not_fatal_and_the_student_trains() {
    let dir = tempfile::tempdir().unwrap();
    problems(dir.path(), 6, true);
    let t = teacher(Duration::ZERO);
    let cfg = distill_config(dir.path(), &t.url);
    let out = bin()
        .args(["distill", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Traces are kept, failures listed, and training refused until they are retried.
    assert!(!out.status.success());
    assert!(err.contains("2 problems failed"), "{err}");
    let ledger = lines(&dir.path().join("run/traces.jsonl.ledger.jsonl"));
    let failed: Vec<&str> = ledger
        .iter()
        .filter(|v| v["status"] == "failed")
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 2, "{ledger:?}");
    assert!(failed.contains(&"poisoned") && failed.contains(&"garbled"));
    assert!(t.calls.load(Ordering::SeqCst) > 6 * 2, "500s are retried");
    // Dropping the bad problems, the rerun samples nothing new and trains the student.
    problems(dir.path(), 6, false);
    let before = t.calls.load(Ordering::SeqCst);
    let stdout = run_ok(bin().args(["distill", "--config"]).arg(&cfg));
    assert_eq!(
        t.calls.load(Ordering::SeqCst),
        before,
        "done problems were re-sampled"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["traces"]["already_done"], 6);
    let metrics = lines(&dir.path().join("run/metrics.jsonl"));
    assert!(!metrics.is_empty() && metrics[0]["loss"].as_f64().unwrap().is_finite());
}

#[test]
fn sample_keeps_only_correct_completions_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let data = problems(dir.path(), 6, false);
    let t = teacher(Duration::ZERO);
    let out = dir.path().join("samples.jsonl");
    let stdout = run_ok(
        bin()
            .args(["sample", "--data"])
            .arg(&data)
            .args(["--endpoint", &t.url, "--model-name", "m", "--k", "3"])
            .args([
                "--template",
                "chat",
                "--api-key-env",
                "REASONLAB_TEST_NO_KEY",
            ])
            .arg("--out")
            .arg(&out),
    );
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["generated"], 18);
    // 3 even problems × 3 identical correct samples, deduplicated to 1 each.
    assert_eq!(s["kept"], 3);
    assert_eq!(s["dropped_incorrect"], 9);
    assert_eq!(s["dropped_duplicate"], 6);
    for r in lines(&out) {
        assert_eq!(r["provenance"]["scores"][0][1], 1.0);
        assert!(
            r["provenance"]["sampling"]["temperature"]
                .as_f64()
                .is_some()
        );
    }
}

#[test]
fn sft_and_sample_read_parquet_like_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "model = {:?}\ndata = {:?}\nout = {:?}\n[sft]\nepochs = 1\nbatch_size = 4\n[sft.encode]\nmax_len = 256\n",
        root().join("fixtures/tiny-qwen2").display().to_string(),
        root()
            .join("fixtures/data/sft_chat.parquet")
            .display()
            .to_string(),
        dir.path().join("run").display().to_string(),
    );
    std::fs::write(dir.path().join("sft.toml"), cfg).unwrap();
    let stdout = run_ok(
        bin()
            .args(["sft", "--config"])
            .arg(dir.path().join("sft.toml")),
    );
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["train"]["kept"], 8, "{s}");
    // A Parquet problem set through `sample` (local model, keep all).
    let out = dir.path().join("s.jsonl");
    let stdout = run_ok(
        bin()
            .args(["sample", "--data"])
            .arg(root().join("fixtures/data/problems.parquet"))
            .arg("--model")
            .arg(root().join("fixtures/tiny-qwen2"))
            .args([
                "--k",
                "1",
                "--keep",
                "all",
                "--keep-truncated",
                "--limit",
                "4",
            ])
            .args(["--max-new-tokens", "8", "--template", "r1", "--out"])
            .arg(&out),
    );
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["done"], 4, "{s}");
    assert_eq!(lines(&out)[0]["answer"], "45");
}
