//! `reasonlab demo`: DeepSeek-R1 in miniature (SFT cold start, then R1-Zero-style GRPO), from nothing, on a CPU.
//!
//! 1. Synthetic arithmetic word problems (seeded), split into train and held-out problems.
//! 2. A byte-level BPE tokenizer trained on them (`tokenizers`), with `<think>`/`</think>`.
//! 3. A tiny Qwen2-style model, randomly initialised.
//! 4. A short SFT warm-up ([`SftTrainer`]: loss on the completion tokens of worked solutions
//!    `<think>a + b = c</think> \boxed{c}`), stopped early on purpose so the base model is right
//!    only sometimes. The random model is evaluated first, so the summary shows what SFT did.
//! 5. Held-out evaluation: pass@1 over k samples at temperature 1 and cons@k.
//! 6. R1-Zero GRPO with the accuracy and `<think>` format rewards.
//! 7. The same evaluation again; `summary.json`, `metrics.jsonl`, `completions.jsonl`,
//!    `plots/report.html` (+ SVG curves) in the output folder.

use std::path::{Path, PathBuf};

use reasonlab_core::jsonl::JsonlWriter;
use reasonlab_generate::{SamplingParams, generate};
use reasonlab_model::tensor::Device;
use reasonlab_model::{Model, ModelConfig};
use reasonlab_reward::RewardConfig;
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::AdamWSettings;
use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, StepMetrics, Task};
use reasonlab_train::sft::{
    EncodeSettings, PromptFormat, SftError, SftRecord, SftSettings, SftTrainer, encode_all,
};
use serde::Serialize;
use serde_json::json;

/// Demo knobs; [`DemoSettings::full`] and [`DemoSettings::quick`] are the two shipped sizes.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSettings {
    pub seed: u64,
    pub warmup_steps: usize,
    pub warmup_batch: usize,
    pub warmup_lr: f64,
    pub grpo_steps: usize,
    pub grpo_lr: f64,
    pub group_size: usize,
    pub prompts_per_step: usize,
    pub eval_problems: usize,
    pub eval_k: usize,
    pub hidden_size: usize,
    pub layers: usize,
}

impl DemoSettings {
    pub fn full(seed: u64) -> Self {
        Self {
            seed,
            warmup_steps: 200,
            warmup_batch: 32,
            warmup_lr: 3e-3,
            grpo_steps: 200,
            grpo_lr: 5e-4,
            group_size: 8,
            prompts_per_step: 16,
            eval_problems: 100,
            eval_k: 8,
            hidden_size: 96,
            layers: 2,
        }
    }

    pub fn quick(seed: u64) -> Self {
        Self {
            grpo_steps: 200,
            eval_problems: 64,
            eval_k: 4,
            ..Self::full(seed)
        }
    }
}

/// What happened, also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The random model, before any training.
    pub initial: InitialEval,
    /// After the SFT warm-up (before GRPO).
    pub before: DemoEval,
    pub after: DemoEval,
    pub settings: DemoSettings,
    pub sampling: DemoSampling,
    pub seconds: f64,
}

/// The random model's held-out scores and the SFT warm-up's held-out loss.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitialEval {
    pub eval: DemoEval,
    pub held_out_loss: f64,
    pub held_out_loss_after_sft: f64,
}

/// Held-out scores of one model: pass@1, pass@k and cons@k (as `"pass@1"`, … in JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoEval {
    #[serde(flatten)]
    pub metrics: std::collections::BTreeMap<reasonlab_eval::MetricKey, f64>,
    pub problems: usize,
    pub samples_per_problem: usize,
    pub no_answer_rate: f64,
}

impl DemoEval {
    /// A metric, NaN when it was not measured.
    pub fn get(&self, key: reasonlab_eval::MetricKey) -> f64 {
        self.metrics.get(&key).copied().unwrap_or(f64::NAN)
    }
}

/// How the held-out completions were sampled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoSampling {
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub k: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer training: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Tokenize(#[from] reasonlab_tokenize::TokenizeError),
    #[error(transparent)]
    Model(#[from] reasonlab_model::ModelError),
    #[error(transparent)]
    Generate(#[from] reasonlab_generate::GenerateError),
    #[error(transparent)]
    Grpo(#[from] reasonlab_train::grpo::GrpoError),
    #[error(transparent)]
    Sft(#[from] SftError),
    #[error(transparent)]
    Eval(#[from] reasonlab_eval::EvalError),
    #[error(transparent)]
    Reward(#[from] reasonlab_reward::Error),
    #[error(transparent)]
    Rm(#[from] reasonlab_train::rm::RmError),
    #[error(transparent)]
    Run(#[from] Box<crate::run::RunError>),
    #[error("engine: {0}")]
    Engine(String),
}

/// Progress events for the caller's progress bar.
pub enum Event<'a> {
    Phase(&'a str, usize),
    Tick,
    Grpo(&'a StepMetrics),
}

#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) id: String,
    pub(crate) question: String,
    pub(crate) a: u32,
    pub(crate) b: u32,
    pub(crate) op: char,
    pub(crate) name: &'static str,
    pub(crate) item: &'static str,
    /// A second step on the first one's result (`(op, operand)`), for two-step problems.
    pub(crate) then: Option<(char, u32)>,
    pub(crate) answer: i64,
}

pub(crate) const NAMES: [&str; 6] = ["Tom", "Ana", "Li", "Sara", "Omar", "Mia"];
pub(crate) const ITEMS: [&str; 6] = ["apple", "coin", "book", "pen", "card", "shell"];

pub(crate) fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

/// Every (a, b, op, name, item) with single-digit a, b (subtraction only when a ≥ b), shuffled
/// by seed. Held-out problems share number pairs with training problems but not wording, so a
/// tiny model can learn the arithmetic table and must generalise over the text.
pub(crate) fn problems(seed: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut rng = seed ^ 0xD1B5_4A32_D192_ED03;
    for a in 1..=9u32 {
        for b in 1..=9u32 {
            for op in ['+', '-'] {
                if op == '-' && a < b {
                    continue;
                }
                for name in NAMES {
                    for item in ITEMS {
                        let question = if op == '+' {
                            format!(
                                "{name} has {a} {item}s and gets {b} more. How many {item}s now?"
                            )
                        } else {
                            format!(
                                "{name} has {a} {item}s and gives away {b}. How many {item}s are left?"
                            )
                        };
                        let answer = if op == '+' {
                            (a + b) as i64
                        } else {
                            a as i64 - b as i64
                        };
                        out.push(Problem {
                            id: format!("{name}-{item}-{a}{op}{b}"),
                            question,
                            a,
                            b,
                            op,
                            name,
                            item,
                            then: None,
                            answer,
                        });
                    }
                }
            }
        }
    }
    // Fisher–Yates with the seed.
    for i in (1..out.len()).rev() {
        let j = lcg(&mut rng) as usize % (i + 1);
        out.swap(i, j);
    }
    out
}

pub(crate) fn prompt(p: &Problem) -> String {
    format!("Q: {}\nA: ", p.question)
}

pub(crate) fn solution(p: &Problem) -> String {
    format!(
        "<think>{} {} {} = {}</think> \\boxed{{{}}}",
        p.a, p.op, p.b, p.answer, p.answer
    )
}

const EOS: &str = "<|endoftext|>";

/// Train a byte-level BPE tokenizer on the problems and worked solutions.
pub(crate) fn train_tokenizer(texts: &[String], vocab: usize) -> Result<Tokenizer, DemoError> {
    train_tokenizer_with(texts, vocab, &["<think>", "</think>"])
}

/// [`train_tokenizer`] with `added` as the plain added tokens.
pub(crate) fn train_tokenizer_with(
    texts: &[String],
    vocab: usize,
    added: &[&str],
) -> Result<Tokenizer, DemoError> {
    use tokenizers::models::bpe::{BPE, BpeTrainer};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer as HfTokenizer};
    let err = |e: tokenizers::Error| DemoError::Tokenizer(e.to_string());
    let mut tok = HfTokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: tokenizers::models::TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .build()
        .into();
    tok.train(&mut trainer, texts.iter()).map_err(err)?;
    // The think tags are plain added tokens: they survive `skip_special_tokens` decoding.
    let added: Vec<AddedToken> = added.iter().map(|t| AddedToken::from(*t, false)).collect();
    tok.add_tokens(&added);
    let mut t = Tokenizer::from_inner(tok);
    t.eos_token = Some(EOS.into());
    t.pad_token = Some(EOS.into());
    Ok(t)
}

/// The model-core benchmark's Qwen2 shape (4 heads / 2 KV heads, RMSNorm 1e-6, θ 10000, tied),
/// resized for the demo.
pub(crate) fn config(vocab: usize, s: &DemoSettings, eos: u32) -> ModelConfig {
    tiny_config(vocab, s.hidden_size, s.layers, 128, eos)
}

/// That shape at any width, depth and context: 4 heads of `hidden / 4` (at least 8), an MLP
/// three times as wide.
pub(crate) fn tiny_config(
    vocab: usize,
    hidden: usize,
    layers: usize,
    context: usize,
    eos: u32,
) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: hidden * 3,
        num_hidden_layers: layers,
        head_dim: (hidden / 4).max(8),
        max_position_embeddings: context,
        eos_token_ids: vec![eos],
        ..reasonlab_model::bench_config()
    }
}

pub(crate) const REWARDS: &str = r#"
not_applicable = "zero"
[[reward]]
kind = "accuracy"
weight = 1.0
fallback = "none"
think = "after_think"
[[reward]]
kind = "think_format"
weight = 0.1
answer = "boxed"
"#;

pub(crate) fn sampling(eos: u32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 24,
        stop_token_ids: vec![eos],
        seed,
        max_batch: 256,
        ..SamplingParams::default()
    }
}

/// The problems as the evaluator grades them.
pub(crate) fn eval_problems(problems: &[Problem]) -> Vec<reasonlab_eval::Problem> {
    problems
        .iter()
        .map(|p| reasonlab_eval::Problem {
            id: p.id.clone(),
            problem: p.question.clone(),
            answer: p.answer.to_string(),
            solution: None,
            subject: None,
            level: None,
            source: "arithmetic".into(),
        })
        .collect()
}

/// pass@1 (mean over k samples) and cons@k on the held-out problems.
pub(crate) fn evaluate(
    model: &Model,
    tok: &Tokenizer,
    held_out: &[Problem],
    s: &DemoSettings,
    eos: u32,
) -> Result<DemoEval, DemoError> {
    let prompts: Vec<Vec<u32>> = held_out
        .iter()
        .map(|p| tok.encode(&prompt(p), true))
        .collect::<Result<_, _>>()?;
    let params = sampling(eos, s.seed ^ 0xE7A1);
    let (out, _) = generate(model, Some(tok), &prompts, s.eval_k, &params, &mut |_| {})?;
    let problems = eval_problems(held_out);
    let mut samples = vec![Vec::new(); held_out.len()];
    for c in out {
        samples[c.prompt_index].push(reasonlab_eval::Scored {
            text: c.text,
            finish_reason: None,
            completion_tokens: Some(c.token_ids.len()),
        });
    }
    let k = s.eval_k;
    let verify = reasonlab_answer::VerifyConfig::default();
    let scores = reasonlab_eval::score(&problems, &samples, &[1, k], &verify)?;
    Ok(DemoEval {
        metrics: scores.metrics.iter().map(|(m, e)| (*m, e.mean)).collect(),
        problems: held_out.len(),
        samples_per_problem: k,
        no_answer_rate: scores.no_answer_rate,
    })
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The SFT warm-up on worked solutions (loss on the solution tokens, stopped early): the model,
/// and the held-out loss before and after.
pub(crate) fn warm_up(
    model: Model,
    tok: &Tokenizer,
    train: &[Problem],
    held_out: &[Problem],
    s: &DemoSettings,
    tick: &mut dyn FnMut(),
) -> Result<(Model, f64, f64), DemoError> {
    let records = |ps: &[Problem]| -> Vec<SftRecord> {
        ps.iter()
            .map(|p| SftRecord::PromptCompletion {
                prompt: prompt(p),
                completion: solution(p),
            })
            .collect()
    };
    let sft = SftSettings {
        epochs: 1000, // max_steps ends it
        max_steps: s.warmup_steps,
        batch_size: s.warmup_batch,
        encode: EncodeSettings {
            format: PromptFormat::Raw,
            max_len: 128,
            ..Default::default()
        },
        optim: AdamWSettings {
            lr: s.warmup_lr,
            warmup_steps: 10,
            ..Default::default()
        },
        seed: s.seed ^ 0x5EED,
        ..Default::default()
    };
    let (train_enc, _) = encode_all(&records(train), tok, &sft.encode)?;
    let (held_enc, _) = encode_all(&records(held_out), tok, &sft.encode)?;
    let eos = tok.eos_id().unwrap_or(0);
    let mut trainer = SftTrainer::new(sft, model, train_enc, held_enc, eos)?;
    let held_out_loss_initial = trainer.held_out_loss()?;
    while trainer.step()?.is_some() {
        tick();
    }
    let held_out_loss_after_sft = trainer.held_out_loss()?;
    Ok((
        trainer.into_model(),
        held_out_loss_initial,
        held_out_loss_after_sft,
    ))
}

/// The problems of `s.seed` split into (held-out, train), and the demo's tokenizer trained on
/// the training problems and their worked solutions.
pub(crate) fn task(s: &DemoSettings) -> Result<(Tokenizer, Vec<Problem>, Vec<Problem>), DemoError> {
    let all = problems(s.seed);
    let (held_out, train) = all.split_at(s.eval_problems);
    let corpus: Vec<String> = train
        .iter()
        .map(|p| format!("{}{}", prompt(p), solution(p)))
        .collect();
    Ok((
        train_tokenizer(&corpus, 400)?,
        held_out.to_vec(),
        train.to_vec(),
    ))
}

/// A random model of `s`'s size for `tok`, warmed up with the demo's SFT.
pub(crate) fn cold_start(
    tok: &Tokenizer,
    train: &[Problem],
    held_out: &[Problem],
    s: &DemoSettings,
) -> Result<Model, DemoError> {
    let eos = tok.eos_id().unwrap_or(0);
    let device = Device::flex().autodiff();
    let model = Model::random(config(tok.vocab_size(), s, eos), s.seed, &device);
    Ok(warm_up(model, tok, train, held_out, s, &mut || {})?.0)
}

/// The demo's GRPO settings (R1-Zero preset, its batch, length, learning rate and seed).
pub(crate) fn grpo_settings(s: &DemoSettings) -> GrpoSettings {
    grpo_settings_with(s, Preset::R1Zero)
}

/// The demo's GRPO settings on another preset.
pub(crate) fn grpo_settings_with(s: &DemoSettings, preset: Preset) -> GrpoSettings {
    let mut settings = GrpoSettings::preset(preset);
    settings.group_size = s.group_size;
    settings.prompts_per_step = s.prompts_per_step;
    settings.steps = s.grpo_steps;
    settings.max_new_tokens = 24;
    settings.optim = AdamWSettings {
        lr: s.grpo_lr,
        ..Default::default()
    };
    settings.seed = s.seed;
    settings
}

/// The training problems as GRPO tasks with the demo's prompt.
pub(crate) fn tasks(train: &[Problem]) -> Vec<Task> {
    train
        .iter()
        .map(|p| Task::new(p.id.clone(), prompt(p), Some(p.answer.to_string())))
        .collect()
}

/// Run the whole demo, writing into `out`.
pub fn run(
    out: &Path,
    s: &DemoSettings,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<DemoSummary, DemoError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(out.join("plots")).map_err(io_err(out))?;
    // Tokenizer and model from scratch.
    let (tok, held_out, train) = task(s)?;
    let (held_out, train) = (&held_out[..], &train[..]);
    let eos = tok.eos_id().unwrap_or(0);
    let device = Device::flex().autodiff();
    let model = Model::random(config(tok.vocab_size(), s, eos), s.seed, &device);
    on_event(Event::Phase("eval (random init)", 1));
    let initial = evaluate(&model.inference_copy(), &tok, held_out, s, eos)?;
    on_event(Event::Tick);
    // Warm-up: SFT (loss on solution tokens only) on worked solutions, stopped early.
    on_event(Event::Phase("warm-up (sft)", s.warmup_steps));
    let (model, held_out_loss_initial, held_out_loss_after_sft) =
        warm_up(model, &tok, train, held_out, s, &mut || {
            on_event(Event::Tick)
        })?;
    on_event(Event::Phase("eval (before)", 1));
    let before = evaluate(&model.inference_copy(), &tok, held_out, s, eos)?;
    on_event(Event::Tick);
    // R1-Zero GRPO.
    let reward_config = RewardConfig::from_toml(REWARDS)?;
    let rewards = reward_config.build();
    let settings = grpo_settings(s);
    let tasks = tasks(train);
    let mut trainer = GrpoTrainer::new(settings.clone(), model, &tok, &rewards)?;
    let metrics_path = out.join("metrics.jsonl");
    let completions_path = out.join("completions.jsonl");
    let mut metrics_w =
        JsonlWriter::new(std::fs::File::create(&metrics_path).map_err(io_err(&metrics_path))?);
    let mut comp_w = JsonlWriter::new(
        std::fs::File::create(&completions_path).map_err(io_err(&completions_path))?,
    );
    let mut history = Vec::new();
    on_event(Event::Phase("grpo", s.grpo_steps));
    for _ in 0..s.grpo_steps {
        let (m, rollouts) = trainer.step(&tasks)?;
        metrics_w.write(&m).map_err(io_err(&metrics_path))?;
        for r in rollouts.iter().step_by(s.group_size) {
            comp_w.write(r).map_err(io_err(&completions_path))?;
        }
        on_event(Event::Grpo(&m));
        history.push(m);
    }
    let model = trainer.into_policy();
    on_event(Event::Phase("eval (after)", 1));
    let after = evaluate(&model.inference_copy(), &tok, held_out, s, eos)?;
    on_event(Event::Tick);
    // Save the trained model and tokenizer in HF layout.
    let model_dir = out.join("model");
    model.save(&model_dir, reasonlab_model::SaveDtype::F32)?;
    tok.save(&model_dir)?;
    crate::plots::write_report(&out.join("plots"), &history, &before, &after)
        .map_err(io_err(out))?;
    let summary = DemoSummary {
        initial: InitialEval {
            eval: initial,
            held_out_loss: held_out_loss_initial,
            held_out_loss_after_sft,
        },
        before,
        after,
        settings: s.clone(),
        sampling: DemoSampling {
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 24,
            k: s.eval_k,
        },
        seconds: started.elapsed().as_secs_f64(),
    };
    let path = out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    reasonlab_core::fs::atomic_write(&path, text.as_bytes()).map_err(io_err(&path))?;
    let cfg = out.join("config.json");
    let text =
        serde_json::to_string_pretty(&json!({"demo": s, "grpo": settings})).unwrap_or_default();
    reasonlab_core::fs::atomic_write(&cfg, text.as_bytes()).map_err(io_err(&cfg))?;
    Ok(summary)
}
