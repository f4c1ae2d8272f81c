//! The inference kernels (`decode.rs`, taken on the plain Flex device) give the logits of the
//! composed burn ops (taken on the autodiff device): without a cache on a padded batch, and
//! through a KV cache — prefill of left-padded prompts, then decode steps — for Qwen2 (q/k/v
//! bias, tied head), Qwen3 (q/k norm) and Llama (untied head), at a head dim the AVX-512
//! attention takes (64) and one it leaves to the portable loop (12). Packed projections
//! (`CausalLm::pack_projections`) keep the weights and the logits.

use reasonlab_model::burn::tensor::FloatDType;
use reasonlab_model::config::{Architecture, ModelConfig};
use reasonlab_model::decoder::{CausalLm, cast_floats};
use reasonlab_model::tensor::{Device, Tensor};
use reasonlab_model::{KvCache, Model, PadSide, TokenBatch};

fn config(architecture: Architecture, head_dim: usize, tied: bool) -> ModelConfig {
    let mut c = reasonlab_model::bench_config();
    c.architecture = architecture;
    c.vocab_size = 97;
    c.hidden_size = 48;
    c.intermediate_size = 100; // not a multiple of the 48-column tiles or of 16 lanes
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = head_dim;
    c.tie_word_embeddings = tied;
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

/// The last logits of three left-padded `prompts` prefilled through a KV cache, then of five
/// decode steps through it (ids 10, 20, 30 plus the step).
fn cached_logits(m: &Model, prompts: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let prefill = TokenBatch::pad(prompts, 0, PadSide::Left);
    let mut cache = KvCache::default();
    let mut out = vec![values(m.last_logits(&prefill, Some(&mut cache)).unwrap())];
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

fn check(config: ModelConfig) {
    check_with(
        config,
        &[vec![3, 1, 4, 1, 5, 9, 2], vec![6, 5], vec![3, 5, 8, 9]],
    );
}

fn check_with(config: ModelConfig, prompts: &[Vec<u32>]) {
    let fast = Model::random(config.clone(), 3, &Device::flex());
    let composed = Model::random(config.clone(), 3, &Device::flex().autodiff());
    // The comparison means something only if the two models take different paths.
    let w = |m: &Model| m.net.model.layers[0].mlp.up_proj.weight.val();
    assert!(!reasonlab_model::decode::enabled(
        1,
        &w(&composed),
        &w(&composed)
    ));
    #[cfg(target_arch = "x86_64")]
    {
        let x = w(&fast);
        assert_eq!(
            reasonlab_model::decode::enabled(1, &x, &x),
            std::arch::is_x86_feature_detected!("avx512f")
        );
    }
    let label = format!(
        "{:?} d={} tied={}",
        config.architecture, config.head_dim, config.tie_word_embeddings
    );

    // Whole sequences, right-padded, no cache.
    let batch = TokenBatch::pad(&[vec![1, 5, 9, 3, 7, 11], vec![2, 4, 6]], 0, PadSide::Right);
    let logits = |m: &Model| {
        let l = m.logits(&batch, None).unwrap();
        let [b, t, v] = l.dims();
        values(l.reshape([b * t, v]))
    };
    let (a, b) = (logits(&fast), logits(&composed));
    assert!(a.iter().any(|x| x.abs() > 1e-3), "{label}: trivial logits");
    assert!(
        worst(&a, &b) < 1e-4,
        "{label}: logits differ by {}",
        worst(&a, &b)
    );

    // Left-padded prompts through the cache, then decode steps feeding the same tokens.
    let run = |m: &Model| cached_logits(m, prompts);
    for (step, (a, b)) in run(&fast).iter().zip(run(&composed)).enumerate() {
        assert!(
            worst(a, &b) < 1e-4,
            "{label}: step {step} differs by {}",
            worst(a, &b)
        );
    }
}

#[test]
fn decode_kernels_match_the_composed_ops() {
    check(config(Architecture::Qwen2, 64, true));
    check(config(Architecture::Qwen3, 64, true));
    check(config(Architecture::Llama, 64, false));
    check(config(Architecture::Qwen2, 12, false));
}

/// Large enough that the dense layers split their columns over rayon tasks and attention
/// spreads its (sequence, kv head) groups (both above `decode`'s parallel-work threshold).
#[test]
fn parallel_decode_kernels_match_the_composed_ops() {
    let mut c = config(Architecture::Qwen2, 64, true);
    c.hidden_size = 256;
    c.intermediate_size = 1100;
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|i| (0..40 - 9 * i).map(|j| (j * 7 + i) % 97).collect())
        .collect();
    check_with(c, &prompts);
}

/// The decode kernels keep packed copies of weights; a weight replaced after it was packed
/// (as an optimiser step does) must be read afresh, not from the old copy.
#[test]
fn a_replaced_weight_is_not_served_from_its_old_packed_copy() {
    use reasonlab_model::burn::module::Param;
    use reasonlab_model::tensor::TensorData;
    let c = config(Architecture::Qwen2, 64, true);
    let batch = TokenBatch::pad(&[vec![1, 5, 9, 3, 7, 11], vec![2, 4, 6]], 0, PadSide::Right);
    let logits = |m: &Model| values(m.logits(&batch, None).unwrap().reshape([2 * 6, 97]));
    let scale_up_proj = |m: &mut Model, device: &Device| {
        let p = &mut m.net.model.layers[0].mlp.up_proj.weight;
        let dims = p.dims();
        let v: Vec<f32> = p.val().try_into_vec_as::<f32>().unwrap();
        let v: Vec<f32> = v.iter().map(|x| x * 1.5).collect();
        *p = Param::from_tensor(Tensor::from_data(TensorData::new(v, dims), device));
    };
    let mut fast = Model::random(c.clone(), 5, &Device::flex());
    let before = logits(&fast); // packs every weight
    scale_up_proj(&mut fast, &Device::flex());
    let after = logits(&fast);
    let mut composed = Model::random(c, 5, &Device::flex().autodiff());
    scale_up_proj(&mut composed, &Device::flex().autodiff());
    let expected = logits(&composed);
    assert!(
        worst(&before, &after) > 1e-3,
        "the change did not reach the logits"
    );
    assert!(
        worst(&after, &expected) < 1e-4,
        "stale weights: {}",
        worst(&after, &expected)
    );
}

/// A reserved cache never regrows (not when rows are dropped either) and gives exactly the
/// logits of one that grows as it goes.
#[test]
fn a_reserved_cache_keeps_its_room_and_changes_nothing() {
    let model = Model::random(config(Architecture::Qwen2, 64, true), 5, &Device::flex());
    let prompts = [vec![3, 1, 4, 1, 5], vec![9, 2], vec![6, 5, 3]];
    let prefill = TokenBatch::pad(&prompts, 0, PadSide::Left);
    // Reserved before the prefill (the buffers are made at that size) or after it (grown).
    let run = |reserve: Option<usize>, before: bool| {
        let mut cache = KvCache::default();
        if let (Some(positions), true) = (reserve, before) {
            cache.reserve(positions);
            assert_eq!(cache.capacity(), 0);
        }
        let mut out = vec![values(
            model.last_logits(&prefill, Some(&mut cache)).unwrap(),
        )];
        assert_eq!(cache.capacity(), if before { 13 } else { 5 });
        if let Some(positions) = reserve {
            cache.reserve(positions);
            assert_eq!(cache.capacity(), positions);
        }
        let mut rows = 3;
        for step in 0..8u32 {
            if step == 4 {
                cache.select_rows(&[2, 0]);
                rows = 2;
            }
            let batch = TokenBatch {
                ids: (0..rows).map(|r| 10 + step + r).collect(),
                positions: vec![5 + step; rows as usize],
                padding: vec![false; rows as usize],
                b: rows as usize,
                t: 1,
            };
            out.push(values(model.last_logits(&batch, Some(&mut cache)).unwrap()));
            if let Some(positions) = reserve {
                assert_eq!(cache.capacity(), positions, "step {step}");
            }
        }
        assert_eq!(cache.seq_len(), 13);
        out
    };
    let grown = run(None, false);
    assert_eq!(run(Some(13), false), grown);
    assert_eq!(run(Some(13), true), grown);
}

/// With a cache, `last_logits` takes the fused path (`Model::fused_last_logits`), which runs
/// the kernels of the op-by-op path (`hidden`, then the head) on raw buffers, and in the last
/// layer only for the last position: the logits must be bit-identical — the prefill's, then
/// step after step (so the caches each path fills agree too) — with left padding (an
/// attention bias), a cache reserved or not (it then regrows), rows dropped mid-way, columns
/// split over rayon tasks (the larger config), a prefill too long for the fused path (more
/// than `decode::MAX_ROWS` tokens: it declines, the decode steps still take it), and a chunk
/// of several tokens per row appended to a filled cache.
#[test]
fn the_fused_path_equals_the_op_by_op_kernels() {
    let mut wide = config(Architecture::Qwen2, 64, true);
    wide.hidden_size = 256;
    wide.intermediate_size = 1100;
    let short = vec![vec![3, 1, 4, 1, 5, 9, 2], vec![6, 5], vec![3, 5, 8, 9]];
    let long: Vec<Vec<u32>> = (0..3)
        .map(|i| (0..200 - 30 * i).map(|j| (j * 7 + i) % 97).collect())
        .collect();
    let equal = vec![vec![3, 1, 4, 1], vec![6, 5, 9, 2], vec![3, 5, 8, 9]];
    let configs = [
        (config(Architecture::Qwen2, 64, true), None, &short),
        (config(Architecture::Qwen3, 64, true), Some(20), &short),
        (config(Architecture::Llama, 64, false), Some(20), &short),
        (config(Architecture::Qwen2, 12, false), None, &short),
        (wide, Some(20), &short),
        // No padding: decode steps without an attention bias.
        (config(Architecture::Qwen3, 64, false), None, &equal),
        (config(Architecture::Qwen2, 64, true), Some(220), &long),
        // The op-by-op prefill fills empty slots (views of its k, v); the fused steps regrow them.
        (config(Architecture::Qwen2, 64, true), None, &long),
    ];
    // The fused path is for CPUs the decode kernels suit (AVX-512 on x86-64); elsewhere it
    // declines and `last_logits` runs op by op.
    #[cfg(target_arch = "x86_64")]
    let fused_here = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let fused_here = true;
    for (c, reserve, prompts) in configs {
        let label = format!("{:?} d={} reserve={reserve:?}", c.architecture, c.head_dim);
        let vocab = c.vocab_size;
        let model = Model::random(c, 7, &Device::flex());
        let prefill = TokenBatch::pad(prompts, 0, PadSide::Left);
        let (mut fused, mut by_op) = (KvCache::default(), KvCache::default());
        if let Some(positions) = reserve {
            fused.reserve(positions);
            by_op.reserve(positions);
        }
        let op_by_op = |batch: &TokenBatch, cache: &mut KvCache| {
            let h = model.hidden(batch, Some(cache)).unwrap();
            let [b, t, _] = h.dims();
            values(model.net.head(h.narrow(1, t - 1, 1)).reshape([b, vocab]))
        };
        let compare = |[fused, by_op]: [&mut KvCache; 2],
                       batch: &TokenBatch,
                       what: &str,
                       expect_fused: bool| {
            let a = model.fused_last_logits(batch, fused).unwrap();
            let a = match (a, expect_fused) {
                (Some(a), true) => values(a),
                (None, false) => values(model.last_logits(batch, Some(fused)).unwrap()),
                (a, _) => panic!("{label} {what}: fused = {}", a.is_some()),
            };
            let b = op_by_op(batch, by_op);
            assert!(a.iter().any(|x| x.abs() > 1e-3), "{label} {what}: trivial");
            assert_eq!(a, b, "{label} {what}");
            assert_eq!(fused.seq_len(), by_op.seq_len(), "{label} {what}");
            assert_eq!(fused.capacity(), by_op.capacity(), "{label} {what}");
        };
        let rows = prefill.b * prefill.t;
        let fits = rows <= reasonlab_model::decode::MAX_ROWS;
        compare(
            [&mut fused, &mut by_op],
            &prefill,
            "prefill",
            fused_here && fits,
        );
        let mut rows: Vec<u32> = vec![0, 1, 2];
        for step in 0..10u32 {
            if step == 5 {
                fused.select_rows(&[2, 0]);
                by_op.select_rows(&[2, 0]);
                rows = vec![2, 0];
            }
            let batch = TokenBatch {
                ids: rows
                    .iter()
                    .map(|&r| (7 * step + 3 * r + 1) % vocab as u32)
                    .collect(),
                positions: rows
                    .iter()
                    .map(|&r| prompts[r as usize].len() as u32 + step)
                    .collect(),
                padding: vec![false; rows.len()],
                b: rows.len(),
                t: 1,
            };
            let what = format!("step {step}");
            compare([&mut fused, &mut by_op], &batch, &what, fused_here);
        }
        // Several new tokens per row onto a filled cache (a chunked prefill), the middle one
        // of the first row padding.
        let t = 3;
        let chunk = TokenBatch {
            ids: (0..rows.len() * t)
                .map(|i| (5 * i as u32 + 2) % vocab as u32)
                .collect(),
            positions: rows
                .iter()
                .flat_map(|&r| {
                    (0..t as u32).map(move |i| prompts[r as usize].len() as u32 + 10 + i)
                })
                .collect(),
            padding: (0..rows.len() * t).map(|i| i == 1).collect(),
            b: rows.len(),
            t,
        };
        compare([&mut fused, &mut by_op], &chunk, "chunk", fused_here);
    }
}

/// A prompt's logits do not depend on its batch: alone, or left-padded beside a longer prompt,
/// they are bit-identical at the prefill and at every decode step — attention starts at a
/// row's first visible key, so the padding does not shift which partial sums the keys land in.
/// (What makes generation's "same seed, same output, whatever the batch" exact.)
///
/// Bit-identity holds where reasonlab's own kernels run (AVX-512 x86-64, and other
/// architectures). An x86-64 CPU without AVX-512 multiplies through burn's gemm, whose AVX2
/// kernels sum in an order that depends on the number of rows: there the logits agree to
/// 1e-5 and the test says so.
#[test]
fn a_prompt_gives_the_same_logits_alone_or_padded_in_a_batch() {
    let exact = !cfg!(target_arch = "x86_64") || reasonlab_model::kernels::avx512_available();
    if !exact {
        eprintln!(
            "WARNING: this CPU has no AVX-512F: burn's gemm runs the matmuls, and logits alone \
             and padded are compared to 1e-5, NOT bit for bit"
        );
    }
    let same = |a: &[Vec<f32>], b: &[Vec<f32>], what: &str| {
        if exact {
            assert_eq!(a, b, "{what}");
        } else {
            let worst = a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{what}: logits differ by {worst}");
        }
    };
    let short: Vec<u32> = vec![5, 9, 2, 7];
    let long: Vec<u32> = (0..21).map(|i| (i * 5 + 1) % 97).collect();
    for c in [
        config(Architecture::Qwen2, 64, true),
        config(Architecture::Qwen3, 64, true),
        config(Architecture::Llama, 12, false),
    ] {
        let label = format!("{:?} d={}", c.architecture, c.head_dim);
        let model = Model::random(c, 9, &Device::flex());
        // The logits of `prompts[row]` at the prefill and at six decode steps; each prompt's
        // next tokens depend only on the step and the prompt.
        let run = |prompts: &[&Vec<u32>], row: usize| {
            let owned: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
            let prefill = TokenBatch::pad(&owned, 0, PadSide::Left);
            let mut cache = KvCache::default();
            cache.reserve(prefill.t + 6);
            let b = prompts.len();
            let pick = |l: Tensor<2>| values(l)[row * 97..(row + 1) * 97].to_vec();
            let mut out = vec![pick(model.last_logits(&prefill, Some(&mut cache)).unwrap())];
            for step in 0..6u32 {
                let batch = TokenBatch {
                    ids: prompts
                        .iter()
                        .map(|p| (7 * step + p.len() as u32) % 97)
                        .collect(),
                    positions: prompts.iter().map(|p| p.len() as u32 + step).collect(),
                    padding: vec![false; b],
                    b,
                    t: 1,
                };
                out.push(pick(model.last_logits(&batch, Some(&mut cache)).unwrap()));
            }
            out
        };
        let alone = run(&[&short], 0);
        assert!(alone[0].iter().any(|x| x.abs() > 1e-3), "{label}: trivial");
        same(
            &alone,
            &run(&[&long, &short], 1),
            &format!("{label}: short prompt, padded"),
        );
        same(
            &run(&[&long], 0),
            &run(&[&long, &short], 0),
            &format!("{label}: long prompt"),
        );
    }
}

/// No token per row has no last logits: an error, with or without a cache, not a panic.
#[test]
fn an_empty_batch_row_is_an_error() {
    let model = Model::random(config(Architecture::Qwen2, 64, true), 1, &Device::flex());
    let empty = TokenBatch {
        ids: vec![],
        positions: vec![],
        padding: vec![],
        b: 2,
        t: 0,
    };
    let err = model.last_logits(&empty, None).unwrap_err().to_string();
    assert!(err.contains("at least one token"), "{err}");
    assert!(
        model
            .last_logits(&empty, Some(&mut KvCache::default()))
            .is_err()
    );
}

/// A cache told the most positions it will hold stops doubling there, on the fused path and
/// on burn's ops alike (an unlimited one doubles past them), and gives the same logits.
#[test]
fn a_limited_cache_grows_no_further_than_its_limit() {
    let config = config(Architecture::Qwen2, 64, true);
    for device in [Device::flex(), Device::flex().autodiff()] {
        let model = Model::random(config.clone(), 3, &device);
        let run = |limit: Option<usize>| {
            let mut cache = KvCache::default();
            cache.reserve(8);
            if let Some(limit) = limit {
                cache.limit(limit);
            }
            let prompt = TokenBatch::pad(&[vec![3, 1, 4], vec![1, 5, 9]], 0, PadSide::Left);
            let mut logits = values(model.last_logits(&prompt, Some(&mut cache)).unwrap());
            let mut capacities = vec![cache.capacity()];
            for step in 0..97u32 {
                let batch = TokenBatch {
                    ids: vec![10 + step % 80, 20 + step % 70],
                    positions: vec![3 + step, 3 + step],
                    padding: vec![false; 2],
                    b: 2,
                    t: 1,
                };
                logits = values(model.last_logits(&batch, Some(&mut cache)).unwrap());
                capacities.push(cache.capacity());
            }
            assert_eq!(cache.seq_len(), 100);
            (capacities, logits)
        };
        let (limited, last) = run(Some(100));
        let (unlimited, unlimited_last) = run(None);
        assert_eq!(*limited.iter().max().unwrap(), 100, "{limited:?}");
        assert_eq!(*unlimited.iter().max().unwrap(), 128, "{unlimited:?}");
        assert_eq!(last, unlimited_last);
    }
}

/// Whether every layer of `net` runs packed projections.
fn is_packed(net: &CausalLm) -> bool {
    net.model
        .layers
        .iter()
        .all(|l| l.self_attn.qkv.is_some() && l.mlp.gate_up.is_some())
}

/// Logits of a padded batch without a cache, then [`cached_logits`].
fn packed_test_logits(m: &Model) -> Vec<Vec<f32>> {
    let batch = TokenBatch::pad(&[vec![1, 5, 9, 3, 7, 11], vec![2, 4, 6]], 0, PadSide::Right);
    let l = m.logits(&batch, None).unwrap();
    let [b, t, v] = l.dims();
    let prompts = [vec![3, 1, 4, 1, 5, 9, 2], vec![6, 5], vec![3, 5, 8, 9]];
    let mut out = vec![values(l.reshape([b * t, v]))];
    out.extend(cached_logits(m, &prompts));
    out
}

/// The packing tests' model: head dim 16, the head tied but for Llama.
fn packed_config(architecture: Architecture) -> ModelConfig {
    config(architecture, 16, architecture != Architecture::Llama)
}

#[test]
fn packed_projections_keep_the_weights_and_the_logits() {
    let device = Device::flex().autodiff();
    for architecture in [
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Llama,
    ] {
        let plain = Model::random(packed_config(architecture), 3, &device);
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
        let (a, b) = (packed_test_logits(&plain), packed_test_logits(&packed));
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
    let config = packed_config(Architecture::Qwen2);
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
