//! `C = X · W` for a few rows of `X` — the shape of every decode step (one new token per
//! sequence, so `m` = the number of sequences in the batch, a handful) — without gemm's packing.
//!
//! gemm packs both operands into panels on every call, and with its `mr × nr` micro-tile laid
//! over our `m = 8` rows the transposed problem splits into a 6-wide and a 2-wide tile, the
//! latter at a third of the FMA throughput. Here `W` (`k × n`, row-major: our `Linear` keeps
//! weights as (in, out)) is streamed straight from memory, row `k` of `W` being contiguous: for
//! a tile of [`ROWS`] rows × [`COLS`] columns the accumulators stay in registers while the `k`
//! loop broadcasts one element of each row of `X` and multiplies it into one row of the tile of
//! `W`. Each weight is loaded once per tile of rows, and `W` is read exactly once when `m ≤ 8`.
//!
//! AVX-512 (chosen at run time); elsewhere the portable loop below, which the compiler
//! vectorises where FMA is native (aarch64). x86-64 CPUs without AVX-512 do not come here:
//! [`crate::decode::enabled`] leaves them burn's gemm. Results equal a plain `Σ_k x·w` in order
//! `k = 0, 1, …` (one FMA per term), started from the bias.

use std::ops::Range;

/// Rows of `X` per register tile.
pub const ROWS: usize = 8;
/// Columns per register tile: three 16-lane vectors (8 × 3 = 24 of the 32 zmm registers hold
/// accumulators).
pub const COLS: usize = 48;

/// How the `k × n` weight is laid out.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// Row-major (in, out), as `Linear` keeps it: a tile reads 192 bytes per row, rows `4n`
    /// bytes apart.
    RowMajor(&'a [f32]),
    /// [`pack`]ed into panels of [`COLS`] columns, each panel's `k` rows contiguous: a tile
    /// streams one contiguous block (~40% faster from L3 than the row-major reads in
    /// `examples/skinny_bench.rs`).
    Packed(&'a [f32]),
}

/// `w` (k × n, row-major) as panels of [`COLS`] columns: panel `p` (columns `48p..`, width
/// `wp = min(48, n − 48p)`) holds its `k` rows of `wp` values contiguously at offset `48p·k`.
pub fn pack(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(k * n);
    for j in (0..n).step_by(COLS) {
        let width = (n - j).min(COLS);
        for row in w.chunks(n).take(k) {
            out.extend_from_slice(&row[j..j + width]);
        }
    }
    out
}

/// Columns `cols` of `x (m × k) · w (k × n) [+ bias (n)]`, into `out` (m × cols.len()); `x`
/// and `out` row-major and contiguous. With packed weights `cols` must start at a panel.
///
/// Panics when a slice is shorter than its shape says or `cols` is not inside `0..n` (callers
/// pass tensor buffers whose shapes they have just read).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    x: &[f32],
    w: Weights<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    cols: Range<usize>,
) {
    let width = cols.len();
    let ws = match w {
        Weights::RowMajor(ws) => ws,
        Weights::Packed(ws) => {
            assert!(
                cols.start.is_multiple_of(COLS),
                "packed columns start at a panel"
            );
            ws
        }
    };
    assert!(x.len() >= m * k && ws.len() >= k * n && out.len() >= m * width && cols.end <= n);
    assert!(bias.is_none_or(|b| b.len() >= n));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, and the bounds were checked above.
        unsafe { avx512::matmul(x, w, bias, out, m, k, n, cols) };
        return;
    }
    portable(x, w, bias, out, m, k, n, cols);
}

#[allow(clippy::too_many_arguments)]
fn portable(
    x: &[f32],
    w: Weights<'_>,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    cols: Range<usize>,
) {
    let width = cols.len();
    let at = |kk: usize, c: usize| match w {
        Weights::RowMajor(ws) => ws[kk * n + c],
        Weights::Packed(ws) => {
            let j = c - c % COLS;
            ws[j * k + kk * (n - j).min(COLS) + c - j]
        }
    };
    for (xr, or) in x.chunks(k).zip(out.chunks_mut(width)).take(m) {
        match bias {
            Some(b) => or.copy_from_slice(&b[cols.clone()]),
            None => or.fill(0.0),
        }
        for (kk, &xv) in xr.iter().enumerate() {
            for (o, c) in or.iter_mut().zip(cols.clone()) {
                *o = xv.mul_add(at(kk, c), *o);
            }
        }
    }
}

/// `out (m × n) = x (m × k) · eᵀ` for `e` (n × k) row-major — a tied LM head, whose
/// weight is the (vocab, hidden) embedding: each output is the dot product of two contiguous
/// rows.
pub fn matmul_nt(x: &[f32], e: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(x.len() >= m * k && e.len() >= n * k && out.len() >= m * n);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, and the bounds were checked above.
        unsafe { avx512::matmul_nt(x, e, out, m, k, n) };
        return;
    }
    portable_nt(x, e, out, m, k, n);
}

fn portable_nt(x: &[f32], e: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    for (xr, or) in x.chunks(k).zip(out.chunks_mut(n)).take(m) {
        for (o, er) in or.iter_mut().zip(e.chunks(k)) {
            *o = xr.iter().zip(er).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::sum16;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{COLS, ROWS, Range, Weights};

    const LANES: usize = 16;
    const PF: usize = 8;

    /// Where a tile reads and writes: `x` rows `k` apart, `w` rows `n` apart, `out` rows `ldo`
    /// apart, `bias` (null for none) at the tile's first column.
    #[derive(Clone, Copy)]
    struct Tile {
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        out: *mut f32,
        k: usize,
        n: usize,
        ldo: usize,
        cols: usize,
    }

    /// # Safety
    /// AVX-512F available; the buffers hold what [`super::matmul`] checks.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul(
        x: &[f32],
        w: Weights<'_>,
        bias: Option<&[f32]>,
        out: &mut [f32],
        m: usize,
        k: usize,
        n: usize,
        range: Range<usize>,
    ) {
        let ldo = range.len();
        let mut j = range.start;
        while j < range.end {
            let cols = (range.end - j).min(COLS);
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(ROWS);
                // SAFETY: the tile lies inside the buffers (r + rows ≤ m, j + cols ≤ end ≤ n).
                unsafe {
                    let t = Tile {
                        x: x.as_ptr().add(r * k),
                        // A panel's rows are its width apart; the row-major rows, `n`.
                        w: match w {
                            Weights::RowMajor(ws) => ws.as_ptr().add(j),
                            Weights::Packed(ws) => ws.as_ptr().add(j * k),
                        },
                        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr().add(j)),
                        out: out.as_mut_ptr().add(r * ldo + j - range.start),
                        k,
                        n: match w {
                            Weights::RowMajor(_) => n,
                            // The panel's width (the tile may stop short of it).
                            Weights::Packed(_) => (n - j).min(COLS),
                        },
                        ldo,
                        cols,
                    };
                    match (rows, cols) {
                        (8, COLS) => tile::<8, 3>(t),
                        (_, c) if c > 2 * LANES => dispatch_rows::<3>(rows, t),
                        (_, c) if c > LANES => dispatch_rows::<2>(rows, t),
                        _ => dispatch_rows::<1>(rows, t),
                    }
                }
                r += rows;
            }
            j += cols;
        }
    }

    /// A tile with 1 ≤ `rows` ≤ 8, monomorphised per row count so the accumulators are
    /// registers.
    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch_rows<const V: usize>(rows: usize, t: Tile) {
        // SAFETY: forwarded from `matmul`.
        unsafe {
            match rows {
                1 => tile::<1, V>(t),
                2 => tile::<2, V>(t),
                3 => tile::<3, V>(t),
                4 => tile::<4, V>(t),
                5 => tile::<5, V>(t),
                6 => tile::<6, V>(t),
                7 => tile::<7, V>(t),
                _ => tile::<8, V>(t),
            }
        }
    }

    /// Two rows of `x` against eight rows of `e` per step: 16 accumulators over `k`, summed by
    /// one [`sum16`] into `out[r][j..j+8]` and `out[r+1][j..j+8]`. Whole blocks take
    /// [`nt_block`]; the edges (a last block of fewer than 8 rows of `e`, an odd last row of
    /// `x`) the general loop, with the same arithmetic.
    ///
    /// # Safety
    /// AVX-512F available; the buffers hold what [`super::matmul_nt`] checks.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn matmul_nt(x: &[f32], e: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
        let chunks = k.div_ceil(LANES);
        let tail = (k - (chunks - 1) * LANES) as u32;
        let last: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let (xp, ep) = (x.as_ptr(), e.as_ptr());
        for j in (0..n).step_by(8) {
            let erows = (n - j).min(8);
            for r in (0..m).step_by(2) {
                let xrows = (m - r).min(2);
                // SAFETY: rows r..r+xrows of x and j..j+erows of e exist; the last chunk of
                // each row is masked to k.
                let acc = unsafe {
                    let (xr, er) = (xp.add(r * k), ep.add(j * k));
                    match (erows, xrows) {
                        // The first pair of rows over a block also fetches the next block; the
                        // other pairs find it in L1.
                        (8, 2) if r == 0 && j + 16 <= n => {
                            nt_block::<true>(xr, er, k, chunks, last)
                        }
                        (8, 2) => nt_block::<false>(xr, er, k, chunks, last),
                        _ => nt_edge(xr, er, k, chunks, last, erows, xrows),
                    }
                };
                let mut sums = [0f32; 16];
                // SAFETY: `sums` holds 16 floats.
                unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), sum16(acc)) };
                for i in 0..xrows {
                    out[(r + i) * n + j..][..erows].copy_from_slice(&sums[8 * i..8 * i + erows]);
                }
            }
        }
    }

    /// Accumulators of two rows of `x` (at `xr`, `k` apart) against eight rows of `e` (at
    /// `er`): `acc[jj]` and `acc[8 + jj]` for e row `jj`, one FMA per chunk of 16 in order.
    /// With `PREFETCH`, each chunk also prefetches the same line of the next eight rows.
    ///
    /// # Safety
    /// AVX-512F; the rows hold `k` floats; with `PREFETCH`, 8 more rows of `e` follow.
    #[target_feature(enable = "avx512f")]
    unsafe fn nt_block<const PREFETCH: bool>(
        xr: *const f32,
        er: *const f32,
        k: usize,
        chunks: usize,
        last: __mmask16,
    ) -> [__m512; 16] {
        let mut acc = [_mm512_setzero_ps(); 16];
        for c in 0..chunks {
            let mask = if c + 1 == chunks { last } else { !0 };
            // SAFETY: chunk c of each row lies inside it (the last one masked to k).
            unsafe {
                let x0 = _mm512_maskz_loadu_ps(mask, xr.add(c * LANES));
                let x1 = _mm512_maskz_loadu_ps(mask, xr.add(k + c * LANES));
                for jj in 0..8 {
                    let row = er.add(jj * k + c * LANES);
                    let ev = _mm512_maskz_loadu_ps(mask, row);
                    acc[jj] = _mm512_fmadd_ps(x0, ev, acc[jj]);
                    acc[8 + jj] = _mm512_fmadd_ps(x1, ev, acc[8 + jj]);
                    if PREFETCH {
                        _mm_prefetch::<_MM_HINT_T0>(row.add(8 * k) as *const i8);
                    }
                }
            }
        }
        acc
    }

    /// [`nt_block`] for `erows` < 8 rows of `e` or `xrows` = 1 row of `x` (the missing rows
    /// read as zeros), without prefetching.
    ///
    /// # Safety
    /// AVX-512F; `xrows` rows of `x` and `erows` rows of `e` hold `k` floats.
    #[target_feature(enable = "avx512f")]
    unsafe fn nt_edge(
        xr: *const f32,
        er: *const f32,
        k: usize,
        chunks: usize,
        last: __mmask16,
        erows: usize,
        xrows: usize,
    ) -> [__m512; 16] {
        let mut acc = [_mm512_setzero_ps(); 16];
        for c in 0..chunks {
            let mask = if c + 1 == chunks { last } else { !0 };
            // SAFETY: only rows that exist are read; chunk c lies inside each.
            unsafe {
                let xv: [__m512; 2] = std::array::from_fn(|i| {
                    if i < xrows {
                        _mm512_maskz_loadu_ps(mask, xr.add(i * k + c * LANES))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for jj in 0..erows {
                    let ev = _mm512_maskz_loadu_ps(mask, er.add(jj * k + c * LANES));
                    acc[jj] = _mm512_fmadd_ps(xv[0], ev, acc[jj]);
                    acc[8 + jj] = _mm512_fmadd_ps(xv[1], ev, acc[8 + jj]);
                }
            }
        }
        acc
    }

    /// Lane sums of 16 vectors: element `j` of the result is `Σ a[j]`.
    #[target_feature(enable = "avx512f")]
    pub fn sum16(a: [__m512; 16]) -> __m512 {
        // Pairs: per 128-bit lane, [a0+a2, b0+b2, a1+a3, b1+b3].
        let s: [__m512; 8] = std::array::from_fn(|p| {
            let (x, y) = (a[2 * p], a[2 * p + 1]);
            _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
        });
        // Quads: per 128-bit lane, the four vectors' partial sums in order.
        let u: [__m512; 4] = std::array::from_fn(|p| {
            let (x, y) = (_mm512_castps_pd(s[2 * p]), _mm512_castps_pd(s[2 * p + 1]));
            _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
            )
        });
        // Then across 128-bit lanes, twice.
        let lanes = |x: __m512, y: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(x, y),
                _mm512_shuffle_f32x4::<0xDD>(x, y),
            )
        };
        let x = [lanes(u[0], u[1]), lanes(u[2], u[3])];
        lanes(x[0], x[1])
    }

    /// `R` rows × `t.cols` (≤ 16·V) columns. The last vector is masked when `cols` is not a
    /// multiple of 16.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(t: Tile) {
        let Tile {
            x,
            w,
            bias,
            out,
            k,
            n,
            ldo,
            cols,
        } = t;
        let masks: [__mmask16; V] = std::array::from_fn(|v| {
            let left = cols.saturating_sub(v * LANES).min(LANES);
            ((1u32 << left) - 1) as __mmask16
        });
        // SAFETY: loads stay inside row `kk` of the tile of `w` and of `bias` (masked past
        // `cols`) and inside the `R` rows of `x`; stores inside the tile of `out`. Prefetches
        // do not fault.
        unsafe {
            let init: [__m512; V] = std::array::from_fn(|v| {
                if bias.is_null() {
                    _mm512_setzero_ps()
                } else {
                    _mm512_maskz_loadu_ps(masks[v], bias.add(v * LANES))
                }
            });
            let mut acc = [init; R];
            for kk in 0..k {
                let wr = w.add(kk * n);
                // The rows `PF` ahead: a tile reads 192 bytes per row of `w`, rows `4n` bytes
                // apart, which the hardware prefetchers follow poorly (measured: 12 → 17 GB/s
                // streaming weights from L3).
                if kk + PF < k {
                    for v in 0..V {
                        _mm_prefetch::<_MM_HINT_T0>(wr.add(PF * n + v * LANES) as *const i8);
                    }
                }
                let wv: [__m512; V] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], wr.add(v * LANES)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add(r * k + kk));
                    for v in 0..V {
                        acc_r[v] = _mm512_fmadd_ps(xv, wv[v], acc_r[v]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for v in 0..V {
                    _mm512_mask_storeu_ps(out.add(r * ldo + v * LANES), masks[v], acc_r[v]);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in [−0.5, 0.5) (also for other modules' kernel tests).
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
            .map(|v| v / (1u32 << 24) as f32 - 0.5)
            .collect()
    }

    /// The portable loops on their own against a plain triple loop (`Σ_k x·w`, bias first): the
    /// reference the AVX-512 kernels are then held to.
    #[test]
    fn portable_loops_equal_the_naive_product() {
        for (m, k, n) in [(1, 1, 1), (3, 7, 5), (9, 33, 100), (16, 64, 49)] {
            let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
            let mut got = vec![f32::NAN; m * n];
            portable(&x, Weights::RowMajor(&w), Some(&b), &mut got, m, k, n, 0..n);
            let mut nt = vec![f32::NAN; m * n];
            // matmul_nt takes E as (n, k): the transpose of W.
            let e: Vec<f32> = (0..n)
                .flat_map(|j| (0..k).map(move |i| (i, j)))
                .map(|(i, j)| w[i * n + j])
                .collect();
            portable_nt(&x, &e, &mut nt, m, k, n);
            for r in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|i| x[r * k + i] * w[i * n + j]).sum();
                    let (a, c) = (got[r * n + j], nt[r * n + j]);
                    assert!((a - (b[j] + dot)).abs() < 1e-4, "m={m} k={k} n={n}: {a}");
                    assert!((c - dot).abs() < 1e-4, "nt m={m} k={k} n={n}: {c}");
                }
            }
        }
    }

    #[test]
    fn transposed_product_matches_the_portable_loop() {
        if !crate::kernels::avx512_or_say("skinny::matmul_nt") {
            return;
        }
        for (m, k, n) in [
            (1, 1, 1),
            (3, 7, 5),
            (8, 256, 512),
            (9, 33, 100),
            (2, 16, 8),
            (5, 64, 17),
        ] {
            let (x, e) = (values(m * k, 4), values(n * k, 5));
            let mut fast = vec![f32::NAN; m * n];
            let mut slow = vec![f32::NAN; m * n];
            matmul_nt(&x, &e, &mut fast, m, k, n);
            portable_nt(&x, &e, &mut slow, m, k, n);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "m={m} k={k} n={n} [{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn equals_the_portable_loop_for_ragged_shapes() {
        if !crate::kernels::avx512_or_say("skinny::matmul") {
            return;
        }
        let shapes = [
            (1, 1, 1),
            (3, 7, 5),
            (8, 256, 512),
            (9, 33, 100),
            (16, 64, 49),
        ];
        for (m, k, n) in shapes {
            let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
            for bias in [None, Some(&b[..])] {
                for cols in [0..n, n / 3..n, 0..n.div_ceil(2), (n / 96 * 48)..n] {
                    let width = cols.len();
                    let mut fast = vec![f32::NAN; m * width];
                    let mut slow = vec![f32::NAN; m * width];
                    let rm = Weights::RowMajor(&w);
                    matmul(&x, rm, bias, &mut fast, m, k, n, cols.clone());
                    portable(&x, rm, bias, &mut slow, m, k, n, cols.clone());
                    // Same FMA sequence per element: bit-identical.
                    assert_eq!(fast, slow, "m={m} k={k} n={n} cols={cols:?}");
                    if cols.start % COLS == 0 {
                        let packed = pack(&w, k, n);
                        let mut p = vec![f32::NAN; m * width];
                        matmul(
                            &x,
                            Weights::Packed(&packed),
                            bias,
                            &mut p,
                            m,
                            k,
                            n,
                            cols.clone(),
                        );
                        assert_eq!(p, slow, "packed m={m} k={k} n={n} cols={cols:?}");
                        let mut q = vec![f32::NAN; m * width];
                        let pw = Weights::Packed(&packed);
                        portable(&x, pw, bias, &mut q, m, k, n, cols.clone());
                        assert_eq!(q, slow, "portable packed m={m} k={k} n={n}");
                    }
                    if width > 0 {
                        let j = cols.start;
                        let naive: f32 = bias.map_or(0.0, |b| b[j])
                            + (0..k).map(|i| x[i] * w[i * n + j]).sum::<f32>();
                        assert!((fast[0] - naive).abs() < 1e-4, "{} vs {naive}", fast[0]);
                    }
                }
            }
        }
    }
}
