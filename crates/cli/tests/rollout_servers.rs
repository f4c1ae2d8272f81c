//! `reasonlab grpo` sampling on two `reasonlab serve` processes over loopback, weights pushed
//! every step: one server is killed mid-run and the run goes on on the other and reports it;
//! restarted, it rejoins with the current weights; every sample carries the policy version
//! that drew it and the servers' log-probs stay the trainer's.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port free right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed when dropped (a failing test leaves none behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server process on `port`, once it answers.
fn serve(port: u16) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reasonlab"))
        .args(["serve", "--model"])
        .arg(repo().join("fixtures/tiny-qwen2"))
        .args(["--served-model-name", "tiny", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("reasonlab serve on {port} ended: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server {port} never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait until `done()` holds, the run still going.
fn wait_for(run: &mut Child, what: &str, done: &dyn Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        if let Some(status) = run.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn grpo_on_two_servers_survives_a_killed_server_and_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a = serve(pa);
    let b = serve(pb);
    let data = dir.path().join("train.jsonl");
    let rows: String = (1..=8)
        .map(|i| {
            format!(
                "{{\"problem\": \"What is {i} + {i}?\", \"answer\": {}}}\n",
                2 * i
            )
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let out = dir.path().join("run");
    let config = dir.path().join("grpo.toml");
    std::fs::write(
        &config,
        format!(
            "model = {model:?}\ndata = {data:?}\nrewards = {rewards:?}\nout = {out:?}\n\
             preset = \"deepseekmath\"\n\
             [rollout]\nendpoints = [\"http://127.0.0.1:{pa}\", \"http://127.0.0.1:{pb}\"]\n\
             model_name = \"tiny\"\nsync = \"full\"\nsync_every = 1\n\
             [grpo]\nsteps = 100\ngroup_size = 2\nprompts_per_step = 4\nmax_new_tokens = 6\n\
             optim = {{ lr = 1e-3 }}\n",
            model = repo().join("fixtures/tiny-qwen2"),
            rewards = repo().join("examples/rewards.toml"),
        ),
    )
    .unwrap();
    let mut run = Killed(
        Command::new(env!("CARGO_BIN_EXE_reasonlab"))
            .args(["grpo", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics = out.join("metrics.jsonl");
    let events = out.join("rollout_events.jsonl");
    wait_for(&mut run.0, "step 3", &|| lines(&metrics).len() >= 3);
    drop(b);
    wait_for(&mut run.0, "the fall was reported", &|| {
        lines(&events).iter().any(|e| e["event"] == "down")
    });
    let b = serve(pb);
    let status = run.0.wait().unwrap();
    drop((a, b));
    assert!(status.success(), "{status}");

    let events = lines(&events);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["down", "rejoined"], "{events:?}");
    assert_eq!(events[0]["url"], format!("http://127.0.0.1:{pb}"));
    // It rejoined with the weights of the step it came back at.
    assert_eq!(
        events[1]["version"].as_u64().unwrap() + 1,
        events[1]["step"].as_u64().unwrap()
    );
    let metrics = lines(&metrics);
    assert_eq!(metrics.len(), 100);
    for m in &metrics {
        let step = m["step"].as_u64().unwrap();
        assert_eq!(m["policy_version"].as_u64(), Some(step - 1), "{m}");
        let diff = m["sampler_logprob_diff"].as_f64().unwrap();
        assert!(diff < 1e-4, "step {step}: mean |Δ log p| = {diff}");
    }
    for c in lines(&out.join("completions.jsonl")) {
        assert_eq!(
            c["policy_version"].as_u64().unwrap() + 1,
            c["step"].as_u64().unwrap()
        );
    }
}
