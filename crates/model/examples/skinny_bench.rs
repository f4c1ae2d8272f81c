//! Micro-benchmark of the few-row matmul behind the decode kernels (`skinny.rs`): an 8-row
//! decode projection (8 × 256 · 256 × 688), with the weight hot in cache, and streamed from L3
//! (cycling through 24 MB of distinct weights, as a decode step does) row-major and packed;
//! then 32 rows on a hot weight, about the most one core computes here; and the tied LM head
//! (`matmul_nt`, 8 × 256 · (512 × 256)ᵀ) streamed from L3.
//!
//! `cargo run --release -p reasonlab-model --example skinny_bench`

use std::time::Instant;

use reasonlab_model::skinny::{Weights, matmul, matmul_nt, pack};

fn main() {
    let (m, k, n) = (8, 256, 688);
    let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let sets = (24 << 20) / (4 * k * n);
    let row_major: Vec<Vec<f32>> = (0..sets)
        .map(|s| (0..k * n).map(|i| ((i + s) % 5) as f32 * 0.01).collect())
        .collect();
    let packed: Vec<Vec<f32>> = row_major.iter().map(|w| pack(w, k, n)).collect();
    let time = |pick: &dyn Fn(usize) -> (usize, bool)| {
        let mut out = vec![0f32; m * n];
        let iters = 4000;
        let start = Instant::now();
        for i in 0..iters {
            let (set, packed_layout) = pick(i);
            let w = if packed_layout {
                Weights::Packed(&packed[set])
            } else {
                Weights::RowMajor(&row_major[set])
            };
            matmul(&x, w, None, &mut out, m, k, n, 0..n);
            std::hint::black_box(&out);
        }
        start.elapsed().as_secs_f64() / iters as f64
    };
    let hot = time(&|_| (0, false));
    let streamed = time(&|i| (i % sets, false));
    let streamed_packed = time(&|i| (i % sets, true));
    let flops = 2.0 * (m * k * n) as f64;
    let bytes = (4 * k * n) as f64;
    let rows32 = 32;
    let x32: Vec<f32> = (0..rows32 * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out32 = vec![0f32; rows32 * n];
    let start = Instant::now();
    for _ in 0..2000 {
        let w = Weights::RowMajor(&row_major[0]);
        matmul(&x32, w, None, &mut out32, rows32, k, n, 0..n);
        std::hint::black_box(&out32);
    }
    let hot32 = start.elapsed().as_secs_f64() / 2000.0;
    println!("{m}x{k}x{n}, one thread");
    println!(
        "hot in cache:       {:6.1} us  {:5.0} GFLOP/s",
        hot * 1e6,
        flops / hot / 1e9
    );
    println!(
        "streamed row-major: {:6.1} us  {:5.1} GB/s of weights",
        streamed * 1e6,
        bytes / streamed / 1e9
    );
    println!(
        "streamed packed:    {:6.1} us  {:5.1} GB/s of weights",
        streamed_packed * 1e6,
        bytes / streamed_packed / 1e9
    );
    println!(
        "{rows32} rows, hot:       {:6.1} us  {:5.0} GFLOP/s",
        hot32 * 1e6,
        2.0 * (rows32 * k * n) as f64 / hot32 / 1e9
    );
    // The tied LM head: x (8 × 256) · eᵀ for an embedding e (512 × 256), streamed from L3.
    let vocab = 512;
    let tables: Vec<Vec<f32>> = (0..(24 << 20) / (4 * vocab * k))
        .map(|s| {
            (0..vocab * k)
                .map(|i| ((i + s) % 5) as f32 * 0.01)
                .collect()
        })
        .collect();
    let mut logits = vec![0f32; m * vocab];
    let iters = 4000;
    let start = Instant::now();
    for i in 0..iters {
        matmul_nt(&x, &tables[i % tables.len()], &mut logits, m, k, vocab);
        std::hint::black_box(&logits);
    }
    let nt = start.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{m}x{k}x{vocab} head (x·eᵀ), streamed: {:6.1} us  {:5.1} GB/s of weights",
        nt * 1e6,
        (4 * vocab * k) as f64 / nt / 1e9
    );
}
