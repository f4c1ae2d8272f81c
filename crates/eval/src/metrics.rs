//! pass@k, cons@k and standard errors.
//!
//! * pass@1: per problem the fraction of its samples that are correct, then the mean over
//!   problems (DeepSeek-R1 §3: "pass@1 = 1/k Σ p_i", k samples at temperature 0.6).
//! * pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
//!   Trained on Code", eq. 1 and the numerically stable product form in its Figure 3):
//!   `1 − C(n−c, k) / C(n, k) = 1 − Π_{i=n−c+1}^{n} (1 − k/i)`, per problem, then the mean.
//! * cons@k: majority vote over the first k samples of a problem (DeepSeekMath maj@64,
//!   DeepSeek-R1 cons@64). Answers are grouped into equivalence classes with the verifier's
//!   equivalence ([`reasonlab_answer::equivalent`]), not string equality; see [`vote`] for the
//!   class-building and tie rules.
//! * Standard errors: the sample standard deviation of the per-problem scores divided by
//!   √(number of problems). This covers both the choice of problems and the sampling noise
//!   within each problem (the per-problem score already contains it).

use serde::{Deserialize, Serialize};

use crate::EvalError;

/// Unbiased pass@k for one problem with `n` samples of which `c` are correct.
///
/// Chen et al. 2021, Figure 3: `if n - c < k: return 1.0;
/// return 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1))`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, EvalError> {
    if k == 0 {
        return Err(EvalError::ZeroK { k });
    }
    if k > n {
        return Err(EvalError::KTooLarge {
            k,
            n,
            id: String::new(),
        });
    }
    let c = c.min(n);
    if n - c < k {
        return Ok(1.0);
    }
    let mut prod = 1.0f64;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    Ok(1.0 - prod)
}

/// A mean with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    /// Sample standard deviation / √count; 0 when count < 2.
    pub se: f64,
    pub count: usize,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Estimate {
        let count = values.len();
        if count == 0 {
            return Estimate {
                mean: 0.0,
                se: 0.0,
                count,
            };
        }
        let mean = values.iter().sum::<f64>() / count as f64;
        let se = if count < 2 {
            0.0
        } else {
            let var =
                values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (count - 1) as f64;
            (var / count as f64).sqrt()
        };
        Estimate { mean, se, count }
    }
}

/// The outcome of a majority vote over some samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// Sample index of the winning class's first member; `None` when no sample had an answer.
    pub winner: Option<usize>,
    /// Votes for the winner.
    pub votes: usize,
}

/// Majority vote over the first `k` samples, given each sample's class id (`None`: no answer).
///
/// Classes are numbered by [`classify`] in order of first appearance. Rules:
/// * samples without an extractable answer do not vote; if none has one, there is no winner
///   (the problem counts as wrong);
/// * the class with the most votes wins;
/// * **tie rule**: among classes with equally many votes, the one whose first member appears
///   earliest (smallest sample index) wins. This is deterministic, needs no randomness, and
///   matches `collections.Counter.most_common` in Python ≥ 3.7, which breaks ties by first
///   insertion.
pub fn vote(classes: &[Option<usize>], k: usize) -> Vote {
    let prefix = &classes[..k.min(classes.len())];
    let n_classes = prefix.iter().flatten().max().map_or(0, |m| m + 1);
    let mut counts = vec![0usize; n_classes];
    let mut first = vec![usize::MAX; n_classes];
    for (i, c) in prefix.iter().enumerate() {
        if let Some(c) = *c {
            counts[c] += 1;
            first[c] = first[c].min(i);
        }
    }
    let mut best: Option<usize> = None;
    for c in 0..n_classes {
        if counts[c] == 0 {
            continue;
        }
        best = match best {
            None => Some(c),
            Some(b) if counts[c] > counts[b] || (counts[c] == counts[b] && first[c] < first[b]) => {
                Some(c)
            }
            keep => keep,
        };
    }
    match best {
        Some(b) => Vote {
            winner: Some(first[b]),
            votes: counts[b],
        },
        None => Vote {
            winner: None,
            votes: 0,
        },
    }
}

/// Group answers into equivalence classes, in sample order: each answer joins the first
/// existing class whose representative (its first member) is equivalent to it, else opens a new
/// class. Verifier equivalence need not be transitive, so comparing with representatives only
/// makes the grouping a function of the order, and each prefix of the samples is grouped
/// exactly as it would be on its own (so cons@k for every k ≤ n comes from one pass).
pub fn classify<T>(
    answers: &[Option<T>],
    equivalent: impl Fn(&T, &T) -> bool,
) -> Vec<Option<usize>> {
    let mut reps: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(answers.len());
    for (i, a) in answers.iter().enumerate() {
        let Some(a) = a else {
            out.push(None);
            continue;
        };
        let found = reps.iter().position(|&r| match &answers[r] {
            Some(rep) => equivalent(rep, a),
            None => false,
        });
        match found {
            Some(c) => out.push(Some(c)),
            None => {
                reps.push(i);
                out.push(Some(reps.len() - 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: usize, k: usize) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    /// Brute force: the fraction of the C(n, k) subsets of size k with at least one correct.
    fn brute(correct: &[bool], k: usize) -> f64 {
        let n = correct.len();
        let (mut hit, mut total) = (0u64, 0u64);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != k {
                continue;
            }
            total += 1;
            if (0..n).any(|i| mask & (1 << i) != 0 && correct[i]) {
                hit += 1;
            }
        }
        hit as f64 / total as f64
    }

    #[test]
    fn pass_at_k_equals_subset_enumeration() {
        for n in 1..=12 {
            for c in 0..=n {
                // Correct samples rotated and reversed (not a prefix): order must not matter.
                let correct: Vec<bool> = (0..n).map(|i| (2 * n - 1 - i + 3) % n < c).collect();
                assert_eq!(correct.iter().filter(|&&b| b).count(), c);
                for k in 1..=n {
                    let est = pass_at_k(n, c, k).unwrap();
                    let exact = brute(&correct, k);
                    assert!(
                        (est - exact).abs() < 1e-12,
                        "n={n} c={c} k={k}: {est} vs {exact}"
                    );
                    let closed = 1.0 - binom(n - c, k) / binom(n, k);
                    assert!((est - closed).abs() < 1e-9);
                }
            }
        }
        assert_eq!(pass_at_k(64, 1, 1).unwrap(), 1.0 / 64.0);
        // Stable where the binomials overflow f64 (C(1000, 500) ≈ 1e299, C(2000, 1000) is inf).
        let p = pass_at_k(2000, 3, 1000).unwrap();
        assert!(
            p.is_finite() && (p - (1.0 - 0.5f64.powi(3))).abs() < 1e-3,
            "{p}"
        );
        assert!(pass_at_k(4, 1, 5).is_err());
        assert!(pass_at_k(4, 1, 0).is_err());
    }

    #[test]
    fn vote_majority_and_ties() {
        // classes: a=0, b=1, c=2
        let cls = |s: &str| -> Vec<Option<usize>> {
            s.chars()
                .map(|ch| match ch {
                    '-' => None,
                    c => Some(c as usize - 'a' as usize),
                })
                .collect()
        };
        // b has 3 votes, a has 2.
        assert_eq!(
            vote(&cls("abbab"), 5),
            Vote {
                winner: Some(1),
                votes: 3
            }
        );
        // Tie 2-2: a's first member (index 0) is earlier than b's (index 1).
        assert_eq!(
            vote(&cls("abba"), 4),
            Vote {
                winner: Some(0),
                votes: 2
            }
        );
        // Tie where the later-opened class is reached first in count order: b first at 1.
        assert_eq!(vote(&cls("-bab-a"), 6).winner, Some(1));
        // Prefix: only the first 3 samples vote: b,a,b -> b wins 2-1.
        assert_eq!(
            vote(&cls("babaa"), 3),
            Vote {
                winner: Some(0),
                votes: 2
            }
        );
        // Three-way tie of singletons: earliest.
        assert_eq!(vote(&cls("-cab"), 4).winner, Some(1));
        // No answers at all.
        assert_eq!(
            vote(&cls("---"), 3),
            Vote {
                winner: None,
                votes: 0
            }
        );
    }

    #[test]
    fn classify_uses_representatives_in_order() {
        // "Equivalent" when within 1: 1~2, 2~3, but 1 and 3 are not.
        let xs = [Some(1), Some(2), Some(3), None, Some(1), Some(10)];
        let classes = classify(&xs, |a: &i32, b: &i32| (a - b).abs() <= 1);
        assert_eq!(
            classes,
            vec![Some(0), Some(0), Some(1), None, Some(0), Some(2)]
        );
        // A prefix classifies the same on its own.
        assert_eq!(
            classify(&xs[..3], |a: &i32, b: &i32| (a - b).abs() <= 1),
            classes[..3]
        );
    }

    #[test]
    fn estimate_se() {
        let e = Estimate::of(&[1.0, 0.0, 1.0, 0.0]);
        assert_eq!(e.mean, 0.5);
        // sd = sqrt(1/3), se = sd/2
        assert!((e.se - (1.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(Estimate::of(&[0.7]).se, 0.0);
    }
}

/// A metric of a score table, written `pass@k` or `cons@k` in files and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKey {
    /// Unbiased pass@k (Chen et al. 2021); pass@1 is the mean accuracy over samples.
    PassAt(usize),
    /// Majority vote over the first k samples (DeepSeekMath's maj@k, DeepSeek-R1's cons@64).
    ConsAt(usize),
    /// Best-of-N: the first k samples re-ranked by a reward model, the top one graded
    /// (Math-Shepherd's and DeepSeekMath's reranking next to majority voting).
    BestOfAt(usize),
}

impl std::fmt::Display for MetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricKey::PassAt(k) => write!(f, "pass@{k}"),
            MetricKey::ConsAt(k) => write!(f, "cons@{k}"),
            MetricKey::BestOfAt(k) => write!(f, "bon@{k}"),
        }
    }
}

impl std::str::FromStr for MetricKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, k) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?} is not a metric (pass@k, cons@k or bon@k)"))?;
        let k: usize = k
            .parse()
            .ok()
            .filter(|&k| k > 0)
            .ok_or_else(|| format!("{s:?}: k must be a positive integer"))?;
        match name {
            "pass" => Ok(MetricKey::PassAt(k)),
            "cons" | "maj" => Ok(MetricKey::ConsAt(k)),
            "bon" | "best" => Ok(MetricKey::BestOfAt(k)),
            _ => Err(format!("{s:?} is not a metric (pass@k, cons@k or bon@k)")),
        }
    }
}

impl Serialize for MetricKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MetricKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod metric_key_tests {
    use super::MetricKey;

    #[test]
    fn metric_keys_read_and_write_as_pass_at_k() {
        for k in [MetricKey::PassAt(1), MetricKey::ConsAt(64)] {
            assert_eq!(k.to_string().parse::<MetricKey>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<MetricKey>(&json).unwrap(), k);
        }
        assert_eq!("maj@8".parse::<MetricKey>().unwrap(), MetricKey::ConsAt(8));
        assert!("pass@0".parse::<MetricKey>().is_err());
        assert!("acc".parse::<MetricKey>().is_err());
        let map: std::collections::BTreeMap<MetricKey, f64> =
            serde_json::from_str(r#"{"pass@1": 0.5, "cons@4": 0.75}"#).unwrap();
        assert_eq!(map[&MetricKey::ConsAt(4)], 0.75);
    }
}
