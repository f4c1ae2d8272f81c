//! Reduced-precision inference on the GPU path against f32 on the CPU: the model loads in the
//! reduced type and its log-probs stay within that type's rounding; then, in the same process
//! and on the same device, an f32 model for inference and one for training keep f32.
//!
//! ```text
//! cargo test --workspace --features reasonlab-train/wgpu --test gpu_precision
//! ```
//!
//! wgpu's WGSL kernels have f16 and no bf16, so on wgpu this runs f16 (and checks that bf16 is
//! refused with a way out); `REASONLAB_GPU_DTYPE=bf16` picks bf16 on a backend that has it.
#![cfg(any(feature = "wgpu", feature = "vulkan"))]

mod gpu_common;

use gpu_common::{backend, fixture, masked_logprobs, max_abs_diff, no_device, ragged_batch};
use reasonlab_generate::SamplingParams;
use reasonlab_model::burn::tensor::{DType, FloatDType};
use reasonlab_model::tensor::Device;
use reasonlab_model::{Model, Precision};
use reasonlab_tokenize::Tokenizer;

#[test]
fn a_reduced_precision_model_stays_close_to_f32() {
    let kind = backend();
    let precision: Precision = std::env::var("REASONLAB_GPU_DTYPE")
        .map(|p| p.parse().expect("REASONLAB_GPU_DTYPE"))
        .unwrap_or(Precision::F16);
    // Where the adapter lacks bf16, asking for it is refused with the way out.
    let (probe, _) = reasonlab_model::open(kind, false)
        .unwrap_or_else(|e| no_device(&format!("{kind} device"), e));
    if !probe.supports_dtype(FloatDType::BF16) {
        let err = reasonlab_model::open_inference(kind, Precision::Bf16)
            .expect_err("bf16 refused")
            .to_string();
        assert!(
            err.contains("no bf16 support") && err.contains("f16"),
            "{err}"
        );
    }
    let (device, info) = reasonlab_model::open_inference(kind, precision)
        .unwrap_or_else(|e| no_device(&format!("{kind} device in {precision}"), e));
    eprintln!("{info}");
    assert_eq!(info.precision, precision);

    let reduced = Model::load_as(&fixture(), &device, precision).unwrap();
    let expected = match precision {
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
        Precision::F32 => DType::F32,
    };
    let weight = reduced.net.model.layers[0].self_attn.q_proj.weight.val();
    assert_eq!(
        weight.dtype(),
        expected,
        "weights were not loaded in {precision}"
    );

    let full = Model::load(&fixture(), &Device::flex()).unwrap();
    let batch = ragged_batch();
    let (a, b) = (
        masked_logprobs(&full, &batch),
        masked_logprobs(&reduced, &batch),
    );
    let diff = max_abs_diff(&a, &b);
    eprintln!("{precision}: max |Δ log p| against f32 = {diff:.2e}");
    // A 10–11-bit mantissa over a few layers: a few hundredths of a nat, not more.
    let tolerance = if precision == Precision::Bf16 {
        0.2
    } else {
        0.05
    };
    assert!(
        diff.is_finite() && diff < tolerance,
        "{precision} log-probs off by {diff}"
    );
    assert!(
        diff > 0.0,
        "the reduced model gave f32's exact log-probs: was it reduced?"
    );
    // Packed projections (one matmul for q, k, v, one for gate and up) in the reduced type:
    // each output column is the same dot product, so the same log-probs up to the matmul's
    // summation order.
    // The packed matrices are new memory; the layers' weights become views into them, not
    // copies (this file's one test has the device to itself, so the pool's count is ours).
    let in_use = || {
        let usage = device.memory_pool_usage();
        usage
            .expect("the GPU's memory pool keeps count")
            .bytes_in_use
    };
    let before = in_use();
    let packed = reduced.clone().pack_projections();
    assert!(packed.net.model.layers[0].self_attn.qkv.is_some());
    let after = in_use();
    let c = &packed.config;
    let (h, kv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let per_layer = c.hidden_size * ((h + 2 * kv) * d + 2 * c.intermediate_size);
    let packed_bytes = (c.num_hidden_layers * per_layer * expected.size()) as u64;
    let grown = after.saturating_sub(before);
    eprintln!("packing took {grown} bytes for {packed_bytes} bytes of packed weights");
    assert!(
        grown < packed_bytes + packed_bytes / 2,
        "packing took {grown} bytes for {packed_bytes} bytes of packed weights: copies?"
    );
    let repacked = max_abs_diff(&b, &masked_logprobs(&packed, &batch));
    eprintln!("{precision}: packed against separate projections: {repacked:.2e}");
    assert!(
        repacked < tolerance / 5.0,
        "packed projections moved the {precision} log-probs by {repacked}"
    );

    // Generation runs end to end in the reduced type: greedy, a plain draw, and a filtered
    // one (the filter kernel writes its leavings in the reduced type).
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let prompts = vec![tok.encode("What is 2 + 3?", true).unwrap()];
    for (temperature, top_k, top_p) in [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.6, 20, 0.95)] {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            max_new_tokens: 12,
            ..Default::default()
        };
        let (out, _) =
            reasonlab_generate::generate(&reduced, Some(&tok), &prompts, 2, &params, &mut |_| {})
                .unwrap();
        assert!(
            out.iter().all(|c| c.token_ids.len() == 12),
            "T {temperature}"
        );
    }

    // The reduced model lives on; an f32 model on the same device, for inference and for
    // training, holds f32 weights and gives the CPU's log-probs (a recipe samples in bf16, then
    // fine-tunes, in one process).
    let (f32_device, _) = reasonlab_model::open_inference(kind, Precision::F32).unwrap();
    let (train_device, _) =
        reasonlab_model::open_for_training(kind, reasonlab_model::Training::default()).unwrap();
    for (device, what) in [(&f32_device, "inference"), (&train_device, "training")] {
        let model = Model::load(&fixture(), device).unwrap();
        let weight = model.net.model.layers[0].self_attn.q_proj.weight.val();
        assert_eq!(weight.dtype(), DType::F32, "an f32 model for {what}");
        let diff = max_abs_diff(&a, &masked_logprobs(&model, &batch));
        eprintln!("f32 {what} beside the {precision} model: max |Δ log p| = {diff:.2e}");
        assert!(diff < 1e-4, "f32 {what} log-probs off by {diff}");
    }
    let trained = Model::load(&fixture(), &train_device).unwrap();
    let loss = trained.token_logprobs(&batch).unwrap().sum().neg();
    let grads = loss.backward();
    let grad = trained.net.model.layers[0]
        .self_attn
        .q_proj
        .weight
        .grad(&grads)
        .expect("the weight's gradient");
    assert_eq!(grad.dtype(), DType::F32);
    let grad = grad.try_into_vec_as::<f32>().unwrap();
    assert!(grad.iter().all(|g| g.is_finite()) && grad.iter().any(|&g| g != 0.0));
    // The reduced model still runs.
    assert_eq!(masked_logprobs(&reduced, &batch), b);

    // An engine over the same files in another type is another model to a run that keys its
    // completions by the model's hash (eval, sample).
    use reasonlab_core::engine::Engine;
    use reasonlab_generate::LocalEngine;
    let hash = |p| {
        LocalEngine::load_in(&fixture(), kind, p)
            .unwrap()
            .info()
            .hash
    };
    let (full_hash, reduced_hash) = (hash(Precision::F32), hash(precision));
    assert_eq!(reduced_hash, format!("{full_hash}-{precision}"));
}
