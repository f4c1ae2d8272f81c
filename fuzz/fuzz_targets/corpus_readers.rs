//! WARC/WET, HTTP, JSONL and HTML parsing on arbitrary bytes: never panic, and every document
//! delivered is counted. Run with `cargo +nightly fuzz run corpus_readers`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reasonlab_corpus::reader::{self, ReadLimits};

fuzz_target!(|data: &[u8]| {
    let limits = ReadLimits {
        max_line_bytes: 1 << 16,
        max_record_bytes: 1 << 20,
    };
    let mut n = 0u64;
    let s = reader::warc::read(data, "fuzz", limits, &mut |_| n += 1);
    assert_eq!(s.documents, n);
    let mut n = 0u64;
    let fields = reader::jsonl::Fields::default();
    let s = reader::jsonl::read(data, "fuzz", &fields, limits, &mut |_| n += 1);
    assert_eq!(s.documents, n);
    let _ = reader::html_to_text(&String::from_utf8_lossy(data));
    // The HTTP layer: framing, content codings (bounded), media type, charset detection.
    if let Some(r) = reader::http::Response::parse(data)
        && let Ok(payload) = r.payload(1 << 20)
        && let Ok(kind) = r.kind(&payload)
    {
        // The URL's top-level domain hints the detector; take it from the input too.
        let url = String::from_utf8_lossy(&data[..data.len().min(48)]);
        let _ = reader::http::decode_text(&payload, r.charset.as_deref(), kind, &url);
    }
    let _ = reader::http::dechunk(data);
});
