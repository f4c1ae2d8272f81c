//! `reasonlab recipe run`: stages chained in one run directory (logic in
//! `reasonlab_recipe::pipeline`).

use std::path::PathBuf;

use reasonlab_recipe::pipeline::{self, Recipe, Span};

use super::runcfg::Printer;

#[derive(clap::Subcommand)]
pub enum RecipeCommand {
    /// Run a recipe's stages in order into one run directory (manifest.json, summary.json,
    /// stages/NAME/).
    Run {
        /// The recipe (TOML: `[[stage]]` tables with `name`, `kind` and `config`).
        file: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
        /// Skip finished stages; an unfinished one continues from its newest checkpoint.
        #[arg(long)]
        resume: bool,
        /// Start at this stage (the stages before it must have run).
        #[arg(long)]
        from: Option<String>,
        /// Stop after this stage.
        #[arg(long)]
        until: Option<String>,
        /// Every stage's tensor backend (flex, wgpu, vulkan, cuda), overriding the recipe's
        /// `backend`; a stage that sets its own keeps it.
        #[arg(long)]
        backend: Option<reasonlab_model::BackendKind>,
        /// Every training stage's mixed precision (bf16, f16, or f32 for off), overriding the
        /// recipe's `mixed_precision`; a stage that sets its own keeps it.
        #[arg(long)]
        mixed_precision: Option<reasonlab_model::Precision>,
    },
}

pub fn run(cmd: RecipeCommand) -> anyhow::Result<()> {
    match cmd {
        RecipeCommand::Run {
            file,
            out,
            resume,
            from,
            until,
            backend,
            mixed_precision,
        } => {
            let mut recipe = Recipe::load(&file)?;
            if backend.is_some() {
                recipe.backend = backend;
            }
            if mixed_precision.is_some() {
                recipe.mixed_precision = mixed_precision;
            }
            let mut printer = Printer::default();
            let mut current = String::new();
            let summary = pipeline::run(
                &recipe,
                &out,
                resume,
                &Span { from, until },
                &mut |stage, e| {
                    if stage != current {
                        printer.finish();
                        eprintln!("== stage {stage}");
                        current = stage.to_string();
                    }
                    printer.event(e)
                },
            );
            printer.finish();
            let summary = summary?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
    }
    Ok(())
}
