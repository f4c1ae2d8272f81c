//! `reasonlab sandbox …`: run untrusted Python (logic in `reasonlab_sandbox`).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use reasonlab_recipe::run::eval::ToolSetup;
use reasonlab_sandbox::tools::ToolFormat;
use reasonlab_sandbox::{Isolation, Limits, Sandbox};

/// Tool use in generation (`eval run`, `sample`, `generate`).
#[derive(clap::Args, Clone)]
pub struct ToolArgs {
    /// Run the code the model writes in the sandbox: `pot` (the completion is a program; its
    /// output is appended) or `tora` (```python blocks interleaved with ```output blocks).
    #[arg(long, value_enum)]
    tools: Option<ToolsArg>,
    /// Tool calls per completion.
    #[arg(long, default_value_t = 4)]
    max_tool_calls: usize,
    /// Wall-clock limit of one code block, seconds.
    #[arg(long, default_value_t = 10.0)]
    tool_timeout: f64,
    /// The interpreter the sandbox runs.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Run tools even where Landlock or seccomp is missing (weaker isolation).
    #[arg(long)]
    allow_weak_isolation: bool,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum ToolsArg {
    Pot,
    Tora,
}

impl ToolArgs {
    /// The tool setup the flags ask for (`None` without `--tools`).
    pub fn setup(&self) -> anyhow::Result<Option<ToolSetup>> {
        let Some(t) = self.tools else {
            return Ok(None);
        };
        anyhow::ensure!(
            self.tool_timeout.is_finite() && self.tool_timeout > 0.0,
            "--tool-timeout must be a positive number of seconds"
        );
        let mut setup = ToolSetup::new(match t {
            ToolsArg::Pot => ToolFormat::Pot,
            ToolsArg::Tora => ToolFormat::Tora,
        });
        setup.max_calls = self.max_tool_calls;
        setup.python = self.python.clone();
        setup.limits.timeout = Duration::from_secs_f64(self.tool_timeout);
        setup.limits.cpu = Duration::from_secs_f64(self.tool_timeout.ceil());
        if self.allow_weak_isolation {
            setup.isolation = Isolation::AcceptWeak;
        }
        Ok(Some(setup))
    }
}

#[derive(clap::Subcommand)]
pub enum SandboxCommand {
    /// Print which protections are active on this machine, and try a few attacks.
    Check {
        /// The Python interpreter (a name on the PATH or a path).
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a program read from stdin; print one JSON object (stdout, stderr, exit_code,
    /// timed_out, truncated, stopped, seconds).
    Run {
        /// Wall-clock limit, seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Address-space limit, MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u64,
        /// Bytes kept of stdout and of stderr.
        #[arg(long, default_value_t = 65536)]
        max_output: usize,
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Run even where Landlock or seccomp is missing (weaker isolation).
        #[arg(long)]
        allow_weak_isolation: bool,
    },
}

pub fn run(cmd: SandboxCommand) -> anyhow::Result<()> {
    match cmd {
        SandboxCommand::Check { python, json } => {
            let r = reasonlab_sandbox::check(&python)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!("python: {} ({})", r.python.display(), r.python_version);
            println!(
                "preloaded: {}",
                if r.preloaded.is_empty() {
                    "none".to_string()
                } else {
                    r.preloaded.join(", ")
                }
            );
            println!("\nprotections:");
            for p in &r.protections {
                let state = match (p.active, p.required) {
                    (true, _) => "active     ",
                    (false, true) => "MISSING    ",
                    (false, false) => "unavailable",
                };
                println!("  {state}  {:<22} {}", p.name, p.detail);
            }
            println!("\nattacks tried in a sandboxed interpreter:");
            for (what, stopped) in &r.attacks {
                println!(
                    "  {}  {what}",
                    if *stopped { "stopped " } else { "ALLOWED " }
                );
            }
            let missing: Vec<&str> = r
                .protections
                .iter()
                .filter(|p| p.required && !p.active)
                .map(|p| p.name)
                .collect();
            if missing.is_empty() && r.attacks.iter().all(|a| a.1) {
                println!("\nuntrusted code runs with full isolation on this machine");
            } else {
                println!(
                    "\nuntrusted code is refused on this machine unless weaker isolation is \
                     accepted (--allow-weak-isolation)"
                );
            }
        }
        SandboxCommand::Run {
            timeout,
            memory,
            max_output,
            python,
            allow_weak_isolation,
        } => {
            anyhow::ensure!(
                timeout.is_finite() && timeout > 0.0,
                "--timeout must be a positive number of seconds"
            );
            let mut code = String::new();
            std::io::stdin().read_to_string(&mut code)?;
            let limits = Limits {
                timeout: Duration::from_secs_f64(timeout),
                cpu: Duration::from_secs_f64(timeout.ceil()),
                memory_mb: memory,
                max_output,
                preload: vec![],
                recycle_after: 1,
                ..Limits::default()
            };
            let isolation = if allow_weak_isolation {
                Isolation::AcceptWeak
            } else {
                Isolation::Required
            };
            let sb = Sandbox::new(&python, limits, isolation, 0)?;
            let out = sb.run(&code)?;
            println!("{}", serde_json::to_string(&out)?);
        }
    }
    Ok(())
}
