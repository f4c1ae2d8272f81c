//! Bad input never aborts a shard: truncated gzip, invalid UTF-8, empty documents, giant lines
//! and malformed records are counted, reported with file and line, and skipped; and the
//! parsers survive seeded random mutations of valid input (a deterministic stand-in for the
//! cargo-fuzz targets in `fuzz/`, so CI exercises them on stable).

use std::io::Write;
use std::path::Path;

use reasonlab_corpus::fasttext::FastText;
use reasonlab_corpus::reader::{self, Document, Format, ReadLimits, html_to_text};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn read(path: &Path, format: Format) -> (Vec<Document>, reader::ReadStats) {
    let mut docs = Vec::new();
    let stats = reader::read_file(path, format, ReadLimits::default(), &mut |d| docs.push(d))
        .expect("opening works");
    (docs, stats)
}

fn warc_record(url: &str, body: &str) -> String {
    format!(
        "WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: {url}\r\nContent-Length: {}\r\n\r\n{body}\r\n\r\n",
        body.len()
    )
}

#[test]
fn jsonl_bad_lines_are_counted_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.jsonl.gz");
    let mut raw = Vec::new();
    raw.extend_from_slice(b"{\"id\":\"a\",\"text\":\"first good\"}\n");
    raw.extend_from_slice(b"{\"id\":\"b\",\"text\":\"bad \xff\xfe bytes\"}\n");
    raw.extend_from_slice(b"{\"id\":\"c\",\"text\":\n");
    raw.extend_from_slice(b"{\"id\":\"d\",\"text\":\"   \"}\n");
    raw.extend_from_slice(b"{\"id\":\"e\",\"text\":\"second good\"}\n");
    std::fs::write(&path, gz(&raw)).unwrap();
    let (docs, stats) = read(&path, Format::Jsonl);
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "e"]);
    assert_eq!(
        (stats.invalid_utf8, stats.malformed, stats.empty),
        (1, 1, 1),
        "{stats:?}"
    );
    assert!(
        stats.examples.iter().any(|e| e.contains("docs.jsonl.gz:2")),
        "{:?}",
        stats.examples
    );
    assert!(
        stats.examples.iter().any(|e| e.contains("docs.jsonl.gz:3")),
        "{:?}",
        stats.examples
    );
}

#[test]
fn giant_lines_are_skipped_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("giant.jsonl");
    let giant = format!("{{\"id\":\"g\",\"text\":\"{}\"}}\n", "x".repeat(3000));
    std::fs::write(
        &path,
        format!("{giant}{{\"id\":\"ok\",\"text\":\"fine\"}}\n"),
    )
    .unwrap();
    let limits = ReadLimits {
        max_line_bytes: 1000,
        ..ReadLimits::default()
    };
    let mut docs = Vec::new();
    let stats = reader::read_file(&path, Format::Jsonl, limits, &mut |d| docs.push(d)).unwrap();
    assert_eq!((docs.len(), stats.too_long), (1, 1), "{stats:?}");
    assert_eq!(docs[0].id, "ok");
}

#[test]
fn truncated_gzip_keeps_what_came_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    // JSONL: 200 documents, the compressed file cut at 60%.
    let mut raw = String::new();
    for i in 0..200 {
        raw += &format!(
            "{{\"id\":\"{i}\",\"text\":\"document number {i} with some words {}\"}}\n",
            i * 7919
        );
    }
    let full = gz(raw.as_bytes());
    let path = dir.path().join("cut.jsonl.gz");
    std::fs::write(&path, &full[..full.len() * 6 / 10]).unwrap();
    let (docs, stats) = read(&path, Format::Jsonl);
    assert_eq!(stats.truncated, 1, "{stats:?}");
    assert!(
        docs.len() > 20 && docs.len() < 200,
        "{} documents",
        docs.len()
    );
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(
            d.id,
            i.to_string(),
            "documents before the cut arrive in order, whole"
        );
    }
    // WET: the same for records.
    let mut raw = String::new();
    for i in 0..200 {
        raw += &warc_record(
            &format!("http://e.org/{i}"),
            &format!("page {i} text {}", i * 31),
        );
    }
    let full = gz(raw.as_bytes());
    let path = dir.path().join("cut.warc.wet.gz");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let (docs, stats) = read(&path, Format::Wet);
    assert!(stats.truncated >= 1, "{stats:?}");
    assert!(
        docs.len() > 20 && docs.len() < 200,
        "{} documents",
        docs.len()
    );
    assert!(docs.iter().all(|d| d.text.starts_with("page ")));
}

/// A tiny seeded PRNG (the test must not depend on an external fuzzer).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

/// Flip, insert, delete, duplicate or truncate a few bytes.
fn mutate(seed: &[u8], rng: &mut Lcg) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.next(8) {
        let at = rng.next(v.len() + 1);
        match rng.next(5) {
            0 if at < v.len() => v[at] = rng.next(256) as u8,
            1 => v.insert(
                at,
                [b'\n', b'\r', b':', 0xff, b'<', b'"', b'{', b'0'][rng.next(8)],
            ),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => {
                let end = (at + rng.next(64)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn parsers_survive_random_mutations() {
    let mut warc = String::new();
    warc += &warc_record("http://a.org/1", "Let $x^2 = 4$.");
    warc += "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://b.org/\r\nContent-Length: 90\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>Solve <script type=\"math/tex\">a+b</script></p>\r\n\r\n";
    let jsonl =
        "{\"id\":\"a\",\"url\":\"http://x\",\"text\":\"hello\"}\n{\"id\":2,\"text\":\"n\"}\n";
    let html = "<html><body><p>A <math alttext=\"x^2\"><mi>x</mi></math> and \\(y\\)</p><script type=\"math/tex; mode=display\">\\frac12</script><img alt=\"$z$\" class=\"latex\"></body></html>";
    let bin =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model.bin")).unwrap();
    // A web archive as crawls store it: charsets, chunked and compressed payloads, revisits.
    let crawl =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/web/crawl.warc"))
            .unwrap();
    let mut rng = Lcg(7);
    let limits = ReadLimits {
        max_line_bytes: 4096,
        max_record_bytes: 1 << 16,
    };
    for _ in 0..3000 {
        let w = mutate(warc.as_bytes(), &mut rng);
        let mut n = 0u64;
        let s = reader::warc::read(&w[..], "fuzz.warc", limits, &mut |_| n += 1);
        assert_eq!(s.documents, n);
        let c = mutate(&crawl, &mut rng);
        let mut n = 0u64;
        let s = reader::warc::read(&c[..], "crawl.warc", limits, &mut |_| n += 1);
        assert_eq!(s.documents, n);
        // The HTTP layer on its own, on a mutated slice of the archive.
        let at = rng.next(crawl.len());
        let piece = mutate(&crawl[at..(at + 600).min(crawl.len())], &mut rng);
        if let Some(r) = reader::http::Response::parse(&piece)
            && let Ok(payload) = r.payload(1 << 16)
            && let Ok(kind) = r.kind(&payload)
        {
            let _ = reader::http::decode_text(&payload, r.charset.as_deref(), kind, "http://x.jp/");
        }
        let _ = reader::http::dechunk(&piece);
        let j = mutate(jsonl.as_bytes(), &mut rng);
        let mut n = 0u64;
        let s = reader::jsonl::read(
            &j[..],
            "fuzz.jsonl",
            &reader::jsonl::Fields::default(),
            limits,
            &mut |_| n += 1,
        );
        assert_eq!(s.documents, n);
        let h = mutate(html.as_bytes(), &mut rng);
        let _ = html_to_text(&String::from_utf8_lossy(&h));
    }
    // The model file: header fields, counts and matrix sizes corrupted; errors, never panics
    // or huge allocations (sizes are checked against the bytes that remain).
    for _ in 0..300 {
        let mut b = bin.clone();
        for _ in 0..1 + rng.next(4) {
            let at = rng.next(400.min(b.len()));
            b[at] = rng.next(256) as u8;
        }
        if rng.next(4) == 0 {
            let keep = rng.next(b.len());
            b.truncate(keep);
        }
        let _ = FastText::from_bytes(&b);
    }
    // Inputs the cargo-fuzz targets found (each once panicked), kept as regressions.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(FastText::from_bytes(&bytes).is_err());
    }
}
