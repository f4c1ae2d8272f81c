//! The `reasonlab curate` stages on files: read archives into documents, drop duplicates, drop
//! benchmark contamination. Each reads and writes JSONL documents ([`Document`]) and says what
//! it did; outputs may name folders that do not exist yet.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decontam::{DecontamError, DecontamReport, Decontaminator};
use crate::dedup::{DedupConfig, dedup};
use crate::reader::{self, Document, Format, ReadLimits, ReadStats};

/// A stage that could not finish, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Decontam(#[from] DecontamError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A JSONL writer for `path`, its folder created if needed.
fn create(path: &Path) -> Result<BufWriter<File>, StageError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    Ok(BufWriter::new(File::create(path).map_err(io(path))?))
}

fn write_line<T: Serialize>(w: &mut BufWriter<File>, value: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, value)?;
    w.write_all(b"\n")
}

/// Read every input (its format from `format`, else from its name) into `output`. An input
/// that cannot be opened is passed to `on_skip` and the others go on.
pub fn read_to_jsonl(
    inputs: &[PathBuf],
    format: Option<Format>,
    output: &Path,
    on_skip: &mut dyn FnMut(&Path, &std::io::Error),
) -> Result<ReadStats, StageError> {
    let mut w = create(output)?;
    let mut total = ReadStats::default();
    let mut err = None;
    for p in inputs {
        let f = format.unwrap_or_else(|| Format::from_path(p));
        let s = reader::read_file(p, f, ReadLimits::default(), &mut |d| {
            if err.is_none()
                && let Err(e) = write_line(&mut w, &d)
            {
                err = Some(e);
            }
        });
        match s {
            Ok(s) => total.merge(&s),
            Err(e) => on_skip(p, &e),
        }
    }
    if let Some(e) = err {
        return Err(io(output)(e));
    }
    w.flush().map_err(io(output))?;
    Ok(total)
}

/// Every document of a JSONL file, with what reading it found.
pub fn read_jsonl(path: &Path) -> Result<(Vec<Document>, ReadStats), StageError> {
    let mut docs = Vec::new();
    let stats = reader::read_file(path, Format::Jsonl, ReadLimits::default(), &mut |d| {
        docs.push(d)
    })
    .map_err(io(path))?;
    Ok((docs, stats))
}

fn write_docs<'a>(
    path: &Path,
    docs: impl Iterator<Item = &'a Document>,
) -> Result<usize, StageError> {
    let mut w = create(path)?;
    let mut n = 0;
    for d in docs {
        write_line(&mut w, d).map_err(io(path))?;
        n += 1;
    }
    w.flush().map_err(io(path))?;
    Ok(n)
}

/// What [`dedup_jsonl`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DedupOutcome {
    pub read: ReadStats,
    pub documents: usize,
    pub kept: usize,
    pub url_dups: usize,
    pub text_dups: usize,
    pub near_dups: usize,
    pub clusters: usize,
}

/// URL, exact-text and MinHash near-duplicate removal from `input` into `output`; with
/// `clusters`, one `{"kept", "dropped": [...]}` line per cluster of duplicates.
pub fn dedup_jsonl(
    input: &Path,
    output: &Path,
    clusters: Option<&Path>,
    cfg: &DedupConfig,
) -> Result<DedupOutcome, StageError> {
    let (docs, read) = read_jsonl(input)?;
    let r = dedup(&docs, cfg);
    let kept = write_docs(output, r.kept().map(|i| &docs[i]))?;
    if let Some(c) = clusters {
        let mut w = create(c)?;
        for cl in &r.clusters {
            let ids: Vec<&str> = cl.iter().map(|&i| docs[i].id.as_str()).collect();
            write_line(
                &mut w,
                &serde_json::json!({"kept": ids[0], "dropped": &ids[1..]}),
            )
            .map_err(io(c))?;
        }
        w.flush().map_err(io(c))?;
    }
    Ok(DedupOutcome {
        read,
        documents: docs.len(),
        kept,
        url_dups: r.url_dups,
        text_dups: r.text_dups,
        near_dups: r.near_dups,
        clusters: r.clusters.len(),
    })
}

/// Index benchmark JSONL files, or every `.jsonl` file of a folder, into `d`.
pub fn add_benchmark_path(d: &mut Decontaminator, path: &Path) -> Result<usize, StageError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains(".jsonl"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut n = 0;
    for f in files {
        n += d.add_jsonl(&f)?;
    }
    Ok(n)
}

/// What [`decontam_jsonl`] did.
#[derive(Debug, Clone, Serialize)]
pub struct DecontamOutcome {
    pub read: ReadStats,
    pub report: DecontamReport,
    /// Benchmark texts indexed.
    pub indexed: usize,
}

/// Clean every document of `input` against the benchmarks in `d` into `output`.
pub fn decontam_jsonl(
    input: &Path,
    output: &Path,
    d: &Decontaminator,
) -> Result<DecontamOutcome, StageError> {
    let (docs, read) = read_jsonl(input)?;
    let mut report = DecontamReport::default();
    let mut kept = Vec::new();
    for doc in &docs {
        let (text, hits) = d.clean(&doc.text);
        report.log(d, &hits, text.is_none());
        if let Some(t) = text {
            kept.push(Document {
                text: t,
                ..doc.clone()
            });
        }
    }
    write_docs(output, kept.iter())?;
    Ok(DecontamOutcome {
        read,
        report,
        indexed: d.items().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_write_into_new_folders_and_count_what_they_did() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let text =
            "The quadratic formula gives the roots of a x squared plus b x plus c equal zero";
        let lines = [
            serde_json::json!({"id": "a", "url": "http://x/1", "text": text}),
            serde_json::json!({"id": "b", "url": "http://x/1", "text": text}),
            serde_json::json!({"id": "c", "url": "http://x/2", "text": "Completely different words about cooking pasta tonight with friends"}),
        ];
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&input, body).unwrap();
        let out = dir.path().join("new/folder/dedup.jsonl");
        let clusters = dir.path().join("other/clusters.jsonl");
        let r = dedup_jsonl(&input, &out, Some(&clusters), &DedupConfig::default()).unwrap();
        // A URL duplicate is dropped before the near-duplicate clustering.
        assert_eq!((r.documents, r.kept, r.url_dups, r.clusters), (3, 2, 1, 0));
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);
        assert!(clusters.exists());
        let mut d = Decontaminator::new(Default::default());
        let bench = serde_json::json!({"id": "q1", "problem": text, "answer": "x"});
        d.add_rows("bench.jsonl", &[bench]);
        let clean = dir.path().join("deep/clean.jsonl");
        let r = decontam_jsonl(&out, &clean, &d).unwrap();
        assert_eq!((r.report.documents, r.report.dropped), (2, 1));
        assert_eq!(std::fs::read_to_string(&clean).unwrap().lines().count(), 1);
    }
}
