//! The built-in arithmetic task as files, for recipes that run on a laptop: a recipe stage of
//! kind `task` writes, into its folder,
//!
//! | file | what | rows |
//! | --- | --- | --- |
//! | `train.jsonl`, `held_out.jsonl` | problems: `id`, `problem`, `answer` | the demo's word problems, split by seed |
//! | `pretrain.jsonl` | `text`: web-like pages about the training problems (stories, worksheets, tutoring transcripts in R1-Zero's format, some wrong) | one per training problem |
//! | `web.jsonl` | `text`: everyday prose with no arithmetic (a natural-language source for mixtures) | as many |
//! | `cot.jsonl` | `prompt` (R1-Zero's template), `completion`: long, readable, right reasoning in `<think>`, the answer in `<answer>` | `cot_examples` |
//! | `short_cot.jsonl` | the same prompts with the shortest reasoning (`3 + 4 = 7`) | as many |
//! | `non_reasoning.jsonl` | `prompt`, `completion`: questions about the story that need no arithmetic, answered without reasoning | `non_reasoning_examples` |
//! | `NAME/` for each `[[models]]` | a randomly initialised Qwen2-style model with the task's byte-level BPE tokenizer, in HF layout | |
//!
//! ```toml
//! [[stage]]
//! name = "task"
//! kind = "task"
//! [stage.config]
//! seed = 0
//! held_out = 100
//! models = [{ name = "base", hidden_size = 96, layers = 2 }]
//! ```
//!
//! Later stages name the files as `"@task/train.jsonl"`, `"@task/base"`, ….

use std::path::PathBuf;

use reasonlab_core::jsonl::JsonlWriter;
use reasonlab_model::tensor::Device;
use reasonlab_model::{Model, ModelConfig, SaveDtype};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::demo::{self, DemoError, Problem, io_err, lcg};
use crate::experiments::r1_zero::{self, R1ZeroSettings};

/// One model the task initialises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSize {
    pub name: String,
    pub hidden_size: usize,
    pub layers: usize,
}

/// A `task` stage's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub out: PathBuf,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_held_out")]
    pub held_out: usize,
    #[serde(default = "default_cot")]
    pub cot_examples: usize,
    #[serde(default = "default_cot")]
    pub non_reasoning_examples: usize,
    /// Share of pretraining pages that are tutoring transcripts, and of those with a wrong
    /// answer.
    #[serde(default = "default_transcripts")]
    pub transcript_share: f64,
    #[serde(default = "default_transcripts")]
    pub wrong_share: f64,
    #[serde(default = "default_models")]
    pub models: Vec<ModelSize>,
}

fn default_held_out() -> usize {
    100
}
fn default_cot() -> usize {
    256
}
fn default_transcripts() -> f64 {
    0.3
}
fn default_models() -> Vec<ModelSize> {
    vec![ModelSize {
        name: "base".into(),
        hidden_size: 96,
        layers: 2,
    }]
}

/// What the task wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    pub train: usize,
    pub held_out: usize,
    pub models: Vec<PathBuf>,
}

const PLACES: [&str; 6] = ["park", "market", "library", "river", "school", "garden"];
const WEATHER: [&str; 4] = ["sunny", "rainy", "windy", "cold"];

/// Everyday prose about the task's names and things, with no numbers.
fn web_page(p: &Problem, rng: &mut u64) -> String {
    let place = PLACES[lcg(rng) as usize % PLACES.len()];
    let weather = WEATHER[lcg(rng) as usize % WEATHER.len()];
    format!(
        "It was {weather} when {} walked to the {place}. {} liked the {place} because the \
         {}s there were pretty. Later {} went home for dinner.",
        p.name, p.name, p.item, p.name
    )
}

fn model_config(vocab: usize, m: &ModelSize, eos: u32) -> ModelConfig {
    demo::tiny_config(vocab, m.hidden_size, m.layers, 256, eos)
}

/// Write the task's files into `cfg.out`.
pub fn write(cfg: &TaskConfig) -> Result<TaskSummary, DemoError> {
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let all = demo::problems(cfg.seed);
    let held = cfg.held_out.min(all.len() / 2);
    let (held_out, train) = all.split_at(held);
    let settings = R1ZeroSettings {
        transcript_share: cfg.transcript_share,
        wrong_share: cfg.wrong_share,
        ..R1ZeroSettings::new(vec![cfg.seed])
    };
    let pages = r1_zero::documents(train, &settings, cfg.seed);
    let mut rng = cfg.seed ^ 0x7A5C;
    let web: Vec<String> = train.iter().map(|p| web_page(p, &mut rng)).collect();
    let cot: Vec<(String, String)> = train
        .iter()
        .take(cfg.cot_examples)
        .map(|p| (r1_zero::prompt(p), r1_zero::transcript(p, p.answer, 2)))
        .collect();
    let short_cot: Vec<(String, String)> = train
        .iter()
        .take(cfg.cot_examples)
        .map(|p| (r1_zero::prompt(p), r1_zero::transcript(p, p.answer, 0)))
        .collect();
    let non_reasoning: Vec<(String, String)> = train
        .iter()
        .rev()
        .take(cfg.non_reasoning_examples)
        .map(|p| {
            (
                r1_zero::prompt_for(&format!("Who is this about? {}", p.question)),
                format!(" <think> </think> <answer> {} </answer>", p.name),
            )
        })
        .collect();
    let problems = |name: &str, ps: &[Problem]| -> Result<(), DemoError> {
        let path = out.join(name);
        let mut w = JsonlWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
        for p in ps {
            w.write(&json!({"id": p.id, "problem": p.question, "answer": p.answer.to_string()}))
                .map_err(io_err(&path))?;
        }
        Ok(())
    };
    problems("train.jsonl", train)?;
    problems("held_out.jsonl", held_out)?;
    let texts = |name: &str, docs: &[String]| -> Result<(), DemoError> {
        let path = out.join(name);
        let mut w = JsonlWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
        for d in docs {
            w.write(&json!({ "text": d })).map_err(io_err(&path))?;
        }
        Ok(())
    };
    texts("pretrain.jsonl", &pages)?;
    texts("web.jsonl", &web)?;
    let pairs = |name: &str, rows: &[(String, String)]| -> Result<(), DemoError> {
        let path = out.join(name);
        let mut w = JsonlWriter::new(std::fs::File::create(&path).map_err(io_err(&path))?);
        for (prompt, completion) in rows {
            w.write(&json!({ "prompt": prompt, "completion": completion }))
                .map_err(io_err(&path))?;
        }
        Ok(())
    };
    pairs("cot.jsonl", &cot)?;
    pairs("short_cot.jsonl", &short_cot)?;
    pairs("non_reasoning.jsonl", &non_reasoning)?;
    // One tokenizer for every model, trained on all the task's text.
    let mut corpus = pages.clone();
    corpus.extend(web);
    corpus.extend(
        cot.iter()
            .chain(&non_reasoning)
            .map(|(p, c)| format!("{p}{c}")),
    );
    let tok = r1_zero::tokenizer(&corpus)?;
    let eos = tok.eos_id().unwrap_or(0);
    let device = Device::flex();
    let mut models = Vec::new();
    for (i, m) in cfg.models.iter().enumerate() {
        let dir = out.join(&m.name);
        let model = Model::random(
            model_config(tok.vocab_size(), m, eos),
            cfg.seed.wrapping_add(i as u64),
            &device,
        );
        model.save(&dir, SaveDtype::F32)?;
        tok.save(&dir)?;
        models.push(dir);
    }
    Ok(TaskSummary {
        train: train.len(),
        held_out: held_out.len(),
        models,
    })
}
