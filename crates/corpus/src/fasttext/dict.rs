//! fastText's dictionary: words and labels with counts, the open-addressing table keyed by
//! fastText's FNV-1a variant, and the feature ids of a line (word ids, then hashed word
//! n-grams and character n-grams in `[nwords, nwords + bucket)`), as `src/dictionary.cc`
//! computes them, so a model trained by either implementation gives the same features here.

use std::collections::HashMap;
use std::io::{Read, Write};

use super::FastTextError;
use super::args::Args;
use super::binio::{BinReader, write_i32, write_i64};

/// The end-of-sentence token fastText inserts for every newline.
pub const EOS: &[u8] = b"</s>";
const BOW: u8 = b'<';
const EOW: u8 = b'>';
/// fastText's `MAX_VOCAB_SIZE`: when the vocabulary passes 75% of it, rare words are pruned.
const MAX_VOCAB_SIZE: usize = 30_000_000;

/// fastText's `entry_type` (`int8_t`: word 0, label 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryType {
    Word = 0,
    Label = 1,
}

/// One vocabulary entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub word: Vec<u8>,
    pub count: i64,
    pub kind: EntryType,
}

/// fastText's string hash: FNV-1a (32-bit), except that each byte is sign-extended before the
/// xor (`h ^ uint32_t(int8_t(c))`), which every released fastText model depends on.
pub fn fasttext_hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in bytes {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// fastText's token separators (`Dictionary::readWord`).
#[inline]
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)
}

/// Split one line (without its newline) into fastText tokens.
pub fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| is_space(b)).filter(|t| !t.is_empty())
}

/// Words, labels and the hash table over them.
#[derive(Debug, Clone)]
pub struct Dictionary {
    words: Vec<Entry>,
    word2int: Vec<i32>,
    nwords: i32,
    nlabels: i32,
    ntokens: i64,
    /// -1: not pruned; 0: pruned to no n-grams; > 0: n-gram id remapping (quantized models).
    pruneidx_size: i64,
    pruneidx: HashMap<i32, i32>,
    /// Per word: its id followed by its character n-gram ids (only when `maxn > 0`).
    subwords: Vec<Vec<i32>>,
    label_prefix: Vec<u8>,
    bucket: i32,
    minn: i32,
    maxn: i32,
    word_ngrams: i32,
}

impl Dictionary {
    fn empty(args: &Args) -> Self {
        Self {
            words: Vec::new(),
            word2int: vec![-1; 1024],
            nwords: 0,
            nlabels: 0,
            ntokens: 0,
            pruneidx_size: -1,
            pruneidx: HashMap::new(),
            subwords: Vec::new(),
            label_prefix: args.label.as_bytes().to_vec(),
            bucket: args.bucket,
            minn: args.minn,
            maxn: args.maxn,
            word_ngrams: args.word_ngrams,
        }
    }

    pub fn nwords(&self) -> i32 {
        self.nwords
    }

    pub fn nlabels(&self) -> i32 {
        self.nlabels
    }

    pub fn ntokens(&self) -> i64 {
        self.ntokens
    }

    pub fn entries(&self) -> &[Entry] {
        &self.words
    }

    pub fn is_pruned(&self) -> bool {
        self.pruneidx_size >= 0
    }

    /// The label string of label index `lid` (0-based among labels).
    pub fn label(&self, lid: i32) -> Option<&[u8]> {
        if lid < 0 || lid >= self.nlabels {
            return None;
        }
        Some(&self.words[(self.nwords + lid) as usize].word)
    }

    /// Label counts in label order (what the hs / ns losses are built from).
    pub fn label_counts(&self) -> Vec<i64> {
        self.words
            .iter()
            .filter(|e| e.kind == EntryType::Label)
            .map(|e| e.count)
            .collect()
    }

    fn find(&self, w: &[u8], h: u32) -> usize {
        let len = self.word2int.len();
        let mut id = h as usize % len;
        loop {
            let slot = self.word2int[id];
            if slot == -1 || self.words[slot as usize].word == w {
                return id;
            }
            id = (id + 1) % len;
        }
    }

    /// Id of a word or label, or -1.
    pub fn id(&self, w: &[u8]) -> i32 {
        self.id_hashed(w, fasttext_hash(w))
    }

    fn id_hashed(&self, w: &[u8], h: u32) -> i32 {
        self.word2int[self.find(w, h)]
    }

    fn type_of(&self, w: &[u8]) -> EntryType {
        if w.starts_with(&self.label_prefix) {
            EntryType::Label
        } else {
            EntryType::Word
        }
    }

    fn rebuild_table(&mut self, min_len: usize) {
        let len = min_len
            .max(((self.words.len() as f64) / 0.7).ceil() as usize)
            .max(1);
        self.word2int = vec![-1; len];
        for i in 0..self.words.len() {
            let h = fasttext_hash(&self.words[i].word);
            let slot = self.find(&self.words[i].word, h);
            self.word2int[slot] = i as i32;
        }
    }

    fn add(&mut self, w: &[u8]) {
        self.ntokens += 1;
        let h = fasttext_hash(w);
        let slot = self.find(w, h);
        let id = self.word2int[slot];
        if id >= 0 {
            self.words[id as usize].count += 1;
            return;
        }
        let kind = self.type_of(w);
        self.words.push(Entry {
            word: w.to_vec(),
            count: 1,
            kind,
        });
        self.word2int[slot] = (self.words.len() - 1) as i32;
        if self.words.len() * 2 > self.word2int.len() {
            let n = self.word2int.len() * 2;
            self.rebuild_table(n);
        }
    }

    /// Count every token of a training stream (`Dictionary::readFromFile`): tokens split on
    /// fastText's whitespace, one `</s>` per newline. Bytes need not be UTF-8.
    pub fn build(args: &Args, mut input: impl std::io::BufRead) -> Result<Self, FastTextError> {
        let mut dict = Self::empty(args);
        let mut line = Vec::new();
        let mut min_threshold = 1i64;
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| FastTextError::Io {
                    path: "<training input>".into(),
                    source: e,
                })?;
            if n == 0 {
                break;
            }
            let newline = line.last() == Some(&b'\n');
            for t in tokens(&line) {
                dict.add(t);
            }
            if newline {
                dict.add(EOS);
            }
            if dict.words.len() as f64 > 0.75 * MAX_VOCAB_SIZE as f64 {
                min_threshold += 1;
                dict.threshold(min_threshold, min_threshold);
            }
        }
        dict.threshold(i64::from(args.min_count), i64::from(args.min_count_label));
        dict.init_ngrams();
        if dict.words.is_empty() {
            return Err(FastTextError::EmptyVocabulary);
        }
        Ok(dict)
    }

    /// Sort words before labels, by count descending (stable, so ties keep first-seen order),
    /// and drop entries under the thresholds (`Dictionary::threshold`).
    fn threshold(&mut self, t: i64, tl: i64) {
        self.words
            .sort_by(|a, b| a.kind.cmp(&b.kind).then(b.count.cmp(&a.count)));
        self.words.retain(|e| match e.kind {
            EntryType::Word => e.count >= t,
            EntryType::Label => e.count >= tl,
        });
        self.nwords = self
            .words
            .iter()
            .filter(|e| e.kind == EntryType::Word)
            .count() as i32;
        self.nlabels = self.words.len() as i32 - self.nwords;
        let len = self.word2int.len();
        self.rebuild_table(len);
    }

    fn init_ngrams(&mut self) {
        self.subwords.clear();
        if self.maxn <= 0 {
            return;
        }
        for i in 0..self.words.len() {
            let mut ids = vec![i as i32];
            if self.words[i].word != EOS {
                let mut w = Vec::with_capacity(self.words[i].word.len() + 2);
                w.push(BOW);
                w.extend_from_slice(&self.words[i].word);
                w.push(EOW);
                self.compute_subwords(&w, &mut ids);
            }
            self.subwords.push(ids);
        }
    }

    /// Character n-grams of `<word>`, counted in UTF-8 characters (`computeSubwords`).
    fn compute_subwords(&self, word: &[u8], out: &mut Vec<i32>) {
        let (minn, maxn) = (self.minn as usize, self.maxn as usize);
        let is_cont = |b: u8| (b & 0xC0) == 0x80;
        for i in 0..word.len() {
            if is_cont(word[i]) {
                continue;
            }
            let mut j = i;
            let mut n = 1;
            while j < word.len() && n <= maxn {
                j += 1;
                while j < word.len() && is_cont(word[j]) {
                    j += 1;
                }
                if n >= minn && !(n == 1 && (i == 0 || j == word.len())) {
                    let h = fasttext_hash(&word[i..j]) % self.bucket as u32;
                    self.push_hash(out, h as i32);
                }
                n += 1;
            }
        }
    }

    fn push_hash(&self, out: &mut Vec<i32>, id: i32) {
        if self.pruneidx_size == 0 || id < 0 {
            return;
        }
        let id = if self.pruneidx_size > 0 {
            match self.pruneidx.get(&id) {
                Some(&j) => j,
                None => return,
            }
        } else {
            id
        };
        out.push(self.nwords + id);
    }

    fn add_subwords(&self, out: &mut Vec<i32>, token: &[u8], wid: i32) {
        if wid < 0 {
            if token != EOS && self.maxn > 0 {
                let mut w = Vec::with_capacity(token.len() + 2);
                w.push(BOW);
                w.extend_from_slice(token);
                w.push(EOW);
                self.compute_subwords(&w, out);
            }
        } else if self.maxn <= 0 {
            out.push(wid);
        } else {
            out.extend_from_slice(&self.subwords[wid as usize]);
        }
    }

    /// Hashed word n-grams (`addWordNgrams`): the 32-bit token hashes are sign-extended to 64
    /// bits and combined as `h = h * 116049371 + next`, then taken modulo `bucket`.
    fn add_word_ngrams(&self, out: &mut Vec<i32>, hashes: &[i32]) {
        let n = self.word_ngrams.max(1) as usize;
        if n <= 1 || self.bucket <= 0 {
            return;
        }
        let bucket = self.bucket as u64;
        for i in 0..hashes.len() {
            let mut h = hashes[i] as i64 as u64;
            for &next in hashes.iter().take((i + n).min(hashes.len())).skip(i + 1) {
                h = h.wrapping_mul(116_049_371).wrapping_add(next as i64 as u64);
                self.push_hash(out, (h % bucket) as i32);
            }
        }
    }

    /// Features and label indices of one line, as `Dictionary::getLine` computes them for a
    /// supervised model. `eos` adds the `</s>` that a terminating newline produces (fastText's
    /// Python `predict` always appends one). Returns the number of tokens read.
    pub fn line(
        &self,
        line: &[u8],
        eos: bool,
        words: &mut Vec<i32>,
        labels: &mut Vec<i32>,
        hashes: &mut Vec<i32>,
    ) -> usize {
        words.clear();
        labels.clear();
        hashes.clear();
        let mut ntokens = 0;
        let eos_tok = if eos { Some(EOS) } else { None };
        for token in tokens(line).chain(eos_tok) {
            ntokens += 1;
            let h = fasttext_hash(token);
            let wid = self.id_hashed(token, h);
            let kind = if wid < 0 {
                self.type_of(token)
            } else {
                self.words[wid as usize].kind
            };
            match kind {
                EntryType::Word => {
                    self.add_subwords(words, token, wid);
                    hashes.push(h as i32);
                }
                EntryType::Label => {
                    if wid >= 0 {
                        labels.push(wid - self.nwords);
                    }
                }
            }
        }
        self.add_word_ngrams(words, hashes);
        ntokens
    }

    pub(crate) fn save(&self, w: &mut impl Write) -> std::io::Result<()> {
        write_i32(w, self.words.len() as i32)?;
        write_i32(w, self.nwords)?;
        write_i32(w, self.nlabels)?;
        write_i64(w, self.ntokens)?;
        write_i64(w, self.pruneidx_size)?;
        for e in &self.words {
            w.write_all(&e.word)?;
            w.write_all(&[0])?;
            write_i64(w, e.count)?;
            w.write_all(&[e.kind as u8])?;
        }
        // fastText writes an unordered_map; any order loads the same.
        let mut pairs: Vec<_> = self.pruneidx.iter().collect();
        pairs.sort();
        for (&a, &b) in pairs {
            write_i32(w, a)?;
            write_i32(w, b)?;
        }
        Ok(())
    }

    pub(crate) fn load<R: Read>(args: &Args, r: &mut BinReader<R>) -> Result<Self, FastTextError> {
        let mut dict = Self::empty(args);
        let size = r.i32("dictionary size")?;
        dict.nwords = r.i32("dictionary nwords")?;
        dict.nlabels = r.i32("dictionary nlabels")?;
        dict.ntokens = r.i64("dictionary ntokens")?;
        dict.pruneidx_size = r.i64("dictionary pruneidx_size")?;
        if size < 0
            || dict.nwords < 0
            || dict.nlabels < 0
            || dict.nwords.checked_add(dict.nlabels) != Some(size)
        {
            return Err(FastTextError::corrupt(format!(
                "dictionary sizes disagree: size {size}, nwords {}, nlabels {}",
                dict.nwords, dict.nlabels
            )));
        }
        // Each entry takes at least 10 bytes (NUL, count, type).
        r.check_len(size as u64, 10, "dictionary")?;
        dict.words.reserve(size as usize);
        for _ in 0..size {
            let word = r.cstring(1 << 20)?;
            let count = r.i64("word count")?;
            let kind = match r.u8("entry type")? {
                0 => EntryType::Word,
                1 => EntryType::Label,
                t => return Err(FastTextError::corrupt(format!("entry type {t}"))),
            };
            dict.words.push(Entry { word, count, kind });
        }
        if dict.pruneidx_size > 0 {
            r.check_len(dict.pruneidx_size as u64, 8, "pruneidx")?;
            for _ in 0..dict.pruneidx_size {
                let a = r.i32("pruneidx key")?;
                let b = r.i32("pruneidx value")?;
                dict.pruneidx.insert(a, b);
            }
        }
        dict.init_ngrams();
        dict.rebuild_table(0);
        Ok(dict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_fasttext_signed_char_fnv() {
        // Plain FNV-1a of "" is the offset basis; ASCII agrees with standard FNV-1a.
        assert_eq!(fasttext_hash(b""), 2_166_136_261);
        assert_eq!(fasttext_hash(b"a"), 0xe40c292c);
        // A byte >= 0x80 is sign-extended: differs from standard FNV-1a (0x... for "\xe9").
        let std_fnv = (2_166_136_261u32 ^ 0xe9).wrapping_mul(16_777_619);
        let ft = (2_166_136_261u32 ^ 0xffff_ffe9).wrapping_mul(16_777_619);
        assert_eq!(fasttext_hash(&[0xe9]), ft);
        assert_ne!(ft, std_fnv);
    }

    #[test]
    fn builds_sorted_dictionary_with_eos_and_labels() {
        let args = Args {
            min_count: 2,
            ..Args::default()
        };
        let text = b"__label__a x y x\n__label__b x z\n__label__a y\n";
        let d = Dictionary::build(&args, &text[..]).unwrap();
        let words: Vec<_> = d
            .entries()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.word).into_owned())
            .collect();
        // x:3, </s>:3, y:2 (z:1 dropped), then labels a:2, b:1 (minCountLabel 0).
        assert_eq!(words, ["x", "</s>", "y", "__label__a", "__label__b"]);
        assert_eq!(d.nwords(), 3);
        assert_eq!(d.nlabels(), 2);
        assert_eq!(d.ntokens(), 12);
    }

    #[test]
    fn word_ngrams_use_sign_extended_hashes() {
        let args = Args {
            word_ngrams: 2,
            bucket: 1000,
            ..Args::default()
        };
        let d = Dictionary::build(&args, &b"__label__a hello world\n"[..]).unwrap();
        let (mut w, mut l, mut h) = (vec![], vec![], vec![]);
        let n = d.line(b"hello world __label__a", true, &mut w, &mut l, &mut h);
        assert_eq!(n, 4);
        assert_eq!(l, vec![0]);
        let hs: Vec<i32> = [&b"hello"[..], b"world", EOS]
            .iter()
            .map(|t| fasttext_hash(t) as i32)
            .collect();
        let mix = |a: i32, b: i32| {
            ((a as i64 as u64)
                .wrapping_mul(116_049_371)
                .wrapping_add(b as i64 as u64)
                % 1000) as i32
        };
        let nw = d.nwords();
        let expect = vec![
            d.id(b"hello"),
            d.id(b"world"),
            d.id(EOS),
            nw + mix(hs[0], hs[1]),
            nw + mix(hs[1], hs[2]),
        ];
        assert_eq!(w, expect);
    }
}
