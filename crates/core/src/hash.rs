//! Stable, dependency-free hashing (the same value on every platform and run).

/// 64-bit FNV-1a of `bytes`: stable ids derived from names (parameter ids, per-problem seeds).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_published_test_vectors() {
        // http://www.isthe.com/chongo/tech/comp/fnv/ : FNV-1a 64 of "" and "a".
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
