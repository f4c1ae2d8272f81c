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

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_core::jsonl::{self, BadLines, JsonlWriter};
use reasonlab_model::{BackendKind, device_for};
use reasonlab_train::checkpoint;
use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, Task};
use serde::Deserialize;

use super::runcfg;

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

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = runcfg::load::<RunConfig>(&args.config)?;
    let cfg = &loaded.config;
    let text = &loaded.text;
    let settings: GrpoSettings =
        runcfg::overlay(&GrpoSettings::preset(cfg.preset), &cfg.grpo, "grpo")?;
    let out = loaded.path(&cfg.out);
    std::fs::create_dir_all(out.join("checkpoints"))?;
    let reward_cfg = reasonlab_reward::RewardConfig::load(&loaded.path(&cfg.rewards))?;
    let names: Vec<String> = reward_cfg.names();
    let rewards = reward_cfg.build();
    // Resume: the newest checkpoint's weights and data position.
    let source_dir = loaded.path(&cfg.model);
    let mut model_dir = source_dir.clone();
    let mut state = TrainerState {
        step: 0,
        data_position: 0,
    };
    let resume_from = if args.resume {
        checkpoint::latest(&out)?
    } else {
        None
    };
    if let Some(dir) = &resume_from {
        model_dir = dir.clone();
    }
    let tokenizer = reasonlab_tokenize::Tokenizer::from_dir(&model_dir)
        .with_context(|| format!("loading the tokenizer of {}", model_dir.display()))?;
    let device = device_for(BackendKind::Flex, true)?;
    let policy = checkpoint::load_model(&model_dir, &source_dir, &device)?;
    let rows: Vec<Row> = jsonl::read(&loaded.path(&cfg.data), BadLines::Skip)?;
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
    if let Some(dir) = &resume_from {
        state = checkpoint::restore(dir, &mut trainer.optim)?;
        eprintln!("resuming from {} (step {})", dir.display(), state.step);
    }
    trainer.step = state.step;
    trainer.data_position = state.data_position;
    std::fs::write(out.join("config.toml"), text)?;
    let mut metrics = JsonlWriter::append(&out.join("metrics.jsonl"))?;
    let mut completions = JsonlWriter::append(&out.join("completions.jsonl"))?;
    let bar = runcfg::bar("grpo", total as u64, state.step as u64);
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
            let state = TrainerState {
                step: trainer.step,
                data_position: trainer.data_position,
            };
            checkpoint::save(
                &out,
                trainer.step,
                &trainer.policy,
                &trainer.optim,
                &state,
                &source_dir,
            )?;
        }
    }
    bar.finish();
    drop(metrics);
    // DeepSeek-R1 Figure 3's two panels, then the training diagnostics.
    runcfg::write_curves(
        &out,
        "GRPO",
        &[
            ("reward and accuracy", &["reward_mean", "accuracy"]),
            ("mean response length", &["completion_len_mean"]),
            ("KL and clip fractions", &["kl", "clip_low", "clip_high"]),
            ("policy entropy", &["entropy"]),
        ],
    )?;
    Ok(())
}
