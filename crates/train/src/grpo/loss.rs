//! The GRPO family's loss in one kernel.
//!
//! Per completion token t of completion i (DeepSeekMath eq. 3, with the variants as enums):
//!
//! ```text
//! ρ_{i,t}  = exp(log π_θ − log π_old)                       RatioLevel::Token  (GRPO)
//! ρ_{i}    = exp(mean_t (log π_θ − log π_old))               RatioLevel::Sequence (GSPO, Zheng et al. 2025)
//! ℓ_{i,t}  = −min(ρ Â, clip(ρ, 1 − ε_low, 1 + ε_high) Â)     (DAPO's clip-higher when ε_high > ε_low)
//!          + β · (π_ref/π_θ − log(π_ref/π_θ) − 1)            k3 estimator (Schulman 2020), only if β > 0
//! ```
//!
//! Aggregation ([`LossAgg`]): `SequenceMean` = mean over each completion's tokens, then over
//! completions (DeepSeekMath); `TokenMean` = sum over all tokens / number of tokens (DAPO);
//! `Constant` = sum / (G · L_max) (Dr. GRPO).
//!
//! At ρ = 1 (first inner step, μ = 1) the gradient w.r.t. log π_θ of token t is
//! `−(1/Z) · [Â + β(π_ref/π_θ − 1)]` — DeepSeekMath Appendix A.1's gradient coefficient.

use reasonlab_model::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Where the importance ratio is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RatioLevel {
    #[default]
    Token,
    Sequence,
}

/// How per-token losses become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossAgg {
    #[default]
    SequenceMean,
    TokenMean,
    Constant,
}

/// Loss hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossSettings {
    pub epsilon_low: f32,
    pub epsilon_high: f32,
    pub beta: f32,
    pub ratio: RatioLevel,
    pub aggregation: LossAgg,
}

impl Default for LossSettings {
    fn default() -> Self {
        Self {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.04,
            ratio: RatioLevel::Token,
            aggregation: LossAgg::SequenceMean,
        }
    }
}

/// Everything the loss reads; all (b, l) over completion positions, `mask` 1 on real tokens.
pub struct LossInputs {
    pub logp: Tensor<2>,
    pub old_logp: Tensor<2>,
    pub ref_logp: Option<Tensor<2>>,
    pub advantages: Tensor<2>,
    pub mask: Tensor<2>,
    /// L_max for [`LossAgg::Constant`].
    pub max_len: usize,
    /// When these rows are a micro-batch of a larger batch: that batch's `(rows, real tokens)`,
    /// so that summing the micro-batch losses gives the full batch's loss (gradient
    /// accumulation). `None`: the rows are the whole batch.
    pub totals: Option<(usize, usize)>,
}

/// Diagnostics of one loss evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LossStats {
    pub clip_low: f32,
    pub clip_high: f32,
    pub kl: f32,
    pub ratio_mean: f32,
}

fn masked_mean(x: Tensor<2>, mask: &Tensor<2>) -> Tensor<1> {
    (x * mask.clone()).sum() / mask.clone().sum().clamp_min(1.0)
}

/// The loss (differentiable through `logp`) and its statistics.
pub fn grpo_loss(s: &LossSettings, x: LossInputs) -> (Tensor<1>, LossStats) {
    let mask = x.mask;
    let [b, l] = mask.dims();
    let log_ratio = x.logp.clone() - x.old_logp;
    let ratio = match s.ratio {
        RatioLevel::Token => log_ratio.exp(),
        RatioLevel::Sequence => {
            let per_seq =
                (log_ratio * mask.clone()).sum_dim(1) / mask.clone().sum_dim(1).clamp_min(1.0); // (b, 1)
            per_seq.exp().repeat_dim(1, l)
        }
    };
    let adv = x.advantages;
    let lo = 1.0 - s.epsilon_low;
    let hi = 1.0 + s.epsilon_high;
    let unclipped = ratio.clone() * adv.clone();
    let clipped = ratio.clone().clamp(lo, hi) * adv.clone();
    let mut per_token = unclipped.min_pair(clipped).neg();
    let mut kl_value = 0.0;
    if let Some(ref_logp) = x.ref_logp
        && s.beta > 0.0
    {
        let d = ref_logp - x.logp; // log(π_ref / π_θ)
        let k3 = d.clone().exp() - d - 1.0;
        kl_value = masked_mean(k3.clone().detach(), &mask)
            .try_into_scalar::<f32>()
            .unwrap_or(f32::NAN);
        per_token = per_token + k3 * s.beta;
    }
    let (rows, tokens) = match x.totals {
        Some(t) => (t.0 as f32, t.1 as f32),
        None => (
            b as f32,
            mask.clone()
                .sum()
                .try_into_scalar::<f32>()
                .unwrap_or(f32::NAN),
        ),
    };
    let loss = match s.aggregation {
        LossAgg::SequenceMean => {
            ((per_token * mask.clone()).sum_dim(1) / mask.clone().sum_dim(1).clamp_min(1.0)).sum()
                / rows.max(1.0)
        }
        LossAgg::TokenMean => (per_token * mask.clone()).sum() / tokens.max(1.0),
        LossAgg::Constant => (per_token * mask.clone()).sum() / (rows * x.max_len.max(1) as f32),
    };
    // Clip fractions as TRL reports them: low = ρ < 1−ε with Â < 0, high = ρ > 1+ε with Â > 0;
    // over tokens, or over completions when there is one ratio per completion.
    let frac = |x: Tensor<2>| match s.ratio {
        RatioLevel::Token => masked_mean(x, &mask),
        RatioLevel::Sequence => {
            ((x * mask.clone()).sum_dim(1) / mask.clone().sum_dim(1).clamp_min(1.0)).mean()
        }
    };
    let r = ratio.detach();
    let a = adv;
    let low = r.clone().lower_elem(lo).float() * a.clone().lower_elem(0.0).float();
    let high = r.clone().greater_elem(hi).float() * a.greater_elem(0.0).float();
    let scalar = |t: Tensor<1>| t.try_into_scalar::<f32>().unwrap_or(f32::NAN);
    let stats = LossStats {
        clip_low: scalar(frac(low)),
        clip_high: scalar(frac(high)),
        kl: kl_value,
        ratio_mean: scalar(frac(r)),
    };
    (loss, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reasonlab_model::tensor::{Device, TensorData};

    fn t(values: &[f32], b: usize, l: usize, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), [b, l]), device)
    }

    /// DeepSeekMath Appendix A.1: at ρ = 1 the gradient coefficient is Â + β(π_ref/π_θ − 1).
    #[test]
    fn gradient_is_the_appendix_a1_coefficient() {
        let device = Device::flex().autodiff();
        let logp_v = [-1.0f32, -2.0, -0.5, -1.5, -0.7, -3.0];
        let ref_v = [-1.2f32, -1.8, -0.5, -1.0, -0.9, -2.0];
        let adv_v = [0.5f32, 0.5, 0.5, -1.0, -1.0, -1.0];
        let mask_v = [1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0];
        let logp = t(&logp_v, 2, 3, &device).require_grad();
        let beta = 0.1;
        let s = LossSettings {
            beta,
            ..Default::default()
        };
        let (loss, _) = grpo_loss(
            &s,
            LossInputs {
                logp: logp.clone(),
                old_logp: logp.clone().detach(),
                ref_logp: Some(t(&ref_v, 2, 3, &device)),
                advantages: t(&adv_v, 2, 3, &device),
                mask: t(&mask_v, 2, 3, &device),
                max_len: 3,
                totals: None,
            },
        );
        let grads = loss.backward();
        let g = logp.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        let lens = [3.0f32, 2.0];
        for i in 0..6 {
            let (row, len) = (i / 3, lens[i / 3]);
            let coef = adv_v[i] + beta * ((ref_v[i] - logp_v[i]).exp() - 1.0);
            let expected = if mask_v[i] == 0.0 {
                0.0
            } else {
                -coef / (2.0 * len)
            };
            assert!(
                (g[i] - expected).abs() < 1e-6,
                "token {i} (row {row}): {} vs {expected}",
                g[i]
            );
        }
    }

    /// With μ = 1 and β = 0 the loss is 0 (advantages sum to 0 per group) yet the gradient is not.
    #[test]
    fn zero_loss_nonzero_gradient() {
        let device = Device::flex().autodiff();
        let logp = t(&[-1.0, -2.0, -0.3, -0.4], 2, 2, &device).require_grad();
        let s = LossSettings {
            beta: 0.0,
            ..Default::default()
        };
        let (loss, stats) = grpo_loss(
            &s,
            LossInputs {
                logp: logp.clone(),
                old_logp: logp.clone().detach(),
                ref_logp: None,
                advantages: t(&[1.0, 1.0, -1.0, -1.0], 2, 2, &device),
                mask: t(&[1.0; 4], 2, 2, &device),
                max_len: 2,
                totals: None,
            },
        );
        assert!(loss.clone().try_into_scalar::<f32>().unwrap().abs() < 1e-7);
        let g = logp
            .grad(&loss.backward())
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap();
        assert!(g.iter().all(|x| x.abs() > 0.1), "{g:?}");
        assert_eq!(stats.clip_low, 0.0);
        assert!((stats.ratio_mean - 1.0).abs() < 1e-6);
    }

    /// Clipping: a token whose ratio left [1−ε, 1+ε] in the advantage's direction gets no gradient.
    #[test]
    fn clipped_tokens_have_no_gradient_and_are_counted() {
        let device = Device::flex().autodiff();
        // ratios e^0.5 ≈ 1.65 (A>0: clipped high), e^-0.5 ≈ 0.61 (A<0: clipped low), 1.0, 1.0
        let logp = t(&[0.5, -0.5, 0.0, 0.0], 1, 4, &device).require_grad();
        for agg in [LossAgg::SequenceMean, LossAgg::TokenMean, LossAgg::Constant] {
            let s = LossSettings {
                beta: 0.0,
                aggregation: agg,
                epsilon_high: 0.28,
                ..Default::default()
            };
            let (loss, stats) = grpo_loss(
                &s,
                LossInputs {
                    logp: logp.clone(),
                    old_logp: t(&[0.0; 4], 1, 4, &device),
                    ref_logp: None,
                    advantages: t(&[1.0, -1.0, 1.0, -1.0], 1, 4, &device),
                    mask: t(&[1.0; 4], 1, 4, &device),
                    max_len: 8,
                    totals: None,
                },
            );
            let g = logp
                .grad(&loss.backward())
                .unwrap()
                .try_into_vec_as::<f32>()
                .unwrap();
            assert_eq!(g[0], 0.0, "{agg:?}");
            assert_eq!(g[1], 0.0, "{agg:?}");
            let z = if agg == LossAgg::Constant { 8.0 } else { 4.0 };
            assert!(
                (g[2] + 1.0 / z).abs() < 1e-6 && (g[3] - 1.0 / z).abs() < 1e-6,
                "{agg:?} {g:?}"
            );
            assert_eq!((stats.clip_low, stats.clip_high), (0.25, 0.25));
        }
    }
}
