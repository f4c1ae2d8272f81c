//! The project's one seeded generator: SplitMix64 (Steele, Lea & Flood 2014). Small, fast, and
//! its stream never depends on a dependency's version, so a seed fixes a run for good. Every
//! sampler, shuffler and initialiser takes its seed explicitly.

/// SplitMix64 state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A generator whose internal state is exactly `state`.
    pub const fn from_state(state: u64) -> Self {
        Self(state)
    }

    /// A generator for a user seed (the seed is mixed with the golden ratio first, so seed 0
    /// does not start from state 0).
    pub const fn seeded(seed: u64) -> Self {
        Self(seed ^ GOLDEN)
    }

    /// The internal state (for deriving sub-streams).
    pub const fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `(0, 1]` (safe under `ln`).
    pub fn unit_open_closed(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (n > 0), by 128-bit multiply.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit_open_closed(), self.unit_open_closed());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_stream() {
        // First outputs of SplitMix64 from state 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64::from_state(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn ranges() {
        let mut r = SplitMix64::seeded(3);
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(7) < 7);
            let v = r.unit_open_closed();
            assert!(v > 0.0 && v <= 1.0);
        }
    }
}
