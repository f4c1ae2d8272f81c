//! Batched sampling with a KV cache.
//!
//! Many prompts × `n` samples per prompt decode together. Each distinct prompt is prefilled
//! once and its cache rows are copied to its `n` samples; prompts of different lengths are
//! left-padded and the padding is masked out of attention; a sequence that finishes (stop id,
//! stop string, or `max_new_tokens`) is dropped from the batch, so it stops costing compute.
//!
//! Sampling follows the host's rules: temperature, then top-k, top-p (nucleus, Holtzman et
//! al. 2020) and min-p filters, then a draw from a per-sequence generator seeded by
//! `(seed, prompt index, sample index)` — the same seed gives the same output whatever the
//! batch composition. Temperature 0 is greedy. On a GPU backend, greedy steps and unfiltered
//! draws pick on the device with the same uniforms (see `pick`), so a decode step reads back
//! one id per sequence instead of a row of logits (for 128 sequences at Qwen2.5's 151,936-token
//! vocabulary, 78 MB of f32 per step).

#![forbid(unsafe_code)]

mod engine;
mod pick;
mod sampler;

use std::cell::Cell;

use pick::{Next, Pick, collect, pick_on_device, read_step, row_index};
pub use reasonlab_model::fused::DecodeOverlap;
use std::time::Instant;

use reasonlab_model::tensor::Tensor;
use reasonlab_model::{KvCache, Model, ModelError, PadSide, TokenBatch};
use reasonlab_tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

pub use engine::{LocalEngine, LocalEngineError};
pub use sampler::{Sampler, SeqRng};

pub use reasonlab_core::engine::FinishReason;

/// Sampling settings (vLLM / OpenAI names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass kept; 1 disables.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Drop tokens below `min_p × p_max`; 0 disables.
    pub min_p: f32,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Token ids that end a sequence (kept in the output ids, not in the text).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end a sequence; the text is cut before the stop string.
    pub stop: Vec<String>,
    /// Also return `log p(token)` of each sampled token under the unmodified model distribution.
    pub logprobs: bool,
    /// Most sequences decoded at once.
    pub max_batch: usize,
    /// Most prompt tokens, all rows together, one prefill pass takes: longer prompts go
    /// through the KV cache in stretches of `prefill_tokens / prompts` columns, which bounds a
    /// pass's activations (its (tokens, intermediate) MLP block above all) whatever the
    /// prompts' length (vLLM's chunked prefill). A pass takes at least one column, so more
    /// prompts than this take one column per pass.
    pub prefill_tokens: usize,
    /// Whether a GPU backend queues each decode step before reading the previous one's tokens
    /// (the same tokens either way); `REASONLAB_GPU_DECODE_OVERLAP` by default. Not part of
    /// what a run records.
    #[serde(skip, default = "DecodeOverlap::current")]
    pub overlap: DecodeOverlap,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            seed: 0,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
            logprobs: false,
            max_batch: 64,
            prefill_tokens: PREFILL_TOKENS,
            overlap: DecodeOverlap::current(),
        }
    }
}

/// The default [`SamplingParams::prefill_tokens`]: at Qwen2.5-7B's intermediate size, the
/// pass's MLP block is 310 MB in bf16.
pub const PREFILL_TOKENS: usize = 8192;

/// How much a local model decodes at once: an engine's setting (`[engine] batching = { … }`,
/// `--max-batch`, `--prefill-tokens`) that every request it serves shares, where
/// [`SamplingParams`] is one call's. A GPU with memory to spare decodes more rows per step
/// (vLLM's `max_num_seqs`, 256 by default there) and prefills more tokens per pass
/// (`max_num_batched_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Batching {
    /// Most sequences decoded at once ([`SamplingParams::max_batch`]).
    pub max_batch: usize,
    /// Most prompt tokens one prefill pass takes ([`SamplingParams::prefill_tokens`]).
    pub prefill_tokens: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch: 64,
            prefill_tokens: PREFILL_TOKENS,
        }
    }
}

impl Batching {
    /// Both limits at least 1.
    pub fn validate(&self) -> Result<(), GenerateError> {
        match self.invalid() {
            Some(m) => Err(GenerateError::Params(m.into())),
            None => Ok(()),
        }
    }

    /// What is wrong with the limits, if anything: a limit of 0.
    pub fn invalid(&self) -> Option<&'static str> {
        match (self.max_batch, self.prefill_tokens) {
            (0, _) => Some("max_batch must be ≥ 1"),
            (_, 0) => Some("prefill_tokens must be ≥ 1"),
            _ => None,
        }
    }
}

/// One finished sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// New token ids (a final stop token included).
    pub token_ids: Vec<u32>,
    /// Decoded text (special tokens skipped, cut at a stop string); empty without a tokenizer.
    pub text: String,
    pub finish_reason: FinishReason,
    /// `log p` of each token in `token_ids`, when asked for.
    pub logprobs: Option<Vec<f32>>,
}

/// Throughput of one `generate` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GenStats {
    pub new_tokens: usize,
    pub prompt_tokens: usize,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("prompt {index} is empty")]
    EmptyPrompt { index: usize },
    #[error(
        "prompt {index} has {len} tokens; with max_new_tokens = {max_new} it needs {need} positions but the context is {max}"
    )]
    PromptTooLong {
        index: usize,
        len: usize,
        max_new: usize,
        need: usize,
        max: usize,
    },
    #[error("invalid sampling parameter: {0}")]
    Params(String),
    #[error("tensor read: {0}")]
    Backend(String),
}

impl SamplingParams {
    /// The kernel settings of a protocol [`reasonlab_core::engine::Sampling`]: its filters,
    /// budget, seed and stop strings, with the engine's own stop ids and batching.
    pub fn from_sampling(
        s: &reasonlab_core::engine::Sampling,
        stop_token_ids: Vec<u32>,
        batching: Batching,
    ) -> Self {
        Self {
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k.unwrap_or(0),
            min_p: s.min_p,
            max_new_tokens: s.max_new_tokens,
            seed: s.seed,
            stop_token_ids,
            stop: s.stop.clone(),
            logprobs: false,
            max_batch: batching.max_batch,
            prefill_tokens: batching.prefill_tokens,
            overlap: DecodeOverlap::current(),
        }
    }

    /// A draw at `temperature` through the top-k, top-p and min-p filters (0, 1 and 0 turn
    /// each off), the other settings at their defaults.
    pub fn draw(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> Self {
        Self {
            temperature,
            top_k,
            top_p,
            min_p,
            ..Default::default()
        }
    }

    /// The call's [`Batching`].
    pub fn batching(&self) -> Batching {
        Batching {
            max_batch: self.max_batch,
            prefill_tokens: self.prefill_tokens,
        }
    }

    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: &str| Err(GenerateError::Params(m.into()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        self.batching().validate()
    }
}

/// A sequence being decoded.
struct Active {
    prompt_index: usize,
    sample_index: usize,
    prompt_len: usize,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    rng: SeqRng,
}

/// Sample `n` completions for each prompt. `on_tokens(k)` is called as tokens are produced
/// (for progress bars). Completions come back ordered by (prompt, sample).
pub fn generate(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    n: usize,
    params: &SamplingParams,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<(Vec<Completion>, GenStats), GenerateError> {
    let seed = params.seed;
    generate_with_seeds(
        model,
        tokenizer,
        prompts,
        n,
        params,
        &|p, s| SeqRng::new(seed, p as u64, s as u64),
        on_tokens,
    )
}

/// Like [`generate`], with the random stream of (prompt index, sample index) chosen by the
/// caller — e.g. a seed per request when serving or evaluating, so a request's output does not
/// depend on what it was batched with.
pub fn generate_with_seeds(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    n: usize,
    params: &SamplingParams,
    rng_for: &(dyn Fn(usize, usize) -> SeqRng + Sync),
    on_tokens: &mut dyn FnMut(usize),
) -> Result<(Vec<Completion>, GenStats), GenerateError> {
    generate_streaming(
        model,
        tokenizer,
        prompts,
        n,
        params,
        rng_for,
        on_tokens,
        &mut |_, _, _| {},
    )
}

/// Like [`generate_with_seeds`], also calling `on_token(prompt_index, sample_index, token_id)`
/// for every sampled token as it is decoded (for streaming servers).
///
/// On flex, with several prompts and several rayon threads, the prompts of a model that fits
/// in cache are split into contiguous groups decoded concurrently, one per core (a small
/// model's decode step is too small to split well); a larger model decodes them as one group
/// whose matmuls are split over the cores ([`ONE_GROUP_BYTES`]). On a GPU backend they are one
/// group. Outputs do not change — every sequence has its own random stream — and the callbacks
/// still run on the calling thread, fed by a channel.
#[allow(clippy::too_many_arguments)]
pub fn generate_streaming(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    n: usize,
    params: &SamplingParams,
    rng_for: &(dyn Fn(usize, usize) -> SeqRng + Sync),
    on_tokens: &mut dyn FnMut(usize),
    on_token: &mut dyn FnMut(usize, usize, u32),
) -> Result<(Vec<Completion>, GenStats), GenerateError> {
    validate(model, prompts, params)?;
    let workers = decode_groups(
        reasonlab_model::data_parallel_workers(model.device()),
        prompts.len(),
        model.num_params().saturating_mul(4),
    );
    if workers <= 1 || n == 0 {
        return generate_serial(
            model, tokenizer, prompts, n, params, rng_for, on_tokens, on_token,
        );
    }
    /// Some decode steps of one worker: their token count and each (prompt, sample, token).
    /// One message per [`FLUSH_EVERY`], not per token or step: every message may wake the
    /// calling thread, which then takes a core from a worker.
    struct Step(usize, Vec<(usize, usize, u32)>);
    let start = Instant::now();
    let groups: Vec<std::ops::Range<usize>> = (0..workers)
        .map(|g| g * prompts.len() / workers..(g + 1) * prompts.len() / workers)
        .filter(|r| !r.is_empty())
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<Step>();
    let results = std::thread::scope(|s| {
        let handle = s.spawn(move || {
            use rayon::prelude::*;
            groups
                .par_iter()
                .map(|g| {
                    let tx = tx.clone();
                    let at = g.start;
                    let pending = std::cell::RefCell::new(Vec::new());
                    let (count, sent) = (Cell::new(0), Cell::new(Instant::now()));
                    let flush = || {
                        if count.get() > 0 || !pending.borrow().is_empty() {
                            let _ = tx.send(Step(count.take(), pending.take()));
                        }
                        sent.set(Instant::now());
                    };
                    let result = generate_serial(
                        model,
                        tokenizer,
                        &prompts[g.clone()],
                        n,
                        params,
                        &|p, j| rng_for(p + at, j),
                        // Called once per step, after that step's tokens.
                        &mut |k| {
                            count.set(count.get() + k);
                            if sent.get().elapsed() >= FLUSH_EVERY {
                                flush();
                            }
                        },
                        &mut |p, j, t| pending.borrow_mut().push((p + at, j, t)),
                    );
                    flush();
                    result.map(|(mut done, stats)| {
                        for c in &mut done {
                            c.prompt_index += at;
                        }
                        (done, stats)
                    })
                })
                .collect::<Vec<_>>()
        });
        // Every sender is dropped when the workers finish, which ends this loop.
        for Step(k, tokens) in rx {
            for (p, j, t) in tokens {
                on_token(p, j, t);
            }
            on_tokens(k);
        }
        handle.join()
    })
    .map_err(|_| {
        GenerateError::Model(ModelError::Backend("a generation worker panicked".into()))
    })?;
    let mut out = Vec::with_capacity(prompts.len() * n);
    let mut stats = GenStats::default();
    for r in results {
        let (done, st) = r?;
        stats.new_tokens += st.new_tokens;
        stats.prompt_tokens += st.prompt_tokens;
        out.extend(done);
    }
    stats.seconds = start.elapsed().as_secs_f64();
    Ok((out, stats))
}

/// f32 weight bytes above which a model decodes all its prompts as one group, every matmul's
/// columns split over the cores, rather than one group per core: weights this large stream
/// from DRAM, and a group per core would read every weight once per group and step, doubling
/// the traffic that bounds the step. Qwen2.5-1.5B (6.2 GB): 34.1 s → 20.6 s for three greedy
/// prompts × 48 tokens. The `bench generate` model (12.6 MB) stays in cache, where a group per
/// core is faster: splitting each of its small matmuls costs more than it saves.
const ONE_GROUP_BYTES: usize = 256 << 20;

/// Groups of prompts decoded concurrently: one per core, or one for a model of more than
/// [`ONE_GROUP_BYTES`] (outputs are the same either way).
fn decode_groups(threads: usize, prompts: usize, weight_bytes: usize) -> usize {
    if weight_bytes > ONE_GROUP_BYTES {
        1
    } else {
        threads.min(prompts)
    }
}

/// New positions per row the KV cache is allocated with before decoding.
const RESERVE_NEW: usize = 256;

/// How often a generation worker hands its new tokens to the calling thread (a streaming
/// client sees them at most this late).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Empty prompts and prompts too long for the context are errors naming the prompt.
fn validate(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<(), GenerateError> {
    params.validate()?;
    let max = model.config.max_position_embeddings;
    for (index, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(GenerateError::EmptyPrompt { index });
        }
        if p.len() + params.max_new_tokens > max {
            return Err(GenerateError::PromptTooLong {
                index,
                len: p.len(),
                max_new: params.max_new_tokens,
                need: p.len() + params.max_new_tokens,
                max,
            });
        }
        model.check_input(p, p.len())?;
    }
    Ok(())
}

/// [`generate_streaming`] on the calling thread, for validated prompts.
#[allow(clippy::too_many_arguments)]
fn generate_serial(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    n: usize,
    params: &SamplingParams,
    rng_for: &(dyn Fn(usize, usize) -> SeqRng + Sync),
    on_tokens: &mut dyn FnMut(usize),
    on_token: &mut dyn FnMut(usize, usize, u32),
) -> Result<(Vec<Completion>, GenStats), GenerateError> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(prompts.len() * n);
    let mut stats = GenStats::default();
    let per_chunk = prompts_per_batch(model, prompts, n, params)?;
    for chunk_start in (0..prompts.len()).step_by(per_chunk) {
        let chunk_end = (chunk_start + per_chunk).min(prompts.len());
        let done = generate_chunk(
            model,
            tokenizer,
            &prompts[chunk_start..chunk_end],
            chunk_start,
            n,
            params,
            rng_for,
            on_tokens,
            on_token,
        )?;
        for c in &done {
            stats.new_tokens += c.token_ids.len();
        }
        out.extend(done);
    }
    stats.prompt_tokens = prompts.iter().map(Vec::len).sum::<usize>() * n;
    stats.seconds = start.elapsed().as_secs_f64();
    out.sort_by_key(|c| (c.prompt_index, c.sample_index));
    Ok((out, stats))
}

/// Prompts per batch: whole prompts, so a prompt's samples share one prefill; `max_batch`
/// rows' worth, or fewer where one layer's KV-cache buffer for that many rows of the longest
/// prompt and `max_new_tokens`, or their last logits (rows, vocab), would pass the device's
/// largest buffer ([`reasonlab_model::max_buffer_bytes`]). An error where one prompt's
/// samples pass it.
pub fn prompts_per_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    n: usize,
    params: &SamplingParams,
) -> Result<usize, GenerateError> {
    let per_batch = (params.max_batch / n.max(1)).max(1);
    if n == 0 || prompts.is_empty() {
        return Ok(per_batch); // nothing to decode
    }
    let Some(limit) = reasonlab_model::max_buffer_bytes(model.device()) else {
        return Ok(per_batch);
    };
    let positions = prompts
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .saturating_add(params.max_new_tokens);
    // A prompt's share of the larger of its two buffers: one layer's KV cache, or the logits.
    let kv = model.kv_buffer_bytes(n, positions);
    let logits = model.logits_buffer_bytes(n);
    let (one, what, dtype, hint) = match logits > kv {
        true => (
            logits,
            format!("the last logits of {n} sample(s)"),
            "f32".to_string(),
            "; fewer samples per prompt",
        ),
        false => (
            kv,
            format!("one layer's KV cache for {n} sample(s) of {positions} positions"),
            format!("{:?}", model.cache_dtype()).to_lowercase(),
            "; fewer samples per prompt or fewer new tokens",
        ),
    };
    if one == 0 {
        return Ok(per_batch);
    }
    if one > limit {
        return Err(ModelError::PastDeviceBuffer {
            what,
            bytes: one,
            dtype,
            limit,
            hint: hint.into(),
        }
        .into());
    }
    let fit = usize::try_from(limit / one).unwrap_or(usize::MAX);
    if fit < per_batch {
        tracing::info!(
            "{fit} prompt(s) of {n} sample(s) per batch rather than {per_batch}: {what} takes \
             {one} bytes, and more would pass the device's largest buffer ({limit} bytes)"
        );
    }
    Ok(per_batch.min(fit))
}

/// The prompts' last logits (b, vocab), `batch` taken into `cache` `max(1, tokens / b)`
/// columns at a time.
fn prefill_through(
    model: &Model,
    batch: &TokenBatch,
    cache: &mut KvCache,
    tokens: usize,
) -> Result<Tensor<2>, GenerateError> {
    let columns = (tokens / batch.b.max(1)).max(1);
    if columns >= batch.t {
        return Ok(model.last_logits(batch, Some(cache))?);
    }
    let mut start = 0;
    loop {
        let end = (start + columns).min(batch.t);
        let logits = model.last_logits(&batch.columns(start, end), Some(cache))?;
        if end == batch.t {
            return Ok(logits);
        }
        start = end;
    }
}

// Private helper: the arguments are the caller's, passed through unchanged.
#[allow(clippy::too_many_arguments)]
fn generate_chunk(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    offset: usize,
    n: usize,
    params: &SamplingParams,
    rng_for: &(dyn Fn(usize, usize) -> SeqRng + Sync),
    on_tokens: &mut dyn FnMut(usize),
    on_token: &mut dyn FnMut(usize, usize, u32),
) -> Result<Vec<Completion>, GenerateError> {
    if n == 0 || prompts.is_empty() {
        return Ok(Vec::new());
    }
    let pad = tokenizer.map(Tokenizer::pad_id).unwrap_or(0);
    let prefill = TokenBatch::pad(prompts, pad, PadSide::Left);
    let mut cache = KvCache::default();
    // Room for the prompt and up to RESERVE_NEW new tokens from the start (no regrowth copies);
    // longer generations grow it by doubling, so a large `max_new_tokens` that the sequences
    // never reach does not allocate its worst case, and the doubling stops at what the rows
    // can reach.
    cache.reserve(prefill.t + params.max_new_tokens.min(RESERVE_NEW));
    cache.limit(prefill.t + params.max_new_tokens);
    let logits = prefill_through(model, &prefill, &mut cache, params.prefill_tokens)?; // (prompts, vocab)
    // Row i*n + j of the decode batch is sample j of prompt i.
    let rows: Vec<usize> = (0..prompts.len())
        .flat_map(|i| std::iter::repeat_n(i, n))
        .collect();
    cache.select_rows(&rows);
    let mut active: Vec<Active> = rows
        .iter()
        .enumerate()
        .map(|(k, &r)| Active {
            prompt_index: offset + r,
            sample_index: k % n,
            prompt_len: prompts[r].len(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            rng: rng_for(offset + r, k % n),
        })
        .collect();
    let vocab = model.config.vocab_size;
    let mut taker = Taker {
        sampler: Sampler::new(params),
        params,
        tokenizer,
        vocab,
        on_tokens,
        on_token,
        finished: Vec::new(),
    };
    let pick = Pick::for_params(params, model.device());
    if pick != Pick::Host
        && params.overlap == DecodeOverlap::Ahead
        && reasonlab_model::fused::reads_ahead(model.device())
    {
        let logits = match n {
            1 => logits,
            _ => select_rows(logits, &rows),
        };
        return decode_ahead(model, logits, active, cache, pick, taker);
    }
    let mut next = if pick.needs_uniforms() {
        // Each sample draws with its own uniform: copy each prompt's logits to its samples
        // (with one sample per prompt, the rows are the prompts already).
        let logits = match n {
            1 => logits,
            _ => select_rows(logits, &rows),
        };
        let uniforms = uniforms(&mut active);
        read_step(logits, pick, params.logprobs, &uniforms)?
    } else {
        match read_step(logits, pick, params.logprobs, &[])? {
            Next::Logits(prompt_logits) => Next::Logits(
                rows.iter()
                    .flat_map(|&r| prompt_logits[r * vocab..(r + 1) * vocab].iter().copied())
                    .collect(),
            ),
            Next::Picked { ids, logps } => Next::Picked {
                ids: rows.iter().map(|&r| ids[r]).collect(),
                logps: match logps.is_empty() {
                    true => Vec::new(),
                    false => rows.iter().map(|&r| logps[r]).collect(),
                },
            },
        }
    };
    loop {
        let keep = taker.take(&mut active, &mut next);
        if active.is_empty() {
            break;
        }
        cache.select_rows(&keep);
        let b = active.len();
        let step = TokenBatch {
            ids: active
                .iter()
                .map(|a| *a.tokens.last().expect("a token"))
                .collect(),
            positions: active.iter().map(|a| a.position()).collect(),
            padding: vec![false; b],
            b,
            t: 1,
        };
        let logits = model.last_logits(&step, Some(&mut cache))?;
        let uniforms = match pick.needs_uniforms() {
            true => uniforms(&mut active),
            false => Vec::new(),
        };
        next = read_step(logits, pick, params.logprobs, &uniforms)?;
    }
    Ok(taker.finished)
}

impl Active {
    /// The position of the sequence's last token, which the next step feeds.
    fn position(&self) -> u32 {
        (self.prompt_len + self.tokens.len() - 1) as u32
    }
}

/// Rows `rows` of `logits` (in that order), on the device.
fn select_rows(logits: Tensor<2>, rows: &[usize]) -> Tensor<2> {
    let idx = row_index(rows, &logits.device());
    logits.select(0, idx)
}

/// What takes each step's tokens into the sequences: the sampling settings, the callbacks, and
/// the completions finished so far.
struct Taker<'a> {
    sampler: Sampler,
    params: &'a SamplingParams,
    tokenizer: Option<&'a Tokenizer>,
    vocab: usize,
    on_tokens: &'a mut dyn FnMut(usize),
    on_token: &'a mut dyn FnMut(usize, usize, u32),
    finished: Vec<Completion>,
}

impl Taker<'_> {
    /// One token for every row of `active` from `next` (drawn on the host from its logits, or
    /// as the device picked it): each row takes it, reports it, and ends at a stop or at its
    /// length (into `finished`). The rows that go on stay in `active`; returns their indices
    /// before.
    fn take(&mut self, active: &mut Vec<Active>, next: &mut Next) -> Vec<usize> {
        let (params, vocab) = (self.params, self.vocab);
        let rows = active.len();
        let mut keep = Vec::with_capacity(rows);
        let mut still = Vec::with_capacity(rows);
        for (row, mut seq) in std::mem::take(active).into_iter().enumerate() {
            let (token, logp) = match next {
                Next::Logits(logits) => {
                    let logits = &mut logits[row * vocab..(row + 1) * vocab];
                    self.sampler.sample(logits, &mut seq.rng)
                }
                Next::Picked { ids, logps } => (ids[row], logps.get(row).copied().unwrap_or(0.0)),
            };
            seq.tokens.push(token);
            (self.on_token)(seq.prompt_index, seq.sample_index, token);
            if params.logprobs {
                seq.logprobs.push(logp);
            }
            let (stop, text) = check_stop(&seq.tokens, params, self.tokenizer);
            let at_length = seq.tokens.len() >= params.max_new_tokens;
            if stop || at_length {
                self.finished.push(Completion {
                    prompt_index: seq.prompt_index,
                    sample_index: seq.sample_index,
                    text: text.unwrap_or_else(|| decode(self.tokenizer, &seq.tokens)),
                    token_ids: std::mem::take(&mut seq.tokens),
                    finish_reason: if stop {
                        FinishReason::Stop
                    } else {
                        FinishReason::Length
                    },
                    logprobs: params.logprobs.then(|| std::mem::take(&mut seq.logprobs)),
                });
            } else {
                keep.push(row);
                still.push(seq);
            }
        }
        (self.on_tokens)(rows);
        *active = still;
        keep
    }
}

/// [`generate_chunk`]'s decode loop where the device picks the tokens and
/// [`DecodeOverlap::Ahead`]: each step's picks feed the next step on the device, which is
/// queued before the picks are read, so the device works on step t + 1 while the host reads
/// step t's tokens, checks stops and streams them. Rows that ended at step t were computed
/// once more in step t + 1, and are dropped from the batch once a quarter of it has ended;
/// their extra draw came from their own streams, so every other row draws what the serial
/// loop draws. `logits`: (rows, vocab), row k for `active[k]`.
fn decode_ahead(
    model: &Model,
    logits: Tensor<2>,
    mut active: Vec<Active>,
    mut cache: KvCache,
    pick: Pick,
    mut taker: Taker<'_>,
) -> Result<Vec<Completion>, GenerateError> {
    let params = taker.params;
    // Each running sequence's row in the device's batch. The rows of sequences that ended stay
    // in the batch until a quarter of it has (compacting copies every layer's whole KV cache):
    // they are computed and ignored.
    let mut rows: Vec<usize> = (0..active.len()).collect();
    // Each batch row's prompt length, whether its sequence runs or not.
    let mut prompt_lens: Vec<usize> = active.iter().map(|a| a.prompt_len).collect();
    // One uniform per batch row: each running sequence's next from its own stream.
    let draws = |active: &mut [Active], rows: &[usize], batch: usize| {
        let mut u = Vec::new();
        if pick.needs_uniforms() {
            u = vec![0.5; batch];
            for (a, &row) in active.iter_mut().zip(rows) {
                u[row] = a.rng.uniform();
            }
        }
        u
    };
    let uniforms = draws(&mut active, &rows, rows.len());
    let mut picked = pick_on_device(logits, pick, params.logprobs, &uniforms)?;
    loop {
        // This step's copies go into the device's queue before the next step's kernels.
        let read = picked.read_ahead();
        let batch = prompt_lens.len();
        // Every running sequence has made as many tokens: `made` with this step's.
        let made = active.first().map_or(0, |a| a.tokens.len()) + 1;
        let ahead = match made < params.max_new_tokens {
            true => {
                let positions: Vec<u32> = (prompt_lens.iter())
                    .map(|&p| (p + made - 1) as u32)
                    .collect();
                let logits = model.next_logits(picked.next_ids(), &positions, &mut cache)?;
                let uniforms = draws(&mut active, &rows, batch);
                Some(pick_on_device(logits, pick, params.logprobs, &uniforms)?)
            }
            // Every sequence ends at its length with this step's token.
            false => None,
        };
        let keep = taker.take(&mut active, &mut collect(read)?.rows(&rows));
        let Some(ahead) = ahead.filter(|_| !active.is_empty()) else {
            break;
        };
        rows = keep.iter().map(|&k| rows[k]).collect();
        picked = match (batch - rows.len()) * 4 >= batch {
            true => {
                cache.select_rows(&rows);
                prompt_lens = rows.iter().map(|&r| prompt_lens[r]).collect();
                let compacted = ahead.select(&rows);
                rows = (0..rows.len()).collect();
                compacted
            }
            false => ahead,
        };
    }
    Ok(taker.finished)
}

/// The next uniform of each active sequence's stream, in row order: the one the host's draw
/// would take for its next token.
fn uniforms(active: &mut [Active]) -> Vec<f64> {
    active.iter_mut().map(|a| a.rng.uniform()).collect()
}

fn decode(tokenizer: Option<&Tokenizer>, ids: &[u32]) -> String {
    tokenizer
        .and_then(|t| t.decode(ids, true).ok())
        .unwrap_or_default()
}

/// Whether the sequence just hit a stop id or stop string; with a stop string, the text cut
/// before it.
fn check_stop(
    tokens: &[u32],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
) -> (bool, Option<String>) {
    if let Some(last) = tokens.last()
        && params.stop_token_ids.contains(last)
    {
        return (true, None);
    }
    if params.stop.is_empty() {
        return (false, None);
    }
    let text = decode(tokenizer, tokens);
    for s in &params.stop {
        if !s.is_empty()
            && let Some(at) = text.find(s.as_str())
        {
            return (true, Some(text[..at].to_string()));
        }
    }
    (false, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group per core (at most one per prompt) for a model in cache, one group beyond
    /// [`ONE_GROUP_BYTES`]; `concurrent_prompt_groups_change_nothing` (tests/engine.rs) checks
    /// that the outputs are the same either way.
    #[test]
    fn large_models_decode_as_one_group() {
        let bench_model = 12_600_000;
        assert_eq!(decode_groups(2, 16, bench_model), 2);
        assert_eq!(decode_groups(8, 3, bench_model), 3);
        assert_eq!(decode_groups(2, 16, ONE_GROUP_BYTES), 2);
        assert_eq!(decode_groups(2, 16, ONE_GROUP_BYTES + 1), 1);
        assert_eq!(decode_groups(2, 3, 6_200_000_000), 1);
    }
}
