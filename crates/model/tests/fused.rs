//! The fused masked softmax equals the composed burn ops, forward and backward.

use burn::tensor::activation::softmax;
use reasonlab_model::burn;
use reasonlab_model::fused::masked_softmax;
use reasonlab_model::tensor::{Device, Tensor, TensorData};

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0
        })
        .collect()
}

#[test]
fn fused_masked_softmax_matches_composed_ops_and_their_gradient() {
    let device = Device::flex().autodiff();
    let (b, kv, rep, t, s) = (2, 2, 3, 4, 5);
    let m = rep * t;
    let x_data = data(b * kv * m * s, 7);
    let w = Tensor::<4>::from_data(
        TensorData::new(data(b * kv * m * s, 99), [b, kv, m, s]),
        &device,
    );
    // Causal mask with a padded first key in batch 1 (additive −1e30 as the model uses).
    let mut bias = vec![0f32; b * t * s];
    for bi in 0..b {
        for i in 0..t {
            for j in 0..s {
                if j > i + (s - t) || (bi == 1 && j == 0) {
                    bias[(bi * t + i) * s + j] = -1.0e30;
                }
            }
        }
    }
    let bias = Tensor::<3>::from_data(TensorData::new(bias, [b, t, s]), &device);
    let run = |fused: bool| {
        let x = Tensor::<4>::from_data(TensorData::new(x_data.clone(), [b, kv, m, s]), &device)
            .require_grad();
        let y = if fused {
            masked_softmax(x.clone(), bias.clone())
        } else {
            let sc = x.clone().reshape([b, kv, rep, t, s]) + bias.clone().reshape([b, 1, 1, t, s]);
            softmax(sc.reshape([b, kv, m, s]), 3)
        };
        let loss = (y.clone() * w.clone()).sum();
        let grads = loss.backward();
        let g = x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        (y.try_into_vec_as::<f32>().unwrap(), g)
    };
    let (yf, gf) = run(true);
    let (yc, gc) = run(false);
    let worst = |a: &[f32], c: &[f32]| {
        a.iter()
            .zip(c)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        worst(&yf, &yc) < 1e-6,
        "forward differs by {}",
        worst(&yf, &yc)
    );
    assert!(
        worst(&gf, &gc) < 1e-5,
        "gradient differs by {}",
        worst(&gf, &gc)
    );
    assert!(
        gf.iter().any(|g| g.abs() > 1e-3),
        "gradient is not trivially zero"
    );
}

fn grads_of<const D: usize>(
    inputs: &[(Vec<f32>, [usize; D])],
    device: &Device,
    f: impl Fn(&[Tensor<D>]) -> Tensor<D>,
    w: &Tensor<D>,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let xs: Vec<Tensor<D>> = inputs
        .iter()
        .map(|(v, shape)| {
            Tensor::<D>::from_data(TensorData::new(v.clone(), *shape), device).require_grad()
        })
        .collect();
    let y = f(&xs);
    let loss = (y.clone() * w.clone()).sum();
    let grads = loss.backward();
    let g = xs
        .iter()
        .map(|x| x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap())
        .collect();
    (y.try_into_vec_as::<f32>().unwrap(), g)
}

fn worst(a: &[f32], c: &[f32]) -> f32 {
    assert_eq!(a.len(), c.len());
    a.iter()
        .zip(c)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

#[test]
fn fused_swiglu_matches_composed_ops_and_their_gradient() {
    use reasonlab_model::fused::swiglu;
    let device = Device::flex().autodiff();
    let shape = [2, 3, 40_000]; // several parallel chunks
    let n = shape.iter().product();
    let w = Tensor::<3>::from_data(TensorData::new(data(n, 5), shape), &device);
    let inputs = [(data(n, 1), shape), (data(n, 2), shape)];
    let (yf, gf) = grads_of(&inputs, &device, |x| swiglu(x[0].clone(), x[1].clone()), &w);
    let (yc, gc) = grads_of(
        &inputs,
        &device,
        |x| burn::tensor::activation::silu(x[0].clone()) * x[1].clone(),
        &w,
    );
    assert!(worst(&yf, &yc) < 1e-5, "forward {}", worst(&yf, &yc));
    for i in 0..2 {
        assert!(
            worst(&gf[i], &gc[i]) < 1e-5,
            "grad {i}: {}",
            worst(&gf[i], &gc[i])
        );
    }
}

#[test]
fn fused_rms_norm_matches_composed_ops_and_their_gradient() {
    use reasonlab_model::fused::rms_norm;
    let device = Device::flex().autodiff();
    // 4-D as Qwen3's per-head q/k norm uses it; 70 rows of 16 span several parallel tasks.
    let shape = [2, 5, 7, 16];
    let n: usize = shape.iter().product();
    let x_data = data(n, 3);
    let w_data = data(16, 4);
    let wout = Tensor::<4>::from_data(TensorData::new(data(n, 9), shape), &device);
    let eps = 1e-6;
    let run = |fused: bool| {
        let x =
            Tensor::<4>::from_data(TensorData::new(x_data.clone(), shape), &device).require_grad();
        let wt =
            Tensor::<1>::from_data(TensorData::new(w_data.clone(), [16]), &device).require_grad();
        let y = if fused {
            rms_norm(x.clone(), wt.clone(), eps)
        } else {
            let var = x.clone().square().mean_dim(3);
            x.clone() * (var + eps).sqrt().recip() * wt.clone().unsqueeze::<4>()
        };
        let grads = (y.clone() * wout.clone()).sum().backward();
        (
            y.try_into_vec_as::<f32>().unwrap(),
            x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
            wt.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
        )
    };
    let (yf, dxf, dwf) = run(true);
    let (yc, dxc, dwc) = run(false);
    assert!(worst(&yf, &yc) < 1e-5, "forward {}", worst(&yf, &yc));
    assert!(worst(&dxf, &dxc) < 1e-4, "dx {}", worst(&dxf, &dxc));
    assert!(worst(&dwf, &dwc) < 1e-4, "dw {}", worst(&dwf, &dwc));
}

/// The fused matmul (burn's gemm call into a recycled buffer) gives exactly burn's results,
/// forward and backward: contiguous operands, a transposed view, sizes below and above gemm's
/// parallel threshold, and a frozen weight (no gradient asked for it, as for a LoRA base).
#[test]
fn fused_matmul_equals_burns_matmul_and_its_gradient() {
    use reasonlab_model::fused::matmul;
    let device = Device::flex().autodiff();
    for (m, k, n) in [(5, 7, 3), (256, 256, 160)] {
        let w_out = Tensor::<2>::from_data(TensorData::new(data(m * n, 9), [m, n]), &device);
        let inputs = [(data(m * k, 1), [m, k]), (data(k * n, 2), [k, n])];
        let (yf, gf) = grads_of(
            &inputs,
            &device,
            |x| matmul(x[0].clone(), x[1].clone()),
            &w_out,
        );
        let (yc, gc) = grads_of(
            &inputs,
            &device,
            |x| x[0].clone().matmul(x[1].clone()),
            &w_out,
        );
        assert!(yf.iter().any(|v| v.abs() > 1e-3));
        assert_eq!(yf, yc, "forward {m}x{k}x{n}");
        assert_eq!(gf, gc, "gradients {m}x{k}x{n}");

        // x given as a transposed (k, m) view; the weight frozen.
        let xt =
            Tensor::<2>::from_data(TensorData::new(data(m * k, 3), [k, m]), &device).require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(data(k * n, 4), [k, n]), &device);
        let run = |fused: bool| {
            let x = xt.clone().transpose();
            let y = if fused {
                matmul(x, w.clone())
            } else {
                x.matmul(w.clone())
            };
            let grads = (y.clone() * w_out.clone()).sum().backward();
            assert!(w.grad(&grads).is_none());
            (
                y.try_into_vec_as::<f32>().unwrap(),
                xt.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
            )
        };
        assert_eq!(run(true), run(false), "transposed view {m}x{k}x{n}");
    }
}

/// The LM head's log-probabilities in chunks equal the logits formed whole and put through
/// log-softmax: log-probs, entropies and the gradients of the hidden states and the head's
/// weight, for an untied head and a tied one (the embedding's transposed view), several chunks
/// with a shorter last one and a single chunk, a frozen weight; a target outside the
/// vocabulary gets −3e38.
#[test]
fn fused_head_logprobs_match_the_composed_ops_and_their_gradients() {
    use reasonlab_model::fused::{composed, head_logprobs_in_chunks};
    use reasonlab_model::tensor::Int;
    let device = Device::flex().autodiff();
    let (rows, hidden) = (37, 24);
    let out = Tensor::<1>::from_data(TensorData::new(data(rows, 11), [rows]), &device);
    for vocab in [97, 700] {
        let targets: Vec<i64> = (0..rows as i64)
            .map(|i| match i {
                0 => 0,
                1 => vocab as i64 - 1,
                _ => (i * 31) % vocab as i64,
            })
            .collect();
        let ids = || Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &device);
        let x_data: Vec<f32> = data(rows * hidden, 5).iter().map(|v| v * 0.2).collect();
        let w_data = data(hidden * vocab, 6);
        for (tied, frozen, chunk) in [
            (false, false, 8),
            (true, false, 8),
            (false, false, 64),
            (true, true, 16),
        ] {
            let run = |fused: bool| {
                let x = Tensor::<2>::from_data(
                    TensorData::new(x_data.clone(), [rows, hidden]),
                    &device,
                )
                .require_grad();
                let shape = if tied {
                    [vocab, hidden]
                } else {
                    [hidden, vocab]
                };
                let mut w0 =
                    Tensor::<2>::from_data(TensorData::new(w_data.clone(), shape), &device);
                if !frozen {
                    w0 = w0.require_grad();
                }
                let w = if tied {
                    w0.clone().transpose()
                } else {
                    w0.clone()
                };
                let (lp, ent) = match fused {
                    true => head_logprobs_in_chunks(x.clone(), w, ids(), true, chunk),
                    false => composed::head_logprobs(x.clone(), w, ids(), true),
                };
                let grads = (lp.clone() * out.clone()).sum().backward();
                let dw = w0.grad(&grads).map(|g| g.try_into_vec_as::<f32>().unwrap());
                assert_eq!(dw.is_none(), frozen);
                (
                    lp.try_into_vec_as::<f32>().unwrap(),
                    ent.unwrap().try_into_vec_as::<f32>().unwrap(),
                    x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
                    dw.unwrap_or_default(),
                )
            };
            let (lf, ef, dxf, dwf) = run(true);
            let (lc, ec, dxc, dwc) = run(false);
            let case = format!("vocab {vocab}, tied {tied}, frozen {frozen}, chunk {chunk}");
            assert!(
                lc.iter().all(|v| *v < 0.0 && *v > -30.0),
                "{case}: log-probs {lc:?}"
            );
            assert!(
                worst(&lf, &lc) < 2e-5,
                "{case}: log-probs {}",
                worst(&lf, &lc)
            );
            assert!(
                worst(&ef, &ec) < 2e-5,
                "{case}: entropies {}",
                worst(&ef, &ec)
            );
            assert!(
                dxc.iter().any(|g| g.abs() > 1e-2),
                "{case}: dx is not trivially zero"
            );
            assert!(worst(&dxf, &dxc) < 1e-5, "{case}: dx {}", worst(&dxf, &dxc));
            assert!(worst(&dwf, &dwc) < 1e-5, "{case}: dw {}", worst(&dwf, &dwc));
        }
    }
    // A target past the vocabulary: the GPU kernel's −3e38 (no gather to panic).
    let x = Tensor::<2>::from_data(TensorData::new(data(2 * 4, 1), [2, 4]), &device);
    let w = Tensor::<2>::from_data(TensorData::new(data(4 * 9, 2), [4, 9]), &device);
    let t = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 9], [2]), &device);
    let lp = head_logprobs_in_chunks(x, w, t, false, 1)
        .0
        .try_into_vec_as::<f32>()
        .unwrap();
    assert!(lp[0] > -20.0 && lp[1] <= -1e38, "{lp:?}");
}
