//! Loading a local model directory (weights + tokenizer) for the subcommands that run one.

use std::path::Path;

use anyhow::Context;
use reasonlab_model::{BackendKind, Model, device_for};
use reasonlab_tokenize::Tokenizer;

/// Load `DIR` on the chosen backend; the tokenizer is optional (some subcommands take ids).
pub fn load(dir: &Path, backend: BackendKind) -> anyhow::Result<(Model, Option<Tokenizer>)> {
    let device = device_for(backend, false)?;
    let model =
        Model::load(dir, &device).with_context(|| format!("loading model {}", dir.display()))?;
    let tokenizer = if dir.join("tokenizer.json").exists() {
        Some(
            Tokenizer::from_dir(dir)
                .with_context(|| format!("loading tokenizer {}", dir.display()))?,
        )
    } else {
        None
    };
    Ok((model, tokenizer))
}

/// The local engine behind the evaluation harness's [`reasonlab_eval::Generator`].
pub struct LocalGenerator {
    model: std::sync::Mutex<Model>,
    tokenizer: Tokenizer,
    info: reasonlab_eval::ModelInfo,
    max_batch: usize,
}

/// Load `dir` as an evaluation generator.
pub fn local_generator(dir: &Path) -> anyhow::Result<Box<dyn reasonlab_eval::Generator>> {
    Ok(Box::new(LocalGenerator::load(dir)?))
}

impl LocalGenerator {
    /// Load `dir` (weights and tokenizer) on the CPU backend.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (model, tokenizer) = load(dir, BackendKind::Flex)?;
        let tokenizer = tokenizer.context("the model directory has no tokenizer.json")?;
        let info = reasonlab_eval::ModelInfo {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            hash: reasonlab_eval::model_dir_hash(dir)?,
            location: dir.display().to_string(),
        };
        Ok(LocalGenerator {
            model: std::sync::Mutex::new(model),
            tokenizer,
            info,
            max_batch: 64,
        })
    }

    /// Rename the model (the id a server announces and checks).
    pub fn with_name(mut self, name: &str) -> Self {
        self.info.name = name.to_string();
        self
    }
}

fn eval_err(e: impl std::fmt::Display) -> reasonlab_eval::EvalError {
    reasonlab_eval::EvalError::Generator(e.to_string())
}

impl LocalGenerator {
    fn encode(&self, prompt: &reasonlab_eval::PromptInput) -> Result<Vec<u32>, String> {
        use reasonlab_eval::PromptInput;
        match prompt {
            PromptInput::Text(t) => self.tokenizer.encode(t, true),
            PromptInput::Messages(m) => {
                let msgs: Vec<reasonlab_tokenize::Message> = m
                    .iter()
                    .map(|m| {
                        serde_json::from_value(
                            serde_json::json!({"role": m.role, "content": m.content}),
                        )
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("bad message: {e}"))?;
                self.tokenizer.encode_chat(&msgs, true)
            }
        }
        .map_err(|e| e.to_string())
    }
}

impl reasonlab_serve::Engine for LocalGenerator {
    fn model_id(&self) -> String {
        self.info.name.clone()
    }

    /// Requests with equal settings (all but the seed) decode together; sample `j` of a
    /// request uses seed `seed + j`, so an answer does not depend on its batch.
    fn generate_streaming(
        &self,
        requests: &[reasonlab_serve::EngineRequest],
        on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<reasonlab_serve::EngineOutput, reasonlab_serve::EngineError>> {
        use reasonlab_eval::FinishReason as EvalFinish;
        use reasonlab_generate::{FinishReason, SamplingParams, SeqRng, generate_streaming};
        use reasonlab_serve::{EngineError, EngineOutput, EngineSample};
        let model = match self.model.lock() {
            Ok(m) => m,
            Err(e) => {
                return requests
                    .iter()
                    .map(|_| Err(EngineError::Internal(e.to_string())))
                    .collect();
            }
        };
        let max = model.config.max_position_embeddings;
        let mut out: Vec<Result<EngineOutput, EngineError>> = Vec::with_capacity(requests.len());
        let mut prompts: Vec<Vec<u32>> = Vec::with_capacity(requests.len());
        for r in requests {
            let checked = self.encode(&r.prompt).and_then(|ids| {
                if ids.is_empty() {
                    return Err("the prompt encodes to no tokens".to_string());
                }
                if ids.len() + r.sampling.max_new_tokens > max {
                    return Err(format!(
                        "the prompt has {} tokens; with max_tokens = {} that is more than the model's context of {max}",
                        ids.len(),
                        r.sampling.max_new_tokens
                    ));
                }
                model.check_input(&ids, ids.len()).map_err(|e| e.to_string())?;
                Ok(ids)
            });
            match checked {
                Ok(ids) => {
                    out.push(Ok(EngineOutput {
                        prompt_tokens: ids.len(),
                        samples: Vec::new(),
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
        type Key = (reasonlab_eval::SamplingSettings, usize, bool);
        let mut groups: Vec<(Key, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if out[i].is_err() {
                continue;
            }
            let key = (
                reasonlab_eval::SamplingSettings {
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
                temperature: settings.temperature,
                top_p: settings.top_p,
                top_k: settings.top_k.unwrap_or(0),
                max_new_tokens: settings.max_new_tokens,
                stop_token_ids: self.tokenizer.eos_id().into_iter().collect(),
                stop: settings.stop.clone(),
                logprobs,
                max_batch: self.max_batch,
                ..Default::default()
            };
            let seeds: Vec<u64> = members.iter().map(|&i| requests[i].sampling.seed).collect();
            let rng_for = |p: usize, s: usize| SeqRng::new(seeds[p].wrapping_add(s as u64), 0, 0);
            // Text deltas: decode the sample so far, send what is new, but hold back the last
            // `hold` bytes (a stop string may be forming) and an incomplete UTF-8 character.
            let hold = settings.stop.iter().map(String::len).max().unwrap_or(0);
            let mut sent: std::collections::HashMap<(usize, usize), (Vec<u32>, usize)> =
                Default::default();
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
                &model,
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
                                .map(|(&id, &p)| {
                                    (self.tokenizer.decode(&[id], false).unwrap_or_default(), p)
                                })
                                .collect()
                        });
                        if let Ok(o) = &mut out[members[c.prompt_index]] {
                            o.samples.push(EngineSample {
                                text: c.text,
                                finish_reason: match c.finish_reason {
                                    FinishReason::Stop => EvalFinish::Stop,
                                    FinishReason::Length => EvalFinish::Length,
                                },
                                completion_tokens: c.token_ids.len(),
                                logprobs,
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
}

impl reasonlab_eval::Generator for LocalGenerator {
    fn generate(
        &self,
        requests: &[reasonlab_eval::GenRequest],
    ) -> Result<Vec<Vec<reasonlab_eval::GenOutput>>, reasonlab_eval::EvalError> {
        let engine_requests: Vec<reasonlab_serve::EngineRequest> = requests
            .iter()
            .map(|r| reasonlab_serve::EngineRequest {
                prompt: r.prompt.clone(),
                n: r.n,
                sampling: r.sampling.clone(),
                logprobs: false,
            })
            .collect();
        reasonlab_serve::Engine::generate(self, &engine_requests)
            .into_iter()
            .map(|r| {
                r.map(|o| {
                    o.samples
                        .into_iter()
                        .map(|s| reasonlab_eval::GenOutput {
                            text: s.text,
                            finish_reason: s.finish_reason,
                            completion_tokens: s.completion_tokens,
                        })
                        .collect()
                })
                .map_err(eval_err)
            })
            .collect()
    }

    fn describe(&self) -> reasonlab_eval::ModelInfo {
        self.info.clone()
    }
}
