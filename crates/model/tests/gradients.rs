//! Gradient checks through the whole model: central finite differences on a few weights, and
//! the closed-form gradient of log-softmax (one-hot − softmax).

use reasonlab_model::burn::tensor::activation::{log_softmax, softmax};
use reasonlab_model::burn::tensor::{Device, Tensor, TensorData};
use reasonlab_model::{Model, ModelConfig, PadSide, TokenBatch};

fn tiny() -> ModelConfig {
    let mut c = reasonlab_model::bench_config();
    c.vocab_size = 32;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 4;
    c.initializer_range = 0.3;
    c
}

/// Sum of masked log-probs of a ragged batch, as f64.
fn objective(model: &Model, batch: &TokenBatch) -> f64 {
    let lp = model.token_logprobs(batch).unwrap() * model.target_mask(batch);
    lp.sum().into_scalar::<f32>() as f64
}

#[test]
fn finite_differences_match_autodiff() {
    let device = Device::flex().autodiff();
    let model = Model::random(tiny(), 7, &device);
    let batch = TokenBatch::pad(&[vec![1, 5, 9, 3, 7], vec![2, 4, 6]], 0, PadSide::Right);
    let loss = model.token_logprobs(&batch).unwrap() * model.target_mask(&batch);
    let grads = loss.sum().backward();
    // (layer 0 q_proj) and (layer 1 down_proj) and the embedding.
    let q = model.net.model.layers[0].self_attn.q_proj.weight.val();
    let down = model.net.model.layers[1].mlp.down_proj.weight.val();
    let emb = model.net.model.embed_tokens.val();
    let analytic = [
        q.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
        down.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
        emb.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap(),
    ];
    let cpu = Device::flex();
    let base = model.clone().to_device(&cpu);
    let h = 1e-2f32;
    for (which, idx) in [(0usize, 3usize), (0, 17), (1, 5), (1, 40), (2, 5 * 16 + 2)] {
        let perturbed = |delta: f32| {
            let mut m = base.clone();
            let param = match which {
                0 => &mut m.net.model.layers[0].self_attn.q_proj.weight,
                1 => &mut m.net.model.layers[1].mlp.down_proj.weight,
                _ => &mut m.net.model.embed_tokens,
            };
            let dims = param.dims();
            let mut v = param.val().try_into_vec_as::<f32>().unwrap();
            v[idx] += delta;
            *param = reasonlab_model::burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(v, dims),
                &cpu,
            ));
            objective(&m, &batch)
        };
        let numeric = (perturbed(h) - perturbed(-h)) / (2.0 * h as f64);
        let a = analytic[which][idx] as f64;
        assert!(
            (numeric - a).abs() <= 1e-3 + 5e-2 * a.abs(),
            "param {which}[{idx}]: finite difference {numeric} vs autodiff {a}"
        );
    }
}

#[test]
fn log_softmax_gradient_is_one_hot_minus_softmax() {
    let device = Device::flex().autodiff();
    let logits: Vec<f32> = (0..10).map(|i| ((i * 7 % 5) as f32) * 0.3 - 0.4).collect();
    let x =
        Tensor::<2>::from_data(TensorData::new(logits.clone(), [1, 10]), &device).require_grad();
    let target = 3;
    let picked = log_softmax(x.clone(), 1).narrow(1, target, 1).sum();
    let grads = picked.backward();
    let g = x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
    let p = softmax(
        Tensor::<2>::from_data(TensorData::new(logits, [1, 10]), &Device::flex()),
        1,
    )
    .try_into_vec_as::<f32>()
    .unwrap();
    for i in 0..10 {
        let expected = if i == target { 1.0 } else { 0.0 } - p[i];
        assert!(
            (g[i] - expected).abs() < 1e-6,
            "{i}: {} vs {expected}",
            g[i]
        );
    }
}

/// Gradients of the model's parameters, in a fixed order.
fn all_grads(device: &Device) -> Vec<f32> {
    let model = Model::random(tiny(), 11, device);
    let batch = TokenBatch::pad(&[vec![1, 5, 9, 3, 7, 2], vec![2, 4, 6]], 0, PadSide::Right);
    let loss = model.token_logprobs(&batch).unwrap() * model.target_mask(&batch);
    let grads = loss.sum().backward();
    let layer = &model.net.model.layers[1];
    [
        layer.self_attn.q_proj.weight.val(),
        layer.self_attn.v_proj.weight.val(),
        layer.mlp.gate_proj.weight.val(),
        layer.mlp.down_proj.weight.val(),
        model.net.model.embed_tokens.val(),
    ]
    .into_iter()
    .flat_map(|p| p.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap())
    .collect()
}

#[test]
fn activation_checkpointing_gives_the_same_gradients() {
    let plain = all_grads(&Device::flex().autodiff());
    let checkpointed = all_grads(&Device::flex().autodiff().gradient_checkpointing());
    assert!(plain.iter().any(|g| g.abs() > 1e-4));
    assert_eq!(plain, checkpointed);
}

/// The LM head on the weighted targets only: the same log-probs there, 0 elsewhere, and the
/// same gradients as the whole grid under the same mask, with and without checkpointing (the
/// head's logits kept whole, or chunked and recomputed).
#[test]
fn log_probs_of_the_weighted_targets_match_the_whole_grid() {
    let batch = TokenBatch::pad(
        &[
            vec![1, 5, 9, 3, 7, 2, 8],
            vec![2, 4, 6],
            vec![3, 1, 4, 1, 5],
        ],
        0,
        PadSide::Right,
    );
    // A prompt of two tokens per row, then the completion; padding and a skipped span out.
    let mut weights = batch.target_weights();
    let l = batch.t - 1;
    for row in 0..batch.b {
        weights[row * l] = 0.0;
    }
    weights[2 * l + 2] = 0.0;
    let kept = weights.iter().filter(|&&w| w != 0.0).count();
    assert!(kept > 0 && kept < batch.target_weights().iter().filter(|&&w| w != 0.0).count());
    for device in [
        Device::flex().autodiff(),
        Device::flex().autodiff().gradient_checkpointing(),
    ] {
        let model = Model::random(tiny(), 5, &device);
        let mask = Tensor::<2>::from_data(TensorData::new(weights.clone(), [batch.b, l]), &device);
        let whole = model.token_logprobs(&batch).unwrap();
        let (only, entropy) = model.token_logprobs_with_entropy(&batch, &weights).unwrap();
        let grads_of = |lp: Tensor<2>| {
            let grads = (lp * mask.clone()).sum().backward();
            [
                model.net.model.layers[0].self_attn.k_proj.weight.val(),
                model.net.model.layers[1].mlp.up_proj.weight.val(),
                model.net.model.embed_tokens.val(),
            ]
            .into_iter()
            .flat_map(|p| p.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap())
            .collect::<Vec<f32>>()
        };
        let (w, o) = (
            whole.clone().try_into_vec_as::<f32>().unwrap(),
            only.clone().try_into_vec_as::<f32>().unwrap(),
        );
        let (_, whole_entropy) = model
            .token_logprobs_with_entropy(&batch, &vec![1.0; batch.b * l])
            .unwrap();
        let (we, oe) = (
            whole_entropy.try_into_vec_as::<f32>().unwrap(),
            entropy.try_into_vec_as::<f32>().unwrap(),
        );
        for at in 0..batch.b * l {
            match weights[at] != 0.0 {
                true => {
                    assert!((w[at] - o[at]).abs() < 1e-5, "{at}: {} vs {}", w[at], o[at]);
                    assert!(
                        (we[at] - oe[at]).abs() < 1e-5,
                        "{at}: {} vs {}",
                        we[at],
                        oe[at]
                    );
                }
                false => assert_eq!((o[at], oe[at]), (0.0, 0.0), "{at}: not asked for"),
            }
        }
        let (gw, go) = (grads_of(whole), grads_of(only));
        let scale = gw.iter().fold(0f32, |m, g| m.max(g.abs()));
        let worst = gw
            .iter()
            .zip(&go)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "gradients differ by {worst} (scale {scale})"
        );
    }
    let model = Model::random(tiny(), 5, &Device::flex());
    let none = model
        .token_logprobs_where(&batch, &vec![0.0; weights.len()])
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap();
    assert!(none.iter().all(|&x| x == 0.0), "{none:?}");
    let err = model
        .token_logprobs_where(&batch, &weights[1..])
        .unwrap_err();
    assert!(err.to_string().contains("expected b × (t − 1)"), "{err}");
}

/// The memory a training step cannot do without: 16 bytes per weight when every weight trains
/// in f32 (the weight, its gradient, AdamW's two moments), 4 per frozen weight and 16 per
/// adapter weight under LoRA, 4 per weight at inference; a device with less is refused with
/// what would fit, one with as much (or one whose memory is unknown) is not.
#[test]
fn training_needs_sixteen_bytes_per_trained_weight() {
    let full = Model::random(tiny(), 7, &Device::flex().autodiff());
    let n = full.num_params() as u64;
    assert_eq!(full.training_floor_bytes(), 16 * n);
    let lora = full
        .clone()
        .add_lora(&reasonlab_model::LoraConfig {
            rank: 2,
            ..Default::default()
        })
        .unwrap();
    let adapters = lora.num_params() as u64 - n;
    assert!(adapters > 0);
    assert_eq!(lora.training_floor_bytes(), 4 * n + 16 * adapters);
    let inference = Model::random(tiny(), 7, &Device::flex());
    assert_eq!(inference.training_floor_bytes(), 4 * n);

    let floor = full.training_floor_bytes();
    assert!(full.check_training_floor(None).is_ok());
    assert!(full.check_training_floor(Some(floor)).is_ok());
    let err = full
        .check_training_floor(Some(floor - 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("LoRA") && err.contains("GiB"), "{err}");
    assert!(lora.check_training_floor(Some(floor - 1)).is_ok());
    // The CPU states no device memory: nothing to check.
    assert!(full.check_trains_on_device().is_ok());
}
