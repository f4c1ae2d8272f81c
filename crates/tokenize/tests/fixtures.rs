//! Byte-for-byte agreement with transformers (renderings from `scripts/make_fixtures.py`).

use std::path::PathBuf;

use reasonlab_tokenize::{ChatTemplate, Message, Tokenizer};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[derive(Deserialize)]
struct Rendering {
    template: String,
    case: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    expected: String,
}

#[test]
fn chat_templates_render_like_transformers() {
    let text = std::fs::read_to_string(fixtures().join("chat_templates/renderings.json")).unwrap();
    let cases: Vec<Rendering> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 18);
    for case in cases {
        let source = std::fs::read_to_string(
            fixtures().join(format!("chat_templates/{}.jinja", case.template)),
        )
        .unwrap();
        let t = ChatTemplate::new(&source).unwrap();
        let got = t
            .render(
                &case.messages,
                case.add_generation_prompt,
                case.bos_token.as_deref(),
                case.eos_token.as_deref(),
            )
            .unwrap();
        assert_eq!(got, case.expected, "{} / {}", case.template, case.case);
    }
}

#[derive(Deserialize)]
struct TokCase {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

#[derive(Deserialize)]
struct TokCases {
    cases: Vec<TokCase>,
}

#[test]
fn encode_decode_match_tokenizers_python() {
    let tok = Tokenizer::from_dir(&fixtures().join("tiny-qwen2")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap();
    let cases: TokCases = serde_json::from_str(&text).unwrap();
    for c in cases.cases {
        assert_eq!(tok.encode(&c.text, false).unwrap(), c.ids, "{:?}", c.text);
        assert_eq!(tok.decode(&c.ids, false).unwrap(), c.decoded);
        assert_eq!(c.decoded, c.text, "round trip");
    }
}

#[test]
fn config_special_tokens_and_separate_jinja_file() {
    let qwen3 = Tokenizer::from_dir(&fixtures().join("tiny-qwen3")).unwrap();
    assert!(qwen3.chat_template.is_some(), "chat_template.jinja is read");
    assert_eq!(qwen3.eos_token.as_deref(), Some("<|im_end|>"));
    let llama = Tokenizer::from_dir(&fixtures().join("tiny-llama")).unwrap();
    assert_eq!(llama.bos_token.as_deref(), Some("<|endoftext|>"));
    // Llama's post-processor prepends BOS only when special tokens are requested.
    let with = llama.encode("1+1", true).unwrap();
    let without = llama.encode("1+1", false).unwrap();
    assert_eq!(with.len(), without.len() + 1);
    assert_eq!(Some(with[0]), llama.token_id("<|endoftext|>"));
}

#[test]
fn invalid_template_and_missing_files_are_clear_errors() {
    let e = ChatTemplate::new("{% for m in messages %}{{ m.content }").unwrap_err();
    assert!(e.to_string().contains("chat template"), "{e}");
    let e = ChatTemplate::new("{{ raise_exception('roles must alternate') }}")
        .unwrap()
        .render(&[], false, None, None)
        .unwrap_err();
    assert!(e.to_string().contains("roles must alternate"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn save_and_reload_keeps_template_and_tokens() {
    let tok = Tokenizer::from_dir(&fixtures().join("tiny-qwen3")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let again = Tokenizer::from_dir(dir.path()).unwrap();
    let msgs = vec![Message::new(reasonlab_tokenize::Role::User, "2+2?")];
    assert_eq!(
        again.render_chat(&msgs, true).unwrap(),
        tok.render_chat(&msgs, true).unwrap()
    );
    assert_eq!(
        again.encode("x = 3", false).unwrap(),
        tok.encode("x = 3", false).unwrap()
    );
}
