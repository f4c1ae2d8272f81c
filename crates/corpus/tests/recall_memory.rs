//! Recall at crawl scale: the peak heap of two full recall rounds (train, score, merge; round 1
//! reads the pool again for approved pages) stays flat when the pool grows tenfold. A counting
//! global allocator measures the heap exactly, so the bound does not depend on the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use reasonlab_corpus::recall::{self, RecallConfig};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn jsonl(path: &std::path::Path, rows: impl Iterator<Item = (String, String, String)>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for (id, url, text) in rows {
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": id, "url": url, "text": text})
        )
        .unwrap();
    }
}

fn math(i: usize) -> String {
    format!(
        "solve the equation x^2 + {i} x = {} find the integer roots and prove the theorem about the \
         sum of the roots of the quadratic polynomial with integer coefficients {}",
        i * 3,
        "lemma proof corollary ".repeat(20)
    )
}

fn other(i: usize) -> String {
    format!(
        "the recipe uses {i} cups of flour bake the bread in the oven and serve with butter {}",
        "kitchen dinner garden travel ".repeat(20)
    )
}

/// Peak heap bytes of a two-round recall run over a pool of `pages` pages (plus 100 pages
/// under the approved prefix, the same at every size).
fn peak_for(pages: usize) -> (usize, Vec<recall::RoundReport>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    jsonl(
        &d.join("seed.jsonl"),
        (0..100).map(|i| (format!("s{i}"), String::new(), math(i))),
    );
    jsonl(
        &d.join("neg.jsonl"),
        (0..200).map(|i| (format!("n{i}"), String::new(), other(i))),
    );
    let approved = (0..100).map(|i| {
        (
            format!("a{i}"),
            format!("https://mathsite.org/forum/t{i}"),
            math(i + 1000),
        )
    });
    let rest = (0..pages).map(|i| {
        let host = format!("site{}.com", i % 50);
        if i % 4 == 0 {
            (
                format!("p{i}"),
                format!("https://{host}/math/{i}"),
                math(i + 5000),
            )
        } else {
            (
                format!("p{i}"),
                format!("https://{host}/food/{i}"),
                other(i + 5000),
            )
        }
    });
    jsonl(&d.join("pool.jsonl"), approved.chain(rest));
    std::fs::write(d.join("approved.txt"), "mathsite.org/forum\n").unwrap();
    std::fs::write(
        d.join("recall.toml"),
        r#"seed = ["seed.jsonl"]
negatives = ["neg.jsonl"]
pool = ["pool.jsonl"]
out_dir = "out"
rounds = 2
token_budget = 200000
approved = "approved.txt"
merge_chunk = 1000
score_batch = 256
[classifier]
dim = 8
bucket = 1000
min_count = 1
epoch = 2
lr = 0.5
thread = 1
"#,
    )
    .unwrap();
    let cfg = RecallConfig::load(&d.join("recall.toml")).unwrap();
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let reports = recall::run_all(&cfg).unwrap();
    (PEAK.load(Ordering::Relaxed) - before, reports)
}

#[test]
fn peak_memory_stays_flat_as_the_pool_grows_tenfold() {
    let (small, r_small) = peak_for(2_000);
    let (large, r_large) = peak_for(20_000);
    eprintln!("peak heap: {small} bytes for 2,000 pages, {large} bytes for 20,000 pages");
    assert_eq!(r_small[0].scored, 2_100);
    assert_eq!(r_large[0].scored, 20_100);
    // The pool grew by ~18 MB of text; the peak may not grow by more than 2 MB (hash tables
    // and buffers that depend on counts, not on text). Reading the pool into memory, as
    // round ≥ 1 once did, adds the whole pool.
    assert!(
        large < small + (2 << 20),
        "peak heap grew from {small} to {large} bytes with the pool"
    );
    // Round 1 re-selects pages that round 0 selected: the overlap is reported.
    assert!(
        r_large[1].collected_before > 0 && r_large[1].overlap > 0.0,
        "{:?}",
        r_large[1]
    );
    assert!(r_large[1].overlap <= 1.0);
}
