//! The DeepSeekMath and DeepSeek-R1 papers' central claims in miniature, on the demo's
//! arithmetic task, each one command (`reasonlab experiment NAME --seeds 0,1,2`) that writes
//! `summary.json`, a Markdown `table.md` (mean ± sample std over seeds) and PNG/SVG plots with
//! error bars under its output folder:
//!
//! - [`r1_zero`]: pure RL from a base model that was only pretrained (R1 §2.2, Fig. 2–3);
//! - [`rl_vs_sft`]: RL raises maj@K while pass@K stays near the SFT model (DeepSeekMath §5.2.2);
//! - [`distill`]: a small student distilled from an RL-trained teacher against the same student
//!   trained with RL (R1 §4.1);
//! - [`corpus`]: tiny models pretrained on equal token budgets of a classifier-recalled, a
//!   random and a keyword-filtered corpus from one web-like pool (DeepSeekMath §2.2);
//! - outcome against process supervision is `reasonlab demo --compare-supervision`
//!   ([`crate::supervision`]).

pub mod corpus;
pub mod distill;
pub mod r1_zero;
pub mod rl_vs_sft;

use std::collections::BTreeMap;
use std::path::Path;

use reasonlab_answer::VerifyConfig;
use reasonlab_eval::MetricKey;
use reasonlab_generate::generate;
use reasonlab_model::Model;
use reasonlab_reward::think_format::ThinkFormat;
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::AdamWSettings;
use reasonlab_train::sft::{
    EncodeSettings, PromptFormat, SftRecord, SftSettings, SftTrainer, encode_all,
};
use serde::{Deserialize, Serialize};

use crate::demo::{DemoError, Problem, io_err};

/// The experiments `reasonlab experiment` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    R1Zero,
    RlVsSft,
    DistillVsRl,
    Corpus,
    Supervision,
}

impl Experiment {
    pub const ALL: [Experiment; 5] = [
        Experiment::R1Zero,
        Experiment::RlVsSft,
        Experiment::DistillVsRl,
        Experiment::Corpus,
        Experiment::Supervision,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Experiment::R1Zero => "r1-zero",
            Experiment::RlVsSft => "rl-vs-sft",
            Experiment::DistillVsRl => "distill-vs-rl",
            Experiment::Corpus => "corpus",
            Experiment::Supervision => "supervision",
        }
    }
}

/// Mean, sample standard deviation, min and max of one measurement over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Stat {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stat {
            mean,
            std: var.sqrt(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n,
        }
    }

    /// The statistic of `f` over `items` (seeds, or one arm's runs).
    pub fn over<T>(items: &[T], f: impl Fn(&T) -> f64) -> Stat {
        Stat::of(&items.iter().map(f).collect::<Vec<_>>())
    }

    /// `0.512 ± 0.031`.
    pub fn cell(&self) -> String {
        format!("{:.3} ± {:.3}", self.mean, self.std)
    }
}

/// How held-out problems are sampled and graded.
pub(crate) struct Probe<'a> {
    pub prompt: &'a dyn Fn(&Problem) -> String,
    /// Samples per problem.
    pub n: usize,
    /// The k of pass@k and cons@k.
    pub ks: &'a [usize],
    pub max_new_tokens: usize,
    pub seed: u64,
    pub verify: VerifyConfig,
    /// Also count completions this format check accepts.
    pub format: Option<ThinkFormat>,
}

/// What a probe measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub metrics: BTreeMap<MetricKey, f64>,
    /// Mean completion length in tokens.
    pub length: f64,
    /// Share of completions the format check accepts (NaN without one).
    pub format: f64,
}

impl Measured {
    pub fn get(&self, key: MetricKey) -> f64 {
        self.metrics.get(&key).copied().unwrap_or(f64::NAN)
    }
}

/// Sample `probe.n` completions of every held-out problem at T = 1 and grade them.
pub(crate) fn measure(
    model: &Model,
    tok: &Tokenizer,
    held_out: &[Problem],
    probe: &Probe<'_>,
) -> Result<Measured, DemoError> {
    let prompts: Vec<Vec<u32>> = held_out
        .iter()
        .map(|p| tok.encode(&(probe.prompt)(p), true))
        .collect::<Result<_, _>>()?;
    let eos = tok.eos_id().unwrap_or(0);
    let mut params = crate::demo::sampling(eos, probe.seed);
    params.max_new_tokens = probe.max_new_tokens;
    let (out, _) = generate(model, Some(tok), &prompts, probe.n, &params, &mut |_| {})?;
    let problems = crate::demo::eval_problems(held_out);
    let mut samples = vec![Vec::new(); held_out.len()];
    let (mut tokens, mut formatted) = (0usize, 0usize);
    let total = out.len().max(1);
    for c in out {
        tokens += c.token_ids.len();
        if probe.format.is_some_and(|f| f.is_well_formed(&c.text)) {
            formatted += 1;
        }
        samples[c.prompt_index].push(reasonlab_eval::Scored {
            text: c.text,
            finish_reason: None,
            completion_tokens: Some(c.token_ids.len()),
        });
    }
    let scores = reasonlab_eval::score(&problems, &samples, probe.ks, &probe.verify)?;
    Ok(Measured {
        metrics: scores.metrics.iter().map(|(m, e)| (*m, e.mean)).collect(),
        length: tokens as f64 / total as f64,
        format: if probe.format.is_some() {
            formatted as f64 / total as f64
        } else {
            f64::NAN
        },
    })
}

/// A short fine-tuning run: raw `prompt + completion + EOS`, loss on the completion, no
/// held-out set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tune {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub max_len: usize,
    pub seed: u64,
}

/// Train `model` on `records` as `tune` says.
pub(crate) fn fine_tune(
    model: Model,
    tok: &Tokenizer,
    records: &[SftRecord],
    tune: Tune,
) -> Result<Model, DemoError> {
    let settings = SftSettings {
        epochs: 1000, // max_steps ends it
        max_steps: tune.steps,
        batch_size: tune.batch,
        encode: EncodeSettings {
            format: PromptFormat::Raw,
            max_len: tune.max_len,
            ..Default::default()
        },
        optim: AdamWSettings {
            lr: tune.lr,
            warmup_steps: 10,
            ..Default::default()
        },
        seed: tune.seed,
        ..Default::default()
    };
    let (enc, _) = encode_all(records, tok, &settings.encode)?;
    let eos = tok.eos_id().unwrap_or(0);
    let mut trainer = SftTrainer::new(settings, model, enc, Vec::new(), eos)?;
    while trainer.step()?.is_some() {}
    Ok(trainer.into_model())
}

/// Write `value` as pretty JSON, atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DemoError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    reasonlab_core::fs::atomic_write(path, text.as_bytes()).map_err(io_err(path))
}

/// One chart with error bars as `dir/name.{svg,png}`; returns the SVG for a report.
/// One chart series: `(x, mean, std)` of a row's statistic for each row.
pub(crate) fn stat_series<R>(
    rows: &[R],
    x: impl Fn(usize, &R) -> f64,
    stat: impl Fn(&R) -> &Stat,
) -> Vec<(f64, f64, f64)> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| (x(i, r), stat(r).mean, stat(r).std))
        .collect()
}

pub(crate) fn chart(
    dir: &Path,
    name: &str,
    title: &str,
    x_label: &str,
    series: &[crate::plots::ErrorSeries<'_>],
) -> Result<String, DemoError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let scene = crate::plots::error_chart_scene(title, x_label, series);
    crate::plots::write_chart(dir, name, &scene).map_err(io_err(dir))
}

/// `dir/report.html`: a title, the Markdown table as preformatted text, and the charts.
pub(crate) fn write_html(
    dir: &Path,
    title: &str,
    table: &str,
    charts: &[String],
) -> Result<(), DemoError> {
    let escaped = table
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em}}</style>\
         </head><body><h1>{title}</h1><pre>{escaped}</pre>{}</body></html>",
        charts.concat()
    );
    let path = dir.join("report.html");
    std::fs::write(&path, html).map_err(io_err(&path))
}

/// The Markdown table and the report of an experiment in `out`.
pub(crate) fn finish(
    out: &Path,
    title: &str,
    table: &str,
    charts: &[String],
) -> Result<(), DemoError> {
    let path = out.join("table.md");
    std::fs::write(&path, table).map_err(io_err(&path))?;
    write_html(&out.join("plots"), title, table, charts)
}
