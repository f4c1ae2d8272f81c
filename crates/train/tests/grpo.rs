//! GRPO trainer on the tiny Qwen2 fixture: micro-batching (gradient accumulation) gives the
//! same update as the whole batch, for every aggregation; dynamic sampling, the overlong mask
//! and soft penalty, reference reset, the divergence stop, and what rewards see.

use std::path::PathBuf;

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, ModelInfo, Output, Request, Sample as Completion,
};
use reasonlab_model::Model;
use reasonlab_model::tensor::Device;
use reasonlab_reward::{NotApplicable, Reward, Sample, WeightedSum};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::grpo::{
    GrpoError, GrpoSettings, GrpoTrainer, LossAgg, Overlong, Preset, Task, soft_overlong_penalty,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2")
}

fn weights(m: &Model) -> Vec<f32> {
    m.hf_tensors()
        .unwrap()
        .into_values()
        .flat_map(|(_, v)| v)
        .collect()
}

#[test]
fn micro_batches_give_the_whole_batch_update() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    // A custom reward that varies between completions whatever the random model writes (a
    // byte checksum), so the advantages are never all zero.
    struct Checksum;
    impl Reward for Checksum {
        fn name(&self) -> &str {
            "checksum"
        }
        fn score(&self, sample: &Sample<'_>) -> Option<f64> {
            Some((sample.completion.bytes().map(u64::from).sum::<u64>() % 7) as f64 / 7.0)
        }
    }
    let rewards = WeightedSum::from_parts(
        vec![("checksum".into(), 1.0, Box::new(Checksum))],
        NotApplicable::Skip,
    );
    let tasks: Vec<Task> = (0..3)
        .map(|i| {
            Task::new(
                i.to_string(),
                format!("Question {i}: what is {i} + {i}?"),
                Some((2 * i).to_string()),
            )
        })
        .collect();
    for agg in [LossAgg::SequenceMean, LossAgg::TokenMean, LossAgg::Constant] {
        let run = |micro: usize| {
            let mut s = GrpoSettings::preset(Preset::Deepseekmath);
            s.group_size = 4;
            s.prompts_per_step = 3;
            s.max_new_tokens = 12;
            s.loss.aggregation = agg;
            s.loss.beta = 0.04;
            s.mu = 2;
            s.optim.lr = 1e-2;
            s.optim.eps = 1.0; // proportional first steps: no sign flips from float noise
            s.micro_batch_size = micro;
            let device = Device::flex().autodiff();
            let policy = Model::load(&fixture(), &device).unwrap();
            let mut t = GrpoTrainer::new(s, policy, &tok, &rewards).unwrap();
            let (m, _) = t.step(&tasks).unwrap();
            (m.loss, m.kl, weights(t.policy()), m.entropy)
        };
        let (l0, kl0, w0, e0) = run(0);
        let (l1, kl1, w1, e1) = run(5);
        // Entropy of a 512-token distribution: in (0, ln 512].
        assert!(
            e0 > 0.0 && e0 <= (512f32).ln() + 1e-4,
            "{agg:?}: entropy {e0}"
        );
        assert!((e0 - e1).abs() < 1e-4, "{agg:?}: entropy {e0} vs {e1}");
        assert!((l0 - l1).abs() < 1e-5, "{agg:?}: loss {l0} vs {l1}");
        assert!((kl0 - kl1).abs() < 1e-5, "{agg:?}: kl {kl0} vs {kl1}");
        let worst = w0
            .iter()
            .zip(&w1)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{agg:?}: weights differ by {worst}");
        let base = weights(&Model::load(&fixture(), &Device::flex()).unwrap());
        assert!(w0 != base, "{agg:?}: the step changed nothing");
    }
}

/// A reward that varies between completions whatever the random model writes (a byte
/// checksum), flat (always 0.5) for tasks whose gold is "flat", NaN for gold "nan", and 1 for
/// gold "one".
struct Scripted;
impl Reward for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        Some(match sample.gold {
            Some("flat") => 0.5,
            Some("nan") => f64::NAN,
            Some("one") => 1.0,
            _ => (sample.completion.bytes().map(u64::from).sum::<u64>() % 7) as f64 / 7.0,
        })
    }
}

fn scripted() -> WeightedSum {
    WeightedSum::from_parts(
        vec![("scripted".into(), 1.0, Box::new(Scripted))],
        NotApplicable::Skip,
    )
}

fn task(i: usize, gold: &str) -> Task {
    Task::new(
        format!("{gold}-{i}"),
        format!("Question {i}: what is {i} + {i}?"),
        Some(gold.into()),
    )
}

/// A server stand-in: sample `j` of every request is `texts[j % len]`.
struct ScriptedEngine(Vec<(&'static str, FinishReason)>);

impl Engine for ScriptedEngine {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "scripted".into(),
            hash: "0".into(),
            location: "memory".into(),
        }
    }
    fn generate_streaming(
        &self,
        requests: &[Request],
        _: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        requests
            .iter()
            .map(|r| {
                let samples = (0..r.n)
                    .map(|j| {
                        let (text, finish_reason) = self.0[j % self.0.len()];
                        Completion {
                            text: text.into(),
                            finish_reason,
                            completion_tokens: 0,
                            logprobs: None,
                            token_ids: None,
                            policy_version: None,
                        }
                    })
                    .collect();
                Ok(Output {
                    prompt_tokens: 0,
                    samples,
                })
            })
            .collect()
    }
}

fn settings() -> GrpoSettings {
    let mut s = GrpoSettings::preset(Preset::Deepseekmath);
    s.group_size = 4;
    s.prompts_per_step = 2;
    s.max_new_tokens = 8;
    s.loss.beta = 0.0;
    s.optim.lr = 1e-2;
    s
}

fn trainer<'a>(s: GrpoSettings, tok: &'a Tokenizer, rewards: &'a WeightedSum) -> GrpoTrainer<'a> {
    let policy = Model::load(&fixture(), &Device::flex().autodiff()).unwrap();
    GrpoTrainer::new(s, policy, tok, rewards).unwrap()
}

#[test]
fn dynamic_sampling_refills_flat_groups_with_varying_ones() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = scripted();
    // Flat and varying tasks alternate: the first draw has one of each.
    let tasks: Vec<Task> = (0..8)
        .map(|i| task(i, if i % 2 == 0 { "flat" } else { "varies" }))
        .collect();
    let mut s = settings();
    s.dynamic_sampling_rounds = 3;
    let mut t = trainer(s.clone(), &tok, &rewards);
    let (m, rollouts) = t.step(&tasks).unwrap();
    // Round 0 keeps "varies-1" and drops "flat-0"; round 1 draws flat-2 (dropped) … so the
    // batch is two varying groups and half the groups seen were flat.
    let kept: std::collections::BTreeSet<&str> = rollouts.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|t| t.starts_with("varies")), "{kept:?}");
    assert!(
        (m.zero_variance_groups - 0.5).abs() < 1e-9,
        "{}",
        m.zero_variance_groups
    );
    assert_eq!(t.state().data_position, 4);
    // Without it, the flat group trains (with zero advantage).
    s.dynamic_sampling_rounds = 0;
    let mut t = trainer(s, &tok, &rewards);
    let (_, rollouts) = t.step(&tasks).unwrap();
    assert!(rollouts.iter().any(|r| r.task.starts_with("flat")));
    assert!(
        rollouts
            .iter()
            .filter(|r| r.task.starts_with("flat"))
            .all(|r| r.advantage == 0.0)
    );
}

#[test]
fn overlong_mask_keeps_truncated_completions_out_of_the_loss() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = scripted();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "varies")).collect();
    // A random model almost never ends within 2 tokens: every completion is truncated.
    let mut s = settings();
    s.max_new_tokens = 2;
    s.overlong = Overlong::Mask;
    let mut t = trainer(s.clone(), &tok, &rewards);
    let before = weights(t.policy());
    let (m, _) = t.step(&tasks).unwrap();
    assert_eq!(
        m.truncated, 1.0,
        "the fixture stopped early; the test needs truncation"
    );
    assert_eq!(
        weights(t.policy()),
        before,
        "masked rows still moved the policy"
    );
    // Kept, the same rows train.
    s.overlong = Overlong::Keep;
    let mut t = trainer(s, &tok, &rewards);
    t.step(&tasks).unwrap();
    assert_ne!(weights(t.policy()), before);
}

#[test]
fn soft_overlong_penalty_follows_dapo() {
    // DAPO eq. 13 with L_max = 20, L_cache = 4: 0 up to 16 tokens, then down to −1 at 20.
    assert_eq!(soft_overlong_penalty(16, 20, 4), 0.0);
    assert_eq!(soft_overlong_penalty(18, 20, 4), -0.5);
    assert_eq!(soft_overlong_penalty(20, 20, 4), -1.0);
    assert_eq!(soft_overlong_penalty(20, 20, 0), 0.0);
    // In a step: a constant reward of 1 minus the penalty of each completion's length.
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = scripted();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "one")).collect();
    let mut s = settings();
    s.max_new_tokens = 4;
    s.overlong = Overlong::SoftPenalty { cache: 4 };
    let mut t = trainer(s, &tok, &rewards);
    let (m, rollouts) = t.step(&tasks).unwrap();
    assert_eq!(
        m.truncated, 1.0,
        "the fixture stopped early; the test needs truncation"
    );
    assert!(rollouts.iter().all(|r| r.reward == 0.0), "{rollouts:?}");
}

#[test]
fn reference_reset_makes_the_kl_restart_from_zero() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = scripted();
    let tasks: Vec<Task> = (0..4).map(|i| task(i, "varies")).collect();
    let kl_of_second_step = |reset: usize| {
        let mut s = settings();
        s.loss.beta = 0.04;
        s.ref_reset_every = reset;
        let mut t = trainer(s, &tok, &rewards);
        let (first, _) = t.step(&tasks).unwrap();
        assert!(
            first.kl.abs() < 1e-6,
            "the first step starts at the reference"
        );
        t.step(&tasks).unwrap().0.kl
    };
    let kept = kl_of_second_step(0);
    let reset = kl_of_second_step(1);
    assert!(
        kept > 1e-6,
        "the policy did not move away from the reference: {kept}"
    );
    assert!(
        reset.abs() < 1e-6,
        "after a reset the reference is the policy: {reset}"
    );
}

#[test]
fn non_finite_losses_skip_steps_then_stop_the_run() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = scripted();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "nan")).collect();
    let mut s = settings();
    s.max_bad_steps = 2;
    let mut t = trainer(s, &tok, &rewards);
    let before = weights(t.policy());
    let (m, _) = t.step(&tasks).unwrap();
    assert!(m.skipped);
    assert_eq!(
        weights(t.policy()),
        before,
        "a skipped step changed the policy"
    );
    match t.step(&tasks) {
        Err(GrpoError::Diverged(2)) => {}
        other => panic!(
            "expected a divergence stop, got {:?}",
            other.map(|(m, _)| m)
        ),
    }
}

#[test]
fn rewards_see_extra_columns_and_accuracy_is_found_by_kind() {
    use reasonlab_reward::RewardConfig;
    // The accuracy reward renamed: the metric still finds it.
    let cfg = RewardConfig::from_toml(
        "[[reward]]\nkind = \"accuracy\"\nname = \"correct\"\nweight = 1.0\nfallback = \"last_number\"\n",
    )
    .unwrap();
    let rewards = cfg.build();
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "4")).collect();
    let mut t = trainer(settings(), &tok, &rewards);
    let (m, _) = t.step(&tasks).unwrap();
    assert!(m.accuracy.is_finite(), "accuracy not found by kind");
    assert_eq!(m.rewards[0].0, "correct");
    // A custom reward reads a column of the row.
    struct Column;
    impl Reward for Column {
        fn name(&self) -> &str {
            "column"
        }
        fn score(&self, sample: &Sample<'_>) -> Option<f64> {
            sample.extra?.get("difficulty")?.as_f64()
        }
    }
    let rewards = WeightedSum::from_parts(
        vec![("column".into(), 1.0, Box::new(Column))],
        NotApplicable::Skip,
    );
    let mut tasks: Vec<Task> = (0..2).map(|i| task(i, "x")).collect();
    for t in &mut tasks {
        t.extra.insert("difficulty".into(), serde_json::json!(0.25));
    }
    let mut t = trainer(settings(), &tok, &rewards);
    let (m, _) = t.step(&tasks).unwrap();
    assert!((m.reward_mean - 0.25).abs() < 1e-12, "{}", m.reward_mean);
    assert!(m.accuracy.is_nan(), "no accuracy reward, no accuracy");
}

#[test]
fn rollouts_can_come_from_an_engine() {
    let cfg = reasonlab_reward::RewardConfig::from_toml(
        "[[reward]]\nkind = \"accuracy\"\nweight = 1.0\n",
    )
    .unwrap();
    let rewards = cfg.build();
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "4")).collect();
    // A server stand-in: even samples answer 4, odd ones ramble until cut off.
    let engine = ScriptedEngine(vec![
        ("\\boxed{4}", FinishReason::Stop),
        ("hmm hmm hmm", FinishReason::Length),
    ]);
    let mut t = trainer(settings(), &tok, &rewards).with_rollout_engine(&engine);
    let before = weights(t.policy());
    let (m, rollouts) = t.step(&tasks).unwrap();
    assert_eq!(rollouts.len(), 8);
    for r in &rollouts {
        let right = r.completion == "\\boxed{4}";
        assert_eq!(r.reward, if right { 1.0 } else { 0.0 }, "{r:?}");
    }
    assert_eq!(m.accuracy, 0.5);
    assert_eq!(m.truncated, 0.5);
    assert_ne!(
        weights(t.policy()),
        before,
        "the engine's rollouts trained the policy"
    );
}

#[test]
fn a_process_reward_lowers_only_the_tokens_up_to_the_penalised_step() {
    use reasonlab_reward::{ProcessReward, StepScore};
    /// Steps are lines; the second step of the first completion it sees is wrong (score 0),
    /// every other step is right (score 1).
    struct FirstSecondStepWrong(std::sync::atomic::AtomicUsize);
    impl ProcessReward for FirstSecondStepWrong {
        fn name(&self) -> &str {
            "prm"
        }
        fn score_steps(&self, sample: &Sample<'_>) -> Vec<StepScore> {
            let call = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut end = 0;
            sample
                .completion
                .split_inclusive('\n')
                .enumerate()
                .map(|(j, line)| {
                    end += line.len();
                    let wrong = call == 0 && j == 1;
                    StepScore {
                        end: end - usize::from(line.ends_with('\n')),
                        score: if wrong { 0.0 } else { 1.0 },
                    }
                })
                .collect()
        }
    }
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    // No outcome rewards: pure process supervision.
    let rewards = WeightedSum::from_parts(Vec::new(), NotApplicable::Skip);
    let prm = FirstSecondStepWrong(Default::default());
    // Every sample is the same three-step solution.
    let engine = ScriptedEngine(vec![("add two\nthen three\nso five", FinishReason::Stop)]);
    let mut s = settings();
    s.prompts_per_step = 1;
    s.max_new_tokens = 64;
    let mut t = trainer(s, &tok, &rewards)
        .with_rollout_engine(&engine)
        .with_process_reward(&prm);
    let (_, rollouts) = t.step(&[task(0, "5")]).unwrap();
    let adv: Vec<&Vec<f64>> = rollouts
        .iter()
        .map(|r| r.token_advantages.as_ref().expect("per-token advantages"))
        .collect();
    let (penalised, clean) = (adv[0], adv[1]);
    assert_eq!(penalised.len(), clean.len());
    // The tokens of "so five" (after the second step's end) see only the third step's reward,
    // the same in both completions; every token up to the second step's end is lower.
    let ids = tok.encode("add two\nthen three\nso five", false).unwrap();
    let second_end = (1..=ids.len())
        .find(|&t| tok.decode(&ids[..t], true).unwrap().len() >= "add two\nthen three".len())
        .unwrap()
        - 1;
    for k in 0..penalised.len() {
        if k <= second_end {
            assert!(
                penalised[k] < clean[k] - 1e-6,
                "token {k}: {} vs {}",
                penalised[k],
                clean[k]
            );
        } else {
            assert!(
                (penalised[k] - clean[k]).abs() < 1e-9,
                "token {k}: {} vs {}",
                penalised[k],
                clean[k]
            );
        }
    }
    assert!(
        second_end + 1 < penalised.len(),
        "the third step has tokens"
    );
}

/// Writes a python block first; once the interpreter's output is in the context, boxes it.
struct ToolUser;

impl Engine for ToolUser {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "tool-user".into(),
            hash: "0".into(),
            location: "memory".into(),
        }
    }
    fn generate_streaming(
        &self,
        requests: &[Request],
        _: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        requests
            .iter()
            .map(|r| {
                let reasonlab_core::engine::Prompt::Text(p) = &r.prompt else {
                    panic!("text prompts")
                };
                let text = if p.contains("```output\n4\n```") {
                    " so \\boxed{4}"
                } else {
                    "```python\nprint(2 + 2)\n```\n"
                };
                Ok(Output {
                    prompt_tokens: 0,
                    samples: (0..r.n)
                        .map(|_| Completion {
                            text: text.into(),
                            finish_reason: FinishReason::Stop,
                            completion_tokens: 3,
                            logprobs: None,
                            token_ids: None,
                            policy_version: None,
                        })
                        .collect(),
                })
            })
            .collect()
    }
}

#[test]
fn tool_integrated_rollouts_run_code_and_score_its_output() {
    use reasonlab_sandbox::tools::{ToolConfig, ToolFormat};
    let cfg = reasonlab_reward::RewardConfig::from_toml(
        "[[reward]]\nkind = \"accuracy\"\nweight = 1.0\n",
    )
    .unwrap();
    let rewards = cfg.build();
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "4")).collect();
    let limits = reasonlab_sandbox::Limits {
        preload: vec![],
        ..Default::default()
    };
    let sandbox = reasonlab_sandbox::Sandbox::new(
        "python3".as_ref(),
        limits,
        reasonlab_sandbox::Isolation::Required,
        2,
    )
    .unwrap_or_else(|e| panic!("THE SANDBOX TESTS CANNOT RUN ON THIS MACHINE: {e}"));
    let engine = ToolUser;
    let mut t = trainer(settings(), &tok, &rewards)
        .with_rollout_engine(&engine)
        .with_tools(sandbox, ToolConfig::new(ToolFormat::Tora));
    let (m, rollouts) = t.step(&tasks).unwrap();
    for r in &rollouts {
        assert_eq!(
            r.completion,
            "```python\nprint(2 + 2)\n```\n```output\n4\n```\n so \\boxed{4}"
        );
    }
    assert_eq!(m.tool_calls, Some(1.0));
    assert_eq!(m.accuracy, 1.0);
}

/// The policy's own sampling in batches of one rollout and prefills of one token gives the
/// rollouts, and so the update, of one batch of all eight; a limit of 0 is refused.
#[test]
fn the_policys_rollout_batching_changes_no_rollout() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = scripted();
    let tasks: Vec<Task> = (0..2).map(|i| task(i, "varies")).collect();
    let whole = settings();
    assert_eq!(whole.rollout_max_batch, 256);
    let mut narrow = whole.clone();
    narrow.rollout_max_batch = 1;
    narrow.rollout_prefill_tokens = 1;
    let run = |s: GrpoSettings| {
        let mut t = trainer(s, &tok, &rewards);
        let (_, rollouts) = t.step(&tasks).unwrap();
        let completions: Vec<String> = rollouts.into_iter().map(|r| r.completion).collect();
        (completions, weights(t.policy()))
    };
    let (a, wa) = run(whole.clone());
    let (b, wb) = run(narrow);
    assert_eq!(a.len(), 8);
    assert_eq!(a, b);
    let drift = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(drift < 1e-6, "{drift}");
    for zero in [
        GrpoSettings {
            rollout_max_batch: 0,
            ..whole.clone()
        },
        GrpoSettings {
            rollout_prefill_tokens: 0,
            ..whole.clone()
        },
    ] {
        let policy = Model::load(&fixture(), &Device::flex().autodiff()).unwrap();
        let err = GrpoTrainer::new(zero, policy, &tok, &rewards)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("must be ≥ 1"), "{err}");
    }
}
