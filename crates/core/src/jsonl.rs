//! JSON Lines in and out, plain or compressed (`.gz`, `.zst`, chosen by extension).
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

/// Open a file for reading, decompressing `.gz` / `.zst` transparently.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, JsonlError> {
    let io = |source| JsonlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let reader: Box<dyn Read + Send> = match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some("zst") => Box::new(zstd::stream::read::Decoder::new(file).map_err(io)?),
        _ => Box::new(file),
    };
    Ok(Box::new(BufReader::new(reader)))
}

/// Read every record of a JSONL file. Blank lines are ignored.
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
}
