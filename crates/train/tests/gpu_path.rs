//! The GPU path against the CPU backend, on whatever adapter the GPU backend finds: a real GPU,
//! or Mesa's lavapipe (software Vulkan), which is how CI runs these on machines without one.
//!
//! Built only with a GPU backend compiled in:
//!
//! ```text
//! cargo test --workspace --features reasonlab-train/wgpu --test gpu_path
//! REASONLAB_GPU_BACKEND=vulkan cargo test --workspace --features reasonlab-train/vulkan --test gpu_path
//! ```
//!
//! Each test fails, naming the missing driver, when the GPU backend cannot open a device. With
//! the `vulkan` feature compiled in, wgpu compiles its kernels to SPIR-V too, which Mesa 22.3's
//! lavapipe (Debian 12) crashes on: on such a machine run the `wgpu` feature alone, and the
//! `vulkan` one on lavapipe 26 through `scripts/lavapipe_vulkan.sh`.
//! Tolerances: the GPU kernels sum in another order than the CPU's (tiled matmuls, tree
//! reductions), so log-probs agree to 1e-4 absolute, gradients to 1e-3 relative to their norm,
//! and greedy generation (an argmax over logits) and seeded draws exactly, on a model whose
//! logits are far apart.
#![cfg(any(feature = "wgpu", feature = "vulkan"))]

mod gpu_common;

use std::path::Path;

use gpu_common::{backend, fixture, masked_logprobs, max_abs_diff, no_device, ragged_batch};
use reasonlab_generate::{DecodeOverlap, SamplingParams};
use reasonlab_model::burn::tensor::DType;
use reasonlab_model::tensor::Device;
use reasonlab_model::{HfTensors, MatmulUnits, Model, Precision};
use reasonlab_reward::{NotApplicable, Reward, Sample, WeightedSum};
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::grpo::{GrpoSettings, GrpoTrainer, Preset, Task};
use reasonlab_train::{AdamW, AdamWSettings};

/// The GPU device, or a failure that says what to install.
fn gpu(autodiff: bool) -> Device {
    let kind = backend();
    match reasonlab_model::open(kind, autodiff) {
        Ok((device, info)) => {
            eprintln!("{info}");
            device
        }
        Err(e) => no_device(&format!("{kind} device"), e),
    }
}

/// Every weight of `model` minus its value in `before`, in name order.
fn update(before: &HfTensors, model: &Model) -> Vec<f32> {
    let after = model.hf_tensors().unwrap();
    after
        .iter()
        .flat_map(|(name, (_, v))| {
            let (_, b) = &before[name];
            v.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_device_says_what_its_matmuls_run_on() {
    let kind = backend();
    let (_, info) = reasonlab_model::open(kind, false)
        .unwrap_or_else(|e| no_device(&format!("{kind} device"), e));
    eprintln!("{info}");
    // wgpu and vulkan devices say which graphics API they came up on.
    if matches!(
        kind,
        reasonlab_model::BackendKind::Wgpu | reasonlab_model::BackendKind::Vulkan
    ) {
        let api = info
            .api
            .unwrap_or_else(|| panic!("no graphics API: {info}"));
        assert!(info.to_string().contains(&format!(", {api}")), "{info}");
    }
    match info.matmul {
        MatmulUnits::Cpu => panic!("a GPU backend reported the CPU's matmuls: {info}"),
        // WGSL has no cooperative-matrix instructions, so a build without the SPIR-V
        // compiler never has them, on any adapter.
        MatmulUnits::CooperativeMatrix(n) => {
            assert!(cfg!(feature = "vulkan") && n > 0, "{info}");
            assert!(
                info.to_string().contains("cooperative-matrix units"),
                "{info}"
            );
        }
        MatmulUnits::Scalar => {
            // On a card, the warning says why; a software adapter has its own warning.
            let warning = info.warnings().pop().unwrap();
            assert_eq!(
                info.software,
                warning.contains("software adapter"),
                "{warning}"
            );
            assert_eq!(
                !info.software,
                warning.contains("scalar units"),
                "{warning}"
            );
        }
    }
    if cfg!(not(feature = "vulkan")) {
        assert_eq!(info.matmul, MatmulUnits::Scalar, "{info}");
    }
}

/// The device's ceilings come from burn's runtime: a launch cost, memory bandwidth and scalar
/// compute, each a positive number, and one entry per cooperative-matrix configuration the
/// device registers (none through WGSL).
#[test]
fn the_device_measures_its_ceilings() {
    let kind = backend();
    let (device, info) = reasonlab_model::open(kind, false)
        .unwrap_or_else(|e| no_device(&format!("{kind} device"), e));
    let ceilings = reasonlab_model::measure_ceilings(&device);
    for c in &ceilings {
        eprintln!("{c}");
    }
    for name in ["launch", "memory-copy", "memory-read", "scalar-f32"] {
        let c = ceilings.iter().find(|c| c.name == name).unwrap();
        assert!(c.value.is_some_and(|v| v > 0.0), "{c}");
    }
    let cmma = ceilings
        .iter()
        .filter(|c| c.name.starts_with("cmma-"))
        .count();
    let expected = match info.matmul {
        MatmulUnits::CooperativeMatrix(n) => n,
        _ => 0,
    };
    assert_eq!(cmma, expected, "{info}");
    assert!(reasonlab_model::measure_ceilings(&Device::flex()).is_empty());
}

/// A tensor uploaded into device memory freed just before reads as its own values: 22 floats
/// uploaded, read back and dropped, then 15 indices uploaded (into that memory) and scattered by
/// burn's `select_assign`. Through the `vulkan` backend on lavapipe 26 the kernel reads the
/// dropped floats as its indices and crashes the driver, as a training step's targets do
/// (scripts/lavapipe_vulkan.sh); Debian 12's lavapipe gives these values.
#[test]
fn an_upload_into_just_freed_memory_reads_its_own_values() {
    use reasonlab_model::burn::tensor::IndexingUpdateOp;
    use reasonlab_model::tensor::{Int, Tensor, TensorData};
    let device = gpu(false);
    let ones = Tensor::<1>::from_data(TensorData::new(vec![1f32; 22], [22]), &device);
    assert_eq!(ones.try_into_vec_as::<f32>().unwrap(), vec![1.0; 22]);
    let index = Tensor::<1, Int>::from_data(TensorData::new((0..15i64).collect(), [15]), &device);
    let values: Vec<f32> = (0..15).map(|i| i as f32 + 2.0).collect();
    let added = Tensor::<1>::from_data(TensorData::new(values.clone(), [15]), &device);
    let out =
        Tensor::<1>::zeros([22], &device).select_assign(0, index, added, IndexingUpdateOp::Add);
    let mut expected = values;
    expected.resize(22, 0.0);
    assert_eq!(out.try_into_vec_as::<f32>().unwrap(), expected);
}

#[test]
fn log_probs_match_the_cpu_backend() {
    let cpu = Model::load(&fixture(), &Device::flex()).unwrap();
    let gpu = Model::load(&fixture(), &gpu(false)).unwrap();
    let batch = ragged_batch();
    let a = masked_logprobs(&cpu, &batch);
    assert!(
        a.iter().any(|&x| x < -1.0),
        "log-probs too close to 0 to compare: {a:?}"
    );
    // Unpacked, then with q, k, v (and gate, up) in one matmul each.
    let packed = gpu.clone().pack_projections();
    assert!(is_packed(&packed), "an inference model on the GPU packs");
    for (model, what) in [(gpu, "unpacked"), (packed, "packed")] {
        let diff = max_abs_diff(&a, &masked_logprobs(&model, &batch));
        eprintln!("{what}: max |Δ log p| = {diff:.2e}");
        assert!(
            diff < 1e-4,
            "{what} GPU log-probs differ from the CPU's by {diff}"
        );
    }
}

/// Whether every layer of `model` runs its packed projections.
fn is_packed(model: &Model) -> bool {
    (model.net.model.layers.iter()).all(|l| l.self_attn.qkv.is_some() && l.mlp.gate_up.is_some())
}

#[test]
fn one_training_step_gives_the_cpu_gradients_and_update() {
    let batch = ragged_batch();
    let settings = AdamWSettings {
        lr: 1e-3,
        max_grad_norm: 0.0,
        ..Default::default()
    };
    let step = |device: &Device| {
        let model = Model::load(&fixture(), device).unwrap();
        let before = model.hf_tensors().unwrap();
        let mut optim = AdamW::new(settings.clone());
        let (model, loss) =
            reasonlab_train::lm_train_step(model, &batch, &mut optim, 1e-3).unwrap();
        // AdamW's first step moves each weight by about lr·sign(g): the update is the gradient's
        // sign pattern, which a wrong gradient anywhere would change.
        (loss, update(&before, &model))
    };
    let (cpu_loss, cpu_update) = step(&Device::flex().autodiff());
    // Many host threads (a GPU machine's cores) split the CPU's batch over workers, but not the
    // GPU's: the device gets the whole batch in one pass.
    let gpu_device = gpu(true);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    let (gpu_loss, gpu_update) = pool.install(|| {
        assert_eq!(
            reasonlab_train::lm::data_parallel_workers(&Device::flex()),
            4
        );
        assert_eq!(reasonlab_train::lm::data_parallel_workers(&gpu_device), 1);
        step(&gpu_device)
    });
    eprintln!("loss: cpu {cpu_loss}, gpu {gpu_loss}");
    assert!((cpu_loss - gpu_loss).abs() < 1e-4 * cpu_loss.abs().max(1.0));
    let norm = cpu_update.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(norm > 0.0, "the CPU step changed nothing");
    let diff = cpu_update
        .iter()
        .zip(&gpu_update)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    eprintln!("|Δ update| / |update| = {:.2e}", diff / norm);
    // Adam's normalised step can flip for a gradient near 0 when the two sums differ in the
    // last bits; such weights are few, so the update as a whole agrees closely.
    assert!(diff / norm < 1e-3, "GPU update differs: {diff} of {norm}");
}

/// `f()`, and how many buffers the GPU kernels that write in place had to copy meanwhile
/// because something else held them (their debug events, on this thread: the optimiser's
/// step runs on the caller's thread, whatever pool computes the gradients).
fn copies_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == reasonlab_model::fused::COPY_EVENTS {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Count(count.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, count.load(Ordering::Relaxed))
}

#[test]
fn an_optimiser_step_updates_the_weights_in_place() {
    let device = gpu(true);
    let batch = ragged_batch();
    let mut optim = AdamW::new(AdamWSettings::default());
    let model = Model::load(&fixture(), &device).unwrap();
    let weights = model.hf_tensors().unwrap().len();
    // AdamW's kernel writes each weight and its two moments in place: nothing else holds them
    // while the step runs, so nothing is copied.
    let ((model, loss), copies) =
        copies_during(|| reasonlab_train::lm_train_step(model, &batch, &mut optim, 1e-3).unwrap());
    assert!(loss.is_finite());
    assert_eq!(copies, 0, "a step copied {copies} buffers");
    // The count sees copies: a clone of the network held across the next step shares every
    // weight (not the moments, which only the optimiser holds), so each is copied once.
    let held = model.net.clone();
    let (_, copies) =
        copies_during(|| reasonlab_train::lm_train_step(model, &batch, &mut optim, 1e-3).unwrap());
    assert_eq!(copies, weights, "with the weights held elsewhere");
    drop(held);
}

/// The first of bf16, f16 that `device` trains in with mixed precision.
fn mixed_precision(device: &Device) -> Precision {
    let precision = [Precision::Bf16, Precision::F16]
        .into_iter()
        .find(|&p| {
            Model::load(&fixture(), device)
                .unwrap()
                .with_mixed_precision(p)
                .is_ok()
        })
        .expect("the GPU adapter has neither bf16 nor f16");
    eprintln!("mixed precision in {precision}");
    precision
}

fn dtype(precision: Precision) -> DType {
    match precision {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

/// Mixed precision: the forward computes in bf16 (f16 where the adapter has no bf16, as wgpu's
/// WGSL kernels), the weights the step updates stay f32, and loss and update stay close to the
/// f32 step's. Tolerances: f16 keeps 11 significant bits (bf16 8), so the loss agrees to 1%;
/// AdamW's first step is about lr·sign(g), and a gradient near 0 can change sign in reduced
/// precision, so the update is compared by its direction (cosine > 0.9).
#[test]
fn a_mixed_precision_step_tracks_the_f32_step() {
    let batch = ragged_batch();
    let settings = AdamWSettings {
        lr: 1e-3,
        max_grad_norm: 0.0,
        ..Default::default()
    };
    let device = gpu(true);
    let precision = mixed_precision(&device);
    let step = |precision: Precision| {
        let model = Model::load(&fixture(), &device)
            .unwrap()
            .with_mixed_precision(precision)
            .unwrap();
        let logits = model.logits(&batch, None).unwrap();
        assert_eq!(
            logits.dtype(),
            dtype(precision),
            "the forward pass computes in {precision}"
        );
        let before = model.hf_tensors().unwrap();
        let mut optim = AdamW::new(settings.clone());
        let (model, loss) =
            reasonlab_train::lm_train_step(model, &batch, &mut optim, 1e-3).unwrap();
        assert_eq!(
            model.net.model.embed_tokens.val().dtype(),
            DType::F32,
            "the master weights stay f32"
        );
        (loss, update(&before, &model))
    };
    let (loss, update) = step(Precision::F32);
    let (mixed_loss, mixed_update) = step(precision);
    eprintln!("loss: f32 {loss}, {precision} {mixed_loss}");
    assert!(
        (loss - mixed_loss).abs() < 1e-2 * loss.abs(),
        "mixed-precision loss {mixed_loss} is not within 1% of {loss}"
    );
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let cosine = dot(&update, &mixed_update)
        / (dot(&update, &update).sqrt() * dot(&mixed_update, &mixed_update).sqrt());
    eprintln!("cosine(update f32, update {precision}) = {cosine:.4}");
    assert!(
        cosine > 0.9,
        "the mixed-precision update points elsewhere: cosine {cosine}"
    );
}

/// Two samples of three prompts with `params` on flex and on the GPU: the same tokens, and
/// their log-probs within 1e-4.
fn same_generation(params: &SamplingParams, what: &str) {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let prompts: Vec<Vec<u32>> = ["What is 2 + 3?", "Count: 1, 2, 3,", "Hello"]
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    same_completions(&fixture(), &prompts, 2, params, what);
}

/// `samples` samples of each of `prompts` from the checkpoint in `dir` with `params` on flex
/// and on the GPU, there with separate projections decoding step by step and with packed ones
/// queuing each step ahead of the last one's read: the same tokens, and their log-probs
/// within 1e-4.
fn same_completions(
    dir: &Path,
    prompts: &[Vec<u32>],
    samples: usize,
    params: &SamplingParams,
    what: &str,
) {
    let tok = Tokenizer::from_dir(dir).unwrap();
    let run = |device: &Device, pack: bool| {
        let model = Model::load(dir, device).unwrap();
        let (model, overlap) = match pack {
            true => (model.pack_projections(), DecodeOverlap::Ahead),
            false => (model, DecodeOverlap::Off),
        };
        let params = SamplingParams {
            overlap,
            ..params.clone()
        };
        let (out, _) = reasonlab_generate::generate(
            &model,
            Some(&tok),
            prompts,
            samples,
            &params,
            &mut |_| {},
        )
        .unwrap();
        out.into_iter()
            .map(|c| (c.token_ids, c.logprobs.unwrap()))
            .unzip::<_, _, Vec<_>, Vec<_>>()
    };
    let (cpu, cpu_logps) = run(&Device::flex(), false);
    assert!(cpu.iter().all(|t| !t.is_empty()));
    for (pack, layout) in [(false, "separate, serial"), (true, "packed, ahead")] {
        let (gpu, gpu_logps) = run(&gpu(false), pack);
        assert_eq!(
            cpu, gpu,
            "{what} completions differ between the CPU and the GPU ({layout} projections)"
        );
        let diff = max_abs_diff(&cpu_logps.concat(), &gpu_logps.concat());
        eprintln!("{what} log-probs ({layout} projections): max |Δ| = {diff:.2e}");
        assert!(diff < 1e-4, "the chosen tokens' log-probs differ by {diff}");
    }
}

#[test]
fn greedy_generation_is_identical() {
    // Greedy on the GPU picks on the device (argmax and log-prob there), on the CPU on the host.
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 24,
        logprobs: true,
        ..Default::default()
    };
    same_generation(&params, "greedy");
}

/// Greedy decoding past 512 cached keys, where the GPU's decode attention splits a small
/// batch's keys across cubes and combines the chunks, gives the CPU's tokens: a prompt of
/// 700 tokens and one of 12, left-padded by 688 keys (its first chunk is all padding).
#[test]
fn greedy_generation_over_a_long_context_is_identical() {
    let mut state = 7u64;
    let mut ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 500) as u32
            })
            .collect()
    };
    let prompts = vec![ids(700), ids(12)];
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 6,
        logprobs: true,
        ..Default::default()
    };
    // The fixture with room for the context (its config says 256 positions; RoPE has no
    // such limit).
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let wider = text.replace(
        "\"max_position_embeddings\": 256",
        "\"max_position_embeddings\": 1024",
    );
    assert_ne!(text, wider);
    std::fs::write(&config, wider).unwrap();
    same_completions(dir.path(), &prompts, 1, &params, "long-context greedy");
}

/// A model whose largest weight passes the device's largest buffer (lavapipe binds 128 MiB;
/// an embedding of 151,936 × 256 in f32 takes 148.4 MiB) is refused before anything is
/// read or allocated, naming the tensor and what would fit (in f16 it would); flex takes it.
#[test]
fn a_model_past_the_devices_largest_buffer_is_refused_before_loading() {
    let device = gpu(false);
    let limit = reasonlab_model::max_buffer_bytes(&device).expect("a GPU device states one");
    let memory = reasonlab_model::device_memory_bytes(&device);
    eprintln!("largest buffer: {limit} bytes; device memory: {memory:?}");
    let mut config = reasonlab_model::bench_config();
    config.vocab_size = 151_936;
    let bytes = (151_936 * config.hidden_size * 4) as u64;
    if bytes <= limit {
        eprintln!("WARNING: this device binds {limit} bytes, more than the {bytes} tested");
        return;
    }
    assert!(Model::check_fits(&config, &Device::flex()).is_ok());
    // A checkpoint folder with the config and no weights: the fit is checked first.
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::to_string(&config.to_hf_json()).unwrap();
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"not read").unwrap();
    let err = Model::load(dir.path(), &device).unwrap_err().to_string();
    assert!(
        err.contains("`model.embed_tokens.weight` takes 148.4 MiB in f32")
            && err.contains("in bf16 or f16 (`--dtype`) it would fit"),
        "{err}"
    );
}

/// Generation takes fewer prompts per batch where one layer's KV cache for `max_batch` rows
/// of the longest prompt and `max_new_tokens`, or their last logits, would pass the device's
/// largest buffer, and refuses, before any work, samples of one prompt that alone would pass
/// it.
#[test]
fn generation_batches_fit_the_devices_largest_buffer() {
    let device = gpu(false);
    let limit = reasonlab_model::max_buffer_bytes(&device).unwrap();
    let model = Model::load(&fixture(), &device).unwrap();
    let prompts = vec![vec![1u32; 12]; 20];
    // The fixture's cache: 2 kv heads of dim 16 in f32, 128 bytes per row and position.
    assert_eq!(model.kv_buffer_bytes(1, 1), 128);
    let params = SamplingParams {
        max_new_tokens: 65_536,
        max_batch: 64,
        ..Default::default()
    };
    let per_prompt = 128 * (12 + 65_536);
    let fit = (limit / per_prompt) as usize;
    let per_batch = reasonlab_generate::prompts_per_batch(&model, &prompts, 1, &params).unwrap();
    assert_eq!(per_batch, fit.min(64), "limit {limit}");
    assert!(
        per_batch < 64,
        "limit {limit}: nothing to split at this size"
    );
    let flex = Model::load(&fixture(), &Device::flex()).unwrap();
    assert_eq!(
        reasonlab_generate::prompts_per_batch(&flex, &prompts, 1, &params).unwrap(),
        64
    );
    let samples = (limit / per_prompt) as usize + 1;
    let err = reasonlab_generate::prompts_per_batch(&model, &prompts, samples, &params)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("one layer's KV cache") && err.contains("fewer samples"),
        "{err}"
    );

    // At Qwen2.5's vocabulary, the last logits outgrow a short generation's cache: 151,936
    // f32 logits per row.
    let mut config = reasonlab_model::bench_config();
    (
        config.vocab_size,
        config.hidden_size,
        config.num_hidden_layers,
    ) = (151_936, 64, 1);
    let wide = Model::random(config, 0, &device);
    assert_eq!(wide.logits_buffer_bytes(1), 607_744);
    let params = SamplingParams {
        max_new_tokens: 4,
        max_batch: 1024,
        ..Default::default()
    };
    let prompts = vec![vec![1u32; 4]; 1024];
    let per_batch = reasonlab_generate::prompts_per_batch(&wide, &prompts, 1, &params).unwrap();
    let fit = (limit / 607_744) as usize;
    assert!(fit < 1024, "limit {limit}: nothing to split at this size");
    assert_eq!(per_batch, fit);
    let samples = fit + 1;
    let err = reasonlab_generate::prompts_per_batch(&wide, &prompts, samples, &params)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the last logits of"), "{err}");
}

/// Prompts prefilled a few columns per pass through the KV cache (chunked prefill: one
/// column per pass through the decode kernels, three through flash attention over the cache's
/// earlier keys, the cache appended in place) give the CPU's completions.
#[test]
fn a_chunked_prefill_gives_the_cpus_completions() {
    for prefill_tokens in [4, 9] {
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 8,
            logprobs: true,
            prefill_tokens,
            ..Default::default()
        };
        same_generation(&params, &format!("chunked prefill ({prefill_tokens})"));
    }
}

/// A model whose layers normalise q and k (Qwen3: its RoPE takes no bias, so a decode step's
/// attention is not the kernel that rotates q as it loads) decodes left-padded prompts through
/// the KV cache as on the CPU, with packed projections and the padding as counts: the prefill's
/// and five decode steps' logits.
#[test]
fn a_qwen3_model_decodes_padded_prompts_as_on_the_cpu() {
    use reasonlab_model::config::Architecture;
    use reasonlab_model::{KvCache, PadSide, TokenBatch};
    let mut config = reasonlab_model::bench_config();
    config.architecture = Architecture::Qwen3;
    config.vocab_size = 97;
    config.hidden_size = 64;
    config.intermediate_size = 128;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    config.head_dim = 16;
    config.initializer_range = 0.2;
    let prompts = [vec![3, 1, 4, 1, 5, 9, 2], vec![6, 5], vec![3, 5, 8, 9]];
    let device = gpu(false);
    assert!(reasonlab_model::fused::masks_by_padding_counts(&device, 16));
    let run = |device: &Device| {
        let model = Model::random(config.clone(), 3, device).pack_projections();
        let prefill = TokenBatch::pad(&prompts, 0, PadSide::Left);
        let mut cache = KvCache::default();
        let read = |t: reasonlab_model::tensor::Tensor<2>| t.try_into_vec_as::<f32>().unwrap();
        let mut out = read(model.last_logits(&prefill, Some(&mut cache)).unwrap());
        for step in 0..5u32 {
            let batch = TokenBatch {
                ids: vec![10 + step, 20 + step, 30 + step],
                positions: prompts.iter().map(|p| p.len() as u32 + step).collect(),
                padding: vec![false; 3],
                b: 3,
                t: 1,
            };
            out.extend(read(model.last_logits(&batch, Some(&mut cache)).unwrap()));
        }
        out
    };
    let (cpu, on_gpu) = (run(&Device::flex()), run(&device));
    assert!(cpu.iter().any(|x| x.abs() > 1e-2), "trivial logits");
    let diff = max_abs_diff(&cpu, &on_gpu);
    eprintln!("Qwen3 decode logits: max |Δ| = {diff:.2e}");
    assert!(
        diff < 1e-4,
        "the GPU's logits differ from the CPU's by {diff}"
    );
}

/// Decoding with each step queued ahead of the last one's read gives the serial loop's tokens
/// and log-probs where sequences end at different steps (stop strings and ids), for greedy
/// decoding, plain and filtered draws: three prompts, eight samples each, so that rows of
/// ended sequences stay in the batch for some steps (until a quarter of it has ended).
#[test]
fn decoding_ahead_gives_the_serial_tokens() {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let prompts: Vec<Vec<u32>> = ["What is 2 + 3?", "Count: 1, 2, 3,", "Hello"]
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    let model = Model::load(&fixture(), &gpu(false)).unwrap();
    for (temperature, top_p, what) in [
        (0.0, 1.0, "greedy"),
        (1.0, 1.0, "T = 1"),
        (0.8, 0.9, "T = 0.8, top-p 0.9"),
    ] {
        let run = |overlap: DecodeOverlap| {
            let params = SamplingParams {
                temperature,
                top_p,
                max_new_tokens: 20,
                seed: 5,
                logprobs: true,
                stop: vec!["e".into()],
                stop_token_ids: vec![7, 11],
                overlap,
                ..Default::default()
            };
            let (out, _) =
                reasonlab_generate::generate(&model, Some(&tok), &prompts, 8, &params, &mut |_| {})
                    .unwrap();
            out
        };
        let (serial, ahead) = (run(DecodeOverlap::Off), run(DecodeOverlap::Ahead));
        let lengths: std::collections::BTreeSet<usize> =
            serial.iter().map(|c| c.token_ids.len()).collect();
        assert!(
            lengths.len() > 2,
            "{what}: sequences should end at different steps: {lengths:?}"
        );
        assert_eq!(serial.len(), ahead.len());
        for (a, b) in serial.iter().zip(&ahead) {
            assert_eq!(
                (
                    a.prompt_index,
                    a.sample_index,
                    &a.token_ids,
                    &a.text,
                    a.finish_reason
                ),
                (
                    b.prompt_index,
                    b.sample_index,
                    &b.token_ids,
                    &b.text,
                    b.finish_reason
                ),
                "{what}: decoding ahead changed a completion"
            );
            let diff = max_abs_diff(a.logprobs.as_ref().unwrap(), b.logprobs.as_ref().unwrap());
            assert!(diff < 1e-5, "{what}: log-probs moved by {diff}");
        }
    }
}

#[test]
fn sampled_generation_draws_the_hosts_tokens() {
    // Draws on the GPU happen on the device with the uniforms the host would take, filtered
    // ones among the candidates the filter kernel keeps; they give the CPU's tokens for the
    // same seed.
    assert!(reasonlab_model::fused::fuses_sampling(&gpu(false)));
    for (temperature, top_k, top_p, min_p, what) in [
        (1.0, 0, 1.0, 0.0, "T = 1"),
        (0.7, 0, 1.0, 0.0, "T = 0.7"),
        (1.0, 0, 0.9, 0.0, "top-p 0.9"),
        (0.6, 20, 0.95, 0.0, "T = 0.6, top-k 20, top-p 0.95"),
        (1.0, 0, 1.0, 0.05, "min-p 0.05"),
    ] {
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            max_new_tokens: 24,
            seed: 11,
            logprobs: true,
            ..Default::default()
        };
        same_generation(&params, what);
    }
}

/// A reward that varies between completions whatever the model writes (a byte checksum).
struct Checksum;
impl Reward for Checksum {
    fn name(&self) -> &str {
        "checksum"
    }
    fn score(&self, sample: &Sample<'_>) -> Option<f64> {
        Some((sample.completion.bytes().map(u64::from).sum::<u64>() % 7) as f64 / 7.0)
    }
}

/// One GRPO step with a KL reference, its policy training with `precision` compute: eight
/// rollouts, a finite loss, weights moved.
fn grpo_step(precision: Precision) {
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let rewards = WeightedSum::from_parts(
        vec![("checksum".into(), 1.0, Box::new(Checksum))],
        NotApplicable::Skip,
    );
    let mut s = GrpoSettings::preset(Preset::Deepseekmath);
    s.group_size = 4;
    s.prompts_per_step = 2;
    s.max_new_tokens = 8;
    s.loss.beta = 0.04;
    s.optim.lr = 1e-3;
    let tasks: Vec<Task> = (0..2)
        .map(|i| {
            Task::new(
                i.to_string(),
                format!("Question {i}: what is {i} + {i}?"),
                None,
            )
        })
        .collect();
    let policy = Model::load(&fixture(), &gpu(true))
        .unwrap()
        .with_mixed_precision(precision)
        .unwrap();
    let before = policy.hf_tensors().unwrap();
    let mut trainer = GrpoTrainer::new(s, policy, &tok, &rewards).unwrap();
    let ((metrics, rollouts), copies) = copies_during(|| trainer.step(&tasks).unwrap());
    // The optimiser writes the weights in place. An f32 reference shares them until this
    // first update, which therefore copies each once; the rollouts' actor is let go of first.
    let shared = if precision == Precision::F32 {
        before.len()
    } else {
        0
    };
    assert_eq!(copies, shared, "the first step's copies");
    assert_eq!(rollouts.len(), 8);
    assert!(metrics.loss.is_finite(), "{metrics:?}");
    let after = trainer.policy().hf_tensors().unwrap();
    let moved = before
        .iter()
        .filter(|(name, (_, v))| after[*name].1 != *v)
        .count();
    assert!(moved > 0, "the GRPO step changed no weight");
    let (_, copies) = copies_during(|| trainer.step(&tasks).unwrap());
    assert_eq!(copies, 0, "the second step's copies");
    // Rollouts and the reference run on a copy in the compute type; the policy stays f32.
    let actor = trainer.policy().inference_copy();
    assert_eq!(actor.net.model.embed_tokens.val().dtype(), dtype(precision));
    let master = trainer.policy().net.model.embed_tokens.val().dtype();
    assert_eq!(master, DType::F32);
}

#[test]
fn a_grpo_step_runs_and_learns_on_the_gpu() {
    grpo_step(Precision::F32);
}

#[test]
fn a_mixed_precision_grpo_step_runs_and_learns() {
    grpo_step(mixed_precision(&gpu(true)));
}

/// A process reward model trains with mixed precision, and its held-out evaluation (an
/// inference copy whose weights are in the compute type) gives finite numbers in f32.
#[test]
fn a_mixed_precision_reward_model_trains_and_evaluates() {
    use reasonlab_model::{RewardHead, RewardModel};
    use reasonlab_train::rm::{
        Objective, RmEncodeSettings, RmExample, RmSettings, RmTrainer, encode_record,
    };
    let tok = Tokenizer::from_dir(&fixture()).unwrap();
    let examples = |n: usize| -> Vec<RmExample> {
        (0..n)
            .map(|i| {
                let bad_from = i % 3;
                let steps: Vec<String> = (0..3).map(|s| format!("{s} step {i}")).collect();
                let labels: Vec<bool> = (0..3).map(|s| s < bad_from).collect();
                let v = serde_json::json!({"prompt": "Q:", "completions": steps, "labels": labels});
                let settings = RmEncodeSettings::default();
                encode_record(&v, Objective::Process, &tok, &settings, true)
                    .unwrap()
                    .unwrap()
            })
            .collect()
    };
    let device = gpu(true);
    let precision = mixed_precision(&device);
    let lm = Model::load(&fixture(), &device).unwrap();
    let rm = RewardModel::from_lm(lm, RewardHead::Token, 0).unwrap();
    let settings = RmSettings {
        objective: Objective::Process,
        epochs: 1,
        batch_size: 4,
        ..RmSettings::default()
    };
    let model = rm.model().clone().with_mixed_precision(precision).unwrap();
    let mut trainer = RmTrainer::new(
        settings,
        rm.head(),
        model,
        examples(8),
        examples(4),
        tok.pad_id(),
    )
    .unwrap();
    let before = trainer.evaluate().unwrap();
    let m = trainer.step().unwrap().expect("a step");
    assert!(m.loss.is_finite() && !m.skipped, "{m:?}");
    let after = trainer.evaluate().unwrap();
    assert!(
        before.loss.is_finite() && after.loss.is_finite(),
        "{before:?} → {after:?}"
    );
}
