//! Program-of-thought and tool-integrated evaluation on shipped benchmarks, with a scripted
//! model that writes code: the code runs in the sandbox, its output goes back into the context,
//! and the verifier scores the result.

use std::collections::HashMap;

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, ModelInfo, Output, Prompt, Request, Role, Sample,
};
use reasonlab_eval::{Benchmark, EvalConfig, MetricKey, PromptTemplate, run_eval};
use reasonlab_recipe::run::RunDir;
use reasonlab_recipe::run::eval::{ToolSetup, tool_report};
use reasonlab_sandbox::tools::{ToolEngine, ToolFormat};

/// Knows each problem's gold answer and writes code that computes it (or, `off_by_one`, a wrong
/// one). In ToRA style it then boxes whatever the last ```output block says, so a right score
/// needs the output back in the context.
struct Coder {
    gold: HashMap<String, String>,
    off_by_one: bool,
}

impl Coder {
    fn new(bench: &Benchmark, off_by_one: bool) -> Self {
        let gold = bench
            .load()
            .unwrap()
            .into_iter()
            .map(|p| (p.problem, p.answer))
            .collect();
        Self { gold, off_by_one }
    }

    fn write(&self, prompt: &Prompt) -> String {
        let Prompt::Messages(m) = prompt else {
            panic!("the tool templates are chat prompts")
        };
        let user = &m[0].content;
        let partial = m
            .get(1)
            .filter(|x| x.role == Role::Assistant)
            .map(|x| x.content.as_str())
            .unwrap_or("");
        if let Some(i) = partial.rfind("```output\n") {
            let out = partial[i + 10..].split("\n```").next().unwrap_or("");
            return format!("The program printed {out}, so the answer is \\boxed{{{out}}}.");
        }
        let (problem, _) = user.rsplit_once('\n').unwrap();
        let gold = &self.gold[problem];
        let value = match (self.off_by_one, gold.parse::<i64>()) {
            (true, Ok(g)) => format!("{}", g + 1),
            _ => format!("{gold:?}"),
        };
        format!("```python\nanswer = {value}\nprint(answer)\n```\n")
    }
}

impl Engine for Coder {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "coder".into(),
            hash: format!("coder-{}", self.off_by_one),
            location: "memory".into(),
        }
    }

    fn generate_streaming(
        &self,
        requests: &[Request],
        _on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        requests
            .iter()
            .map(|r| {
                let text = self.write(&r.prompt);
                Ok(Output {
                    prompt_tokens: 1,
                    samples: (0..r.n)
                        .map(|_| Sample {
                            text: text.clone(),
                            finish_reason: FinishReason::Stop,
                            completion_tokens: 10,
                            logprobs: None,
                            token_ids: None,
                            policy_version: None,
                        })
                        .collect(),
                })
            })
            .collect()
    }
}

fn eval(format: ToolFormat, template: PromptTemplate, off_by_one: bool) -> (f64, String) {
    let bench = Benchmark::parse("gsm8k_test").unwrap();
    let coder = Coder::new(&bench, off_by_one);
    let mut setup = ToolSetup::new(format.clone());
    setup.limits.preload = vec![];
    let tools = ToolEngine::new(
        &coder,
        setup
            .sandbox()
            .unwrap_or_else(|e| panic!("THE SANDBOX TESTS CANNOT RUN ON THIS MACHINE: {e}")),
        setup.config(),
    );
    let mut cfg = EvalConfig::new(vec![bench], template, 2);
    cfg.limit = Some(12);
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    let results = run_eval(&tools, &cfg, dir.root()).unwrap();
    let rows = tool_report(&dir, &format, &results).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].stats.completions, 24);
    assert_eq!(rows[0].stats.calls, 24, "one call per completion");
    assert_eq!(rows[0].stats.errors, 0);
    let md = std::fs::read_to_string(dir.root().join("report.md")).unwrap();
    assert!(md.contains("## Tool use"), "{md}");
    let completions = std::fs::read_to_string(dir.root().join("completions.jsonl")).unwrap();
    let pass1 = results.benchmarks[0].scores.metrics[&MetricKey::PassAt(1)].mean;
    (pass1, completions)
}

#[test]
fn program_of_thought_scores_what_the_program_prints() {
    let (right, completions) = eval(ToolFormat::Pot, PromptTemplate::Pot, false);
    assert_eq!(right, 1.0);
    assert!(
        completions.contains("```output\\n"),
        "outputs are kept in the completions"
    );
    let (wrong, _) = eval(ToolFormat::Pot, PromptTemplate::Pot, true);
    assert_eq!(wrong, 0.0);
}

#[test]
fn tool_integrated_answers_read_the_output_back() {
    let (right, completions) = eval(ToolFormat::Tora, PromptTemplate::Tool, false);
    assert_eq!(right, 1.0);
    assert!(completions.contains("The program printed"));
    let (wrong, _) = eval(ToolFormat::Tora, PromptTemplate::Tool, true);
    assert_eq!(wrong, 0.0);
}

#[test]
fn the_tool_setup_reads_from_toml() {
    let t: ToolSetup = toml::from_str(
        "format = \"tora\"\nmax_calls = 2\n[limits]\ntimeout = 3.5\nmemory_mb = 256\n",
    )
    .unwrap();
    assert_eq!(t.format, ToolFormat::Tora);
    assert_eq!(t.max_calls, 2);
    assert_eq!(t.limits.timeout.as_secs_f64(), 3.5);
    let tags: ToolSetup = toml::from_str(
        "[format.tags]\ncode_open = \"<code>\"\ncode_close = \"</code>\"\noutput_open = \"<out>\"\noutput_close = \"</out>\"\n",
    )
    .unwrap();
    assert!(matches!(tags.format, ToolFormat::Tags { .. }));
    assert!(toml::from_str::<ToolSetup>("format = \"tora\"\nbogus = 1\n").is_err());
}

#[test]
fn tool_integrated_traces_for_sft() {
    use reasonlab_recipe::run::sample::{SampleConfig, sample_with};
    let bench = Benchmark::parse("gsm8k_test").unwrap();
    let coder = Coder::new(&bench, false);
    let mut setup = ToolSetup::new(ToolFormat::Tora);
    setup.limits.preload = vec![];
    let tools = ToolEngine::new(&coder, setup.sandbox().unwrap(), setup.config());
    let tmp = tempfile::tempdir().unwrap();
    let cfg: SampleConfig = toml::from_str(&format!(
        "data = \"gsm8k_test\"\ntemplate = \"tool\"\nk = 2\nlimit = 3\nout = {:?}\n\
         [engine]\nmodel = \"unused\"\n[tools]\nformat = \"tora\"\n",
        tmp.path().join("traces.jsonl")
    ))
    .unwrap();
    assert!(cfg.tools.is_some());
    let summary = sample_with(&tools, &cfg, &mut |_| {}).unwrap();
    // The scripted model writes the same solution twice: one of each pair is a duplicate.
    assert_eq!(
        (summary.kept, summary.dropped_duplicate),
        (3, 3),
        "{summary:?}"
    );
    let traces = std::fs::read_to_string(tmp.path().join("traces.jsonl")).unwrap();
    assert_eq!(traces.lines().count(), 3);
    for line in traces.lines() {
        assert!(line.contains("```output\\n"), "{line}");
    }
    // R1's filters: code blocks, long paragraphs, mixed languages.
    let mut strict = cfg.clone();
    strict.out = tmp.path().join("strict.jsonl");
    strict.filter.drop_code_blocks = true;
    let s = sample_with(&tools, &strict, &mut |_| {}).unwrap();
    assert_eq!((s.kept, s.dropped_code), (0, 6), "{s:?}");
    strict.out = tmp.path().join("short.jsonl");
    strict.filter.drop_code_blocks = false;
    strict.filter.max_paragraph_chars = Some(10);
    let s = sample_with(&tools, &strict, &mut |_| {}).unwrap();
    assert_eq!((s.kept, s.dropped_long_paragraph), (0, 6), "{s:?}");
    strict.out = tmp.path().join("mixed.jsonl");
    strict.filter.max_paragraph_chars = None;
    strict.filter.max_mixed_script = Some(0.0);
    let s = sample_with(&tools, &strict, &mut |_| {}).unwrap();
    assert_eq!(
        s.dropped_language, 0,
        "English-only traces are not mixed: {s:?}"
    );
}
