//! Little-endian readers and writers for fastText's binary layout (the C++ code writes the
//! host's raw bytes; every platform fastText ships for is little-endian).

use std::io::{Read, Write};

use super::FastTextError;

/// A reader that knows how many bytes remain, so a corrupt size field is caught before we
/// try to allocate it.
pub(crate) struct BinReader<R: Read> {
    inner: R,
    remaining: u64,
}

impl<R: Read> BinReader<R> {
    pub(crate) fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            remaining: len,
        }
    }

    pub(crate) fn bytes<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], FastTextError> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| FastTextError::corrupt(format!("reading {what}: {e}")))?;
        self.remaining = self.remaining.saturating_sub(N as u64);
        Ok(buf)
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, FastTextError> {
        Ok(i32::from_le_bytes(self.bytes::<4>(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, FastTextError> {
        Ok(i64::from_le_bytes(self.bytes::<8>(what)?))
    }

    pub(crate) fn f64(&mut self, what: &'static str) -> Result<f64, FastTextError> {
        Ok(f64::from_le_bytes(self.bytes::<8>(what)?))
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, FastTextError> {
        Ok(self.bytes::<1>(what)?[0])
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, FastTextError> {
        Ok(self.u8(what)? != 0)
    }

    /// Read a NUL-terminated byte string (a dictionary word).
    pub(crate) fn cstring(&mut self, max: usize) -> Result<Vec<u8>, FastTextError> {
        let mut out = Vec::new();
        loop {
            let b = self.u8("dictionary word")?;
            if b == 0 {
                return Ok(out);
            }
            if out.len() >= max {
                return Err(FastTextError::corrupt(format!(
                    "dictionary word longer than {max} bytes"
                )));
            }
            out.push(b);
        }
    }

    /// Check that `count` items of `size` bytes can still be in the file.
    pub(crate) fn check_len(
        &self,
        count: u64,
        size: u64,
        what: &str,
    ) -> Result<usize, FastTextError> {
        let need = count.checked_mul(size).ok_or_else(|| {
            FastTextError::corrupt(format!("{what}: size {count} x {size} overflows"))
        })?;
        if need > self.remaining {
            return Err(FastTextError::corrupt(format!(
                "{what}: needs {need} bytes but only {} remain",
                self.remaining
            )));
        }
        usize::try_from(count).map_err(|_| FastTextError::corrupt(format!("{what}: too large")))
    }

    pub(crate) fn u8_vec(
        &mut self,
        count: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, FastTextError> {
        self.check_len(count as u64, 1, what)?;
        let mut out = vec![0u8; count];
        self.inner
            .read_exact(&mut out)
            .map_err(|e| FastTextError::corrupt(format!("reading {what}: {e}")))?;
        self.remaining -= count as u64;
        Ok(out)
    }

    pub(crate) fn f32_vec(
        &mut self,
        count: usize,
        what: &'static str,
    ) -> Result<Vec<f32>, FastTextError> {
        self.check_len(count as u64, 4, what)?;
        let mut out = Vec::with_capacity(count);
        let mut buf = vec![0u8; 1 << 16];
        let mut left = count;
        while left > 0 {
            let n = left.min(buf.len() / 4);
            self.inner
                .read_exact(&mut buf[..n * 4])
                .map_err(|e| FastTextError::corrupt(format!("reading {what}: {e}")))?;
            out.extend(
                buf[..n * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            left -= n;
        }
        self.remaining -= count as u64 * 4;
        Ok(out)
    }
}

pub(crate) fn write_i32(w: &mut impl Write, v: i32) -> std::io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

pub(crate) fn write_i64(w: &mut impl Write, v: i64) -> std::io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

pub(crate) fn write_f64(w: &mut impl Write, v: f64) -> std::io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

pub(crate) fn write_bool(w: &mut impl Write, v: bool) -> std::io::Result<()> {
    w.write_all(&[u8::from(v)])
}

pub(crate) fn write_f32s(w: &mut impl Write, data: &[f32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in data.chunks(1 << 14) {
        buf.clear();
        for v in chunk {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}
