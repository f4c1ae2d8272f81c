//! One sandboxed interpreter process and the frames it speaks.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::workdir::WorkDir;
use crate::{Limits, Probe, RunOutput, SandboxError, Stopped, landlock, seccomp};

const DRIVER: &str = include_str!("driver.py");

/// What [`Worker::call`] met instead of a reply.
pub(crate) enum Lost {
    /// No reply before the deadline (the worker was killed).
    Timeout,
    /// The worker exited, with its wait status.
    Died(std::process::ExitStatus),
    /// It replied with something that is not a frame of the protocol.
    Garbled,
}

pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    buf: Vec<u8>,
    /// Notebooks served since the worker started.
    pub notebooks: usize,
    /// A notebook ran here: the next block starts a fresh namespace in an emptied directory.
    pub dirty: bool,
    /// Threads alive after the last block (1: only the interpreter's own).
    pub threads: usize,
    /// Its replacement is being started.
    pub replacing: bool,
    pub preloaded: Vec<String>,
    /// Longest reply accepted: both outputs at their cap, JSON-escaped, and room for the rest.
    max_frame: usize,
    // Dropped after the child is reaped: the working directory goes with the worker.
    _workdir: WorkDir,
}

#[derive(Deserialize)]
struct Ready {
    #[serde(default)]
    preloaded: Vec<String>,
}

impl Worker {
    /// Start an interpreter under every protection `probe` found (and the caller accepted).
    pub fn spawn(probe: &Probe, limits: &Limits) -> Result<Self, SandboxError> {
        let workdir = WorkDir::create(&std::env::temp_dir())
            .map_err(|e| SandboxError::Io(format!("working directory: {e}")))?;
        let ruleset = if probe.landlock_abi > 0 {
            let read: Vec<&Path> = probe.read_paths.iter().map(|p| p.as_path()).collect();
            Some(
                landlock::Ruleset::build(
                    probe.landlock_abi,
                    &read,
                    &[workdir.path()],
                    &[Path::new("/dev/null")],
                )
                .map_err(|e| SandboxError::Io(format!("landlock ruleset: {e}")))?,
            )
        } else {
            None
        };
        let mut filter = probe.seccomp.then(seccomp::Filter::new);
        let ruleset_fd = ruleset.as_ref().map(|r| r.raw_fd());
        let rlimits = limits.rlimits();
        let mut cmd = Command::new(&probe.python);
        let sys_path: Vec<String> = probe
            .sys_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        cmd.args(["-E", "-S", "-B", "-u", "-c", DRIVER])
            .arg(serde_json::to_string(&sys_path).unwrap_or_else(|_| "[]".into()))
            .args(&limits.preload)
            .current_dir(workdir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", workdir.path())
            .env("TMPDIR", workdir.path())
            .env("LANG", "C.UTF-8")
            .env("PYTHONIOENCODING", "utf-8")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (setsid, setrlimit, prctl, landlock, seccomp) on data prepared before the fork; it
        // neither allocates nor takes locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for &(resource, value) in &rlimits {
                    let lim = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(fd) = ruleset_fd {
                    landlock::restrict_self(fd)?;
                }
                // No descriptor of the parent's but stdio survives the exec (a connected
                // socket would get around the socket ban).
                const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
                if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(f) = filter.as_mut() {
                    f.install(libc::getpid())?;
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Spawn(format!("{}: {e}", probe.python.display())))?;
        drop(ruleset);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut w = Self {
            child,
            stdin,
            stdout,
            buf: Vec::new(),
            notebooks: 0,
            dirty: false,
            threads: 1,
            replacing: false,
            preloaded: Vec::new(),
            max_frame: 12 * limits.max_output + (1 << 16),
            _workdir: workdir,
        };
        let deadline = Instant::now() + limits.startup;
        match w.recv(deadline) {
            Ok(v) => {
                let ready: Ready = serde_json::from_value(v)
                    .map_err(|e| SandboxError::Spawn(format!("worker greeting: {e}")))?;
                w.preloaded = ready.preloaded;
                Ok(w)
            }
            Err(Lost::Timeout) => Err(SandboxError::Spawn(format!(
                "the interpreter did not start within {:?}",
                limits.startup
            ))),
            Err(Lost::Died(s)) => Err(SandboxError::Spawn(format!(
                "the interpreter exited at start ({s}); is {} a working Python 3?",
                probe.python.display()
            ))),
            Err(Lost::Garbled) => Err(SandboxError::Spawn("garbled worker greeting".into())),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Kill the worker's whole process group and reap it.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling a process group we created (setsid) by its id.
        unsafe {
            libc::killpg(self.pid(), libc::SIGKILL);
        }
        self.child.wait().ok()
    }

    fn send(&mut self, v: &Value) -> Result<(), Lost> {
        let data = serde_json::to_vec(v).map_err(|_| Lost::Garbled)?;
        let mut frame = (data.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&data);
        if self.stdin.write_all(&frame).is_err() {
            return Err(self.died());
        }
        Ok(())
    }

    fn died(&mut self) -> Lost {
        // Its pipe closed, but the process may live on (it closed the pipe itself): kill the
        // group before waiting for it.
        // SAFETY: signalling the process group this worker leads.
        unsafe {
            libc::killpg(self.pid(), libc::SIGKILL);
        }
        match self.child.wait() {
            Ok(s) => Lost::Died(s),
            Err(_) => Lost::Garbled,
        }
    }

    /// Read one frame, waiting at most until `deadline`; on timeout the worker is killed.
    fn recv(&mut self, deadline: Instant) -> Result<Value, Lost> {
        loop {
            if self.buf.len() >= 4 {
                let n = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                if n > self.max_frame {
                    self.kill();
                    return Err(Lost::Garbled);
                }
                if self.buf.len() >= 4 + n {
                    let v = serde_json::from_slice(&self.buf[4..4 + n]);
                    self.buf.drain(..4 + n);
                    return v.map_err(|_| {
                        self.kill();
                        Lost::Garbled
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.kill();
                return Err(Lost::Timeout);
            }
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                self.kill();
                return Err(Lost::Garbled);
            }
            if r == 0 {
                continue;
            }
            let mut chunk = [0u8; 65536];
            // SAFETY: reading into a live stack buffer of the given length.
            let n = unsafe {
                libc::read(
                    self.stdout.as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                )
            };
            if n <= 0 {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return Err(self.died());
            }
            self.buf.extend_from_slice(&chunk[..n as usize]);
        }
    }

    /// Run a code block; `Err` means the worker is gone (and the output says why).
    pub fn run(
        &mut self,
        code: &str,
        limits: &Limits,
        echo_last: bool,
    ) -> Result<RunOutput, RunOutput> {
        let started = Instant::now();
        let fresh = std::mem::take(&mut self.dirty);
        if let Err(lost) = self.send_code(code, limits, echo_last, fresh) {
            return Err(lost_output(lost, started, limits));
        }
        self.recv_output(started, limits)
    }

    /// Queue a code block (it runs after those already queued).
    pub fn send_code(
        &mut self,
        code: &str,
        limits: &Limits,
        echo_last: bool,
        fresh: bool,
    ) -> Result<(), Lost> {
        self.send(&json!({
            "code": code,
            "cpu": limits.cpu.as_secs().max(1),
            "max_output": limits.max_output,
            "echo_last": echo_last,
            "fresh": fresh,
        }))
    }

    /// The reply to the oldest queued block, which started at `started`.
    pub fn recv_output(
        &mut self,
        started: Instant,
        limits: &Limits,
    ) -> Result<RunOutput, RunOutput> {
        let reply = self.recv(started + limits.timeout);
        let seconds = started.elapsed().as_secs_f64();
        match reply {
            Ok(v) => {
                self.threads =
                    v.get("threads").and_then(Value::as_u64).unwrap_or(u64::MAX) as usize;
                let mut out: RunOutput = serde_json::from_value(v).unwrap_or_else(|e| RunOutput {
                    stderr: format!("malformed worker reply: {e}"),
                    exit_code: None,
                    stopped: Some(Stopped::Crashed),
                    ..RunOutput::default()
                });
                out.seconds = seconds;
                Ok(out)
            }
            Err(lost) => Err(lost_output(lost, started, limits)),
        }
    }
}

/// What a block that lost its interpreter reports.
fn lost_output(lost: Lost, started: Instant, limits: &Limits) -> RunOutput {
    let seconds = started.elapsed().as_secs_f64();
    let (stopped, detail) = match lost {
        Lost::Timeout => (
            Stopped::Timeout,
            format!("stopped after {seconds:.1} s (wall-clock limit)"),
        ),
        Lost::Died(s) => match s.signal() {
            Some(libc::SIGXCPU) => (
                Stopped::Cpu,
                format!("stopped: CPU-time limit of {} s", limits.cpu.as_secs()),
            ),
            Some(sig) => (
                Stopped::Crashed,
                format!("the interpreter died (signal {sig})"),
            ),
            None => (
                Stopped::Crashed,
                format!("the interpreter exited ({})", s.code().unwrap_or(-1)),
            ),
        },
        Lost::Garbled => (
            Stopped::Crashed,
            "the interpreter broke the protocol".into(),
        ),
    };
    RunOutput {
        stdout: String::new(),
        stderr: detail,
        exit_code: None,
        timed_out: stopped == Stopped::Timeout,
        truncated: false,
        stopped: Some(stopped),
        seconds,
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
