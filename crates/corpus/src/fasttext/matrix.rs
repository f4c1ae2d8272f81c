//! The input and output matrices: dense (`densematrix.cc`) or product-quantized
//! (`quantmatrix.cc`, `productquantizer.cc`, read from `.ftz` files).

use std::io::{Read, Write};

use super::FastTextError;
use super::binio::{BinReader, write_bool, write_f32s, write_i64};

/// A row-major `rows x cols` matrix of f32.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl DenseMatrix {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub(crate) fn save(&self, w: &mut impl Write) -> std::io::Result<()> {
        write_i64(w, self.rows as i64)?;
        write_i64(w, self.cols as i64)?;
        write_f32s(w, &self.data)
    }

    pub(crate) fn load<R: Read>(r: &mut BinReader<R>) -> Result<Self, FastTextError> {
        let m = r.i64("matrix rows")?;
        let n = r.i64("matrix cols")?;
        if m < 0 || n < 0 {
            return Err(FastTextError::corrupt(format!("matrix shape {m} x {n}")));
        }
        let count = (m as u64)
            .checked_mul(n as u64)
            .ok_or_else(|| FastTextError::corrupt(format!("matrix shape {m} x {n}")))?;
        let count = r.check_len(count, 4, "matrix data")?;
        let data = r.f32_vec(count, "matrix data")?;
        Ok(Self {
            rows: m as usize,
            cols: n as usize,
            data,
        })
    }
}

/// 8-bit product quantizer: `nsubq` sub-vectors of `dsub` dims (the last `lastdsub`), 256
/// centroids each.
#[derive(Debug, Clone)]
pub struct ProductQuantizer {
    dim: usize,
    nsubq: usize,
    dsub: usize,
    lastdsub: usize,
    centroids: Vec<f32>,
}

const KSUB: usize = 256;

impl ProductQuantizer {
    fn load<R: Read>(r: &mut BinReader<R>) -> Result<Self, FastTextError> {
        let dim = r.i32("pq dim")?;
        let nsubq = r.i32("pq nsubq")?;
        let dsub = r.i32("pq dsub")?;
        let lastdsub = r.i32("pq lastdsub")?;
        if dim <= 0 || nsubq <= 0 || dsub <= 0 || lastdsub <= 0 || lastdsub > dsub {
            return Err(FastTextError::corrupt(format!(
                "product quantizer dim {dim} nsubq {nsubq} dsub {dsub} lastdsub {lastdsub}"
            )));
        }
        let (dim, nsubq, dsub, lastdsub) = (
            dim as usize,
            nsubq as usize,
            dsub as usize,
            lastdsub as usize,
        );
        if (nsubq - 1) * dsub + lastdsub != dim {
            return Err(FastTextError::corrupt(format!(
                "product quantizer shape: ({nsubq} - 1) * {dsub} + {lastdsub} != {dim}"
            )));
        }
        let centroids = r.f32_vec(dim * KSUB, "pq centroids")?;
        Ok(Self {
            dim,
            nsubq,
            dsub,
            lastdsub,
            centroids,
        })
    }

    #[inline]
    fn centroid(&self, m: usize, code: u8) -> &[f32] {
        let i = code as usize;
        if m == self.nsubq - 1 {
            let at = m * KSUB * self.dsub + i * self.lastdsub;
            &self.centroids[at..at + self.lastdsub]
        } else {
            let at = (m * KSUB + i) * self.dsub;
            &self.centroids[at..at + self.dsub]
        }
    }

    fn mulcode(&self, x: &[f32], codes: &[u8], alpha: f32) -> f32 {
        let mut res = 0.0f32;
        for (m, &code) in codes.iter().enumerate() {
            for (n, c) in self.centroid(m, code).iter().enumerate() {
                res += x[m * self.dsub + n] * c;
            }
        }
        res * alpha
    }

    fn addcode(&self, x: &mut [f32], codes: &[u8], alpha: f32) {
        for (m, &code) in codes.iter().enumerate() {
            for (n, c) in self.centroid(m, code).iter().enumerate() {
                x[m * self.dsub + n] += alpha * c;
            }
        }
    }
}

/// A product-quantized matrix (optionally with quantized row norms).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    pq: ProductQuantizer,
    norm: Option<(Vec<u8>, ProductQuantizer)>,
}

impl QuantMatrix {
    fn load<R: Read>(r: &mut BinReader<R>) -> Result<Self, FastTextError> {
        let qnorm = r.bool("qnorm")?;
        let m = r.i64("quant rows")?;
        let n = r.i64("quant cols")?;
        let codesize = r.i32("codesize")?;
        if m < 0 || n <= 0 || codesize < 0 {
            return Err(FastTextError::corrupt(format!(
                "quantized matrix {m} x {n}, codesize {codesize}"
            )));
        }
        let codes = r.u8_vec(codesize as usize, "codes")?;
        let pq = ProductQuantizer::load(r)?;
        if pq.dim != n as usize || (m as usize).checked_mul(pq.nsubq) != Some(codes.len()) {
            return Err(FastTextError::corrupt(format!(
                "quantized matrix {m} x {n} does not fit {} codes of {} sub-quantizers",
                codes.len(),
                pq.nsubq
            )));
        }
        let norm = if qnorm {
            let nc = r.u8_vec(m as usize, "norm codes")?;
            let npq = ProductQuantizer::load(r)?;
            Some((nc, npq))
        } else {
            None
        };
        Ok(Self {
            rows: m as usize,
            cols: n as usize,
            codes,
            pq,
            norm,
        })
    }

    #[inline]
    fn norm(&self, i: usize) -> f32 {
        match &self.norm {
            Some((codes, npq)) => npq.centroid(0, codes[i])[0],
            None => 1.0,
        }
    }

    #[inline]
    fn codes(&self, i: usize) -> &[u8] {
        &self.codes[i * self.pq.nsubq..(i + 1) * self.pq.nsubq]
    }
}

/// Either kind of matrix, with the two operations prediction needs.
#[derive(Debug, Clone)]
pub enum Matrix {
    Dense(DenseMatrix),
    Quant(QuantMatrix),
}

impl Matrix {
    pub fn rows(&self) -> usize {
        match self {
            Matrix::Dense(m) => m.rows,
            Matrix::Quant(m) => m.rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Matrix::Dense(m) => m.cols,
            Matrix::Quant(m) => m.cols,
        }
    }

    /// `x = mean of rows` (`averageRowsToVector`): summed in row order, then scaled by the
    /// f32 rounding of `1.0 / n` as fastText does.
    pub fn average_rows(&self, rows: &[i32], x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = 0.0);
        match self {
            Matrix::Dense(m) => {
                for &r in rows {
                    for (o, v) in x.iter_mut().zip(m.row(r as usize)) {
                        *o += v;
                    }
                }
            }
            Matrix::Quant(q) => {
                for &r in rows {
                    q.pq.addcode(x, q.codes(r as usize), q.norm(r as usize));
                }
            }
        }
        if !rows.is_empty() {
            let s = (1.0f64 / rows.len() as f64) as f32;
            x.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Dot product of row `i` with `x`, summed left to right in f32 like `dotRow`.
    pub fn dot_row(&self, x: &[f32], i: usize) -> f32 {
        match self {
            Matrix::Dense(m) => {
                let mut d = 0.0f32;
                for (a, b) in m.row(i).iter().zip(x) {
                    d += a * b;
                }
                d
            }
            Matrix::Quant(q) => q.pq.mulcode(x, q.codes(i), q.norm(i)),
        }
    }

    pub(crate) fn load<R: Read>(r: &mut BinReader<R>, quant: bool) -> Result<Self, FastTextError> {
        Ok(if quant {
            Matrix::Quant(QuantMatrix::load(r)?)
        } else {
            Matrix::Dense(DenseMatrix::load(r)?)
        })
    }

    /// Only dense matrices are written (we read `.ftz` but do not quantize).
    pub(crate) fn save(&self, w: &mut impl Write) -> Result<(), FastTextError> {
        match self {
            Matrix::Dense(m) => m.save(w).map_err(FastTextError::write),
            Matrix::Quant(_) => Err(FastTextError::Unsupported(
                "writing a quantized (.ftz) model",
            )),
        }
    }

    pub(crate) fn save_flag(w: &mut impl Write, quant: bool) -> Result<(), FastTextError> {
        write_bool(w, quant).map_err(FastTextError::write)
    }
}
