//! Tools inside generation: an [`Engine`] that runs the code a model writes and puts the output
//! back into its context.
//!
//! [`ToolEngine`] wraps any engine (the local model, an OpenAI-compatible endpoint). For a
//! tool-integrated format, generation stops where the model would start reading a tool's output;
//! the last code block runs in the completion's own sandbox notebook (so the blocks of one
//! completion share variables), the output is appended in the format's wrapper, and generation
//! resumes from there — at most `max_calls` times per completion. For program of thought, the
//! completion is a program that runs once when it ends, and its output is appended.
//!
//! Continuing a chat prompt sends the conversation with the partial assistant message last; the
//! engines continue that message (`Prompt::Messages` ending with an assistant message).
//! `completion_tokens` counts the model's tokens only, not the appended outputs.

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, Message, ModelInfo, Output, Prompt, Request, Role, Sample,
    sha256_hex,
};
use serde::{Deserialize, Serialize};

use crate::{Notebook, RunOutput, Sandbox, Stopped};

/// How code and its output are written in a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// Program of thought: the completion is a program (its last ```` ```python ```` block, or
    /// the whole text when it has none); it runs once at the end and what it prints is appended
    /// in an ```` ```output ```` block: the answer is the program's output.
    Pot,
    /// ToRA / DeepSeekMath tool-integrated reasoning: ```` ```python ```` blocks interleaved
    /// with ```` ```output ```` blocks. Generation stops at ```` ```output ````, the last
    /// python block runs, and ```` ```output\n…\n``` ```` is appended.
    Tora,
    /// Other conventions: code between `code_open` and `code_close` (generation stops at
    /// `code_close`), output between `output_open` and `output_close`.
    Tags {
        code_open: String,
        code_close: String,
        output_open: String,
        output_close: String,
    },
}

const FENCE_PY: &str = "```python";
const FENCE: &str = "```";
const FENCE_OUT: &str = "```output";

impl ToolFormat {
    /// Where generation pauses for a tool call.
    fn stop(&self) -> Option<&str> {
        match self {
            ToolFormat::Pot => None,
            ToolFormat::Tora => Some(FENCE_OUT),
            ToolFormat::Tags { code_close, .. } => Some(code_close),
        }
    }

    /// The code of a tool call when `text` (the completion so far, the stop string cut) ends in
    /// one.
    pub fn pending_call<'t>(&self, text: &'t str) -> Option<&'t str> {
        match self {
            ToolFormat::Pot => None,
            ToolFormat::Tora => {
                let (code, rest) = last_fenced(text)?;
                rest.trim().is_empty().then_some(code)
            }
            ToolFormat::Tags {
                code_open,
                code_close,
                ..
            } => {
                let open = text.rfind(code_open.as_str())?;
                if text.rfind(code_close.as_str()).is_some_and(|c| c > open) {
                    return None; // the last block is closed: no call pending
                }
                Some(&text[open + code_open.len()..])
            }
        }
    }

    /// The program of a finished program-of-thought completion.
    pub fn program<'t>(&self, text: &'t str) -> &'t str {
        match last_fenced(text) {
            Some((code, _)) => code,
            None => text,
        }
    }

    /// The text that closes a code block.
    fn code_close(&self) -> &str {
        match self {
            ToolFormat::Pot | ToolFormat::Tora => FENCE,
            ToolFormat::Tags { code_close, .. } => code_close,
        }
    }

    /// What is appended after a call: the format's output wrapper (for tags, after the
    /// `code_close` the engine cut).
    fn wrap(&self, output: &str) -> String {
        match self {
            ToolFormat::Pot | ToolFormat::Tora => format!("{FENCE_OUT}\n{output}\n{FENCE}\n"),
            ToolFormat::Tags {
                code_close,
                output_open,
                output_close,
                ..
            } => format!("{code_close}{output_open}{output}{output_close}"),
        }
    }

    /// Byte ranges of the output blocks the tool calls appended to `text` (wrapper included):
    /// text the model did not write, left out of a policy-gradient loss.
    pub fn output_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let (open, close) = match self {
            ToolFormat::Pot | ToolFormat::Tora => {
                (format!("{FENCE_OUT}\n"), format!("\n{FENCE}\n"))
            }
            ToolFormat::Tags {
                output_open,
                output_close,
                ..
            } => (output_open.clone(), output_close.clone()),
        };
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(i) = text[from..].find(open.as_str()) {
            let start = from + i;
            let body = start + open.len();
            let end = text[body..]
                .find(close.as_str())
                .map_or(text.len(), |j| body + j + close.len());
            spans.push(start..end);
            from = end;
        }
        spans
    }

    /// Output blocks in a completion (one per tool call).
    pub fn count_outputs(&self, text: &str) -> usize {
        match self {
            ToolFormat::Pot | ToolFormat::Tora => text.matches(FENCE_OUT).count(),
            ToolFormat::Tags { output_open, .. } => text.matches(output_open.as_str()).count(),
        }
    }
}

/// The last ```` ```python ```` block's code and the text after its closing fence.
fn last_fenced(text: &str) -> Option<(&str, &str)> {
    let start = text.rfind(FENCE_PY)? + FENCE_PY.len();
    let body = &text[start..];
    let body = body.strip_prefix('\n').unwrap_or(body);
    let end = body.find(FENCE)?;
    Some((&body[..end], &body[end + FENCE.len()..]))
}

fn default_calls() -> usize {
    4
}

fn default_chars() -> usize {
    2048
}

/// Tool use in generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub format: ToolFormat,
    /// Tool calls per completion; after the last, generation goes on without pausing.
    #[serde(default = "default_calls")]
    pub max_calls: usize,
    /// Characters of a call's output put back into the context (the rest is cut, marked).
    #[serde(default = "default_chars")]
    pub max_output_chars: usize,
}

impl ToolConfig {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            max_calls: default_calls(),
            max_output_chars: default_chars(),
        }
    }
}

/// What a call's output looks like in the context: stdout, and for a failed block the last
/// line of its error (as the ToRA harness shows it); a timeout says so.
pub fn render_output(out: &RunOutput, max_chars: usize) -> String {
    let mut text = out.stdout.trim_end().to_string();
    match out.stopped {
        Some(Stopped::Timeout) | Some(Stopped::Cpu) => {
            text = "TimeoutError: the code ran past its time limit".to_string();
        }
        Some(Stopped::Memory) => text = "MemoryError".to_string(),
        Some(Stopped::Crashed) => text = "Error: the interpreter crashed".to_string(),
        _ if out.exit_code != Some(0) => {
            let last = out.stderr.trim_end().lines().last().unwrap_or("Error");
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(last);
        }
        _ => {}
    }
    if text.chars().count() > max_chars {
        text = text.chars().take(max_chars).collect::<String>() + "\n… (output cut)";
    }
    text
}

/// Tool calls, failed calls and timeouts of completions, counted from their text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ToolStats {
    pub completions: usize,
    pub calls: usize,
    pub errors: usize,
    pub timeouts: usize,
}

impl ToolStats {
    /// Count the output blocks of `text` and the failures among them.
    pub fn add(&mut self, format: &ToolFormat, text: &str) {
        self.completions += 1;
        self.calls += format.count_outputs(text);
        let (open, close) = match format {
            ToolFormat::Pot | ToolFormat::Tora => (format!("{FENCE_OUT}\n"), format!("\n{FENCE}")),
            ToolFormat::Tags {
                output_open,
                output_close,
                ..
            } => (output_open.clone(), output_close.clone()),
        };
        for part in text.split(open.as_str()).skip(1) {
            let body = part.split(close.as_str()).next().unwrap_or(part);
            let last = body.trim_end().lines().last().unwrap_or("");
            if last.starts_with("TimeoutError") {
                self.timeouts += 1;
                self.errors += 1;
            } else if is_error_line(last) {
                self.errors += 1;
            }
        }
    }
}

fn is_error_line(line: &str) -> bool {
    let head = line.split(':').next().unwrap_or("");
    !head.is_empty()
        && !head.contains(' ')
        && (head.ends_with("Error") || head.ends_with("Exception") || head == "Error")
}

/// An engine whose completions may call the sandbox.
pub struct ToolEngine<'a> {
    inner: &'a dyn Engine,
    sandbox: Sandbox,
    cfg: ToolConfig,
}

impl<'a> ToolEngine<'a> {
    pub fn new(inner: &'a dyn Engine, sandbox: Sandbox, cfg: ToolConfig) -> Self {
        Self {
            inner,
            sandbox,
            cfg,
        }
    }
}

/// One completion in progress.
struct Slot {
    request: usize,
    sample: usize,
    text: String,
    tokens: usize,
    calls: usize,
    notebook: Option<Notebook>,
    done: Option<FinishReason>,
    /// The oldest policy version among the engine calls that wrote the text.
    version: Option<u64>,
}

/// The prompt with the completion so far as the start of the model's reply.
fn continued(prompt: &Prompt, text: &str) -> Prompt {
    match prompt {
        Prompt::Text(t) => Prompt::Text(format!("{t}{text}")),
        Prompt::Messages(m) if text.is_empty() => Prompt::Messages(m.clone()),
        Prompt::Messages(m) => {
            let mut m = m.clone();
            match m.last_mut() {
                Some(last) if last.role == Role::Assistant => last.content.push_str(text),
                _ => m.push(Message::assistant(text)),
            }
            Prompt::Messages(m)
        }
    }
}

impl Engine for ToolEngine<'_> {
    fn info(&self) -> ModelInfo {
        let inner = self.inner.info();
        let cfg = serde_json::to_string(&self.cfg).unwrap_or_default();
        ModelInfo {
            name: inner.name,
            // Completions with tools are not those without: a distinct hash keeps caches apart.
            hash: sha256_hex(format!("{}\ntools {cfg}", inner.hash).as_bytes()),
            location: inner.location,
        }
    }

    fn generate_streaming(
        &self,
        requests: &[Request],
        _on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        let mut slots: Vec<Slot> = requests
            .iter()
            .enumerate()
            .flat_map(|(r, req)| {
                (0..req.n).map(move |j| Slot {
                    request: r,
                    sample: j,
                    text: String::new(),
                    tokens: 0,
                    calls: 0,
                    notebook: None,
                    done: None,
                    version: None,
                })
            })
            .collect();
        let mut failed: Vec<Option<EngineError>> = vec![None; requests.len()];
        let mut prompt_tokens = vec![0usize; requests.len()];
        let fmt = &self.cfg.format;
        loop {
            let active: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].done.is_none() && failed[slots[i].request].is_none())
                .collect();
            if active.is_empty() {
                break;
            }
            let batch: Vec<Request> = active
                .iter()
                .map(|&i| {
                    let s = &slots[i];
                    let req = &requests[s.request];
                    let mut sampling = req.sampling.clone();
                    sampling.seed = req.sampling.seed.wrapping_add(s.sample as u64);
                    sampling.max_new_tokens = req.sampling.max_new_tokens.saturating_sub(s.tokens);
                    if let Some(stop) = fmt.stop()
                        && s.calls < self.cfg.max_calls
                    {
                        sampling.stop.push(stop.to_string());
                    }
                    Request {
                        prompt: continued(&req.prompt, &s.text),
                        n: 1,
                        sampling,
                        logprobs: false,
                    }
                })
                .collect();
            let outs = self.inner.generate(&batch);
            // Completions that paused at a call: (slot, code).
            let mut calls: Vec<(usize, String)> = Vec::new();
            for (&i, out) in active.iter().zip(outs) {
                let s = &mut slots[i];
                let req = &requests[s.request];
                let sample = match out {
                    Ok(mut o) if !o.samples.is_empty() => {
                        if s.text.is_empty() {
                            prompt_tokens[s.request] = o.prompt_tokens;
                        }
                        o.samples.swap_remove(0)
                    }
                    Ok(_) => {
                        failed[s.request] = Some(EngineError::Internal(
                            "the engine returned no sample".into(),
                        ));
                        continue;
                    }
                    Err(e) => {
                        failed[s.request] = Some(e);
                        continue;
                    }
                };
                s.text.push_str(&sample.text);
                s.tokens += sample.completion_tokens;
                s.version = match (s.version, sample.policy_version) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let budget_left = s.tokens < req.sampling.max_new_tokens;
                let pending = (sample.finish_reason == FinishReason::Stop
                    && s.calls < self.cfg.max_calls
                    && budget_left)
                    .then(|| fmt.pending_call(&s.text))
                    .flatten();
                match (fmt, pending) {
                    (ToolFormat::Pot, _) => {
                        calls.push((i, fmt.program(&s.text).to_string()));
                        s.done = Some(sample.finish_reason);
                    }
                    (_, Some(code)) => calls.push((i, code.to_string())),
                    (_, None) => s.done = Some(sample.finish_reason),
                }
            }
            self.run_calls(&mut slots, calls);
        }
        let mut outputs: Vec<Vec<Sample>> =
            requests.iter().map(|r| Vec::with_capacity(r.n)).collect();
        for s in slots {
            outputs[s.request].push(Sample {
                text: s.text,
                finish_reason: s.done.unwrap_or(FinishReason::Length),
                completion_tokens: s.tokens,
                logprobs: None,
                token_ids: None,
                policy_version: s.version,
            });
        }
        outputs
            .into_iter()
            .zip(failed)
            .zip(prompt_tokens)
            .map(|((samples, err), prompt_tokens)| match err {
                Some(e) => Err(e),
                None => Ok(Output {
                    prompt_tokens,
                    samples,
                }),
            })
            .collect()
    }
}

impl ToolEngine<'_> {
    /// Run the pending calls (a few at a time, each in its completion's notebook) and append
    /// their outputs.
    fn run_calls(&self, slots: &mut [Slot], calls: Vec<(usize, String)>) {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut jobs: Vec<(&mut Slot, String)> = Vec::new();
        let mut calls = calls.into_iter().peekable();
        for (i, s) in slots.iter_mut().enumerate() {
            if calls.peek().is_some_and(|c| c.0 == i) {
                let (_, code) = calls.next().expect("peeked");
                jobs.push((s, code));
            }
        }
        for chunk in jobs.chunks_mut(parallel) {
            std::thread::scope(|scope| {
                for (slot, code) in chunk.iter_mut() {
                    let sandbox = &self.sandbox;
                    let cfg = &self.cfg;
                    scope.spawn(move || {
                        if slot.notebook.is_none() {
                            slot.notebook = sandbox.notebook().ok();
                        }
                        let out = match slot.notebook.as_mut() {
                            Some(notebook) => notebook.run(code),
                            None => RunOutput {
                                stderr: "Error: no sandbox interpreter".into(),
                                stopped: Some(Stopped::Crashed),
                                ..RunOutput::default()
                            },
                        };
                        slot.calls += 1;
                        let rendered = render_output(&out, cfg.max_output_chars);
                        if cfg.format.stop() != Some(cfg.format.code_close())
                            && !slot.text.ends_with('\n')
                        {
                            slot.text.push('\n');
                        }
                        slot.text.push_str(&cfg.format.wrap(&rendered));
                    });
                }
            });
        }
        // Finished completions give their interpreters back to the pool.
        for s in slots.iter_mut().filter(|s| s.done.is_some()) {
            s.notebook = None;
        }
    }
}
