//! Distillation against RL on a small student (DeepSeek-R1 §4.1):
//! `reasonlab experiment distill-vs-rl`.
//!
//! The paper's claim: distilling a stronger model's reasoning into a small model beats
//! large-scale RL on the small model itself. For every seed, with the demo's tokenizer:
//! - a larger teacher (`teacher_hidden`, `teacher_layers`) is warmed up with the demo's SFT and
//!   trained with the demo's GRPO;
//! - a small student (`student_hidden`, `student_layers`) is warmed up the same way; from that
//!   one starting point,
//!   - **RL**: `steps` GRPO steps of `prompts_per_step × group_size` rollouts;
//!   - **distillation**: the teacher samples `traces_per_problem` completions of every training
//!     problem, the verifier keeps the right ones (rejection sampling), and the student is
//!     fine-tuned on them for the same `steps` optimizer steps of the same number of sequences.
//!
//! "Equal compute" is equal student optimizer steps over equal numbers of sequences; RL also
//! pays for sampling its rollouts, distillation for the teacher's traces, and the wall time of
//! each is in the summary.

use std::path::Path;

use reasonlab_answer::VerifyConfig;
use reasonlab_eval::MetricKey;
use reasonlab_generate::generate;
use reasonlab_model::Model;
use reasonlab_reward::RewardConfig;
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::grpo::GrpoTrainer;
use reasonlab_train::sft::SftRecord;
use serde::Serialize;

use super::{
    Measured, Probe, Stat, Tune, chart, fine_tune, finish, measure, stat_series, write_json,
};
use crate::demo::{self, DemoError, DemoSettings, Problem, io_err};

/// The experiment's knobs.
#[derive(Debug, Clone, Serialize)]
pub struct DistillSettings {
    pub seeds: Vec<u64>,
    pub teacher_hidden: usize,
    pub teacher_layers: usize,
    pub teacher_grpo_steps: usize,
    pub student_hidden: usize,
    pub student_layers: usize,
    /// Student optimizer steps in each arm.
    pub steps: usize,
    pub traces_per_problem: usize,
    pub distill_lr: f64,
    pub eval_k: usize,
    /// The demo's settings (warm-up, GRPO batch and learning rate, held-out size).
    pub demo: DemoSettings,
}

impl DistillSettings {
    pub fn new(seeds: Vec<u64>) -> Self {
        Self {
            seeds,
            teacher_hidden: 192,
            teacher_layers: 3,
            teacher_grpo_steps: 200,
            student_hidden: 48,
            student_layers: 1,
            steps: 200,
            traces_per_problem: 2,
            distill_lr: 1e-3,
            eval_k: 8,
            demo: DemoSettings::full(0),
        }
    }

    pub fn quick(seeds: Vec<u64>) -> Self {
        let mut s = Self::new(seeds);
        s.teacher_hidden = 64;
        s.teacher_grpo_steps = 2;
        s.steps = 2;
        s.traces_per_problem = 1;
        s.eval_k = 2;
        s.demo.warmup_steps = 20;
        s.demo.eval_problems = 16;
        s
    }
}

/// One seed's models.
#[derive(Debug, Clone, Serialize)]
pub struct DistillSeed {
    pub seed: u64,
    pub teacher: Measured,
    pub student_start: Measured,
    pub rl: Measured,
    pub distilled: Measured,
    /// Teacher traces kept by the verifier, of those sampled.
    pub traces_kept: usize,
    pub traces_sampled: usize,
    /// Wall time of each student arm, and of sampling the teacher's traces.
    pub rl_seconds: f64,
    pub distill_seconds: f64,
    pub traces_seconds: f64,
}

/// Mean ± std over seeds of one model.
#[derive(Debug, Clone, Serialize)]
pub struct DistillRow {
    pub model: String,
    pub pass1: Stat,
    pub cons: Stat,
    pub seconds: Option<Stat>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DistillSummary {
    pub settings: DistillSettings,
    pub seeds: Vec<DistillSeed>,
    pub rows: Vec<DistillRow>,
    pub seconds: f64,
}

fn sized(d: &DemoSettings, hidden: usize, layers: usize) -> DemoSettings {
    DemoSettings {
        hidden_size: hidden,
        layers,
        ..d.clone()
    }
}

/// GRPO with the demo's rule rewards for `steps` steps.
fn reinforce(
    model: Model,
    tok: &Tokenizer,
    train: &[Problem],
    d: &DemoSettings,
    steps: usize,
) -> Result<Model, DemoError> {
    let rewards = RewardConfig::from_toml(demo::REWARDS)?.build();
    let tasks = demo::tasks(train);
    let mut settings = demo::grpo_settings(d);
    settings.steps = steps;
    let mut trainer = GrpoTrainer::new(settings, model, tok, &rewards)?;
    for _ in 0..steps {
        trainer.step(&tasks)?;
    }
    Ok(trainer.into_policy())
}

/// The teacher's right completions of the training problems.
fn traces(
    teacher: &Model,
    tok: &Tokenizer,
    train: &[Problem],
    n: usize,
    seed: u64,
) -> Result<(Vec<SftRecord>, usize), DemoError> {
    let prompts: Vec<Vec<u32>> = train
        .iter()
        .map(|p| tok.encode(&demo::prompt(p), true))
        .collect::<Result<_, _>>()?;
    let params = demo::sampling(tok.eos_id().unwrap_or(0), seed ^ 0x7EAC);
    let (out, _) = generate(teacher, Some(tok), &prompts, n, &params, &mut |_| {})?;
    let sampled = out.len();
    let verify = VerifyConfig::default();
    let kept = out
        .into_iter()
        .filter(|c| {
            let p = &train[c.prompt_index];
            reasonlab_answer::verify(&p.answer.to_string(), &c.text, None, &verify).correct
        })
        .map(|c| SftRecord::PromptCompletion {
            prompt: demo::prompt(&train[c.prompt_index]),
            completion: c.text,
        })
        .collect();
    Ok((kept, sampled))
}

/// Run every seed into `out`.
pub fn run(
    out: &Path,
    s: &DistillSettings,
    on_phase: &mut dyn FnMut(u64, &str),
) -> Result<DistillSummary, DemoError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out.join("plots")).map_err(io_err(out))?;
    let ks = [1, s.eval_k];
    let mut seeds = Vec::new();
    for &seed in &s.seeds {
        let d = DemoSettings {
            seed,
            ..s.demo.clone()
        };
        let (tok, held_out, train) = demo::task(&d)?;
        let probe = Probe {
            prompt: &demo::prompt,
            n: s.eval_k,
            ks: &ks,
            max_new_tokens: 24,
            seed: seed ^ 0xE7A1,
            verify: VerifyConfig::default(),
            format: None,
        };
        let eval = |m: &Model| measure(&m.inference_copy(), &tok, &held_out, &probe);
        on_phase(seed, "teacher: sft + grpo");
        let td = sized(&d, s.teacher_hidden, s.teacher_layers);
        let teacher = demo::cold_start(&tok, &train, &held_out, &td)?;
        let teacher = reinforce(teacher, &tok, &train, &td, s.teacher_grpo_steps)?;
        let teacher_m = eval(&teacher)?;
        on_phase(seed, "student: sft");
        let sd = sized(&d, s.student_hidden, s.student_layers);
        let student = demo::cold_start(&tok, &train, &held_out, &sd)?;
        let start_m = eval(&student)?;
        on_phase(seed, "student: grpo");
        let t = std::time::Instant::now();
        let rl = reinforce(student.clone(), &tok, &train, &sd, s.steps)?;
        let rl_seconds = t.elapsed().as_secs_f64();
        let rl_m = eval(&rl)?;
        on_phase(seed, "student: distillation");
        let t = std::time::Instant::now();
        let (records, sampled) = traces(
            &teacher.inference_copy(),
            &tok,
            &train,
            s.traces_per_problem,
            seed,
        )?;
        let traces_seconds = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let batch = d.prompts_per_step * d.group_size;
        let tune = Tune {
            steps: s.steps,
            batch,
            lr: s.distill_lr,
            max_len: 128,
            seed: seed ^ 0xD15,
        };
        let distilled = fine_tune(student, &tok, &records, tune)?;
        let distill_seconds = t.elapsed().as_secs_f64();
        let distilled_m = eval(&distilled)?;
        seeds.push(DistillSeed {
            seed,
            teacher: teacher_m,
            student_start: start_m,
            rl: rl_m,
            distilled: distilled_m,
            traces_kept: records.len(),
            traces_sampled: sampled,
            rl_seconds,
            distill_seconds,
            traces_seconds,
        });
    }
    let k = s.eval_k;
    type Pick = fn(&DistillSeed) -> &Measured;
    type Seconds = Option<fn(&DistillSeed) -> f64>;
    let models: [(&str, Pick, Seconds); 4] = [
        ("teacher (RL)", |x| &x.teacher, None),
        ("student after SFT warm-up", |x| &x.student_start, None),
        ("student + RL", |x| &x.rl, Some(|x| x.rl_seconds)),
        (
            "student + distillation",
            |x| &x.distilled,
            Some(|x| x.distill_seconds + x.traces_seconds),
        ),
    ];
    let rows = models
        .iter()
        .map(|(name, pick, secs)| {
            let stat = |f: &dyn Fn(&DistillSeed) -> f64| Stat::over(&seeds, f);
            DistillRow {
                model: (*name).into(),
                pass1: stat(&|x| pick(x).get(MetricKey::PassAt(1))),
                cons: stat(&|x| pick(x).get(MetricKey::ConsAt(k))),
                seconds: secs.map(|f| stat(&f)),
            }
        })
        .collect();
    let summary = DistillSummary {
        settings: s.clone(),
        seeds,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    // One bar-like chart: each model's pass@1 and cons@k as points at x = 0..3.
    let series = |f: fn(&DistillRow) -> &Stat| stat_series(&summary.rows, |i, _| i as f64, f);
    let cons_name = format!("cons@{k}");
    let charts = vec![chart(
        &out.join("plots"),
        "models",
        "0 teacher, 1 student start, 2 student + RL, 3 student + distillation",
        "model",
        &[
            ("pass@1", series(|r| &r.pass1)),
            (&cons_name, series(|r| &r.cons)),
        ],
    )?];
    finish(
        out,
        "Distillation against RL on a small student",
        &render_markdown(&summary),
        &charts,
    )?;
    Ok(summary)
}

/// The table of `summary.json`'s rows.
pub fn render_markdown(s: &DistillSummary) -> String {
    let k = s.settings.eval_k;
    let mut out = format!(
        "held-out ({} problems × {k} samples, T = 1), mean ± std over seeds {:?}; teacher \
         hidden {} × {} layers, student hidden {} × {} layer(s), {} student steps per arm\n\n\
         | model | pass@1 | cons@{k} | student seconds |\n| --- | ---: | ---: | ---: |\n",
        s.settings.demo.eval_problems,
        s.settings.seeds,
        s.settings.teacher_hidden,
        s.settings.teacher_layers,
        s.settings.student_hidden,
        s.settings.student_layers,
        s.settings.steps
    );
    for r in &s.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.model,
            r.pass1.cell(),
            r.cons.cell(),
            r.seconds
                .map_or("".into(), |t| format!("{:.0} ± {:.0}", t.mean, t.std))
        ));
    }
    out
}
