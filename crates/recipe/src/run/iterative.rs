//! Iterative RL (DeepSeekMath §4.2): GRPO in rounds, the reward model retrained between them
//! on the policy's own samples.
//!
//! ```toml
//! [[reward_model]]                 # exactly one: the model the rounds retrain
//! kind = "outcome"
//! model = "runs/orm/checkpoints/step-60"
//! [iterative]
//! rounds = 3                       # grpo.steps are split evenly over the rounds
//! prompts = 64                     # training prompts sampled after a round (0: all)
//! samples_per_prompt = 4
//! replay = 0.1                     # share of the earlier rounds' data replayed
//! label_n = 4                      # process models: Math-Shepherd completions per step
//! [iterative.rm]                   # RmSettings of the reward-model update
//! epochs = 1
//! ```
//!
//! After every round but the last: the policy (its newest checkpoint, through the local
//! engine) samples `samples_per_prompt` completions of the next `prompts` training prompts;
//! they are labelled — by the verifier for an outcome model (pointwise labels, or correct ×
//! wrong pairs for a pairwise objective), by Math-Shepherd rollouts of the policy for a process
//! model; the reward model continues training on the new data plus a `replay` share of every
//! earlier round's; the next round starts from the policy's checkpoint with the new reward
//! model and the reference reset to the current policy.
//!
//! Everything a round makes stays in `OUT/rounds/round-R/`: `samples.jsonl`, `data.jsonl` (the
//! new reward-model data), `rm-train.jsonl` (with the replay), `rm/` (the reward-model run:
//! metrics, plots, checkpoints) and `summary.json` (the policy's accuracy on its samples and
//! the reward model's held-out numbers). A round whose `summary.json` exists is done, so a
//! killed run resumes with `--resume` where it stopped.

use std::path::{Path, PathBuf};

use reasonlab_answer::{VerifyConfig, verify};
use reasonlab_core::engine::{Engine, Prompt, Request, Sampling};
use reasonlab_core::jsonl::BadLines;
use reasonlab_core::rng::SplitMix64;
use reasonlab_generate::LocalEngine;
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::rm::rewards::split_steps;
use reasonlab_train::rm::{Objective, RmQuality, RmSettings};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::grpo::{GrpoConfig, GrpoSummary, RewardModelSpec, Supervision, segment};
use super::rm::{Estimate, LabelConfig, RmConfig};
use super::{Event, Resume, RunDir, RunError, io, overlay};

fn default_rounds() -> usize {
    2
}
fn default_samples() -> usize {
    4
}
fn default_replay() -> f64 {
    0.1
}
fn default_label_n() -> usize {
    4
}

/// `[iterative]` as written: `[iterative.rm]` overrides the reward-model settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterativeFile {
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    #[serde(default)]
    pub prompts: usize,
    #[serde(default = "default_samples")]
    pub samples_per_prompt: usize,
    #[serde(default = "default_replay")]
    pub replay: f64,
    #[serde(default = "default_label_n")]
    pub label_n: usize,
    #[serde(default)]
    pub rm: toml::Table,
}

/// Resolved `[iterative]` settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterativeConfig {
    pub rounds: usize,
    pub prompts: usize,
    pub samples_per_prompt: usize,
    pub replay: f64,
    pub label_n: usize,
    pub rm: RmSettings,
}

impl IterativeConfig {
    /// Check the table against the run's reward models; the update's objective defaults to
    /// pointwise for an outcome model and is process for a process model.
    pub fn resolve(file: &IterativeFile, models: &[RewardModelSpec]) -> Result<Self, RunError> {
        let [spec] = models else {
            return Err(RunError::Invalid(format!(
                "[iterative] retrains one reward model; the run has {} [[reward_model]] tables",
                models.len()
            )));
        };
        if file.rounds == 0 || file.samples_per_prompt == 0 || file.label_n == 0 {
            return Err(RunError::Invalid(
                "[iterative] needs rounds, samples_per_prompt and label_n ≥ 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&file.replay) {
            return Err(RunError::Invalid(format!(
                "[iterative] replay is a share in [0, 1], not {}",
                file.replay
            )));
        }
        let base = RmSettings {
            objective: match spec.kind {
                Supervision::Outcome => Objective::Pointwise,
                Supervision::Process => Objective::Process,
            },
            ..RmSettings::default()
        };
        let rm: RmSettings = overlay(&base, &file.rm, "iterative.rm")?;
        let fits = matches!(
            (spec.kind, rm.objective),
            (Supervision::Process, Objective::Process)
                | (
                    Supervision::Outcome,
                    Objective::Pointwise | Objective::Pairwise
                )
        );
        if !fits {
            return Err(RunError::Invalid(format!(
                "a {:?} reward model cannot be retrained with the {:?} objective",
                spec.kind, rm.objective
            )));
        }
        Ok(Self {
            rounds: file.rounds,
            prompts: file.prompts,
            samples_per_prompt: file.samples_per_prompt,
            replay: file.replay,
            label_n: file.label_n,
            rm,
        })
    }
}

/// What a round did (`rounds/round-R/summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round: usize,
    /// The policy step the round's samples come from.
    pub policy_step: usize,
    pub samples: usize,
    /// Share of the samples the verifier accepts (the policy on its training prompts).
    pub policy_accuracy: f64,
    /// Reward-model examples made from the samples, and replayed from earlier rounds.
    pub new_examples: usize,
    pub replayed: usize,
    pub rm_held_out_before: Option<RmQuality>,
    pub rm_held_out_after: Option<RmQuality>,
    /// The retrained reward model the next round uses.
    pub reward_model: PathBuf,
}

fn round_dir(dir: &RunDir, round: usize) -> PathBuf {
    dir.root().join("rounds").join(format!("round-{round}"))
}

fn read_summary(path: &Path) -> Option<RoundSummary> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// GRPO in rounds with reward-model updates between them.
pub fn run(
    cfg: &GrpoConfig,
    it: &IterativeConfig,
    dir: &RunDir,
    resume: Resume,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<GrpoSummary, RunError> {
    let per_round = cfg.grpo.steps.div_ceil(it.rounds).max(1);
    let mut reward_model = cfg.reward_model[0].model.clone();
    let mut resume = resume;
    let mut last = None;
    for round in 0..it.rounds {
        let end = ((round + 1) * per_round).min(cfg.grpo.steps);
        let mut seg = cfg.clone();
        seg.grpo.steps = end;
        seg.grpo.ref_reset_every = 0;
        seg.reward_model[0].model = reward_model.clone();
        on_event(Event::Note(format!(
            "round {round}: GRPO to step {end} with the reward model {}",
            reward_model.display()
        )));
        // A round restarts from the policy's checkpoint: the reference is the current policy.
        last = Some(segment(&seg, dir, resume, true, on_event)?);
        resume = Resume::Latest;
        if round + 1 == it.rounds {
            break;
        }
        let rdir = round_dir(dir, round);
        let summary_path = rdir.join("summary.json");
        let summary = match read_summary(&summary_path) {
            Some(s) => s,
            None => update_reward_model(cfg, it, dir, round, &reward_model, on_event)?,
        };
        reward_model = summary.reward_model.clone();
    }
    let mut summary = last.expect("at least one round");
    summary.steps = summary.steps.max(cfg.grpo.steps.min(per_round * it.rounds));
    Ok(summary)
}

/// Sample the policy, label, and continue training the reward model (one round's update).
fn update_reward_model(
    cfg: &GrpoConfig,
    it: &IterativeConfig,
    dir: &RunDir,
    round: usize,
    reward_model: &Path,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RoundSummary, RunError> {
    let rdir = round_dir(dir, round);
    std::fs::create_dir_all(&rdir).map_err(io(&rdir))?;
    let policy = reasonlab_train::checkpoint::latest(dir.root())?
        .ok_or_else(|| RunError::Invalid("no policy checkpoint after the round".into()))?;
    let policy_step = step_of(&policy);
    let engine = LocalEngine::load(&policy, cfg.backend)
        .and_then(|e| e.with_batching(cfg.grpo.rollout_batching()))
        .map_err(crate::engines::EngineSpecError::from)?;
    let tokenizer = Tokenizer::from_dir(&policy)?;
    let context = reasonlab_model::ModelConfig::from_dir(&policy)?.max_position_embeddings;
    let tasks = super::grpo::tasks(cfg, &tokenizer, context)?;
    if tasks.is_empty() {
        return Err(RunError::Invalid("no usable training prompts".into()));
    }
    let take = if it.prompts == 0 {
        tasks.len()
    } else {
        it.prompts.min(tasks.len())
    };
    let first = (round * take) % tasks.len().max(1);
    let chosen: Vec<_> = (0..take)
        .map(|i| &tasks[(first + i) % tasks.len()])
        .collect();
    let sampling = Sampling {
        temperature: cfg.grpo.temperature,
        top_p: cfg.grpo.top_p,
        max_new_tokens: cfg.grpo.max_new_tokens,
        seed: cfg.grpo.seed.wrapping_add(1_000_003 * (round as u64 + 1)),
        ..Sampling::default()
    };
    on_event(Event::Note(format!(
        "round {round}: sampling {} × {} from the policy at step {policy_step}",
        take, it.samples_per_prompt
    )));
    let requests: Vec<Request> = chosen
        .iter()
        .map(|t| Request {
            prompt: Prompt::Text(t.prompt.clone()),
            n: it.samples_per_prompt,
            sampling: sampling.clone(),
            logprobs: false,
        })
        .collect();
    let outputs = engine.generate(&requests);
    let verify_cfg = VerifyConfig::default();
    let mut samples = Vec::new(); // (task, completion, correct)
    for (t, out) in chosen.iter().zip(outputs) {
        let out = out.map_err(|e| RunError::Invalid(format!("sampling {}: {e}", t.id)))?;
        for s in out.samples {
            let correct = t
                .gold
                .as_deref()
                .is_some_and(|g| verify(g, &s.text, t.problem.as_deref(), &verify_cfg).correct);
            samples.push((*t, s.text, correct));
        }
    }
    let lines: String = samples
        .iter()
        .map(|(t, c, ok)| {
            json!({"id": t.id, "prompt": t.prompt, "completion": c, "correct": ok}).to_string()
                + "\n"
        })
        .collect();
    write(&rdir.join("samples.jsonl"), &lines)?;
    let policy_accuracy =
        samples.iter().filter(|s| s.2).count() as f64 / samples.len().max(1) as f64;

    // The round's reward-model data.
    let data: Vec<Value> = match it.rm.objective {
        Objective::Pointwise => samples
            .iter()
            .map(|(t, c, ok)| json!({"prompt": t.prompt, "completion": c, "label": ok}))
            .collect(),
        Objective::Pairwise => pairs(&samples),
        Objective::Process => {
            let solutions = rdir.join("solutions.jsonl");
            let text: String = samples
                .iter()
                .enumerate()
                .filter(|(_, (t, c, _))| t.gold.is_some() && !split_steps(c, &cfg.reward_model[0].separator).is_empty())
                .map(|(i, (t, c, _))| {
                    let steps: Vec<&str> = split_steps(c, &cfg.reward_model[0].separator)
                        .into_iter()
                        .map(|s| s.0)
                        .collect();
                    json!({"id": format!("s{i}"), "prompt": t.prompt, "completions": steps, "answer": t.gold}).to_string() + "\n"
                })
                .collect();
            write(&solutions, &text)?;
            let labels = rdir.join("labels.jsonl");
            let label_cfg = LabelConfig {
                input: solutions,
                out: labels.clone(),
                n: it.label_n,
                separator: cfg.reward_model[0].separator.clone(),
                estimate: Estimate::Hard,
                sampling: sampling.clone(),
                chunk_size: 8,
            };
            super::rm::label::label(&label_cfg, &engine, on_event)?;
            read_values(&labels)?
        }
    };
    let new_examples = data.len();
    let mut all: String = data.iter().map(|v| v.to_string() + "\n").collect();
    write(&rdir.join("data.jsonl"), &all)?;
    // Replay: a seeded `replay` share of every earlier round's data.
    let mut history = Vec::new();
    for r in 0..round {
        history.extend(read_values(&round_dir(dir, r).join("data.jsonl"))?);
    }
    let keep = ((history.len() as f64) * it.replay).round() as usize;
    let mut rng = SplitMix64::seeded(it.rm.seed ^ round as u64);
    for i in (1..history.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        history.swap(i, j);
    }
    for v in history.iter().take(keep) {
        all.push_str(&v.to_string());
        all.push('\n');
    }
    let train_path = rdir.join("rm-train.jsonl");
    write(&train_path, &all)?;
    if new_examples + keep == 0 {
        return Err(RunError::Invalid(format!(
            "round {round}: the policy's samples gave no reward-model data"
        )));
    }
    let rm_cfg = RmConfig {
        model: reward_model.to_path_buf(),
        data: train_path,
        eval_data: None,
        held_out: 0.1,
        out: rdir.join("rm"),
        save_every: 0,
        head: cfg.reward_model[0].head.clone(),
        backend: cfg.backend,
        activation_checkpointing: cfg.activation_checkpointing,
        mixed_precision: cfg.mixed_precision,
        rm: it.rm.clone(),
    };
    let rm_dir = RunDir::create(&rm_cfg.out)?;
    let rm = super::rm::train::run(&rm_cfg, &rm_dir, Resume::Fresh, BadLines::Skip, on_event)?;
    let summary = RoundSummary {
        round,
        policy_step,
        samples: samples.len(),
        policy_accuracy,
        new_examples,
        replayed: keep,
        rm_held_out_before: rm.held_out_before,
        rm_held_out_after: rm.held_out_after,
        reward_model: rm.model,
    };
    let text = serde_json::to_string_pretty(&summary)
        .map_err(|e| RunError::Invalid(format!("round summary: {e}")))?;
    write(&rdir.join("summary.json"), &text)?;
    Ok(summary)
}

/// Correct × wrong completions of the same prompt as preference pairs (at most as many pairs
/// per prompt as samples).
fn pairs(samples: &[(&reasonlab_train::grpo::Task, String, bool)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let id = &samples[i].0.id;
        let group: Vec<_> = samples[i..].iter().take_while(|s| &s.0.id == id).collect();
        let right: Vec<_> = group.iter().filter(|s| s.2).collect();
        let wrong: Vec<_> = group.iter().filter(|s| !s.2).collect();
        for (k, (c, r)) in right
            .iter()
            .flat_map(|c| wrong.iter().map(move |r| (c, r)))
            .enumerate()
        {
            if k >= group.len() {
                break;
            }
            out.push(json!({"prompt": c.0.prompt, "chosen": c.1, "rejected": r.1}));
        }
        i += group.len();
    }
    out
}

fn step_of(ckpt: &Path) -> usize {
    ckpt.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("step-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn write(path: &Path, text: &str) -> Result<(), RunError> {
    reasonlab_core::fs::atomic_write(path, text.as_bytes()).map_err(io(path))
}

fn read_values(path: &Path) -> Result<Vec<Value>, RunError> {
    Ok(reasonlab_core::jsonl::read(path, BadLines::Skip)?)
}
