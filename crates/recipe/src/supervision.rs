//! Outcome against process supervision on the demo's task (DeepSeekMath §4.1.2–4.1.3), with
//! the rule reward beside them for reference: `reasonlab demo --compare-supervision`.
//!
//! For every seed: the demo's tokenizer, model and SFT warm-up give the starting policy. It
//! samples `rm_samples` completions of each of the first `rm_problems` training problems; an
//! outcome reward model (pointwise, labels from the verifier) and a process reward model
//! (Math-Shepherd hard labels, the policy completing each step prefix `label_n` times; the
//! steps of `<think>a + b = c</think> \boxed{c}` are split at `</think>`) are trained on them
//! with the same settings, each a fresh head on the starting policy's backbone. Then three GRPO
//! runs start from the same policy with the same budget and seed, differing only in the
//! reward: the rule reward of the demo (accuracy + format), the outcome model (σ of its score,
//! normalised per group), or the process model (step rewards normalised over the group,
//! DeepSeekMath §4.1.3; no outcome reward). A fourth arm runs the process model as iterative
//! RL (DeepSeekMath §4.2): the same steps in `iterative_rounds` rounds, and before each round
//! after the first a new process model, labelled and trained as above but from the current
//! policy's samples, with the reference reset to the current policy. (The paper continues
//! training the old model with 10% replay; here each round's model is trained afresh on the
//! new samples.) Held-out pass@1 is measured every `eval_every` steps.
//!
//! Written under `out`: `curves.jsonl` (every seed, arm and step), `seed-S/ARM-completions.jsonl`
//! (the first rollout of every group), `summary.json` (the mean
//! and spread over seeds, and each reward model's held-out accuracy and AUC), `report.md`, and
//! `plots/` with the mean curves.

use std::path::{Path, PathBuf};

use reasonlab_core::engine::{Engine, Prompt, Request, Sampling};
use reasonlab_generate::LocalEngine;
use reasonlab_model::{Model, RewardModel, SaveDtype};
use reasonlab_reward::{NotApplicable, RewardConfig, WeightedSum};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::AdamWSettings;
use reasonlab_train::grpo::{GrpoTrainer, Preset, Task};
use reasonlab_train::rm::rewards::{OutcomeRewardModel, ProcessRewardModel, Squash};
use reasonlab_train::rm::{
    Objective, RmEncodeSettings, RmQuality, RmSettings, RmTrainer, encode_record,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::demo::{self, DemoError, DemoSettings, Problem};
use crate::run::rm::{Estimate, LabelConfig};

/// The comparison's knobs.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisionSettings {
    pub seeds: Vec<u64>,
    /// GRPO steps per arm.
    pub steps: usize,
    /// Held-out pass@1 every N steps (and at step 0).
    pub eval_every: usize,
    /// Training problems the starting policy samples for the reward models.
    pub rm_problems: usize,
    pub rm_samples: usize,
    /// Math-Shepherd completions per step prefix.
    pub label_n: usize,
    pub rm_epochs: usize,
    pub rm_lr: f64,
    /// Rounds of the iterative process arm: its steps split evenly, a new process model from
    /// the policy's own samples before each round after the first.
    pub iterative_rounds: usize,
    /// The demo settings (model size, warm-up, GRPO batch, evaluation size).
    pub demo: DemoSettings,
}

impl SupervisionSettings {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self {
            seeds,
            steps: 100,
            eval_every: 25,
            rm_problems: 1024,
            rm_samples: 4,
            label_n: 4,
            rm_epochs: 4,
            rm_lr: 1e-3,
            iterative_rounds: 4,
            demo: DemoSettings::quick(0),
        }
    }
}

/// Which reward an arm trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Rule,
    Outcome,
    Process,
    /// The process model, retrained on the policy's samples between rounds.
    ProcessIterative,
}

impl Arm {
    const ALL: [Arm; 4] = [Arm::Rule, Arm::Outcome, Arm::Process, Arm::ProcessIterative];

    fn name(self) -> &'static str {
        match self {
            Arm::Rule => "rule",
            Arm::Outcome => "outcome",
            Arm::Process => "process",
            Arm::ProcessIterative => "process_iterative",
        }
    }
}

/// One point of a curve.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub seed: u64,
    pub arm: Arm,
    pub step: usize,
    pub pass1: f64,
}

/// Mean and spread of one arm at one step over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct MeanPoint {
    pub arm: Arm,
    pub step: usize,
    pub mean: f64,
    /// Sample standard deviation over the seeds.
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// The reward models of one seed.
#[derive(Debug, Clone, Serialize)]
pub struct SeedModels {
    pub seed: u64,
    /// Share of the starting policy's samples the verifier accepts.
    pub policy_accuracy: f64,
    pub outcome: RmQuality,
    pub process: RmQuality,
}

#[derive(Debug, Clone, Serialize)]
pub struct SupervisionSummary {
    pub settings: SupervisionSettings,
    pub reward_models: Vec<SeedModels>,
    pub curves: Vec<MeanPoint>,
    pub seconds: f64,
}

/// Progress for the caller.
pub enum SupervisionEvent<'a> {
    Phase(u64, &'a str),
    Point(&'a Point),
}

/// Run the comparison into `out`.
pub fn run(
    out: &Path,
    s: &SupervisionSettings,
    on_event: &mut dyn FnMut(SupervisionEvent<'_>),
) -> Result<SupervisionSummary, DemoError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out.join("plots")).map_err(demo::io_err(out))?;
    let mut points = Vec::new();
    let mut models = Vec::new();
    let curves_path = out.join("curves.jsonl");
    let mut curves = reasonlab_core::jsonl::JsonlWriter::new(
        std::fs::File::create(&curves_path).map_err(demo::io_err(&curves_path))?,
    );
    for &seed in &s.seeds {
        let d = DemoSettings {
            seed,
            ..s.demo.clone()
        };
        let seed_dir = out.join(format!("seed-{seed}"));
        let (policy, tok, train, held_out) = start(&d, &seed_dir, &mut |p| {
            on_event(SupervisionEvent::Phase(seed, p))
        })?;
        on_event(SupervisionEvent::Phase(seed, "reward models"));
        let (orm, prm, seed_models) = reward_models(&policy, &tok, &train, &seed_dir, s, &d)?;
        models.push(seed_models);
        for arm in Arm::ALL {
            on_event(SupervisionEvent::Phase(seed, arm.name()));
            let rounds = if arm == Arm::ProcessIterative {
                s.iterative_rounds.clamp(1, s.steps.max(1))
            } else {
                1
            };
            let per_round = s.steps.div_ceil(rounds);
            let tasks: Vec<Task> = train
                .iter()
                .map(|p| Task::new(p.id.clone(), demo::prompt(p), Some(p.answer.to_string())))
                .collect();
            let log_path = seed_dir.join(format!("{}-completions.jsonl", arm.name()));
            let mut log = reasonlab_core::jsonl::JsonlWriter::new(
                std::fs::File::create(&log_path).map_err(demo::io_err(&log_path))?,
            );
            let mut current = policy.clone();
            let mut round_prm = prm.clone();
            let mut step = 0usize;
            for round in 0..rounds {
                if round > 0 {
                    // DeepSeekMath §4.2: a new reward model from the current policy's samples,
                    // and the reference reset to the current policy (a new trainer).
                    on_event(SupervisionEvent::Phase(
                        seed,
                        "iterative: reward model update",
                    ));
                    let dir = seed_dir.join(format!("round-{round}"));
                    current.save(&dir.join("policy"), SaveDtype::F32)?;
                    tok.save(&dir.join("policy"))?;
                    round_prm = reward_models(&current, &tok, &train, &dir, s, &d)?.1;
                }
                let rule = RewardConfig::from_toml(demo::REWARDS)?.build();
                let mut outcome = WeightedSum::from_parts(Vec::new(), NotApplicable::Skip);
                let empty = WeightedSum::from_parts(Vec::new(), NotApplicable::Skip);
                let process;
                let (rewards, prm_ref) = match arm {
                    Arm::Rule => (&rule, None),
                    Arm::Outcome => {
                        outcome.push(
                            "orm".into(),
                            1.0,
                            Box::new(OutcomeRewardModel::new(
                                "orm".into(),
                                orm.clone(),
                                tok.clone(),
                                Squash::Sigmoid,
                            )),
                        );
                        (&outcome, None)
                    }
                    Arm::Process | Arm::ProcessIterative => {
                        process = ProcessRewardModel::new(
                            "prm".into(),
                            round_prm.clone(),
                            tok.clone(),
                            SEPARATOR.into(),
                        );
                        (&empty, Some(&process))
                    }
                };
                let mut settings = demo::grpo_settings_with(&d, Preset::Deepseekmath);
                settings.steps = s.steps;
                settings.seed = seed.wrapping_add(round as u64 * 7919);
                let mut trainer = GrpoTrainer::new(settings, current.clone(), &tok, rewards)?;
                if let Some(p) = prm_ref {
                    trainer = trainer.with_process_reward(p);
                }
                let end = ((round + 1) * per_round).min(s.steps);
                loop {
                    let measure_now = step.is_multiple_of(s.eval_every.max(1)) || step == s.steps;
                    let first_of_round = round > 0 && step == round * per_round;
                    if measure_now && !first_of_round {
                        let e = demo::evaluate(
                            &trainer.policy().inference_copy(),
                            &tok,
                            &held_out,
                            &d,
                            tok.eos_id().unwrap_or(0),
                        )?;
                        let point = Point {
                            seed,
                            arm,
                            step,
                            pass1: e.get(reasonlab_eval::MetricKey::PassAt(1)),
                        };
                        curves.write(&point).map_err(demo::io_err(&curves_path))?;
                        on_event(SupervisionEvent::Point(&point));
                        points.push(point);
                    }
                    if step == end {
                        break;
                    }
                    let (_, rollouts) = trainer.step(&tasks)?;
                    step += 1;
                    for r in rollouts.iter().step_by(d.group_size) {
                        log.write(r).map_err(demo::io_err(&log_path))?;
                    }
                }
                current = trainer.into_policy();
            }
        }
    }
    let means = mean_curves(&points);
    let rows: Vec<Value> = {
        let mut steps: Vec<usize> = means.iter().map(|m| m.step).collect();
        steps.dedup();
        steps.sort_unstable();
        steps.dedup();
        steps
            .iter()
            .map(|&step| {
                let mut row = json!({ "step": step });
                for m in means.iter().filter(|m| m.step == step) {
                    row[m.arm.name()] = json!(m.mean);
                }
                row
            })
            .collect()
    };
    crate::plots::write_metric_report(
        &out.join("plots"),
        "Held-out pass@1: rule, outcome and process rewards",
        &rows,
        &[(
            "held-out pass@1 (mean over seeds)",
            &["rule", "outcome", "process", "process_iterative"],
        )],
    )
    .map_err(demo::io_err(out))?;
    let summary = SupervisionSummary {
        settings: s.clone(),
        reward_models: models,
        curves: means,
        seconds: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    let path = out.join("summary.json");
    reasonlab_core::fs::atomic_write(&path, text.as_bytes()).map_err(demo::io_err(&path))?;
    let path = out.join("report.md");
    reasonlab_core::fs::atomic_write(&path, render_markdown(&summary).as_bytes())
        .map_err(demo::io_err(&path))?;
    Ok(summary)
}

/// Where steps end in the demo's solutions.
const SEPARATOR: &str = "</think>";

/// The demo's problems, tokenizer and warmed-up policy for one seed; the policy is saved in
/// `dir/policy` for the local engine.
fn start(
    d: &DemoSettings,
    dir: &Path,
    phase: &mut dyn FnMut(&str),
) -> Result<(Model, Tokenizer, Vec<Problem>, Vec<Problem>), DemoError> {
    let (tok, held_out, train) = demo::task(d)?;
    phase("warm-up (sft)");
    let policy = demo::cold_start(&tok, &train, &held_out, d)?;
    let policy_dir = dir.join("policy");
    policy.save(&policy_dir, SaveDtype::F32)?;
    tok.save(&policy_dir)?;
    Ok((policy, tok, train, held_out))
}

/// Sample the policy, label, and train the outcome and process reward models.
fn reward_models(
    policy: &Model,
    tok: &Tokenizer,
    train: &[Problem],
    dir: &Path,
    s: &SupervisionSettings,
    d: &DemoSettings,
) -> Result<(RewardModel, RewardModel, SeedModels), DemoError> {
    let engine = LocalEngine::load(&dir.join("policy"), reasonlab_model::BackendKind::Flex)
        .map_err(|e| DemoError::Engine(e.to_string()))?;
    let problems = &train[..s.rm_problems.min(train.len())];
    let sampling = Sampling {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 24,
        seed: d.seed ^ 0x5A3D,
        ..Sampling::default()
    };
    let requests: Vec<Request> = problems
        .iter()
        .map(|p| Request {
            prompt: Prompt::Text(demo::prompt(p)),
            n: s.rm_samples,
            sampling: sampling.clone(),
            logprobs: false,
        })
        .collect();
    let verify = reasonlab_answer::VerifyConfig::default();
    let mut pointwise = Vec::new();
    let mut solutions = String::new();
    let mut correct = 0usize;
    for (i, (p, out)) in problems.iter().zip(engine.generate(&requests)).enumerate() {
        let out = out.map_err(|e| DemoError::Engine(e.to_string()))?;
        for (j, sample) in out.samples.iter().enumerate() {
            let answer = p.answer.to_string();
            let ok = reasonlab_answer::verify(&answer, &sample.text, None, &verify).correct;
            correct += usize::from(ok);
            pointwise
                .push(json!({"prompt": demo::prompt(p), "completion": sample.text, "label": ok}));
            let steps: Vec<&str> =
                reasonlab_train::rm::rewards::split_steps(&sample.text, SEPARATOR)
                    .into_iter()
                    .map(|x| x.0)
                    .collect();
            if !steps.is_empty() {
                solutions.push_str(
                    &(json!({"id": format!("{i}-{j}"), "prompt": demo::prompt(p), "completions": steps, "answer": answer}).to_string() + "\n"),
                );
            }
        }
    }
    let total = pointwise.len();
    let input = dir.join("solutions.jsonl");
    std::fs::write(&input, solutions).map_err(demo::io_err(&input))?;
    let labels = dir.join("labels.jsonl");
    let _ = std::fs::remove_file(&labels);
    let label_cfg = LabelConfig {
        input,
        out: labels.clone(),
        n: s.label_n,
        separator: SEPARATOR.into(),
        estimate: Estimate::Hard,
        sampling,
        chunk_size: 64,
    };
    crate::run::rm::label::label(&label_cfg, &engine, &mut |_| {}).map_err(Box::new)?;
    let stepwise: Vec<Value> =
        reasonlab_core::jsonl::read(&labels, reasonlab_core::jsonl::BadLines::Reject)
            .map_err(|e| Box::new(crate::run::RunError::from(e)))?;
    let (orm, outcome) = train_rm(policy, tok, &pointwise, Objective::Pointwise, s, d.seed)?;
    let (prm, process) = train_rm(policy, tok, &stepwise, Objective::Process, s, d.seed)?;
    Ok((
        orm,
        prm,
        SeedModels {
            seed: d.seed,
            policy_accuracy: correct as f64 / total.max(1) as f64,
            outcome,
            process,
        },
    ))
}

/// A fresh head on `policy`'s backbone trained on `records` (the last tenth held out).
fn train_rm(
    policy: &Model,
    tok: &Tokenizer,
    records: &[Value],
    objective: Objective,
    s: &SupervisionSettings,
    seed: u64,
) -> Result<(RewardModel, RmQuality), DemoError> {
    let settings = RmSettings {
        objective,
        epochs: s.rm_epochs,
        batch_size: 16,
        encode: RmEncodeSettings {
            step_separator: SEPARATOR.into(),
            ..Default::default()
        },
        optim: AdamWSettings {
            lr: s.rm_lr,
            ..Default::default()
        },
        seed,
        ..Default::default()
    };
    let mut examples = Vec::new();
    for r in records {
        if let Ok(Some(e)) = encode_record(r, objective, tok, &settings.encode, true) {
            examples.push(e);
        }
    }
    let held = examples.split_off(examples.len() - examples.len() / 10);
    let head = objective.default_head();
    let rm = RewardModel::from_lm(policy.clone(), head, seed)?;
    let pad = tok.pad_id();
    let mut trainer = RmTrainer::new(settings, head, rm.model().clone(), examples, held, pad)?;
    while trainer.step()?.is_some() {}
    let quality = trainer.evaluate()?;
    Ok((rm.with_model(trainer.into_model()), quality))
}

/// Mean, std, min and max over seeds of every (arm, step).
fn mean_curves(points: &[Point]) -> Vec<MeanPoint> {
    let mut keys: Vec<(usize, usize)> = points
        .iter()
        .map(|p| {
            (
                Arm::ALL.iter().position(|&a| a == p.arm).unwrap_or(0),
                p.step,
            )
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(a, step)| {
            let arm = Arm::ALL[a];
            let v: Vec<f64> = points
                .iter()
                .filter(|p| p.arm == arm && p.step == step)
                .map(|p| p.pass1)
                .collect();
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = if v.len() > 1 {
                v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            MeanPoint {
                arm,
                step,
                mean,
                std: var.sqrt(),
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

/// The summary as a Markdown table: held-out pass@1 per step, mean ± std over seeds.
pub fn render_markdown(s: &SupervisionSummary) -> String {
    let mut steps: Vec<usize> = s.curves.iter().map(|m| m.step).collect();
    steps.sort_unstable();
    steps.dedup();
    let mut out = format!(
        "held-out pass@1 ({} problems × {} samples), mean ± std over seeds {:?}\n\n| step | rule | outcome RM | process RM | process RM, iterative |\n| ---: | ---: | ---: | ---: | ---: |\n",
        s.settings.demo.eval_problems, s.settings.demo.eval_k, s.settings.seeds
    );
    for step in steps {
        let cell = |arm: Arm| {
            s.curves
                .iter()
                .find(|m| m.arm == arm && m.step == step)
                .map_or("".into(), |m| format!("{:.3} ± {:.3}", m.mean, m.std))
        };
        out.push_str(&format!(
            "| {step} | {} | {} | {} | {} |\n",
            cell(Arm::Rule),
            cell(Arm::Outcome),
            cell(Arm::Process),
            cell(Arm::ProcessIterative)
        ));
    }
    out.push_str("\nreward models (held-out accuracy / AUC):\n\n| seed | policy accuracy | outcome RM | process RM |\n| ---: | ---: | ---: | ---: |\n");
    for m in &s.reward_models {
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |\n",
            m.seed,
            m.policy_accuracy,
            m.outcome.accuracy,
            m.outcome.auc,
            m.process.accuracy,
            m.process.auc
        ));
    }
    out
}

/// Where the comparison writes by default.
pub fn default_out() -> PathBuf {
    PathBuf::from("runs/supervision")
}
