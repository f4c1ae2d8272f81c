//! The WARC reader on a web archive framed and encoded as real crawls store it
//! (`tests/data/web/crawl.warc[.gz]`, written by `scripts/make_web_fixtures.py` with Python's
//! codecs, gzip, zlib and brotli): pages in GBK, GB2312, EUC-JP, Shift_JIS (undeclared),
//! windows-1251 and ISO-8859-1 come back decoded; chunked, gzip, deflate and br payloads are
//! undone; scripts, styles, JSON, images, redirects and revisits are skipped, each counted
//! under its own reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use reasonlab_corpus::reader::{self, Format, ReadLimits, ReadStats};

fn read(name: &str) -> (BTreeMap<String, String>, ReadStats) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/web")
        .join(name);
    let mut docs = BTreeMap::new();
    let stats = reader::read_file(
        &path,
        Format::from_path(&path),
        ReadLimits::default(),
        &mut |d| {
            let id = d.id.trim_start_matches("urn:test:").to_string();
            assert!(docs.insert(id, d.text).is_none(), "ids are unique");
        },
    )
    .expect("the fixture opens");
    (docs, stats)
}

/// (record id, a sentence its text must hold).
const PAGES: [(&str, &str); 14] = [
    ("gbk-header", "两条直角边的平方和等于斜边的平方"),
    ("gb2312-meta", "解方程 x+3=5，得 x=2。"),
    (
        "eucjp-meta",
        "直角三角形の斜辺の二乗は他の二辺の二乗の和に等しい。",
    ),
    (
        "sjis-undeclared",
        "素数とは、1とその数自身以外に正の約数を持たない自然数",
    ),
    (
        "cp1251-meta",
        "Квадрат гипотенузы равен сумме квадратов катетов.",
    ),
    ("latin1-header", "Le carré de l'hypoténuse est égal"),
    (
        "plain-text",
        "Lemma: every bounded monotone sequence converges.",
    ),
    ("chunked", "The derivative of x^2 is 2x."),
    ("gzip", "The integral of 1/x is ln|x| + C."),
    ("deflate", "The sum of the first n odd numbers is n^2."),
    ("brotli", "Every finite group of prime order is cyclic."),
    ("gzip-chunked", "A circle of radius r has area pi r^2."),
    ("cc-renamed", "The harmonic series diverges."),
    ("sniffed-html", "Two lines meet in at most one point."),
];

#[test]
fn every_page_is_decoded_and_every_non_document_skipped_with_its_reason() {
    for file in ["crawl.warc", "crawl.warc.gz"] {
        let (docs, stats) = read(file);
        for (id, sentence) in PAGES {
            let text = docs
                .get(id)
                .unwrap_or_else(|| panic!("{file}: {id} missing: {stats:?}"));
            assert!(text.contains(sentence), "{file}: {id}: {text:?}");
            // No chunk sizes, markup or replacement characters leak into the text.
            assert!(
                !text.contains('\u{FFFD}') && !text.contains('<'),
                "{file}: {id}: {text:?}"
            );
        }
        assert_eq!(docs.len(), PAGES.len(), "{file}: {:?}", docs.keys());
        assert_eq!(stats.records, 21, "{file}");
        assert_eq!(
            (stats.not_text, stats.http_status, stats.revisits),
            (5, 1, 1),
            "{file}: script, style, JSON, image, untyped binary; a redirect; a revisit: {stats:?}"
        );
        assert_eq!(
            (
                stats.malformed,
                stats.invalid_utf8,
                stats.undecodable,
                stats.empty
            ),
            (0, 0, 0, 0),
            "{file}: {stats:?}"
        );
        for media in [
            "application/javascript",
            "text/css",
            "application/json",
            "image/png",
        ] {
            assert!(
                stats.examples.iter().any(|e| e.contains(media)),
                "{file}: the skip of {media} is explained: {:?}",
                stats.examples
            );
        }
        for charset in ["GBK", "EUC-JP", "Shift_JIS", "windows-1251", "windows-1252"] {
            assert!(
                stats.charsets.contains_key(charset),
                "{file}: {:?}",
                stats.charsets
            );
        }
    }
}

#[test]
fn a_compressed_payload_that_is_cut_short_is_reported_not_garbled() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/web/crawl.warc");
    let raw = std::fs::read(path).unwrap();
    // Rebuild the gzip record with its payload cut in half (Content-Length adjusted).
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(&raw, b"WARC-Record-ID: <urn:test:gzip>").unwrap();
    let record_start = raw[..start]
        .windows(8)
        .rposition(|w| w == b"WARC/1.1")
        .unwrap();
    let head_end = record_start + find(&raw[record_start..], b"\r\n\r\n").unwrap() + 4;
    let head = std::str::from_utf8(&raw[record_start..head_end]).unwrap();
    let block_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let block = &raw[head_end..head_end + block_len];
    let http_end = block.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let cut = &block[..http_end + (block_len - http_end) / 2];
    let mut rec = format!(
        "WARC/1.1\r\nWARC-Type: response\r\nWARC-Target-URI: http://x.org/\r\nContent-Length: {}\r\n\r\n",
        cut.len()
    )
    .into_bytes();
    rec.extend_from_slice(cut);
    rec.extend_from_slice(b"\r\n\r\n");
    let mut docs = Vec::new();
    let stats = reader::warc::read(
        rec.as_slice(),
        "cut.warc",
        ReadLimits::default(),
        &mut |d| docs.push(d),
    );
    assert!(docs.is_empty(), "{docs:?}");
    assert_eq!(stats.undecodable, 1, "{stats:?}");
    assert!(stats.examples[0].contains("gzip"), "{:?}", stats.examples);
}
