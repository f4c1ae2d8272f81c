//! Group-relative advantages (DeepSeekMath §4.1.2–4.1.3).
//!
//! Outcome supervision: each completion gets `Â_i = (r_i − mean(r_group)) / (std + ε)` and
//! every one of its tokens carries `Â_i`. The std is the group's ([`Scaling::Group`],
//! DeepSeekMath §4.1.2), the whole batch's ([`Scaling::Batch`]), or no division at all
//! ([`Scaling::None`], Dr. GRPO, Liu et al. 2025 §3.1). Like `torch.std` in TRL's
//! `GRPOTrainer`, the std is the unbiased (n − 1) estimate, and ε = 1e-4.
//!
//! Process supervision: completion i has steps ending at token indices `ends_i[0] < ends_i[1]
//! < …` with step rewards `r_i^j`. All step rewards of the group are normalised together,
//! `r̃ = (r − mean(R)) / (std(R) + ε)`, and a token's advantage is the sum of the normalised
//! rewards of the steps ending at or after it: `Â_{i,t} = Σ_{ends_i[j] ≥ t} r̃_i^j`.

use serde::{Deserialize, Serialize};

/// How rewards are scaled after subtracting the group mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// Divide by the group's std (GRPO).
    #[default]
    Group,
    /// Divide by the std of all rewards in the batch.
    Batch,
    /// Do not divide (Dr. GRPO).
    None,
}

const EPS: f64 = 1e-4;

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    // Unbiased (n − 1), as torch.std in TRL's GRPOTrainer.
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Outcome advantages for `rewards` laid out group by group (`group_size` each).
pub fn outcome_advantages(rewards: &[f64], group_size: usize, scaling: Scaling) -> Vec<f64> {
    let batch_std = mean_std(rewards).1;
    rewards
        .chunks(group_size.max(1))
        .flat_map(|g| {
            let (mean, std) = mean_std(g);
            let denom = match scaling {
                Scaling::Group => std + EPS,
                Scaling::Batch => batch_std + EPS,
                Scaling::None => 1.0,
            };
            g.iter().map(move |r| (r - mean) / denom)
        })
        .collect()
}

/// One completion's step rewards: `ends[j]` is the index (into the completion's tokens) of the
/// last token of step j; `rewards[j]` its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRewards {
    pub ends: Vec<usize>,
    pub rewards: Vec<f64>,
}

/// Process-supervision advantages per token for one group (DeepSeekMath §4.1.3).
pub fn process_advantages(group: &[StepRewards], lengths: &[usize]) -> Vec<Vec<f64>> {
    let all: Vec<f64> = group
        .iter()
        .flat_map(|s| s.rewards.iter().copied())
        .collect();
    let (mean, std) = if all.is_empty() {
        (0.0, 0.0)
    } else {
        mean_std(&all)
    };
    group
        .iter()
        .zip(lengths)
        .map(|(s, &len)| {
            (0..len)
                .map(|t| {
                    s.ends
                        .iter()
                        .zip(&s.rewards)
                        .filter(|(end, _)| **end >= t)
                        .map(|(_, r)| (r - mean) / (std + EPS))
                        .sum()
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rewards_give_zero_advantage_without_nan() {
        for s in [Scaling::Group, Scaling::Batch, Scaling::None] {
            let a = outcome_advantages(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], 4, s);
            assert!(a.iter().all(|x| *x == 0.0), "{s:?}: {a:?}");
        }
    }

    #[test]
    fn group_normalisation_matches_hand_computation() {
        // rewards 1,0,0,0: mean 0.25, unbiased std 0.5.
        let a = outcome_advantages(&[1.0, 0.0, 0.0, 0.0], 4, Scaling::Group);
        assert!((a[0] - 0.75 / (0.5 + EPS)).abs() < 1e-12);
        assert!((a[1] + 0.25 / (0.5 + EPS)).abs() < 1e-12);
        let d = outcome_advantages(&[1.0, 0.0, 0.0, 0.0], 4, Scaling::None);
        assert_eq!(d, vec![0.75, -0.25, -0.25, -0.25]);
        assert!(a.iter().sum::<f64>().abs() < 1e-12);
    }

    #[test]
    fn process_advantage_sums_future_steps() {
        let group = vec![
            StepRewards {
                ends: vec![1, 3],
                rewards: vec![1.0, 0.0],
            },
            StepRewards {
                ends: vec![2],
                rewards: vec![0.0],
            },
        ];
        let adv = process_advantages(&group, &[4, 3]);
        let (mean, std) = mean_std(&[1.0, 0.0, 0.0]);
        let n = |r: f64| (r - mean) / (std + EPS);
        assert!((adv[0][0] - (n(1.0) + n(0.0))).abs() < 1e-12);
        assert!((adv[0][2] - n(0.0)).abs() < 1e-12);
        assert!((adv[1][0] - n(0.0)).abs() < 1e-12);
        assert_eq!(adv[0].len(), 4);
    }
}
