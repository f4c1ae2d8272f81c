//! The local [`Engine`]: a model and its tokenizer behind the generation protocol.
//!
//! Requests with equal settings (all but the seed) decode together in one batch; sample `j` of
//! a request uses seed `seed + j`, so an answer does not depend on its batch. Streaming sends
//! text deltas as tokens are decoded, holding back as many bytes as the longest stop string
//! (one may be forming) and an incomplete UTF-8 character.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use reasonlab_core::engine::{
    Engine, EngineError, ModelInfo, Output, Prompt, Request, Role, Sample, Sampling, TokenLogprob,
    WeightUpdate, model_dir_hash,
};
use reasonlab_model::{BackendKind, DeviceInfo, Model, ModelError, Precision, open_inference};
use reasonlab_tokenize::{TokenizeError, Tokenizer};

use crate::{Batching, SamplingParams, SeqRng, generate_streaming};

/// Why a model directory could not become an engine.
#[derive(Debug, thiserror::Error)]
pub enum LocalEngineError {
    #[error("loading model {path}: {source}")]
    Model {
        path: std::path::PathBuf,
        source: ModelError,
    },
    #[error("loading the tokenizer of {path}: {source}")]
    Tokenizer {
        path: std::path::PathBuf,
        source: TokenizeError,
    },
    #[error("{0} has no tokenizer.json")]
    NoTokenizer(std::path::PathBuf),
    #[error("engine batching: {0}")]
    Batching(String),
    #[error("hashing {path}: {source}")]
    Hash {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A local model serving the generation protocol.
pub struct LocalEngine {
    /// The weights served and their version ([`Engine::update_weights`] swaps both between
    /// batches).
    model: Mutex<(Model, u64)>,
    tokenizer: Tokenizer,
    info: ModelInfo,
    /// Where the model runs (`None` for a model handed to [`LocalEngine::new`]).
    device: Option<DeviceInfo>,
    /// What one decode takes at most, whatever the requests ask.
    batching: Batching,
    /// The weights' float type, which new weights ([`Engine::update_weights`]) take too.
    precision: Precision,
}

/// The type `model`'s forward passes run in: its weights', or its mixed-precision compute type.
fn weights_precision(model: &Model) -> Precision {
    Precision::of(model.cache_dtype()).unwrap_or_default()
}

impl LocalEngine {
    /// An engine over a loaded model; `info` names it.
    pub fn new(model: Model, tokenizer: Tokenizer, info: ModelInfo) -> Self {
        let precision = weights_precision(&model);
        Self {
            model: Mutex::new((model, 0)),
            tokenizer,
            info,
            device: None,
            batching: Batching::default(),
            precision,
        }
    }

    /// The engine decoding at most `batching`'s sequences at once and prefilling at most its
    /// tokens per pass; an error where either is 0.
    pub fn with_batching(mut self, batching: Batching) -> Result<Self, LocalEngineError> {
        if let Some(m) = batching.invalid() {
            return Err(LocalEngineError::Batching(m.into()));
        }
        self.batching = batching;
        Ok(self)
    }

    /// How the engine batches.
    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// Load `dir` (HF layout: weights and tokenizer) on `backend`; the model is named after
    /// the directory and hashed by its files.
    pub fn load(dir: &Path, backend: BackendKind) -> Result<Self, LocalEngineError> {
        Self::load_in(dir, backend, Precision::F32)
    }

    /// [`LocalEngine::load`] with the weights and activations in `precision` (GPU backends;
    /// see [`reasonlab_model::open_inference`]).
    pub fn load_in(
        dir: &Path,
        backend: BackendKind,
        precision: Precision,
    ) -> Result<Self, LocalEngineError> {
        let (device, device_info) =
            open_inference(backend, precision).map_err(|source| LocalEngineError::Model {
                path: dir.into(),
                source,
            })?;
        let model = Model::load_as(dir, &device, precision)
            .map_err(|source| LocalEngineError::Model {
                path: dir.into(),
                source,
            })?
            .pack_projections();
        if !dir.join("tokenizer.json").exists() {
            return Err(LocalEngineError::NoTokenizer(dir.into()));
        }
        let tokenizer = Tokenizer::from_dir(dir).map_err(|source| LocalEngineError::Tokenizer {
            path: dir.into(),
            source,
        })?;
        let info = ModelInfo {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            // A model in bf16 or f16 samples differently from the same files in f32: runs
            // that key completions by the model's hash (eval, sample) keep them apart.
            hash: model_dir_hash(dir)
                .map(|h| match precision {
                    Precision::F32 => h,
                    p => format!("{h}-{p}"),
                })
                .map_err(|source| LocalEngineError::Hash {
                    path: dir.into(),
                    source,
                })?,
            location: dir.display().to_string(),
        };
        let mut engine = Self::new(model, tokenizer, info);
        engine.device = Some(device_info);
        Ok(engine)
    }

    /// The device the model runs on, when the engine loaded it.
    pub fn device(&self) -> Option<&DeviceInfo> {
        self.device.as_ref()
    }

    /// Rename the model (the id a server announces and checks).
    pub fn with_name(mut self, name: &str) -> Self {
        self.info.name = name.to_string();
        self
    }

    /// The prompt's token ids: text as is (with the tokenizer's special tokens), messages
    /// through the chat template with the generation prompt. Messages ending with an assistant
    /// message continue it: the earlier messages with the generation prompt, then that
    /// message's text, with no end of turn (vLLM's `continue_final_message`).
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, TokenizeError> {
        match prompt {
            Prompt::Text(t) => self.tokenizer.encode(t, true),
            Prompt::Messages(m) => match m.split_last() {
                Some((last, head)) if last.role == Role::Assistant => {
                    let text = self.tokenizer.render_chat(head, true)? + &last.content;
                    self.tokenizer.encode(&text, false)
                }
                _ => self.tokenizer.encode_chat(m, true),
            },
        }
    }

    /// The request's prompt ids, or why it cannot be served.
    fn check(&self, model: &Model, r: &Request) -> Result<Vec<u32>, String> {
        let ids = self.encode(&r.prompt).map_err(|e| e.to_string())?;
        if ids.is_empty() {
            return Err("the prompt encodes to no tokens".to_string());
        }
        let max = model.config.max_position_embeddings;
        if ids.len() + r.sampling.max_new_tokens > max {
            return Err(format!(
                "the prompt has {} tokens; with max_tokens = {} that is more than the model's context of {max}",
                ids.len(),
                r.sampling.max_new_tokens
            ));
        }
        model
            .check_input(&ids, ids.len())
            .map_err(|e| e.to_string())?;
        Ok(ids)
    }
}

impl Engine for LocalEngine {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate_streaming(
        &self,
        requests: &[Request],
        on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        let loaded = match self.model.lock() {
            Ok(m) => m,
            Err(e) => {
                return requests
                    .iter()
                    .map(|_| Err(EngineError::Internal(e.to_string())))
                    .collect();
            }
        };
        let (model, version) = (&loaded.0, loaded.1);
        let mut out: Vec<Result<Output, EngineError>> = Vec::with_capacity(requests.len());
        let mut prompts: Vec<Vec<u32>> = Vec::with_capacity(requests.len());
        for r in requests {
            match self.check(model, r) {
                Ok(ids) => {
                    out.push(Ok(Output {
                        prompt_tokens: ids.len(),
                        samples: Vec::with_capacity(r.n),
                    }));
                    prompts.push(ids);
                }
                Err(m) => {
                    out.push(Err(EngineError::Invalid(m)));
                    prompts.push(Vec::new());
                }
            }
        }
        // Valid requests grouped by everything but the seed.
        type Key = (Sampling, usize, bool);
        let mut groups: Vec<(Key, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if out[i].is_err() {
                continue;
            }
            let key = (
                Sampling {
                    seed: 0,
                    ..r.sampling.clone()
                },
                r.n,
                r.logprobs,
            );
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some(g) => g.1.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for ((settings, n, logprobs), members) in groups {
            let group_prompts: Vec<Vec<u32>> =
                members.iter().map(|&i| prompts[i].clone()).collect();
            let params = SamplingParams {
                logprobs,
                ..SamplingParams::from_sampling(
                    &settings,
                    self.tokenizer.eos_id().into_iter().collect(),
                    self.batching,
                )
            };
            let seeds: Vec<u64> = members.iter().map(|&i| requests[i].sampling.seed).collect();
            let rng_for = |p: usize, s: usize| SeqRng::new(seeds[p].wrapping_add(s as u64), 0, 0);
            // Text deltas: decode the sample so far, send what is new, but hold back the last
            // `hold` bytes (a stop string may be forming) and an incomplete UTF-8 character.
            let hold = settings.stop.iter().map(String::len).max().unwrap_or(0);
            let mut sent: HashMap<(usize, usize), (Vec<u32>, usize)> = HashMap::new();
            let tokenizer = &self.tokenizer;
            let mut on_token = |p: usize, j: usize, token: u32| {
                let entry = sent.entry((p, j)).or_default();
                entry.0.push(token);
                let Ok(text) = tokenizer.decode(&entry.0, true) else {
                    return;
                };
                let text = text.trim_end_matches('\u{fffd}');
                let mut upto = text.len().saturating_sub(hold);
                while !text.is_char_boundary(upto) {
                    upto -= 1;
                }
                if upto > entry.1 {
                    on_delta(members[p], j, &text[entry.1..upto]);
                    entry.1 = upto;
                }
            };
            match generate_streaming(
                model,
                Some(&self.tokenizer),
                &group_prompts,
                n,
                &params,
                &rng_for,
                &mut |_| {},
                &mut on_token,
            ) {
                Ok((done, _)) => {
                    for c in done {
                        let logprobs = c.logprobs.as_ref().map(|lp| {
                            c.token_ids
                                .iter()
                                .zip(lp)
                                .map(|(&id, &logprob)| TokenLogprob {
                                    token: self.tokenizer.decode(&[id], false).unwrap_or_default(),
                                    logprob,
                                })
                                .collect()
                        });
                        if let Ok(o) = &mut out[members[c.prompt_index]] {
                            o.samples.push(Sample {
                                text: c.text,
                                finish_reason: c.finish_reason,
                                completion_tokens: c.token_ids.len(),
                                logprobs,
                                token_ids: Some(c.token_ids),
                                policy_version: Some(version),
                            });
                        }
                    }
                }
                Err(e) => {
                    for &i in &members {
                        out[i] = Err(EngineError::Internal(e.to_string()));
                    }
                }
            }
        }
        out
    }

    /// A full checkpoint replaces the weights; an adapter is attached to the base model this
    /// engine was loaded from (read again from its directory) and merged. The swap waits for
    /// the batch being decoded, so no sample mixes two versions.
    fn update_weights(&self, update: &WeightUpdate, version: u64) -> Result<(), EngineError> {
        let device = {
            let loaded = self
                .model
                .lock()
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            loaded.0.device().clone()
        };
        let failed = |what: &Path, e: ModelError| {
            EngineError::Invalid(format!("loading {}: {e}", what.display()))
        };
        let model = match update {
            WeightUpdate::Full { dir } => {
                Model::load_as(dir, &device, self.precision).map_err(|e| failed(dir, e))?
            }
            WeightUpdate::Lora { dir, .. } => {
                let base = Path::new(&self.info.location);
                if !base.join("config.json").exists() {
                    return Err(EngineError::Invalid(format!(
                        "an adapter needs the base model's directory; this engine's weights \
                         did not come from one ({})",
                        self.info.location
                    )));
                }
                Model::load_as(base, &device, self.precision)
                    .map_err(|e| failed(base, e))?
                    .load_adapter(dir)
                    .map_err(|e| failed(dir, e))?
                    .merge_lora()
            }
        }
        .pack_projections();
        let mut loaded = self
            .model
            .lock()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if model.config.vocab_size != loaded.0.config.vocab_size {
            return Err(EngineError::Invalid(format!(
                "the new weights have a vocabulary of {}, the served model {}",
                model.config.vocab_size, loaded.0.config.vocab_size
            )));
        }
        *loaded = (model, version);
        Ok(())
    }
}
