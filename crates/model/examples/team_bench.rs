//! What sharing the weight stream between the two cores could buy a decode step of the
//! `bench generate` model (its 29 dense products, attention left out — it reads the same
//! bytes either way): two threads each computing all columns for their own 8 rows (today's
//! one group per core), against a team of two each computing half of every product's columns
//! for all 16 rows, meeting at a spin barrier wherever the next product needs the other half
//! (after q/k/v, o, gate/up and down of each layer, and the head: 17 meetings per step, the
//! activations double-buffered so that one meeting per stage suffices).
//!
//! Measured (five runs): 0.46–0.51 ms for the groups, 0.46–0.50 ms for the
//! team, and 0.44–0.48 ms for the team without its meetings: at 16 rows on half the columns
//! the few-row kernel is compute-bound, so sharing the weight stream saves at most 5–10% of the
//! dense products, and the meetings take about all of it.
//!
//! `cargo run --release -p reasonlab-model --example team_bench`

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Instant;

use reasonlab_model::skinny::{COLS, Weights, matmul, pack};

/// A spin barrier for two threads (a blocking one would put a thread to sleep at each meeting).
struct Spin {
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl Spin {
    fn wait(&self) {
        let g = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) == 1 {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.store(g + 1, Ordering::Release);
        } else {
            while self.generation.load(Ordering::Acquire) == g {
                std::hint::spin_loop();
            }
        }
    }
}

struct Dense {
    k: usize,
    n: usize,
    panels: Vec<f32>,
}

fn dense(k: usize, n: usize, seed: usize) -> Dense {
    let w: Vec<f32> = (0..k * n).map(|i| ((i + seed) % 7) as f32 * 0.01).collect();
    Dense {
        k,
        n,
        panels: pack(&w, k, n),
    }
}

fn main() {
    let (hidden, inter, vocab, layers) = (256, 688, 512, 4);
    // Per layer: the products that can run together, then a meeting.
    let mut stages: Vec<Vec<Dense>> = Vec::new();
    for l in 0..layers {
        stages.push(vec![
            dense(hidden, hidden, l),
            dense(hidden, 128, l + 1),
            dense(hidden, 128, l + 2),
        ]);
        stages.push(vec![dense(hidden, hidden, l + 3)]);
        stages.push(vec![
            dense(hidden, inter, l + 4),
            dense(hidden, inter, l + 5),
        ]);
        stages.push(vec![dense(inter, hidden, l + 6)]);
    }
    stages.push(vec![dense(hidden, vocab, 9)]);
    let steps = 3000;
    let widest = inter.max(vocab);
    // Today: a group of 8 rows per core, no meetings.
    let groups = {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let x = vec![0.01f32; 8 * widest];
                    let mut out = vec![0f32; 8 * widest];
                    for _ in 0..steps {
                        for stage in &stages {
                            for d in stage {
                                matmul(
                                    &x,
                                    Weights::Packed(&d.panels),
                                    None,
                                    &mut out,
                                    8,
                                    d.k,
                                    d.n,
                                    0..d.n,
                                );
                            }
                        }
                        std::hint::black_box(&out);
                    }
                });
            }
        });
        start.elapsed().as_secs_f64() / steps as f64
    };
    // A team: each thread half of every product's columns (whole panels) for all 16 rows.
    let spin = Spin {
        arrived: AtomicUsize::new(0),
        generation: AtomicUsize::new(0),
    };
    // The shared activations, double-buffered (16 × widest each): a stage reads one buffer
    // whole and writes its column block of the other, so one meeting per stage suffices.
    struct Shared([std::cell::UnsafeCell<Vec<f32>>; 2]);
    // SAFETY: within a stage the threads write disjoint column blocks of one buffer and read
    // only the other, which nobody writes until both have met.
    unsafe impl Sync for Shared {}
    let shared = Shared([
        std::cell::UnsafeCell::new(vec![0.01f32; 16 * widest]),
        std::cell::UnsafeCell::new(vec![0.01f32; 16 * widest]),
    ]);
    let go = Barrier::new(2);
    let team = {
        let start = Instant::now();
        std::thread::scope(|s| {
            for c in 0..2 {
                let (spin, shared, go) = (&spin, &shared, &go);
                let stages = &stages;
                s.spawn(move || {
                    let mut out = vec![0f32; 16 * widest];
                    go.wait();
                    let mut flip = 0;
                    for _ in 0..steps {
                        for stage in stages {
                            let (src, dst) = (shared.0[flip].get(), shared.0[1 - flip].get());
                            for d in stage {
                                let half = d.n.div_ceil(COLS).div_ceil(2) * COLS;
                                let cols = if c == 0 {
                                    0..half.min(d.n)
                                } else {
                                    half.min(d.n)..d.n
                                };
                                // SAFETY: `src` is not written during this stage.
                                let x: &Vec<f32> = unsafe { &*src };
                                matmul(
                                    &x[..16 * d.k],
                                    Weights::Packed(&d.panels),
                                    None,
                                    &mut out,
                                    16,
                                    d.k,
                                    d.n,
                                    cols.clone(),
                                );
                                if std::ptr::eq(d, stage.last().unwrap()) {
                                    for r in 0..16 {
                                        // SAFETY: disjoint column blocks of `dst` per thread.
                                        unsafe {
                                            let to = (*dst).as_mut_ptr().add(r * d.n + cols.start);
                                            std::ptr::copy_nonoverlapping(
                                                out.as_ptr().add(r * cols.len()),
                                                to,
                                                cols.len(),
                                            );
                                        }
                                    }
                                }
                            }
                            spin.wait();
                            flip = 1 - flip;
                        }
                    }
                });
            }
        });
        start.elapsed().as_secs_f64() / steps as f64
    };
    println!("dense products of one decode step, 16 sequences on 2 cores (attention left out):");
    println!("  a group of 8 per core:        {:.3} ms", groups * 1e3);
    println!(
        "  a team, half the columns each: {:.3} ms ({} meetings)",
        team * 1e3,
        stages.len()
    );
}
