//! Where a decode step's tokens are chosen: on the host, from the logits read back, or on the
//! device, reading back one id (and one log-prob) per sequence.
//!
//! On a GPU backend a step's logits are (rows, vocab) floats: for 128 sequences at Qwen2.5's
//! 151,936-token vocabulary, 78 MB of f32 to read back and, on the host, 19 M exponentials to
//! draw from, on one thread. Three settings need none of that:
//!
//! - **greedy** (temperature 0): the row's argmax, the first maximum as on the host;
//! - **plain draws** (a temperature, no top-k, top-p or min-p filter): the host's own draw,
//!   done on the device. The host draws by inverse CDF in vocabulary order with one uniform per
//!   sequence and token from the sequence's stream; the device takes that same uniform, so the
//!   same seed picks the same token on either, except where the uniform falls within float
//!   rounding of the boundary between two tokens (the device sums in f32, the host in f64);
//! - **filtered draws** (top-k, top-p, min-p) where the fused GPU kernels run: the same draw
//!   among the tokens the filters keep (below).
//!
//! Where the fused GPU kernels run, a draw is one kernel ([`reasonlab_model::fused::sample`]).
//! Otherwise ([`draw`], burn's ops) the inverse CDF is two-level, because burn's GPU `cumsum`
//! runs one thread per output summing its whole prefix (quadratic in the row length): the
//! row's weights `exp((logit − max) / T)` are cut into `chunks` of `len ≈ √vocab`, the chunk
//! whose cumulative sum first exceeds `u · total` is found from the (rows, chunks) prefix sums,
//! then the token inside it from that chunk's (rows, len) prefix sums.
//!
//! Filtered draws (top-k, top-p, min-p) keep a prefix of the tokens ordered by probability
//! (then index) and draw among them in vocabulary order, on the host as on the device. Where
//! the fused GPU kernels run, one kernel per row finds that prefix by bisection over the order
//! without sorting ([`reasonlab_model::fused::filter_logits`]) and sets the others' logits to
//! −3e38 (f16: −65,504), and the draw kernel takes the rest; elsewhere the logits are read back.

use reasonlab_model::burn::tensor::ops::PadMode;
use reasonlab_model::burn::tensor::{DType, FloatDType, TensorData};
use reasonlab_model::tensor::{Device, Int, Tensor};

use reasonlab_model::fused;

use crate::{GenerateError, SamplingParams};

/// Where a step's tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pick {
    /// Read the logits back; the host's [`crate::Sampler`] draws.
    Host,
    /// The device takes each row's argmax.
    Greedy,
    /// The device draws at `1 / inv_temperature` with a uniform per row from the host.
    Draw { inv_temperature: f32 },
    /// As [`Pick::Draw`], among the tokens the filters keep (see
    /// [`reasonlab_model::fused::filter_logits`]).
    Filtered {
        inv_temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
    },
}

impl Pick {
    /// On the device on a GPU backend: greedy and plain draws always, filtered draws where
    /// the fused kernels run ([`reasonlab_model::fused::fuses_sampling`]); on the host on
    /// flex (its logits are host memory already) and for filtered draws elsewhere.
    pub(crate) fn for_params(params: &SamplingParams, device: &Device) -> Self {
        let inv_temperature = 1.0 / params.temperature;
        if reasonlab_model::fused::is_flex(device) {
            Pick::Host
        } else if params.temperature == 0.0 {
            Pick::Greedy
        } else if params.top_k == 0 && params.top_p >= 1.0 && params.min_p <= 0.0 {
            Pick::Draw { inv_temperature }
        } else if reasonlab_model::fused::fuses_sampling(device) {
            Pick::Filtered {
                inv_temperature,
                top_k: params.top_k,
                top_p: params.top_p,
                min_p: params.min_p,
            }
        } else {
            Pick::Host
        }
    }

    /// Whether each row needs a uniform drawn before the step is read.
    pub(crate) fn needs_uniforms(self) -> bool {
        matches!(self, Pick::Draw { .. } | Pick::Filtered { .. })
    }
}

/// What a step hands the sequences: every row's logits, or the tokens the device picked and,
/// when asked, their log-probs.
pub(crate) enum Next {
    /// (rows, vocab) row-major.
    Logits(Vec<f32>),
    /// One id per row; `logps` is empty unless log-probs were asked for.
    Picked { ids: Vec<u32>, logps: Vec<f32> },
}

/// A step's picks on the device: one token id per row, as the kernel that chose it writes
/// it, and, when asked, each one's log-prob (rows).
pub(crate) struct Picked {
    pub(crate) ids: DeviceIds,
    pub(crate) logps: Option<Tensor<1>>,
}

/// Token ids on the device: the draw kernel writes them as floats (exact below 2²⁴), an
/// argmax as integers.
pub(crate) enum DeviceIds {
    Float(Tensor<1>),
    Int(Tensor<1, Int>),
}

impl Picked {
    /// The ids as the next step's input.
    pub(crate) fn next_ids(&self) -> Tensor<1, Int> {
        match &self.ids {
            DeviceIds::Float(ids) => ids.clone().int(),
            DeviceIds::Int(ids) => ids.clone(),
        }
    }

    /// Rows `rows` (in that order) of the picks, on the device.
    pub(crate) fn select(self, rows: &[usize]) -> Self {
        let idx = row_index(
            rows,
            &match &self.ids {
                DeviceIds::Float(t) => t.device(),
                DeviceIds::Int(t) => t.device(),
            },
        );
        Self {
            ids: match self.ids {
                DeviceIds::Float(t) => DeviceIds::Float(t.select(0, idx.clone())),
                DeviceIds::Int(t) => DeviceIds::Int(t.select(0, idx.clone())),
            },
            logps: self.logps.map(|l| l.select(0, idx)),
        }
    }

    /// Queue the reads of the ids and log-probs ([`fused::ReadAhead`]): their copies go ahead
    /// of whatever is launched next.
    pub(crate) fn read_ahead(&self) -> fused::ReadAhead {
        let ids = match &self.ids {
            DeviceIds::Float(t) => t.clone(),
            DeviceIds::Int(t) => t.clone().float(),
        };
        fused::ReadAhead::new(std::iter::once(ids).chain(self.logps.clone()).collect())
    }
}

/// `rows` as an index tensor on `device`, for `select` along the rows.
pub(crate) fn row_index(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), device)
}

/// The tokens of a [`Picked::read_ahead`], once read: ids and (possibly empty) log-probs.
pub(crate) fn collect(read: fused::ReadAhead) -> Result<Next, GenerateError> {
    let mut values = read
        .wait()
        .map_err(|e| GenerateError::Backend(e.to_string()))?
        .into_iter();
    let ids = values.next().unwrap_or_default();
    Ok(Next::Picked {
        ids: ids.into_iter().map(|t| t as u32).collect(),
        logps: values.next().unwrap_or_default(),
    })
}

/// Each row's token as `pick` (not [`Pick::Host`]) chooses it, left on the device with, when
/// `logprobs`, its log-prob under the unfiltered temperature-1 distribution. `uniforms` holds
/// one uniform in [0, 1) per row for the draws.
pub(crate) fn pick_on_device(
    logits: Tensor<2>,
    pick: Pick,
    logprobs: bool,
    uniforms: &[f64],
) -> Result<Picked, GenerateError> {
    let rows = logits.dims()[0];
    // Draws in one kernel per step where the fused GPU kernels run (two with a filter), in
    // the logits' own type.
    let fused = match pick {
        Pick::Draw { inv_temperature } => {
            fused::sample(logits.clone(), None, uniforms, inv_temperature, logprobs)
        }
        Pick::Filtered {
            inv_temperature,
            top_k,
            top_p,
            min_p,
        } => {
            let kept = fused::filter_logits(logits.clone(), inv_temperature, top_k, top_p, min_p);
            let kept =
                kept.ok_or_else(|| GenerateError::Backend("no filter kernel here".into()))?;
            // The log-probs are the unfiltered distribution's, as on the host.
            fused::sample(
                logits.clone(),
                Some(kept),
                uniforms,
                inv_temperature,
                logprobs,
            )
        }
        _ => None,
    };
    if let Some((tokens, logps)) = fused {
        return Ok(Picked {
            ids: DeviceIds::Float(tokens.reshape([rows])),
            logps: logprobs.then(|| logps.reshape([rows])),
        });
    }
    let logits = match logits.dtype() {
        DType::F32 => logits,
        _ => logits.cast(FloatDType::F32),
    };
    let (ids, logps) = match pick {
        Pick::Draw { inv_temperature } => draw(logits, uniforms, inv_temperature, logprobs),
        Pick::Host | Pick::Filtered { .. } => {
            // `Pick::for_params` filters on the device only where fused; the host reads logits.
            return Err(GenerateError::Backend(
                "filtered draws on the device need the fused GPU kernels".into(),
            ));
        }
        Pick::Greedy => {
            let ids = logits.clone().argmax(1); // (rows, 1)
            // One kernel where the fused GPU kernels run, a log-softmax and a gather elsewhere.
            let logps = logprobs.then(|| {
                let targets = ids.clone().reshape([rows]);
                fused::token_logprobs(logits, targets, false)
                    .0
                    .reshape([rows, 1])
            });
            (ids, logps)
        }
    };
    Ok(Picked {
        ids: DeviceIds::Int(ids.reshape([rows])),
        logps: logps.map(|l| l.reshape([rows])),
    })
}

impl Next {
    /// Rows `rows` (in that order) of a step's picks; logits as they are.
    pub(crate) fn rows(self, rows: &[usize]) -> Self {
        match self {
            Next::Picked { ids, logps } => Next::Picked {
                ids: rows.iter().map(|&r| ids[r]).collect(),
                logps: match logps.is_empty() {
                    true => logps,
                    false => rows.iter().map(|&r| logps[r]).collect(),
                },
            },
            logits => logits,
        }
    }
}

/// Read a step's (rows, vocab) logits back as `pick` says: whole, or the device's choice per
/// row with, when `logprobs`, its log-prob under the unfiltered temperature-1 distribution.
/// `uniforms` holds one uniform in [0, 1) per row for [`Pick::Draw`].
pub(crate) fn read_step(
    logits: Tensor<2>,
    pick: Pick,
    logprobs: bool,
    uniforms: &[f64],
) -> Result<Next, GenerateError> {
    let backend = |e| GenerateError::Backend(format!("{e:?}"));
    if pick == Pick::Host {
        return Ok(Next::Logits(
            logits.try_into_vec_as::<f32>().map_err(backend)?,
        ));
    }
    let picked = pick_on_device(logits, pick, logprobs, uniforms)?;
    let logps = match picked.logps {
        Some(l) => l.try_into_vec_as::<f32>().map_err(backend)?,
        None => Vec::new(),
    };
    let ids: Vec<u32> = match picked.ids {
        DeviceIds::Float(t) => (t.try_into_vec_as::<f32>().map_err(backend)?)
            .into_iter()
            .map(|t| t as u32)
            .collect(),
        DeviceIds::Int(t) => (t.try_into_vec_as::<i64>().map_err(backend)?)
            .into_iter()
            .map(|i| i as u32)
            .collect(),
    };
    Ok(Next::Picked { ids, logps })
}

/// Inverse-CDF draws from f32 `logits` (rows, vocab) at temperature `1 / inv_temperature`, row
/// `r` with `uniforms[r]`: the first token whose cumulative weight exceeds `u · total`. Returns
/// the tokens (rows, 1) and, when `logprobs`, their temperature-1 log-probs (rows, 1).
pub(crate) fn draw(
    logits: Tensor<2>,
    uniforms: &[f64],
    inv_temperature: f32,
    logprobs: bool,
) -> (Tensor<2, Int>, Option<Tensor<2>>) {
    let device = logits.device();
    let [rows, vocab] = logits.dims();
    debug_assert_eq!(uniforms.len(), rows);
    let max = logits.clone().max_dim(1); // (rows, 1)
    let shifted = logits.clone() - max.clone().expand([rows, vocab]);
    let weights = match inv_temperature == 1.0 {
        true => shifted.clone().exp(),
        false => shifted.clone().mul_scalar(inv_temperature).exp(),
    }; // (rows, vocab)
    let len = chunk_len(vocab);
    let chunks = vocab.div_ceil(len);
    let weights = match chunks * len - vocab {
        0 => weights,
        pad => weights.pad([(0, pad)], PadMode::Constant(0.0)),
    }
    .reshape([rows, chunks, len]);
    let sums = weights.clone().sum_dim(2).reshape([rows, chunks]);
    let cdf = sums.clone().cumsum(1); // (rows, chunks)
    let total = cdf.clone().slice([0..rows, chunks - 1..chunks]); // (rows, 1)
    let u: Vec<f32> = uniforms.iter().map(|&u| u as f32).collect();
    let target = total.clone() * Tensor::<2>::from_data(TensorData::new(u, [rows, 1]), &device);
    let chunk = first_above(cdf.clone(), target.clone(), total.clone()); // (rows, 1)
    let before = cdf.gather(1, chunk.clone()) - sums.gather(1, chunk.clone());
    let inner = weights
        .gather(
            1,
            chunk.clone().reshape([rows, 1, 1]).expand([rows, 1, len]),
        )
        .reshape([rows, len])
        .cumsum(1); // (rows, len)
    let inner_total = inner.clone().slice([0..rows, len - 1..len]);
    // `before` is `cdf[c] − sums[c]` in f32, which can round above `cdf[c − 1] ≤ target`: a
    // negative rest would pick the chunk's first token whatever its weight, so it stops at 0
    // (where the leading tokens without weight are skipped).
    let rest = (target - before).clamp_min(0.0);
    let within = first_above(inner, rest, inner_total);
    let ids = chunk.mul_scalar(len as i64) + within;
    let logps = logprobs.then(|| {
        let sum = match inv_temperature == 1.0 {
            true => total,
            false => shifted.exp().sum_dim(1),
        };
        logits.gather(1, ids.clone()) - max - sum.log()
    });
    (ids, logps)
}

/// Per row, the index of the first entry of the non-decreasing `cdf` (rows, n) above `x`
/// (rows, 1): the count of entries ≤ `x`, capped at the first entry that reaches the row's
/// `last` value (rounding can put `x` at or past it; entries beyond have no weight).
fn first_above(cdf: Tensor<2>, x: Tensor<2>, last: Tensor<2>) -> Tensor<2, Int> {
    let shape = cdf.shape();
    let at_or_below = cdf
        .clone()
        .lower_equal(x.expand(shape.clone()))
        .int()
        .sum_dim(1);
    let live = cdf.lower(last.expand(shape)).int().sum_dim(1);
    at_or_below.min_pair(live)
}

/// Chunk length of the two-level draw, ⌈√vocab⌉, so both levels' prefix sums stay short
/// (151,936 tokens: 390 chunks of 390).
fn chunk_len(vocab: usize) -> usize {
    (vocab as f64).sqrt().ceil().max(1.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sampler, SeqRng};

    /// Logits with a few likely tokens and a long tail, like a language model's.
    fn lm_like(rows: usize, vocab: usize, seed: u64) -> Vec<f32> {
        let mut rng = SeqRng::new(seed, 0, 0);
        (0..rows * vocab)
            .map(|i| {
                let g = rng.uniform() as f32;
                if i % 97 == 3 {
                    8.0 + 4.0 * g
                } else {
                    10.0 * g - 5.0
                }
            })
            .collect()
    }

    /// The device draw (run here on flex) takes the token the host's sampler takes for the
    /// same uniform, and reports the same log-prob.
    fn matches_the_host(vocab: usize, temperature: f32) {
        let rows = 64;
        let logits = lm_like(rows, vocab, vocab as u64);
        let params = SamplingParams {
            temperature,
            ..Default::default()
        };
        let sampler = Sampler::new(&params);
        let mut host = Vec::new();
        let mut uniforms = Vec::new();
        for r in 0..rows {
            let mut rng = SeqRng::new(7, r as u64, 0);
            uniforms.push(rng.clone().uniform());
            let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
            host.push(sampler.sample(&mut row, &mut rng));
        }
        let t = Tensor::<2>::from_data(TensorData::new(logits, [rows, vocab]), &Device::flex());
        let (ids, logps) = draw(t, &uniforms, 1.0 / temperature, true);
        let ids = ids.try_into_vec_as::<i64>().unwrap();
        let logps = logps.unwrap().try_into_vec_as::<f32>().unwrap();
        for (r, &(token, logp)) in host.iter().enumerate() {
            assert_eq!(
                ids[r], token as i64,
                "row {r} of vocab {vocab} at T {temperature}"
            );
            assert!(
                (logps[r] - logp).abs() < 1e-4,
                "row {r}: log-prob {} against the host's {logp}",
                logps[r]
            );
        }
    }

    #[test]
    fn the_device_draw_takes_the_hosts_token() {
        for vocab in [1, 2, 5, 97, 1000, 4099] {
            matches_the_host(vocab, 1.0);
            matches_the_host(vocab, 0.6);
        }
    }

    #[test]
    fn extreme_uniforms_pick_live_tokens() {
        // Weight only on tokens 2 and 6 of 10 (3 chunks of 4, the last padded by 2 zeros).
        let mut l = [-1e4f32; 10];
        l[2] = 0.0;
        l[6] = 0.0;
        let logits = Tensor::<2>::from_data(TensorData::new(l.repeat(3), [3, 10]), &Device::flex());
        let (ids, _) = draw(logits, &[0.0, 0.4999, 1.0 - 1e-12], 1.0, false);
        assert_eq!(ids.try_into_vec_as::<i64>().unwrap(), vec![2, 2, 6]);
    }

    #[test]
    fn chunks_cover_the_vocabulary() {
        for vocab in [1, 2, 3, 10, 151_936] {
            let len = chunk_len(vocab);
            assert!(len * vocab.div_ceil(len) >= vocab);
            assert!(
                len * len >= vocab && (len - 1) * (len - 1) < vocab,
                "{vocab}"
            );
        }
    }
}
