//! The pretraining stream over real files: pre-tokenised ids come back in order, documents
//! keep their EOS, and a restored stream continues where the snapshot was taken.

use std::path::PathBuf;

use reasonlab_core::jsonl::BadLines;
use reasonlab_tokenize::Tokenizer;
use reasonlab_train::pretrain::{MixtureStream, SourceSpec, TokenDtype};

fn tok() -> Tokenizer {
    Tokenizer::from_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2"),
    )
    .unwrap()
}

fn source(name: &str, path: PathBuf, tokens: Option<TokenDtype>) -> SourceSpec {
    SourceSpec {
        name: name.into(),
        paths: vec![path],
        weight: Some(1.0),
        field: "text".into(),
        tokens,
    }
}

#[test]
fn pretokenised_u16_ids_stream_in_order_and_resume() {
    let t = tok();
    let eos = t.eos_id().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 12 documents of 1..=12 ids each, each ending in EOS.
    let mut ids: Vec<u32> = Vec::new();
    for d in 1..=12u32 {
        ids.extend((0..d).map(|k| 3 + (d * 7 + k) % 400));
        ids.push(eos);
    }
    let bytes: Vec<u8> = ids.iter().flat_map(|&i| (i as u16).to_le_bytes()).collect();
    let path = dir.path().join("train.bin");
    std::fs::write(&path, bytes).unwrap();
    let spec = vec![source("math", path.clone(), Some(TokenDtype::U16))];
    let mut s = MixtureStream::new(spec.clone(), vec![1.0], &t, BadLines::Reject).unwrap();
    let a = s.next_batch(2, 10).unwrap();
    assert_eq!(a.ids, ids[..20].to_vec());
    let snap = s.state();
    let b = s.next_batch(2, 10).unwrap();
    assert_eq!(b.ids, ids[20..40].to_vec());
    // A fresh stream restored from the snapshot yields the same next batch.
    let mut r = MixtureStream::new(spec, vec![1.0], &t, BadLines::Reject).unwrap();
    r.restore(snap);
    assert_eq!(r.next_batch(2, 10).unwrap().ids, b.ids);
    // Documents are counted by EOS: 40 + buffered ids cover the first 8 documents at least.
    assert!(s.documents()[0] >= 8);
}

#[test]
fn text_and_pretokenised_sources_mix_by_tokens() {
    let t = tok();
    let eos = t.eos_id().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u32> = (0..2000)
        .map(|i| if i % 50 == 49 { eos } else { 7 })
        .collect();
    let bytes: Vec<u8> = ids.iter().flat_map(|&i| i.to_le_bytes()).collect();
    let bin = dir.path().join("code.bin");
    std::fs::write(&bin, bytes).unwrap();
    let jsonl = dir.path().join("math.jsonl");
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!(
            "{{\"text\": \"x = {i} + {i}, so x is {}.\"}}\n",
            2 * i
        ));
    }
    std::fs::write(&jsonl, text).unwrap();
    let spec = vec![
        source("math", jsonl, None),
        source("code", bin, Some(TokenDtype::U32)),
    ];
    let mut s = MixtureStream::new(spec, vec![0.75, 0.25], &t, BadLines::Reject).unwrap();
    for _ in 0..20 {
        s.next_batch(4, 64).unwrap();
    }
    let p = s.sampler().proportions();
    assert!((p[0] - 0.75).abs() < 0.05, "{p:?}");
}
