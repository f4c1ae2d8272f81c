//! SFT on the tiny Qwen2 fixture: loss masking, packing, gradient accumulation, exact resume.

use std::path::PathBuf;

use reasonlab_model::tensor::Device;
use reasonlab_model::{Model, TokenBatch};
use reasonlab_tokenize::{Message, Role, Tokenizer};
use reasonlab_train::lm::{MicroBatch, accumulated_step, masked_nll_sum, nll_sum_from_logprobs};
use reasonlab_train::sft::{
    EncodeSettings, Encoded, Outcome, Overflow, PromptFormat, SftRecord, SftSettings, SftState,
    SftTrainer, batch_rows, encode,
};
use reasonlab_train::{AdamW, AdamWSettings, checkpoint};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2")
}

fn tok() -> Tokenizer {
    Tokenizer::from_dir(&fixture()).unwrap()
}

fn model(device: &Device) -> Model {
    Model::load(&fixture(), device).unwrap()
}

fn chat(q: &str, a: &str) -> SftRecord {
    SftRecord::Chat {
        messages: vec![
            Message::new(Role::User, q),
            Message::new(Role::Assistant, a),
        ],
    }
}

fn enc(r: &SftRecord) -> Encoded {
    match encode(r, &tok(), &EncodeSettings::default()).unwrap() {
        Outcome::Kept(e) => e,
        other => panic!("{other:?}"),
    }
}

fn examples() -> Vec<Encoded> {
    [
        ("What is 2+3?", "2+3 = 5. \\boxed{5}"),
        ("Name a prime.", "7"),
        (
            "Compute 12*12.",
            "12*12 = 144, so the answer is \\boxed{144}.",
        ),
        ("Is 9 odd?", "Yes."),
        ("What is 10-4?", "\\boxed{6}"),
    ]
    .iter()
    .map(|(q, a)| enc(&chat(q, a)))
    .collect()
}

#[test]
fn only_assistant_tokens_are_targets_and_they_decode_to_the_answer() {
    let t = tok();
    let e = enc(&chat("What is 2+3?", "It is 5."));
    let trained: Vec<u32> = e
        .ids
        .iter()
        .zip(&e.loss)
        .filter(|x| *x.1)
        .map(|x| *x.0)
        .collect();
    // The assistant content and its end-of-turn marker, nothing of the prompt.
    assert_eq!(
        t.decode(&trained, false).unwrap().trim_end(),
        "It is 5.<|im_end|>"
    );
}

#[test]
fn raw_prompt_completion_trains_on_the_completion_and_eos() {
    let t = tok();
    let settings = EncodeSettings {
        format: PromptFormat::Raw,
        ..Default::default()
    };
    let r = SftRecord::PromptCompletion {
        prompt: "Q: 1+1=".into(),
        completion: " 2".into(),
    };
    let Outcome::Kept(e) = encode(&r, &t, &settings).unwrap() else {
        panic!()
    };
    let trained: Vec<u32> = e
        .ids
        .iter()
        .zip(&e.loss)
        .filter(|x| *x.1)
        .map(|x| *x.0)
        .collect();
    assert_eq!(*trained.last().unwrap(), t.eos_id().unwrap());
    assert_eq!(
        t.decode(&trained[..trained.len() - 1], false).unwrap(),
        " 2"
    );
}

#[test]
fn tool_outputs_are_masked() {
    let t = tok();
    let e = enc(&chat(
        "Compute 3^4.",
        "```python\nprint(3**4)\n```\n```output\n81\n```\nSo \\boxed{81}.",
    ));
    let trained: Vec<u32> = e
        .ids
        .iter()
        .zip(&e.loss)
        .filter(|x| *x.1)
        .map(|x| *x.0)
        .collect();
    let text = t.decode(&trained, false).unwrap();
    assert!(text.contains("print(3**4)"), "{text}");
    assert!(!text.contains("output"), "{text}");
    assert!(text.contains("So \\boxed{81}"), "{text}");
}

#[test]
fn overflow_is_truncated_or_dropped_by_flag() {
    let t = tok();
    let long = chat("q", &"word ".repeat(200));
    // The prompt (with Qwen's default system turn) plus a few answer tokens.
    let prompt_len = enc(&chat("q", "a")).loss.iter().position(|&l| l).unwrap();
    let max_len = prompt_len + 8;
    let mut s = EncodeSettings {
        max_len,
        ..Default::default()
    };
    match encode(&long, &t, &s).unwrap() {
        Outcome::Truncated(e) => {
            assert_eq!(e.len(), max_len);
            assert_eq!(e.targets(), 8);
        }
        o => panic!("{o:?}"),
    }
    s.overflow = Overflow::Drop;
    assert_eq!(encode(&long, &t, &s).unwrap(), Outcome::Dropped);
}

#[test]
fn prompt_tokens_get_exactly_zero_gradient() {
    let device = Device::flex().autodiff();
    let m = model(&device);
    let e = enc(&chat("What is 2+3?", "5"));
    let lb = batch_rows(&[vec![&e]], 0);
    let logp = m.token_logprobs(&lb.batch).unwrap().detach().require_grad();
    let (sum, count) = nll_sum_from_logprobs(logp.clone(), &lb.batch, Some(&lb.loss_mask)).unwrap();
    let grads = sum.div_scalar(count as f32).backward();
    let g: Vec<f32> = logp.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
    let mut nonzero = 0;
    for (i, (&gi, &m)) in g.iter().zip(&lb.loss_mask).enumerate() {
        if m == 0.0 {
            assert_eq!(gi, 0.0, "prompt column {i} has gradient {gi}");
        } else {
            assert!((gi + 1.0 / count as f32).abs() < 1e-7);
            nonzero += 1;
        }
    }
    assert_eq!(nonzero, e.targets());
    assert!(nonzero < g.len() / 2);
}

#[test]
fn packed_and_unpacked_batches_give_the_same_loss() {
    let device = Device::flex();
    let m = model(&device);
    let ex = examples();
    let unpacked: Vec<Vec<&Encoded>> = ex.iter().map(|e| vec![e]).collect();
    let packed: Vec<Vec<&Encoded>> = vec![ex[..3].iter().collect(), ex[3..].iter().collect()];
    let loss = |rows: &[Vec<&Encoded>]| {
        let b = batch_rows(rows, 0);
        let (s, n) = masked_nll_sum(&m, &b.batch, Some(&b.loss_mask)).unwrap();
        (s.try_into_scalar::<f32>().unwrap(), n)
    };
    let (a, na) = loss(&unpacked);
    let (b, nb) = loss(&packed);
    assert_eq!(na, nb);
    assert!((a - b).abs() / a.abs() < 1e-5, "unpacked {a} vs packed {b}");
    // Without the example boundary (positions continuing), attention leaks and the loss moves.
    let pair: Vec<Vec<&Encoded>> = vec![vec![&ex[1], &ex[3]]];
    let sep = batch_rows(&pair, 0);
    let (s, _) = masked_nll_sum(&m, &sep.batch, Some(&sep.loss_mask)).unwrap();
    let separate = s.try_into_scalar::<f32>().unwrap();
    let mut leaky = sep.clone();
    let t = leaky.batch.t;
    for row in 0..leaky.batch.b {
        for i in 0..t {
            leaky.batch.positions[row * t + i] = i as u32;
        }
    }
    let (s, _) = masked_nll_sum(&m, &leaky.batch, Some(&leaky.loss_mask)).unwrap();
    let c = s.try_into_scalar::<f32>().unwrap();
    assert!(
        (separate - c).abs() / separate.abs() > 1e-4,
        "leaky packing should differ"
    );
}

fn weights(m: &Model) -> Vec<f32> {
    m.hf_tensors()
        .unwrap()
        .into_values()
        .flat_map(|(_, v)| v)
        .collect()
}

#[test]
fn accumulating_micro_batches_equals_one_big_batch() {
    let device = Device::flex().autodiff();
    let ex = examples();
    let one: Vec<Vec<&Encoded>> = ex.iter().map(|e| vec![e]).collect();
    let all = batch_rows(&one, 0);
    let (p1, p2) = (batch_rows(&one[..2], 0), batch_rows(&one[2..], 0));
    // A large epsilon makes the first AdamW step proportional to the gradient instead of its
    // sign, so float noise in near-zero gradients cannot flip updates.
    let settings = AdamWSettings {
        lr: 1e-2,
        eps: 1.0,
        ..Default::default()
    };
    let mut a = model(&device);
    let mut oa = AdamW::new(settings.clone());
    let (la, _) = accumulated_step(
        &mut a,
        &mut oa,
        1e-2,
        &[MicroBatch {
            batch: &all.batch,
            loss_mask: Some(&all.loss_mask),
        }],
    )
    .unwrap();
    let mut b = model(&device);
    let mut ob = AdamW::new(settings);
    let (lb, _) = accumulated_step(
        &mut b,
        &mut ob,
        1e-2,
        &[
            MicroBatch {
                batch: &p1.batch,
                loss_mask: Some(&p1.loss_mask),
            },
            MicroBatch {
                batch: &p2.batch,
                loss_mask: Some(&p2.loss_mask),
            },
        ],
    )
    .unwrap();
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
    let (wa, wb) = (weights(&a), weights(&b));
    let worst = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "weights differ by {worst}");
    assert!(
        wa != weights(&model(&Device::flex())),
        "the step changed nothing"
    );
}

/// The step on one worker equals the step on three (rows split 2/2/1 over forked models whose
/// gradients are summed by parameter id), both run in rayon pools of those sizes, and a step
/// is reproducible bit for bit.
#[test]
fn data_parallel_workers_give_the_single_worker_update() {
    let device = Device::flex().autodiff();
    let ex = examples();
    let one: Vec<Vec<&Encoded>> = ex.iter().map(|e| vec![e]).collect();
    let all = batch_rows(&one, 0);
    let settings = AdamWSettings {
        lr: 1e-2,
        eps: 1.0,
        ..Default::default()
    };
    let step = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(reasonlab_train::lm::data_parallel_workers(&device), threads);
            let mut m = model(&device);
            let mut o = AdamW::new(settings.clone());
            let (loss, applied) = accumulated_step(
                &mut m,
                &mut o,
                1e-2,
                &[MicroBatch {
                    batch: &all.batch,
                    loss_mask: Some(&all.loss_mask),
                }],
            )
            .unwrap();
            assert!(applied);
            (loss, weights(&m))
        })
    };
    let (l1, w1) = step(1);
    let (l3, w3) = step(3);
    // Reproducible: the same pool gives bit-identical weights (no scheduling-dependent sums).
    assert_eq!(step(3).1, w3, "two identical steps differ");
    assert!((l1 - l3).abs() < 1e-5, "{l1} vs {l3}");
    let worst = w1
        .iter()
        .zip(&w3)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "weights differ by {worst}");
    assert!(
        w1 != weights(&model(&Device::flex())),
        "the step changed nothing"
    );
}

fn settings() -> SftSettings {
    SftSettings {
        epochs: 2,
        batch_size: 2,
        grad_accum: 1,
        packing: true,
        encode: EncodeSettings {
            max_len: 64,
            ..Default::default()
        },
        optim: AdamWSettings {
            lr: 5e-3,
            ..Default::default()
        },
        seed: 3,
        ..Default::default()
    }
}

#[test]
fn resume_from_a_checkpoint_continues_exactly() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let mut full = SftTrainer::new(settings(), model(&device), examples(), vec![], 0).unwrap();
    let total = full.total_steps();
    assert!(total >= 4, "{total}");
    let mut straight = Vec::new();
    while let Some(m) = full.step().unwrap() {
        straight.push(m.loss);
    }
    // First half, checkpoint, then a fresh process-like restart from disk.
    let mut first = SftTrainer::new(settings(), model(&device), examples(), vec![], 0).unwrap();
    let half = total / 2 + 1; // crosses into the second epoch for 3 steps per epoch
    let mut resumed = Vec::new();
    for _ in 0..half {
        resumed.push(first.step().unwrap().unwrap().loss);
    }
    let ckpt = checkpoint::save(
        dir.path(),
        first.state().step,
        first.model(),
        first.optim(),
        first.state(),
        &fixture(),
    )
    .unwrap();
    drop(first);
    assert_eq!(checkpoint::latest(dir.path()).unwrap(), Some(ckpt.clone()));
    let reloaded = Model::load(&ckpt, &device).unwrap();
    let mut second = SftTrainer::new(settings(), reloaded, examples(), vec![], 0).unwrap();
    let state: SftState = checkpoint::restore(&ckpt, second.optim_mut()).unwrap();
    second.set_state(state);
    while let Some(m) = second.step().unwrap() {
        resumed.push(m.loss);
    }
    assert_eq!(straight.len(), resumed.len());
    for (i, (a, b)) in straight.iter().zip(&resumed).enumerate() {
        assert!((a - b).abs() < 1e-5, "step {i}: {a} vs {b}");
    }
    let worst = weights(full.model())
        .iter()
        .zip(&weights(second.model()))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "final weights differ by {worst}");
}

#[test]
fn without_optimizer_state_the_resume_diverges() {
    // The resume test above would pass by luck if AdamW state did not matter; show it does.
    let device = Device::flex().autodiff();
    let mut a = SftTrainer::new(settings(), model(&device), examples(), vec![], 0).unwrap();
    for _ in 0..2 {
        a.step().unwrap();
    }
    let mut b = SftTrainer::new(settings(), a.model().clone(), examples(), vec![], 0).unwrap();
    b.set_state(*a.state());
    let la = a.step().unwrap().unwrap().loss;
    let lb = b.step().unwrap().unwrap().loss;
    assert!(
        (la - lb).abs() < 1e-6,
        "same weights, same batch, same loss"
    );
    let worst = weights(a.model())
        .iter()
        .zip(&weights(b.model()))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst > 1e-5,
        "fresh AdamW moments should give a different update"
    );
}

#[test]
fn a_batch_of_padding_only_rows_is_rejected_cleanly() {
    let m = model(&Device::flex());
    let b = TokenBatch::pad(&[vec![1]], 0, reasonlab_model::PadSide::Right);
    assert!(masked_nll_sum(&m, &b, None).is_err());
}

fn lora_settings() -> SftSettings {
    SftSettings {
        lora: Some(reasonlab_model::LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..Default::default()
        }),
        optim: AdamWSettings {
            lr: 1e-2,
            ..Default::default()
        },
        ..settings()
    }
}

#[test]
fn lora_trains_only_the_adapters_and_saves_merged_weights() {
    let device = Device::flex().autodiff();
    let base = weights(&model(&device));
    let mut t = SftTrainer::new(lora_settings(), model(&device), examples(), vec![], 0).unwrap();
    let first = t.step().unwrap().unwrap().loss;
    let mut last = first;
    while let Some(m) = t.step().unwrap() {
        last = m.loss;
    }
    assert!(
        last < first,
        "LoRA SFT should lower the loss: {first} → {last}"
    );
    // Base weights (what visit_named sees, un-merged) did not move.
    assert_eq!(weights(t.model()), base);
    // The saved checkpoint is the merged model: same log-probs as the adapted one.
    let dir = tempfile::tempdir().unwrap();
    t.model()
        .clone()
        .save(dir.path(), reasonlab_model::SaveDtype::F32)
        .unwrap();
    assert!(dir.path().join("adapter_model.safetensors").exists());
    let cpu = Device::flex();
    let ex = examples();
    let lb = batch_rows(&[vec![&ex[0]]], 0);
    let lp = |m: &Model| -> Vec<f32> {
        m.token_logprobs(&lb.batch)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap()
    };
    let adapted = lp(&t.model().clone().to_device(&cpu));
    let merged = lp(&Model::load(dir.path(), &cpu).unwrap());
    let reattached = lp(&model(&cpu).load_adapter(dir.path()).unwrap());
    let original = lp(&model(&cpu));
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        diff(&adapted, &merged) < 1e-4,
        "{}",
        diff(&adapted, &merged)
    );
    assert!(diff(&adapted, &reattached) < 1e-5);
    assert!(diff(&adapted, &original) > 1e-3, "training changed nothing");
}

#[test]
fn lora_resume_continues_exactly() {
    let device = Device::flex().autodiff();
    let dir = tempfile::tempdir().unwrap();
    let mut full = SftTrainer::new(lora_settings(), model(&device), examples(), vec![], 0).unwrap();
    let mut straight = Vec::new();
    while let Some(m) = full.step().unwrap() {
        straight.push(m.loss);
    }
    let mut first =
        SftTrainer::new(lora_settings(), model(&device), examples(), vec![], 0).unwrap();
    let mut resumed = Vec::new();
    for _ in 0..3 {
        resumed.push(first.step().unwrap().unwrap().loss);
    }
    let ckpt = checkpoint::save(
        dir.path(),
        first.state().step,
        first.model(),
        first.optim(),
        first.state(),
        &fixture(),
    )
    .unwrap();
    drop(first);
    let reloaded = checkpoint::load_model(&ckpt, &fixture(), &device).unwrap();
    assert!(reloaded.lora().is_some());
    let mut second = SftTrainer::new(lora_settings(), reloaded, examples(), vec![], 0).unwrap();
    let state: SftState = checkpoint::restore(&ckpt, second.optim_mut()).unwrap();
    second.set_state(state);
    while let Some(m) = second.step().unwrap() {
        resumed.push(m.loss);
    }
    assert_eq!(straight.len(), resumed.len());
    for (i, (a, b)) in straight.iter().zip(&resumed).enumerate() {
        assert!((a - b).abs() < 1e-5, "step {i}: {a} vs {b}");
    }
}
