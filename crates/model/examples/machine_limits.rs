//! The two hardware limits the README's performance arithmetic rests on, measured on one core:
//! the f32 FMA peak (AVX-512: 16 independent accumulator chains, no loads) and the rate at
//! which one core streams a 24 MB buffer from L3 (larger than L2, as a decode step's weights
//! are). Best of several runs each.
//!
//! `cargo run --release -p reasonlab-model --example machine_limits`

use std::time::Instant;

fn main() {
    let stream = read_bandwidth();
    println!("L3 read, one core: {:.1} GB/s", stream / 1e9);
    match fma_peak() {
        Some(peak) => println!("f32 FMA peak, one core: {:.0} GFLOP/s", peak / 1e9),
        None => println!("f32 FMA peak: needs x86-64 with AVX-512"),
    }
}

/// Bytes per second summing a 24 MB buffer (eight partial sums, so the adds vectorise).
fn read_bandwidth() -> f64 {
    let data: Vec<f32> = (0..(24 << 20) / 4).map(|i| (i % 7) as f32).collect();
    let mut best = f64::MAX;
    for _ in 0..30 {
        let start = Instant::now();
        let mut acc = [0f32; 16];
        for chunk in data.chunks_exact(16) {
            for (a, x) in acc.iter_mut().zip(chunk) {
                *a += x;
            }
        }
        std::hint::black_box(acc);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (4 * data.len()) as f64 / best
}

#[cfg(target_arch = "x86_64")]
fn fma_peak() -> Option<f64> {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return None;
    }
    let iters = 50_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        // SAFETY: AVX-512F was detected above.
        std::hint::black_box(unsafe { fma_chains(iters) });
        best = best.min(start.elapsed().as_secs_f64());
    }
    // 16 vector FMAs of 16 lanes, 2 FLOPs each, per iteration.
    Some(iters as f64 * 16.0 * 16.0 * 2.0 / best)
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak() -> Option<f64> {
    None
}

/// `iters` × 16 independent `vfmadd231ps zmm` (written in assembly: the compiler otherwise
/// reshuffles identical chains through extra moves and spills).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains(iters: u64) -> u64 {
    let mut left = iters;
    // SAFETY: AVX-512F is enabled; the block touches only the registers it declares.
    unsafe {
        std::arch::asm!(
            "vxorps xmm16, xmm16, xmm16",
            "vxorps xmm17, xmm17, xmm17",
            "2:",
            "vfmadd231ps zmm0, zmm16, zmm17",
            "vfmadd231ps zmm1, zmm16, zmm17",
            "vfmadd231ps zmm2, zmm16, zmm17",
            "vfmadd231ps zmm3, zmm16, zmm17",
            "vfmadd231ps zmm4, zmm16, zmm17",
            "vfmadd231ps zmm5, zmm16, zmm17",
            "vfmadd231ps zmm6, zmm16, zmm17",
            "vfmadd231ps zmm7, zmm16, zmm17",
            "vfmadd231ps zmm8, zmm16, zmm17",
            "vfmadd231ps zmm9, zmm16, zmm17",
            "vfmadd231ps zmm10, zmm16, zmm17",
            "vfmadd231ps zmm11, zmm16, zmm17",
            "vfmadd231ps zmm12, zmm16, zmm17",
            "vfmadd231ps zmm13, zmm16, zmm17",
            "vfmadd231ps zmm14, zmm16, zmm17",
            "vfmadd231ps zmm15, zmm16, zmm17",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) left,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _,
            options(nostack, nomem),
        );
    }
    left
}
