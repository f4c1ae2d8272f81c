//! Reward models end to end on a toy task whose step labels are known: running sums
//! `s₀ + a₁ = s₁`, `s₁ + a₂ = s₂`, …, `The answer is s_k.`, some with one wrong step (off by 900,
//! so that the tiny test model can see it). A scripted completer continues a prefix correctly
//! from its last sum, so completions from a prefix that holds the error miss the gold answer:
//! Math-Shepherd labelling must mark the steps before the error good and the rest bad, and a
//! process reward model trained on those labels must rank held-out chains by their first
//! error.

use std::path::{Path, PathBuf};

use reasonlab_core::engine::{
    Engine, EngineError, FinishReason, ModelInfo, Output, Prompt, Request, Sample,
};
use reasonlab_core::rng::SplitMix64;
use reasonlab_recipe::run::rm::{self, Estimate, LabelConfig, RmConfig, RmScoreConfig};
use reasonlab_recipe::run::{Resume, RunDir};
use serde_json::{Value, json};

/// One toy chain: its prompt, steps, gold answer and the index of its wrong step.
struct Chain {
    prompt: String,
    steps: Vec<String>,
    answer: i64,
    wrong: Option<usize>,
}

fn chain(rng: &mut SplitMix64) -> Chain {
    let start = 1 + rng.below(9) as i64;
    let adds: Vec<i64> = (0..2 + rng.below(3))
        .map(|_| 1 + rng.below(9) as i64)
        .collect();
    let wrong = (rng.below(3) > 0).then(|| rng.below(adds.len() as u64) as usize);
    let prompt = format!(
        "Start at {start}, then add {}. What is the result?\n",
        adds.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", then ")
    );
    let (mut s, mut steps) = (start, Vec::new());
    for (i, a) in adds.iter().enumerate() {
        let mut next = s + a;
        if wrong == Some(i) {
            next += 900;
        }
        steps.push(format!("{s} + {a} = {next}"));
        s = next;
    }
    steps.push(format!("The answer is {s}."));
    Chain {
        prompt,
        steps,
        answer: start + adds.iter().sum::<i64>(),
        wrong,
    }
}

/// The labels Math-Shepherd must give: good before the wrong step, bad from it on.
fn expected(c: &Chain) -> Vec<bool> {
    (0..c.steps.len())
        .map(|i| c.wrong.is_none_or(|w| i < w))
        .collect()
}

/// Continues a prefix correctly from its last sum, with the prompt's remaining addends.
struct Completer;

fn numbers(s: &str) -> Vec<i64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect()
}

impl Engine for Completer {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: "toy-completer".into(),
            hash: "0".into(),
            location: "memory".into(),
        }
    }
    fn generate_streaming(
        &self,
        requests: &[Request],
        _: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        requests
            .iter()
            .map(|r| {
                let Prompt::Text(text) = &r.prompt else {
                    panic!("the labeller sends text prompts")
                };
                let (question, solution) = text.split_once('\n').unwrap();
                let adds = numbers(question);
                let done: Vec<&str> = solution.lines().filter(|l| !l.is_empty()).collect();
                let mut s = *numbers(done.last().unwrap()).last().unwrap();
                let mut out = String::new();
                for a in &adds[1 + done.len()..] {
                    out.push_str(&format!("{s} + {a} = {}\n", s + a));
                    s += a;
                }
                out.push_str(&format!("The answer is {s}."));
                let sample = Sample {
                    text: out,
                    finish_reason: FinishReason::Stop,
                    completion_tokens: 0,
                    logprobs: None,
                    token_ids: None,
                    policy_version: None,
                };
                Ok(Output {
                    prompt_tokens: 0,
                    samples: vec![sample; r.n],
                })
            })
            .collect()
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn write_chains(path: &Path, chains: &[Chain]) {
    let text: String = chains
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": format!("c{i}"), "prompt": c.prompt, "completions": c.steps, "answer": c.answer.to_string()})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn label_cfg(input: &Path, out: &Path) -> LabelConfig {
    LabelConfig {
        input: input.to_path_buf(),
        out: out.to_path_buf(),
        n: 2,
        separator: "\n".into(),
        estimate: Estimate::Hard,
        sampling: Default::default(),
        chunk_size: 8,
    }
}

#[test]
fn math_shepherd_labels_a_prm_that_ranks_chains_by_their_first_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::seeded(7);
    let train: Vec<Chain> = (0..160).map(|_| chain(&mut rng)).collect();
    let held: Vec<Chain> = (0..40).map(|_| chain(&mut rng)).collect();

    // Labelling: exactly the known labels, and a torn run resumes to the same file.
    let input = tmp.path().join("solutions.jsonl");
    write_chains(&input, &train);
    let out = tmp.path().join("labels.jsonl");
    let cfg = label_cfg(&input, &out);
    let s = rm::label::label(&cfg, &Completer, &mut |_| {}).unwrap();
    assert_eq!((s.solutions, s.errors), (160, 0));
    let labelled = read_lines(&out);
    for (c, line) in train.iter().zip(&labelled) {
        let got: Vec<bool> = serde_json::from_value(line["labels"].clone()).unwrap();
        assert_eq!(got, expected(c), "{:?}", c.steps);
    }
    let full = std::fs::read_to_string(&out).unwrap();
    let cut = full.match_indices('\n').nth(9).unwrap().0 + 1;
    std::fs::write(&out, format!("{}{{\"id\": \"c1", &full[..cut])).unwrap();
    let again = rm::label::label(&cfg, &Completer, &mut |_| {}).unwrap();
    assert_eq!((again.skipped, again.solutions), (10, 150));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), full);

    // Training a process RM on the labels (a fresh token head on the tiny model).
    let run = tmp.path().join("prm");
    let toml = format!(
        "model = {model:?}\ndata = {data:?}\nout = {out:?}\nheld_out = 0.2\nsave_every = 10\nhead = \"token\"\n\
         [rm]\nobjective = \"process\"\nepochs = 3\nbatch_size = 8\neval_every = 10\n\
         [rm.optim]\nlr = 0.003\n",
        model = fixture("tiny-qwen2"),
        data = out,
        out = run,
    );
    let cfg_path = tmp.path().join("rm.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let cfg = RmConfig::load(&cfg_path).unwrap();
    let dir = RunDir::create(&cfg.out).unwrap();
    let summary = rm::train::run(
        &cfg,
        &dir,
        Resume::Fresh,
        reasonlab_core::jsonl::BadLines::Reject,
        &mut |_| {},
    )
    .unwrap();
    let after = summary.held_out_after.unwrap();
    assert!(after.auc > 0.95, "{summary:?}");
    assert!(dir.root().join("plots/report.html").exists());

    // Scoring held-out chains: the min over steps ranks clean chains above broken ones, and
    // within a broken chain the steps before its error score above the rest.
    let held_in = tmp.path().join("held.jsonl");
    write_chains(&held_in, &held);
    let scores_out = tmp.path().join("scores.jsonl");
    let score_cfg = RmScoreConfig {
        model: summary.model.clone(),
        head: None,
        separator: "\n".into(),
        input: held_in,
        out: scores_out.clone(),
        batch_size: 8,
        backend: Default::default(),
    };
    rm::score_file(&score_cfg, &mut |_| {}).unwrap();
    let scores: Vec<Vec<f32>> = read_lines(&scores_out)
        .iter()
        .map(|v| serde_json::from_value(v["step_scores"].clone()).unwrap())
        .collect();
    let min = |s: &Vec<f32>| s.iter().copied().fold(f32::INFINITY, f32::min);
    let clean: Vec<f32> = held
        .iter()
        .zip(&scores)
        .filter(|(c, _)| c.wrong.is_none())
        .map(|(_, s)| min(s))
        .collect();
    let broken: Vec<f32> = held
        .iter()
        .zip(&scores)
        .filter(|(c, _)| c.wrong.is_some())
        .map(|(_, s)| min(s))
        .collect();
    assert!(!clean.is_empty() && !broken.is_empty());
    let auc = reasonlab_train::rm::auc(&clean, &broken);
    assert!(auc > 0.95, "clean {clean:?} broken {broken:?}");
    let mut ordered = 0;
    let mut pairs = 0;
    for (c, s) in held.iter().zip(&scores) {
        if let Some(w) = c.wrong {
            for i in 0..w {
                for j in w..s.len() {
                    pairs += 1;
                    ordered += usize::from(s[i] > s[j]);
                }
            }
        }
    }
    assert!(
        ordered as f64 >= 0.95 * pairs as f64,
        "{ordered} of {pairs}"
    );

    // A run killed after its step-10 checkpoint resumes to the same model.
    let last = dir
        .root()
        .join(format!("checkpoints/step-{}", summary.steps));
    std::fs::remove_dir_all(&last).unwrap();
    let resumed = rm::train::run(
        &cfg,
        &dir,
        Resume::Latest,
        reasonlab_core::jsonl::BadLines::Reject,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.steps, summary.steps);
    let again = resumed.held_out_after.unwrap();
    assert!(
        (again.loss - after.loss).abs() < 1e-4,
        "{again:?} vs {after:?}"
    );
}
