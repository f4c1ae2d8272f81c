//! R1-Zero from a base model (DeepSeek-R1 §2.2, Fig. 2–3): `reasonlab experiment r1-zero`.
//!
//! For every seed: a tokenizer and a tiny random model, pretrained by next-token prediction
//! (loss on every token) on web-like text about the training problems (the demo's one-step
//! problems, or with [`Problems::TwoStep`] two-step ones such as "has 3, gets 4 more and then
//! gives away 2", plus every one-step problem) — stories with the
//! sums worked in prose, worksheet pages ("Question: … Answer: 5"), and a share of tutoring
//! transcripts in R1-Zero's conversation format whose reasoning comes in three lengths (the
//! whole sum at once, one step at a time, the story retold step by step) and whose answers are
//! sometimes wrong, whatever the length. No instruction data and no SFT stage: the base model's habits
//! are whatever that text taught it. GRPO (R1-Zero preset) then trains it with R1-Zero's prompt
//! ([`reasonlab_eval::template::R1_ZERO_TEMPLATE`]), an accuracy reward that reads the answer
//! from `<answer> </answer>` only, and a format reward that checks both tag pairs. Held-out
//! pass@1, the well-formed share and the mean response length are measured every
//! `eval_every` steps (R1 Fig. 2 and Fig. 3).

use std::path::Path;

use reasonlab_answer::{AnswerFormat, ExtractConfig, Fallback, VerifyConfig};
use reasonlab_eval::MetricKey;
use reasonlab_eval::template::r1_zero_prompt;
use reasonlab_model::tensor::Device;
use reasonlab_model::{Model, ModelConfig};
use reasonlab_reward::RewardConfig;
use reasonlab_reward::think_format::{AnswerCheck, OpenTag, ThinkFormat};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::AdamWSettings;
use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, Task};
use reasonlab_train::sft::SftRecord;
use serde::Serialize;

use super::{
    Measured, Probe, Stat, Tune, chart, fine_tune, finish, measure, stat_series, write_json,
};
use crate::demo::{self, DemoError, Problem, io_err, lcg};

/// Which problems RL trains on and the evaluation asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problems {
    /// The demo's one-step problems.
    OneStep,
    /// Two-step problems, where reasoning one step at a time is possible; the pretraining
    /// text also covers every one-step problem.
    TwoStep,
}

/// The experiment's knobs.
#[derive(Debug, Clone, Serialize)]
pub struct R1ZeroSettings {
    pub seeds: Vec<u64>,
    pub problems: Problems,
    pub pretrain_steps: usize,
    pub pretrain_batch: usize,
    pub pretrain_lr: f64,
    /// Share of pretraining documents that are conversation transcripts.
    pub transcript_share: f64,
    /// Share of transcripts whose answer is off by one.
    pub wrong_share: f64,
    pub grpo_steps: usize,
    pub grpo_lr: f64,
    pub group_size: usize,
    pub prompts_per_step: usize,
    pub max_new_tokens: usize,
    pub eval_every: usize,
    pub eval_problems: usize,
    pub eval_k: usize,
    pub hidden_size: usize,
    pub layers: usize,
}

impl R1ZeroSettings {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self {
            seeds,
            problems: Problems::OneStep,
            pretrain_steps: 300,
            pretrain_batch: 32,
            pretrain_lr: 3e-3,
            transcript_share: 0.3,
            wrong_share: 0.3,
            grpo_steps: 200,
            grpo_lr: 5e-4,
            group_size: 8,
            prompts_per_step: 16,
            max_new_tokens: 64,
            eval_every: 25,
            eval_problems: 100,
            eval_k: 4,
            hidden_size: 96,
            layers: 2,
        }
    }

    /// A few steps of everything, for tests.
    pub fn quick(seeds: Vec<u64>) -> Self {
        Self {
            pretrain_steps: 40,
            grpo_steps: 4,
            eval_every: 2,
            eval_problems: 16,
            eval_k: 2,
            ..Self::new(seeds)
        }
    }
}

/// One measurement of one seed.
#[derive(Debug, Clone, Serialize)]
pub struct R1ZeroPoint {
    pub seed: u64,
    pub step: usize,
    #[serde(flatten)]
    pub measured: Measured,
    /// Mean reward and completion length of the GRPO step's rollouts (NaN at step 0).
    pub train_reward: f64,
    pub train_length: f64,
}

/// Mean ± std over seeds at one step.
#[derive(Debug, Clone, Serialize)]
pub struct R1ZeroRow {
    pub step: usize,
    pub pass1: Stat,
    pub format: Stat,
    pub length: Stat,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct R1ZeroSummary {
    pub settings: R1ZeroSettings,
    pub points: Vec<R1ZeroPoint>,
    pub rows: Vec<R1ZeroRow>,
    pub seconds: f64,
}

const REWARDS: &str = r#"
not_applicable = "zero"
[[reward]]
kind = "accuracy"
weight = 1.0
answer_format = "answer_tag"
fallback = "none"
[[reward]]
kind = "think_format"
weight = 0.2
answer = "answer_tag"
"#;

const FORMAT: ThinkFormat = ThinkFormat {
    open_tag: OpenTag::InCompletion,
    answer: AnswerCheck::AnswerTag,
};

/// R1-Zero's prompt for one problem.
pub(crate) fn prompt(p: &Problem) -> String {
    r1_zero_prompt(&p.question)
}

/// R1-Zero's prompt for any question.
pub(crate) fn prompt_for(question: &str) -> String {
    r1_zero_prompt(question)
}

fn verb(op: char) -> &'static str {
    if op == '+' { "gets" } else { "gives away" }
}

fn past(op: char, n: u32) -> String {
    if op == '+' {
        format!("got {n} more")
    } else {
        format!("gave away {n}")
    }
}

fn apply(x: i64, op: char, y: u32) -> i64 {
    if op == '+' {
        x + y as i64
    } else {
        x - y as i64
    }
}

/// The result of the first step.
fn first(p: &Problem) -> i64 {
    apply(p.a as i64, p.op, p.b)
}

/// Two-step word problems (`a op b`, then `op2 c` on the result; never below zero), with a
/// seeded name and item each, shuffled by seed.
pub(crate) fn two_step_problems(seed: u64) -> Vec<Problem> {
    let mut rng = seed ^ 0x2_57E9;
    let mut out = Vec::new();
    for a in 1..=9u32 {
        for b in 1..=9u32 {
            for c in 1..=9u32 {
                for (op, op2) in [('+', '-'), ('-', '+')] {
                    let m = apply(a as i64, op, b);
                    let answer = apply(m, op2, c);
                    if m < 0 || answer < 0 {
                        continue;
                    }
                    let name = demo::NAMES[lcg(&mut rng) as usize % demo::NAMES.len()];
                    let item = demo::ITEMS[lcg(&mut rng) as usize % demo::ITEMS.len()];
                    let question = if op == '+' {
                        format!(
                            "{name} has {a} {item}s, gets {b} more and then gives away {c}. How many {item}s are left?"
                        )
                    } else {
                        format!(
                            "{name} has {a} {item}s, gives away {b} and then gets {c} more. How many {item}s now?"
                        )
                    };
                    out.push(Problem {
                        id: format!("{name}-{item}-{a}{op}{b}{op2}{c}"),
                        question,
                        a,
                        b,
                        op,
                        name,
                        item,
                        then: Some((op2, c)),
                        answer,
                    });
                }
            }
        }
    }
    for i in (1..out.len()).rev() {
        let j = lcg(&mut rng) as usize % (i + 1);
        out.swap(i, j);
    }
    out
}

/// A completion in R1-Zero's format with `answer` (right or not) and reasoning of `verbosity`
/// 0 (the whole sum at once), 1 (the numbers, one step at a time) or 2 (the story retold,
/// one step at a time).
pub(crate) fn transcript(p: &Problem, answer: i64, verbosity: u64) -> String {
    let (a, b, op) = (p.a, p.b, p.op);
    let reasoning = match (p.then, verbosity) {
        (None, 0) => format!("{a} {op} {b} = {answer}"),
        (None, 1) => format!("{a} and {b}. {a} {op} {b} = {answer}."),
        (None, _) => format!(
            "{} has {a} {}s. {} {} {b}. {a} {op} {b} = {answer}.",
            p.name,
            p.item,
            p.name,
            verb(op)
        ),
        (Some((op2, c)), 0) => format!("{a} {op} {b} {op2} {c} = {answer}"),
        (Some((op2, c)), 1) => {
            let m = first(p);
            format!("{a} {op} {b} = {m}. {m} {op2} {c} = {answer}.")
        }
        (Some((op2, c)), _) => {
            let m = first(p);
            format!(
                "{} has {a} {}s. {} {} {b}, so {a} {op} {b} = {m}. Then {} {c}, so {m} {op2} {c} = {answer}.",
                p.name,
                p.item,
                p.name,
                verb(op),
                verb(op2)
            )
        }
    };
    format!(" <think> {reasoning} </think> <answer> {answer} </answer>")
}

/// Web-like pretraining documents about `train`'s problems (see the module documentation).
pub(crate) fn documents(train: &[Problem], s: &R1ZeroSettings, seed: u64) -> Vec<String> {
    let mut rng = seed ^ 0xA11C_E5ED;
    let unit = |rng: &mut u64| (lcg(rng) % 10_000) as f64 / 10_000.0;
    train
        .iter()
        .map(|p| {
            let c = p.answer;
            if unit(&mut rng) < s.transcript_share {
                let wrong = unit(&mut rng) < s.wrong_share;
                let answer = if wrong { c + 1 } else { c };
                let verbosity = lcg(&mut rng) % 3;
                format!("{}{}", prompt(p), transcript(p, answer, verbosity))
            } else if lcg(&mut rng).is_multiple_of(2) {
                let (did, sums) = match p.then {
                    None => (past(p.op, p.b), format!("{} {} {} = {c}", p.a, p.op, p.b)),
                    Some((op2, n)) => {
                        let m = first(p);
                        (
                            format!("{} and then {}", past(p.op, p.b), past(op2, n)),
                            format!("{} {} {} = {m} and {m} {op2} {n} = {c}", p.a, p.op, p.b),
                        )
                    }
                };
                format!(
                    "{} had {} {}s. Then {} {did}. {sums}, so {} has {c} {}s.",
                    p.name, p.a, p.item, p.name, p.name, p.item
                )
            } else {
                format!("Question: {}\nAnswer: {c}", p.question)
            }
        })
        .collect()
}

fn config(vocab: usize, s: &R1ZeroSettings, eos: u32) -> ModelConfig {
    demo::tiny_config(vocab, s.hidden_size, s.layers, 256, eos)
}

/// Next-token training on `docs` (loss on every token): the base model.
pub(crate) fn pretrain(
    tok: &Tokenizer,
    docs: &[String],
    config: ModelConfig,
    steps: usize,
    batch: usize,
    lr: f64,
    seed: u64,
) -> Result<Model, DemoError> {
    let device = Device::flex().autodiff();
    let model = Model::random(config, seed, &device);
    let records: Vec<SftRecord> = docs
        .iter()
        .map(|d| SftRecord::PromptCompletion {
            prompt: String::new(),
            completion: d.clone(),
        })
        .collect();
    let tune = Tune {
        steps,
        batch,
        lr,
        max_len: 192,
        seed: seed ^ 0x9E7,
    };
    fine_tune(model, tok, &records, tune)
}

fn probe<'a>(s: &R1ZeroSettings, seed: u64, ks: &'a [usize]) -> Probe<'a> {
    Probe {
        prompt: &prompt,
        n: s.eval_k,
        ks,
        max_new_tokens: s.max_new_tokens,
        seed: seed ^ 0xE7A1,
        verify: VerifyConfig {
            extract: ExtractConfig {
                format: AnswerFormat::AnswerTag,
                fallback: Fallback::None,
                ..Default::default()
            },
            ..Default::default()
        },
        format: Some(FORMAT),
    }
}

/// Run every seed into `out`.
pub fn run(
    out: &Path,
    s: &R1ZeroSettings,
    on_phase: &mut dyn FnMut(u64, &str),
) -> Result<R1ZeroSummary, DemoError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out.join("plots")).map_err(io_err(out))?;
    let mut points = Vec::new();
    let ks = [1];
    for &seed in &s.seeds {
        let (all, mut pages) = match s.problems {
            Problems::OneStep => (demo::problems(seed), Vec::new()),
            // RL and evaluation on two-step problems; the pretraining text is about the
            // training ones and about every one-step problem.
            Problems::TwoStep => (two_step_problems(seed), demo::problems(seed)),
        };
        let (held_out, train) = all.split_at(s.eval_problems);
        pages.extend_from_slice(train);
        let docs = documents(&pages, s, seed);
        let tok = tokenizer(&docs)?;
        let eos = tok.eos_id().unwrap_or(0);
        on_phase(seed, "pretrain");
        let base = pretrain(
            &tok,
            &docs,
            config(tok.vocab_size(), s, eos),
            s.pretrain_steps,
            s.pretrain_batch,
            s.pretrain_lr,
            seed,
        )?;
        let seed_dir = out.join(format!("seed-{seed}"));
        base.save(&seed_dir.join("base"), reasonlab_model::SaveDtype::F32)?;
        tok.save(&seed_dir.join("base"))?;
        on_phase(seed, "grpo");
        let rewards = RewardConfig::from_toml(REWARDS)?.build();
        let mut settings = GrpoSettings::preset(Preset::R1Zero);
        settings.group_size = s.group_size;
        settings.prompts_per_step = s.prompts_per_step;
        settings.steps = s.grpo_steps;
        settings.max_new_tokens = s.max_new_tokens;
        settings.optim = AdamWSettings {
            lr: s.grpo_lr,
            ..Default::default()
        };
        settings.seed = seed;
        let tasks: Vec<Task> = train
            .iter()
            .map(|p| Task::new(p.id.clone(), prompt(p), Some(p.answer.to_string())))
            .collect();
        let mut trainer = GrpoTrainer::new(settings, base, &tok, &rewards)?;
        let (mut reward_sum, mut len_sum, mut n) = (0.0, 0.0, 0usize);
        for step in 0..=s.grpo_steps {
            if step > 0 {
                let (m, _) = trainer.step(&tasks)?;
                reward_sum += m.reward_mean;
                len_sum += m.completion_len_mean;
                n += 1;
            }
            if step % s.eval_every.max(1) == 0 || step == s.grpo_steps {
                let measured = measure(
                    &trainer.policy().inference_copy(),
                    &tok,
                    held_out,
                    &probe(s, seed, &ks),
                )?;
                let avg = |x: f64| if n > 0 { x / n as f64 } else { f64::NAN };
                points.push(R1ZeroPoint {
                    seed,
                    step,
                    measured,
                    train_reward: avg(reward_sum),
                    train_length: avg(len_sum),
                });
                (reward_sum, len_sum, n) = (0.0, 0.0, 0);
                on_phase(seed, &format!("step {step}"));
            }
        }
        let policy = trainer.into_policy();
        policy.save(&seed_dir.join("policy"), reasonlab_model::SaveDtype::F32)?;
        tok.save(&seed_dir.join("policy"))?;
    }
    let rows = rows(&points);
    let summary = R1ZeroSummary {
        settings: s.clone(),
        points,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    let series = |f: fn(&R1ZeroRow) -> &Stat| stat_series(&summary.rows, |_, r| r.step as f64, f);
    let plots = out.join("plots");
    let charts = vec![
        chart(
            &plots,
            "accuracy",
            "R1-Zero from a base model: held-out pass@1 and format",
            "GRPO step",
            &[
                ("pass@1", series(|r| &r.pass1)),
                ("well-formed", series(|r| &r.format)),
            ],
        )?,
        chart(
            &plots,
            "length",
            "Mean response length on held-out problems (tokens)",
            "GRPO step",
            &[("length", series(|r| &r.length))],
        )?,
    ];
    finish(
        out,
        "R1-Zero from a base model",
        &render_markdown(&summary),
        &charts,
    )?;
    Ok(summary)
}

/// The tokenizer: the demo's byte-level BPE trained on the documents, with the answer tags.
pub(crate) fn tokenizer(docs: &[String]) -> Result<Tokenizer, DemoError> {
    demo::train_tokenizer_with(docs, 512, &["<think>", "</think>", "<answer>", "</answer>"])
}

fn rows(points: &[R1ZeroPoint]) -> Vec<R1ZeroRow> {
    let mut steps: Vec<usize> = points.iter().map(|p| p.step).collect();
    steps.sort_unstable();
    steps.dedup();
    steps
        .into_iter()
        .map(|step| {
            let at: Vec<&R1ZeroPoint> = points.iter().filter(|p| p.step == step).collect();
            let stat = |f: fn(&R1ZeroPoint) -> f64| Stat::over(&at, |p| f(p));
            R1ZeroRow {
                step,
                pass1: stat(|p| p.measured.get(MetricKey::PassAt(1))),
                format: stat(|p| p.measured.format),
                length: stat(|p| p.measured.length),
            }
        })
        .collect()
}

/// The table of `summary.json`'s rows.
pub fn render_markdown(s: &R1ZeroSummary) -> String {
    let mut out = format!(
        "held-out ({} problems × {} samples, T = 1), mean ± std over seeds {:?}\n\n\
         | GRPO step | pass@1 | well-formed | length (tokens) |\n| ---: | ---: | ---: | ---: |\n",
        s.settings.eval_problems, s.settings.eval_k, s.settings.seeds
    );
    for r in &s.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} ± {:.1} |\n",
            r.step,
            r.pass1.cell(),
            r.format.cell(),
            r.length.mean,
            r.length.std
        ));
    }
    out
}
