//! Two recall rounds on a tiny pool, with two shards and an approved prefix.

use std::io::Write;

use reasonlab_corpus::recall::{self, RecallConfig, Shard};

fn jsonl(path: &std::path::Path, rows: &[(String, String, String)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (id, url, text) in rows {
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": id, "url": url, "text": text})
        )
        .unwrap();
    }
}

#[test]
fn rounds_select_math_pages_flag_domains_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let math = |i: usize| {
        format!(
            "solve the equation x^2 + {i} x = {} find the integer roots and prove the theorem",
            i * 3
        )
    };
    let other = |i: usize| {
        format!(
            "the recipe uses {i} cups of flour bake the bread in the oven and serve with butter"
        )
    };
    jsonl(
        &d.join("seed.jsonl"),
        &(0..60)
            .map(|i| (format!("s{i}"), String::new(), math(i)))
            .collect::<Vec<_>>(),
    );
    jsonl(
        &d.join("neg.jsonl"),
        &(0..60)
            .map(|i| (format!("n{i}"), String::new(), other(i)))
            .collect::<Vec<_>>(),
    );
    let mut pool = Vec::new();
    for i in 0..40 {
        pool.push((
            format!("pm{i}"),
            format!("https://mathsite.org/forum/t{i}"),
            math(i + 100),
        ));
        pool.push((
            format!("po{i}"),
            format!("https://food.com/recipes/{i}"),
            other(i + 100),
        ));
    }
    jsonl(&d.join("pool.jsonl"), &pool);
    std::fs::write(d.join("approved.txt"), "mathsite.org/forum\n").unwrap();
    std::fs::write(
        d.join("recall.toml"),
        r#"seed = ["seed.jsonl"]
negatives = ["neg.jsonl"]
pool = ["pool.jsonl"]
out_dir = "out"
rounds = 2
token_budget = 100000
approved = "approved.txt"
[classifier]
dim = 8
bucket = 1000
min_count = 1
epoch = 20
lr = 0.5
thread = 1
"#,
    )
    .unwrap();
    let cfg = RecallConfig::load(&d.join("recall.toml")).unwrap();
    recall::train_round(&cfg, 0).unwrap();
    for i in 0..2 {
        recall::score_round(&cfg, 0, Shard { index: i, count: 2 }).unwrap();
    }
    let r0 = recall::merge_round(&cfg, 0, 2).unwrap();
    assert_eq!(r0.scored, 80);
    assert_eq!(r0.pages, 40, "{r0:?}");
    assert_eq!(r0.flagged_domains, 1);
    let prefixes = std::fs::read_to_string(cfg.round_dir(0).join("prefixes.tsv")).unwrap();
    assert!(prefixes.contains("mathsite.org/forum\t40"), "{prefixes}");
    let selected = std::fs::read_to_string(cfg.round_dir(0).join("selected.jsonl")).unwrap();
    assert!(selected.lines().all(|l| l.contains("mathsite.org")));
    // Round 1 adds the approved pages to the seed; rerunning everything resumes.
    let reports = recall::run_all(&cfg).unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0], r0);
    let train1 = std::fs::read_to_string(cfg.round_dir(1).join("train.txt")).unwrap();
    assert_eq!(
        train1
            .lines()
            .filter(|l| l.starts_with("__label__math"))
            .count(),
        100
    );
    assert_eq!(reports[1].new_domains, 0);
}
