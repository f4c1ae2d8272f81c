//! Runs untrusted Python from model output: program-of-thought answers, tool-integrated code
//! blocks, code rewards.
//!
//! A [`Sandbox`] keeps a pool of warm interpreters. Each [`Notebook`] takes one and runs code
//! blocks in a shared namespace, as a notebook does (the blocks of one completion see each
//! other's variables, which is how ToRA-style tool use works); when the notebook ends the
//! interpreter goes back to the pool, and the next notebook on it starts with a fresh namespace
//! in an emptied working directory. An interpreter that died, timed out or left a thread running
//! is replaced; one that served `recycle_after` notebooks is replaced as soon as its successor,
//! started in the background, is ready.
//!
//! Every interpreter runs under, in this order of set-up:
//! 1. its own process group (made by `setsid`), killed as a whole on timeout;
//! 2. resource limits: address space (`memory_mb`), CPU time (per block, and a hard cap for the
//!    interpreter's life), file size, open files, no core dumps;
//! 3. a scrubbed environment (nothing of the parent's) and a fresh temporary working directory,
//!    removed with the interpreter;
//! 4. **Landlock** (kernel ≥ 5.13): reads only beneath the interpreter's and the system's
//!    directories, writes only beneath its working directory; with ABI ≥ 4 no TCP; with ABI ≥ 6
//!    no signals to processes outside the sandbox;
//! 5. **seccomp-BPF**: threads but no new processes, no sockets, signals only to itself, and none
//!    of the kernel interfaces a Python program does not need (mounts, namespaces, ptrace,
//!    modules, BPF, io_uring, keyrings).
//!
//! Landlock and seccomp are required: where the kernel lacks either, [`Sandbox::new`] refuses
//! with [`SandboxError::Weak`] unless the caller accepted [`Isolation::AcceptWeak`].
//! [`check`] reports what this machine offers.

mod landlock;
pub mod rewards;
mod seccomp;
pub mod tools;
mod workdir;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the sandbox would run without {}; refusing to run untrusted code (accept weaker \
         isolation explicitly to run anyway)",
        .0.join(" and ")
    )]
    Weak(Vec<String>),
    #[error("no Python interpreter: {0}")]
    NoPython(String),
    #[error("cannot start a sandboxed interpreter: {0}")]
    Spawn(String),
    #[error("sandbox I/O: {0}")]
    Io(String),
}

/// Whether missing kernel protections stop the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Landlock and seccomp must both be active (the default).
    #[default]
    Required,
    /// Run with whatever the kernel offers, rlimits and process groups at least.
    AcceptWeak,
}

/// Limits of one code block and of the interpreters that run them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit of one block; the interpreter is killed when it passes.
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// CPU-time limit of one block.
    #[serde(with = "secs")]
    pub cpu: Duration,
    /// Address-space limit of an interpreter, MiB.
    pub memory_mb: u64,
    /// Bytes kept of a block's stdout and of its stderr (the rest is cut and the output marked
    /// truncated).
    pub max_output: usize,
    /// Largest file an interpreter may write, MiB.
    pub max_file_mb: u64,
    /// Modules imported when an interpreter starts, when the Python has them.
    pub preload: Vec<String>,
    /// How long an interpreter may take to start (preloads included).
    #[serde(with = "secs")]
    pub startup: Duration,
    /// Notebooks an interpreter serves before it is replaced (1: a fresh one for each).
    pub recycle_after: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            cpu: Duration::from_secs(10),
            memory_mb: 1024,
            max_output: 64 * 1024,
            max_file_mb: 64,
            preload: vec!["math".into(), "sympy".into(), "numpy".into()],
            startup: Duration::from_secs(30),
            recycle_after: 1000,
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if !(v.is_finite() && v > 0.0) {
            return Err(serde::de::Error::custom("a positive number of seconds"));
        }
        Ok(Duration::from_secs_f64(v))
    }
}

impl Limits {
    /// The rlimits set in each interpreter: (resource, value).
    fn rlimits(&self) -> Vec<(libc::__rlimit_resource_t, libc::rlim_t)> {
        let mib = 1024 * 1024;
        // The CPU hard cap covers the interpreter's whole life; each block gets a soft limit.
        let life = self.cpu.as_secs().max(1) * (self.recycle_after as u64 + 1) * 4 + 60;
        vec![
            (libc::RLIMIT_AS, self.memory_mb * mib),
            (libc::RLIMIT_CPU, life),
            (libc::RLIMIT_FSIZE, self.max_file_mb * mib),
            (libc::RLIMIT_NOFILE, 256),
            (libc::RLIMIT_CORE, 0),
        ]
    }
}

/// Why a block stopped before it finished on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// The wall-clock limit passed.
    Timeout,
    /// The CPU-time limit passed.
    Cpu,
    /// An allocation failed under the memory limit.
    Memory,
    /// Output passed `max_output` (the block ran on; the output was cut).
    Output,
    /// The interpreter died.
    Crashed,
}

/// What one code block did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunOutput {
    pub stdout: String,
    pub stderr: String,
    /// 0 on success, 1 on an uncaught exception, `sys.exit`'s code; `None` when the
    /// interpreter was killed.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub truncated: bool,
    pub stopped: Option<Stopped>,
    pub seconds: f64,
}

impl RunOutput {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && self.stopped.is_none()
    }
}

/// What the kernel and the interpreter offer on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub python: PathBuf,
    pub python_version: String,
    /// The interpreter's module search path: workers start without `site` (faster) and get
    /// this path instead.
    pub sys_path: Vec<PathBuf>,
    /// Directories the interpreter may read (its installation, the system's libraries).
    pub read_paths: Vec<PathBuf>,
    /// 0: no Landlock.
    pub landlock_abi: u32,
    pub seccomp: bool,
}

/// One protection and whether it is active.
#[derive(Debug, Clone, Serialize)]
pub struct Protection {
    pub name: &'static str,
    pub active: bool,
    pub detail: String,
    /// Required for [`Isolation::Required`].
    pub required: bool,
}

impl Probe {
    /// Find the interpreter (`python` on the `PATH` unless a path) and the kernel features.
    pub fn new(python: &Path) -> Result<Self, SandboxError> {
        let out = std::process::Command::new(python)
            .args([
                "-E",
                "-c",
                "import sys, json; print(json.dumps({'exe': sys.executable, 'version': \
                 sys.version.split()[0], 'prefixes': [sys.prefix, sys.base_prefix, \
                 sys.exec_prefix], 'path': sys.path}))",
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .map_err(|e| SandboxError::NoPython(format!("{}: {e}", python.display())))?;
        if !out.status.success() {
            return Err(SandboxError::NoPython(format!(
                "{} exited with {}",
                python.display(),
                out.status
            )));
        }
        #[derive(Deserialize)]
        struct Info {
            exe: PathBuf,
            version: String,
            prefixes: Vec<PathBuf>,
            path: Vec<PathBuf>,
        }
        let info: Info = serde_json::from_slice(&out.stdout)
            .map_err(|e| SandboxError::NoPython(format!("{}: {e}", python.display())))?;
        let exe = std::fs::canonicalize(&info.exe).unwrap_or(info.exe);
        let mut read: Vec<PathBuf> = [
            "/usr",
            "/lib",
            "/lib32",
            "/lib64",
            "/bin",
            "/etc/ld.so.cache",
            "/etc/localtime",
            "/etc/passwd",
            "/etc/group",
            "/dev/urandom",
            "/dev/zero",
            "/sys/devices/system/cpu",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        if let Some(dir) = exe.parent().and_then(|d| d.parent()) {
            read.push(dir.to_path_buf()); // the installation (bin/..)
        }
        let sys_path: Vec<PathBuf> = info
            .path
            .into_iter()
            .filter(|p| p.is_absolute() && p.exists())
            .collect();
        read.extend(
            info.prefixes
                .iter()
                .chain(&sys_path)
                .filter(|p| p.is_absolute() && p.exists())
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        );
        read.sort();
        read.dedup();
        // A path beneath another one adds nothing.
        let mut kept: Vec<PathBuf> = Vec::new();
        for p in read {
            if !kept.iter().any(|k| p.starts_with(k)) {
                kept.push(p);
            }
        }
        Ok(Self {
            python: exe,
            python_version: info.version,
            sys_path,
            read_paths: kept,
            landlock_abi: landlock::abi(),
            seccomp: seccomp::available(),
        })
    }

    /// Each protection with its state on this machine.
    pub fn protections(&self) -> Vec<Protection> {
        let abi = self.landlock_abi;
        vec![
            Protection {
                name: "process group",
                active: true,
                detail: "setsid; the whole group is killed on timeout".into(),
                required: false,
            },
            Protection {
                name: "resource limits",
                active: true,
                detail: "address space, CPU time, file size, open files, no core dumps".into(),
                required: false,
            },
            Protection {
                name: "scrubbed environment",
                active: true,
                detail: "no variable of the parent's; HOME and TMPDIR are the working directory"
                    .into(),
                required: false,
            },
            Protection {
                name: "landlock filesystem",
                active: abi >= 1,
                detail: if abi >= 1 {
                    format!(
                        "ABI {abi}: writes only beneath the working directory, reads only the interpreter's and system directories"
                    )
                } else {
                    "unavailable (kernel < 5.13 or Landlock not enabled)".into()
                },
                required: true,
            },
            Protection {
                name: "landlock network",
                active: abi >= 4,
                detail: if abi >= 4 {
                    "no TCP bind or connect".into()
                } else {
                    "needs ABI 4 (kernel 6.7); seccomp's socket ban still applies".into()
                },
                required: false,
            },
            Protection {
                name: "landlock signal scope",
                active: abi >= 6,
                detail: if abi >= 6 {
                    "no signals or abstract Unix sockets outside the sandbox".into()
                } else {
                    "needs ABI 6 (kernel 6.12); seccomp's kill filter still applies".into()
                },
                required: false,
            },
            Protection {
                name: "seccomp",
                active: self.seccomp,
                detail: if self.seccomp {
                    "threads only (no fork), no sockets, signals only to itself, no ptrace, \
                     mounts, namespaces, modules, BPF or io_uring"
                        .into()
                } else {
                    "unavailable (kernel without CONFIG_SECCOMP_FILTER)".into()
                },
                required: true,
            },
        ]
    }

    /// The required protections that are missing.
    pub fn missing(&self) -> Vec<String> {
        self.protections()
            .into_iter()
            .filter(|p| p.required && !p.active)
            .map(|p| p.name.to_string())
            .collect()
    }
}

/// What [`check`] found: the probe and a live test of the protections.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub python: PathBuf,
    pub python_version: String,
    pub preloaded: Vec<String>,
    pub protections: Vec<Protection>,
    /// Attacks tried in a sandboxed interpreter: (what, whether it was stopped).
    pub attacks: Vec<(String, bool)>,
}

/// Probe this machine and try a few attacks in a sandboxed interpreter.
pub fn check(python: &Path) -> Result<CheckReport, SandboxError> {
    let probe = Probe::new(python)?;
    let sb = Sandbox::with_probe(probe.clone(), Limits::default(), Isolation::AcceptWeak, 0)?;
    let tries: [(&str, &str); 5] = [
        ("start a process", "import os\nos.fork()"),
        ("open a socket", "import socket\nsocket.socket()"),
        (
            "write outside the working directory",
            "open('/tmp/reasonlab-sandbox-check', 'w').write('x')",
        ),
        (
            "signal the parent",
            "import os, signal\nos.kill(os.getppid(), 0)",
        ),
        (
            "read the parent's environment",
            "open('/proc/%d/environ' % __import__('os').getppid()).read()",
        ),
    ];
    let mut attacks = Vec::new();
    let mut preloaded = Vec::new();
    for (what, code) in tries {
        let mut s = sb.notebook()?;
        preloaded = s.preloaded().to_vec();
        let out = s.run(code);
        attacks.push((what.to_string(), !out.ok()));
    }
    Ok(CheckReport {
        python: probe.python.clone(),
        python_version: probe.python_version.clone(),
        preloaded,
        protections: probe.protections(),
        attacks,
    })
}

/// The pool's interpreters: waiting, lent to notebooks, and being started.
struct Pool {
    idle: Vec<Worker>,
    busy: usize,
    starting: usize,
}

struct Inner {
    probe: Probe,
    limits: Limits,
    pool: Mutex<Pool>,
    warm: usize,
}

impl Inner {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start interpreters in the background until `warm` of them exist.
    fn top_up(self: &Arc<Self>) {
        let mut p = self.pool();
        let missing = self.warm.saturating_sub(p.idle.len() + p.busy + p.starting);
        self.start(&mut p, missing);
    }

    /// Start `n` interpreters in the background; each joins the idle list and retires an idle
    /// interpreter that is due for replacement.
    fn start(self: &Arc<Self>, p: &mut Pool, n: usize) {
        p.starting += n;
        for _ in 0..n {
            let inner = Arc::clone(self);
            std::thread::spawn(move || {
                let w = Worker::spawn(&inner.probe, &inner.limits);
                let mut p = inner.pool();
                p.starting -= 1;
                let Ok(w) = w else { return };
                p.idle.push(w);
                let recycle = inner.limits.recycle_after;
                let retired = (p.idle.len() + p.busy > inner.warm.max(1))
                    .then(|| p.idle.iter().position(|w| w.notebooks >= recycle))
                    .flatten()
                    .map(|i| p.idle.swap_remove(i));
                drop(p);
                drop(retired);
            });
        }
    }
}

/// Largest program queued behind a running one in [`Sandbox::run_batch`]: JSON-escaped (at
/// most six bytes a byte) it stays within a pipe's 64 KiB.
const QUEUE_MAX: usize = 8 * 1024;

/// A pool of sandboxed interpreters.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

impl Sandbox {
    /// Probe `python`, refuse if a required protection is missing (unless `isolation` accepts
    /// weaker isolation), and start `warm` interpreters.
    pub fn new(
        python: &Path,
        limits: Limits,
        isolation: Isolation,
        warm: usize,
    ) -> Result<Self, SandboxError> {
        Self::with_probe(Probe::new(python)?, limits, isolation, warm)
    }

    pub fn with_probe(
        probe: Probe,
        limits: Limits,
        isolation: Isolation,
        warm: usize,
    ) -> Result<Self, SandboxError> {
        let missing = probe.missing();
        if !missing.is_empty() && isolation == Isolation::Required {
            return Err(SandboxError::Weak(missing));
        }
        // What interpreters of killed processes left in the temporary directory.
        workdir::sweep(&std::env::temp_dir(), workdir::SWEEP_MIN_AGE);
        let mut idle = Vec::with_capacity(warm);
        for _ in 0..warm {
            idle.push(Worker::spawn(&probe, &limits)?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                probe,
                limits,
                pool: Mutex::new(Pool {
                    idle,
                    busy: 0,
                    starting: 0,
                }),
                warm,
            }),
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.inner.probe
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Interpreters waiting in the pool.
    pub fn idle(&self) -> usize {
        self.inner.pool().idle.len()
    }

    /// A notebook on a warm interpreter (a new one when none is idle).
    pub fn notebook(&self) -> Result<Notebook, SandboxError> {
        let w = {
            let mut p = self.inner.pool();
            let w = p.idle.pop();
            p.busy += 1;
            w
        };
        let w = match w {
            Some(w) => w,
            None => match Worker::spawn(&self.inner.probe, &self.inner.limits) {
                Ok(w) => w,
                Err(e) => {
                    self.inner.pool().busy -= 1;
                    return Err(e);
                }
            },
        };
        self.inner.top_up();
        Ok(Notebook {
            inner: Arc::clone(&self.inner),
            worker: Some(w),
        })
    }

    /// Run one program in a notebook of its own.
    pub fn run(&self, code: &str) -> Result<RunOutput, SandboxError> {
        Ok(self.notebook()?.run(code))
    }

    /// Run independent programs, each in a fresh namespace and an emptied working directory
    /// as if in a notebook of its own, over `warm` interpreters (at least one). Each interpreter
    /// has its next program queued while it runs the current one, so it never waits for the
    /// caller. Outputs come back in input order; a program that crashes or times out its
    /// interpreter is reported as such, and the programs queued behind it run on a new one.
    pub fn run_batch(&self, codes: &[&str]) -> Vec<RunOutput> {
        let n = codes.len();
        let slots: Vec<Mutex<Option<RunOutput>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let pull = || {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (i < n).then_some(i)
        };
        std::thread::scope(|scope| {
            for _ in 0..self.inner.warm.max(1).min(n) {
                scope.spawn(|| self.lane(codes, &pull, &slots));
            }
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// One interpreter's share of [`Sandbox::run_batch`], two programs in flight.
    fn lane(
        &self,
        codes: &[&str],
        pull: &(dyn Fn() -> Option<usize> + Sync),
        slots: &[Mutex<Option<RunOutput>>],
    ) {
        use std::collections::VecDeque;
        use std::time::Instant;
        let limits = &self.inner.limits;
        let put = |i: usize, out: RunOutput| {
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
        };
        let failed = |e: &SandboxError| RunOutput {
            stderr: e.to_string(),
            stopped: Some(Stopped::Crashed),
            ..RunOutput::default()
        };
        let mut notebook = match self.notebook() {
            Ok(s) => s,
            Err(e) => {
                while let Some(i) = pull() {
                    put(i, failed(&e));
                }
                return;
            }
        };
        let mut retry: VecDeque<usize> = VecDeque::new();
        let mut inflight: VecDeque<usize> = VecDeque::new();
        let mut started = Instant::now();
        let mut lost_sends = 0;
        loop {
            while inflight.len() < 2 {
                let Some(i) = retry.pop_front().or_else(pull) else {
                    break;
                };
                if lost_sends >= 3 {
                    put(
                        i,
                        failed(&SandboxError::Spawn("interpreters die on start".into())),
                    );
                    continue;
                }
                // Queue behind a running program only what fits the pipe: a blocking write
                // would not see the running program's deadline.
                if !inflight.is_empty() && codes[i].len() > QUEUE_MAX {
                    retry.push_front(i);
                    break;
                }
                let worker = match notebook.worker_mut() {
                    Ok(w) => w,
                    Err(e) => {
                        put(i, failed(&e));
                        continue;
                    }
                };
                if worker.send_code(codes[i], limits, false, true).is_err() {
                    // The interpreter is gone: what was queued on it runs on the next one.
                    lost_sends += 1;
                    notebook.worker = None;
                    retry.push_front(i);
                    retry.extend(inflight.drain(..));
                    continue;
                }
                lost_sends = 0;
                if inflight.is_empty() {
                    started = Instant::now();
                }
                inflight.push_back(i);
            }
            let Some(i) = inflight.pop_front() else {
                break;
            };
            let Some(worker) = notebook.worker.as_mut() else {
                retry.push_front(i);
                continue;
            };
            match worker.recv_output(started, limits) {
                Ok(out) => {
                    worker.notebooks += 1;
                    let retire = worker.threads > 1 || worker.notebooks >= limits.recycle_after;
                    put(i, out);
                    if retire {
                        notebook.worker = None;
                        retry.extend(inflight.drain(..));
                    }
                }
                Err(out) => {
                    put(i, out);
                    notebook.worker = None;
                    retry.extend(inflight.drain(..));
                }
            }
            started = Instant::now();
        }
    }
}

/// Code blocks sharing one namespace on one interpreter.
pub struct Notebook {
    inner: Arc<Inner>,
    worker: Option<Worker>,
}

impl Notebook {
    /// The notebook's interpreter, started anew if the last one died.
    fn worker_mut(&mut self) -> Result<&mut Worker, SandboxError> {
        if self.worker.is_none() {
            self.worker = Some(Worker::spawn(&self.inner.probe, &self.inner.limits)?);
        }
        Ok(self.worker.as_mut().expect("just set"))
    }

    /// Modules the interpreter imported at start.
    pub fn preloaded(&self) -> &[String] {
        self.worker.as_ref().map_or(&[], |w| &w.preloaded)
    }

    /// Run a block; its variables stay for the next block.
    pub fn run(&mut self, code: &str) -> RunOutput {
        self.run_with(code, false)
    }

    /// Run a block and, as a notebook does, print the value of a final expression.
    pub fn run_cell(&mut self, code: &str) -> RunOutput {
        self.run_with(code, true)
    }

    fn run_with(&mut self, code: &str, echo_last: bool) -> RunOutput {
        let limits = &self.inner.limits;
        let worker = match self.worker.take() {
            Some(w) => w,
            None => match Worker::spawn(&self.inner.probe, limits) {
                Ok(w) => w,
                Err(e) => {
                    return RunOutput {
                        stderr: e.to_string(),
                        stopped: Some(Stopped::Crashed),
                        ..RunOutput::default()
                    };
                }
            },
        };
        let mut worker = worker;
        match worker.run(code, limits, echo_last) {
            Ok(out) => {
                self.worker = Some(worker);
                out
            }
            // The interpreter is gone and its state with it; a later block starts afresh.
            Err(out) => out,
        }
    }
}

impl Drop for Notebook {
    /// The interpreter goes back to the pool. The namespace and the working directory are reset
    /// lazily, with the next notebook's first block, so ending a notebook costs no round trip.
    /// One that left a thread running is retired at once; one that has served `recycle_after`
    /// notebooks keeps serving until its replacement, started in the background, is ready (at
    /// most twice as long), so no notebook waits for an interpreter to start.
    fn drop(&mut self) {
        let recycle = self.inner.limits.recycle_after;
        let warm = self.inner.warm.max(1);
        let mut p = self.inner.pool();
        p.busy -= 1;
        let Some(mut w) = self.worker.take() else {
            drop(p);
            self.inner.top_up();
            return;
        };
        w.notebooks += 1;
        w.dirty = true;
        let ready_others = p.idle.len() + p.busy;
        let keep = if w.threads > 1 || w.notebooks >= 2 * recycle {
            false
        } else if w.notebooks >= recycle {
            if ready_others >= warm {
                false
            } else {
                if !w.replacing {
                    w.replacing = true;
                    self.inner.start(&mut p, 1);
                }
                true
            }
        } else {
            p.idle.len() < warm
        };
        if keep {
            p.idle.push(w);
            return;
        }
        drop(p);
        drop(w);
        self.inner.top_up();
    }
}
