//! `reasonlab`: build math-reasoning language models end to end.
//!
//! This binary only parses flags into typed settings, calls a library crate and prints; every
//! subcommand lives in its own module under `cmd/`.

mod cmd;

/// mimalloc, told never to hand freed pages back to the kernel ([`keep_freed_pages`]): with
/// glibc (and with mimalloc's default 10 ms purge delay) every step's large tensor buffers went
/// back to the kernel when freed and came back as fresh pages, so a training step spent ~20% of
/// its time in page faults, page zeroing and TLB-shootdown interrupts (`perf`, bench
/// train-step). The cost is that resident memory stays at its high-water mark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (position 15 of `mi_option_e` in mimalloc v2 and v3's
/// `mimalloc.h`); −1 = never purge.
fn keep_freed_pages() {
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide allocator option; no pointers involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reasonlab",
    version,
    about = "Build math-reasoning language models the DeepSeekMath / DeepSeek-R1 way",
    long_about = "Build math-reasoning language models the DeepSeekMath / DeepSeek-R1 way: \
                  curate a math corpus, pretrain, SFT / distill, GRPO, and evaluate — from one binary.\n\n\
                  Start with `reasonlab demo`."
)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info` or `reasonlab=debug`. Also read from RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    /// The GPU the GPU backends open, by its number in `reasonlab devices` (wgpu, vulkan) or
    /// CUDA's (cuda); also read from REASONLAB_GPU. Default: the runtime's pick.
    #[arg(long, global = true, value_name = "N")]
    gpu: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the end-to-end demo on an embedded default (no downloads, CPU only).
    Demo(cmd::demo::Args),
    /// The papers' claims in miniature: r1-zero, rl-vs-sft, distill-vs-rl, corpus, supervision.
    Experiment(cmd::experiment::Args),
    /// Inspect a model or score token ids with it.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Sample completions for a JSONL file of prompts.
    Generate(cmd::generate::Args),
    /// Check answers: JSONL `{"gold", "pred"}` on stdin → `{"correct", "extracted", "reason"}`.
    Verify(cmd::verify::VerifyArgs),
    /// Score completions with a reward configuration (TOML): JSONL in, JSONL out.
    Reward(cmd::verify::RewardArgs),
    /// Supervised fine-tuning on chat or prompt/completion JSONL (assistant tokens only).
    Sft(cmd::sft::Args),
    /// Continued pretraining on a weighted mixture of raw-text sources.
    Pretrain(cmd::pretrain::Args),
    /// k completions per problem, scored and filtered into SFT-ready JSONL (rejection sampling).
    Sample(cmd::sample::Args),
    /// Sample a teacher's traces (local or OpenAI-compatible endpoint), then SFT the student.
    Distill(cmd::distill::Args),
    /// GRPO (R1-Zero, DeepSeekMath, Dr. GRPO, DAPO, GSPO presets) on a local HF checkpoint.
    Grpo(cmd::grpo::Args),
    /// Reward models: Math-Shepherd process labels, training (outcome or process), scoring.
    #[command(subcommand)]
    Rm(cmd::rm::RmCommand),
    /// Recipes: pretrain, sft, grpo, sample, distill, rm train and eval stages chained by name.
    #[command(subcommand)]
    Recipe(cmd::recipe::RecipeCommand),
    /// The code sandbox for model-written Python: check the protections, run a program.
    #[command(subcommand)]
    Sandbox(cmd::sandbox::SandboxCommand),
    /// Evaluate on benchmarks (pass@1, pass@k, cons@k), re-score offline, compare runs.
    #[command(subcommand)]
    Eval(cmd::eval::EvalCommand),
    /// OpenAI-compatible HTTP server (/v1/models, /v1/completions, /v1/chat/completions).
    Serve(cmd::serve::Args),
    /// fastText-compatible classifier: train, test, predict.
    #[command(subcommand)]
    Classifier(cmd::corpus::ClassifierCommand),
    /// Corpus curation: read, dedup, decontam, recall.
    #[command(subcommand)]
    Curate(cmd::corpus::CurateCommand),
    /// Benchmarks that print our numbers beside the reference tool's.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// The GPUs a backend can open, numbered as `--gpu` takes them.
    Devices(cmd::devices::Args),
}

fn main() -> std::process::ExitCode {
    keep_freed_pages();
    let cli = Cli::parse();
    // wgpu probes its OpenGL backend too and, on a machine without a GL driver, logs the
    // failed EGL initialisation as an ERROR although it then runs on Vulkan: quiet by default,
    // shown when a filter names `wgpu_hal`.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    let filter = match filter.contains("wgpu_hal") {
        true => filter,
        false => format!("{filter},wgpu_hal::gles=off"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    if let Some(n) = cli.gpu
        && let Err(e) = reasonlab_model::gpus::choose(reasonlab_model::gpus::GpuChoice::Index(n))
    {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Experiment(args) => cmd::experiment::run(args),
        Command::Model(c) => cmd::model::run(c),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Verify(args) => cmd::verify::run_verify(args),
        Command::Reward(args) => cmd::verify::run_reward(args),
        Command::Sft(args) => cmd::sft::run(args),
        Command::Pretrain(args) => cmd::pretrain::run(args),
        Command::Sample(args) => cmd::sample::run(args),
        Command::Distill(args) => cmd::distill::run(args),
        Command::Grpo(args) => cmd::grpo::run(args),
        Command::Eval(c) => cmd::eval::run(c),
        Command::Rm(c) => cmd::rm::run(c),
        Command::Sandbox(c) => cmd::sandbox::run(c),
        Command::Recipe(c) => cmd::recipe::run(c),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Classifier(c) => cmd::corpus::run_classifier(c),
        Command::Curate(c) => cmd::corpus::run_curate(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Devices(args) => cmd::devices::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message so far
/// already holds (a library error that prints its source as well as returning it).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// An error that prints its source in its own message and returns it as its source.
    #[derive(Debug)]
    struct Loading {
        source: std::io::Error,
    }

    impl std::fmt::Display for Loading {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "loading model m: {}", self.source)
        }
    }

    impl std::error::Error for Loading {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn an_error_that_prints_its_source_says_it_once() {
        let io = || std::io::Error::other("no bf16 support");
        let e = anyhow::Error::new(Loading { source: io() });
        assert_eq!(error_text(&e), "loading model m: no bf16 support");
        let e = anyhow::Error::new(io()).context("opening the engine");
        assert_eq!(error_text(&e), "opening the engine: no bf16 support");
    }
}
