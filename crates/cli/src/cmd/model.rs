//! `reasonlab model info|logprobs`.

use std::path::PathBuf;

use anyhow::Context;
use reasonlab_model::{BackendKind, PadSide, TokenBatch};

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Print the architecture, sizes and parameter count of a checkpoint.
    Info {
        /// HF model directory (config.json, *.safetensors, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
    },
    /// Re-save a checkpoint in the HF layout (one `model.safetensors`), e.g. shards → one file
    /// or bf16 → f32; tokenizer and generation files are copied unchanged.
    Convert {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Dtype::F32)]
        dtype: Dtype,
    },
    /// Print `{"logprobs": [...]}`: log p(x_t | x_<t) for t = 1..L−1, fp32.
    Logprobs {
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids, e.g. 3,17,42.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// Tensor backend: flex (CPU), wgpu, vulkan or cuda.
        #[arg(long, default_value = "flex")]
        backend: BackendKind,
        /// The model's float type: f32, or bf16 / f16 on a GPU backend.
        #[arg(long, default_value = "f32")]
        dtype: reasonlab_model::Precision,
    },
}

/// Storage dtype flag.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Dtype {
    F32,
    Bf16,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Info { model } => {
            let (m, tok) = super::local::load(&model, BackendKind::Flex)?;
            let c = &m.config;
            let info = serde_json::json!({
                "architecture": c.architecture.class_name(),
                "vocab_size": c.vocab_size,
                "hidden_size": c.hidden_size,
                "intermediate_size": c.intermediate_size,
                "num_hidden_layers": c.num_hidden_layers,
                "num_attention_heads": c.num_attention_heads,
                "num_key_value_heads": c.num_key_value_heads,
                "head_dim": c.head_dim,
                "max_position_embeddings": c.max_position_embeddings,
                "rope_theta": c.rope_theta,
                "rope_scaling": format!("{:?}", c.rope_scaling),
                "tie_word_embeddings": c.tie_word_embeddings,
                "parameters": m.num_params(),
                "tokenizer": tok.as_ref().map(|t| serde_json::json!({
                    "vocab_size": t.vocab_size(),
                    "bos_token": t.bos_token,
                    "eos_token": t.eos_token,
                    "chat_template": t.chat_template.is_some(),
                })),
            });
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        ModelCommand::Convert { model, out, dtype } => {
            let (m, _) = super::local::load(&model, BackendKind::Flex)?;
            let dtype = match dtype {
                Dtype::F32 => reasonlab_model::SaveDtype::F32,
                Dtype::Bf16 => reasonlab_model::SaveDtype::Bf16,
            };
            m.save(&out, dtype)
                .with_context(|| format!("saving to {}", out.display()))?;
            reasonlab_tokenize::copy_side_files(&model, &out)?;
            eprintln!("saved {} parameters to {}", m.num_params(), out.display());
        }
        ModelCommand::Logprobs {
            model,
            ids,
            backend,
            dtype,
        } => {
            let device = super::local::open(backend, dtype)?;
            let m = reasonlab_model::Model::load_as(&model, &device, dtype)
                .with_context(|| format!("loading model {}", model.display()))?
                .pack_projections();
            anyhow::ensure!(ids.len() >= 2, "--ids needs at least 2 token ids");
            let batch = TokenBatch::pad(&[ids], 0, PadSide::Right);
            let lp = m
                .token_logprobs(&batch)?
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("{}", serde_json::json!({ "logprobs": lp }));
        }
    }
    Ok(())
}
