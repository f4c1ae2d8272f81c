//! Fused CPU kernels with hand-written backward passes, through burn's backend-extension
//! mechanism (`#[backend_extension]`: a kernel on `Flex` primitives plus an `Autodiff`
//! implementation that registers its own backward step).
//!
//! The attention softmax was the largest cost outside gemm in a training step: as burn ops,
//! "add the mask, subtract the row max, exp, sum, divide" and their gradients are about ten
//! passes over the (b, heads, t, s) scores. Removing mask + softmax altogether (an experiment,
//! not a model) took `bench train-step` from 0.31 to 0.27 s. [`masked_softmax`] does the
//! forward in one pass per row (the row stays in L1) and the backward
//! `dx = y ⊙ (dy − Σ dy ⊙ y)` in another.
//!
//! Other backends (wgpu, cuda) take the composed burn ops; the choice is made per call from
//! the tensor's device, so the model code has one path.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Fused operations; implemented for `Flex` and for `Autodiff` over it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// Row softmax of `x + bias` over the last dimension. `x`: (b, m, s) as a flat (b·m, s)
    /// row list, `bias`: (b, t, s) with `m` a multiple of `t`; row `j` of batch `i` adds
    /// `bias[i, j mod t]` (the query heads sharing a kv head are folded into `m`).
    fn masked_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dx = y ⊙ (dy − Σ_row dy ⊙ y)` for `y` = the softmax output.
    fn softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;
}

fn f32_rows(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => {
            std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap_or(&[]).to_vec())
        }
    }
}

/// Rows per parallel task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

impl FusedOps for Flex {
    fn masked_softmax(x: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let dims: Vec<usize> = shape.iter().copied().collect();
        let bdims: Vec<usize> = bias.layout().shape().iter().copied().collect();
        let s = *dims.last().unwrap_or(&1);
        let (b, t) = (bdims[0], bdims[bdims.len() - 2]);
        let xs = f32_rows(&x);
        let bs = f32_rows(&bias);
        let rows = xs.len() / s.max(1);
        let per_batch = rows / b.max(1);
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(s * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (k, y) in chunk.chunks_mut(s).enumerate() {
                    let row = task * ROWS_PER_TASK + k;
                    let (batch, j) = (row / per_batch, (row % per_batch) % t);
                    let xr = &xs[row * s..(row + 1) * s];
                    let br = &bs[(batch * t + j) * s..(batch * t + j + 1) * s];
                    let mut max = f32::NEG_INFINITY;
                    for ((o, &a), &c) in y.iter_mut().zip(xr).zip(br) {
                        *o = a + c;
                        max = max.max(*o);
                    }
                    let mut sum = 0f32;
                    for o in y.iter_mut() {
                        *o = (*o - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    for o in y.iter_mut() {
                        *o *= inv;
                    }
                }
            });
        FlexTensor::from_data(TensorData::new(out, dims))
    }

    fn softmax_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let dims: Vec<usize> = y.layout().shape().iter().copied().collect();
        let s = *dims.last().unwrap_or(&1);
        let ys = f32_rows(&y);
        let gs = f32_rows(&dy);
        let mut out = vec![0f32; ys.len()];
        out.par_chunks_mut(s * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (k, dx) in chunk.chunks_mut(s).enumerate() {
                    let row = task * ROWS_PER_TASK + k;
                    let yr = &ys[row * s..(row + 1) * s];
                    let gr = &gs[row * s..(row + 1) * s];
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for ((d, &a), &g) in dx.iter_mut().zip(yr).zip(gr) {
                        *d = a * (g - dot);
                    }
                }
            });
        FlexTensor::from_data(TensorData::new(out, dims))
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn masked_softmax(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaskedSoftmax;

        impl<B: Backend + FusedOps> Backward<B, 1> for MaskedSoftmax {
            /// The softmax output.
            type State = B::FloatTensorPrimitive;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let y = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                    B::softmax_backward(y, dy)
                });
            }
        }

        let (x, node) = x.into_parts();
        let bias = bias.into_primitive(); // a constant: no gradient flows to the mask
        match MaskedSoftmax
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::masked_softmax(x, bias);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_softmax(x, bias)),
        }
    }

    fn softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        // Only reached through the backward step above, which runs on the inner backend.
        let y = Self::float_detach(y);
        let dot = Self::float_sum_dim(Self::float_mul(y.clone(), dy.clone()), rank::<Self>(&y) - 1);
        Self::float_mul(y, Self::float_sub(dy, dot))
    }
}

fn rank<B: Backend>(t: &FloatTensor<B>) -> usize {
    use burn::backend::TensorMetadata;
    t.shape().num_dims()
}

/// True when tensors on `device` run on the Flex CPU backend (with or without autodiff).
pub fn is_flex(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// `softmax(x + bias)` over the last dimension, `x`: (b, kv, m, s), `bias`: (b, t, s) with `m`
/// a multiple of `t` (see [`FusedOps::masked_softmax`]); fused on Flex, composed elsewhere.
pub fn masked_softmax(x: Tensor<4>, bias: Tensor<3>) -> Tensor<4> {
    if is_flex(&x.device()) {
        let out = <Dispatch as FusedOps>::masked_softmax(x.into_dispatch(), bias.into_dispatch());
        return Tensor::from_dispatch(out);
    }
    let [b, kv, m, s] = x.dims();
    let t = bias.dims()[1];
    let scores = x.reshape([b, kv, m / t, t, s]) + bias.reshape([b, 1, 1, t, s]);
    softmax(scores.reshape([b, kv, m, s]), 3)
}
