//! `reasonlab rm …`: reward models (schema and logic in `reasonlab_recipe::run::rm`).

use std::path::PathBuf;

use reasonlab_recipe::run::rm::{self, RmScoreConfig};

use super::runcfg::Printer;

#[derive(clap::Subcommand)]
pub enum RmCommand {
    /// Score `prompt` + `completion` (or `messages`) lines with an outcome reward model
    /// (`*ForSequenceClassification` checkpoint): one `{"score": x}` line per input line.
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long, short)]
        out: PathBuf,
        /// Sequences per forward pass.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
    },
}

pub fn run(cmd: RmCommand) -> anyhow::Result<()> {
    match cmd {
        RmCommand::Score {
            model,
            input,
            out,
            batch_size,
        } => {
            let cfg = RmScoreConfig {
                model,
                input,
                out,
                batch_size,
            };
            let mut printer = Printer::default();
            let s = rm::score_file(&cfg, &mut |e| printer.event(e))?;
            printer.finish();
            eprintln!(
                "{} lines: {} scored, {} errors → {}",
                s.lines,
                s.scored,
                s.errors,
                cfg.out.display()
            );
        }
    }
    Ok(())
}
