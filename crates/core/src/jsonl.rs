//! JSON Lines in and out, plain or compressed (`.gz`, `.zst`, chosen by extension), and Parquet
//! files read as JSON lines (one object per row, through the parquet crate's record API), so
//! every reader of records takes `.parquet` too.
//!
//! Reading yields one item per non-blank line; a malformed line becomes an error that names the
//! file and the 1-based line number, and the caller decides to skip it or stop
//! ([`BadLines`]). Nothing is lost silently.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What to do with a line that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadLines {
    /// Stop at the first bad line with its error (default).
    #[default]
    Reject,
    /// Report the line on stderr through `tracing::warn` and go on.
    Skip,
}

/// An error reading JSONL, with its place.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Open a file for reading, decompressing `.gz` / `.zst` transparently; a `.parquet` file reads
/// as one JSON object per row (row `i` is line `i`, so errors name the row).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, JsonlError> {
    let io = |source| JsonlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    if path.extension().and_then(|e| e.to_str()) == Some("parquet") {
        let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|e| {
            JsonlError::Parse {
                path: path.to_path_buf(),
                line: 0,
                message: format!("not a readable Parquet file: {e}"),
            }
        })?;
        return Ok(Box::new(BufReader::new(ParquetLines {
            rows: reader.into_iter(),
            buf: Vec::new(),
            pos: 0,
        })));
    }
    let reader: Box<dyn Read + Send> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some("zst") => Box::new(zstd::stream::read::Decoder::new(file).map_err(io)?),
        _ => Box::new(file),
    };
    Ok(Box::new(BufReader::new(reader)))
}

/// Parquet rows as a byte stream of JSON lines (streamed row by row).
struct ParquetLines {
    rows: parquet::record::reader::RowIter<'static>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ParquetLines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rows.next() {
                None => return Ok(0),
                Some(Ok(row)) => {
                    self.buf = row.to_json_value().to_string().into_bytes();
                    self.buf.push(b'\n');
                    self.pos = 0;
                }
                // A row that cannot be decoded becomes a line that is not JSON, so the reader
                // reports it with its row number like any malformed line.
                Some(Err(e)) => {
                    self.buf = format!("<parquet row error: {e}>\n").into_bytes();
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read every record of a JSONL (or Parquet) file. Blank lines are ignored.
pub fn read<T: DeserializeOwned>(path: &Path, bad: BadLines) -> Result<Vec<T>, JsonlError> {
    let mut out = Vec::new();
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|source| JsonlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(&line) {
            Ok(v) => out.push(v),
            Err(e) => {
                let err = JsonlError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                };
                match bad {
                    BadLines::Reject => return Err(err),
                    BadLines::Skip => eprintln!("warning: skipping {err}"),
                }
            }
        }
    }
    Ok(out)
}

/// Append-friendly writer: one compact JSON object per line, flushed per record so a crash
/// loses at most the line being written.
pub struct JsonlWriter<W: Write> {
    inner: W,
}

impl JsonlWriter<File> {
    /// Create or append to `path`.
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { inner: file })
    }
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.inner, record)?;
        self.inner.write_all(b"\n")?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_line_is_reported_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"a\":1}\n\n{oops\n{\"a\":2}\n").unwrap();
        let err = read::<serde_json::Value>(&p, BadLines::Reject).unwrap_err();
        assert!(err.to_string().contains("x.jsonl:3:"), "{err}");
        let ok = read::<serde_json::Value>(&p, BadLines::Skip).unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn reads_gzip_and_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"{\"a\":1}\n{\"a\":2}\n";
        let gz = dir.path().join("x.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        enc.write_all(text).unwrap();
        enc.finish().unwrap();
        let zst = dir.path().join("x.jsonl.zst");
        std::fs::write(&zst, zstd::encode_all(&text[..], 3).unwrap()).unwrap();
        for p in [gz, zst] {
            assert_eq!(
                read::<serde_json::Value>(&p, BadLines::Reject)
                    .unwrap()
                    .len(),
                2
            );
        }
    }

    #[test]
    fn parquet_rows_read_as_json_records() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let probs: Vec<serde_json::Value> = read(
            &root.join("fixtures/data/problems.parquet"),
            BadLines::Reject,
        )
        .unwrap();
        let jsonl: Vec<serde_json::Value> = read(
            &root.join("examples/data/gsm8k_short_32.jsonl"),
            BadLines::Reject,
        )
        .unwrap();
        assert_eq!(probs, jsonl);
        // Nested lists of structs (chat messages) come back as JSON arrays of objects.
        let chat: Vec<serde_json::Value> = read(
            &root.join("fixtures/data/sft_chat.parquet"),
            BadLines::Reject,
        )
        .unwrap();
        assert_eq!(chat.len(), 8);
        assert_eq!(chat[0]["messages"][2]["role"], "assistant");
    }

    #[test]
    fn a_file_that_is_not_parquet_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        std::fs::write(&p, b"{\"a\": 1}\n").unwrap();
        let err = read::<serde_json::Value>(&p, BadLines::Reject).unwrap_err();
        assert!(err.to_string().contains("Parquet"), "{err}");
    }
}
