//! `reasonlab grpo --config grpo.toml`: GRPO on a local HF checkpoint.
//!
//! ```toml
//! model = "ckpt/qwen2.5-math-1.5b"    # HF directory (config.json, safetensors, tokenizer.json)
//! data = "train.jsonl"                 # {"id", "problem" | "prompt", "answer"} per line
//! template = "r1"                      # "r1" (adds R1's instruction) or "plain"
//! chat = true                          # render with the model's chat template
//! rewards = "examples/rewards.toml"
//! out = "runs/grpo"
//! preset = "r1-zero"                   # deepseekmath | r1-zero | dr-grpo | dapo | gspo
//! save_every = 50
//! [grpo]                               # any GrpoSettings field overrides the preset
//! steps = 200
//! group_size = 8
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use reasonlab_core::jsonl::{self, BadLines, JsonlWriter};
use reasonlab_model::{BackendKind, Model, device_for};
use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, Task};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Continue from the newest checkpoint in `out/checkpoints`.
    #[arg(long)]
    resume: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum Template {
    /// `{problem}\nPlease reason step by step, and put your final answer within \boxed{}.`
    #[default]
    R1,
    /// The problem text as is.
    Plain,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    model: PathBuf,
    data: PathBuf,
    #[serde(default)]
    template: Template,
    #[serde(default)]
    chat: bool,
    rewards: PathBuf,
    out: PathBuf,
    #[serde(default = "default_preset")]
    preset: Preset,
    #[serde(default)]
    save_every: usize,
    #[serde(default)]
    grpo: toml::Table,
}

fn default_preset() -> Preset {
    Preset::R1Zero
}

#[derive(Deserialize)]
struct Row {
    id: Option<serde_json::Value>,
    problem: Option<String>,
    prompt: Option<String>,
    answer: Option<serde_json::Value>,
}

#[derive(serde::Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    data_position: usize,
}

/// Preset values with the `[grpo]` table laid over them.
fn settings(preset: Preset, overrides: &toml::Table) -> anyhow::Result<GrpoSettings> {
    let mut base = serde_json::to_value(GrpoSettings::preset(preset))?;
    let over = serde_json::to_value(overrides)?;
    merge(&mut base, over);
    serde_json::from_value(base).context("[grpo] table")
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg: RunConfig =
        toml::from_str(&text).with_context(|| format!("{}", args.config.display()))?;
    let here = args.config.parent().unwrap_or(Path::new("."));
    let settings = settings(cfg.preset, &cfg.grpo)?;
    let out = resolve(here, &cfg.out);
    std::fs::create_dir_all(out.join("checkpoints"))?;
    let reward_cfg = reasonlab_reward::RewardConfig::load(&resolve(here, &cfg.rewards))?;
    let names: Vec<String> = reward_cfg.names();
    let rewards = reward_cfg.build();
    // Resume: the newest checkpoint's weights and data position.
    let mut model_dir = resolve(here, &cfg.model);
    let mut state = TrainerState {
        step: 0,
        data_position: 0,
    };
    if args.resume
        && let Some(dir) = newest_checkpoint(&out.join("checkpoints"))?
    {
        state = serde_json::from_str(&std::fs::read_to_string(dir.join("trainer_state.json"))?)?;
        eprintln!("resuming from {} (step {})", dir.display(), state.step);
        model_dir = dir;
    }
    let (_, tokenizer) = super::local::load(&model_dir, BackendKind::Flex)?;
    let tokenizer = tokenizer.context("the model directory has no tokenizer.json")?;
    let device = device_for(BackendKind::Flex, true)?;
    let policy = Model::load(&model_dir, &device)?;
    let rows: Vec<Row> = jsonl::read(&resolve(here, &cfg.data), BadLines::Skip)?;
    let mut tasks = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        let Some(text) = r.problem.or(r.prompt) else {
            continue;
        };
        let body = match cfg.template {
            Template::R1 => format!(
                "{text}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
            ),
            Template::Plain => text,
        };
        let (prompt, add_special_tokens) = if cfg.chat {
            let msgs = [reasonlab_tokenize::Message::new(
                reasonlab_tokenize::Role::User,
                body,
            )];
            (tokenizer.render_chat(&msgs, true)?, false)
        } else {
            (body, true)
        };
        tasks.push(Task {
            id: r
                .id
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_else(|| i.to_string()),
            prompt,
            gold: r.answer.map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            }),
            add_special_tokens,
        });
    }
    anyhow::ensure!(
        !tasks.is_empty(),
        "no usable rows in {}",
        cfg.data.display()
    );
    let total = settings.steps;
    let mut trainer = GrpoTrainer::new(settings, policy, &tokenizer, &rewards, &names)?;
    trainer.step = state.step;
    trainer.data_position = state.data_position;
    std::fs::write(out.join("config.toml"), &text)?;
    let mut metrics = JsonlWriter::append(&out.join("metrics.jsonl"))?;
    let mut completions = JsonlWriter::append(&out.join("completions.jsonl"))?;
    let bar = ProgressBar::new(total as u64);
    bar.set_position(state.step as u64);
    bar.set_style(
        ProgressStyle::with_template("grpo [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while trainer.step < total {
        let (m, rollouts) = trainer.step(&tasks)?;
        metrics.write(&m)?;
        for r in &rollouts {
            completions.write(r)?;
        }
        bar.set_message(format!(
            "reward {:.3}  acc {:.3}  len {:.1}",
            m.reward_mean, m.accuracy, m.completion_len_mean
        ));
        bar.inc(1);
        if cfg.save_every > 0 && (trainer.step % cfg.save_every == 0 || trainer.step == total) {
            save_checkpoint(&out, &trainer, &model_dir)?;
        }
    }
    bar.finish();
    Ok(())
}

fn newest_checkpoint(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut best: Option<(usize, PathBuf)> = None;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let step = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(s) = step
            && p.join("trainer_state.json").exists()
            && best.as_ref().is_none_or(|b| s > b.0)
        {
            best = Some((s, p));
        }
    }
    Ok(best.map(|b| b.1))
}

/// `checkpoints/step-N/`: weights + tokenizer files, then `trainer_state.json` last, so a
/// directory without it is an interrupted save and is ignored by `--resume`.
fn save_checkpoint(out: &Path, trainer: &GrpoTrainer<'_>, source: &Path) -> anyhow::Result<()> {
    let dir = out
        .join("checkpoints")
        .join(format!("step-{}", trainer.step));
    trainer.policy.save(&dir, reasonlab_model::SaveDtype::F32)?;
    reasonlab_tokenize::copy_side_files(source, &dir)?;
    let state = TrainerState {
        step: trainer.step,
        data_position: trainer.data_position,
    };
    reasonlab_core::fs::atomic_write(
        &dir.join("trainer_state.json"),
        serde_json::to_string(&state)?.as_bytes(),
    )?;
    Ok(())
}
