//! `reasonlab eval run | score | compare`.

use std::path::PathBuf;

use reasonlab_eval::{BadLines, Benchmark, EvalConfig, MetricKey, PromptTemplate, Sampling};
use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::eval::{self, EvalRun};
use reasonlab_recipe::run::rm::{Aggregate, RerankSpec};

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Generate completions for benchmarks and score them (resumable: rerun to continue).
    Run(Box<RunArgs>),
    /// Re-score a completions file offline: JSONL `{"id", "completion"}`, several per id.
    Score(ScoreArgs),
    /// Side-by-side table of two runs (folders or results.json files).
    Compare(CompareArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Comma-separated built-ins (gsm8k_test, math500, aime24, amc23, cmath_test, mgsm_zh) or
    /// JSONL paths (`NAME=PATH` to name one).
    #[arg(long, value_delimiter = ',', required = true)]
    benchmark: Vec<String>,
    #[command(flatten)]
    source: super::source::GeneratorArgs,
    /// Samples per problem.
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long, default_value_t = 0.6)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 4096)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Extra stop strings (the few-shot template adds its own).
    #[arg(long)]
    stop: Vec<String>,
    /// r1 | fewshot-cot | plain | chat.
    #[arg(long, default_value = "r1")]
    template: String,
    /// k values for pass@k / cons@k (default: powers of two up to n, and n).
    #[arg(long, value_delimiter = ',')]
    k: Vec<usize>,
    /// Only the first N problems of each benchmark.
    #[arg(long)]
    limit: Option<usize>,
    /// Requests per generation call.
    #[arg(long, default_value_t = 64)]
    chunk_size: usize,
    /// Output folder (completions.jsonl, results.json, report.md, report.html).
    #[arg(long, short)]
    out: PathBuf,
    /// Best-of-N: re-rank each problem's samples with this reward model (bon@k beside
    /// pass@k and cons@k).
    #[arg(long)]
    rerank_model: Option<PathBuf>,
    /// How a process reward model's step scores combine for best-of-N.
    #[arg(long, value_enum, default_value = "min")]
    aggregate: AggregateArg,
    #[command(flatten)]
    tools: super::sandbox::ToolArgs,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum AggregateArg {
    Min,
    Product,
    Last,
}

#[derive(clap::Args)]
pub struct ScoreArgs {
    /// A built-in benchmark name or a JSONL file.
    #[arg(long)]
    benchmark: String,
    /// JSONL lines `{"id": …, "completion": …}` (optional `finish_reason`, `completion_tokens`).
    #[arg(long)]
    completions: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    k: Vec<usize>,
    /// Print the scores as one JSON object.
    #[arg(long)]
    json: bool,
    /// Stop at the first malformed line instead of skipping it (skipped lines are reported).
    #[arg(long)]
    strict: bool,
    /// Which rule finds the answer: auto (every rule in priority order), boxed, answer_is,
    /// gsm8k, json, answer_tag, choice or last_number.
    #[arg(long, default_value = "auto")]
    answer_format: reasonlab_answer::AnswerFormat,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    run_a: PathBuf,
    run_b: PathBuf,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Run(args) => run_eval(*args),
        EvalCommand::Score(args) => score(args),
        EvalCommand::Compare(args) => {
            print!("{}", reasonlab_eval::compare(&args.run_a, &args.run_b)?);
            Ok(())
        }
    }
}

fn run_eval(args: RunArgs) -> anyhow::Result<()> {
    let benchmarks = args
        .benchmark
        .iter()
        .map(|b| Benchmark::parse(b))
        .collect::<Result<Vec<_>, _>>()?;
    let template = PromptTemplate::parse(&args.template)?;
    let mut cfg = EvalConfig::new(benchmarks, template, args.n);
    cfg.sampling = Sampling {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        stop: args.stop.clone(),
        ..Sampling::default()
    };
    cfg.ks = args.k.clone();
    cfg.limit = args.limit;
    cfg.chunk_size = args.chunk_size;
    let run = EvalRun {
        out: args.out.clone(),
        engine: args.source.spec(),
        eval: cfg,
        rerank: args.rerank_model.clone().map(|model| RerankSpec {
            model,
            head: None,
            aggregate: match args.aggregate {
                AggregateArg::Min => Aggregate::Min,
                AggregateArg::Product => Aggregate::Product,
                AggregateArg::Last => Aggregate::Last,
            },
            separator: "\n".into(),
            backend: args.source.backend,
        }),
        tools: args.tools.setup()?,
    };
    let dir = RunDir::create(&run.out)?;
    let results = eval::run(&run, &dir, std::path::Path::new("."), &mut |_| {})?;
    print!("{}", reasonlab_eval::render_markdown(&results));
    if run.tools.is_some() {
        // The tool-use table eval::run appended to report.md.
        let md = std::fs::read_to_string(args.out.join("report.md"))?;
        if let Some(i) = md.find("\n## Tool use") {
            print!("{}", &md[i..]);
        }
    }
    eprintln!(
        "wrote {}/{{completions.jsonl, results.json, report.md, report.html, config.toml, summary.json{}}}",
        args.out.display(),
        if run.tools.is_some() {
            ", tools.json"
        } else {
            ""
        }
    );
    Ok(())
}

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let bad = if args.strict {
        BadLines::Reject
    } else {
        BadLines::Skip
    };
    let v = reasonlab_eval::score_offline(
        &args.benchmark,
        &args.completions,
        &args.k,
        bad,
        &verify_config(args.answer_format),
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    for line in &v.bad_lines {
        eprintln!("warning: skipped {line}");
    }
    println!(
        "{} problems, {} samples each ({} without completions, {} unknown ids)",
        v.n_problems, v.n_samples, v.n_missing, v.n_unknown_ids
    );
    let mut keys: Vec<&MetricKey> = v.metrics.keys().collect();
    keys.sort_by_key(|k| matches!(k, MetricKey::ConsAt(_)));
    for key in keys {
        let se = v.stderr.get(key).copied().unwrap_or(0.0);
        println!(
            "{:>9}  {:5.1} ± {:.1}",
            key.to_string(),
            100.0 * v.metrics[key],
            100.0 * se
        );
    }
    if !v.methods.is_empty() {
        let found: Vec<String> = v.methods.iter().map(|(m, n)| format!("{m} {n}")).collect();
        println!("answers found by: {}", found.join(", "));
    }
    Ok(())
}

fn verify_config(format: reasonlab_answer::AnswerFormat) -> reasonlab_answer::VerifyConfig {
    let mut cfg = reasonlab_answer::VerifyConfig::default();
    cfg.extract.format = format;
    cfg
}
