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
    Ok(Box::new(LocalGenerator {
        model: std::sync::Mutex::new(model),
        tokenizer,
        info,
        max_batch: 64,
    }))
}

fn eval_err(e: impl std::fmt::Display) -> reasonlab_eval::EvalError {
    reasonlab_eval::EvalError::Generator(e.to_string())
}

impl reasonlab_eval::Generator for LocalGenerator {
    fn generate(
        &self,
        requests: &[reasonlab_eval::GenRequest],
    ) -> Result<Vec<Vec<reasonlab_eval::GenOutput>>, reasonlab_eval::EvalError> {
        use reasonlab_eval::{FinishReason as EvalFinish, GenOutput, PromptInput};
        use reasonlab_generate::{FinishReason, SamplingParams, SeqRng, generate_with_seeds};
        let model = self.model.lock().map_err(eval_err)?;
        let mut out = vec![Vec::new(); requests.len()];
        // Requests with equal settings (all but the seed) decode together.
        let mut groups: Vec<(reasonlab_eval::SamplingSettings, usize, Vec<usize>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let key = reasonlab_eval::SamplingSettings {
                seed: 0,
                ..r.sampling.clone()
            };
            match groups.iter_mut().find(|(k, n, _)| *k == key && *n == r.n) {
                Some(g) => g.2.push(i),
                None => groups.push((key, r.n, vec![i])),
            }
        }
        for (settings, n, members) in groups {
            let mut prompts = Vec::with_capacity(members.len());
            for &i in &members {
                let ids = match &requests[i].prompt {
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
                            .map_err(eval_err)?;
                        self.tokenizer.encode_chat(&msgs, true)
                    }
                }
                .map_err(eval_err)?;
                prompts.push(ids);
            }
            let params = SamplingParams {
                temperature: settings.temperature,
                top_p: settings.top_p,
                top_k: settings.top_k.unwrap_or(0),
                max_new_tokens: settings.max_new_tokens,
                stop_token_ids: self.tokenizer.eos_id().into_iter().collect(),
                stop: settings.stop.clone(),
                max_batch: self.max_batch,
                ..Default::default()
            };
            let seeds: Vec<u64> = members.iter().map(|&i| requests[i].sampling.seed).collect();
            // Sample j of a request uses seed + j, as the HTTP client sends it.
            let rng_for = |p: usize, s: usize| SeqRng::new(seeds[p].wrapping_add(s as u64), 0, 0);
            let (done, _) = generate_with_seeds(
                &model,
                Some(&self.tokenizer),
                &prompts,
                n,
                &params,
                &rng_for,
                &mut |_| {},
            )
            .map_err(eval_err)?;
            for c in done {
                out[members[c.prompt_index]].push(GenOutput {
                    text: c.text,
                    finish_reason: match c.finish_reason {
                        FinishReason::Stop => EvalFinish::Stop,
                        FinishReason::Length => EvalFinish::Length,
                    },
                    completion_tokens: c.token_ids.len(),
                });
            }
        }
        Ok(out)
    }

    fn describe(&self) -> reasonlab_eval::ModelInfo {
        self.info.clone()
    }
}
