//! Words, word n-grams and their 64-bit hashes, for near-duplicate detection and benchmark
//! decontamination.
//!
//! A *word* is a maximal run of alphanumeric characters, lowercased; every CJK ideograph,
//! kana or Hangul syllable is a word of its own (those scripts do not separate words with
//! spaces, and Chinese benchmarks such as CMATH must still match). Punctuation, spacing and
//! case differences therefore never hide a match.

/// One word: its byte span in the original text and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    pub start: usize,
    pub end: usize,
    pub hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A strong 64-bit finaliser (SplitMix64 / Stafford variant 13).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit hash of bytes: FNV-1a then [`mix64`].
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0x20000..=0x2FA1F) // extensions B..
}

/// The words of `text` with spans and hashes (see the module doc for what a word is).
pub fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::with_capacity(text.len() / 5);
    let mut start = None;
    let mut h = FNV_OFFSET;
    let feed = |h: &mut u64, c: char| {
        for lc in c.to_lowercase() {
            *h = (*h ^ u64::from(lc as u32)).wrapping_mul(FNV_PRIME);
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() && !is_cjk(c) {
            if start.is_none() {
                start = Some(i);
                h = FNV_OFFSET;
            }
            if c.is_ascii() {
                h = (h ^ u64::from(c.to_ascii_lowercase() as u32)).wrapping_mul(FNV_PRIME);
            } else {
                feed(&mut h, c);
            }
            continue;
        }
        if let Some(s) = start.take() {
            out.push(Word {
                start: s,
                end: i,
                hash: mix64(h),
            });
        }
        if is_cjk(c) {
            let mut hc = FNV_OFFSET;
            feed(&mut hc, c);
            out.push(Word {
                start: i,
                end: i + c.len_utf8(),
                hash: mix64(hc),
            });
        }
    }
    if let Some(s) = start {
        out.push(Word {
            start: s,
            end: text.len(),
            hash: mix64(h),
        });
    }
    out
}

/// Hashes of every `n`-word window, in order (empty when there are fewer than `n` words).
/// A polynomial rolling hash, finalised with [`mix64`], so the cost is O(1) per window.
pub fn ngram_hashes(words: &[Word], n: usize) -> Vec<u64> {
    if n == 0 || words.len() < n {
        return Vec::new();
    }
    const P: u64 = 0x9E37_79B9_7F4A_7C15 | 1;
    let pow = (1..n).fold(1u64, |acc, _| acc.wrapping_mul(P));
    let mut h = 0u64;
    for w in &words[..n] {
        h = h.wrapping_mul(P).wrapping_add(w.hash);
    }
    let mut out = Vec::with_capacity(words.len() - n + 1);
    out.push(mix64(h ^ n as u64));
    for i in n..words.len() {
        h = h
            .wrapping_sub(words[i - n].hash.wrapping_mul(pow))
            .wrapping_mul(P)
            .wrapping_add(words[i].hash);
        out.push(mix64(h ^ n as u64));
    }
    out
}

/// Text normalised for exact-duplicate hashing: the words joined by single spaces.
pub fn normalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in words(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(text[w.start..w.end].chars().flat_map(char::to_lowercase));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_ignore_case_and_punctuation_and_split_cjk() {
        let a: Vec<u64> = words("Hello, World! x=42").iter().map(|w| w.hash).collect();
        let b: Vec<u64> = words("hello world X 42").iter().map(|w| w.hash).collect();
        assert_eq!(a, b);
        let zh = words("小明有3个苹果");
        assert_eq!(zh.len(), 7);
        assert_eq!(&"小明有3个苹果"[zh[3].start..zh[3].end], "3");
    }

    #[test]
    fn rolling_ngrams_equal_direct_hashes() {
        let w = words("a b c d e f g");
        let rolled = ngram_hashes(&w, 3);
        assert_eq!(rolled.len(), 5);
        for (i, h) in rolled.iter().enumerate() {
            assert_eq!(*h, ngram_hashes(&w[i..i + 3], 3)[0]);
        }
        assert_ne!(rolled[0], rolled[1]);
        assert!(ngram_hashes(&w, 8).is_empty());
    }

    #[test]
    fn normalized_text() {
        assert_eq!(
            normalized("  The QUICK, brown\nfox! "),
            "the quick brown fox"
        );
    }
}
