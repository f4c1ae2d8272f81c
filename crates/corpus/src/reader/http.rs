//! HTTP responses as web archives store them: the status line and headers, then a payload
//! that may still carry its transfer framing (`Transfer-Encoding: chunked`, kept by wget and
//! Heritrix; Common Crawl removes it and renames the header), its content coding (`gzip`,
//! `deflate`, `br`) and any character encoding (GBK, Shift_JIS, EUC-JP, windows-1251,
//! ISO-8859-1, …).
//!
//! [`Response::parse`] reads the head, [`Response::payload`] undoes the framing and the content
//! coding, [`Response::kind`] keeps only HTML and plain text (by `Content-Type`, else by
//! sniffing the bytes, as the WHATWG MIME sniffing standard does), and [`decode_text`] finds
//! the character encoding in the order browsers use: byte-order mark, the HTTP `charset`, a
//! `<meta charset>` in the first bytes of an HTML page, then (when the bytes are not UTF-8)
//! statistical detection by `chardetng`, the detector Firefox uses. Decoding itself is
//! `encoding_rs` (the WHATWG Encoding Standard), so every label and encoder table is theirs.

use std::borrow::Cow;
use std::io::Read;

use encoding_rs::Encoding;

/// A content coding of the payload (`Content-Encoding`), applied in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    /// A coding this reader does not undo (`compress`, `zstd`, …).
    Other(String),
}

/// What kind of document a response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Html,
    Text,
}

/// Why a response is not a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not HTML or text: the media type (`image/png`, `application/javascript`, or
    /// `binary` when sniffed).
    NotText(String),
    /// A status outside 2xx (redirects, errors, `304 Not Modified`).
    Status(u16),
    /// The content coding could not be undone.
    Undecodable(String),
}

/// The head of an HTTP response and where its payload starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: Option<u16>,
    /// The media type, lowercased, without parameters.
    pub media_type: Option<String>,
    /// The `charset` parameter of `Content-Type`.
    pub charset: Option<String>,
    pub chunked: bool,
    pub codings: Vec<Coding>,
    /// The payload bytes as stored.
    pub body: &'a [u8],
}

impl<'a> Response<'a> {
    /// Splits a stored response into head and payload; `None` when the head never ends.
    pub fn parse(record: &'a [u8]) -> Option<Self> {
        let (head, body) = split_head(record)?;
        let head = String::from_utf8_lossy(head);
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| {
            let mut parts = l.split_whitespace();
            let version = parts.next()?;
            version
                .starts_with("HTTP/")
                .then(|| parts.next()?.parse().ok())
                .flatten()
        });
        let mut r = Response {
            status,
            media_type: None,
            charset: None,
            chunked: false,
            codings: Vec::new(),
            body,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => {
                    let (media, charset) = content_type(value);
                    r.media_type = media;
                    r.charset = charset.or(r.charset);
                }
                "transfer-encoding" => {
                    r.chunked = value.to_ascii_lowercase().contains("chunked");
                }
                "content-encoding" => {
                    for c in value.split(',').map(|c| c.trim().to_ascii_lowercase()) {
                        match c.as_str() {
                            "" | "identity" | "none" | "utf-8" | "utf8" => {}
                            "gzip" | "x-gzip" => r.codings.push(Coding::Gzip),
                            "deflate" => r.codings.push(Coding::Deflate),
                            "br" => r.codings.push(Coding::Brotli),
                            _ => r.codings.push(Coding::Other(c)),
                        }
                    }
                }
                _ => {}
            }
        }
        Some(r)
    }

    /// Whether the status is a success with a body (a missing status line is taken as one).
    pub fn status_ok(&self) -> Result<(), Skip> {
        match self.status {
            Some(s) if !(200..300).contains(&s) || s == 204 => Err(Skip::Status(s)),
            _ => Ok(()),
        }
    }

    /// The payload with its chunked framing and content codings undone, at most `limit`
    /// bytes once decompressed.
    pub fn payload(&self, limit: u64) -> Result<Cow<'a, [u8]>, Skip> {
        let mut bytes: Cow<'a, [u8]> = Cow::Borrowed(self.body);
        if self.chunked {
            // Archives that removed the framing keep the header: take the body as it is when
            // it does not parse as chunks.
            if let Some(joined) = dechunk(self.body) {
                bytes = Cow::Owned(joined);
            }
        }
        // Codings were applied in header order, so they are undone in reverse.
        for coding in self.codings.iter().rev() {
            match decompress(&bytes, coding, limit) {
                Ok(out) => bytes = Cow::Owned(out),
                // Common Crawl stores decoded payloads and renames the header; other archives
                // occasionally do the same without renaming it. A payload that is not
                // compressed at all is kept.
                Err(_) if !looks_compressed(&bytes, coding) => {}
                Err(e) => return Err(Skip::Undecodable(e)),
            }
        }
        Ok(bytes)
    }

    /// HTML or text by the declared media type, sniffing the bytes when it is missing or
    /// generic (`application/octet-stream`, `unknown/unknown`).
    pub fn kind(&self, payload: &[u8]) -> Result<Kind, Skip> {
        match self.media_type.as_deref() {
            Some("text/html" | "application/xhtml+xml" | "application/xml+xhtml") => Ok(Kind::Html),
            Some(
                "text/plain"
                | "text/markdown"
                | "text/x-markdown"
                | "text/x-tex"
                | "application/x-tex"
                | "application/x-latex",
            ) => Ok(Kind::Text),
            None | Some("application/octet-stream" | "unknown/unknown" | "application/unknown") => {
                sniff(payload)
            }
            Some(other) => Err(Skip::NotText(other.to_string())),
        }
    }
}

/// `text/html; charset="gbk"` → (`text/html`, `gbk`).
fn content_type(value: &str) -> (Option<String>, Option<String>) {
    let mut parts = value.split(';');
    let media = parts
        .next()
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty());
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_string())
            .filter(|c| !c.is_empty())
    });
    (media, charset)
}

/// The head (without its final blank line) and the payload.
fn split_head(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = b.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((&b[..l], &b[l + 2..])),
        (Some(c), _) => Some((&b[..c], &b[c + 4..])),
        (None, Some(l)) => Some((&b[..l], &b[l + 2..])),
        // A head with no blank line and nothing after it (a body-less response).
        (None, None) if b.ends_with(b"\r\n") || b.ends_with(b"\n") => Some((b, &[])),
        (None, None) => None,
    }
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body (RFC 9112 §7.1); `None` when the
/// bytes are not chunked. Trailers after the last chunk are dropped; a body cut off inside a
/// chunk keeps what arrived.
pub fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut chunks = 0usize;
    loop {
        let eol = b.iter().position(|&c| c == b'\n')?;
        let line = std::str::from_utf8(&b[..eol]).ok()?.trim();
        // Chunk extensions (`1a;name=value`) are ignored.
        let size_hex = line.split(';').next()?.trim();
        if size_hex.is_empty() || size_hex.len() > 15 {
            return None;
        }
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        b = &b[eol + 1..];
        if size == 0 {
            return Some(out);
        }
        chunks += 1;
        if size > b.len() {
            // Truncated capture: keep the partial chunk when an earlier one was complete.
            if chunks == 1 && b.len() < size / 2 {
                return None;
            }
            out.extend_from_slice(b);
            return Some(out);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size..];
        b = b.strip_prefix(b"\r\n").or_else(|| b.strip_prefix(b"\n"))?;
        if b.is_empty() {
            // A capture that ends without the zero chunk.
            return Some(out);
        }
    }
}

fn decompress(bytes: &[u8], coding: &Coding, limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), String> {
        let n = r
            .take(limit.saturating_add(1))
            .read_to_end(out)
            .map_err(|e| e.to_string())?;
        if n as u64 > limit {
            return Err(format!("decompresses to more than {limit} bytes"));
        }
        Ok(())
    };
    match coding {
        Coding::Gzip => read(&mut flate2::read::MultiGzDecoder::new(bytes), &mut out)
            .map_err(|e| format!("gzip: {e}"))?,
        Coding::Deflate => {
            // `deflate` means zlib-wrapped (RFC 9110 §8.4.1.2), but many servers send raw
            // deflate; try both.
            if read(&mut flate2::read::ZlibDecoder::new(bytes), &mut out).is_err() {
                out.clear();
                read(&mut flate2::read::DeflateDecoder::new(bytes), &mut out)
                    .map_err(|e| format!("deflate: {e}"))?;
            }
        }
        Coding::Brotli => read(
            &mut brotli_decompressor::Decompressor::new(bytes, 4096),
            &mut out,
        )
        .map_err(|e| format!("br: {e}"))?,
        Coding::Other(name) => return Err(format!("unsupported content coding {name:?}")),
    }
    Ok(out)
}

/// Whether a failed decompression means the bytes really were compressed (rather than
/// already decoded under a stale header): gzip and zlib have magic numbers; brotli has none,
/// so bytes that are mostly printable text are taken as decoded.
fn looks_compressed(bytes: &[u8], coding: &Coding) -> bool {
    match coding {
        Coding::Gzip => bytes.starts_with(&[0x1f, 0x8b]),
        Coding::Deflate | Coding::Brotli => sniff(bytes).is_err(),
        Coding::Other(_) => sniff(bytes).is_err(),
    }
}

/// HTML when the first tag is one that starts an HTML page, text when no byte is binary,
/// else not a document (the WHATWG MIME Sniffing Standard, §7.1, reduced to what a text
/// corpus needs).
pub fn sniff(payload: &[u8]) -> Result<Kind, Skip> {
    const HTML_TAGS: [&[u8]; 17] = [
        b"<!doctype html",
        b"<html",
        b"<head",
        b"<script",
        b"<iframe",
        b"<h1",
        b"<div",
        b"<font",
        b"<table",
        b"<a",
        b"<style",
        b"<title",
        b"<b",
        b"<body",
        b"<br",
        b"<p",
        b"<!--",
    ];
    let start = payload
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(payload)
        .trim_ascii_start();
    for tag in HTML_TAGS {
        if start.len() > tag.len()
            && start[..tag.len()].eq_ignore_ascii_case(tag)
            && (tag == b"<!--" || matches!(start[tag.len()], b' ' | b'>' | b'\t' | b'\n' | b'\r'))
        {
            return Ok(Kind::Html);
        }
    }
    let head = &payload[..payload.len().min(1445)];
    // UTF-16 byte-order marks are text, whatever follows.
    if head.starts_with(b"\xff\xfe") || head.starts_with(b"\xfe\xff") {
        return Ok(Kind::Text);
    }
    let binary = head
        .iter()
        .any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f));
    if binary {
        Err(Skip::NotText("binary".into()))
    } else {
        Ok(Kind::Text)
    }
}

/// How many bytes of an HTML page are searched for `<meta charset>` (the WHATWG prescan reads
/// 1024; pages with long `<head>` scripts put it later, so a little more is read).
const META_PRESCAN: usize = 4096;

/// Decodes a payload to text. The encoding comes from, in order: a byte-order mark; the HTTP
/// `charset`; a `<meta charset>` or `http-equiv` declaration (HTML only); UTF-8 when the bytes
/// are valid UTF-8; `chardetng` detection, hinted by the top-level domain of `url`. A declared
/// single-byte encoding loses to UTF-8 when the bytes are valid UTF-8 with non-ASCII text
/// (servers that label everything ISO-8859-1). Returns the text and the encoding used.
pub fn decode_text(
    payload: &[u8],
    declared: Option<&str>,
    kind: Kind,
    url: &str,
) -> (String, &'static Encoding) {
    let declared = Encoding::for_bom(payload)
        .map(|(e, _)| e)
        .or_else(|| declared.and_then(|l| Encoding::for_label(l.as_bytes())))
        .or_else(|| {
            (kind == Kind::Html)
                .then(|| meta_charset(payload))
                .flatten()
        })
        // A page cannot declare itself UTF-16 in ASCII; browsers read such pages as UTF-8.
        .map(|e| {
            if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
                if Encoding::for_bom(payload).is_some() {
                    e
                } else {
                    encoding_rs::UTF_8
                }
            } else {
                e
            }
        });
    let valid_utf8 = || std::str::from_utf8(payload).is_ok();
    let encoding = match declared {
        Some(e) if e.is_single_byte() && !payload.is_ascii() && valid_utf8() => encoding_rs::UTF_8,
        Some(e) => e,
        None if valid_utf8() => encoding_rs::UTF_8,
        None => {
            let mut detector = chardetng::EncodingDetector::new();
            detector.feed(payload, true);
            let tld = tld(url);
            detector.guess(tld.as_deref().map(str::as_bytes), true)
        }
    };
    let (text, used, _) = encoding.decode(payload);
    (text.into_owned(), used)
}

/// The top-level domain of a URL's host, as `chardetng` wants it: lowercase ASCII letters
/// only (`jp`, `cn`); it panics on anything else, so nothing else is passed.
fn tld(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let host = rest.split(['/', '?', '#', ':']).next()?;
    let last = host.rsplit('.').next()?;
    (!last.is_empty() && last.len() < host.len() && last.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| last.to_ascii_lowercase())
}

/// The encoding named by the first `<meta charset=…>` or `<meta http-equiv="Content-Type"
/// content="…; charset=…">` in the first [`META_PRESCAN`] bytes.
pub fn meta_charset(payload: &[u8]) -> Option<&'static Encoding> {
    let head = &payload[..payload.len().min(META_PRESCAN)];
    let mut at = 0;
    while let Some(p) = find_ci(&head[at..], b"<meta") {
        let start = at + p + 5;
        let end = head[start..]
            .iter()
            .position(|&b| b == b'>')
            .map_or(head.len(), |e| start + e);
        let tag = &head[start..end];
        if let Some(c) = find_ci(tag, b"charset") {
            let rest = tag[c + 7..].trim_ascii_start();
            if let Some(rest) = rest.strip_prefix(b"=") {
                let rest = rest.trim_ascii_start();
                let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
                let rest = rest.strip_prefix(b"'").unwrap_or(rest);
                let label_end = rest
                    .iter()
                    .position(|&b| matches!(b, b'"' | b'\'' | b';' | b' ' | b'/' | b'>'))
                    .unwrap_or(rest.len());
                if let Some(e) = Encoding::for_label(&rest[..label_end]) {
                    return Some(e);
                }
            }
        }
        at = end;
    }
    None
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_content_types() {
        let r = Response::parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/HTML; Charset=\"GBK\"\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\nbody",
        )
        .unwrap();
        assert_eq!(r.status, Some(200));
        assert_eq!(r.media_type.as_deref(), Some("text/html"));
        assert_eq!(r.charset.as_deref(), Some("GBK"));
        assert!(r.chunked);
        assert_eq!(r.codings, vec![Coding::Gzip]);
        assert_eq!(r.body, b"body");
        // A body-less head (a revisit's payload, a 304).
        let r = Response::parse(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (Some(304), 0));
        assert_eq!(r.status_ok(), Err(Skip::Status(304)));
        assert!(Response::parse(b"HTTP/1.1 200 OK\r\nContent-Type: text/html").is_none());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"5\r\nHello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n").as_deref(),
            Some(&b"Hello, world"[..])
        );
        // Not chunked at all (an archive that removed the framing but kept the header).
        assert_eq!(dechunk(b"<html>hi</html>"), None);
        // A capture cut off after the first chunk.
        assert_eq!(dechunk(b"3\r\nabc\r\n").as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x"), Ok(Kind::Html));
        assert_eq!(sniff(b"<p>x</p>"), Ok(Kind::Html));
        assert_eq!(sniff(b"x = 1, y = 2"), Ok(Kind::Text));
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0"),
            Err(Skip::NotText("binary".into()))
        );
    }

    #[test]
    fn charsets_in_browser_order() {
        let gbk = encoding_rs::GBK.encode("数学").0.into_owned();
        let html = [b"<meta charset=\"gbk\"><p>".as_slice(), &gbk].concat();
        assert_eq!(
            decode_text(&html, None, Kind::Html, "").0,
            "<meta charset=\"gbk\"><p>数学"
        );
        // The HTTP header wins over the meta tag.
        let latin = [b"<meta charset=utf-8>".as_slice(), b"caf\xe9"].concat();
        let (t, e) = decode_text(&latin, Some("iso-8859-1"), Kind::Html, "");
        assert_eq!(
            (t.as_str(), e.name()),
            ("<meta charset=utf-8>café", "windows-1252")
        );
        // A byte-order mark wins over everything.
        let bom = [b"\xef\xbb\xbf".as_slice(), "é".as_bytes()].concat();
        assert_eq!(decode_text(&bom, Some("gbk"), Kind::Text, "").0, "é");
        // Valid UTF-8 under a stale single-byte label is UTF-8.
        assert_eq!(
            decode_text("é".as_bytes(), Some("latin1"), Kind::Text, "").0,
            "é"
        );
        assert_eq!(
            meta_charset(
                b"<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=Shift_JIS\">"
            )
            .map(|e| e.name()),
            Some("Shift_JIS")
        );
        assert_eq!(tld("http://www.example.co.jp/a").as_deref(), Some("jp"));
        assert_eq!(tld("HTTP://WWW.EXAMPLE.CN/").as_deref(), Some("cn"));
        assert_eq!(tld("http://localhost/"), None);
        assert_eq!(tld("http://b\u{fc}cher.d\u{e9}/"), None);
        // An upper-case host reaches the detector lowercased (it asserts on anything else).
        let sjis = encoding_rs::SHIFT_JIS
            .encode("素数とは、1とその数自身以外に正の約数を持たない自然数")
            .0;
        assert_eq!(
            decode_text(&sjis, None, Kind::Text, "http://X.JP/")
                .1
                .name(),
            "Shift_JIS"
        );
    }
}
