//! Next-token (causal LM) loss: the mean negative log-likelihood over real target tokens.

use reasonlab_model::burn::optim::{GradientsAccumulator, GradientsParams};
pub use reasonlab_model::data_parallel_workers;
use reasonlab_model::tensor::{Tensor, TensorData};
use reasonlab_model::{Model, ModelError, TokenBatch};

use rayon::prelude::*;

use crate::optim::AdamW;

/// (b, t − 1) host mask of the targets [`TokenBatch::target_weights`] keeps and, when `loss_mask` is given (row-major (b, t − 1)), marked 1 there (e.g.
/// completion tokens only in SFT); with the number of such targets.
pub fn target_weights(
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<(Vec<f32>, usize), ModelError> {
    let mut mask = batch.target_weights();
    if let Some(m) = loss_mask {
        if m.len() != mask.len() {
            return Err(ModelError::Input(format!(
                "loss mask has {} entries, expected b × (t − 1) = {}",
                m.len(),
                mask.len()
            )));
        }
        for (a, &x) in mask.iter_mut().zip(m) {
            *a *= x;
        }
    }
    let count = mask.iter().filter(|&&x| x != 0.0).count();
    Ok((mask, count))
}

/// Summed NLL over the targets [`target_weights`] selects, with their number. The LM head
/// runs on those targets only ([`Model::token_logprobs_where`]).
pub fn masked_nll_sum(
    model: &Model,
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<(Tensor<1>, usize), ModelError> {
    let (mask, count) = target_weights(batch, loss_mask)?;
    let logp = model.token_logprobs_where(batch, &mask)?; // (b, t-1)
    Ok((weighted_nll(logp, mask, batch), count))
}

/// [`masked_nll_sum`] given the (b, t − 1) log-probs of `batch`.
pub fn nll_sum_from_logprobs(
    logp: Tensor<2>,
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<(Tensor<1>, usize), ModelError> {
    let (mask, count) = target_weights(batch, loss_mask)?;
    Ok((weighted_nll(logp, mask, batch), count))
}

/// `−Σ mask · logp` over `batch`'s (b, t − 1) target grid.
fn weighted_nll(logp: Tensor<2>, mask: Vec<f32>, batch: &TokenBatch) -> Tensor<1> {
    let mask = Tensor::from_data(
        TensorData::new(mask, [batch.b, batch.t - 1]),
        &logp.device(),
    );
    (logp * mask).sum().neg()
}

/// A micro-batch of an optimiser step.
#[derive(Debug, Clone, Copy)]
pub struct MicroBatch<'a> {
    pub batch: &'a TokenBatch,
    pub loss_mask: Option<&'a [f32]>,
}

/// Owned micro-batch pieces: each of `micro` split by rows so that there are at least
/// `workers` pieces when the rows allow it (one batch on two cores becomes two half batches).
fn shard(micro: &[MicroBatch<'_>], workers: usize) -> Vec<(TokenBatch, Option<Vec<f32>>)> {
    let per = workers.div_ceil(micro.len().max(1)).max(1);
    let mut out = Vec::new();
    for m in micro {
        let b = m.batch.b;
        let k = per.min(b).max(1);
        let w = m.batch.t.saturating_sub(1);
        for i in 0..k {
            let (lo, hi) = (i * b / k, (i + 1) * b / k);
            if lo == hi {
                continue;
            }
            let mask = m.loss_mask.map(|l| l[lo * w..hi * w].to_vec());
            out.push((m.batch.rows(lo, hi), mask));
        }
    }
    out
}

/// What [`parallel_gradients`] brings back: the summed gradients (`None` when no piece had a
/// loss), the summed loss values, and each piece's extra output in piece order.
pub struct Gradients<S> {
    pub grads: Option<GradientsParams>,
    pub value: f32,
    pub extras: Vec<S>,
}

/// A piece's scalar loss and extra output, or `None` to skip the piece.
pub type PieceLoss<'a, P, S, E> =
    dyn Fn(&Model, &P) -> Result<Option<(Tensor<1>, S)>, E> + Sync + 'a;

/// One worker's share: its gradients, loss sum and `(piece index, extra)` outputs.
type WorkerShare<S> = (Option<GradientsParams>, f32, Vec<(usize, S)>);

/// The data-parallel backward pass shared by every trainer: `pieces` are spread over
/// [`data_parallel_workers`] workers (worker `w` takes pieces `w, w + workers, …`), each with
/// its own [`Model::fork`] (shared weights, separate autodiff graph); `loss(model, piece)`
/// returns the piece's scalar loss and an extra output, or `None` to skip it. A non-finite loss
/// is summed into `value` but its gradient is not taken. The gradients are summed by parameter
/// id.
///
/// burn's CPU kernels leave most of a small model's step on one core (a second core made the
/// benchmark step only 10% faster), so this is where the second core earns its keep. Workers
/// run inside rayon's pool, so the kernels' own parallel loops are stolen by idle pool threads
/// instead of oversubscribing the cores.
pub fn parallel_gradients<P, S, E>(
    model: &Model,
    pieces: &[P],
    loss: &PieceLoss<'_, P, S, E>,
) -> Result<Gradients<S>, E>
where
    P: Sync,
    S: Send,
    E: From<ModelError> + Send,
{
    let workers = data_parallel_workers(model.device())
        .min(pieces.len())
        .max(1);
    let run = |w: usize, model: &Model| -> Result<WorkerShare<S>, E> {
        let mut accum = GradientsAccumulator::new();
        let (mut value, mut any, mut extras) = (0f32, false, Vec::new());
        for (i, piece) in pieces.iter().enumerate().skip(w).step_by(workers) {
            let Some((l, extra)) = loss(model, piece)? else {
                continue;
            };
            let v = l
                .clone()
                .try_into_scalar::<f32>()
                .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
            value += v;
            extras.push((i, extra));
            if v.is_finite() {
                let grads = l.backward();
                accum.accumulate(&model.net, GradientsParams::from_grads(grads, &model.net));
                any = true;
            }
        }
        Ok((any.then(|| accum.grads()), value, extras))
    };
    let forks: Vec<Model> = (1..workers).map(|_| model.fork()).collect();
    let models: Vec<&Model> = std::iter::once(model).chain(forks.iter()).collect();
    let results: Vec<Result<_, E>> = models
        .par_iter()
        .enumerate()
        .map(|(w, m)| run(w, m))
        .collect();
    let mut accum = GradientsAccumulator::new();
    let (mut value, mut any) = (0f32, false);
    let mut extras: Vec<(usize, S)> = Vec::new();
    for r in results {
        let (grads, v, e) = r?;
        value += v;
        extras.extend(e);
        if let Some(g) = grads {
            accum.accumulate(&model.net, g);
            any = true;
        }
    }
    extras.sort_by_key(|(i, _)| *i);
    Ok(Gradients {
        grads: any.then(|| accum.grads()),
        value,
        extras: extras.into_iter().map(|(_, e)| e).collect(),
    })
}

/// One optimiser step with `grads` (nothing to do without any).
pub fn apply_gradients(
    model: &mut Model,
    optim: &mut AdamW,
    lr: f64,
    grads: Option<GradientsParams>,
) {
    if let Some(grads) = grads {
        model.map_net(|net| optim.step_params(lr, net, grads));
    }
}

/// One optimiser step over several micro-batches with gradient accumulation. The loss is the
/// mean NLL over all their targets (token-weighted, so the split into micro-batches does not
/// change it). A non-finite loss leaves the model untouched. Returns `(loss, applied)`.
///
/// The micro-batches go through [`parallel_gradients`], split by rows when there are fewer
/// micro-batches than workers.
pub fn accumulated_step(
    model: &mut Model,
    optim: &mut AdamW,
    lr: f64,
    micro: &[MicroBatch<'_>],
) -> Result<(f32, bool), ModelError> {
    let mut total = 0usize;
    for m in micro {
        total += target_weights(m.batch, m.loss_mask)?.1;
    }
    let pieces = shard(micro, data_parallel_workers(model.device()));
    let g = parallel_gradients(model, &pieces, &|model: &Model,
                                                 (batch, mask): &(
        TokenBatch,
        Option<Vec<f32>>,
    )| {
        let (sum, count) = masked_nll_sum(model, batch, mask.as_deref())?;
        Ok::<_, ModelError>((count > 0).then(|| (sum.div_scalar(total as f32), ())))
    })?;
    if !g.value.is_finite() {
        return Ok((g.value, false));
    }
    apply_gradients(model, optim, lr, g.grads);
    Ok((g.value, true))
}

/// Mean NLL over the targets [`masked_nll_sum`] counts.
pub fn causal_lm_loss(
    model: &Model,
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<Tensor<1>, ModelError> {
    let (sum, count) = masked_nll_sum(model, batch, loss_mask)?;
    Ok(sum.div_scalar(count.max(1) as f32))
}

/// One optimiser step of causal-LM training ([`accumulated_step`] on one batch, so it is
/// data-parallel too); returns the loss before the step.
pub fn lm_train_step(
    model: Model,
    batch: &TokenBatch,
    optim: &mut AdamW,
    lr: f64,
) -> Result<(Model, f32), ModelError> {
    let mut model = model;
    let micro = [MicroBatch {
        batch,
        loss_mask: None,
    }];
    let (value, _) = accumulated_step(&mut model, optim, lr, &micro)?;
    Ok((model, value))
}

/// Consecutive optimiser steps skipped for a non-finite loss (the NaN/Inf guard every trainer
/// shares).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BadSteps(usize);

impl BadSteps {
    /// Record `step`: applied, or skipped (logged). `Err(n)` once `max` steps in a row were
    /// skipped: the run has diverged.
    pub fn record(&mut self, applied: bool, step: usize, max: usize) -> Result<(), usize> {
        if applied {
            self.0 = 0;
            return Ok(());
        }
        tracing::warn!(step, "non-finite loss; step skipped");
        self.0 += 1;
        if self.0 >= max { Err(self.0) } else { Ok(()) }
    }
}

/// Whether held-out metrics are due after `step`: every `every` steps (0: never) and at the end.
pub fn eval_due(step: usize, every: usize, done: bool) -> bool {
    (every > 0 && step.is_multiple_of(every)) || done
}

#[cfg(test)]
mod bad_step_tests {
    use super::*;

    #[test]
    fn a_run_diverges_after_max_skipped_steps_in_a_row() {
        let mut b = BadSteps::default();
        assert_eq!(b.record(false, 1, 3), Ok(()));
        assert_eq!(b.record(false, 2, 3), Ok(()));
        assert_eq!(
            b.record(true, 3, 3),
            Ok(()),
            "an applied step resets the count"
        );
        assert_eq!(b.record(false, 4, 3), Ok(()));
        assert_eq!(b.record(false, 5, 3), Ok(()));
        assert_eq!(b.record(false, 6, 3), Err(3));
        assert!(eval_due(10, 5, false) && !eval_due(11, 5, false) && eval_due(11, 0, true));
        assert!(!eval_due(10, 0, false));
    }
}
