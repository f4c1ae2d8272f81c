//! Benchmark decontamination (DeepSeekMath §2.1): a text segment that contains a 10-gram
//! appearing in a benchmark problem or answer is contaminated; benchmark texts shorter than
//! 10 words but with at least 3 are matched whole. Words are [`reasonlab_text::ngram::words`]
//! (case and punctuation ignored, CJK per character).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use reasonlab_text::ngram::{Word, ngram_hashes, words};

/// Settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecontamConfig {
    pub n: usize,
    /// Benchmark texts with fewer than `n` words but at least this many are matched whole.
    pub min_short: usize,
    pub action: Action,
}

impl Default for DecontamConfig {
    fn default() -> Self {
        Self {
            n: 10,
            min_short: 3,
            action: Action::DropDocument,
        }
    }
}

/// What to do with a contaminated document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    DropDocument,
    /// Remove only the lines that contain a match.
    DropSegment,
}

/// One benchmark text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    pub file: String,
    pub id: String,
    pub field: String,
}

/// Errors loading benchmarks.
#[derive(Debug, thiserror::Error)]
pub enum DecontamError {
    #[error(transparent)]
    Jsonl(#[from] reasonlab_core::jsonl::JsonlError),
}

/// The n-gram index of benchmark texts.
#[derive(Debug, Clone, Default)]
pub struct Decontaminator {
    config: DecontamConfig,
    items: Vec<Item>,
    /// n-gram hash, or whole-text hash of a short text (keyed by its length), → items.
    grams: HashMap<(usize, u64), Vec<u32>>,
    short_lens: Vec<usize>,
}

/// Matches in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub item: u32,
    /// Byte span of the matching words.
    pub start: usize,
    pub end: usize,
}

impl Decontaminator {
    pub fn new(config: DecontamConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Index one benchmark text.
    pub fn add(&mut self, item: Item, text: &str) {
        let w = words(text);
        let n = self.config.n;
        let idx = self.items.len() as u32;
        if w.len() >= n {
            for h in ngram_hashes(&w, n) {
                let v = self.grams.entry((n, h)).or_default();
                if v.last() != Some(&idx) {
                    v.push(idx);
                }
            }
        } else if w.len() >= self.config.min_short {
            let h = ngram_hashes(&w, w.len())[0];
            self.grams.entry((w.len(), h)).or_default().push(idx);
            if !self.short_lens.contains(&w.len()) {
                self.short_lens.push(w.len());
            }
        } else {
            return;
        }
        self.items.push(item);
    }

    /// Index the `problem` and `answer` of every record of benchmark JSONL files.
    pub fn add_jsonl(&mut self, path: &Path) -> Result<usize, DecontamError> {
        let rows: Vec<serde_json::Value> =
            reasonlab_core::jsonl::read(path, reasonlab_core::jsonl::BadLines::Skip)?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(self.add_rows(&file, &rows))
    }

    /// Index the `problem` and `answer` of benchmark records; `file` names them in reports.
    /// Returns how many texts were indexed.
    pub fn add_rows(&mut self, file: &str, rows: &[serde_json::Value]) -> usize {
        let before = self.items.len();
        for (i, r) in rows.iter().enumerate() {
            let id = r
                .get("id")
                .and_then(|v| v.as_str().map(String::from).or_else(|| Some(v.to_string())))
                .unwrap_or_else(|| i.to_string());
            for field in ["problem", "answer"] {
                if let Some(t) = r.get(field).and_then(|v| v.as_str()) {
                    self.add(
                        Item {
                            file: file.to_string(),
                            id: id.clone(),
                            field: field.into(),
                        },
                        t,
                    );
                }
            }
        }
        self.items.len() - before
    }

    /// All matches in `text`.
    pub fn hits(&self, text: &str) -> Vec<Hit> {
        let w = words(text);
        let mut out = Vec::new();
        let mut scan = |len: usize, w: &[Word]| {
            for (i, h) in ngram_hashes(w, len).into_iter().enumerate() {
                if let Some(items) = self.grams.get(&(len, h)) {
                    for &item in items {
                        out.push(Hit {
                            item,
                            start: w[i].start,
                            end: w[i + len - 1].end,
                        });
                    }
                }
            }
        };
        scan(self.config.n, &w);
        for &l in &self.short_lens {
            scan(l, &w);
        }
        out
    }

    /// Apply the configured action: `None` to drop the document, else the (possibly shortened)
    /// text, with the hits found.
    pub fn clean(&self, text: &str) -> (Option<String>, Vec<Hit>) {
        let hits = self.hits(text);
        if hits.is_empty() {
            return (Some(text.to_string()), hits);
        }
        match self.config.action {
            Action::DropDocument => (None, hits),
            Action::DropSegment => {
                let mut kept = String::new();
                let mut at = 0;
                for line in text.split_inclusive('\n') {
                    let (s, e) = (at, at + line.len());
                    at = e;
                    if !hits.iter().any(|h| h.start < e && h.end > s) {
                        kept.push_str(line);
                    }
                }
                let kept = if kept.trim().is_empty() {
                    None
                } else {
                    Some(kept)
                };
                (kept, hits)
            }
        }
    }
}

/// Totals over a run, with which benchmark items were hit and how often.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DecontamReport {
    pub documents: u64,
    pub contaminated: u64,
    pub dropped: u64,
    pub items_hit: BTreeMap<String, u64>,
}

impl DecontamReport {
    pub fn log(&mut self, d: &Decontaminator, hits: &[Hit], dropped: bool) {
        self.documents += 1;
        if hits.is_empty() {
            return;
        }
        self.contaminated += 1;
        self.dropped += u64::from(dropped);
        let mut seen: Vec<u32> = hits.iter().map(|h| h.item).collect();
        seen.sort_unstable();
        seen.dedup();
        for i in seen {
            let it = &d.items[i as usize];
            *self
                .items_hit
                .entry(format!("{}:{}:{}", it.file, it.id, it.field))
                .or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Item {
        Item {
            file: "b.jsonl".into(),
            id: id.into(),
            field: "problem".into(),
        }
    }

    #[test]
    fn ten_gram_and_short_exact_rules() {
        let mut d = Decontaminator::new(DecontamConfig::default());
        d.add(item("long"), "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.");
        d.add(item("short"), "What is 2+2?");
        d.add(item("tiny"), "42");
        assert_eq!(d.items().len(), 2, "texts under 3 words are not indexed");
        let page = "Intro line\nQuote: NATALIA sold clips to 48 of her friends in april and then... more\nOutro line";
        let (kept, hits) = d.clean(page);
        assert!(kept.is_none());
        assert_eq!(hits[0].item, 0);
        let nine = "Natalia sold clips to 48 of her friends in";
        assert!(
            d.hits(nine).is_empty(),
            "nine words are not a 10-gram match"
        );
        assert_eq!(d.hits("so: what is 2 + 2 ? easy").len(), 1);
        assert!(d.hits("what is 2").is_empty());

        let mut seg = Decontaminator::new(DecontamConfig {
            action: Action::DropSegment,
            ..Default::default()
        });
        seg.add(item("long"), "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.");
        let (kept, _) = seg.clean(page);
        assert_eq!(kept.as_deref(), Some("Intro line\nOutro line"));
        let mut report = DecontamReport::default();
        report.log(&seg, &seg.hits(page), false);
        assert_eq!(report.items_hit.get("b.jsonl:long:problem"), Some(&1));
    }
}
