//! Next-token (causal LM) loss: the mean negative log-likelihood over real target tokens.

use reasonlab_model::burn::optim::{GradientsAccumulator, GradientsParams};
use reasonlab_model::tensor::{Tensor, TensorData};
use reasonlab_model::{Model, ModelError, TokenBatch};

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

/// Summed NLL over the targets [`target_weights`] selects, with their number.
pub fn masked_nll_sum(
    model: &Model,
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<(Tensor<1>, usize), ModelError> {
    let logp = model.token_logprobs(batch)?; // (b, t-1)
    nll_sum_from_logprobs(logp, batch, loss_mask)
}

/// [`masked_nll_sum`] given the (b, t − 1) log-probs of `batch`.
pub fn nll_sum_from_logprobs(
    logp: Tensor<2>,
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<(Tensor<1>, usize), ModelError> {
    let (mask, count) = target_weights(batch, loss_mask)?;
    let mask = Tensor::from_data(
        TensorData::new(mask, [batch.b, batch.t - 1]),
        &logp.device(),
    );
    Ok(((logp * mask).sum().neg(), count))
}

/// A micro-batch of an optimiser step.
#[derive(Debug, Clone, Copy)]
pub struct MicroBatch<'a> {
    pub batch: &'a TokenBatch,
    pub loss_mask: Option<&'a [f32]>,
}

/// One optimiser step over several micro-batches with gradient accumulation. The loss is the
/// mean NLL over all their targets (token-weighted, so the split into micro-batches does not
/// change it). A non-finite loss leaves the model untouched. Returns `(loss, applied)`.
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
    let mut accum = GradientsAccumulator::new();
    let mut value = 0f32;
    for m in micro {
        let (sum, count) = masked_nll_sum(model, m.batch, m.loss_mask)?;
        if count == 0 {
            continue;
        }
        let loss = sum.div_scalar(total as f32);
        value += loss
            .clone()
            .try_into_scalar::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        let grads = loss.backward();
        accum.accumulate(&model.net, GradientsParams::from_grads(grads, &model.net));
    }
    if !value.is_finite() {
        return Ok((value, false));
    }
    let net = model.net.clone();
    model.net = optim.step_params(lr, net, accum.grads());
    Ok((value, true))
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

/// One optimiser step of causal-LM training; returns the loss before the step.
pub fn lm_train_step(
    model: Model,
    batch: &TokenBatch,
    optim: &mut AdamW,
    lr: f64,
) -> Result<(Model, f32), ModelError> {
    let loss = causal_lm_loss(&model, batch, None)?;
    let value = loss
        .clone()
        .try_into_scalar::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
    let grads = loss.backward();
    let mut model = model;
    model.net = optim.step(lr, model.net, grads);
    Ok((model, value))
}
