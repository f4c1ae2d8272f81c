//! Host-side token sampling: temperature → top-k → top-p → min-p → draw.

use reasonlab_core::rng::SplitMix64;

use crate::SamplingParams;

/// Per-sequence random stream: SplitMix64 seeded from a hash of (seed, prompt, sample).
#[derive(Debug, Clone)]
pub struct SeqRng(SplitMix64);

impl SeqRng {
    pub fn new(seed: u64, prompt: u64, sample: u64) -> Self {
        let mut s = SplitMix64::from_state(seed ^ 0x5851_F42D_4C95_7F2D);
        let x = s.next_u64();
        let mut s =
            SplitMix64::from_state(s.state() ^ x ^ prompt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let y = s.next_u64();
        Self(SplitMix64::from_state(
            s.state() ^ y ^ sample.wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.unit()
    }
}

/// The filters of one sampling configuration.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
}

impl Sampler {
    pub fn new(p: &SamplingParams) -> Self {
        Self {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
        }
    }

    /// Draw a token from `logits` (modified in place as scratch). Returns the token and its
    /// log-probability under the unfiltered, temperature-1 distribution.
    pub fn sample(&self, logits: &mut [f32], rng: &mut SeqRng) -> (u32, f32) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if self.temperature == 1.0 && self.top_k == 0 && self.top_p >= 1.0 && self.min_p <= 0.0 {
            // Plain sampling: the exponentials of the normaliser are the draw's weights, so
            // compute them once (same values, same order, same token as the general path).
            let weights: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
            let total: f64 = weights.iter().sum();
            let log_z = max + total.ln() as f32;
            let token = pick(weights.iter().copied().enumerate(), total, rng);
            return (token as u32, logits_logp(logits, token, log_z));
        }
        let log_z = max
            + logits
                .iter()
                .map(|&l| ((l - max) as f64).exp())
                .sum::<f64>()
                .ln() as f32;
        let token = if self.temperature == 0.0 {
            argmax(logits)
        } else {
            self.draw(logits, max, rng)
        };
        (token as u32, logits_logp(logits, token, log_z))
    }

    fn draw(&self, logits: &[f32], max: f32, rng: &mut SeqRng) -> usize {
        let cand = self.kept(logits, max);
        let total: f64 = cand.iter().map(|c| c.1).sum();
        pick(cand.into_iter(), total, rng)
    }

    /// The tokens a draw at this setting can pick from `logits`, in vocabulary order (all of
    /// them without a top-k, top-p or min-p filter; the argmax's row at temperature 0 is not
    /// a draw and is not covered).
    pub fn candidates(&self, logits: &[f32]) -> Vec<usize> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.kept(logits, max).into_iter().map(|c| c.0).collect()
    }

    /// The candidates as (index, unnormalised probability `exp((logit − max) / T)`) in
    /// vocabulary order. Every filter keeps a prefix of the order by probability descending,
    /// then index ascending: the first `top_k`, then those of probability ≥ `min_p` times the
    /// likeliest's, then the shortest prefix whose mass reaches `top_p` of the `top_k`'s. The
    /// draw walks the survivors in vocabulary order, as the device's draw does (the order
    /// changes which uniform picks which token, not the distribution).
    fn kept(&self, logits: &[f32], max: f32) -> Vec<(usize, f64)> {
        let inv_t = 1.0 / self.temperature as f64;
        let mut cand: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l - max) as f64 * inv_t).exp()))
            .collect();
        let by_prob = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let top_k = self.top_k > 0 && self.top_k < cand.len();
        if !top_k && self.top_p >= 1.0 && self.min_p <= 0.0 {
            return cand;
        }
        if top_k {
            cand.select_nth_unstable_by(self.top_k - 1, by_prob);
            cand.truncate(self.top_k);
        }
        if self.top_p < 1.0 || self.min_p > 0.0 {
            cand.sort_unstable_by(by_prob);
            let total: f64 = cand.iter().map(|c| c.1).sum();
            if self.min_p > 0.0 {
                let floor = cand[0].1 * self.min_p as f64;
                cand.retain(|c| c.1 >= floor);
            }
            if self.top_p < 1.0 {
                // Smallest prefix whose mass reaches top_p (always at least one token).
                let target = self.top_p as f64 * total;
                let mut acc = 0.0;
                let mut keep = cand.len();
                for (i, c) in cand.iter().enumerate() {
                    acc += c.1;
                    if acc >= target {
                        keep = i + 1;
                        break;
                    }
                }
                cand.truncate(keep);
            }
        }
        cand.sort_unstable_by_key(|c| c.0);
        cand
    }
}

/// Inverse-CDF draw from `(index, weight)` pairs whose weights sum to `total`.
fn pick(cand: impl Iterator<Item = (usize, f64)>, total: f64, rng: &mut SeqRng) -> usize {
    let mut u = rng.uniform() * total;
    let mut last = 0;
    for (i, p) in cand {
        if u < p {
            return i;
        }
        u -= p;
        last = i;
    }
    last
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

fn logits_logp(logits: &[f32], token: usize, log_z: f32) -> f32 {
    logits[token] - log_z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams::draw(temperature, top_k, top_p, min_p)
    }

    fn histogram(p: &SamplingParams, logits: &[f32], draws: usize) -> Vec<usize> {
        let s = Sampler::new(p);
        let mut rng = SeqRng::new(1, 2, 3);
        let mut h = vec![0; logits.len()];
        for _ in 0..draws {
            let mut l = logits.to_vec();
            h[s.sample(&mut l, &mut rng).0 as usize] += 1;
        }
        h
    }

    // probs ∝ [8, 4, 2, 1, 1] / 16
    const LOGITS: [f32; 5] = [3.0, 2.0, 1.0, 0.0, 0.0];

    fn logits() -> Vec<f32> {
        LOGITS.iter().map(|x| x * std::f32::consts::LN_2).collect()
    }

    #[test]
    fn greedy_picks_argmax_and_reports_logprob() {
        let s = Sampler::new(&params(0.0, 0, 1.0, 0.0));
        let mut l = logits();
        let (tok, lp) = s.sample(&mut l, &mut SeqRng::new(0, 0, 0));
        assert_eq!(tok, 0);
        assert!((lp - (0.5f32).ln()).abs() < 1e-6);
    }

    #[test]
    fn frequencies_follow_the_distribution() {
        let h = histogram(&params(1.0, 0, 1.0, 0.0), &logits(), 40_000);
        let expected = [0.5, 0.25, 0.125, 0.0625, 0.0625];
        for (c, e) in h.iter().zip(expected) {
            let f = *c as f64 / 40_000.0;
            assert!((f - e).abs() < 0.01, "{h:?}");
        }
    }

    #[test]
    fn filters_cut_the_tail() {
        assert_eq!(
            &histogram(&params(1.0, 2, 1.0, 0.0), &logits(), 2000)[2..],
            &[0, 0, 0]
        );
        // top-p 0.7: mass 0.5 + 0.25 reaches it, so two tokens survive.
        assert_eq!(
            &histogram(&params(1.0, 0, 0.7, 0.0), &logits(), 2000)[2..],
            &[0, 0, 0]
        );
        // min-p 0.2: tokens under 0.2 × 0.5 = 0.1 go.
        let h = histogram(&params(1.0, 0, 1.0, 0.2), &logits(), 4000);
        assert!(h[2] > 0 && h[3] == 0 && h[4] == 0, "{h:?}");
    }

    #[test]
    fn candidates_are_prefixes_of_the_order_by_probability_walked_by_index() {
        // probs ∝ [1, 8, 1, 4, 2] / 16 (ties at 1 between tokens 0 and 2).
        let l: Vec<f32> = [0.0f32, 3.0, 0.0, 2.0, 1.0]
            .iter()
            .map(|x| x * std::f32::consts::LN_2)
            .collect();
        let kept = |t, k, p, m| Sampler::new(&params(t, k, p, m)).candidates(&l);
        assert_eq!(kept(1.0, 0, 1.0, 0.0), [0, 1, 2, 3, 4]);
        assert_eq!(kept(1.0, 2, 1.0, 0.0), [1, 3]);
        // A cut through a tie keeps the lower index.
        assert_eq!(kept(1.0, 4, 1.0, 0.0), [0, 1, 3, 4]);
        // top-p 0.8: 8 + 4 = 12 < 12.8 ≤ 14.
        assert_eq!(kept(1.0, 0, 0.8, 0.0), [1, 3, 4]);
        // top-p of the top-k's mass (8 + 4 + 2 = 14; 0.8 · 14 = 11.2 ≤ 12).
        assert_eq!(kept(1.0, 3, 0.8, 0.0), [1, 3]);
        // min-p 0.2 of the likeliest's 8/16: 2/16 stays, 1/16 goes.
        assert_eq!(kept(1.0, 0, 1.0, 0.2), [1, 3, 4]);
        // At T = 0.5 the probabilities square: ∝ [1, 64, 1, 16, 4]; min-p 0.2 keeps 64 and 16.
        assert_eq!(kept(0.5, 0, 1.0, 0.2), [1, 3]);

        // The draw walks the survivors in vocabulary order: with top-k 2 ({1: 8, 3: 4}) a
        // uniform below 8/12 picks token 1, above it token 3.
        let s = Sampler::new(&params(1.0, 2, 1.0, 0.0));
        let (mut low, mut high) = (0, 0);
        for seq in 0..200 {
            let mut rng = SeqRng::new(5, seq, 0);
            let u = rng.clone().uniform();
            let (token, _) = s.sample(&mut l.clone(), &mut rng);
            let expected = if u * 12.0 < 8.0 { 1 } else { 3 };
            assert_eq!(token, expected, "uniform {u}");
            match token {
                1 => low += 1,
                _ => high += 1,
            }
        }
        assert!(low > 0 && high > 0, "both sides drawn: {low}, {high}");
    }

    #[test]
    fn seeds_are_independent_streams() {
        let a: Vec<u64> = (0..4).map(|_| SeqRng::new(7, 0, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SeqRng::new(7, 0, 0).next_u64(),
            SeqRng::new(7, 0, 1).next_u64()
        );
        assert_ne!(
            SeqRng::new(7, 0, 0).next_u64(),
            SeqRng::new(8, 0, 0).next_u64()
        );
    }
}
