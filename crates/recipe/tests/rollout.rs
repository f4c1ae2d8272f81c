//! GRPO rollouts on `reasonlab serve` servers over loopback: the pool answers as one local
//! engine would and spreads the load; full-checkpoint and LoRA weight sync keep the servers'
//! log-probs equal to the trainer's, with the right policy version on every sample; a server
//! killed mid-run is left out and reported, and rejoins with the current weights; the reward
//! curve matches the in-process run within sampling noise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reasonlab_core::engine::{Engine, Prompt, Request, Sampling, WeightUpdate};
use reasonlab_generate::LocalEngine;
use reasonlab_model::tensor::Device;
use reasonlab_model::{BackendKind, LoraConfig, Model, ModelConfig, SaveDtype};
use reasonlab_recipe::engines::RolloutSpec;
use reasonlab_reward::{NotApplicable, Reward, Sample, WeightedSum};
use reasonlab_serve::pool::{PoolEvent, RolloutPool};
use reasonlab_serve::{ServerConfig, ServerHandle, spawn};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::grpo::{
    GrpoSettings, GrpoTrainer, Preset, StepMetrics, SyncMode, Task, WeightSync,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2")
}

fn serve_at(addr: SocketAddr) -> ServerHandle {
    let engine = LocalEngine::load(&fixture(), BackendKind::Flex)
        .unwrap()
        .with_name("tiny");
    spawn(
        Arc::new(engine),
        ServerConfig {
            addr,
            ..ServerConfig::default()
        },
    )
    .unwrap()
}

fn serve() -> ServerHandle {
    serve_at(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn pool(urls: &[String]) -> RolloutPool {
    RolloutSpec::new(urls.to_vec(), "tiny").pool().unwrap()
}

fn requests() -> Vec<Request> {
    (0..6u64)
        .map(|i| Request {
            prompt: Prompt::Text(format!("Question {i}: what is {i} + {i}?")),
            n: 2,
            sampling: Sampling {
                temperature: 1.0,
                top_p: 1.0,
                max_new_tokens: 8,
                seed: 100 + i,
                ..Sampling::default()
            },
            logprobs: true,
        })
        .collect()
}

/// The pool's answers equal `want`'s (text, token ids, log-probs) and carry `version`.
fn same_answers(pool: &RolloutPool, want: &dyn Engine, version: u64) {
    let reqs = requests();
    for (got, want) in pool.generate(&reqs).into_iter().zip(want.generate(&reqs)) {
        let (got, want) = (got.unwrap(), want.unwrap());
        assert_eq!(got.samples.len(), 2);
        for (g, w) in got.samples.iter().zip(&want.samples) {
            assert_eq!(g.text, w.text);
            assert_eq!(g.token_ids, w.token_ids);
            assert!(g.token_ids.as_ref().is_some_and(|t| !t.is_empty()));
            let (gl, wl) = (g.logprobs.as_ref().unwrap(), w.logprobs.as_ref().unwrap());
            assert_eq!(gl.len(), wl.len());
            for (a, b) in gl.iter().zip(wl) {
                assert!((a.logprob - b.logprob).abs() < 1e-5, "{a:?} vs {b:?}");
            }
            assert_eq!(g.policy_version, Some(version));
        }
    }
}

#[test]
fn the_pool_answers_as_one_engine_spreads_and_survives_a_dead_server() {
    let (a, b) = (serve(), serve());
    let b_addr = b.addr;
    let pool = pool(&[a.url(), b.url()]);
    let local = LocalEngine::load(&fixture(), BackendKind::Flex).unwrap();
    same_answers(&pool, &local, 0);
    let status = pool.status();
    assert!(status.iter().all(|s| s.up && s.requests == 3), "{status:?}");

    // New weights (another random model of the same shape) pushed to both servers.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v7");
    let config = ModelConfig::from_dir(&fixture()).unwrap();
    Model::random(config, 7, &Device::flex())
        .save(&dir, SaveDtype::F32)
        .unwrap();
    pool.update_weights(&WeightUpdate::Full { dir: dir.clone() }, 7)
        .unwrap();
    let tokenizer = Tokenizer::from_dir(&fixture()).unwrap();
    let info = local.info();
    let new = LocalEngine::new(Model::load(&dir, &Device::flex()).unwrap(), tokenizer, info);
    same_answers(&pool, &new, 7);

    // One server dies: the other answers everything, and the fall is reported.
    b.shutdown().unwrap();
    same_answers(&pool, &new, 7);
    let events = pool.take_events();
    assert!(
        matches!(&events[..], [PoolEvent::Down { url, .. }] if url.ends_with(&b_addr.port().to_string())),
        "{events:?}"
    );
    assert!(!pool.status()[1].up);

    // It comes back with the fixture's weights; the pool sends it version 7 before using it.
    let b = serve_at(b_addr);
    let before = pool.status()[1].requests;
    same_answers(&pool, &new, 7);
    let events = pool.take_events();
    assert!(
        matches!(&events[..], [PoolEvent::Rejoined { version: 7, .. }]),
        "{events:?}"
    );
    let status = pool.status();
    assert!(status[1].up && status[1].requests > before, "{status:?}");

    // Restarted between two calls, unseen: it answers with version 0, so the pool sends it
    // version 7 again and draws its share again.
    b.shutdown().unwrap();
    let _b = serve_at(b_addr);
    same_answers(&pool, &new, 7);
    let events = pool.take_events();
    assert!(
        matches!(&events[..], [PoolEvent::Resynced { version: 7, .. }]),
        "{events:?}"
    );
}

/// A reward that varies whatever the random model writes (a byte checksum).
struct Checksum;
impl Reward for Checksum {
    fn name(&self) -> &str {
        "checksum"
    }
    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        Some((sample.completion.bytes().map(u64::from).sum::<u64>() % 7) as f64 / 7.0)
    }
}

fn rewards() -> WeightedSum {
    WeightedSum::from_parts(
        vec![("checksum".into(), 1.0, Box::new(Checksum))],
        NotApplicable::Skip,
    )
}

fn tasks() -> Vec<Task> {
    (0..4)
        .map(|i| {
            Task::new(
                i.to_string(),
                format!("Question {i}: what is {i} + {i}?"),
                Some((2 * i).to_string()),
            )
        })
        .collect()
}

fn settings(lora: bool) -> GrpoSettings {
    let mut s = GrpoSettings::preset(Preset::Dapo);
    s.dynamic_sampling_rounds = 0;
    s.group_size = 4;
    s.prompts_per_step = 4;
    s.max_new_tokens = 10;
    s.optim.lr = if lora { 5e-2 } else { 1e-2 };
    s.optim.eps = 1.0;
    s.seed = 3;
    if lora {
        s.lora = Some(LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        });
    }
    s
}

/// `steps` GRPO steps; `between(step)` runs after each.
fn train(
    s: GrpoSettings,
    engine: Option<(&RolloutPool, WeightSync)>,
    steps: usize,
    between: &mut dyn FnMut(usize, &StepMetrics),
) -> Vec<(StepMetrics, Vec<Option<u64>>)> {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = rewards();
    let policy = Model::load(&fixture(), &Device::flex().autodiff()).unwrap();
    let mut t = GrpoTrainer::new(s, policy, &tok, &rewards).unwrap();
    if let Some((pool, sync)) = engine {
        t = t.with_rollout_engine(pool).with_weight_sync(sync);
    }
    let tasks = tasks();
    (1..=steps)
        .map(|step| {
            let (m, rollouts) = t.step(&tasks).unwrap();
            between(step, &m);
            (m, rollouts.iter().map(|r| r.policy_version).collect())
        })
        .collect()
}

fn sync(mode: SyncMode, dir: &std::path::Path) -> WeightSync {
    WeightSync {
        mode,
        every: 1,
        dir: dir.to_path_buf(),
        adapter_name: "policy".into(),
    }
}

#[test]
fn full_sync_on_two_servers_keeps_grpo_on_policy_through_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (serve(), serve());
    let b_addr = b.addr;
    let pool = pool(&[a.url(), b.url()]);
    let mut b = Some(b);
    let mut restarted = None;
    let mut events = Vec::new();
    let synced = train(
        settings(false),
        Some((&pool, sync(SyncMode::Full, tmp.path()))),
        6,
        &mut |step, _| {
            events.extend(pool.take_events());
            match step {
                2 => b.take().unwrap().shutdown().unwrap(),
                3 => restarted = Some(serve_at(b_addr)),
                _ => {}
            }
        },
    );
    assert!(
        matches!(
            &events[..],
            [
                PoolEvent::Down { .. },
                PoolEvent::Rejoined { version: 3, .. }
            ]
        ),
        "{events:?}"
    );
    for (i, (m, versions)) in synced.iter().enumerate() {
        // Every sample of step i + 1 was drawn by version i (i updates applied).
        assert!(
            versions.iter().all(|&v| v == Some(i as u64)),
            "step {}: {versions:?}",
            i + 1
        );
        assert_eq!(m.policy_version, Some(i as u64));
        assert_eq!(m.staleness, Some(0.0));
        // The servers hold the trainer's weights: their log-probs are the trainer's.
        let diff = m.sampler_logprob_diff.unwrap();
        assert!(diff < 1e-4, "step {}: mean |Δ log p| = {diff}", i + 1);
        assert_eq!(m.is_clipped, Some(0.0));
    }
    // Only the newest pushed version stays on disk.
    let kept: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept, vec!["v5".to_string()]);
    let status = pool.status();
    assert!(status.iter().all(|s| s.up && s.requests > 0), "{status:?}");

    // The same run in process: the reward curve agrees within sampling noise (the samples
    // differ only in their random streams).
    let local = train(settings(false), None, 6, &mut |_, _| {});
    let mean = |run: &[(StepMetrics, Vec<Option<u64>>)]| {
        run.iter().map(|(m, _)| m.reward_mean).sum::<f64>() / run.len() as f64
    };
    let samples = 16.0 * 6.0;
    let se = |run: &[(StepMetrics, Vec<Option<u64>>)]| {
        let var = run.iter().map(|(m, _)| m.reward_std.powi(2)).sum::<f64>() / run.len() as f64;
        (var / samples).sqrt()
    };
    let (ms, ml) = (mean(&synced), mean(&local));
    let noise = (se(&synced).powi(2) + se(&local).powi(2)).sqrt();
    assert!(
        (ms - ml).abs() < 4.0 * noise,
        "mean reward {ms:.3} on the servers, {ml:.3} in process (noise {noise:.3})"
    );
    assert!(local.iter().all(|(m, _)| m.sampler_logprob_diff.is_none()));

    // Without sync the servers keep version 0: the samples grow stale and the trainer's
    // log-probs drift away from the sampler's.
    let (c, _) = (serve(), ());
    let stale_pool = self::pool(&[c.url()]);
    let stale = train(
        settings(false),
        Some((&stale_pool, sync(SyncMode::None, tmp.path()))),
        4,
        &mut |_, _| {},
    );
    let (last, versions) = stale.last().unwrap();
    assert!(versions.iter().all(|&v| v == Some(0)));
    assert_eq!(last.staleness, Some(3.0));
    let drift = last.sampler_logprob_diff.unwrap();
    assert!(drift > 1e-3, "stale servers drift by only {drift}");
    drop(restarted);
}

#[test]
fn lora_sync_serves_the_trainers_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let pool = pool(&[server.url()]);
    let run = train(
        settings(true),
        Some((&pool, sync(SyncMode::Lora, tmp.path()))),
        3,
        &mut |_, _| {},
    );
    for (i, (m, versions)) in run.iter().enumerate() {
        assert!(
            versions.iter().all(|&v| v == Some(i as u64)),
            "{versions:?}"
        );
        let diff = m.sampler_logprob_diff.unwrap();
        assert!(diff < 1e-4, "step {}: mean |Δ log p| = {diff}", i + 1);
    }
    // The newest adapter in PEFT's layout, served under its versioned name; the older ones
    // were unloaded.
    let v2 = tmp.path().join("v2");
    assert!(v2.join("adapter_config.json").exists());
    assert!(v2.join("adapter_model.safetensors").exists());
    let models: serde_json::Value = http_get(&format!("{}/v1/models", server.url())).unwrap();
    let names: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tiny", "policy-v2"]);
    // Without sync the adapter's updates never reach the server.
    let stale_server = serve();
    let stale_pool = self::pool(&[stale_server.url()]);
    let stale = train(
        settings(true),
        Some((&stale_pool, sync(SyncMode::None, tmp.path()))),
        3,
        &mut |_, _| {},
    );
    let drift = stale.last().unwrap().0.sampler_logprob_diff.unwrap();
    assert!(drift > 1e-3, "stale adapter drifts by only {drift}");
}

/// `GET url` as JSON, over a bare TCP request (the tests need no HTTP client of their own).
fn http_get(url: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

#[test]
fn a_weight_push_the_server_cannot_load_fails_and_changes_nothing() {
    let server = serve();
    let pool = pool(&[server.url()]);
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let err = pool
        .update_weights(&WeightUpdate::Full { dir: missing }, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere") && err.contains("400"), "{err}");
    // A refused push is the trainer's problem, not the server's: it stays in rotation, with
    // its old weights.
    assert!(pool.status()[0].up);
    let local = LocalEngine::load(&fixture(), BackendKind::Flex).unwrap();
    same_answers(&pool, &local, 0);
    // An adapter for a model the server was not started from cannot be attached either.
    let err = pool
        .update_weights(
            &WeightUpdate::Lora {
                name: "policy-v1".into(),
                dir: tmp.path().to_path_buf(),
            },
            1,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapter_config.json"), "{err}");
}

#[test]
fn overlap_draws_the_next_step_ahead_one_version_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let server = serve();
    let pool = pool(&[server.url()]);
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = rewards();
    let tasks: Vec<Task> = (0..6)
        .map(|i| {
            Task::new(
                i.to_string(),
                format!("Question {i}: what is {i} + {i}?"),
                None,
            )
        })
        .collect();
    let run = |overlap: bool| {
        let policy = Model::load(&fixture(), &Device::flex().autodiff()).unwrap();
        let mut t = GrpoTrainer::new(settings(false), policy, &tok, &rewards)
            .unwrap()
            .with_rollout_engine(&pool)
            .with_weight_sync(sync(SyncMode::Full, tmp.path()));
        if overlap {
            t = t.with_overlap();
        }
        (1..=4)
            .map(|_| {
                let (m, rollouts) = t.step(&tasks).unwrap();
                let ids: Vec<String> = rollouts.iter().map(|r| r.task.clone()).collect();
                let versions: Vec<Option<u64>> =
                    rollouts.iter().map(|r| r.policy_version).collect();
                (m, ids, versions)
            })
            .collect::<Vec<_>>()
    };
    let ahead = run(true);
    let plain = run(false);
    for (i, ((m, ids, versions), (_, plain_ids, _))) in ahead.iter().zip(&plain).enumerate() {
        // The same prompts in the same order as without overlap.
        assert_eq!(ids, plain_ids, "step {}", i + 1);
        // Step 1 samples with the initial weights; every later step was drawn during the
        // previous update, with the weights pushed before it: one version behind.
        let want = i.saturating_sub(1) as u64;
        assert!(versions.iter().all(|&v| v == Some(want)), "{versions:?}");
        assert_eq!(m.staleness, Some(if i == 0 { 0.0 } else { 1.0 }));
        let diff = m.sampler_logprob_diff.unwrap();
        if i == 0 {
            assert!(diff < 1e-4, "{diff}");
        } else {
            // The trainer's log-probs moved on by one update: the correction has work to do.
            assert!(diff > 1e-4, "step {}: {diff}", i + 1);
        }
    }
}
