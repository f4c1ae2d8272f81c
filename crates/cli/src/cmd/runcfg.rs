//! What the run commands share: turning a driver's events into a progress bar and notes, and
//! the `--resume` flag into a [`Resume`].

use indicatif::{ProgressBar, ProgressStyle};
use reasonlab_recipe::run::{Event, Resume};

/// A progress bar over `total` steps labelled `what`.
pub fn bar(what: &str, total: u64, position: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_position(position);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Draws a driver's [`Event`]s: a bar per stage, notes on stderr.
#[derive(Default)]
pub struct Printer {
    bar: Option<ProgressBar>,
}

impl Printer {
    pub fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Started {
                stage,
                total,
                done,
                resumed_from,
            } => {
                self.finish();
                if let Some(from) = resumed_from {
                    eprintln!("resuming from {} (step {done})", from.display());
                }
                self.bar = Some(bar(stage, total as u64, done as u64));
            }
            Event::Progress { done, message } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done as u64);
                    bar.set_message(message);
                }
            }
            Event::Note(note) => match &self.bar {
                // A hidden bar (stderr not a terminal) prints nothing, notes included.
                Some(bar) if !bar.is_hidden() => bar.println(note),
                _ => eprintln!("{note}"),
            },
            Event::Saved(dir) => tracing::info!(checkpoint = %dir.display(), "saved"),
        }
    }

    /// Finish the current bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// `--backend` and `--mixed-precision` on a training command driven by a config file: each
/// overrides the file's key of the same name.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceFlags {
    /// Tensor backend, overriding the config's `backend`: flex (CPU), wgpu, vulkan or cuda.
    #[arg(long)]
    pub backend: Option<reasonlab_model::BackendKind>,
    /// Mixed-precision compute type, overriding the config's `mixed_precision`: bf16 or f16
    /// with f32 master weights (GPU backends), f32 for off.
    #[arg(long)]
    pub mixed_precision: Option<reasonlab_model::Precision>,
}

/// `--resume` as the drivers take it.
pub fn resume(flag: bool) -> Resume {
    if flag { Resume::Latest } else { Resume::Fresh }
}
