//! Scoring completions against a benchmark: verification, pass@k, cons@k, per-subject and
//! per-level tables, lengths and truncation. Used by [`crate::run_eval`] and by
//! [`score_offline`] (`reasonlab eval score`).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use reasonlab_answer::{Method, VerifyConfig, equivalent, parse_prediction, verify};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::benchmark::{Benchmark, Problem};
use crate::metrics::{Estimate, MetricKey, classify, pass_at_k, vote};
use crate::{EvalError, FinishReason};

/// One completion to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<usize>,
}

/// Summary of a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Summary {
    fn of(values: &mut [f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let q = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        Some(Summary {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            p50: q(0.5),
            p95: q(0.95),
            max: values[values.len() - 1],
        })
    }
}

/// Response lengths and truncation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    /// Completion tokens, when the generator reported them.
    pub tokens: Option<Summary>,
    /// Characters (always available).
    pub chars: Option<Summary>,
    /// Samples that stopped at the token budget (`finish_reason = length`).
    pub truncated: usize,
    pub truncated_rate: f64,
    /// Histogram of tokens (or chars when tokens are unknown): `(bin_start, bin_end, count)`,
    /// 20 equal bins from 0 to the maximum.
    pub histogram: Vec<(f64, f64, usize)>,
    /// `"tokens"` or `"chars"`: what the histogram counts.
    pub histogram_unit: String,
}

/// One row of a per-subject or per-level table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRow {
    pub group: String,
    pub n_problems: usize,
    pub pass1: Estimate,
    /// cons@(largest k) within the group.
    pub cons: Estimate,
}

/// All scores of one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkScores {
    pub n_problems: usize,
    /// Problems of the benchmark without any completion (not scored).
    pub n_missing: usize,
    /// Samples per problem (the smallest, when they differ).
    pub n_samples: usize,
    /// pass@k and cons@k for the requested k.
    pub metrics: BTreeMap<MetricKey, Estimate>,
    /// pass@k and cons@k for every k in 1..=n_samples (plots).
    pub pass_curve: Vec<f64>,
    pub cons_curve: Vec<f64>,
    /// Share of samples where no answer could be extracted.
    pub no_answer_rate: f64,
    /// Samples per extraction rule that found their answer (`last_number` is the fallback).
    #[serde(default)]
    pub methods: BTreeMap<Method, usize>,
    pub length: LengthStats,
    /// Largest requested k (the cons@k of the group tables).
    pub k_max: usize,
    pub by_subject: Vec<GroupRow>,
    pub by_level: Vec<GroupRow>,
}

struct PerProblem {
    correct: Vec<bool>,
    /// cons@k correctness for every k in 1..=n.
    cons: Vec<bool>,
    no_answer: usize,
    methods: Vec<Method>,
}

fn score_problem(problem: &Problem, samples: &[Scored], cfg: &VerifyConfig) -> PerProblem {
    let mut correct = Vec::with_capacity(samples.len());
    let mut parsed = Vec::with_capacity(samples.len());
    let mut methods = Vec::new();
    for s in samples {
        let verdict = verify(&problem.answer, &s.text, Some(&problem.problem), cfg);
        correct.push(verdict.correct);
        methods.extend(verdict.method);
        parsed.push(parse_prediction(&s.text, &cfg.extract));
    }
    let no_answer = parsed.iter().filter(|p| p.is_none()).count();
    let classes = classify(&parsed, |a, b| {
        (a.node == b.node && a.percent == b.percent) || equivalent(a, b, cfg.percent)
    });
    let cons = (1..=samples.len())
        .map(|k| vote(&classes, k).winner.is_some_and(|w| correct[w]))
        .collect();
    PerProblem {
        correct,
        cons,
        no_answer,
        methods,
    }
}

/// Score `samples[i]` (the completions of `problems[i]`, in sample order). Problems with no
/// samples are counted in `n_missing` and left out. Every k must be ≤ every problem's samples.
pub fn score(
    problems: &[Problem],
    samples: &[Vec<Scored>],
    ks: &[usize],
    cfg: &VerifyConfig,
) -> Result<BenchmarkScores, EvalError> {
    score_ranked(problems, samples, None, ks, cfg)
}

/// The sample a reward model ranks first among the first `k` (the earliest of ties).
pub fn best_of(ranks: &[f64], k: usize) -> Option<usize> {
    ranks[..k.min(ranks.len())]
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &r)| match best {
            Some((_, b)) if b >= r => best,
            _ if r.is_nan() => best,
            _ => Some((i, r)),
        })
        .map(|(i, _)| i)
}

/// [`score`], and with `ranks` (a reward model's score of every sample, problem by problem)
/// best-of-N too: `bon@k` grades the sample ranked first among the first k.
pub fn score_ranked(
    problems: &[Problem],
    samples: &[Vec<Scored>],
    ranks: Option<&[Vec<f64>]>,
    ks: &[usize],
    cfg: &VerifyConfig,
) -> Result<BenchmarkScores, EvalError> {
    let ranked: Vec<Option<&Vec<f64>>> = (0..problems.len())
        .map(|i| ranks.and_then(|r| r.get(i)))
        .collect();
    let kept: Vec<usize> = (0..problems.len())
        .filter(|&i| !samples.get(i).is_none_or(|s| s.is_empty()))
        .collect();
    let pairs: Vec<(&Problem, &Vec<Scored>)> =
        kept.iter().map(|&i| (&problems[i], &samples[i])).collect();
    let pair_ranks: Vec<Option<&Vec<f64>>> = kept.iter().map(|&i| ranked[i]).collect();
    let n_missing = problems.len() - pairs.len();
    let n_samples = pairs.iter().map(|(_, s)| s.len()).min().unwrap_or(0);
    for &k in ks {
        if k == 0 {
            return Err(EvalError::ZeroK { k });
        }
        if let Some((p, s)) = pairs.iter().find(|(_, s)| s.len() < k) {
            return Err(EvalError::KTooLarge {
                k,
                n: s.len(),
                id: p.id.clone(),
            });
        }
    }
    let per: Vec<PerProblem> = pairs
        .par_iter()
        .map(|(p, s)| score_problem(p, s, cfg))
        .collect();

    let pass_k = |pp: &PerProblem, k: usize| {
        let c = pp.correct.iter().filter(|&&b| b).count();
        pass_at_k(pp.correct.len(), c, k).unwrap_or(0.0)
    };
    let cons_k = |pp: &PerProblem, k: usize| if pp.cons[k - 1] { 1.0 } else { 0.0 };
    let mut metrics = BTreeMap::new();
    for &k in ks {
        let pass: Vec<f64> = per.iter().map(|pp| pass_k(pp, k)).collect();
        let cons: Vec<f64> = per.iter().map(|pp| cons_k(pp, k)).collect();
        metrics.insert(MetricKey::PassAt(k), Estimate::of(&pass));
        metrics.insert(MetricKey::ConsAt(k), Estimate::of(&cons));
        if ranks.is_some() {
            let bon: Vec<f64> = per
                .iter()
                .zip(&pair_ranks)
                .map(|(pp, r)| {
                    let pick = r.and_then(|r| best_of(r, k));
                    f64::from(u8::from(pick.is_some_and(|i| pp.correct[i])))
                })
                .collect();
            metrics.insert(MetricKey::BestOfAt(k), Estimate::of(&bon));
        }
    }
    let mean = |f: &dyn Fn(&PerProblem) -> f64| {
        if per.is_empty() {
            0.0
        } else {
            per.iter().map(f).sum::<f64>() / per.len() as f64
        }
    };
    let pass_curve = (1..=n_samples).map(|k| mean(&|pp| pass_k(pp, k))).collect();
    let cons_curve = (1..=n_samples).map(|k| mean(&|pp| cons_k(pp, k))).collect();
    let total_samples: usize = pairs.iter().map(|(_, s)| s.len()).sum();
    let no_answer = per.iter().map(|pp| pp.no_answer).sum::<usize>();
    let mut methods: BTreeMap<Method, usize> = BTreeMap::new();
    for m in per.iter().flat_map(|pp| &pp.methods) {
        *methods.entry(*m).or_default() += 1;
    }

    let k_max = ks.iter().copied().max().unwrap_or(1).min(n_samples.max(1));
    let group_rows = |key: &dyn Fn(&Problem) -> Option<String>| -> Vec<GroupRow> {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (p, _)) in pairs.iter().enumerate() {
            if let Some(g) = key(p) {
                groups.entry(g).or_default().push(i);
            }
        }
        groups
            .into_iter()
            .map(|(group, idx)| {
                let p1: Vec<f64> = idx.iter().map(|&i| pass_k(&per[i], 1)).collect();
                let c: Vec<f64> = idx
                    .iter()
                    .map(|&i| {
                        if n_samples > 0 {
                            cons_k(&per[i], k_max)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                GroupRow {
                    group,
                    n_problems: idx.len(),
                    pass1: Estimate::of(&p1),
                    cons: Estimate::of(&c),
                }
            })
            .collect()
    };
    let by_subject = group_rows(&|p| p.subject.clone());
    let by_level = group_rows(&|p| p.level.map(|l| l.to_string()));

    Ok(BenchmarkScores {
        n_problems: pairs.len(),
        n_missing,
        n_samples,
        metrics,
        pass_curve,
        cons_curve,
        no_answer_rate: ratio(no_answer, total_samples),
        methods,
        length: length_stats(pairs.iter().flat_map(|(_, s)| s.iter())),
        k_max,
        by_subject,
        by_level,
    })
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn length_stats<'a>(samples: impl Iterator<Item = &'a Scored>) -> LengthStats {
    let mut tokens = Vec::new();
    let mut chars = Vec::new();
    let mut truncated = 0;
    let mut all_have_tokens = true;
    for s in samples {
        chars.push(s.text.chars().count() as f64);
        match s.completion_tokens {
            Some(t) => tokens.push(t as f64),
            None => all_have_tokens = false,
        }
        if s.finish_reason == Some(FinishReason::Length) {
            truncated += 1;
        }
    }
    let n = chars.len();
    let (hist_values, unit) = if all_have_tokens && !tokens.is_empty() {
        (tokens.clone(), "tokens")
    } else {
        (chars.clone(), "chars")
    };
    let histogram = histogram(&hist_values, 20);
    LengthStats {
        tokens: if all_have_tokens {
            Summary::of(&mut tokens)
        } else {
            None
        },
        chars: Summary::of(&mut chars),
        truncated,
        truncated_rate: ratio(truncated, n),
        histogram,
        histogram_unit: unit.to_string(),
    }
}

fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64, usize)> {
    let Some(max) = values.iter().copied().reduce(f64::max) else {
        return Vec::new();
    };
    let width = (max / bins as f64).max(1.0).ceil();
    let mut counts = vec![0usize; bins];
    for v in values {
        let b = ((v / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i as f64 * width, (i + 1) as f64 * width, c))
        .collect()
}

/// A line of a completions file for [`score_offline`].
#[derive(Debug, Deserialize)]
struct OfflineLine {
    id: Value,
    completion: String,
    #[serde(default)]
    finish_reason: Option<FinishReason>,
    #[serde(default)]
    completion_tokens: Option<usize>,
}

/// What to do with malformed lines in a completions file.
pub use reasonlab_core::jsonl::BadLines;

/// Score a completions file (`{"id": …, "completion": …}` per line, several per id, in sample
/// order; optional `finish_reason` and `completion_tokens`) against a benchmark (a built-in name
/// or a JSONL path): pass@k and cons@k for every k given, their standard errors, and the
/// counts of [`OfflineScores`].
pub fn score_offline(
    benchmark: &str,
    completions: &Path,
    ks: &[usize],
    bad: BadLines,
    cfg: &VerifyConfig,
) -> Result<OfflineScores, EvalError> {
    let problems = Benchmark::parse(benchmark)?.load()?;
    let index: HashMap<&str, usize> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut samples: Vec<Vec<Scored>> = vec![Vec::new(); problems.len()];
    let mut bad_lines = Vec::new();
    let mut unknown = std::collections::BTreeSet::new();
    let reader = reasonlab_core::jsonl::open(completions)?;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(EvalError::io(completions))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Result<OfflineLine, String> =
            serde_json::from_str(&line).map_err(|e| e.to_string());
        let rec = match parsed {
            Ok(r) => r,
            Err(message) => {
                let err = EvalError::BadRecord {
                    path: PathBuf::from(completions),
                    line: i + 1,
                    message,
                };
                match bad {
                    BadLines::Reject => return Err(err),
                    BadLines::Skip => {
                        tracing::warn!("skipping {err}");
                        bad_lines.push(err.to_string());
                        continue;
                    }
                }
            }
        };
        let id = match &rec.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match index.get(id.as_str()) {
            Some(&p) => samples[p].push(Scored {
                text: rec.completion,
                finish_reason: rec.finish_reason,
                completion_tokens: rec.completion_tokens,
            }),
            None => {
                unknown.insert(id);
            }
        }
    }
    let scores = score(&problems, &samples, ks, cfg)?;
    Ok(OfflineScores {
        metrics: scores.metrics.iter().map(|(k, e)| (*k, e.mean)).collect(),
        stderr: scores.metrics.iter().map(|(k, e)| (*k, e.se)).collect(),
        n_problems: scores.n_problems,
        n_samples: scores.n_samples,
        n_missing: scores.n_missing,
        n_unknown_ids: unknown.len(),
        n_bad_lines: bad_lines.len(),
        bad_lines,
        no_answer_rate: scores.no_answer_rate,
        methods: scores.methods.clone(),
        truncated_rate: scores.length.truncated_rate,
    })
}

/// What [`score_offline`] found; as JSON, the metrics sit at the top level (`"pass@1": 0.42`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfflineScores {
    #[serde(flatten)]
    pub metrics: BTreeMap<MetricKey, f64>,
    /// Standard error of each metric over problems.
    pub stderr: BTreeMap<MetricKey, f64>,
    pub n_problems: usize,
    pub n_samples: usize,
    /// Problems without any completion.
    pub n_missing: usize,
    /// Completion ids that are not in the benchmark.
    pub n_unknown_ids: usize,
    pub n_bad_lines: usize,
    /// `file:line: message` of every skipped line.
    pub bad_lines: Vec<String>,
    pub no_answer_rate: f64,
    /// Samples per extraction rule that found their answer.
    pub methods: BTreeMap<Method, usize>,
    pub truncated_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problem(id: &str, answer: &str) -> Problem {
        Problem {
            id: id.into(),
            problem: "p".into(),
            answer: answer.into(),
            solution: None,
            subject: Some("Algebra".into()),
            level: Some(2),
            source: "t".into(),
        }
    }

    fn s(text: &str) -> Scored {
        Scored {
            text: text.into(),
            finish_reason: Some(FinishReason::Stop),
            completion_tokens: Some(text.len()),
        }
    }

    #[test]
    fn best_of_n_grades_the_sample_the_ranker_puts_first() {
        // Gold 2: the majority (3) is wrong, the ranker prefers the one right sample.
        let problems = vec![problem("a", "2"), problem("b", "5")];
        let samples = vec![
            vec![s("\\boxed{3}"), s("\\boxed{3}"), s("\\boxed{2}")],
            vec![s("\\boxed{5}"), s("\\boxed{4}"), s("\\boxed{4}")],
        ];
        let ranks = vec![vec![0.1, 0.2, 0.9], vec![0.5, 0.7, 0.1]];
        let sc = score_ranked(
            &problems,
            &samples,
            Some(&ranks),
            &[1, 2, 3],
            &VerifyConfig::default(),
        )
        .unwrap();
        let m = |k: MetricKey| sc.metrics[&k].mean;
        // k=1: only the first sample (3 wrong, 5 right). k=2: b's top is 4 (wrong), a's is 3.
        // k=3: a's top is 2 (right), b's is 4 (wrong).
        assert_eq!(m(MetricKey::BestOfAt(1)), 0.5);
        assert_eq!(m(MetricKey::BestOfAt(2)), 0.0);
        assert_eq!(m(MetricKey::BestOfAt(3)), 0.5);
        assert_eq!(m(MetricKey::ConsAt(3)), 0.0);
        // Without a ranker there is no bon@k; ties go to the earliest sample.
        assert!(
            !score(&problems, &samples, &[1], &VerifyConfig::default())
                .unwrap()
                .metrics
                .contains_key(&MetricKey::BestOfAt(1))
        );
        assert_eq!(best_of(&[1.0, 1.0, 0.0], 3), Some(0));
        assert_eq!(best_of(&[], 3), None);
        assert_eq!(
            "bon@4".parse::<MetricKey>().unwrap(),
            MetricKey::BestOfAt(4)
        );
    }

    #[test]
    fn cons_groups_equivalent_answers_not_strings() {
        // Gold 1/2. Samples: 0.5, \frac{1}{2}, 3, 3, 3 → classes {1/2: 2, 3: 3}.
        let problems = vec![problem("a", "\\frac{1}{2}")];
        let samples = vec![vec![
            s("\\boxed{0.5}"),
            s("\\boxed{\\frac{1}{2}}"),
            s("\\boxed{3}"),
            s("\\boxed{3}"),
            s("\\boxed{3}"),
        ]];
        let sc = score(&problems, &samples, &[1, 2, 4, 5], &VerifyConfig::default()).unwrap();
        assert!((sc.metrics[&MetricKey::PassAt(1)].mean - 0.4).abs() < 1e-12);
        // k=2: 0.5 and 1/2 are one class (string equality would make a 1-1 tie, still 0.5
        // first), k=4: 2-2 tie, the 1/2 class appears first → correct.
        assert_eq!(sc.metrics[&MetricKey::ConsAt(2)].mean, 1.0);
        assert_eq!(sc.metrics[&MetricKey::ConsAt(4)].mean, 1.0);
        // k=5: 3 has three votes → wrong.
        assert_eq!(sc.metrics[&MetricKey::ConsAt(5)].mean, 0.0);
        assert_eq!(sc.cons_curve, vec![1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(sc.by_level[0].group, "2");
        assert_eq!(sc.by_subject[0].n_problems, 1);
    }

    #[test]
    fn rules_that_fired_are_counted_and_a_pinned_format_is_used() {
        let problems = vec![problem("a", "5")];
        let samples = vec![vec![
            s(r#"{"reasoning": "2 + 3", "answer": "5"}"#),
            s("\\boxed{5}"),
            s("I counted 3 red and 5 blue"),
        ]];
        let sc = score(&problems, &samples, &[1], &VerifyConfig::default()).unwrap();
        assert_eq!(sc.metrics[&MetricKey::PassAt(1)].mean, 1.0);
        let fired: Vec<(Method, usize)> = sc.methods.clone().into_iter().collect();
        assert_eq!(
            fired,
            [
                (Method::Boxed, 1),
                (Method::Json, 1),
                (Method::LastNumber, 1)
            ]
        );
        let mut json_only = VerifyConfig::default();
        json_only.extract.format = reasonlab_answer::AnswerFormat::Json;
        let sc = score(&problems, &samples, &[1], &json_only).unwrap();
        assert!((sc.metrics[&MetricKey::PassAt(1)].mean - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(sc.methods.len(), 1);
    }

    #[test]
    fn string_equality_would_lose_this_vote() {
        // Two spellings of 1/2 against two identical wrong strings, wrong one first.
        let problems = vec![problem("a", "0.5")];
        let samples = vec![vec![
            s("\\boxed{7}"),
            s("\\boxed{\\frac12}"),
            s("\\boxed{7}"),
            s("\\boxed{1/2}"),
            s("\\boxed{0.50}"),
        ]];
        let sc = score(&problems, &samples, &[5], &VerifyConfig::default()).unwrap();
        assert_eq!(sc.metrics[&MetricKey::ConsAt(5)].mean, 1.0);
    }

    #[test]
    fn k_larger_than_samples_is_an_error() {
        let problems = vec![problem("a", "1"), problem("b", "2")];
        let samples = vec![vec![s("1"), s("1")], vec![s("2")]];
        let err = score(&problems, &samples, &[2], &VerifyConfig::default()).unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
    }

    #[test]
    fn offline_scoring_keys_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let bench = dir.path().join("b.jsonl");
        std::fs::write(
            &bench,
            "{\"id\": \"x\", \"problem\": \"1+1\", \"answer\": \"2\"}\n\
             {\"id\": \"y\", \"problem\": \"2+2\", \"answer\": \"4\"}\n",
        )
        .unwrap();
        let comp = dir.path().join("c.jsonl");
        std::fs::write(
            &comp,
            "{\"id\": \"x\", \"completion\": \"\\\\boxed{2}\"}\n\
             {\"id\": \"x\", \"completion\": \"\\\\boxed{3}\"}\n\
             not json\n\
             {\"id\": \"y\", \"completion\": \"The answer is 5\", \"finish_reason\": \"length\"}\n\
             {\"id\": \"y\", \"completion\": \"\\\\boxed{4}\"}\n\
             {\"id\": \"zz\", \"completion\": \"\\\\boxed{4}\"}\n",
        )
        .unwrap();
        let cfg = VerifyConfig::default();
        let err = score_offline(
            bench.to_str().unwrap(),
            &comp,
            &[1, 2],
            BadLines::Reject,
            &cfg,
        )
        .unwrap_err();
        assert!(err.to_string().contains("c.jsonl:3:"), "{err}");
        let v = score_offline(
            bench.to_str().unwrap(),
            &comp,
            &[1, 2],
            BadLines::Skip,
            &cfg,
        )
        .unwrap();
        assert_eq!(v.metrics[&MetricKey::PassAt(1)], 0.5);
        assert_eq!(v.metrics[&MetricKey::PassAt(2)], 1.0);
        // Both problems are 1-1 ties; the first sample wins: x right, y wrong.
        assert_eq!(v.metrics[&MetricKey::ConsAt(2)], 0.5);
        assert_eq!((v.n_problems, v.n_unknown_ids, v.n_bad_lines), (2, 1, 1));
        assert_eq!(v.truncated_rate, 0.25);
        assert!(v.bad_lines[0].contains("c.jsonl:3:"));
        // The JSON keeps the flat shape `eval score --json` always printed.
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["pass@1"], json!(0.5));
        assert_eq!(
            json["stderr"]["cons@2"],
            json!(v.stderr[&MetricKey::ConsAt(2)])
        );
    }
}
