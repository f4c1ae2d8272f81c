//! The distillation driver: `reasonlab distill --config distill.toml` samples a teacher's
//! traces (local model or an OpenAI-compatible endpoint), filters them, then fine-tunes the
//! student on them (DeepSeek-R1 §2.4: the distilled models are SFT only).
//!
//! ```toml
//! student = "ckpt/qwen2.5-math-1.5b"
//! data = "problems.jsonl"          # id, problem, answer (or a built-in benchmark name)
//! out = "runs/distill"             # traces.jsonl (+ .ledger.jsonl), then the SFT outputs
//! template = "chat"                # how problems are put to the teacher
//! k = 4                            # traces per problem
//! [teacher]                        # a local directory…
//! model = "ckpt/deepseek-r1-distill-qwen-7b"
//! # …or an endpoint: endpoint = "https://api.example.com", model_name = "deepseek-reasoner",
//! # api_key_env = "TEACHER_KEY", concurrency = 32, max_retries = 6, timeout_s = 600
//! [sampling]                       # temperature, top_p, top_k, min_p, max_new_tokens, seed, stop
//! temperature = 0.6
//! [filter]                         # keep = "correct" | "all", drop_truncated, dedup, …
//! [sft]                            # SftSettings of the student's fine-tuning
//! ```

use std::path::{Path, PathBuf};

use reasonlab_core::engine::Sampling;
use reasonlab_core::jsonl::{self, BadLines};
use reasonlab_eval::Benchmark;
use reasonlab_model::{ActivationCheckpointing, BackendKind, Precision};
use reasonlab_train::sft::{SftRecord, SftSettings};
use serde::{Deserialize, Serialize};

use super::eval::ToolSetup;
use super::sample::SampleConfig;
use super::sft::SftSummary;
use super::{Event, Loaded, Resume, RunDir, RunError, load_toml, overlay};
use crate::engines::EngineSpec;
use crate::traces::{FilterSettings, TraceSummary};

fn default_template() -> String {
    "chat".into()
}
fn one() -> usize {
    1
}
fn default_chunk() -> usize {
    16
}

/// `distill.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillFile {
    pub student: PathBuf,
    pub data: String,
    pub out: PathBuf,
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default = "one")]
    pub k: usize,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub rewards: Option<PathBuf>,
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    #[serde(default)]
    pub held_out: f64,
    #[serde(default)]
    pub save_every: usize,
    /// The student's tensor backend, and a local teacher's unless `[teacher]` sets its own.
    #[serde(default)]
    pub backend: BackendKind,
    /// The student's fine-tuning: recompute memory-bound activations (`"balanced"`) or not.
    #[serde(default)]
    pub activation_checkpointing: ActivationCheckpointing,
    /// Mixed precision: compute in `"bf16"` (or `"f16"` where the GPU has no bf16) with f32
    /// master weights and optimiser state; `"f32"` (the default) is off. GPU backends only.
    #[serde(default)]
    pub mixed_precision: Precision,
    pub teacher: EngineSpec,
    /// The teacher's code runs in the sandbox: tool-integrated traces.
    #[serde(default)]
    pub tools: Option<ToolSetup>,
    #[serde(default)]
    pub sampling: toml::Table,
    #[serde(default)]
    pub filter: toml::Table,
    #[serde(default)]
    pub sft: toml::Table,
}

/// A resolved distillation run (what the run folder's `config.toml` holds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistillConfig {
    pub student: PathBuf,
    pub out: PathBuf,
    pub held_out: f64,
    pub save_every: usize,
    /// The student's tensor backend.
    pub backend: BackendKind,
    pub activation_checkpointing: ActivationCheckpointing,
    pub mixed_precision: Precision,
    /// The teacher's sampling job (its `out` is `OUT/traces.jsonl`).
    pub traces: SampleConfig,
    pub sft: SftSettings,
}

impl DistillConfig {
    /// Read `distill.toml`; its relative paths are resolved against its folder, and `data`
    /// names a built-in benchmark unless a file of that name exists there.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        Self::from_loaded(load_toml(path)?)
    }

    /// From a parsed file whose relative paths are relative to `loaded.dir`.
    pub fn from_loaded(loaded: Loaded<DistillFile>) -> Result<Self, RunError> {
        let c = &loaded.config;
        let out = loaded.path(&c.out);
        let data_path = loaded.path(Path::new(&c.data));
        let data = if Benchmark::parse(&c.data).is_ok() && !data_path.exists() {
            c.data.clone()
        } else {
            data_path.display().to_string()
        };
        let mut teacher = c.teacher.clone();
        teacher.model = teacher.model.map(|m| loaded.path(&m));
        if teacher.model.is_some() && teacher.backend.is_none() {
            teacher.backend = Some(c.backend);
        }
        Ok(Self {
            student: loaded.path(&c.student),
            held_out: c.held_out,
            save_every: c.save_every,
            backend: c.backend,
            activation_checkpointing: c.activation_checkpointing,
            mixed_precision: c.mixed_precision,
            traces: SampleConfig {
                data,
                engine: teacher,
                k: c.k,
                template: c.template.clone(),
                sampling: overlay(&Sampling::default(), &c.sampling, "sampling")?,
                rewards: c.rewards.as_ref().map(|p| loaded.path(p)),
                filter: overlay(&FilterSettings::default(), &c.filter, "filter")?,
                limit: c.limit,
                chunk_size: c.chunk_size,
                out: out.join("traces.jsonl"),
                tools: c.tools.clone(),
            },
            sft: overlay(&SftSettings::default(), &c.sft, "sft")?,
            out,
        })
    }
}

/// What a distillation run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistillSummary {
    pub traces: TraceSummary,
    /// `None` when only the traces were asked for.
    pub sft: Option<SftSummary>,
}

/// Sample the teacher's traces, then (unless `traces_only`) fine-tune the student on them.
pub fn run(
    cfg: &DistillConfig,
    dir: &RunDir,
    resume: Resume,
    traces_only: bool,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<DistillSummary, RunError> {
    dir.write_config(cfg)?;
    let traces = super::sample::run(&cfg.traces, Path::new("."), on_event)?;
    if traces_only {
        return Ok(DistillSummary { traces, sft: None });
    }
    if traces.failed > 0 {
        return Err(RunError::Invalid(format!(
            "{} problems failed; run again to retry them before training the student",
            traces.failed
        )));
    }
    let records: Vec<SftRecord> = jsonl::read(&cfg.traces.out, BadLines::Reject)?;
    if records.is_empty() {
        return Err(RunError::Invalid(format!(
            "no traces passed the filters ({traces:?}); loosen [filter] or sample more (k)"
        )));
    }
    let sft = super::sft::train(
        &cfg.student,
        records,
        Vec::new(),
        cfg.held_out,
        cfg.sft.clone(),
        cfg.backend,
        reasonlab_model::Training {
            checkpointing: cfg.activation_checkpointing,
            mixed_precision: cfg.mixed_precision,
        },
        dir,
        cfg.save_every,
        resume,
        on_event,
    )?;
    let summary = DistillSummary {
        traces,
        sft: Some(sft),
    };
    dir.write_summary(&summary)?;
    Ok(summary)
}
