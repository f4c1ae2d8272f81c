//! Document readers: WARC (HTML and text responses in any character encoding, converted to
//! text that keeps math), WET (text conversions) and JSONL (`.gz` / `.zst`). Bad input —
//! truncated gzip, invalid UTF-8, empty documents, giant lines or records, malformed WARC
//! records — and responses that are not documents (scripts, images, redirects, revisits) are
//! counted in [`ReadStats`] by reason, a few examples are kept, and reading goes on: one bad
//! record never aborts a shard.

pub mod html;
pub mod http;
pub mod jsonl;
pub mod warc;

use std::io::BufRead;
use std::path::Path;

pub use html::html_to_text;

/// One document from any reader.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Document {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub text: String,
}

/// Limits that keep one giant input from exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadLimits {
    /// Longest JSONL line or WARC header line kept, in bytes.
    pub max_line_bytes: usize,
    /// Largest WARC record body kept, in bytes.
    pub max_record_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 16 << 20,
            max_record_bytes: 64 << 20,
        }
    }
}

/// What was read and what was skipped, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    pub records: u64,
    pub documents: u64,
    pub empty: u64,
    pub invalid_utf8: u64,
    pub too_long: u64,
    pub malformed: u64,
    /// Decompression failed (e.g. truncated gzip); the rest of that file is lost.
    pub truncated: u64,
    /// HTTP responses that are not HTML or text (scripts, styles, JSON, images, binaries).
    pub not_text: u64,
    /// HTTP responses with a status outside 2xx (redirects, errors, not-modified).
    pub http_status: u64,
    /// HTTP payloads whose content coding (gzip, deflate, br) could not be undone.
    pub undecodable: u64,
    /// WARC `revisit` records: a payload already archived, stored as headers only.
    pub revisits: u64,
    /// Documents decoded from a character encoding other than UTF-8, by encoding name.
    pub charsets: std::collections::BTreeMap<String, u64>,
    /// Up to [`ReadStats::MAX_EXAMPLES`] messages naming the file and place.
    pub examples: Vec<String>,
}

impl ReadStats {
    pub const MAX_EXAMPLES: usize = 20;

    pub(crate) fn note(&mut self, msg: String) {
        if self.examples.len() < Self::MAX_EXAMPLES {
            self.examples.push(msg);
        }
    }

    pub fn skipped(&self) -> u64 {
        self.empty
            + self.invalid_utf8
            + self.too_long
            + self.malformed
            + self.truncated
            + self.not_text
            + self.http_status
            + self.undecodable
            + self.revisits
    }

    pub fn merge(&mut self, o: &ReadStats) {
        self.records += o.records;
        self.documents += o.documents;
        self.empty += o.empty;
        self.invalid_utf8 += o.invalid_utf8;
        self.too_long += o.too_long;
        self.malformed += o.malformed;
        self.truncated += o.truncated;
        self.not_text += o.not_text;
        self.http_status += o.http_status;
        self.undecodable += o.undecodable;
        self.revisits += o.revisits;
        for (name, n) in &o.charsets {
            *self.charsets.entry(name.clone()).or_default() += n;
        }
        for e in &o.examples {
            self.note(e.clone());
        }
    }
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Warc,
    Wet,
    Jsonl,
}

impl Format {
    /// Guess from the file name: `*.warc[.gz]`, `*.wet[.gz]`, else JSONL (Parquet files read as
    /// JSONL through `reasonlab_core::jsonl::open`).
    pub fn from_path(path: &Path) -> Self {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let name = name.trim_end_matches(".gz").trim_end_matches(".zst");
        if name.ends_with(".wet") {
            Format::Wet
        } else if name.ends_with(".warc") {
            Format::Warc
        } else {
            Format::Jsonl
        }
    }
}

/// Outcome of reading one line with a cap.
pub(crate) enum Line {
    Eof,
    Ok,
    TooLong,
}

/// Read up to and including `\n` into `buf`, keeping at most `max` bytes; a longer line is
/// consumed to its end and reported as [`Line::TooLong`].
pub(crate) fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..=i], true),
            None => (avail, false),
        };
        let n = chunk.len();
        if !too_long {
            if buf.len() + n > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        r.consume(n);
        if done {
            break;
        }
    }
    Ok(if !any {
        Line::Eof
    } else if too_long {
        Line::TooLong
    } else {
        Line::Ok
    })
}

/// Open a file, gunzipping `.gz` (all members) and `.zst`.
pub(crate) fn open(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    reasonlab_core::jsonl::open(path).map_err(|e| match e {
        reasonlab_core::jsonl::JsonlError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

/// Read every document of a file of any [`Format`], calling `f` for each. Errors opening the
/// file are returned; everything else is counted in the returned stats.
pub fn read_file(
    path: &Path,
    format: Format,
    limits: ReadLimits,
    f: &mut dyn FnMut(Document),
) -> std::io::Result<ReadStats> {
    let r = open(path)?;
    let name = path.display().to_string();
    Ok(match format {
        Format::Warc | Format::Wet => warc::read(r, &name, limits, f),
        Format::Jsonl => jsonl::read(r, &name, &jsonl::Fields::default(), limits, f),
    })
}
