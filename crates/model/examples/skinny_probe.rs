use reasonlab_model::skinny::{Weights, matmul, pack};
use std::time::Instant;
fn main() {
    for &(m, k, n) in &[
        (8usize, 64usize, 48usize),
        (8, 256, 48),
        (8, 256, 688),
        (8, 256, 1376),
        (256, 256, 688),
    ] {
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.01).collect();
        let p = pack(&w, k, n);
        let mut out = vec![0f32; m * n];
        for (name, ww) in [
            ("rowmajor", Weights::RowMajor(&w)),
            ("packed", Weights::Packed(&p)),
        ] {
            let iters = (2e9 / (2.0 * (m * k * n) as f64)) as usize;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let s = Instant::now();
                for _ in 0..iters {
                    matmul(&x, ww, None, &mut out, m, k, n, 0..n);
                    std::hint::black_box(&out);
                }
                best = best.min(s.elapsed().as_secs_f64() / iters as f64);
            }
            println!(
                "{m}x{k}x{n} {name}: {:.0} GFLOP/s",
                2.0 * (m * k * n) as f64 / best / 1e9
            );
        }
    }
}
