//! `reasonlab distill --config distill.toml`: sample a teacher's traces (local model or an
//! OpenAI-compatible endpoint), filter them, then fine-tune the student on them (DeepSeek-R1
//! §2.4: the distilled models are SFT only).
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
//! [sampling]                       # temperature, top_p, top_k, max_new_tokens, seed, stop
//! temperature = 0.6
//! [filter]                         # keep = "correct" | "all", drop_truncated, dedup, …
//! [sft]                            # SftSettings of the student's fine-tuning
//! ```

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_eval::{Benchmark, PromptTemplate, Sampling};
use reasonlab_recipe::traces::{self, FilterSettings};
use reasonlab_reward::RewardConfig;
use reasonlab_train::sft::{SftRecord, SftSettings};
use serde::Deserialize;

use super::runcfg;
use reasonlab_recipe::engines::EngineSpec;

#[derive(clap::Args)]
pub struct Args {
    /// Run configuration (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Continue the student's SFT from its newest checkpoint (trace sampling always resumes).
    #[arg(long)]
    resume: bool,
    /// Only sample the traces; skip the student's SFT.
    #[arg(long)]
    traces_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    student: PathBuf,
    data: String,
    out: PathBuf,
    #[serde(default = "default_template")]
    template: String,
    #[serde(default = "one")]
    k: usize,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    rewards: Option<PathBuf>,
    #[serde(default = "default_chunk")]
    chunk_size: usize,
    #[serde(default)]
    held_out: f64,
    #[serde(default)]
    save_every: usize,
    teacher: EngineSpec,
    #[serde(default)]
    sampling: toml::Table,
    #[serde(default)]
    filter: toml::Table,
    #[serde(default)]
    sft: toml::Table,
}

fn default_template() -> String {
    "chat".into()
}
fn one() -> usize {
    1
}
fn default_chunk() -> usize {
    16
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = runcfg::load::<RunConfig>(&args.config)?;
    let c = &cfg.config;
    let out = cfg.path(&c.out);
    std::fs::create_dir_all(&out)?;
    let sampling: Sampling = runcfg::overlay(&Sampling::default(), &c.sampling, "sampling")?;
    let filter: FilterSettings = runcfg::overlay(&FilterSettings::default(), &c.filter, "filter")?;
    let sft: SftSettings = runcfg::overlay(&SftSettings::default(), &c.sft, "sft")?;
    // A data path relative to the config, unless it names a built-in benchmark.
    let data =
        if Benchmark::parse(&c.data).is_ok() && !cfg.path(std::path::Path::new(&c.data)).exists() {
            c.data.clone()
        } else {
            cfg.path(std::path::Path::new(&c.data))
                .display()
                .to_string()
        };
    let benchmark = Benchmark::parse(&data)?;
    let mut rows = benchmark.load()?;
    if let Some(n) = c.limit {
        rows.truncate(n);
    }
    let problems = traces::problems_from(
        &rows,
        PromptTemplate::parse(&c.template)?,
        benchmark.language(),
        benchmark.few_shot_style(),
    );
    let reward_cfg = match &c.rewards {
        Some(p) => RewardConfig::load(&cfg.path(p))?,
        None => RewardConfig::from_toml(super::sample::DEFAULT_REWARDS)?,
    };
    let rewards = reward_cfg.build();
    let teacher = c.teacher.build(&cfg.dir).context("building the teacher")?;
    let traces_path = out.join("traces.jsonl");
    let summary = super::sample::sample_traces(
        teacher.as_ref(),
        &problems,
        c.k,
        &sampling,
        &rewards,
        &filter,
        &traces_path,
        c.chunk_size,
    )?;
    eprintln!("{}", serde_json::to_string(&summary)?);
    anyhow::ensure!(
        summary.failed == 0 || args.traces_only,
        "{} problems failed; rerun to retry them before training the student",
        summary.failed
    );
    if args.traces_only {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let records: Vec<SftRecord> =
        reasonlab_core::jsonl::read(&traces_path, reasonlab_core::jsonl::BadLines::Reject)?;
    anyhow::ensure!(
        !records.is_empty(),
        "no traces passed the filters ({summary:?}); loosen [filter] or sample more (k)"
    );
    let result = super::sft::train(
        &cfg.path(&c.student),
        records,
        Vec::new(),
        c.held_out,
        sft,
        &out,
        c.save_every,
        args.resume,
        Some(&cfg.text),
    )?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"traces": summary, "sft": result}))?
    );
    Ok(())
}
