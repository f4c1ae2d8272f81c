//! The GRPO run driver: `reasonlab grpo --config grpo.toml`.
//!
//! ```toml
//! model = "ckpt/qwen2.5-math-1.5b"    # HF directory (config.json, safetensors, tokenizer.json)
//! data = "train.jsonl"                 # JSONL / Parquet rows (see below)
//! template = "r1"                      # "r1" (adds R1's instruction) or "plain"
//! chat = true                          # render with the model's chat template
//! system = "You are a helpful assistant."   # optional system message (chat only)
//! rewards = "rewards.toml"
//! out = "runs/grpo"
//! preset = "r1-zero"                   # deepseekmath | r1-zero | dr-grpo | dapo | gspo
//! save_every = 50
//! long_prompts = "error"               # or "drop" (see below)
//! max_prompt_length = 512              # optional, in tokens
//! [rollout]                            # optional: sample on OpenAI-compatible servers
//! endpoints = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
//! model_name = "policy"
//! sync = "full"                        # none | full (update_weights_from_disk) | lora
//! sync_every = 1
//! [grpo]                               # any GrpoSettings field overrides the preset
//! steps = 200
//! group_size = 8
//! [[reward_model]]                     # optional: reward models beside the rule rewards
//! kind = "outcome"                     # one score per completion, weighted into the sum
//! model = "runs/orm/checkpoints/step-60"
//! weight = 1.0
//! squash = "none"                      # or "sigmoid" (a pointwise model's P(correct))
//! [[reward_model]]
//! kind = "process"                     # a score at every step end (at most one)
//! model = "runs/prm/checkpoints/step-60"
//! separator = "\n"
//! ```
//!
//! **Reward models.** An outcome model is outcome supervision: its score joins the rule
//! rewards' weighted sum, normalised per group. A process model is process supervision
//! (DeepSeekMath §4.1.3): its step scores are normalised over the group and each token's
//! advantage adds the normalised rewards of the steps ending at or after it, on top of the
//! outcome advantage. Both read the prompt the policy saw followed by the completion, and score
//! a group in one batch. A causal LM read Math-Shepherd style takes `head = { good_token = {
//! good = "+", bad = "-" } }`.
//!
//! **Rows.** The prompt is `problem`, `question` or a text `prompt`; a conversational row
//! (`prompt` or `messages` as a list of `{role, content}`, TRL's format) is rendered with the
//! chat template as it is. The gold answer is `answer` (text or number), else `solution`.
//! Every other column reaches the rewards ([`reasonlab_reward::Sample::extra`]).
//!
//! **Prompt lengths** are checked before the first step: a prompt that leaves fewer than
//! `max_new_tokens` positions of the model's context, or is longer than `max_prompt_length`,
//! is an error listing every offender (`long_prompts = "error"`), or is dropped with a count
//! (`"drop"`). TRL truncates such prompts from the left instead; a cut math problem scores
//! noise, so we keep prompts whole.

use std::path::{Path, PathBuf};
use std::time::Instant;

use reasonlab_core::engine::{Message, Role};
use reasonlab_core::jsonl::{self, BadLines};
use reasonlab_model::{ActivationCheckpointing, BackendKind, Precision, device_for};
use reasonlab_serve::pool::{PoolEvent, RolloutPool};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::checkpoint;
use reasonlab_train::grpo::{
    GrpoSettings, GrpoState, GrpoTrainer, Preset, StepMetrics, SyncMode, Task,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use reasonlab_train::rm::rewards::{OutcomeRewardModel, ProcessRewardModel, Squash};

use super::eval::ToolSetup;
use super::iterative::{IterativeConfig, IterativeFile};
use super::rm::HeadSpec;
use super::{Event, Loaded, Resume, RunDir, RunError, load_toml, overlay, resolve};
use crate::engines::RolloutSpec;
use reasonlab_sandbox::rewards::{CodeTests, PotAnswer};

pub use reasonlab_eval::template::R1_INSTRUCTION;

/// How a problem becomes the user's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// `{problem}\n` + [`R1_INSTRUCTION`].
    #[default]
    R1,
    /// The problem text as is.
    Plain,
    /// DeepSeek-R1-Zero's conversation prompt for base models (with `chat = false`):
    /// reasoning in `<think> </think>`, answer in `<answer> </answer>`.
    #[serde(alias = "r1-zero")]
    R1Zero,
}

/// What to do with prompts too long for the context or `max_prompt_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongPrompts {
    /// Stop before the first step, listing every offender.
    #[default]
    Error,
    /// Leave them out and say how many.
    Drop,
}

/// `grpo.toml` as written: the `[grpo]` table overrides the preset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoFile {
    pub model: PathBuf,
    pub data: PathBuf,
    #[serde(default)]
    pub template: Template,
    #[serde(default)]
    pub chat: bool,
    #[serde(default)]
    pub system: Option<String>,
    pub rewards: PathBuf,
    pub out: PathBuf,
    #[serde(default = "default_preset")]
    pub preset: Preset,
    #[serde(default)]
    pub save_every: usize,
    /// Tensor backend: `flex` (CPU), `wgpu`, `vulkan` or `cuda`.
    #[serde(default)]
    pub backend: BackendKind,
    /// Recompute memory-bound activations in the backward pass (`"balanced"`) or keep them all
    /// (`"off"`).
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
    /// Mixed precision: compute in `"bf16"` (or `"f16"` where the GPU has no bf16) with f32
    /// master weights and optimiser state; `"f32"` (the default) is off. GPU backends only.
    #[serde(default)]
    pub mixed_precision: Precision,
    #[serde(default)]
    pub long_prompts: LongPrompts,
    #[serde(default)]
    pub max_prompt_length: Option<usize>,
    #[serde(default)]
    pub rollout: Option<RolloutSpec>,
    #[serde(default)]
    pub reward_model: Vec<RewardModelSpec>,
    #[serde(default)]
    pub iterative: Option<IterativeFile>,
    /// Tool-integrated rollouts: the code the completions write runs in the sandbox.
    #[serde(default)]
    pub tools: Option<ToolSetup>,
    #[serde(default)]
    pub code_reward: Vec<CodeRewardSpec>,
    #[serde(default)]
    pub grpo: toml::Table,
}

/// What a `[[code_reward]]` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeRewardKind {
    /// DeepSeek-R1's code reward: the fraction of the row's test cases the program passes.
    Tests,
    /// Program of thought: the program's printed output against the gold answer.
    PotAnswer,
}

fn one() -> f64 {
    1.0
}

/// A `[[code_reward]]` table: a reward that runs the completion's program in the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRewardSpec {
    pub kind: CodeRewardKind,
    #[serde(default = "one")]
    pub weight: f64,
    /// Output key (defaults to `code_tests` / `pot_answer`).
    #[serde(default)]
    pub name: Option<String>,
    /// The interpreter and the limits of every run.
    #[serde(default)]
    pub sandbox: Option<ToolSetup>,
}

impl CodeRewardSpec {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match self.kind {
            CodeRewardKind::Tests => "code_tests".into(),
            CodeRewardKind::PotAnswer => "pot_answer".into(),
        })
    }

    /// Add the reward to `rewards`.
    pub fn push_into(&self, rewards: &mut reasonlab_reward::WeightedSum) -> Result<(), RunError> {
        if !self.weight.is_finite() {
            return Err(RunError::Invalid(format!(
                "[[code_reward]] {}: the weight must be finite",
                self.name()
            )));
        }
        // By default every program gets an interpreter of its own: an interpreter is not
        // trusted, and a program left in one could change the next program's verdict.
        let setup = self.sandbox.clone().unwrap_or_else(|| {
            let mut s = ToolSetup::new(reasonlab_sandbox::tools::ToolFormat::Pot);
            s.limits.recycle_after = 1;
            s
        });
        let sandbox = setup.sandbox()?;
        let reward: Box<dyn reasonlab_reward::Reward> = match self.kind {
            CodeRewardKind::Tests => Box::new(CodeTests::new(self.name(), sandbox)),
            CodeRewardKind::PotAnswer => Box::new(PotAnswer::new(self.name(), sandbox)),
        };
        rewards.push(self.name(), self.weight, reward);
        Ok(())
    }
}

/// Which supervision a reward model gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Supervision {
    /// One score per completion.
    Outcome,
    /// A score at every step end.
    Process,
}

fn default_weight() -> f64 {
    1.0
}
fn default_separator() -> String {
    "\n".into()
}

/// A `[[reward_model]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelSpec {
    pub kind: Supervision,
    /// A reward checkpoint, or a causal LM with `head`.
    pub model: PathBuf,
    /// Output key (defaults to `orm` / `prm`).
    #[serde(default)]
    pub name: Option<String>,
    /// Weight in the sum with the rule rewards (outcome).
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default)]
    pub squash: Squash,
    /// Between steps (process).
    #[serde(default = "default_separator")]
    pub separator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
}

impl RewardModelSpec {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match self.kind {
            Supervision::Outcome => "orm".into(),
            Supervision::Process => "prm".into(),
        })
    }
}

/// The reward models of a run, loaded for inference: outcome models join the weighted sum,
/// the process model (at most one) goes to the trainer.
pub fn load_reward_models(
    specs: &[RewardModelSpec],
    backend: BackendKind,
    rewards: &mut reasonlab_reward::WeightedSum,
) -> Result<Option<ProcessRewardModel>, RunError> {
    let device = device_for(backend, false)?;
    let mut process = None;
    for spec in specs {
        let rm = super::rm::load(&spec.model, spec.head.as_ref(), 0, &device)?;
        let tok = Tokenizer::from_dir(&spec.model)?;
        match (spec.kind, rm.head().is_process()) {
            (Supervision::Outcome, false) => rewards.push(
                spec.name(),
                spec.weight,
                Box::new(OutcomeRewardModel::new(spec.name(), rm, tok, spec.squash)),
            ),
            (Supervision::Process, true) if process.is_none() => {
                process = Some(ProcessRewardModel::new(
                    spec.name(),
                    rm,
                    tok,
                    spec.separator.clone(),
                ));
            }
            (Supervision::Process, true) => {
                return Err(RunError::Invalid(
                    "at most one process reward model per run".into(),
                ));
            }
            (kind, _) => {
                return Err(RunError::Invalid(format!(
                    "{} is a {:?} reward model, not a {kind:?} one",
                    spec.model.display(),
                    rm.head()
                )));
            }
        }
    }
    Ok(process)
}

fn default_preset() -> Preset {
    Preset::R1Zero
}

/// A resolved GRPO run: paths resolved, the preset expanded into every setting. This is what
/// the run folder's `config.toml` holds, and it reads back as a [`GrpoFile`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GrpoConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    pub template: Template,
    pub chat: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub rewards: PathBuf,
    pub out: PathBuf,
    pub preset: Preset,
    pub save_every: usize,
    /// The policy's and the reward models' backend.
    pub backend: BackendKind,
    pub activation_checkpointing: ActivationCheckpointing,
    pub mixed_precision: Precision,
    pub long_prompts: LongPrompts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prompt_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reward_model: Vec<RewardModelSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterative: Option<IterativeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolSetup>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub code_reward: Vec<CodeRewardSpec>,
    pub grpo: GrpoSettings,
}

impl GrpoConfig {
    /// Read `grpo.toml`; its relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let loaded: Loaded<GrpoFile> = load_toml(path)?;
        Self::resolve(&loaded.config, &loaded.dir)
    }

    /// Resolve `file`'s paths against `base` and expand its preset.
    pub fn resolve(file: &GrpoFile, base: &Path) -> Result<Self, RunError> {
        let grpo = overlay(&GrpoSettings::preset(file.preset), &file.grpo, "grpo")?;
        if let Some(r) = &file.rollout {
            if r.all_endpoints().is_empty() {
                return Err(RunError::Invalid(
                    "[rollout] needs at least one server (endpoints = [URL, …] or endpoint = \
                     URL); local rollouts sample the policy itself, so leave [rollout] out"
                        .into(),
                ));
            }
            if r.overlap && file.tools.is_some() {
                return Err(RunError::Invalid(
                    "[rollout] overlap draws rollouts ahead on the servers, which [tools] \
                     rollouts cannot do; leave one out"
                        .into(),
                ));
            }
            if r.sync == SyncMode::Lora && grpo.lora.is_none() {
                return Err(RunError::Invalid(
                    "[rollout] sync = \"lora\" pushes LoRA adapters: train with [grpo.lora], \
                     or use sync = \"full\""
                        .into(),
                ));
            }
        }
        Ok(Self {
            model: resolve(base, &file.model),
            data: resolve(base, &file.data),
            template: file.template,
            chat: file.chat,
            system: file.system.clone(),
            rewards: resolve(base, &file.rewards),
            out: resolve(base, &file.out),
            preset: file.preset,
            save_every: file.save_every,
            backend: file.backend,
            activation_checkpointing: file.activation_checkpointing,
            mixed_precision: file.mixed_precision,
            long_prompts: file.long_prompts,
            max_prompt_length: file.max_prompt_length,
            rollout: file.rollout.clone().map(|r| RolloutSpec {
                sync_dir: r.sync_dir.as_ref().map(|d| resolve(base, d)),
                ..r
            }),
            reward_model: file
                .reward_model
                .iter()
                .map(|r| RewardModelSpec {
                    model: resolve(base, &r.model),
                    ..r.clone()
                })
                .collect(),
            iterative: file
                .iterative
                .as_ref()
                .map(|i| IterativeConfig::resolve(i, &file.reward_model))
                .transpose()?,
            tools: file.tools.clone(),
            code_reward: file.code_reward.clone(),
            grpo,
        })
    }
}

/// What a GRPO run did (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoSummary {
    pub steps: usize,
    pub resumed_from_step: Option<usize>,
    pub tasks: usize,
    pub dropped_prompts: usize,
    pub last_reward_mean: Option<f64>,
    pub last_accuracy: Option<f64>,
    pub checkpoints: Vec<PathBuf>,
    pub seconds: f64,
}

/// A row of the GRPO data.
fn task_of(
    index: usize,
    row: Map<String, Value>,
    cfg: &GrpoConfig,
    tokenizer: &Tokenizer,
) -> Result<Option<Task>, RunError> {
    let mut row = row;
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let id = row
        .remove("id")
        .map(text)
        .unwrap_or_else(|| index.to_string());
    let gold = row
        .remove("answer")
        .or_else(|| row.remove("solution"))
        .map(text);
    let body = |problem: &str| match cfg.template {
        Template::R1 => format!("{problem}\n{R1_INSTRUCTION}"),
        Template::Plain => problem.to_string(),
        Template::R1Zero => reasonlab_eval::template::r1_zero_prompt(problem),
    };
    let conversation = match row.get("messages").or_else(|| row.get("prompt")) {
        Some(Value::Array(_)) => {
            let key = if row.contains_key("messages") {
                "messages"
            } else {
                "prompt"
            };
            let value = row.remove(key).unwrap_or_default();
            let messages: Vec<Message> = serde_json::from_value(value).map_err(|e| {
                RunError::Invalid(format!("row {id}: `{key}` is not a list of messages: {e}"))
            })?;
            Some(messages)
        }
        _ => None,
    };
    let (prompt, problem, add_special_tokens) = match conversation {
        Some(mut messages) => {
            if let (Some(system), false) =
                (&cfg.system, messages.iter().any(|m| m.role == Role::System))
            {
                messages.insert(0, Message::system(system.clone()));
            }
            let problem = messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.clone());
            (tokenizer.render_chat(&messages, true)?, problem, false)
        }
        None => {
            let Some(problem) = ["problem", "question", "prompt"]
                .iter()
                .find_map(|k| row.remove(*k))
                .map(text)
            else {
                return Ok(None);
            };
            let body = body(&problem);
            if cfg.chat {
                let mut messages = Vec::new();
                if let Some(system) = &cfg.system {
                    messages.push(Message::system(system.clone()));
                }
                messages.push(Message::user(body));
                (
                    tokenizer.render_chat(&messages, true)?,
                    Some(problem),
                    false,
                )
            } else {
                (body, Some(problem), true)
            }
        }
    };
    Ok(Some(Task {
        id,
        prompt,
        gold,
        add_special_tokens,
        problem,
        extra: row,
    }))
}

/// Every usable row of the run's data as a task.
fn all_tasks(cfg: &GrpoConfig, tokenizer: &Tokenizer) -> Result<Vec<Task>, RunError> {
    let rows: Vec<Map<String, Value>> = jsonl::read(&cfg.data, BadLines::Skip)?;
    let mut tasks = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        tasks.extend(task_of(i, row, cfg, tokenizer)?);
    }
    Ok(tasks)
}

/// The tasks a run trains on: every usable row whose prompt fits `context` with room for
/// `max_new_tokens` (and `max_prompt_length`).
pub(crate) fn tasks(
    cfg: &GrpoConfig,
    tokenizer: &Tokenizer,
    context: usize,
) -> Result<Vec<Task>, RunError> {
    let tasks = all_tasks(cfg, tokenizer)?;
    let (long, _) = long_prompts(
        &tasks,
        tokenizer,
        context,
        cfg.grpo.max_new_tokens,
        cfg.max_prompt_length,
    )?;
    let drop: std::collections::HashSet<usize> = long.iter().map(|p| p.index).collect();
    Ok(tasks
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, t)| t)
        .collect())
}

/// A prompt too long to train on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongPrompt {
    /// Position among the tasks.
    pub index: usize,
    pub id: String,
    pub tokens: usize,
}

/// Tasks whose prompt leaves fewer than `max_new_tokens` positions of `context` or exceeds
/// `max_prompt_length`, with the limit they broke.
pub fn long_prompts(
    tasks: &[Task],
    tokenizer: &Tokenizer,
    context: usize,
    max_new_tokens: usize,
    max_prompt_length: Option<usize>,
) -> Result<(Vec<LongPrompt>, usize), RunError> {
    let mut limit = context.saturating_sub(max_new_tokens);
    if let Some(m) = max_prompt_length {
        limit = limit.min(m);
    }
    let mut out = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let len = tokenizer.encode(&t.prompt, t.add_special_tokens)?.len();
        if len > limit || len == 0 {
            out.push(LongPrompt {
                index: i,
                id: t.id.clone(),
                tokens: len,
            });
        }
    }
    Ok((out, limit))
}

/// A rollout server's fall or return: `DIR/rollout_events.jsonl` (with the step) and a note.
fn report_pool_events(
    pool: &RolloutPool,
    dir: &RunDir,
    step: usize,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<(), RunError> {
    let events = pool.take_events();
    if events.is_empty() {
        return Ok(());
    }
    let path = dir.root().join("rollout_events.jsonl");
    let mut text = String::new();
    for e in &events {
        let mut v = serde_json::to_value(e).unwrap_or_default();
        v["step"] = serde_json::json!(step);
        text.push_str(&format!("{v}\n"));
        on_event(Event::Note(match e {
            PoolEvent::Down { url, reason } => {
                format!("rollout server {url} taken out of rotation: {reason}")
            }
            PoolEvent::Rejoined { url, version } => {
                format!("rollout server {url} rejoined with weights version {version}")
            }
            PoolEvent::Resynced { url, version } => {
                format!("rollout server {url} had older weights; sent version {version} again")
            }
        }));
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(super::io(&path))
}

/// Run GRPO as `cfg` says into `dir`, calling `on_event` as it goes: in one go, or in
/// `[iterative]` rounds (see [`super::iterative`]).
pub fn run(
    cfg: &GrpoConfig,
    dir: &RunDir,
    resume: Resume,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<GrpoSummary, RunError> {
    match &cfg.iterative {
        Some(it) => super::iterative::run(cfg, it, dir, resume, on_event),
        None => segment(cfg, dir, resume, false, on_event),
    }
}

/// GRPO from the start (or `resume`'s checkpoint) to `cfg.grpo.steps`; with `save_last` the
/// last step is checkpointed even when `save_every` is 0.
pub(crate) fn segment(
    cfg: &GrpoConfig,
    dir: &RunDir,
    resume: Resume,
    save_last: bool,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<GrpoSummary, RunError> {
    let started = Instant::now();
    let rewards_cfg = reasonlab_reward::RewardConfig::load(&cfg.rewards)?;
    let mut rewards = rewards_cfg.build();
    let process = load_reward_models(&cfg.reward_model, cfg.backend, &mut rewards)?;
    for spec in &cfg.code_reward {
        spec.push_into(&mut rewards)?;
    }
    let resume_from = dir.resume_from(resume)?;
    let model_dir = resume_from.clone().unwrap_or_else(|| cfg.model.clone());
    let tokenizer = Tokenizer::from_dir(&model_dir)?;
    let device = super::open_training_device(
        cfg.backend,
        cfg.activation_checkpointing,
        cfg.mixed_precision,
        on_event,
    )?;
    let policy = checkpoint::load_model(&model_dir, &cfg.model, &device)?
        .with_mixed_precision(cfg.mixed_precision)?;
    let context = policy.config.max_position_embeddings;

    let mut tasks = all_tasks(cfg, &tokenizer)?;
    let (long, limit) = long_prompts(
        &tasks,
        &tokenizer,
        context,
        cfg.grpo.max_new_tokens,
        cfg.max_prompt_length,
    )?;
    let dropped_prompts = long.len();
    if !long.is_empty() {
        match cfg.long_prompts {
            LongPrompts::Error => {
                let listed: Vec<String> = long
                    .iter()
                    .take(10)
                    .map(|p| format!("{} ({} tokens)", p.id, p.tokens))
                    .collect();
                return Err(RunError::Invalid(format!(
                    "{} of {} prompts are longer than {limit} tokens (the context of {context} \
                     less max_new_tokens = {}{}): {}{}; set long_prompts = \"drop\" to leave \
                     them out, or raise the limits",
                    long.len(),
                    tasks.len(),
                    cfg.grpo.max_new_tokens,
                    cfg.max_prompt_length
                        .map(|m| format!(", at most max_prompt_length = {m}"))
                        .unwrap_or_default(),
                    listed.join(", "),
                    if long.len() > 10 { ", …" } else { "" },
                )));
            }
            LongPrompts::Drop => {
                let drop: std::collections::HashSet<usize> = long.iter().map(|p| p.index).collect();
                tasks = tasks
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, t)| t)
                    .collect();
            }
        }
    }
    if tasks.is_empty() {
        return Err(RunError::Invalid(format!(
            "no usable rows in {}",
            cfg.data.display()
        )));
    }

    let pool = match &cfg.rollout {
        Some(spec) => Some(spec.pool()?),
        None => None,
    };
    let mut trainer = GrpoTrainer::new(cfg.grpo.clone(), policy, &tokenizer, &rewards)?;
    if let (Some(pool), Some(spec)) = (&pool, &cfg.rollout) {
        trainer = trainer
            .with_rollout_engine(pool)
            .with_weight_sync(spec.weight_sync(dir.root()));
        if spec.overlap {
            trainer = trainer.with_overlap();
        }
    }
    if let Some(p) = &process {
        trainer = trainer.with_process_reward(p);
    }
    if let Some(t) = &cfg.tools {
        trainer = trainer.with_tools(t.sandbox()?, t.config());
    }
    let mut resumed_from_step = None;
    if let Some(ckpt) = &resume_from {
        let state: GrpoState = checkpoint::restore(ckpt, trainer.optim_mut())?;
        trainer.restore_state(state);
        resumed_from_step = Some(state.step);
    }
    dir.write_config(cfg)?;
    let total = cfg.grpo.steps;
    let mut logs = dir.begin(
        "grpo",
        total,
        trainer.state().step,
        resume_from.as_deref(),
        on_event,
    )?;
    if dropped_prompts > 0 {
        on_event(Event::Note(format!(
            "left out {dropped_prompts} prompts too long to train on; {} remain",
            tasks.len()
        )));
    }
    let mut last: Option<StepMetrics> = None;
    let mut checkpoints = Vec::new();
    while trainer.state().step < total {
        let stepped = trainer.step(&tasks);
        if let Some(pool) = &pool {
            report_pool_events(pool, dir, trainer.state().step, on_event)?;
        }
        let (m, rollouts) = stepped?;
        logs.metrics.write(&m).map_err(super::io(&dir.metrics()))?;
        for r in &rollouts {
            logs.completions
                .write(r)
                .map_err(super::io(&dir.completions()))?;
        }
        on_event(Event::Progress {
            done: m.step,
            message: format!(
                "reward {:.3}  acc {:.3}  len {:.1}",
                m.reward_mean, m.accuracy, m.completion_len_mean
            ),
        });
        let step = trainer.state().step;
        let periodic = cfg.save_every > 0 && step.is_multiple_of(cfg.save_every);
        if periodic || (step == total && (cfg.save_every > 0 || save_last)) {
            let saved = checkpoint::save(
                dir.root(),
                step,
                trainer.policy(),
                trainer.optim(),
                &trainer.state(),
                &cfg.model,
            )?;
            on_event(Event::Saved(&saved));
            checkpoints.push(saved);
        }
        last = Some(m);
    }
    drop(logs);
    // DeepSeek-R1 Figure 3's two panels, then the training diagnostics.
    crate::plots::write_curves(
        dir,
        "GRPO",
        &[
            ("reward and accuracy", &["reward_mean", "accuracy"]),
            ("mean response length", &["completion_len_mean"]),
            ("KL and clip fractions", &["kl", "clip_low", "clip_high"]),
            ("policy entropy", &["entropy"]),
        ],
    )?;
    let summary = GrpoSummary {
        steps: trainer.state().step,
        resumed_from_step,
        tasks: tasks.len(),
        dropped_prompts,
        last_reward_mean: last.as_ref().map(|m| m.reward_mean),
        last_accuracy: last.as_ref().map(|m| m.accuracy).filter(|a| a.is_finite()),
        checkpoints,
        seconds: started.elapsed().as_secs_f64(),
    };
    dir.write_summary(&summary)?;
    Ok(summary)
}
