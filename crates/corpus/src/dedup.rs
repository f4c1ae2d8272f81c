//! Duplicate removal: exact URL, exact normalised text, and MinHash LSH near-duplicates
//! (datatrove's defaults: 5-word shingles, 14 bands x 8 rows; documents sharing any band key
//! are joined into one cluster by union-find, and one document per cluster is kept).

use std::collections::HashMap;

use reasonlab_text::minhash::{MinHashConfig, MinHasher};
use reasonlab_text::ngram::{hash64, normalized};

use crate::reader::Document;

/// Which document of a duplicate cluster survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepPolicy {
    /// The first in input order (datatrove's behaviour).
    #[default]
    First,
    /// The longest text (ties: first).
    Longest,
}

/// Dedup settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DedupConfig {
    pub exact_url: bool,
    pub exact_text: bool,
    pub near: bool,
    pub minhash: MinHashConfig,
    pub keep: KeepPolicy,
    pub threads: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            exact_url: true,
            exact_text: true,
            near: true,
            minhash: MinHashConfig::default(),
            keep: KeepPolicy::First,
            threads: 2,
        }
    }
}

/// Why a document was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    Url,
    Text,
    Near,
}

/// The outcome: per document keep or the reason it went, and the near-duplicate clusters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DedupResult {
    pub dropped: Vec<Option<DropReason>>,
    /// Clusters of 2+ documents (indices), the kept one first.
    pub clusters: Vec<Vec<usize>>,
    pub url_dups: usize,
    pub text_dups: usize,
    pub near_dups: usize,
}

impl DedupResult {
    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        self.dropped
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_none())
            .map(|(i, _)| i)
    }
}

/// `scheme://host/path?query` with scheme and host lowercased, fragment and trailing `/` gone.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let url = url.split('#').next().unwrap_or(url);
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = path.trim_end_matches('/');
    format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase(),
        path
    )
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// MinHash signatures on `threads` threads (None for texts without words).
pub fn signatures(texts: &[&str], cfg: MinHashConfig, threads: usize) -> Vec<Option<Vec<u32>>> {
    let hasher = MinHasher::new(cfg);
    let chunk = texts.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .chunks(chunk)
            .map(|c| {
                let h = &hasher;
                s.spawn(move || c.iter().map(|t| h.signature(t)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Deduplicate `docs`.
pub fn dedup(docs: &[Document], cfg: &DedupConfig) -> DedupResult {
    let n = docs.len();
    let mut res = DedupResult {
        dropped: vec![None; n],
        ..Default::default()
    };
    if cfg.exact_url {
        let mut seen = HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            if d.url.is_empty() {
                continue;
            }
            if seen.insert(normalize_url(&d.url), i).is_some() {
                res.dropped[i] = Some(DropReason::Url);
                res.url_dups += 1;
            }
        }
    }
    if cfg.exact_text {
        let mut seen = HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            if res.dropped[i].is_some() {
                continue;
            }
            let norm = normalized(&d.text);
            let key = (
                hash64(norm.as_bytes()),
                hash64(format!("{}\u{1}", norm.len()).as_bytes()) ^ norm.len() as u64,
            );
            if seen.insert(key, i).is_some() {
                res.dropped[i] = Some(DropReason::Text);
                res.text_dups += 1;
            }
        }
    }
    if !cfg.near {
        return res;
    }
    let live: Vec<usize> = (0..n).filter(|&i| res.dropped[i].is_none()).collect();
    let texts: Vec<&str> = live.iter().map(|&i| docs[i].text.as_str()).collect();
    let sigs = signatures(&texts, cfg.minhash, cfg.threads);
    let hasher = MinHasher::new(cfg.minhash);
    let mut parent: Vec<usize> = (0..live.len()).collect();
    let mut buckets: HashMap<(usize, u64), usize> = HashMap::new();
    for (j, sig) in sigs.iter().enumerate() {
        let Some(sig) = sig else { continue };
        for (band, key) in hasher.band_keys(sig).into_iter().enumerate() {
            match buckets.entry((band, key)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let (a, b) = (find(&mut parent, *e.get()), find(&mut parent, j));
                    if a != b {
                        parent[a.max(b)] = a.min(b);
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(j);
                }
            }
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for j in 0..live.len() {
        let r = find(&mut parent, j);
        groups.entry(r).or_default().push(j);
    }
    let mut clusters: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    clusters.sort_by_key(|g| g[0]);
    for g in clusters {
        let keep = match cfg.keep {
            KeepPolicy::First => g[0],
            KeepPolicy::Longest => *g
                .iter()
                .max_by_key(|&&j| (docs[live[j]].text.len(), std::cmp::Reverse(j)))
                .unwrap_or(&g[0]),
        };
        let mut cluster = vec![live[keep]];
        for &j in &g {
            if j != keep {
                res.dropped[live[j]] = Some(DropReason::Near);
                res.near_dups += 1;
                cluster.push(live[j]);
            }
        }
        res.clusters.push(cluster);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, url: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            url: url.into(),
            text: text.into(),
        }
    }

    #[test]
    fn exact_and_near_duplicates_with_keep_policy() {
        let long: String = (0..300)
            .map(|i| format!("token{} ", (i * 31) % 257))
            .collect();
        let near = format!("{long} extra words at the end");
        let docs = vec![
            doc(
                "a",
                "HTTP://Example.com/x/#top",
                "Alpha beta gamma delta epsilon zeta",
            ),
            doc("b", "http://example.com/x", "something else entirely here"),
            doc("c", "", "alpha, BETA gamma delta; epsilon zeta!"),
            doc("d", "", &long),
            doc("e", "", &near),
            doc(
                "f",
                "",
                "an unrelated sentence about cooking pasta with tomato sauce",
            ),
        ];
        let r = dedup(&docs, &DedupConfig::default());
        assert_eq!(r.dropped[1], Some(DropReason::Url));
        assert_eq!(r.dropped[2], Some(DropReason::Text));
        assert_eq!(r.dropped[4], Some(DropReason::Near));
        assert_eq!(r.kept().collect::<Vec<_>>(), vec![0, 3, 5]);
        assert_eq!(r.clusters, vec![vec![3, 4]]);
        let longest = dedup(
            &docs,
            &DedupConfig {
                keep: KeepPolicy::Longest,
                ..Default::default()
            },
        );
        assert_eq!(longest.clusters, vec![vec![4, 3]]);
        assert_eq!(longest.dropped[3], Some(DropReason::Near));
    }
}
