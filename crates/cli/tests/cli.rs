//! The binary end to end, as scripts use it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reasonlab"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

#[test]
fn model_logprobs_prints_l_minus_1_values_matching_transformers() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-llama").join("reference.json")).unwrap(),
    )
    .unwrap();
    let ids: Vec<String> = reference["input_ids"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = bin()
        .args(["model", "logprobs", "--model"])
        .arg(fixture("tiny-llama"))
        .args(["--ids", &ids.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = got["logprobs"].as_array().unwrap();
    let expected = reference["logprobs"][1].as_array().unwrap();
    assert_eq!(got.len(), ids.len() - 1);
    for (a, b) in got.iter().zip(expected) {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4);
    }
}

#[test]
fn model_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let out = bin()
        .args(["model", "info", "--model"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model_type") && err.contains("gpt2") && err.contains("config.json"),
        "{err}"
    );
}

/// Runs `reasonlab verify ARGS` with `input` on stdin.
fn run_verify(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = bin()
        .arg("verify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The JSON lines of a successful `verify` run.
fn verify_lines(out: std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn verify_streams_in_order_and_survives_bad_lines() {
    let lines = verify_lines(run_verify(
        &[],
        b"{\"gold\": \"\\\\frac{1}{2}\", \"pred\": \"so \\\\boxed{0.5}\"}\nnot json\n{\"gold\": \"3\", \"pred\": \"\\\\boxed{4}\"}\n",
    ));
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["correct"], true);
    assert!(lines[1]["error"].as_str().unwrap().contains("line 2"));
    assert_eq!(lines[2]["correct"], false);
}

/// `verify --answer-format`: the rule that fired is in every output line, a pinned format uses
/// its rule alone, and an unknown format is refused with the list of known ones.
#[test]
fn verify_answer_formats() {
    let input = concat!(
        r#"{"gold": "5", "pred": "{\"reasoning\": \"2 + 3\", \"answer\": \"5\"}"}"#,
        "\n",
        r#"{"gold": "C", "pred": "The answer is (C)."}"#,
        "\n",
    )
    .as_bytes();
    let auto = verify_lines(run_verify(&["--answer-format", "auto"], input));
    assert_eq!(
        (&auto[0]["correct"], &auto[0]["method"]),
        (&true.into(), &"json".into())
    );
    assert_eq!(
        (&auto[1]["correct"], &auto[1]["method"]),
        (&true.into(), &"choice".into())
    );
    let boxed = verify_lines(run_verify(&["--answer-format", "boxed"], input));
    assert_eq!(boxed[0]["reason"], "no_answer");
    assert_eq!(boxed[0]["method"], serde_json::Value::Null);
    let bad = run_verify(&["--answer-format", "yaml"], input);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("yaml") && err.contains("answer_tag"), "{err}");
}

#[test]
fn generate_writes_one_line_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"a\", \"prompt\": \"Natalia sold\"}\n{\"id\": \"b\", \"problem\": \"2+2=\"}\n",
    )
    .unwrap();
    let out_path = dir.path().join("o.jsonl");
    let out = bin()
        .args(["generate", "--model"])
        .arg(fixture("tiny-qwen2"))
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(&out_path)
        .args(["--n", "3", "--max-new-tokens", "8", "--seed", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[5]["id"], "b");
    assert!(
        lines
            .iter()
            .all(|l| l["completion_tokens"].as_u64().unwrap() <= 8)
    );
}

#[test]
fn grpo_runs_checkpoints_and_resumes_exactly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let straight = tempfile::tempdir().unwrap();
    let write_config = |steps: usize, dir: &std::path::Path| {
        let cfg = format!(
            "model = {:?}\ndata = {:?}\nrewards = {:?}\nout = {:?}\nchat = true\nsave_every = 1\nlong_prompts = \"drop\"\n[grpo]\nsteps = {steps}\ngroup_size = 2\nprompts_per_step = 2\nmax_new_tokens = 6\n",
            root.join("fixtures/tiny-qwen2"),
            root.join("examples/data/gsm8k_train_32.jsonl"),
            root.join("examples/rewards.toml"),
            dir.join("run"),
        );
        let p = dir.join("grpo.toml");
        std::fs::write(&p, cfg).unwrap();
        p
    };
    let run = |cfg: &PathBuf, resume: bool| {
        let mut c = bin();
        c.args(["grpo", "--config"]).arg(cfg);
        if resume {
            c.arg("--resume");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&write_config(2, dir.path()), false);
    run(&write_config(3, dir.path()), true);
    run(&write_config(3, straight.path()), false);
    for f in [
        "reward_and_accuracy.png",
        "mean_response_length.png",
        "report.html",
    ] {
        let p = dir.path().join("run/plots").join(f);
        assert!(p.exists(), "{} missing", p.display());
    }
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        vec![1, 2, 3],
        "resume continues at step 3 without repeating"
    );
    // Weights, AdamW moments, step and data position come back: step 3 of the resumed run is
    // step 3 of an uninterrupted one.
    let last = |d: &std::path::Path| -> serde_json::Value {
        let m = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
        serde_json::from_str(m.lines().last().unwrap()).unwrap()
    };
    let (a, b) = (last(dir.path()), last(straight.path()));
    for key in [
        "loss",
        "reward_mean",
        "kl",
        "ratio_mean",
        "completion_len_mean",
    ] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{key}: {x} vs {y}");
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/checkpoints/step-3/trainer_state.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state["data_position"], 6, "{state}");
    assert!(
        dir.path()
            .join("run/checkpoints/step-3/optimizer.bpk")
            .exists()
    );
    assert!(
        dir.path()
            .join("run/checkpoints/step-3/model.safetensors")
            .exists()
    );
}

#[test]
fn model_convert_round_trips_sharded_bf16_to_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["model", "convert", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("model.safetensors").exists());
    assert!(dir.path().join("tokenizer.json").exists());
    let a = bin()
        .args(["model", "logprobs", "--ids", "1,2,3,4", "--model"])
        .arg(fixture("tiny-llama"))
        .output()
        .unwrap();
    let b = bin()
        .args(["model", "logprobs", "--ids", "1,2,3,4", "--model"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn curate_choices_parse_as_enums_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        concat!(
            r#"{"id":"a","url":"http://x/1","text":"one two three four five six seven"}"#,
            "\n",
            r#"{"id":"b","url":"http://x/2","text":"one two three four five six seven eight"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("kept.jsonl");
    let run = bin()
        .args(["curate", "dedup", "--keep", "longest", "--input"])
        .arg(&docs)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bad = bin()
        .args([
            "curate",
            "decontam",
            "--action",
            "drop-everything",
            "--input",
        ])
        .arg(&docs)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("drop-everything") && err.contains("drop_segment"),
        "{err}"
    );
}

#[test]
fn classifier_segment_flag_round_trips_through_train_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.txt");
    let mut lines = String::new();
    for _ in 0..20 {
        lines.push_str("__label__math 我们解这个方程\n__label__other 我们喜欢音乐\n");
    }
    std::fs::write(&train, lines).unwrap();
    let model = dir.path().join("m.bin");
    let run = bin()
        .args([
            "classifier",
            "train",
            "--segment",
            "jieba",
            "--epoch",
            "20",
            "--dim",
            "8",
        ])
        .args(["--min-count", "1", "--thread", "1", "--input"])
        .arg(&train)
        .arg("--output")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // New sentences share only the segmented words with the training lines.
    let mut child = bin()
        .args(["classifier", "predict", "--segment", "jieba"])
        .arg(&model)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("他们讨论方程\n他们讨论音乐\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "__label__math\n__label__other\n"
    );
}

/// A bench run that succeeded, and the JSON it wrote to `json`.
fn bench_json(out: &std::process::Output, json: &std::path::Path) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// `bench generate` times the workload it is given (`--prompts`, `--prompt-len`,
/// `--new-tokens`; 1 new token: the prefill alone) and writes it with our side as JSON; a
/// saved peer line is compared only when it ran the same workload (a line without one ran the
/// default: 16 prompts of 32 tokens, 128 new).
#[test]
fn bench_generate_times_a_workload_and_compares_a_peer_of_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ours.json");
    let out = bin()
        .args([
            "bench",
            "generate",
            "--prompts",
            "3",
            "--prompt-len",
            "40",
            "--new-tokens",
            "2",
            "--repeats",
            "1",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let ours = bench_json(&out, &json);
    assert_eq!(ours["new_tokens"], 6, "3 prompts × 2: {ours}");
    assert_eq!(ours["new_tokens_per_prompt"], 2);
    assert_eq!(
        (ours["prompts"].clone(), ours["prompt_len"].clone()),
        (3.into(), 40.into())
    );
    let peer = dir.path().join("peer.json");
    let run = |workload: &[&str], line: &str| {
        std::fs::write(&peer, line).unwrap();
        bin()
            .args(["bench", "generate", "--repeats", "1"])
            .args(workload)
            .arg("--peer-json")
            .arg(&peer)
            .output()
            .unwrap()
    };
    // A default-workload line against another workload is refused, naming both.
    let refused = run(
        &["--new-tokens", "1"],
        r#"{"generate_tokens_per_s": 100.0}"#,
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("16 prompts of 32 tokens with 128 new"),
        "{err}"
    );
    assert!(err.contains("this run 16 of 32 with 1"), "{err}");
    // The same workload is compared: the ratio printed.
    let line = r#"{"generate_tokens_per_s": 100.0, "prompts": 2, "prompt_len": 8, "new_tokens_per_prompt": 3}"#;
    let compared = run(
        &["--prompts", "2", "--prompt-len", "8", "--new-tokens", "3"],
        line,
    );
    assert!(
        compared.status.success(),
        "{}",
        String::from_utf8_lossy(&compared.stderr)
    );
    let printed = String::from_utf8_lossy(&compared.stdout);
    assert!(
        printed.contains("speed-up (generate_tokens_per_s)"),
        "{printed}"
    );
}

/// `bench train-step --prompt-tokens P` trains on each row's tokens after the first P only
/// (the loss of another set of targets), and says so when P leaves no target; `bench grpo`
/// refuses mixed precision on flex before building anything.
#[test]
fn bench_train_step_takes_a_prompt_outside_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let run = |prompt: &str| {
        let json = dir.path().join(format!("prompt-{prompt}.json"));
        let out = bin()
            .args(["bench", "train-step", "--batch", "2", "--seq", "16"])
            .args(["--repeats", "1", "--prompt-tokens", prompt, "--json"])
            .arg(&json)
            .output()
            .unwrap();
        (out, json)
    };
    let mut losses = Vec::new();
    for prompt in ["0", "8"] {
        let (out, json) = run(prompt);
        let ours = bench_json(&out, &json);
        assert_eq!(ours["prompt_tokens"].to_string(), prompt, "{ours}");
        losses.push(ours["loss"].as_f64().unwrap());
    }
    assert!(
        losses.iter().all(|l| l.is_finite()) && losses[0] != losses[1],
        "{losses:?}"
    );
    let (out, _) = run("16");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--prompt-tokens 16 leaves no target"), "{err}");
    for bench in ["grpo", "sft", "rm"] {
        let out = bin()
            .args(["bench", bench, "--mixed-precision", "f16"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("flex trains in f32"),
            "bench {bench}: {err}"
        );
    }
}

/// `bench sft` and `bench rm` train where `--backend`, `--shape`, `--mixed-precision` and
/// `--activation-checkpointing` say, their JSON says so, and the peer is given the same, and
/// the same warm-up step (which the timed epoch's steps do not count): a stand-in for its
/// Python records the arguments it runs the TRL script with.
#[test]
fn bench_sft_and_rm_report_where_and_how_they_trained() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let argv = dir.path().join("argv.txt");
    let peer = dir.path().join("python");
    let script = format!(
        "#!/bin/sh\necho \"$@\" > '{}'\necho '{{\"tokens_per_s\": 1.0}}'\n",
        argv.display()
    );
    std::fs::write(&peer, script).unwrap();
    std::fs::set_permissions(&peer, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (bench, extra) in [("sft", vec![]), ("rm", vec!["--objective", "process"])] {
        let json = dir.path().join(format!("{bench}.json"));
        let out = bin()
            .args(["bench", bench, "--examples", "4", "--batch", "2"])
            .args(&extra)
            .args(["--activation-checkpointing", "balanced", "--peer-python"])
            .arg(&peer)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        let ours = bench_json(&out, &json);
        let args = std::fs::read_to_string(&argv).unwrap();
        let flags = "--shape tiny --device cpu --precision f32 --gradient-checkpointing";
        assert!(
            args.contains(&format!("bench_trl_{bench}.py"))
                && args.contains(flags)
                && args.contains("--warmup-steps 1 "),
            "bench {bench}'s peer ran with {args}"
        );
        assert_eq!(ours["backend"], "flex", "{ours}");
        assert_eq!(ours["shape"], "tiny", "{ours}");
        assert_eq!(ours["mixed_precision"], "f32", "{ours}");
        assert_eq!(ours["activation_checkpointing"], "balanced", "{ours}");
        assert_eq!(ours["steps"], 2, "{ours}");
        assert!(ours["last_loss"].as_f64().unwrap().is_finite(), "{ours}");
    }
}

#[test]
fn rm_score_answers_every_line_in_order() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"id\": \"a\", \"prompt\": \"1 + 1 = \", \"completion\": \"2\"}\n",
            "not json\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"1 + 1?\"}, {\"role\": \"assistant\", \"content\": \"2\"}]}\n",
            "{\"prompt\": \"1 + 1 = \", \"completion\": \"2\"}\n",
        ),
    )
    .unwrap();
    let out = dir.path().join("new/scores.jsonl");
    let status = bin()
        .args(["rm", "score", "--model"])
        .arg(root.join("fixtures/tiny-qwen2-rm"))
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--batch-size", "2"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["id"], "a");
    assert!(
        lines[1]["error"].as_str().unwrap().contains("in.jsonl:2:"),
        "{}",
        lines[1]
    );
    assert!(lines[2]["score"].as_f64().unwrap().is_finite());
    // The same text scores the same whatever it was batched with: bit for bit where
    // reasonlab's kernels run, to float rounding where burn's gemm does (x86-64 without
    // AVX-512, whose summation order follows the batch's shape).
    let (a, b) = (
        lines[0]["score"].as_f64().unwrap(),
        lines[3]["score"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
}

/// `--backend` is one flag on every command that runs a model: an unknown name is refused with
/// the list, a backend this build lacks with the feature to rebuild with (before any output
/// is written), and flex names its device on stderr.
#[test]
fn every_model_command_takes_the_backend_flag() {
    let model = fixture("tiny-qwen2");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"1 + 1 =\"}\n").unwrap();
    let out = tmp.path().join("out.jsonl");
    let m = model.to_str().unwrap();
    let (p, o) = (prompts.to_str().unwrap(), out.to_str().unwrap());
    // The SFT example with its paths made absolute and its output in the temporary folder.
    let sft = tmp.path().join("sft.toml");
    let text = std::fs::read_to_string(examples.join("sft-tiny.toml"))
        .unwrap()
        .replace("\"../fixtures/tiny-qwen2\"", &format!("{m:?}"))
        .replace("\"data/", &format!("\"{}/data/", examples.display()))
        .replace(
            "\"../runs/sft-tiny\"",
            &format!("{:?}", tmp.path().join("sft")),
        );
    std::fs::write(&sft, text).unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["generate", "--model", m, "--prompts", p, "--out", o],
        vec!["model", "logprobs", "--model", m, "--ids", "1,2,3"],
        vec!["serve", "--model", m, "--port", "0"],
        vec!["rm", "score", "--model", m, "--input", p, "--out", o],
        vec!["sft", "--config", sft.to_str().unwrap()],
        vec!["bench", "generate", "--new-tokens", "1"],
        vec!["bench", "sft", "--examples", "2"],
        vec!["bench", "rm", "--examples", "2"],
        vec!["bench", "device"],
        vec!["devices"],
    ];
    for args in &commands {
        let run = bin()
            .args(args)
            .args(["--backend", "tpu"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains("expected flex, wgpu, vulkan or cuda"),
            "{args:?}: {err}"
        );
        let Some(missing) = reasonlab_model::BackendKind::ALL
            .into_iter()
            .find(|k| !k.compiled())
        else {
            panic!("every backend is compiled in; this test needs a build without one")
        };
        let run = bin()
            .args(args)
            .args(["--backend", missing.name()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(&format!("--features {missing}")),
            "{args:?}: {err}"
        );
    }
    assert!(!out.exists(), "a refused run wrote its output");
    assert!(
        !tmp.path().join("sft/checkpoints").exists(),
        "a refused SFT run trained"
    );
    let run = bin()
        .args([
            "model",
            "logprobs",
            "--model",
            m,
            "--ids",
            "1,2,3",
            "--backend",
            "flex",
        ])
        .output()
        .unwrap();
    assert!(run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.starts_with("device: flex (CPU, "), "{err}");
    // Reduced precision is for the GPU backends.
    let run = bin()
        .args([
            "generate",
            "--model",
            m,
            "--prompts",
            p,
            "--out",
            o,
            "--dtype",
            "bf16",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("flex computes in f32"),
        "{err}"
    );
    assert!(!out.exists());
    // So is mixed-precision training; the flag overrides the config's `mixed_precision`.
    let run = bin()
        .args(["sft", "--config", sft.to_str().unwrap()])
        .args(["--mixed-precision", "bf16"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("flex trains in f32"),
        "{err}"
    );
    assert!(!tmp.path().join("sft/checkpoints").exists());
}
