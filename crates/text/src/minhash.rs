//! MinHash signatures over word shingles and LSH band keys (Broder 1997; banding as in
//! datatrove's `MinhashDedup*`: 5-word shingles, 14 bands x 8 rows by default).

use crate::ngram::{mix64, ngram_hashes, words};

/// MinHash settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MinHashConfig {
    pub shingle: usize,
    pub bands: usize,
    pub rows: usize,
    pub seed: u64,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        Self {
            shingle: 5,
            bands: 14,
            rows: 8,
            seed: 1,
        }
    }
}

/// `bands * rows` hash functions `h_i(x) = (a_i * x + b_i) >> 32` (multiply-shift, a_i odd).
#[derive(Debug, Clone)]
pub struct MinHasher {
    config: MinHashConfig,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(config: MinHashConfig) -> Self {
        let n = config.bands * config.rows;
        let mut s = config.seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(s)
        };
        let a = (0..n).map(|_| next() | 1).collect();
        let b = (0..n).map(|_| next()).collect();
        Self { config, a, b }
    }

    pub fn config(&self) -> MinHashConfig {
        self.config
    }

    /// The signature of `text` (`bands * rows` values), or `None` when it has no shingle.
    /// Texts shorter than one shingle use their whole word sequence as the only shingle.
    pub fn signature(&self, text: &str) -> Option<Vec<u32>> {
        let w = words(text);
        if w.is_empty() {
            return None;
        }
        let mut shingles = ngram_hashes(&w, self.config.shingle.min(w.len()));
        shingles.sort_unstable();
        shingles.dedup();
        let mut sig = vec![u32::MAX; self.a.len()];
        for &x in &shingles {
            for ((s, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                let h = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
                *s = (*s).min(h);
            }
        }
        Some(sig)
    }

    /// One 64-bit key per band.
    pub fn band_keys(&self, sig: &[u32]) -> Vec<u64> {
        sig.chunks(self.config.rows)
            .enumerate()
            .map(|(band, rows)| {
                let mut h = 0xcbf2_9ce4_8422_2325u64 ^ band as u64;
                for &r in rows {
                    h = mix64(h ^ u64::from(r));
                }
                h
            })
            .collect()
    }
}

/// Fraction of equal positions: an estimate of the Jaccard similarity of the shingle sets.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_duplicates_share_a_band_and_strangers_do_not() {
        let m = MinHasher::new(MinHashConfig::default());
        let base: String = (0..200)
            .map(|i| format!("word{} ", i % 97 + i / 3))
            .collect();
        let edited = base.replacen("word10", "changed", 1);
        let other: String = (0..200).map(|i| format!("other{} ", i * 7)).collect();
        let (sa, sb, sc) = (
            m.signature(&base).unwrap(),
            m.signature(&edited).unwrap(),
            m.signature(&other).unwrap(),
        );
        assert!(estimated_jaccard(&sa, &sb) > 0.8);
        assert!(estimated_jaccard(&sa, &sc) < 0.1);
        let (ka, kb, kc) = (m.band_keys(&sa), m.band_keys(&sb), m.band_keys(&sc));
        assert_eq!(ka.len(), 14);
        assert!(ka.iter().zip(&kb).any(|(x, y)| x == y));
        assert!(ka.iter().zip(&kc).all(|(x, y)| x != y));
        assert!(m.signature(" ... ").is_none());
    }
}
