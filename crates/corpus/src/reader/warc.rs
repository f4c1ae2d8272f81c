//! WARC / WET records (ISO 28500; Common Crawl's `.warc.gz` holds one gzip member per record,
//! which [`flate2::read::MultiGzDecoder`] reads through). `response` records carry an HTTP
//! response whose HTML body becomes text by [`super::html_to_text`]; `conversion` records
//! (WET) carry text already. Other record types are skipped without being counted as bad.

use std::io::{BufRead, Read};

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
            "conversion" => match String::from_utf8(body) {
                Ok(t) => t,
                Err(_) => {
                    stats.invalid_utf8 += 1;
                    stats.note(format!("{name}: record {recno}: invalid UTF-8"));
                    continue;
                }
            },
            "response" => {
                let Some(html) = http_body(&body) else {
                    stats.malformed += 1;
                    stats.note(format!("{name}: record {recno}: no HTTP header end"));
                    continue;
                };
                match std::str::from_utf8(html) {
                    Ok(h) => html_to_text(h),
                    Err(_) => {
                        stats.invalid_utf8 += 1;
                        stats.note(format!("{name}: record {recno}: invalid UTF-8"));
                        continue;
                    }
                }
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

/// The body of an HTTP response (after the first blank line).
fn http_body(b: &[u8]) -> Option<&[u8]> {
    if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(&b[i + 4..]);
    }
    b.windows(2).position(|w| w == b"\n\n").map(|i| &b[i + 2..])
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
