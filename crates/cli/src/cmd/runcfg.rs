//! Shared plumbing of the TOML-configured training commands (`sft`, `pretrain`, `grpo`,
//! `distill`): reading the file, resolving paths against it, laying a table of overrides over
//! typed defaults, progress bars and the curves report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A parsed config file and the directory its relative paths are resolved against.
pub struct Loaded<T> {
    pub config: T,
    pub text: String,
    pub dir: PathBuf,
}

impl<T> Loaded<T> {
    /// `p` relative to the config file (absolute paths unchanged).
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Read and parse a TOML config.
pub fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Loaded<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: T = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok(Loaded { config, text, dir })
}

/// `base` with the TOML table `overrides` laid over it (nested tables merge key by key).
pub fn overlay<T: Serialize + DeserializeOwned>(
    base: &T,
    overrides: &toml::Table,
    what: &str,
) -> anyhow::Result<T> {
    let mut value = serde_json::to_value(base)?;
    merge(&mut value, serde_json::to_value(overrides)?);
    serde_json::from_value(value).with_context(|| format!("[{what}] table"))
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

/// `OUT/plots/*.svg` and `OUT/plots/report.html` from `OUT/metrics.jsonl`: one panel per
/// `(title, keys)`, each key plotted against `step`.
pub fn write_curves(out: &Path, title: &str, panels: &[(&str, &[&str])]) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = reasonlab_core::jsonl::read(
        &out.join("metrics.jsonl"),
        reasonlab_core::jsonl::BadLines::Skip,
    )?;
    let dir = out.join("plots");
    reasonlab_recipe::plots::write_metric_report(&dir, title, &rows, panels)?;
    Ok(())
}
