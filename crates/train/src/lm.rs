//! Next-token (causal LM) loss: the mean negative log-likelihood over real target tokens.

use reasonlab_model::tensor::{Tensor, TensorData};
use reasonlab_model::{Model, ModelError, TokenBatch};

use crate::optim::AdamW;

/// Mean NLL over positions whose target is real and, when `loss_mask` is given (row-major
/// (b, t − 1)), marked 1 there (e.g. completion tokens only in SFT).
pub fn causal_lm_loss(
    model: &Model,
    batch: &TokenBatch,
    loss_mask: Option<&[f32]>,
) -> Result<Tensor<1>, ModelError> {
    let logp = model.token_logprobs(batch)?; // (b, t-1)
    let mut mask = model.target_mask(batch);
    if let Some(m) = loss_mask {
        if m.len() != batch.b * (batch.t - 1) {
            return Err(ModelError::Input(format!(
                "loss mask has {} entries, expected b × (t − 1) = {}",
                m.len(),
                batch.b * (batch.t - 1)
            )));
        }
        let extra = Tensor::from_data(
            TensorData::new(m.to_vec(), [batch.b, batch.t - 1]),
            model.device(),
        );
        mask = mask * extra;
    }
    let denom = mask.clone().sum().clamp_min(1.0);
    Ok((logp * mask).sum().neg() / denom)
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
