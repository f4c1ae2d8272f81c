//! fastText `.bin` / `.ftz` loading on arbitrary bytes: an error, never a panic or an
//! allocation larger than the input justifies; a model that loads can predict.
//! Run with `cargo +nightly fuzz run fasttext_bin`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reasonlab_corpus::fasttext::{FastText, Scratch};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = FastText::from_bytes(data) {
        let mut s = Scratch::default();
        let _ = m.predict_line("a b c", 2, 0.0, &mut s);
    }
});
