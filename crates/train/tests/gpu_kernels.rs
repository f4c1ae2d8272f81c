//! reasonlab's fused GPU kernels (RMSNorm, the attention softmax with and without its mask,
//! SwiGLU, RoPE, attention, token log-probs; the draw filter against the host's sampler)
//! against burn's
//! composed ops on the same device, in f32 and f16, on shapes that exercise the kernels' edge
//! cases: rows shorter than a cube, longer than it and not a power of two; more rows than one
//! grid axis holds; grouped-query heads sharing a mask row; masked keys.
//!
//! ```text
//! cargo test --workspace --features reasonlab-train/wgpu --test gpu_kernels
//! ```
//!
//! With `REASONLAB_GPU_KERNELS=composed` set, the fused entry points take the composed ops and
//! these comparisons hold trivially; `the_composed_ops_run_when_asked` checks that switch.
//!
//! Tolerances: f32 kernels sum in another order than burn's reductions, so 1e-5 absolute on
//! values of order 1; in f16 both paths round their output to f16 (2⁻¹¹ relative), so 4e-3.
#![cfg(any(feature = "wgpu", feature = "vulkan"))]

mod gpu_common;

use gpu_common::{backend, max_abs_diff, no_device};
use reasonlab_generate::SamplingParams;
use reasonlab_model::burn::tensor::{DType, FloatDType};
use reasonlab_model::fused::RopeLayout::{HeadsFirst, Projections};
use reasonlab_model::fused::{self, GpuAttention, GpuKernels, composed};
use reasonlab_model::kernels::gpu;
use reasonlab_model::tensor::{Device, Int, Tensor, TensorData};

/// The GPU device without autodiff (inference).
fn gpu() -> Device {
    match reasonlab_model::open(backend(), false) {
        Ok((device, _)) => device,
        Err(e) => no_device("GPU device", e),
    }
}

/// Values in [-scale, scale) from a fixed linear congruential sequence.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor<const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &Device,
) -> Tensor<D> {
    let t = Tensor::<D>::from_data(TensorData::new(v, shape), device);
    match dtype {
        DType::F16 => t.cast(FloatDType::F16),
        _ => t,
    }
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(FloatDType::F32).try_into_vec_as::<f32>().unwrap()
}

/// Asserts that the fused values lie within `tol` of the composed ones, printing the gap.
fn close(what: &str, fused: &[f32], composed: &[f32], tol: f32) {
    let diff = max_abs_diff(fused, composed);
    eprintln!("{what}: max |Δ| = {diff:.2e}");
    assert!(diff < tol, "{what} differs by {diff}");
}

/// `x` as made (`in_dtype`), or cast to f32: the reference the reduced-precision results are
/// measured against.
fn computed_in<const D: usize>(x: Tensor<D>, in_dtype: bool) -> Tensor<D> {
    match in_dtype {
        true => x,
        false => x.cast(FloatDType::F32),
    }
}

/// How far the fused kernel's values and the composed ops', both in a reduced type, lie from
/// the composed ops' in f32 on the same inputs, printed: (fused, composed).
fn from_f32(what: &str, fused: &[f32], composed: &[f32], reference: &[f32]) -> (f32, f32) {
    let (ours, theirs) = (
        max_abs_diff(fused, reference),
        max_abs_diff(composed, reference),
    );
    eprintln!("{what}: max |Δ| from f32 {ours:.2e} (composed {theirs:.2e})");
    (ours, theirs)
}

/// The float types this device computes in: f32, and f16 where the adapter has it.
fn dtypes(device: &Device) -> Vec<(DType, f32)> {
    let mut d = vec![(DType::F32, 1e-5)];
    if device.supports_dtype(DType::F16) {
        d.push((DType::F16, 4e-3));
    } else {
        eprintln!("WARNING: this adapter has no f16: the f16 kernels were NOT exercised");
    }
    d
}

#[test]
fn fused_rms_norm_matches_the_composed_op() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        // A row shorter than a cube, one longer and not a power of two, and more rows than one
        // grid axis (65,535 cubes) holds.
        for (rows, d) in [(15, 7), (2, 1000), (70_000, 8)] {
            let x = values(rows * d, 1, 3.0);
            let w = values(d, 2, 1.5);
            let run = |fused_path: bool| {
                let x = tensor(x.clone(), [rows, d], dtype, &device);
                let w = tensor(w.clone(), [d], dtype, &device);
                let y = match fused_path {
                    true => fused::rms_norm(x, w, 1e-6),
                    false => composed::rms_norm(x, w, 1e-6),
                };
                assert_eq!(y.dtype(), dtype);
                read(y)
            };
            let what = format!("rms_norm {dtype:?} ({rows}, {d})");
            close(&what, &run(true), &run(false), tol);
        }
    }
}

/// The residual add and the next RMSNorm in one kernel (inference) against an add and the
/// composed norm: the sum as the add rounds it, the norm as the fused RMSNorm's.
#[test]
fn fused_add_rms_norm_matches_the_composed_ops() {
    let device = gpu();
    assert!(fused::fuses_add_rms_norm(&device));
    for (dtype, tol) in dtypes(&device) {
        for (rows, d) in [(15, 7), (6, 1000)] {
            let (x, r, w) = (
                values(rows * d, 21, 3.0),
                values(rows * d, 22, 3.0),
                values(d, 23, 1.5),
            );
            let xt = tensor(x.clone(), [rows, d], dtype, &device);
            let r = tensor(r, [rows, d], dtype, &device);
            let w = tensor(w, [d], dtype, &device);
            let sum_c = xt.clone() + r.clone();
            let normed_c = composed::rms_norm(sum_c.clone(), w.clone(), 1e-6);
            // `x` held elsewhere (the sum in a buffer of its own), and held by nobody (the sum
            // written over it); `xt` keeps its values either way.
            let fresh = tensor(x, [rows, d], dtype, &device);
            for (how, x) in [("held", xt.clone()), ("in place", fresh)] {
                let (sum, normed) = fused::add_rms_norm(x, r.clone(), w.clone(), 1e-6);
                assert_eq!((sum.dtype(), normed.dtype()), (dtype, dtype));
                let what = format!("{dtype:?} ({rows}, {d}), {how}");
                close(
                    &format!("add {what}"),
                    &read(sum),
                    &read(sum_c.clone()),
                    tol,
                );
                let normed_c = read(normed_c.clone());
                close(
                    &format!("add + rms_norm {what}"),
                    &read(normed),
                    &normed_c,
                    tol,
                );
            }
            assert_eq!(
                read(xt),
                read(tensor(values(rows * d, 21, 3.0), [rows, d], dtype, &device))
            );
        }
    }
}

/// A step's keys and values into the KV cache in one kernel (RoPE on k with its bias, v with
/// its bias) against the composed RoPE, bias add and `slice_assign`: the whole buffers, so
/// the positions outside the step stay as they were; a buffer another tensor still holds is
/// copied, not written.
#[test]
fn fused_kv_append_matches_the_composed_ops() {
    let device = gpu();
    assert!(fused::fuses_kv_append(&device));
    for (dtype, tol) in dtypes(&device) {
        for (b, t, kv, d, capacity, len, biased) in [
            (2, 1, 2, 8, 10, 4, true),
            (2, 3, 2, 64, 10, 7, false),
            (1, 2, 3, 64, 5, 0, true),
        ] {
            let case = format!("{dtype:?} b {b} t {t} kv {kv} d {d} at {len} of {capacity}");
            let buf = [b, kv, capacity, d];
            let (k_cache, v_cache) = (
                values(b * kv * capacity * d, 31, 1.0),
                values(b * kv * capacity * d, 32, 1.0),
            );
            let (k, v) = (
                values(b * t * kv * d, 33, 2.0),
                values(b * t * kv * d, 34, 2.0),
            );
            let angles = values(b * t * d / 2, 35, 3.0);
            let (mut cos, mut sin) = (vec![0f32; b * t * d], vec![0f32; b * t * d]);
            for r in 0..b * t {
                for i in 0..d / 2 {
                    let a = angles[r * d / 2 + i];
                    (cos[r * d + i], cos[r * d + d / 2 + i]) = (a.cos(), a.cos());
                    (sin[r * d + i], sin[r * d + d / 2 + i]) = (-a.sin(), a.sin());
                }
            }
            let (k_bias, v_bias) = (values(kv * d, 36, 1.0), values(kv * d, 37, 1.0));
            let run = |fused_path: bool, shared: bool| {
                let kc = tensor(k_cache.clone(), buf, dtype, &device);
                let vc = tensor(v_cache.clone(), buf, dtype, &device);
                let held = shared.then(|| (kc.clone(), vc.clone()));
                let args = (
                    tensor(k.clone(), [b, t, kv, d], dtype, &device),
                    tensor(v.clone(), [b, t, kv, d], dtype, &device),
                    tensor(cos.clone(), [b, t, 1, d], dtype, &device),
                    tensor(sin.clone(), [b, t, 1, d], dtype, &device),
                    biased.then(|| {
                        (
                            tensor(k_bias.clone(), [kv * d], dtype, &device),
                            tensor(v_bias.clone(), [kv * d], dtype, &device),
                        )
                    }),
                );
                let (k, v, cos, sin, biases) = args;
                let step = fused::KvStep {
                    k,
                    v,
                    cos,
                    sin,
                    biases,
                };
                let (kc, vc) = match fused_path {
                    true => fused::append_kv(kc, vc, step, len),
                    false => composed::append_kv(kc, vc, step, len),
                };
                if let Some((hk, hv)) = held {
                    assert_eq!(read(hk), read(tensor(k_cache.clone(), buf, dtype, &device)));
                    assert_eq!(read(hv), read(tensor(v_cache.clone(), buf, dtype, &device)));
                }
                (read(kc), read(vc))
            };
            let ((kf, vf), (kc, vc)) = (run(true, false), run(false, false));
            close(&format!("kv append, keys, {case}"), &kf, &kc, 4.0 * tol);
            close(&format!("kv append, values, {case}"), &vf, &vc, tol);
            assert_ne!(
                kc,
                read(tensor(k_cache.clone(), buf, dtype, &device)),
                "{case}: written"
            );
            let (ks, vs) = run(true, true);
            assert_eq!((ks, vs), (kf, vf), "{case}: a held buffer is copied");
        }
    }
}

/// Three AdamW steps in one kernel each against burn's ops (`composed::adamw`), with and
/// without weight decay: the parameter and both moments; a parameter still held elsewhere is
/// left as it was.
#[test]
fn fused_adamw_matches_the_composed_ops() {
    let device = gpu();
    assert!(fused::fuses_adamw(&device));
    for weight_decay in [0.0f64, 0.1] {
        let n = 1000;
        let start = values(n, 41, 1.0);
        let run = |fused_path: bool| {
            let tensor = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [n]), &device);
            let mut p = tensor(start.clone());
            let (mut m, mut v) = (tensor(vec![0.0; n]), tensor(vec![0.0; n]));
            for t in 1..=3 {
                let g = tensor(values(n, 41 + t as u64, 0.5));
                let lr = 1e-2;
                let s = fused::AdamWScalars {
                    beta1: 0.9,
                    beta2: 0.999,
                    correction1: 1f32 - 0.9f32.powi(t),
                    correction2: 1f32 - 0.999f32.powi(t),
                    eps: 1e-8,
                    lr: lr as f32,
                    decay: (1.0 - lr * weight_decay) as f32,
                };
                let held = p.clone();
                (p, m, v) = match fused_path {
                    true => fused::adamw(p, g, m, v, s),
                    false => composed::adamw(p, g, m, v, s),
                };
                if t == 1 {
                    assert_eq!(read(held), start, "a held parameter is not written");
                }
            }
            (read(p), read(m), read(v))
        };
        let ((p, m, v), (pc, mc, vc)) = (run(true), run(false));
        let what = format!("adamw, weight decay {weight_decay}");
        close(&format!("{what}: parameter"), &p, &pc, 1e-6);
        close(&format!("{what}: first moment"), &m, &mc, 1e-7);
        close(&format!("{what}: second moment"), &v, &vc, 1e-7);
        assert!(max_abs_diff(&p, &start) > 1e-3, "the parameter moved");
    }
}

#[test]
fn fused_swiglu_matches_the_composed_op() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        let shape = [3, 17, 300];
        let n = shape.iter().product();
        // Gates far enough out that exp(−gate) overflows f32 on one side.
        let (gate, up) = (values(n, 3, 100.0), values(n, 4, 2.0));
        let run = |fused_path: bool| {
            let g = tensor(gate.clone(), shape, dtype, &device);
            let u = tensor(up.clone(), shape, dtype, &device);
            let y = match fused_path {
                true => fused::swiglu(g, u),
                false => composed::swiglu(g, u),
            };
            assert_eq!(y.dtype(), dtype);
            read(y)
        };
        let (a, b) = (run(true), run(false));
        assert!(a.iter().all(|v| v.is_finite()));
        // Values reach 200 here: the tolerance is relative to them.
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f32::max);
        eprintln!("swiglu {dtype:?}: max relative |Δ| = {diff:.2e}");
        assert!(diff < tol, "swiglu {dtype:?} differs by {diff}");
    }
}

/// SwiGLU and RoPE read their inputs where they lie: column slices of one wider tensor (the
/// halves of a packed gate-and-up projection, q's heads of a packed q/k/v one) in place, and
/// layouts whose rows are not contiguous (a transpose) after a copy. Both give what the
/// kernels give on contiguous copies of the same values.
#[test]
fn fused_kernels_read_packed_columns_and_any_layout() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        // A packed (b, t, 2·width) projection output, gate then up; its halves start 512 bytes
        // apart or more, a multiple of every device's buffer offset alignment, so that they are
        // views (burn copies a slice whose offset is not aligned).
        let (b, t, width) = (3, 5, 256);
        let packed = tensor(
            values(b * t * 2 * width, 9, 3.0),
            [b, t, 2 * width],
            dtype,
            &device,
        );
        let gate = packed.clone().slice([0..b, 0..t, 0..width]);
        let up = packed.clone().slice([0..b, 0..t, width..2 * width]);
        let copy = |x: &Tensor<3>| tensor(read(x.clone()), [b, t, width], dtype, &device);
        let expected = read(fused::swiglu(copy(&gate), copy(&up)));
        close(
            &format!("swiglu on packed halves {dtype:?}"),
            &read(fused::swiglu(gate.clone(), up.clone())),
            &expected,
            tol,
        );
        // (t, b, width) transposed back: rows not contiguous, so copied first.
        let transposed = |x: &Tensor<3>| {
            let x = tensor(
                read(x.clone().swap_dims(0, 1)),
                [t, b, width],
                dtype,
                &device,
            );
            x.swap_dims(0, 1)
        };
        close(
            &format!("swiglu on transposed inputs {dtype:?}"),
            &read(fused::swiglu(transposed(&gate), transposed(&up))),
            &expected,
            tol,
        );

        // q's four heads of d = 64 out of a packed (b, t, 8, 64) q/k/v row.
        let (heads, d) = (4, 64);
        let qkv = tensor(values(b * t * 8 * d, 10, 2.0), [b, t, 8, d], dtype, &device);
        let q = qkv.clone().slice([0..b, 0..t, 0..heads, 0..d]);
        let q_copy = tensor(read(q.clone()), [b, t, heads, d], dtype, &device);
        let angles = values(b * t * d, 11, 3.0);
        let table = |f: fn(f32) -> f32| {
            let v: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
            tensor(v, [b, t, 1, d], dtype, &device)
        };
        let rotate = Tensor::<1, Int>::from_data(
            TensorData::new((0..d).map(|j| ((j + d / 2) % d) as i64).collect(), [d]),
            &device,
        );
        let bias = tensor(values(heads * d, 12, 1.0), [heads * d], dtype, &device);
        for layout in [Projections, HeadsFirst] {
            let rope = |x: Tensor<4>| {
                let (cos, sin) = (table(f32::cos), table(f32::sin));
                read(fused::rope(
                    x,
                    cos,
                    sin,
                    rotate.clone(),
                    Some(bias.clone()),
                    layout,
                ))
            };
            close(
                &format!("rope on packed heads {dtype:?} {layout:?}"),
                &rope(q.clone()),
                &rope(q_copy.clone()),
                tol,
            );
        }
    }
}

#[test]
fn fused_softmax_matches_the_composed_op() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        // Two kv heads of four query rows each: two query heads × t = 2 new queries, so mask
        // row j mod 2 goes with query row j. Key lengths below, at and above a cube's 256 units.
        for s in [5, 256, 700] {
            let (b, kv, m, t) = (2, 2, 4, 2);
            let x = values(b * kv * m * s, 5, 8.0);
            // Causal over the last t keys, and the first key of batch 1 is padding.
            let bias = causal_mask(b, t, s, &[0, 1]);
            let run = |fused_path: bool| {
                let x = tensor(x.clone(), [b, kv, m, s], dtype, &device);
                let bias = tensor(bias.clone(), [b, t, s], dtype, &device);
                let y = match fused_path {
                    true => fused::masked_softmax(x, bias),
                    false => composed::masked_softmax(x, bias),
                };
                assert_eq!(y.dtype(), dtype);
                read(y)
            };
            let (a, c) = (run(true), run(false));
            for row in a.chunks(s) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-2, "a row sums to {sum}");
            }
            assert_eq!(a[(b * kv * m - 1) * s], 0.0, "a masked key has weight");
            close(&format!("masked_softmax {dtype:?} s = {s}"), &a, &c, tol);
            // Without a mask (a decode step whose keys are all visible).
            let run = |fused_path: bool| {
                let x = tensor(x.clone(), [b, kv, m, s], dtype, &device);
                let y = match fused_path {
                    true => fused::softmax_f32(x),
                    false => composed::softmax_f32(x),
                };
                assert_eq!(y.dtype(), dtype);
                read(y)
            };
            close(
                &format!("softmax {dtype:?} s = {s}"),
                &run(true),
                &run(false),
                tol,
            );
        }
        // More rows than one grid axis (65,535 cubes) holds.
        let (rows, s) = (70_000, 4);
        let x = values(rows * s, 8, 4.0);
        let run = |fused_path: bool| {
            let x = tensor(x.clone(), [1, 1, rows, s], dtype, &device);
            match fused_path {
                true => read(fused::softmax_f32(x)),
                false => read(composed::softmax_f32(x)),
            }
        };
        let what = format!("softmax {dtype:?} over {rows} rows");
        close(&what, &run(true), &run(false), tol);
    }
}

#[test]
fn fused_rope_matches_the_composed_op() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        // Two batch rows of three positions, two heads of d = 8 (halves of 4).
        let (b, t, heads, d) = (2, 3, 2, 8);
        let x = values(b * t * heads * d, 6, 2.0);
        let angles = values(b * t * d / 2, 7, 3.0);
        // Tables as `Rope::tables` lays them out: cos of (freqs, freqs), (−sin, sin).
        let (mut cos, mut sin) = (vec![0f32; b * t * d], vec![0f32; b * t * d]);
        for r in 0..b * t {
            for i in 0..d / 2 {
                let a = angles[r * d / 2 + i];
                cos[r * d + i] = a.cos();
                cos[r * d + d / 2 + i] = a.cos();
                sin[r * d + i] = -a.sin();
                sin[r * d + d / 2 + i] = a.sin();
            }
        }
        let rotate: Vec<i64> = (0..d).map(|j| ((j + d / 2) % d) as i64).collect();
        // The projection's bias (heads·d), folded into the kernel, or none.
        let bias = values(heads * d, 8, 1.0);
        // `heads_first`: the result as (b, heads, t, d), the layout attention reads.
        let rope = |fused_path: bool, biased: bool, heads_first: bool| {
            let x = tensor(x.clone(), [b, t, heads, d], dtype, &device);
            let cos = tensor(cos.clone(), [b, t, 1, d], dtype, &device);
            let sin = tensor(sin.clone(), [b, t, 1, d], dtype, &device);
            let rotate = Tensor::<1, Int>::from_data(TensorData::new(rotate.clone(), [d]), &device);
            let bias = biased.then(|| tensor(bias.clone(), [heads * d], dtype, &device));
            let y = match (fused_path, heads_first) {
                (true, false) => fused::rope(x, cos, sin, rotate, bias, Projections),
                (false, false) => composed::rope(x, cos, sin, rotate, bias),
                (true, true) => fused::rope(x, cos, sin, rotate, bias, HeadsFirst),
                (false, true) => composed::rope(x, cos, sin, rotate, bias).swap_dims(1, 2),
            };
            assert_eq!(y.dtype(), dtype);
            read(y)
        };
        let run = |fused_path: bool, biased: bool| rope(fused_path, biased, false);
        let (a, c) = (run(true, false), run(false, false));
        // The rotation keeps each pair's norm: a check on the composed op itself.
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        assert!((norm(&c) - norm(&x)).abs() < 1e-2 * norm(&x));
        close(&format!("rope {dtype:?}"), &a, &c, 4.0 * tol);
        let (a_biased, c_biased) = (run(true, true), run(false, true));
        assert!(
            max_abs_diff(&c_biased, &c) > 0.1,
            "the bias moves the result"
        );
        close(
            &format!("rope with a bias {dtype:?}"),
            &a_biased,
            &c_biased,
            4.0 * tol,
        );
        for biased in [false, true] {
            let (a, c) = (rope(true, biased, true), rope(false, biased, true));
            close(
                &format!("rope heads first, bias {biased}, {dtype:?}"),
                &a,
                &c,
                4.0 * tol,
            );
        }
    }
}

/// The GPU device with autodiff (training).
fn gpu_autodiff() -> Device {
    match reasonlab_model::open(backend(), true) {
        Ok((device, _)) => device,
        Err(e) => no_device("GPU device", e),
    }
}

/// A tracked input on `device`.
fn input<const D: usize>(v: &[f32], shape: [usize; D], dtype: DType, device: &Device) -> Tensor<D> {
    tensor(v.to_vec(), shape, dtype, device).require_grad()
}

/// `Σ y ⊙ r` for a fixed `r`: a loss whose gradient reaches every output element differently.
fn loss<const D: usize>(y: Tensor<D>) -> Tensor<1> {
    let r = values(y.shape().num_elements(), 99, 1.0);
    let r = tensor(r, y.dims(), y.dtype(), &y.device());
    (y * r).sum()
}

/// The largest difference between the fused and the composed gradient, relative to the
/// composed gradient's largest element.
fn relative_gap(fused: &[f32], composed: &[f32]) -> f32 {
    let scale = composed.iter().fold(0f32, |m, g| m.max(g.abs())).max(1e-6);
    assert!(
        fused.iter().all(|g| g.is_finite()),
        "a fused gradient is not finite"
    );
    max_abs_diff(fused, composed) / scale
}

/// Gradient tolerance (relative to the largest element): f32 sums in another order; f16
/// rounds each op's output.
fn grad_tolerance(dtype: DType) -> f32 {
    if dtype == DType::F32 { 1e-5 } else { 1e-2 }
}

#[test]
fn fused_kernels_have_the_composed_gradients() {
    let device = gpu_autodiff();
    for (dtype, _) in dtypes(&device) {
        let tol = grad_tolerance(dtype);
        let check = |what: &str, fused: Vec<Vec<f32>>, composed: Vec<Vec<f32>>| {
            for (i, (f, c)) in fused.iter().zip(&composed).enumerate() {
                let gap = relative_gap(f, c);
                eprintln!("{what} {dtype:?}, input {i}: relative gap {gap:.2e}");
                assert!(
                    gap < tol,
                    "{what} {dtype:?}: input {i}'s gradient differs by {gap}"
                );
            }
        };

        // RMSNorm: x and its weight, the weight trained or frozen (LoRA). The kernel sums the
        // weight's gradient over blocks of 8 rows: 12 rows of 300 (two columns a unit, the
        // last block short) and 37 of 64 (one column a unit).
        for (shape, trained) in [
            ([4, 3, 300], true),
            ([1, 37, 64], true),
            ([4, 3, 300], false),
        ] {
            let [_, _, d] = shape;
            let (x, w) = (values(shape.iter().product(), 11, 3.0), values(d, 12, 1.5));
            let run = |fused_path: bool| {
                let xt = input(&x, shape, dtype, &device);
                let wt = match trained {
                    true => input(&w, [d], dtype, &device),
                    false => tensor(w.clone(), [d], dtype, &device),
                };
                let y = match fused_path {
                    true => fused::rms_norm(xt.clone(), wt.clone(), 1e-6),
                    false => composed::rms_norm(xt.clone(), wt.clone(), 1e-6),
                };
                let grads = loss(y).backward();
                let mut out = vec![read(xt.grad(&grads).unwrap())];
                out.extend(wt.grad(&grads).map(read));
                out
            };
            let (fused_grads, composed_grads) = (run(true), run(false));
            assert_eq!(fused_grads.len(), 1 + trained as usize);
            check(&format!("rms_norm {shape:?}"), fused_grads, composed_grads);
        }

        // The residual add fused into the norm after it: x, the residual and the weight,
        // through both outputs (the sum goes on as the next residual).
        let (x, r, w) = (
            values(3600, 16, 3.0),
            values(3600, 17, 3.0),
            values(300, 18, 1.5),
        );
        let run = |fused_path: bool| {
            let xt = input(&x, [4, 3, 300], dtype, &device);
            let rt = input(&r, [4, 3, 300], dtype, &device);
            let wt = input(&w, [300], dtype, &device);
            let (sum, normed) = match fused_path {
                true => fused::add_rms_norm(xt.clone(), rt.clone(), wt.clone(), 1e-6),
                false => {
                    let sum = xt.clone() + rt.clone();
                    (sum.clone(), composed::rms_norm(sum, wt.clone(), 1e-6))
                }
            };
            let grads = (loss(normed) + loss(sum.mul_scalar(0.5))).backward();
            vec![
                read(xt.grad(&grads).unwrap()),
                read(rt.grad(&grads).unwrap()),
                read(wt.grad(&grads).unwrap()),
            ]
        };
        check("add + rms_norm", run(true), run(false));

        // Softmax with a causal mask over grouped-query heads, and without one.
        let (b, kv, m, t, s) = (2, 2, 4, 2, 37);
        let x = values(b * kv * m * s, 13, 6.0);
        let bias = causal_mask(b, t, s, &[0, 0]);
        for masked in [true, false] {
            let run = |fused_path: bool| {
                let xt = input(&x, [b, kv, m, s], dtype, &device);
                let mask = tensor(bias.clone(), [b, t, s], dtype, &device);
                let y = match (fused_path, masked) {
                    (true, true) => fused::masked_softmax(xt.clone(), mask),
                    (false, true) => composed::masked_softmax(xt.clone(), mask),
                    (true, false) => fused::softmax_f32(xt.clone()),
                    (false, false) => composed::softmax_f32(xt.clone()),
                };
                let grads = loss(y).backward();
                vec![read(xt.grad(&grads).unwrap())]
            };
            check(
                if masked { "masked softmax" } else { "softmax" },
                run(true),
                run(false),
            );
        }

        // SwiGLU: gate and up (one kernel for both gradients), and up alone.
        let (g, u) = (values(3 * 5 * 64, 14, 8.0), values(3 * 5 * 64, 15, 2.0));
        for gate_trained in [true, false] {
            let run = |fused_path: bool| {
                let gt = match gate_trained {
                    true => input(&g, [3, 5, 64], dtype, &device),
                    false => tensor(g.clone(), [3, 5, 64], dtype, &device),
                };
                let ut = input(&u, [3, 5, 64], dtype, &device);
                let y = match fused_path {
                    true => fused::swiglu(gt.clone(), ut.clone()),
                    false => composed::swiglu(gt.clone(), ut.clone()),
                };
                let grads = loss(y).backward();
                let mut out = vec![read(ut.grad(&grads).unwrap())];
                out.extend(gt.grad(&grads).map(read));
                out
            };
            let (fused_grads, composed_grads) = (run(true), run(false));
            assert_eq!(fused_grads.len(), 1 + gate_trained as usize);
            check(
                &format!("swiglu (gate trained: {gate_trained})"),
                fused_grads,
                composed_grads,
            );
        }

        // RoPE: x (b, t, heads, d) with constant tables.
        let (b, t, heads, d) = (2, 3, 2, 8);
        let x = values(b * t * heads * d, 16, 2.0);
        let (cos, sin) = (values(b * t * d, 17, 1.0), values(b * t * d, 18, 1.0));
        let rotate: Vec<i64> = (0..d).map(|j| ((j + d / 2) % d) as i64).collect();
        let run = |fused_path: bool| {
            let xt = input(&x, [b, t, heads, d], dtype, &device);
            let c = tensor(cos.clone(), [b, t, 1, d], dtype, &device);
            let sn = tensor(sin.clone(), [b, t, 1, d], dtype, &device);
            let r = Tensor::<1, Int>::from_data(TensorData::new(rotate.clone(), [d]), &device);
            let y = match fused_path {
                true => fused::rope(xt.clone(), c, sn, r, None, Projections),
                false => composed::rope(xt.clone(), c, sn, r, None),
            };
            let grads = loss(y).backward();
            vec![read(xt.grad(&grads).unwrap())]
        };
        check("rope", run(true), run(false));

        // RoPE with the projection's bias folded in: x's gradient and the bias's, summed
        // over (b, t).
        let bias = values(heads * d, 19, 1.0);
        let run = |fused_path: bool| {
            let xt = input(&x, [b, t, heads, d], dtype, &device);
            let bt = input(&bias, [heads * d], dtype, &device);
            let c = tensor(cos.clone(), [b, t, 1, d], dtype, &device);
            let sn = tensor(sin.clone(), [b, t, 1, d], dtype, &device);
            let r = Tensor::<1, Int>::from_data(TensorData::new(rotate.clone(), [d]), &device);
            let y = match fused_path {
                true => fused::rope(xt.clone(), c, sn, r, Some(bt.clone()), Projections),
                false => composed::rope(xt.clone(), c, sn, r, Some(bt.clone())),
            };
            let grads = loss(y).backward();
            vec![
                read(xt.grad(&grads).unwrap()),
                read(bt.grad(&grads).unwrap()),
            ]
        };
        check("rope with a bias", run(true), run(false));

        // Heads first, with and without the bias: the gradients come back in x's layout.
        for biased in [false, true] {
            let run = |fused_path: bool| {
                let xt = input(&x, [b, t, heads, d], dtype, &device);
                let bt = input(&bias, [heads * d], dtype, &device);
                let c = tensor(cos.clone(), [b, t, 1, d], dtype, &device);
                let sn = tensor(sin.clone(), [b, t, 1, d], dtype, &device);
                let r = Tensor::<1, Int>::from_data(TensorData::new(rotate.clone(), [d]), &device);
                let bias = biased.then(|| bt.clone());
                let y = match fused_path {
                    true => fused::rope(xt.clone(), c, sn, r, bias, HeadsFirst),
                    false => composed::rope(xt.clone(), c, sn, r, bias).swap_dims(1, 2),
                };
                assert_eq!(y.dims(), [b, heads, t, d]);
                let grads = loss(y).backward();
                let mut g = vec![read(xt.grad(&grads).unwrap())];
                if biased {
                    g.push(read(bt.grad(&grads).unwrap()));
                }
                g
            };
            check(
                &format!("rope heads first, bias {biased}"),
                run(true),
                run(false),
            );
        }
    }
}

#[test]
fn fused_decode_attention_matches_the_composed_ops() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        // Two kv heads of three query heads each (one cube per kv head: tiles of d keys at
        // head dims 8 and 64, of 40 at 80, 32 at 128 and 16 at 256, whose pairs' dots are
        // split over 2, 4 and 16 units), and of twenty (more units than a cube holds: a cube
        // per query row); keys and values as views of a cache buffer with room for more
        // positions; batch row 1 left-padded by two keys. Past 512 keys the four groups' keys
        // are split across cubes (three chunks of 512 at 1,500 keys and of 448 at 1,300) and
        // combined by a second kernel, with row 1 left-padded by 600 keys: its first chunk
        // sees none.
        for (s, d, n_rep) in [
            (1, 8, 3),
            (7, 64, 3),
            (300, 64, 3),
            (300, 8, 3),
            (70, 80, 3),
            (1, 128, 3),
            (300, 128, 3),
            (45, 256, 3),
            (70, 64, 20),
            (1500, 64, 3),
            (1300, 128, 3),
        ] {
            let (b, kv, cap) = (2, 2, s + 5);
            let q = values(b * kv * n_rep * d, 21, 1.0);
            let (k, v) = (
                values(b * kv * cap * d, 22, 2.0),
                values(b * kv * cap * d, 23, 2.0),
            );
            let mut bias = vec![0f32; b * s];
            let pad = if s > 512 { 600 } else { 2.min(s - 1) };
            for slot in bias.iter_mut().skip(s).take(pad) {
                *slot = -1e30;
            }
            for masked in [true, false] {
                // (fused path, computed in `dtype` rather than f32)
                let run = |fused_path: bool, in_dtype: bool| {
                    let typed = |x, shape| computed_in(tensor(x, shape, dtype, &device), in_dtype);
                    let q = typed(q.clone(), [b, kv, n_rep, d]);
                    let k = typed(k.clone(), [b, kv, cap, d]);
                    let v = typed(v.clone(), [b, kv, cap, d]);
                    let (k, v) = (k.narrow(2, 0, s), v.narrow(2, 0, s));
                    let bias = masked.then(|| {
                        computed_in(tensor(bias.clone(), [b, 1, s], dtype, &device), in_dtype)
                    });
                    let y = match fused_path {
                        true => {
                            assert!(fused::fuses_decode_attention(&q, &k));
                            fused::attention(q, k, v, None, 1, bias)
                        }
                        false => composed::attention(q, k, v, 1, bias),
                    };
                    assert_eq!(y.dims(), [b, 1, kv * n_rep, d]);
                    read(y)
                };
                let what = format!(
                    "decode attention {dtype:?} s = {s}, d = {d}, n_rep = {n_rep}, masked {masked}"
                );
                let (fused_values, composed) = (run(true, true), run(false, true));
                if dtype == DType::F32 {
                    // Outputs of order 2 (values in ±2): twice the elementwise tolerance.
                    close(&what, &fused_values, &composed, 2.0 * tol);
                } else {
                    // In f16 the composed ops round the scores to f16 (of order 10 at d = 256)
                    // where the kernel keeps them in f32: both against f32 on the same inputs.
                    // The kernel rounds once, its output: an f16 ulp below 2 is 9.8e-4, half
                    // of it 4.9e-4, plus f32 rounding on both sides.
                    let reference = run(false, false);
                    let (ours, theirs) = from_f32(&what, &fused_values, &composed, &reference);
                    assert!(
                        ours <= 1.0e-3,
                        "{what}: {ours} from f32 (the composed ops: {theirs})"
                    );
                }
            }
        }
    }
}

/// A decode step's attention with q's RoPE (and its projection's bias) applied inside the
/// attention kernel gives the RoPE kernel followed by the attention kernel (the two-kernel form
/// the step ran before), bit for bit in f32 and within two steps of f16 in f16, and the composed ops' values within the decode
/// attention's tolerance: head dims 8, 64 and 128, with and without the bias and a mask. Past the
/// decode kernel's head dims (320), the bias and rotation are composed before the attention.
#[test]
fn decode_attention_with_rope_matches_rope_then_attention() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        for (s, d) in [(7, 8), (70, 64), (70, 128), (5, 320)] {
            let (b, kv, n_rep, cap) = (2, 2, 3, s + 5);
            let fused_kernel = d <= fused::DECODE_MAX_HEAD_DIM;
            let h = kv * n_rep;
            let q = values(b * h * d, 41, 1.0);
            let (k, v) = (
                values(b * kv * cap * d, 42, 2.0),
                values(b * kv * cap * d, 43, 2.0),
            );
            let q_bias = values(h * d, 44, 1.0);
            // Tables as `Rope::tables` lays them out, times an attention scale.
            let scale = 1.0 / (d as f32).sqrt();
            let angles = values(b * d / 2, 45, 3.0);
            let (mut cos, mut sin) = (vec![0f32; b * d], vec![0f32; b * d]);
            for r in 0..b {
                for i in 0..d / 2 {
                    let a = angles[r * d / 2 + i];
                    cos[r * d + i] = a.cos() * scale;
                    cos[r * d + d / 2 + i] = a.cos() * scale;
                    sin[r * d + i] = -a.sin() * scale;
                    sin[r * d + d / 2 + i] = a.sin() * scale;
                }
            }
            let rotate: Vec<i64> = (0..d).map(|j| ((j + d / 2) % d) as i64).collect();
            let mut mask = vec![0f32; b * s];
            mask[s] = -1e30; // batch row 1 left-padded by a key
            for (biased, masked) in [(true, true), (false, false), (true, false)] {
                let run = |path: u8| {
                    let q = tensor(q.clone(), [b, 1, h, d], dtype, &device);
                    let k = tensor(k.clone(), [b, kv, cap, d], dtype, &device).narrow(2, 0, s);
                    let v = tensor(v.clone(), [b, kv, cap, d], dtype, &device).narrow(2, 0, s);
                    let bias = biased.then(|| tensor(q_bias.clone(), [h * d], dtype, &device));
                    let mask = masked.then(|| tensor(mask.clone(), [b, 1, s], dtype, &device));
                    let table = |t: &Vec<f32>| tensor(t.clone(), [b, 1, 1, d], dtype, &device);
                    let y = match path {
                        // q's RoPE inside the attention kernel; with path 3 the padding as
                        // each row's count of leading padded keys (0 and 1).
                        0 | 3 => {
                            assert_eq!(fused::fuses_decode_attention(&q, &k), fused_kernel);
                            let rope = fused::QueryRope {
                                cos: table(&cos).reshape([b, d]),
                                sin: table(&sin).reshape([b, d]),
                                bias,
                            };
                            let q = q.reshape([b, kv, n_rep, d]);
                            let mask = match (mask, path) {
                                (None, _) => fused::DecodeMask::None,
                                (Some(m), 0) => fused::DecodeMask::Additive(m),
                                (Some(_), _) => fused::DecodeMask::Starts(tensor(
                                    vec![0.0, 1.0],
                                    [b],
                                    DType::F32,
                                    &device,
                                )),
                            };
                            fused::decode_attention_with_rope(q, k, v, mask, rope)
                        }
                        // The RoPE kernel, then the attention kernel.
                        1 => {
                            let rotate = Tensor::<1, Int>::from_data(
                                TensorData::new(rotate.clone(), [d]),
                                &device,
                            );
                            let q =
                                fused::rope(q, table(&cos), table(&sin), rotate, bias, HeadsFirst);
                            let q = q.reshape([b, kv, n_rep, d]);
                            fused::attention(q, k, v, None, 1, mask).reshape([b, kv, n_rep, d])
                        }
                        // The composed ops.
                        _ => {
                            let rotate = Tensor::<1, Int>::from_data(
                                TensorData::new(rotate.clone(), [d]),
                                &device,
                            );
                            let q = composed::rope(q, table(&cos), table(&sin), rotate, bias);
                            let q = q.reshape([b, kv, n_rep, d]);
                            composed::attention(q, k, v, 1, mask).reshape([b, kv, n_rep, d])
                        }
                    };
                    assert_eq!(y.dims(), [b, kv, n_rep, d]);
                    read(y)
                };
                let what = format!(
                    "decode attention with RoPE {dtype:?} s = {s}, d = {d}, bias {biased}, masked {masked}"
                );
                let inside = run(0);
                if fused_kernel {
                    let two = run(1);
                    if dtype == DType::F32 {
                        assert_eq!(inside, two, "{what}: not the two-kernel values");
                    } else {
                        // The kernel rounds the rotated query to f16 where the RoPE kernel
                        // stores it, but a SPIR-V driver may fold that f32 → f16 → f32 round
                        // trip away (lavapipe 26 does), keeping the query in f32: then the
                        // outputs differ by a step or two of f16 (|y| < 2).
                        close(&format!("{what}: the two kernels"), &inside, &two, 2e-3);
                    }
                }
                if masked {
                    assert_eq!(inside, run(3), "{what}: the padding counts mask otherwise");
                }
                close(&what, &inside, &run(2), 2.0 * tol);
            }
        }
    }
}

/// A (b, t, s) causal mask of `t` new queries over `s` keys (the last `t` of them new), batch
/// row `i` left-padded by `pad[i]` keys: its first query rows see no key at all.
fn causal_mask(b: usize, t: usize, s: usize, pad: &[usize]) -> Vec<f32> {
    let mut bias = vec![0f32; b * t * s];
    for (i, v) in bias.iter_mut().enumerate() {
        let (row, q, k) = (i / (t * s), (i / s) % t, i % s);
        if k > s - t + q || k < pad[row] {
            *v = -1e30;
        }
    }
    bias
}

/// Flash attention against scores, softmax and weighted sum: training shapes (t = s, causal)
/// and prefill over earlier keys held in a cache buffer with spare room, queries fewer and
/// more than a tile, head dims 8, 12 (not a multiple of a unit's column stride, 8), 64 and
/// 128, grouped-query heads, left padding (query rows
/// that see no key), no mask. The mask stays f32 in every type, as the model makes it.
///
/// In f16 both paths are compared with the composed ops in f32 on the same (f16) inputs: flash
/// attention rounds only its inputs and output, the composed ops also the scores and the
/// probabilities, so flash must be at least as close (with 25% slack).
#[test]
fn flash_attention_matches_the_composed_ops() {
    let device = gpu();
    for (dtype, tol) in dtypes(&device) {
        for (t, s, d) in [
            (1, 1, 8),
            (5, 5, 8),
            (19, 19, 12),
            (37, 37, 64),
            (20, 45, 64),
            (33, 33, 128),
        ] {
            let (b, kv, n_rep, cap) = (2, 2, 3, s + 3);
            let q = values(b * kv * n_rep * t * d, 31, 1.0);
            let (k, v) = (
                values(b * kv * cap * d, 32, 2.0),
                values(b * kv * cap * d, 33, 2.0),
            );
            let bias = causal_mask(b, t, s, &[0, 2.min(s - 1)]);
            let v_bias = values(kv * d, 34, 1.0);
            for (masked, biased) in [(true, false), (false, false), (true, true)] {
                // (fused path, computed in `dtype` rather than f32)
                let run = |fused_path: bool, in_dtype: bool| {
                    let typed = |x: Tensor<4>| computed_in(x, in_dtype);
                    let q = typed(tensor(q.clone(), [b, kv, n_rep * t, d], dtype, &device));
                    let k = typed(tensor(k.clone(), [b, kv, cap, d], dtype, &device));
                    let v = typed(tensor(v.clone(), [b, kv, cap, d], dtype, &device));
                    let (k, v) = (k.narrow(2, 0, s), v.narrow(2, 0, s));
                    let bias = masked.then(|| {
                        Tensor::<3>::from_data(TensorData::new(bias.clone(), [b, t, s]), &device)
                    });
                    let vb = biased.then(|| {
                        let vb = tensor(v_bias.clone(), [1, kv, 1, d], dtype, &device);
                        computed_in(vb, in_dtype)
                    });
                    let y = match fused_path {
                        // Straight to the kernel: `fused::attention` sends t = 1 (inference) to
                        // the decode kernel.
                        true => {
                            assert!(fused::fuses_flash_attention(&q, &k));
                            let vb = vb.map(|vb| vb.reshape([kv * d]));
                            gpu::attention(q, k, v.swap_dims(1, 2), vb, bias, t)
                        }
                        false => match vb {
                            Some(vb) => composed::attention(q, k, v + vb, t, bias),
                            None => composed::attention(q, k, v, t, bias),
                        },
                    };
                    assert_eq!(y.dims(), [b, t, kv * n_rep, d]);
                    read(y)
                };
                let (flash, composed) = (run(true, true), run(false, true));
                assert!(
                    flash.iter().all(|x| x.is_finite()),
                    "flash output not finite"
                );
                let what = format!(
                    "flash attention {dtype:?} t = {t}, s = {s}, d = {d}, masked {masked}, v's bias {biased}"
                );
                if dtype == DType::F32 {
                    close(&what, &flash, &composed, tol);
                } else {
                    let reference = run(false, false);
                    let (ours, theirs) = from_f32(&what, &flash, &composed, &reference);
                    assert!(
                        ours <= 1.25 * theirs + 1e-4,
                        "{what}: {ours} from f32, the composed ops {theirs}"
                    );
                }
            }
        }
    }
}

/// Flash attention's backward pass (dq, dk, dv) against autodiff of the composed ops: a
/// causal training batch with a left-padded row (query rows that see no key), grouped-query
/// heads, more keys than a tile, head dims 8, 12, 64 and 128; and prefill over earlier keys
/// without a mask. v is given heads first, and as the projection gives it, (b, s, kv, d),
/// where the kernel writes its gradient in place of a copy, with the projection's bias for the
/// kernel to add as the values load (its gradient v's, summed over the rows).
#[test]
fn flash_attention_has_the_composed_gradients() {
    let device = gpu_autodiff();
    for (dtype, _) in dtypes(&device) {
        let tol = grad_tolerance(dtype);
        for (t, s, d, masked) in [
            (37, 37, 64, true),
            (9, 23, 8, false),
            (21, 21, 12, true),
            (18, 18, 128, true),
        ] {
            let (b, kv, n_rep) = (2, 2, 2);
            let q = values(b * kv * n_rep * t * d, 41, 1.0);
            let (k, v) = (
                values(b * kv * s * d, 42, 2.0),
                values(b * kv * s * d, 43, 2.0),
            );
            let bias = causal_mask(b, t, s, &[0, 3]);
            let v_bias = values(kv * d, 44, 1.0);
            // v as the projection gives it, with its bias for attention to add.
            for projected in [false, true] {
                let run = |fused_path: bool| {
                    let qt = input(&q, [b, kv, n_rep * t, d], dtype, &device);
                    let kt = input(&k, [b, kv, s, d], dtype, &device);
                    let bt = input(&v_bias, [kv * d], dtype, &device);
                    let (vt, heads) = match projected {
                        true => {
                            let vt = input(&v, [b, s, kv, d], dtype, &device);
                            (vt.clone(), vt.swap_dims(1, 2))
                        }
                        false => {
                            let vt = input(&v, [b, kv, s, d], dtype, &device);
                            (vt.clone(), vt)
                        }
                    };
                    let mask = masked.then(|| {
                        Tensor::<3>::from_data(TensorData::new(bias.clone(), [b, t, s]), &device)
                    });
                    let vb = projected.then(|| bt.clone());
                    let y = match fused_path {
                        true => {
                            assert!(fused::fuses_flash_attention(&qt, &kt));
                            fused::attention(qt.clone(), kt.clone(), heads, vb, t, mask)
                        }
                        false => {
                            let heads = match vb {
                                Some(vb) => heads + vb.reshape([1, kv, 1, d]),
                                None => heads,
                            };
                            composed::attention(qt.clone(), kt.clone(), heads, t, mask)
                        }
                    };
                    assert_eq!(y.dims(), [b, t, kv * n_rep, d]);
                    let grads = loss(y).backward();
                    let mut found = vec![];
                    for x in [&qt, &kt, &vt] {
                        found.push(read(x.grad(&grads).unwrap()));
                    }
                    if projected {
                        found.push(read(bt.grad(&grads).unwrap()));
                    }
                    found
                };
                let (fused, composed) = (run(true), run(false));
                let gaps = fused.iter().zip(&composed).map(|(f, c)| relative_gap(f, c));
                let gaps: Vec<f32> = gaps.collect();
                let what = format!(
                    "flash attention {dtype:?} t = {t}, s = {s}, d = {d}, v (b, s, kv, d) with its bias {projected}"
                );
                assert_eq!(gaps.len(), 3 + projected as usize);
                for (name, &gap) in ["q", "k", "v", "v's bias"].iter().zip(&gaps) {
                    eprintln!("{what}: d{name} relative gap {gap:.2e}");
                }
                for (name, &gap) in ["q", "k", "v", "v's bias"].iter().zip(&gaps) {
                    assert!(gap < tol, "{what}: d{name} differs by {gap}");
                }
            }
        }
    }
}

/// The fused token log-probabilities and entropies against the composed log-softmax and
/// gather: rows of 7 logits (shorter than a cube), 1,000 and Qwen2.5's 151,936, targets at
/// both ends of the row, logits up to ±30; and their gradient under autodiff.
#[test]
fn fused_token_logprobs_match_the_composed_ops() {
    let device = gpu();
    for (dtype, _) in dtypes(&device) {
        // f32 sums in another order; f16 logits are rounded inputs of an f32 computation on
        // both paths, which differ only in that order too.
        let tol = 2e-5;
        for vocab in [7, 1000, 151_936] {
            let rows = 5;
            let logits = values(rows * vocab, 51, 30.0);
            let targets: Vec<i64> = (0..rows).map(|r| ((r * 7919) % vocab) as i64).collect();
            let targets = [vec![0, vocab as i64 - 1], targets[2..].to_vec()].concat();
            let run = |fused_path: bool| {
                let x = tensor(logits.clone(), [rows, vocab], dtype, &device);
                let tg =
                    Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &device);
                let (lp, ent) = match fused_path {
                    true => {
                        assert!(fused::fuses_token_logprobs(&x.device()));
                        fused::token_logprobs(x, tg, true)
                    }
                    false => composed::token_logprobs(x, tg, true),
                };
                (read(lp), read(ent.expect("asked for")))
            };
            let ((lp, ent), (lp_c, ent_c)) = (run(true), run(false));
            // Relative to the magnitudes: log-probs reach −60 and entropies ln(vocab).
            let rel = |a: &[f32], b: &[f32]| {
                let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
                max_abs_diff(a, b) / scale
            };
            let (d_lp, d_ent) = (rel(&lp, &lp_c), rel(&ent, &ent_c));
            eprintln!(
                "token log-probs {dtype:?} vocab {vocab}: relative |Δ| {d_lp:.2e}, entropy {d_ent:.2e}"
            );
            assert!(d_lp < tol && d_ent < tol, "vocab {vocab}: {d_lp}, {d_ent}");
        }
    }

    // Gradients through a loss on the log-probs; a target outside the vocabulary gives −3e38.
    let device = gpu_autodiff();
    for (dtype, _) in dtypes(&device) {
        let tol = grad_tolerance(dtype);
        let (rows, vocab) = (6, 300);
        let logits = values(rows * vocab, 52, 8.0);
        let targets: Vec<i64> = (0..rows as i64).map(|r| r * 37 + 1).collect();
        let run = |fused_path: bool| {
            let x = input(&logits, [rows, vocab], dtype, &device);
            let tg = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &device);
            let (lp, _) = match fused_path {
                true => fused::token_logprobs(x.clone(), tg, false),
                false => composed::token_logprobs(x.clone(), tg, false),
            };
            let grads = loss(lp).backward();
            read(x.grad(&grads).unwrap())
        };
        let gap = relative_gap(&run(true), &run(false));
        eprintln!("token log-probs {dtype:?}: gradient relative gap {gap:.2e}");
        assert!(
            gap < tol,
            "token log-probs {dtype:?}: gradient differs by {gap}"
        );
        let x = tensor(logits.clone(), [rows, vocab], dtype, &device);
        let outside =
            Tensor::<1, Int>::from_data(TensorData::new(vec![vocab as i64; rows], [rows]), &device);
        let (lp, _) = fused::token_logprobs(x, outside, false);
        assert!(
            read(lp).iter().all(|&v| v <= -3.0e38),
            "a target outside the vocabulary"
        );
    }
}

/// The LM head's log-probabilities ([`fused::head_logprobs_in_chunks`]) against the logits
/// formed whole and put through [`fused::token_logprobs`] (checked against the composed
/// log-softmax above): several chunks with a shorter last one, and one chunk (kept for the
/// backward pass), at vocabularies of 1,000 and 151,936; the gradients of the hidden states and
/// of an untied and a tied (transposed view) head weight.
#[test]
fn fused_head_logprobs_match_the_composed_ops() {
    let device = gpu();
    let (rows, hidden) = (37, 64);
    let x = values(rows * hidden, 61, 1.0);
    for (dtype, _) in dtypes(&device) {
        // The logits are the same matmul's on both paths; what differs is the reduction's
        // order (and, in f16, the chunks' matmul shapes).
        let tol = if dtype == DType::F32 { 2e-5 } else { 2e-3 };
        for vocab in [1000, 151_936] {
            let w = values(hidden * vocab, 62, 0.5);
            let targets: Vec<i64> = (0..rows).map(|r| ((r * 7919) % vocab) as i64).collect();
            let targets = [vec![0, vocab as i64 - 1], targets[2..].to_vec()].concat();
            let run = |chunk: Option<usize>| {
                let x = tensor(x.clone(), [rows, hidden], dtype, &device);
                let w = tensor(w.clone(), [hidden, vocab], dtype, &device);
                let tg =
                    Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &device);
                let (lp, ent) = match chunk {
                    Some(chunk) => {
                        assert!(fused::fuses_head_logprobs(&x, &w));
                        fused::head_logprobs_in_chunks(x, w, tg, true, chunk)
                    }
                    None => composed::head_logprobs(x, w, tg, true),
                };
                (read(lp), read(ent.expect("asked for")))
            };
            let (lp_c, ent_c) = run(None);
            let rel = |a: &[f32], b: &[f32]| {
                let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
                max_abs_diff(a, b) / scale
            };
            for (chunk, name) in [(8, "8 rows"), (usize::MAX, "whole")] {
                let (lp, ent) = run(Some(chunk));
                let (d_lp, d_ent) = (rel(&lp, &lp_c), rel(&ent, &ent_c));
                eprintln!(
                    "head log-probs {dtype:?} vocab {vocab}, chunks of {name}: relative |Δ| {d_lp:.2e}, entropy {d_ent:.2e}"
                );
                assert!(
                    d_lp < tol && d_ent < tol,
                    "vocab {vocab}, {name}: {d_lp}, {d_ent}"
                );
            }
        }
    }

    let device = gpu_autodiff();
    let vocab = 300;
    let w = values(hidden * vocab, 63, 0.5);
    let targets: Vec<i64> = (0..rows as i64)
        .map(|r| (r * 37 + 1) % vocab as i64)
        .collect();
    for (dtype, _) in dtypes(&device) {
        let tol = grad_tolerance(dtype);
        for tied in [false, true] {
            let run = |chunk: Option<usize>| {
                let x = input(&x, [rows, hidden], dtype, &device);
                let shape = if tied {
                    [vocab, hidden]
                } else {
                    [hidden, vocab]
                };
                let w0 = input(&w, shape, dtype, &device);
                let w = if tied {
                    w0.clone().transpose()
                } else {
                    w0.clone()
                };
                let tg =
                    Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [rows]), &device);
                let (lp, _) = match chunk {
                    Some(chunk) => fused::head_logprobs_in_chunks(x.clone(), w, tg, false, chunk),
                    None => composed::head_logprobs(x.clone(), w, tg, false),
                };
                let grads = loss(lp).backward();
                [
                    read(x.grad(&grads).unwrap()),
                    read(w0.grad(&grads).unwrap()),
                ]
            };
            let composed = run(None);
            for (chunk, name) in [(8, "8 rows"), (usize::MAX, "whole")] {
                let fused = run(Some(chunk));
                for (i, what) in ["x", "w"].iter().enumerate() {
                    let gap = relative_gap(&fused[i], &composed[i]);
                    eprintln!(
                        "head log-probs {dtype:?} tied {tied}, chunks of {name}: d{what} relative gap {gap:.2e}"
                    );
                    assert!(gap < tol, "d{what} differs by {gap}");
                }
            }
        }
    }
}

/// Logits like a language model's from values in [-1, 1): a few likely tokens (every 97th, 4
/// to 12) over a long tail (-5 to 5).
fn lm_like(values: &[f32]) -> Vec<f32> {
    let at = |(i, &g): (usize, &f32)| match i % 97 == 3 {
        true => 8.0 + 4.0 * g,
        false => 5.0 * g,
    };
    values.iter().enumerate().map(at).collect()
}

/// A filtered draw's candidates on the device are the host sampler's: for top-k, top-p,
/// min-p, their combinations and temperatures, on language-model-like rows (a few likely
/// tokens, a long tail) and on rows of many tied logits (as 16-bit logits have), where a cut
/// through a tie keeps the lower indices; in f32, and in f16 (the logits as rounded to it),
/// where what is left out is set to f16's lowest value, −65,504 (a WGSL kernel cannot write
/// an f16 infinity).
///
/// Exact, except that the device sums probabilities in f32 where the host sums in f64: a top-p
/// prefix may end a few tokens apart when the target lies within rounding of the shorter
/// prefix's mass (here 2e-6 of the row's), which a 151,936-token row's tail of tiny
/// probabilities reaches, as do ties whose masses add up to the target exactly.
#[test]
fn filtered_draws_keep_the_hosts_candidates() {
    let device = gpu();
    assert!(fused::fuses_sampling(&device));
    let settings: [(f32, usize, f32, f32); 9] = [
        (1.0, 50, 1.0, 0.0),
        (1.0, 1, 1.0, 0.0),
        (0.7, 0, 0.9, 0.0),
        (1.0, 0, 0.3, 0.0),
        (1.0, 0, 1.0, 0.05),
        (0.6, 40, 0.95, 0.0),
        (1.0, 0, 0.95, 0.1),
        (1.3, 200, 0.8, 0.01),
        (1.0, 1 << 30, 0.5, 0.0),
    ];
    let rows = 3;
    for (dtype, left_out) in [(DType::F32, -3.0e38f32), (DType::F16, -65_504.0)] {
        for vocab in [1, 2, 7, 1000, 4099, 151_936] {
            let smooth = values(rows * vocab, vocab as u64, 1.0);
            let lm = lm_like(&smooth);
            // Eleven distinct values: most tokens share their logit with many others.
            let tied: Vec<f32> = smooth.iter().map(|&g| (g * 5.0).round() / 2.0).collect();
            for (what, logits) in [("lm-like", &lm), ("tied", &tied)] {
                for &(temperature, top_k, top_p, min_p) in &settings {
                    let case = format!(
                        "{dtype:?} {what} vocab {vocab} T {temperature} top-k {top_k} top-p {top_p} min-p {min_p}"
                    );
                    let x = tensor(logits.clone(), [rows, vocab], dtype, &device);
                    let seen = read(x.clone()); // as rounded to `dtype`
                    let out = fused::filter_logits(x, 1.0 / temperature, top_k, top_p, min_p)
                        .expect("fused on this device");
                    let out = read(out);
                    let params = SamplingParams::draw(temperature, top_k, top_p, min_p);
                    let sampler = reasonlab_generate::Sampler::new(&params);
                    for r in 0..rows {
                        let row = &seen[r * vocab..(r + 1) * vocab];
                        let got = &out[r * vocab..(r + 1) * vocab];
                        for (i, (&g, &x)) in got.iter().zip(row).enumerate() {
                            assert!(g == x || g == left_out, "{case}: entry {i} is {g}, not {x}");
                        }
                        let device_kept: Vec<usize> =
                            (0..vocab).filter(|&i| got[i] != left_out).collect();
                        let host_kept = sampler.candidates(row);
                        if device_kept != host_kept {
                            let top_k = reasonlab_generate::Sampler::new(&SamplingParams {
                                top_p: 1.0,
                                min_p: 0.0,
                                ..params.clone()
                            })
                            .candidates(row);
                            let sets = [&device_kept[..], &host_kept[..]];
                            let gap = top_p_gap(row, temperature, sets, &top_k, top_p);
                            eprintln!(
                                "{case}, row {r}: {} candidates against the host's {}, the shorter \
                             {gap:.1e} of the mass from the top-p target",
                                device_kept.len(),
                                host_kept.len()
                            );
                            assert!(top_p < 1.0 && gap < 2e-6, "{case}, row {r}");
                        }
                    }
                }
            }
        }
    }
}

/// The fused draw (one kernel per step, after the filter's for a filtered draw) takes the host
/// sampler's token for the same uniform, and reports its log-prob under the unfiltered
/// temperature-1 distribution: vocabularies of 1 to 151,936 tokens, temperatures, filters.
///
/// The device sums weights in f32 where the host sums in f64, so where the uniform lands within
/// rounding of the boundary between two tokens (here 1e-5 of the row's weight) the device may
/// take the neighbour; any other difference fails.
#[test]
fn fused_draws_take_the_hosts_tokens() {
    let device = gpu();
    assert!(fused::fuses_sampling(&device));
    let settings: [(f32, usize, f32, f32); 6] = [
        (1.0, 0, 1.0, 0.0),
        (0.6, 0, 1.0, 0.0),
        (1.3, 0, 1.0, 0.0),
        (0.6, 0, 0.95, 0.0),
        (1.0, 40, 1.0, 0.0),
        (1.0, 0, 1.0, 0.05),
    ];
    let rows = 16;
    let (mut near, mut worst) = (0, 0f32);
    for vocab in [1, 2, 7, 1000, 4099, 151_936] {
        let logits = lm_like(&values(rows * vocab, vocab as u64 + 3, 1.0));
        for &(temperature, top_k, top_p, min_p) in &settings {
            let case =
                format!("vocab {vocab} T {temperature} top-k {top_k} top-p {top_p} min-p {min_p}");
            let params = SamplingParams::draw(temperature, top_k, top_p, min_p);
            let sampler = reasonlab_generate::Sampler::new(&params);
            let (mut host, mut uniforms) = (Vec::new(), Vec::new());
            for r in 0..rows {
                let mut rng = reasonlab_generate::SeqRng::new(7, r as u64, vocab as u64);
                uniforms.push(rng.clone().uniform());
                let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
                host.push(sampler.sample(&mut row, &mut rng));
            }
            let x = tensor(logits.clone(), [rows, vocab], DType::F32, &device);
            let filtered = top_k > 0 || top_p < 1.0 || min_p > 0.0;
            let kept = filtered.then(|| {
                fused::filter_logits(x.clone(), 1.0 / temperature, top_k, top_p, min_p)
                    .expect("fused on this device")
            });
            let (tokens, logps) =
                fused::sample(x, kept, &uniforms, 1.0 / temperature, true).unwrap();
            let (tokens, logps) = (read(tokens), read(logps));
            for (r, &(token, logp)) in host.iter().enumerate() {
                let got = tokens[r] as usize;
                let row = &logits[r * vocab..(r + 1) * vocab];
                if got != token as usize {
                    let gap = cdf_gap(row, temperature, &sampler.candidates(row), uniforms[r], got);
                    eprintln!(
                        "{case}, row {r}: token {got} against the host's {token}, {gap:.1e} of the weight from its interval"
                    );
                    assert!(gap < 1e-5, "{case}, row {r}");
                    near += 1;
                    continue;
                }
                worst = worst.max((logps[r] - logp).abs());
                assert!(
                    (logps[r] - logp).abs() < 1e-4,
                    "{case}, row {r}: log-prob {} against the host's {logp}",
                    logps[r]
                );
            }
        }
    }
    eprintln!("{near} draws took a neighbour within rounding; log-probs within {worst:.2e}");

    // Uniforms at 0 and just under 1 pick the first and the last token with weight.
    for (vocab, live) in [(10, [2, 6]), (1000, [500, 998])] {
        let mut row = vec![-1e4f32; vocab];
        row[live[0]] = 0.0;
        row[live[1]] = 0.0;
        let x = tensor(row.repeat(3), [3, vocab], DType::F32, &device);
        let (tokens, _) = fused::sample(x, None, &[0.0, 0.4999, 1.0 - 1e-12], 1.0, false).unwrap();
        let tokens: Vec<usize> = read(tokens).iter().map(|&t| t as usize).collect();
        assert_eq!(tokens, [live[0], live[0], live[1]], "vocab {vocab}");
    }
}

/// How far `uniform · total` lies outside token `got`'s interval of the cumulative weight over
/// `candidates` (vocabulary order, f64), as a fraction of the total (1 when `got` is not a
/// candidate).
fn cdf_gap(row: &[f32], temperature: f32, candidates: &[usize], uniform: f64, got: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weight = |i: usize| ((row[i] - max) as f64 / temperature as f64).exp();
    let total: f64 = candidates.iter().map(|&i| weight(i)).sum();
    let Some(at) = candidates.iter().position(|&i| i == got) else {
        return 1.0;
    };
    let before: f64 = candidates[..at].iter().map(|&i| weight(i)).sum();
    let target = uniform * total;
    let (lo, hi) = (before, before + weight(got));
    ((lo - target).max(target - hi).max(0.0)) / total
}

/// How far the shorter of two candidate sets, when the longer holds it, ends from the top-p
/// target: `|mass(shorter) − top_p · mass(top_k)|` as a fraction of the row's mass (1 for
/// two unrelated sets: no rounding explains them). `top_k` is the top-k filter's candidates.
fn top_p_gap(
    row: &[f32],
    temperature: f32,
    [a, b]: [&[usize]; 2],
    top_k: &[usize],
    top_p: f32,
) -> f64 {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    // Both are in vocabulary order.
    if !small.iter().all(|i| large.binary_search(i).is_ok()) {
        return 1.0;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weight = |i: &usize| ((row[*i] - max) as f64 / temperature as f64).exp();
    let total: f64 = (0..row.len()).map(|i| weight(&i)).sum();
    let target = top_p as f64 * top_k.iter().map(weight).sum::<f64>();
    (small.iter().map(weight).sum::<f64>() - target).abs() / total
}

/// Runs test `name` of this binary in a child process with `key=value` in its environment
/// (the GPU choices are read once per process); asserts it passed and returns its output.
fn in_child(name: &str, key: &str, value: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture"])
        .env(key, value)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child with {key}={value} failed:\n{text}"
    );
    text
}

/// Test `name` of a GPU choice in the environment variable `key`: run as is, it runs itself
/// in two children, one with `key` set to `[good, typo]`'s `good`, where `check` runs, and one
/// with `typo`, where opening a GPU device must fail naming the variable and the value.
fn env_choice_test(name: &str, key: &str, [good, typo]: [&str; 2], check: impl FnOnce()) {
    match std::env::var(key).ok() {
        Some(value) if value == good => {
            check();
            eprintln!("child: {good} checked");
        }
        Some(other) => {
            let err = reasonlab_model::open(backend(), false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(&other), "{err}");
            eprintln!("child: refused {other}");
        }
        None => {
            let checked = in_child(name, key, good);
            assert!(checked.contains(&format!("child: {good} checked")));
            let refused = in_child(name, key, typo);
            assert!(refused.contains(&format!("child: refused {typo}")));
        }
    }
}

/// `REASONLAB_GPU_KERNELS=composed` makes the GPU backends run burn's composed ops instead of
/// the fused kernels (to measure the difference on a GPU), and a value that is neither name is
/// refused when a GPU device opens. The choice is read once per process, so this test runs
/// itself as a child process with the variable set; the child does the checks.
#[test]
fn the_composed_ops_run_when_asked() {
    env_choice_test(
        "the_composed_ops_run_when_asked",
        GpuKernels::ENV,
        ["composed", "compsoed"],
        || {
            let device = gpu();
            let (x, w) = (values(105, 1, 3.0), values(7, 2, 1.5));
            let x = tensor(x, [15, 7], DType::F32, &device);
            let w = tensor(w, [7], DType::F32, &device);
            let via_fused = read(fused::rms_norm(x.clone(), w.clone(), 1e-6));
            assert_eq!(via_fused, read(composed::rms_norm(x, w, 1e-6)));
            let (_, info) = reasonlab_model::open(backend(), false).unwrap();
            assert_eq!(info.kernels, GpuKernels::Composed);
        },
    );
}

/// `REASONLAB_GPU_ATTENTION=matmul` keeps the fused kernels but computes attention's scores as
/// a matmul (the probabilities kept), and a value that is neither name is refused when a GPU
/// device opens; checked in child processes, as above.
#[test]
fn matmul_attention_runs_when_asked() {
    env_choice_test(
        "matmul_attention_runs_when_asked",
        GpuAttention::ENV,
        ["matmul", "flahs"],
        || {
            let device = gpu();
            let q = tensor(values(2 * 8 * 8, 1, 1.0), [1, 2, 8, 8], DType::F32, &device);
            let k = tensor(values(2 * 8 * 8, 2, 1.0), [1, 2, 8, 8], DType::F32, &device);
            assert!(!fused::fuses_flash_attention(&q, &k));
            // v's bias, where given, added by the composed path as a sum.
            let v_bias = tensor(values(2 * 8, 3, 1.0), [2 * 8], DType::F32, &device);
            for v_bias in [None, Some(v_bias)] {
                let v = match &v_bias {
                    Some(vb) => k.clone() + vb.clone().reshape([1, 2, 1, 8]),
                    None => k.clone(),
                };
                let (q, k) = (q.clone(), k.clone());
                let via_fused = read(fused::attention(
                    q.clone(),
                    k.clone(),
                    k.clone(),
                    v_bias,
                    8,
                    None,
                ));
                let composed = read(composed::attention(q, k, v, 8, None));
                assert!(max_abs_diff(&via_fused, &composed) < 1e-5);
            }
            let (_, info) = reasonlab_model::open(backend(), false).unwrap();
            assert_eq!(info.attention, GpuAttention::Matmul);
            assert!(info.to_string().contains(GpuAttention::ENV), "{info}");
        },
    );
}

/// `REASONLAB_GPU_DECODE_SPLIT=never` keeps a single stream's long context in one cube per
/// (batch, kv head): one row over 1,500 keys (three chunks per group otherwise) gives, bit for
/// bit, the first of 64 copies of it (128 groups, which no choice splits); a value that is
/// neither name is refused when a GPU device opens; checked in child processes, as above.
#[test]
fn unsplit_decoding_runs_when_asked() {
    env_choice_test(
        "unsplit_decoding_runs_when_asked",
        fused::DecodeSplit::ENV,
        ["never", "nevre"],
        || {
            assert_eq!(fused::DecodeSplit::current(), fused::DecodeSplit::Never);
            let device = gpu();
            let (kv, n_rep, s, d) = (2, 3, 1500, 64);
            let q = values(kv * n_rep * d, 51, 1.0);
            let (k, v) = (values(kv * s * d, 52, 2.0), values(kv * s * d, 53, 2.0));
            let run = |b: usize| {
                let copies = |x: &Vec<f32>| x.repeat(b);
                let q = tensor(copies(&q), [b, kv, n_rep, d], DType::F32, &device);
                let k = tensor(copies(&k), [b, kv, s, d], DType::F32, &device);
                let v = tensor(copies(&v), [b, kv, s, d], DType::F32, &device);
                assert!(fused::fuses_decode_attention(&q, &k));
                read(fused::attention(q, k, v, None, 1, None))
            };
            let one = run(1);
            assert_eq!(one[..], run(64)[..one.len()]);
        },
    );
}

/// `REASONLAB_GPU_DECODE_OVERLAP=off` makes generation read each step before queuing the next
/// (the default sampling settings say so), and a value that is neither name is refused when a
/// GPU device opens; checked in child processes, as above.
#[test]
fn serial_decoding_runs_when_asked() {
    env_choice_test(
        "serial_decoding_runs_when_asked",
        fused::DecodeOverlap::ENV,
        ["off", "of"],
        || {
            assert_eq!(fused::DecodeOverlap::current(), fused::DecodeOverlap::Off);
            assert_eq!(SamplingParams::default().overlap, fused::DecodeOverlap::Off);
            gpu();
        },
    );
}

/// `REASONLAB_GPU=N` opens the N-th adapter of the backend's list (`reasonlab devices`), the
/// device line and the bench peers' card follow it, and a value that is no number is refused
/// when a GPU device opens; checked in child processes, as above.
#[test]
fn the_chosen_gpu_opens() {
    use reasonlab_model::gpus;
    env_choice_test("the_chosen_gpu_opens", gpus::GPU_VAR, ["0", "O"], || {
        let adapters = gpus::adapters(backend()).unwrap();
        assert!(!adapters.is_empty(), "no adapter listed");
        assert_eq!(
            adapters.iter().filter(|a| a.default).count(),
            1,
            "{adapters:?}"
        );
        assert_eq!(gpus::chosen().unwrap(), gpus::GpuChoice::Index(0));
        let (device, info) = reasonlab_model::open(backend(), false).unwrap();
        assert_eq!(info.gpu, Some(0));
        assert_eq!(info.name, adapters[0].name, "{info}");
        assert_eq!(
            info.software,
            adapters[0].kind == gpus::AdapterKind::Software
        );
        assert!(info.to_string().contains(" GPU 0 ("), "{info}");
        let card = adapters[0].pci_address.as_ref().map(|a| format!("pci:{a}"));
        assert_eq!(gpus::cuda_card(backend()), card);
        // The chosen device computes.
        let x = tensor(values(14, 1, 1.0), [2, 7], DType::F32, &device);
        let w = tensor(values(7, 2, 1.0), [7], DType::F32, &device);
        assert!(
            read(fused::rms_norm(x, w, 1e-6))
                .iter()
                .all(|v| v.is_finite())
        );
        // Once chosen, the process stays on it.
        assert!(gpus::choose(gpus::GpuChoice::Index(0)).is_ok());
        assert!(gpus::choose(gpus::GpuChoice::Index(1)).is_err());
    });
}
