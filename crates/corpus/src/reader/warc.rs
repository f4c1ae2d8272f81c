//! WARC / WET records (ISO 28500; Common Crawl's `.warc.gz` holds one gzip member per record,
//! which [`flate2::read::MultiGzDecoder`] reads through). `response` records carry an HTTP
//! response (see [`super::http`]: framing, content coding, media type and character encoding
//! are undone there) whose HTML becomes text by [`super::html_to_text`]; `conversion` records
//! (WET) carry text already. `revisit` records (a payload seen before: HTTP headers only) are
//! counted as such; `request`, `metadata`, `warcinfo` and other types are skipped without being
//! counted as bad.

use std::io::{BufRead, Read};

use super::http::{self, Kind, Response, Skip};
use super::{Document, Line, ReadLimits, ReadStats, html_to_text, read_line_capped};

/// Read all records, resynchronising on the next `WARC/` line after a malformed one.
pub fn read(
    mut r: impl BufRead,
    name: &str,
    limits: ReadLimits,
    f: &mut dyn FnMut(Document),
) -> ReadStats {
    let mut stats = ReadStats::default();
    let mut line = Vec::new();
    let mut pending_version = false;
    let mut recno = 0u64;
    'records: loop {
        // Find the version line.
        if !pending_version {
            loop {
                match read_line_capped(&mut r, &mut line, 4096) {
                    Err(e) => {
                        stats.truncated += 1;
                        stats.note(format!(
                            "{name}: record {recno}: read error, rest of file skipped: {e}"
                        ));
                        break 'records;
                    }
                    Ok(Line::Eof) => break 'records,
                    Ok(Line::TooLong) => continue,
                    Ok(Line::Ok) => {}
                }
                if line.starts_with(b"WARC/") {
                    break;
                }
                if !line.iter().all(|b| b.is_ascii_whitespace()) {
                    stats.malformed += 1;
                    stats.note(format!("{name}: record {recno}: junk between records"));
                    // Skip to the next version line, counting this stretch once.
                    loop {
                        match read_line_capped(&mut r, &mut line, 4096) {
                            Ok(Line::Ok) if line.starts_with(b"WARC/") => break,
                            Ok(Line::Eof) => break 'records,
                            Err(e) => {
                                stats.truncated += 1;
                                stats.note(format!("{name}: read error: {e}"));
                                break 'records;
                            }
                            _ => {}
                        }
                    }
                    break;
                }
            }
        }
        pending_version = false;
        recno += 1;
        stats.records += 1;
        // Headers.
        let (mut rtype, mut url, mut id, mut length) =
            (String::new(), String::new(), String::new(), None::<u64>);
        loop {
            match read_line_capped(&mut r, &mut line, limits.max_line_bytes.min(1 << 20)) {
                Err(e) => {
                    stats.truncated += 1;
                    stats.note(format!(
                        "{name}: record {recno}: read error in headers: {e}"
                    ));
                    break 'records;
                }
                Ok(Line::Eof) => {
                    stats.malformed += 1;
                    stats.note(format!("{name}: record {recno}: file ends inside headers"));
                    break 'records;
                }
                Ok(Line::TooLong) => continue,
                Ok(Line::Ok) => {}
            }
            let l = String::from_utf8_lossy(&line);
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if l.starts_with("WARC/") {
                stats.malformed += 1;
                stats.note(format!(
                    "{name}: record {recno}: headers without a blank line"
                ));
                pending_version = true;
                continue 'records;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "warc-type" => rtype = v.to_string(),
                    "warc-target-uri" => url = v.to_string(),
                    "warc-record-id" => id = v.trim_matches(|c| c == '<' || c == '>').to_string(),
                    "content-length" => length = v.parse().ok(),
                    _ => {}
                }
            }
        }
        let Some(length) = length else {
            stats.malformed += 1;
            stats.note(format!("{name}: record {recno}: no valid Content-Length"));
            continue;
        };
        if length > limits.max_record_bytes {
            stats.too_long += 1;
            stats.note(format!(
                "{name}: record {recno}: {length} bytes exceeds {}",
                limits.max_record_bytes
            ));
            match std::io::copy(&mut (&mut r).take(length), &mut std::io::sink()) {
                Ok(n) if n == length => continue,
                Ok(_) => {
                    stats.truncated += 1;
                    break;
                }
                Err(e) => {
                    stats.truncated += 1;
                    stats.note(format!("{name}: record {recno}: read error: {e}"));
                    break;
                }
            }
        }
        let mut body = Vec::with_capacity(length as usize);
        match (&mut r).take(length).read_to_end(&mut body) {
            Ok(n) if n as u64 == length => {}
            Ok(_) => {
                stats.truncated += 1;
                stats.note(format!("{name}: record {recno}: body cut short"));
                break;
            }
            Err(e) => {
                stats.truncated += 1;
                stats.note(format!("{name}: record {recno}: read error in body: {e}"));
                break;
            }
        }
        let text = match rtype.as_str() {
            "conversion" => {
                // WET files are UTF-8; other converters' output is decoded like a text page.
                match String::from_utf8(body) {
                    Ok(t) => t,
                    Err(e) => {
                        let bytes = e.into_bytes();
                        let (t, enc) = http::decode_text(&bytes, None, Kind::Text, &url);
                        *stats.charsets.entry(enc.name().to_string()).or_default() += 1;
                        t
                    }
                }
            }
            "response" => match response_text(&body, &url, limits) {
                Ok((t, enc)) => {
                    if enc != encoding_rs::UTF_8 {
                        *stats.charsets.entry(enc.name().to_string()).or_default() += 1;
                    }
                    t
                }
                Err(why) => {
                    let what = match why {
                        ResponseSkip::NoHead => {
                            stats.malformed += 1;
                            "no HTTP header end".to_string()
                        }
                        ResponseSkip::Skip(Skip::NotText(media)) => {
                            stats.not_text += 1;
                            format!("not a text document ({media})")
                        }
                        ResponseSkip::Skip(Skip::Status(code)) => {
                            stats.http_status += 1;
                            format!("HTTP status {code}")
                        }
                        ResponseSkip::Skip(Skip::Undecodable(e)) => {
                            stats.undecodable += 1;
                            format!("content coding: {e}")
                        }
                    };
                    stats.note(format!("{name}: record {recno}: {what}"));
                    continue;
                }
            },
            "revisit" => {
                stats.revisits += 1;
                continue;
            }
            _ => continue,
        };
        if text.trim().is_empty() {
            stats.empty += 1;
            continue;
        }
        if id.is_empty() {
            id = format!("{name}#{recno}");
        }
        stats.documents += 1;
        f(Document { id, url, text });
    }
    stats
}

/// Why a `response` record gave no text.
enum ResponseSkip {
    NoHead,
    Skip(Skip),
}

/// The text of a stored HTTP response and the character encoding it was decoded from.
fn response_text(
    record: &[u8],
    url: &str,
    limits: ReadLimits,
) -> Result<(String, &'static encoding_rs::Encoding), ResponseSkip> {
    let response = Response::parse(record).ok_or(ResponseSkip::NoHead)?;
    response.status_ok().map_err(ResponseSkip::Skip)?;
    let payload = response
        .payload(limits.max_record_bytes)
        .map_err(ResponseSkip::Skip)?;
    let kind = response.kind(&payload).map_err(ResponseSkip::Skip)?;
    let (text, encoding) = http::decode_text(&payload, response.charset.as_deref(), kind, url);
    Ok(match kind {
        Kind::Html => (html_to_text(&text), encoding),
        Kind::Text => (text, encoding),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rtype: &str, url: &str, body: &str) -> String {
        format!(
            "WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Target-URI: {url}\r\nWARC-Record-ID: <urn:uuid:{url}>\r\nContent-Length: {}\r\n\r\n{body}\r\n\r\n",
            body.len()
        )
    }

    #[test]
    fn reads_wet_and_warc_and_survives_bad_records() {
        let mut s = String::new();
        s += &record("warcinfo", "x", "software: test");
        s += &record("conversion", "http://a.org/1", "Let $x^2 = 4$. Then x = 2.");
        s += "WARC/1.0\r\nWARC-Type: conversion\r\nContent-Length: banana\r\n\r\nlost\r\n\r\n";
        s += &record(
            "response",
            "http://b.org/2",
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>Solve <script type=\"math/tex\">a+b</script> now</p>",
        );
        s += &record("conversion", "http://c.org/3", "   ");
        s += &record("conversion", "http://d.org/4", "fine text");
        let mut docs = Vec::new();
        let stats = read(s.as_bytes(), "t.warc", ReadLimits::default(), &mut |d| {
            docs.push(d)
        });
        assert_eq!(docs.len(), 3, "{stats:?}");
        assert_eq!(docs[0].url, "http://a.org/1");
        assert!(docs[1].text.contains("$a+b$"), "{}", docs[1].text);
        assert_eq!(stats.malformed, 2, "{stats:?}"); // bad length, then its body as junk
        assert_eq!(stats.empty, 1);
        assert_eq!(docs[2].text, "fine text");
    }

    #[test]
    fn oversized_and_truncated_records_are_counted() {
        let mut s = record("conversion", "http://a.org/big", &"x".repeat(5000));
        s += &record("conversion", "http://a.org/ok", "ok text");
        let limits = ReadLimits {
            max_line_bytes: 1024,
            max_record_bytes: 1000,
        };
        let mut docs = Vec::new();
        let stats = read(s.as_bytes(), "t", limits, &mut |d| docs.push(d));
        assert_eq!((docs.len(), stats.too_long), (1, 1), "{stats:?}");
        let cut = &s.as_bytes()[..s.len() - 6];
        let mut docs = Vec::new();
        let stats = read(cut, "t", ReadLimits::default(), &mut |d| docs.push(d));
        assert_eq!((docs.len(), stats.truncated), (1, 1), "{stats:?}");
    }
}
