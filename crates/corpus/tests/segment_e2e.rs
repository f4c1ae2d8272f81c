//! Chinese text has no spaces, so fastText's whitespace tokens are whole sentences that never
//! recur; with `--segment jieba` the classifier sees words and generalises to new sentences.

use reasonlab_corpus::classifier;
use reasonlab_corpus::fasttext::Args;
use reasonlab_corpus::segment::Segmentation;

const MATH: [&str; 8] = [
    "方程",
    "函数",
    "三角形",
    "面积",
    "求解",
    "整数",
    "分数",
    "答案",
];
const OTHER: [&str; 8] = [
    "天气", "音乐", "电影", "旅游", "朋友", "晚饭", "公园", "新闻",
];
const FILLER: [&str; 5] = ["我们", "今天", "这个", "喜欢", "看看"];

/// `n` unspaced sentences per class: fillers and two class words in seeded order.
fn sentences(n: usize, seed: u64) -> Vec<(bool, String)> {
    let mut s = seed;
    let mut next = |m: usize| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % m as u64) as usize
    };
    let mut out = Vec::new();
    for i in 0..2 * n {
        let math = i % 2 == 0;
        let words = if math { &MATH } else { &OTHER };
        let mut parts = [
            FILLER[next(FILLER.len())],
            words[next(words.len())],
            FILLER[next(FILLER.len())],
            words[next(words.len())],
        ];
        let k = next(parts.len());
        parts.rotate_left(k);
        out.push((math, parts.concat()));
    }
    out
}

fn accuracy(segmentation: Segmentation) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.txt");
    let test = dir.path().join("test.txt");
    let model = dir.path().join("m.bin");
    let label = |m: bool| if m { "__label__math" } else { "__label__other" };
    let lines: String = sentences(200, 1)
        .iter()
        .map(|(m, t)| format!("{} {t}\n", label(*m)))
        .collect();
    std::fs::write(&train, lines).unwrap();
    let held_out = sentences(30, 99);
    let text: String = held_out.iter().map(|(_, t)| format!("{t}\n")).collect();
    std::fs::write(&test, text).unwrap();
    let args = Args {
        epoch: 20,
        lr: 0.5,
        dim: 16,
        min_count: 1,
        bucket: 0,
        thread: 1,
        ..Args::default()
    };
    classifier::train_file(&train, &model, &args, segmentation).unwrap();
    let mut out = Vec::new();
    classifier::predict_file(&model, &test, 1, 0.0, false, 2, segmentation, &mut out).unwrap();
    let preds = String::from_utf8(out).unwrap();
    let preds: Vec<&str> = preds.lines().collect();
    assert_eq!(preds.len(), held_out.len());
    let right = held_out
        .iter()
        .zip(&preds)
        .filter(|((m, _), p)| **p == label(*m))
        .count();
    right as f64 / held_out.len() as f64
}

#[test]
fn jieba_segmentation_lets_the_classifier_generalise() {
    let jieba = accuracy(Segmentation::Jieba);
    let whitespace = accuracy(Segmentation::Whitespace);
    eprintln!("held-out accuracy: jieba {jieba:.3}, whitespace {whitespace:.3}");
    assert!(jieba >= 0.95, "jieba accuracy {jieba}");
    assert!(whitespace <= 0.75, "whitespace accuracy {whitespace}");
}
