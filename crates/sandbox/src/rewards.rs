//! Rewards that run the completion's code in the sandbox (`reasonlab_reward::Reward`s):
//!
//! - [`CodeTests`] — DeepSeek-R1's rule reward for code: the completion's program runs against
//!   the row's test cases; the score is the fraction that pass. Test cases come from the row's
//!   extra columns, in the layouts code datasets use: `test_cases` (or
//!   `verification_info.test_cases`, as open-r1's) — a list of `{"input", "output"}` pairs, the
//!   program reading `input` on stdin and passing when its stdout equals `output` (trailing
//!   whitespace of each line ignored) — or `test`, Python code (MBPP/HumanEval-style asserts)
//!   run after the program: 1 when it exits cleanly, else 0.
//! - [`PotAnswer`] — program of thought: the program runs and what it prints is verified
//!   against the gold answer.
//!
//! The program is the completion's last ```` ```python ```` block (after `</think>` when
//! present); a completion without one scores 0.

use reasonlab_answer::{VerifyConfig, verify};
use reasonlab_reward::{Reward, Sample};
use serde_json::Value;

use crate::Sandbox;

/// The last python block of the completion's answer part.
pub fn program_of(completion: &str) -> Option<&str> {
    let answer = completion
        .rsplit_once("</think>")
        .map_or(completion, |(_, a)| a);
    let start = answer.rfind("```python")? + "```python".len();
    let body = answer[start..]
        .strip_prefix('\n')
        .unwrap_or(&answer[start..]);
    let end = body.find("```").unwrap_or(body.len());
    Some(&body[..end])
}

/// One stdin/stdout test.
struct IoCase {
    input: String,
    output: String,
}

enum Tests {
    Io(Vec<IoCase>),
    Asserts(String),
}

fn tests_of(extra: &serde_json::Map<String, Value>) -> Option<Tests> {
    let cases = extra
        .get("test_cases")
        .or_else(|| extra.get("verification_info")?.get("test_cases"));
    if let Some(Value::Array(cases)) = cases {
        let io = cases
            .iter()
            .filter_map(|c| {
                Some(IoCase {
                    input: text_of(c.get("input")?),
                    output: text_of(c.get("output")?),
                })
            })
            .collect::<Vec<_>>();
        return (!io.is_empty()).then_some(Tests::Io(io));
    }
    match extra.get("test") {
        Some(Value::String(t)) => Some(Tests::Asserts(t.clone())),
        Some(Value::Array(lines)) => Some(Tests::Asserts(
            lines
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
        )),
        _ => None,
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same_output(got: &str, want: &str) -> bool {
    let lines = |s: &str| -> Vec<String> {
        s.trim_end()
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    };
    lines(got) == lines(want)
}

/// DeepSeek-R1's code reward: the fraction of the row's test cases the program passes.
pub struct CodeTests {
    name: String,
    sandbox: Sandbox,
}

impl CodeTests {
    pub fn new(name: impl Into<String>, sandbox: Sandbox) -> Self {
        Self {
            name: name.into(),
            sandbox,
        }
    }
}

impl Reward for CodeTests {
    fn name(&self) -> &str {
        &self.name
    }

    /// `None` for a row without test cases.
    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        let tests = tests_of(sample.extra?)?;
        let Some(program) = program_of(sample.completion) else {
            return Some(0.0);
        };
        match tests {
            Tests::Asserts(t) => {
                let ok = self
                    .sandbox
                    .run(&format!("{program}\n\n{t}\n"))
                    .is_ok_and(|o| o.ok());
                Some(if ok { 1.0 } else { 0.0 })
            }
            Tests::Io(cases) => {
                // Each case runs as a program of its own that reads the case's input on stdin.
                let codes: Vec<String> = cases
                    .iter()
                    .map(|c| {
                        format!(
                            "import io as __io, sys as __sys\n__sys.stdin = __io.StringIO({})\n{program}",
                            serde_json::to_string(&c.input).unwrap_or_default()
                        )
                    })
                    .collect();
                let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
                let passed = self
                    .sandbox
                    .run_batch(&refs)
                    .iter()
                    .zip(&cases)
                    .filter(|(o, c)| o.ok() && same_output(&o.stdout, &c.output))
                    .count();
                Some(passed as f64 / cases.len() as f64)
            }
        }
    }
}

/// Program of thought: 1 when what the program prints verifies against the gold answer.
pub struct PotAnswer {
    name: String,
    sandbox: Sandbox,
    verify: VerifyConfig,
}

impl PotAnswer {
    pub fn new(name: impl Into<String>, sandbox: Sandbox) -> Self {
        Self {
            name: name.into(),
            sandbox,
            verify: VerifyConfig::default(),
        }
    }
}

impl Reward for PotAnswer {
    fn name(&self) -> &str {
        &self.name
    }

    /// `None` without a gold answer.
    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        let gold = sample.gold?;
        let Some(program) = program_of(sample.completion) else {
            return Some(0.0);
        };
        let out = match self.sandbox.run(program) {
            Ok(o) if o.ok() => o.stdout,
            _ => return Some(0.0),
        };
        let printed = out.trim();
        if printed.is_empty() {
            return Some(0.0);
        }
        let v = verify(gold, printed, sample.problem, &self.verify);
        Some(if v.correct { 1.0 } else { 0.0 })
    }
}
