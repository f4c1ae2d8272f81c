//! Scratch profiler (temporary).
use reasonlab_model::burn::tensor::Distribution;
use reasonlab_model::burn::tensor::activation::{log_softmax, softmax};
use reasonlab_model::tensor::{Device, Tensor};
use reasonlab_model::{Model, PadSide, TokenBatch, bench_config, device_for};
use std::time::Instant;

fn time<R>(name: &str, n: usize, mut f: impl FnMut() -> R) {
    let _ = f();
    let t = Instant::now();
    for _ in 0..n {
        let _ = f();
    }
    println!(
        "{name:40} {:8.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}

fn r<const D: usize>(s: [usize; D], d: &Device) -> Tensor<D> {
    Tensor::random(s, Distribution::Normal(0.0, 1.0), d)
}

fn sync<const D: usize>(t: Tensor<D>) -> f32 {
    t.sum().into_scalar::<f32>()
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "micro" {
        let d = device_for(Default::default(), false).unwrap();
        let x = r([2048, 256], &d);
        let w = r([256, 688], &d);
        let w2 = r([688, 256], &d);
        let h = r([2048, 688], &d);
        time("mm 2048x256x688", 20, || sync(x.clone().matmul(w.clone())));
        time("mm 2048x688x256", 20, || sync(h.clone().matmul(w2.clone())));
        time("mm^T dW 256x2048x688", 20, || {
            sync(x.clone().transpose().matmul(h.clone()))
        });
        let q = r([8, 2, 512, 64], &d);
        let k = r([8, 2, 256, 64], &d);
        time("qk^T (8,2,512,64)x(..256)", 20, || {
            sync(q.clone().matmul(k.clone().swap_dims(2, 3)))
        });
        let sc = r([8, 2, 512, 256], &d);
        time("softmax (8,2,512,256)", 20, || sync(softmax(sc.clone(), 3)));
        let mask = r([8, 1, 1, 256, 256], &d);
        time("mask add 5d bcast", 20, || {
            sync(sc.clone().reshape([8, 2, 2, 256, 256]) + mask.clone())
        });
        let mask4 = r([8, 1, 256, 256], &d);
        time("mask add 4d bcast (8,4,256,256)", 20, || {
            sync(sc.clone().reshape([8, 4, 256, 256]) + mask4.clone())
        });
        time("sum only", 20, || sync(sc.clone()));
        let lg = r([8, 255, 512], &d);
        time("log_softmax (8,255,512)", 20, || {
            sync(log_softmax(lg.clone(), 2))
        });
        let hq = r([8, 256, 256], &d);
        time("swap+reshape (8,256,4,64)->(8,4,256,64)", 20, || {
            sync(
                hq.clone()
                    .reshape([8, 256, 4, 64])
                    .swap_dims(1, 2)
                    .reshape([8, 2, 512, 64]),
            )
        });
        return;
    }
    let device = device_for(Default::default(), true).unwrap();
    let model = Model::random(bench_config(), 0, &device);
    let mut rng = 99u64;
    let seqs: Vec<Vec<u32>> = (0..8)
        .map(|_| {
            (0..256)
                .map(|_| {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((rng >> 33) % 512) as u32
                })
                .collect()
        })
        .collect();
    let batch = TokenBatch::pad(&seqs, 0, PadSide::Right);
    for _ in 0..4 {
        let t0 = Instant::now();
        let logp = model.token_logprobs(&batch).unwrap();
        let mask = model.target_mask(&batch);
        let loss = (logp * mask).sum().neg();
        let _ = loss.clone().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        drop(grads);
        println!(
            "fwd {:.3} bwd {:.3}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64()
        );
    }
}
