//! Run drivers: each stage as `run(&Config, &RunDir, Resume, observer) -> Result<Summary>`,
//! with its TOML schema owned here and one folder layout for every stage.
//!
//! ```text
//! OUT/
//!   config.toml          the resolved config: every default written out (eval: [`eval::EvalRun`])
//!   metrics.jsonl        one line per step (`step` counts from 1)
//!   completions.jsonl    sampled completions, each with its `step`
//!   checkpoints/step-N/  HF-layout model + optimizer.bpk + trainer_state.json
//!   plots/               training curves (SVG, PNG) and report.html
//!   summary.json         what the run did
//! ```
//!
//! Resuming from `checkpoints/step-N` first drops every log line written after step N (a run
//! killed between checkpoints wrote some), so each file reads as one clean run. A fresh start
//! empties the logs of an earlier run in the same folder.

pub mod distill;
pub mod eval;
pub mod generate;
pub mod grpo;
pub mod iterative;
pub mod pretrain;
pub mod rm;
pub mod sample;
pub mod sft;

use std::fs::File;
use std::path::{Path, PathBuf};

use reasonlab_core::fs::atomic_write;
use reasonlab_core::jsonl::JsonlWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a driver reports as it goes (the CLI draws a progress bar from these).
#[derive(Debug)]
pub enum Event<'a> {
    /// Before the first step: `done` of `total` steps are behind (a resumed run).
    Started {
        stage: &'static str,
        total: usize,
        done: usize,
        resumed_from: Option<&'a Path>,
    },
    /// A step finished; `message` is its headline numbers.
    Progress { done: usize, message: String },
    /// Something the user should know (prompts left out, log lines dropped, …).
    Note(String),
    /// A checkpoint was written.
    Saved(&'a Path),
}

/// Whether a run continues from its newest checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Start from step 0.
    #[default]
    Fresh,
    /// Continue from the newest complete checkpoint in `OUT/checkpoints`, or start fresh when
    /// there is none.
    Latest,
}

/// Errors of the run drivers, naming the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Jsonl(#[from] reasonlab_core::jsonl::JsonlError),
    #[error(transparent)]
    Checkpoint(#[from] reasonlab_train::checkpoint::CheckpointError),
    #[error(transparent)]
    Tokenize(#[from] reasonlab_tokenize::TokenizeError),
    #[error(transparent)]
    Model(#[from] reasonlab_model::ModelError),
    #[error(transparent)]
    Grpo(#[from] reasonlab_train::grpo::GrpoError),
    #[error(transparent)]
    Sft(#[from] reasonlab_train::sft::SftError),
    #[error(transparent)]
    Pretrain(#[from] reasonlab_train::pretrain::PretrainError),
    #[error(transparent)]
    Rm(#[from] reasonlab_train::rm::RmError),
    #[error("rewards: {0}")]
    Reward(#[from] reasonlab_reward::Error),
    #[error(transparent)]
    Engine(#[from] crate::engines::EngineSpecError),
    #[error(transparent)]
    Sandbox(#[from] reasonlab_sandbox::SandboxError),
}

/// Open `backend`'s device for `purpose` and say where it landed: a note naming the device, a
/// warning when a GPU backend runs on a software adapter or its matmuls cannot reach the card's
/// tensor cores.
pub(crate) fn open_device(
    backend: reasonlab_model::BackendKind,
    purpose: reasonlab_model::Purpose,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<reasonlab_model::tensor::Device, RunError> {
    let (device, info) = reasonlab_model::open_for(backend, purpose)?;
    report_device(&info, on_event);
    Ok(device)
}

/// [`open_device`] for a training run with its activation checkpointing and mixed precision.
pub(crate) fn open_training_device(
    backend: reasonlab_model::BackendKind,
    checkpointing: reasonlab_model::ActivationCheckpointing,
    mixed_precision: reasonlab_model::Precision,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<reasonlab_model::tensor::Device, RunError> {
    let training = reasonlab_model::Training {
        checkpointing,
        mixed_precision,
    };
    open_device(
        backend,
        reasonlab_model::Purpose::Training(training),
        on_event,
    )
}

/// Say which device a run landed on; warn when a GPU backend runs on a software adapter or its
/// matmuls cannot reach the card's tensor cores.
pub(crate) fn report_device(
    info: &reasonlab_model::DeviceInfo,
    on_event: &mut dyn FnMut(Event<'_>),
) {
    on_event(Event::Note(info.to_string()));
    for warning in info.warnings() {
        tracing::warn!("{warning}");
    }
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A parsed config file and the directory its relative paths are resolved against.
pub struct Loaded<T> {
    pub config: T,
    pub dir: PathBuf,
}

impl<T> Loaded<T> {
    /// `p` relative to the config file (absolute paths unchanged).
    pub fn path(&self, p: &Path) -> PathBuf {
        resolve(&self.dir, p)
    }
}

/// `p` against `base` (absolute paths unchanged).
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Read and parse a TOML config; relative paths in it are relative to its folder.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<Loaded<T>, RunError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let config: T = toml::from_str(&text).map_err(|e| RunError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok(Loaded { config, dir })
}

/// A config given as a TOML table (a recipe's stage); relative paths in it are relative to
/// `dir`; `what` names it in errors.
pub fn from_table<T: DeserializeOwned>(
    table: toml::Table,
    dir: &Path,
    what: &str,
) -> Result<Loaded<T>, RunError> {
    let config: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| RunError::Config {
            path: PathBuf::from(what),
            message: e.to_string(),
        })?;
    Ok(Loaded {
        config,
        dir: dir.to_path_buf(),
    })
}

/// `base` with the TOML table `overrides` laid over it (nested tables merge key by key);
/// `what` names the table in errors.
pub fn overlay<T: Serialize + DeserializeOwned>(
    base: &T,
    overrides: &toml::Table,
    what: &str,
) -> Result<T, RunError> {
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
    let invalid = |e: serde_json::Error| RunError::Invalid(format!("[{what}] table: {e}"));
    let mut value = serde_json::to_value(base).map_err(invalid)?;
    merge(
        &mut value,
        serde_json::to_value(overrides).map_err(invalid)?,
    );
    serde_json::from_value(value).map_err(invalid)
}

/// A run folder (layout in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The folder `root`, created if needed (`checkpoints/` appears with the first one).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, RunError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn completions(&self) -> PathBuf {
        self.root.join("completions.jsonl")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// The newest complete checkpoint, when resuming.
    pub fn resume_from(&self, resume: Resume) -> Result<Option<PathBuf>, RunError> {
        Ok(match resume {
            Resume::Fresh => None,
            Resume::Latest => reasonlab_train::checkpoint::latest(&self.root)?,
        })
    }

    /// Write the resolved config (every default spelled out) atomically.
    pub fn write_config<T: Serialize>(&self, config: &T) -> Result<(), RunError> {
        let path = self.config();
        let text = toml::to_string_pretty(config).map_err(|e| RunError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        atomic_write(&path, text.as_bytes()).map_err(io(&path))
    }

    /// Write `summary.json` atomically.
    pub fn write_summary<T: Serialize>(&self, summary: &T) -> Result<(), RunError> {
        let path = self.summary();
        let text = serde_json::to_string_pretty(summary)
            .map_err(|e| RunError::Invalid(format!("summary: {e}")))?;
        atomic_write(&path, text.as_bytes()).map_err(io(&path))
    }

    /// The metrics and completions logs, opened for appending after dropping every line of a
    /// step later than `step` (0 on a fresh start: the logs are emptied). Returns the writers
    /// and how many lines were dropped.
    pub fn open_logs(&self, step: usize) -> Result<(Logs, usize), RunError> {
        let mut dropped = 0;
        for path in [self.metrics(), self.completions()] {
            dropped += keep_steps_up_to(&path, step)?;
        }
        let open = |p: PathBuf| JsonlWriter::append(&p).map_err(io(&p));
        Ok((
            Logs {
                metrics: open(self.metrics())?,
                completions: open(self.completions())?,
            },
            dropped,
        ))
    }
}

impl RunDir {
    /// Open the logs at step `done` ([`RunDir::open_logs`]) and tell `on_event` that `stage`
    /// starts there, and how many log lines were dropped.
    pub fn begin(
        &self,
        stage: &'static str,
        total: usize,
        done: usize,
        resumed_from: Option<&Path>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Logs, RunError> {
        let (logs, dropped) = self.open_logs(done)?;
        on_event(Event::Started {
            stage,
            total,
            done,
            resumed_from,
        });
        if dropped > 0 {
            on_event(Event::Note(format!(
                "dropped {dropped} log lines written after step {done}"
            )));
        }
        Ok(logs)
    }
}

/// A run's append-only logs.
pub struct Logs {
    pub metrics: JsonlWriter<File>,
    pub completions: JsonlWriter<File>,
}

/// Keep the lines of the JSONL file `path` whose `step` is at most `step` (lines without a
/// readable `step` are kept), rewriting it atomically; returns how many were dropped. A last
/// line without its newline that is not JSON is the write a kill cut off: it is dropped too,
/// so that appending starts on a line of its own. A file that does not exist is left so.
pub fn keep_steps_up_to(path: &Path, step: usize) -> Result<usize, RunError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(path)(e)),
    };
    let unterminated = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let last = lines.len() - 1;
    let mut kept = Vec::with_capacity(bytes.len() + 1);
    let mut dropped = 0;
    for (i, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = serde_json::from_slice::<serde_json::Value>(line).ok();
        let later = value
            .as_ref()
            .and_then(|v| v.get("step")?.as_u64())
            .is_some_and(|s| s > step as u64);
        let cut_off = unterminated && i == last && value.is_none();
        if later || cut_off {
            dropped += 1;
        } else {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    if dropped > 0 || unterminated {
        atomic_write(path, &kept).map_err(io(path))?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `step` of every line of the JSONL file `path`.
    fn logged_steps(path: PathBuf) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap();
        (text.lines())
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn logs_keep_only_steps_up_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("run")).unwrap();
        let lines: String = (1..=6)
            .map(|s| format!("{{\"step\": {s}, \"loss\": 0.5}}\n"))
            .collect();
        std::fs::write(run.metrics(), &lines).unwrap();
        std::fs::write(
            run.completions(),
            "{\"step\": 2}\n{\"step\": 5}\nnot json\n",
        )
        .unwrap();
        let (mut logs, dropped) = run.open_logs(4).unwrap();
        assert_eq!(dropped, 3);
        logs.metrics.write(&serde_json::json!({"step": 5})).unwrap();
        drop(logs);
        assert_eq!(logged_steps(run.metrics()), [1, 2, 3, 4, 5]);
        assert_eq!(
            std::fs::read_to_string(run.completions()).unwrap(),
            "{\"step\": 2}\nnot json\n"
        );
        // A fresh start empties them.
        let (_, dropped) = run.open_logs(0).unwrap();
        assert_eq!(dropped, 6);
    }

    #[test]
    fn a_line_cut_off_by_a_kill_is_dropped_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("run")).unwrap();
        // Killed while writing step 9's line, after the checkpoint at step 8.
        let mut text: String = (1..=8).map(|s| format!("{{\"step\": {s}}}\n")).collect();
        text.push_str("{\"step\": 9, \"lo");
        std::fs::write(run.metrics(), &text).unwrap();
        // A whole last line that only lost its newline stays.
        std::fs::write(run.completions(), "{\"step\": 2}\n{\"step\": 3}").unwrap();
        let (mut logs, dropped) = run.open_logs(8).unwrap();
        assert_eq!(dropped, 1);
        logs.metrics.write(&serde_json::json!({"step": 9})).unwrap();
        logs.completions
            .write(&serde_json::json!({"step": 9}))
            .unwrap();
        drop(logs);
        assert_eq!(logged_steps(run.metrics()), (1..=9).collect::<Vec<_>>());
        assert_eq!(logged_steps(run.completions()), [2, 3, 9]);
    }
}
