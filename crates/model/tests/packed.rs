//! Packed projections (`CausalLm::pack_projections`: q, k and v in one matmul, gate and up in
//! another) give the unpacked model's weights and logits, without a cache on a padded batch
//! and through a KV cache, for Qwen2 (q/k/v biases), Qwen3 (q/k norms) and Llama (untied
//! head). The composed ops (the autodiff device, where the fused CPU kernels stand aside) run
//! the packed path here; `crates/train/tests/gpu_path.rs` runs it through the GPU kernels.

use reasonlab_model::burn::tensor::FloatDType;
use reasonlab_model::config::{Architecture, ModelConfig};
use reasonlab_model::decoder::{CausalLm, cast_floats};
use reasonlab_model::tensor::{Device, Tensor};
use reasonlab_model::{KvCache, Model, PadSide, TokenBatch};

fn config(architecture: Architecture) -> ModelConfig {
    let mut c = reasonlab_model::bench_config();
    c.architecture = architecture;
    c.vocab_size = 97;
    c.hidden_size = 48;
    c.intermediate_size = 100;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.tie_word_embeddings = architecture != Architecture::Llama;
    c.initializer_range = 0.2;
    c
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn is_packed(net: &CausalLm) -> bool {
    net.model
        .layers
        .iter()
        .all(|l| l.self_attn.qkv.is_some() && l.mlp.gate_up.is_some())
}

/// Logits of a padded batch without a cache, then of a left-padded prefill and five decode
/// steps through one.
fn logits(m: &Model) -> Vec<Vec<f32>> {
    let batch = TokenBatch::pad(&[vec![1, 5, 9, 3, 7, 11], vec![2, 4, 6]], 0, PadSide::Right);
    let l = m.logits(&batch, None).unwrap();
    let [b, t, v] = l.dims();
    let mut out = vec![values(l.reshape([b * t, v]))];
    let prompts = [vec![3, 1, 4, 1, 5, 9, 2], vec![6, 5], vec![3, 5, 8, 9]];
    let prefill = TokenBatch::pad(&prompts, 0, PadSide::Left);
    let mut cache = KvCache::default();
    out.push(values(m.last_logits(&prefill, Some(&mut cache)).unwrap()));
    for step in 0..5u32 {
        let batch = TokenBatch {
            ids: vec![10 + step, 20 + step, 30 + step],
            positions: prompts.iter().map(|p| p.len() as u32 + step).collect(),
            padding: vec![false; 3],
            b: 3,
            t: 1,
        };
        out.push(values(m.last_logits(&batch, Some(&mut cache)).unwrap()));
    }
    out
}

#[test]
fn packed_projections_keep_the_weights_and_the_logits() {
    let device = Device::flex().autodiff();
    for architecture in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Llama,
    ] {
        let plain = Model::random(config(architecture), 3, &device);
        let mut packed = plain.clone();
        packed.net = packed.net.pack_projections();
        assert!(is_packed(&packed.net), "{architecture:?}: not packed");
        // The layers' own weights are now columns of the packed matrices, with their values.
        let (a, b) = (plain.hf_tensors().unwrap(), packed.hf_tensors().unwrap());
        assert_eq!(a.len(), b.len());
        for (name, (shape, v)) in &a {
            let (packed_shape, w) = &b[name];
            assert_eq!(shape, packed_shape, "{architecture:?} {name}");
            assert_eq!(v, w, "{architecture:?} {name} changed when packed");
        }
        let (a, b) = (logits(&plain), logits(&packed));
        assert!(a[0].iter().any(|x| x.abs() > 1e-3), "trivial logits");
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            let diff = worst(x, y);
            assert!(
                diff < 1e-5,
                "{architecture:?}: pass {step} differs by {diff} when packed"
            );
        }
    }
}

#[test]
fn packing_is_for_gpu_inference_and_undone_by_a_cast() {
    let config = config(Architecture::Qwen2);
    // On flex, whose fused kernels read the separate weights, and on an autodiff device, the
    // model stays as it is.
    for device in [Device::flex(), Device::flex().autodiff()] {
        let m = Model::random(config.clone(), 3, &device).pack_projections();
        assert!(!is_packed(&m.net));
    }
    // A cast maps the weights to new tensors: no packed copy of the old ones is left behind.
    let net = Model::random(config, 3, &Device::flex().autodiff())
        .net
        .pack_projections();
    assert!(is_packed(&net));
    assert!(!is_packed(&cast_floats(net.clone(), FloatDType::F32)));
    assert!(!is_packed(&net.unpacked()));
}
