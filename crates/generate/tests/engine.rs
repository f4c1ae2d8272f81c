//! The engine against transformers' greedy decoding and against its own teacher forcing.

use std::path::PathBuf;

use reasonlab_generate::{FinishReason, SamplingParams, generate};
use reasonlab_model::burn::tensor::Device;
use reasonlab_model::{Model, PadSide, TokenBatch};
use reasonlab_tokenize::Tokenizer;
use serde::Deserialize;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

#[derive(Deserialize)]
struct Case {
    prompt: Vec<u32>,
    new_tokens: Vec<u32>,
}
#[derive(Deserialize)]
struct Greedy {
    cases: Vec<Case>,
}
#[derive(Deserialize)]
struct Reference {
    greedy: Greedy,
}

fn greedy(max_new_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        ..Default::default()
    }
}

/// Prompts taken into the KV cache a few columns per pass (chunked prefill) give the tokens
/// of one pass and their log-probs within 1e-5 (a pass of one column per row runs the decode
/// kernels, a longer one the prefill's, which round differently), on flex and on burn's ops
/// (the autodiff device), with prompts of different lengths whose first stretches are all
/// padding for the shorter ones; and the prefill's stretch must hold a token.
#[test]
fn a_chunked_prefill_gives_the_one_pass_completions() {
    let prompts: Vec<Vec<u32>> = vec![(1..=23).collect(), vec![5, 9, 2], (40..50).collect()];
    for device in [Device::flex(), Device::flex().autodiff()] {
        let model = Model::load(&fixture("tiny-qwen2"), &device).unwrap();
        let run = |prefill_tokens: usize| {
            let params = SamplingParams {
                temperature: 0.7,
                seed: 3,
                logprobs: true,
                prefill_tokens,
                ..greedy(12)
            };
            let (out, _) = generate(&model, None, &prompts, 2, &params, &mut |_| {}).unwrap();
            out.into_iter()
                .map(|c| (c.token_ids, c.logprobs.unwrap()))
                .collect::<Vec<_>>()
        };
        let whole = run(usize::MAX);
        // 1, 2 and 3 columns per pass (3, 6, 10 tokens over 3 prompts).
        for tokens in [3, 6, 10] {
            let chunked = run(tokens);
            let what = format!("{tokens} prompt tokens per pass, {device:?}");
            for ((ids, logps), (want_ids, want_logps)) in chunked.iter().zip(&whole) {
                assert_eq!(ids, want_ids, "{what}");
                for (a, b) in logps.iter().zip(want_logps) {
                    assert!((a - b).abs() < 1e-5, "{what}: log-prob {a} against {b}");
                }
            }
        }
    }
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let none = SamplingParams {
        prefill_tokens: 0,
        ..greedy(4)
    };
    assert!(generate(&model, None, &prompts, 1, &none, &mut |_| {}).is_err());
}

#[test]
fn greedy_is_token_identical_to_transformers() {
    for name in ["tiny-qwen2", "tiny-llama", "tiny-qwen3"] {
        let model = Model::load(&fixture(name), &Device::flex()).unwrap();
        let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
        let r: Reference = serde_json::from_str(&text).unwrap();
        // Both prompts (different lengths) in one left-padded batch, two samples each.
        let prompts: Vec<Vec<u32>> = r.greedy.cases.iter().map(|c| c.prompt.clone()).collect();
        let (out, stats) = generate(&model, None, &prompts, 2, &greedy(20), &mut |_| {}).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(stats.new_tokens, 80);
        for c in &out {
            assert_eq!(
                c.token_ids, r.greedy.cases[c.prompt_index].new_tokens,
                "{name} prompt {}",
                c.prompt_index
            );
            assert_eq!(c.finish_reason, FinishReason::Length);
        }
    }
}

#[test]
fn sampled_logprobs_equal_teacher_forced_logprobs() {
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let prompts = vec![vec![5u32, 9, 13], vec![7u32, 1, 2, 3, 4, 100, 200]];
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 12,
        logprobs: true,
        seed: 3,
        ..Default::default()
    };
    let (out, _) = generate(&model, None, &prompts, 3, &params, &mut |_| {}).unwrap();
    for c in out {
        let mut seq = prompts[c.prompt_index].clone();
        let p = seq.len();
        seq.extend(&c.token_ids);
        let batch = TokenBatch::pad(&[seq], 0, PadSide::Right);
        let lp = model
            .token_logprobs(&batch)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap();
        let sampled = c.logprobs.unwrap();
        for (i, s) in sampled.iter().enumerate() {
            let tf = lp[p - 1 + i];
            assert!(
                (tf - s).abs() < 1e-4,
                "token {i}: cache {s} vs teacher-forced {tf}"
            );
        }
    }
}

#[test]
fn same_seed_same_output_regardless_of_batch() {
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        top_k: 50,
        max_new_tokens: 16,
        seed: 11,
        ..Default::default()
    };
    let a = vec![vec![3u32, 4, 5, 6]];
    let ab = vec![vec![3u32, 4, 5, 6], vec![9u32, 8]];
    let (alone, _) = generate(&model, None, &a, 2, &params, &mut |_| {}).unwrap();
    let (together, _) = generate(&model, None, &ab, 2, &params, &mut |_| {}).unwrap();
    let (again, _) = generate(&model, None, &a, 2, &params, &mut |_| {}).unwrap();
    assert_eq!(alone, again);
    assert_eq!(alone[..], together[..2]);
    assert_ne!(alone[0].token_ids, alone[1].token_ids, "samples differ");
    let other = SamplingParams { seed: 12, ..params };
    let (diff, _) = generate(&model, None, &a, 2, &other, &mut |_| {}).unwrap();
    assert_ne!(alone, diff);
}

/// Prompts split over concurrent workers give exactly the single-thread outputs, and the
/// streaming callbacks still see every token once, on the calling thread.
#[test]
fn concurrent_prompt_groups_change_nothing() {
    use reasonlab_generate::{SeqRng, generate_streaming};
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 12,
        seed: 5,
        ..Default::default()
    };
    let prompts: Vec<Vec<u32>> = (0..7u32).map(|i| vec![3 + i, 4, 5 + 2 * i]).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut streamed = Vec::new();
            let mut progress = 0;
            let (out, stats) = generate_streaming(
                &model,
                None,
                &prompts,
                3,
                &params,
                &|p, j| SeqRng::new(5, p as u64, j as u64),
                &mut |k| progress += k,
                &mut |p, j, t| streamed.push((p, j, t)),
            )
            .unwrap();
            assert_eq!(progress, stats.new_tokens);
            assert_eq!(streamed.len(), stats.new_tokens);
            // Each sample's streamed tokens, in order, are its completion.
            for c in &out {
                let got: Vec<u32> = streamed
                    .iter()
                    .filter(|(p, j, _)| (*p, *j) == (c.prompt_index, c.sample_index))
                    .map(|x| x.2)
                    .collect();
                assert_eq!(got, c.token_ids);
            }
            out
        })
    };
    let serial = run(1);
    assert_eq!(serial.len(), 21);
    assert_eq!(serial, run(3));
}

#[test]
fn stop_tokens_and_strings_end_sequences() {
    let dir = fixture("tiny-qwen2");
    let model = Model::load(&dir, &Device::flex()).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let prompts = vec![tok.encode("Natalia sold clips to", false).unwrap()];
    let (free, _) = generate(&model, Some(&tok), &prompts, 1, &greedy(24), &mut |_| {}).unwrap();
    let ids = &free[0].token_ids;
    // Stop on the 5th generated token id.
    let stop_id = ids[4];
    let first = ids.iter().position(|&t| t == stop_id).unwrap();
    let p = SamplingParams {
        stop_token_ids: vec![stop_id],
        ..greedy(24)
    };
    let (out, _) = generate(&model, Some(&tok), &prompts, 1, &p, &mut |_| {}).unwrap();
    assert_eq!(out[0].token_ids, ids[..=first].to_vec());
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
    // Stop string: a piece of the free-running text; output text is cut before it.
    let text = &free[0].text;
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let p = SamplingParams {
        stop: vec![stop.clone()],
        ..greedy(24)
    };
    let (out, _) = generate(&model, Some(&tok), &prompts, 1, &p, &mut |_| {}).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::Stop);
    assert_eq!(out[0].text, text[..text.find(&stop).unwrap()]);
}

#[test]
fn prompts_longer_than_the_context_are_rejected() {
    let model = Model::load(&fixture("tiny-qwen2"), &Device::flex()).unwrap();
    let long = vec![vec![1u32; 250]];
    let e = generate(&model, None, &long, 1, &greedy(10), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("250 tokens"), "{e}");
    let e = generate(&model, None, &[vec![]], 1, &greedy(10), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn a_final_assistant_message_is_continued() {
    use reasonlab_core::engine::{Message, Prompt};
    let engine =
        reasonlab_generate::LocalEngine::load(&fixture("tiny-qwen2"), Default::default()).unwrap();
    let tok = Tokenizer::from_dir(&fixture("tiny-qwen2")).unwrap();
    let question = vec![Message::user("What is 6 * 7?")];
    let partial = "Let me compute.\n```output\n42\n```\n";
    let mut continued = question.clone();
    continued.push(Message::assistant(partial));
    let ids = engine.encode(&Prompt::Messages(continued)).unwrap();
    let text = tok.render_chat(&question, true).unwrap() + partial;
    assert_eq!(ids, tok.encode(&text, false).unwrap());
    // Not a closed turn followed by a new generation prompt.
    let closed = tok.encode_chat(&[question[0].clone(), Message::assistant(partial)], true);
    assert_ne!(ids, closed.unwrap());
}

/// An engine's batching bounds how much it decodes at once, not what it answers: one
/// sequence per decode and one prompt token per prefill pass give the default engine's
/// tokens for the same seeded requests (several prompts, two samples each); a limit of 0 is
/// refused when the engine is built.
#[test]
fn an_engines_batching_changes_no_answer() {
    use reasonlab_core::engine::{Engine, Prompt, Request, Sampling};
    use reasonlab_generate::{Batching, LocalEngine};
    let dir = fixture("tiny-qwen2");
    let default = LocalEngine::load(&dir, Default::default()).unwrap();
    assert_eq!(default.batching(), Batching::default());
    let narrow = Batching {
        max_batch: 1,
        prefill_tokens: 1,
    };
    let one_at_a_time = LocalEngine::load(&dir, Default::default())
        .unwrap()
        .with_batching(narrow)
        .unwrap();
    assert_eq!(one_at_a_time.batching(), narrow);
    let requests: Vec<Request> = ["2 + 2 =", "The answer to 6 * 7 is", "x"]
        .iter()
        .enumerate()
        .map(|(i, text)| Request {
            prompt: Prompt::Text(text.to_string()),
            n: 2,
            sampling: Sampling {
                temperature: 1.0,
                max_new_tokens: 12,
                seed: 7 + i as u64,
                ..Sampling::default()
            },
            logprobs: false,
        })
        .collect();
    let tokens = |engine: &LocalEngine| -> Vec<Vec<Vec<u32>>> {
        engine
            .generate(&requests)
            .into_iter()
            .map(|out| {
                let out = out.unwrap();
                out.samples
                    .into_iter()
                    .map(|s| s.token_ids.unwrap())
                    .collect()
            })
            .collect()
    };
    let wide = tokens(&default);
    assert_eq!(wide, tokens(&one_at_a_time));
    assert_ne!(wide[0][0], wide[0][1], "the samples are draws");
    for (bad, what) in [
        (
            Batching {
                max_batch: 0,
                ..narrow
            },
            "max_batch must be ≥ 1",
        ),
        (
            Batching {
                prefill_tokens: 0,
                ..narrow
            },
            "prefill_tokens must be ≥ 1",
        ),
    ] {
        let err = LocalEngine::load(&dir, Default::default())
            .unwrap()
            .with_batching(bad)
            .err()
            .expect("a zero limit is refused");
        assert!(err.to_string().contains(what), "{err}");
    }
}
