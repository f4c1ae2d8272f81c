//! LoRA (Hu et al. 2021): frozen base weights plus trainable low-rank factors on chosen
//! projections, `W x + (alpha / r)·B A x`.
//!
//! Initialisation follows PEFT: `A` uniform in `±1/√in` (kaiming-uniform with a = √5), `B` zero,
//! so the adapted model starts equal to the base. Adapters are saved in PEFT's layout
//! (`adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` of shape (r, in)
//! and `lora_B.weight` (out, r), plus `adapter_config.json`), so `peft.PeftModel.from_pretrained`
//! reads them; [`crate::Model::save`] writes the merged weights, a plain HF checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Tensor, TensorData};
use reasonlab_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::decoder::{CausalLm, LoraAdapter};
use crate::{ModelError, SaveDtype};

/// Projections that can carry an adapter (PEFT's `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    fn parent(self) -> &'static str {
        match self {
            LoraTarget::GateProj | LoraTarget::UpProj | LoraTarget::DownProj => "mlp",
            _ => "self_attn",
        }
    }
}

/// LoRA settings (the `[sft.lora]` / `[grpo.lora]` tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<LoraTarget>,
    /// Seed of `A`'s initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    /// r 16, alpha 32 on every attention and MLP projection.
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            targets: LoraTarget::ALL.to_vec(),
            seed: 0,
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

fn fnv(name: &str) -> u64 {
    reasonlab_core::hash::fnv1a64(name.as_bytes())
}

/// Every adaptable projection of `net` with its module path (`model.layers.0.self_attn.q_proj`).
pub(crate) fn projections<'a>(
    net: &'a mut CausalLm,
    targets: &[LoraTarget],
) -> Vec<(String, &'a mut crate::decoder::Linear)> {
    let mut out = Vec::new();
    for (i, layer) in net.model.layers.iter_mut().enumerate() {
        let attn = &mut layer.self_attn;
        let mlp = &mut layer.mlp;
        let all: [(LoraTarget, &mut crate::decoder::Linear); 7] = [
            (LoraTarget::QProj, &mut attn.q_proj),
            (LoraTarget::KProj, &mut attn.k_proj),
            (LoraTarget::VProj, &mut attn.v_proj),
            (LoraTarget::OProj, &mut attn.o_proj),
            (LoraTarget::GateProj, &mut mlp.gate_proj),
            (LoraTarget::UpProj, &mut mlp.up_proj),
            (LoraTarget::DownProj, &mut mlp.down_proj),
        ];
        for (t, lin) in all {
            if targets.contains(&t) {
                out.push((format!("model.layers.{i}.{}.{}", t.parent(), t.name()), lin));
            }
        }
    }
    out
}

/// Freeze `net` and attach fresh adapters.
pub(crate) fn attach(
    net: CausalLm,
    cfg: &LoraConfig,
    device: &burn::tensor::Device,
) -> Result<CausalLm, ModelError> {
    if cfg.rank == 0 || cfg.targets.is_empty() {
        return Err(ModelError::Input(
            "LoRA needs rank ≥ 1 and at least one target".into(),
        ));
    }
    let mut net = net.set_require_grad(false);
    let mut rng = SplitMix64::seeded(cfg.seed);
    for (path, lin) in projections(&mut net, &cfg.targets) {
        let [d_in, d_out] = lin.weight.dims();
        let bound = 1.0 / (d_in as f64).sqrt();
        let a: Vec<f32> = (0..d_in * cfg.rank)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        let a = Tensor::from_data(TensorData::new(a, [d_in, cfg.rank]), device);
        let b = Tensor::zeros([cfg.rank, d_out], device);
        lin.lora = Some(LoraAdapter {
            a: Param::initialized(ParamId::from(fnv(&format!("{path}.lora_A.weight"))), a)
                .set_require_grad(true),
            b: Param::initialized(ParamId::from(fnv(&format!("{path}.lora_B.weight"))), b)
                .set_require_grad(true),
            scale: cfg.scale(),
        });
    }
    Ok(net)
}

/// Fold every adapter into its base weight and drop it.
pub(crate) fn merge(mut net: CausalLm) -> CausalLm {
    for (_, lin) in projections(&mut net, &LoraTarget::ALL) {
        if let Some(l) = lin.lora.take() {
            let delta = l.a.val().matmul(l.b.val()).mul_scalar(l.scale);
            let id = lin.weight.id;
            // A reduced-precision base (`Model::load_as`) takes the delta in its own type.
            let w = lin.weight.val();
            let merged = crate::decoder::same_type(delta, w.dtype()) + w;
            lin.weight = Param::initialized(id, merged.detach());
        }
    }
    net
}

/// The adapters under PEFT names, in PEFT layout.
pub(crate) fn adapter_tensors(net: &mut CausalLm) -> Result<crate::HfTensors, ModelError> {
    let mut out = BTreeMap::new();
    let read = |t: Tensor<2>| -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        // Ours (in, r) / (r, out) → PEFT (r, in) / (out, r).
        let t = t.transpose();
        let shape = t.dims().to_vec();
        let v = t
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Backend(format!("{e:?}")))?;
        Ok((shape, v))
    };
    for (path, lin) in projections(net, &LoraTarget::ALL) {
        if let Some(l) = &lin.lora {
            out.insert(
                format!("base_model.model.{path}.lora_A.weight"),
                read(l.a.val())?,
            );
            out.insert(
                format!("base_model.model.{path}.lora_B.weight"),
                read(l.b.val())?,
            );
        }
    }
    Ok(out)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `adapter_model.safetensors` and `adapter_config.json` into `dir`.
pub(crate) fn save_adapter(
    net: &mut CausalLm,
    cfg: &LoraConfig,
    dir: &Path,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tensors = adapter_tensors(net)?;
    let bytes = crate::weights::to_safetensors_bytes(&tensors, SaveDtype::F32)?;
    let path = dir.join("adapter_model.safetensors");
    reasonlab_core::fs::atomic_write(&path, &bytes).map_err(io(&path))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": cfg.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "base_model_name_or_path": null,
    });
    let path = dir.join("adapter_config.json");
    reasonlab_core::fs::atomic_write(
        &path,
        serde_json::to_string_pretty(&config)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(io(&path))
}

/// Read `adapter_config.json` of `dir`.
pub fn read_adapter_config(dir: &Path) -> Result<LoraConfig, ModelError> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: Some(path.clone()),
        field: "(file)".into(),
        message: e.to_string(),
    })?;
    let bad = |m: &str| ModelError::Config {
        path: Some(path.clone()),
        field: "adapter".into(),
        message: m.to_string(),
    };
    let targets = v["target_modules"]
        .as_array()
        .ok_or_else(|| bad("target_modules must be a list"))?
        .iter()
        .map(|t| {
            let name = t.as_str().unwrap_or_default();
            LoraTarget::ALL
                .into_iter()
                .find(|x| x.name() == name)
                .ok_or_else(|| bad(&format!("unsupported target module {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LoraConfig {
        rank: v["r"].as_u64().ok_or_else(|| bad("r missing"))? as usize,
        alpha: v["lora_alpha"]
            .as_f64()
            .ok_or_else(|| bad("lora_alpha missing"))?,
        targets,
        seed: 0,
    })
}

/// Fill the adapters of `net` (already attached with the file's config) from `dir`.
pub(crate) fn load_adapter_weights(
    net: &mut CausalLm,
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(), ModelError> {
    let path = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let get = |name: &str, shape: [usize; 2]| -> Result<Tensor<2>, ModelError> {
        let view = st.tensor(name).map_err(|_| ModelError::MissingTensor {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })?;
        // PEFT layout (r, in) / (out, r) → ours, transposed.
        let want = [shape[1], shape[0]];
        if view.shape() != want || view.dtype() != safetensors::Dtype::F32 {
            return Err(ModelError::Safetensors {
                path: path.clone(),
                message: format!(
                    "{name}: expected f32 {want:?}, found {:?} {:?}",
                    view.dtype(),
                    view.shape()
                ),
            });
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor::from_data(TensorData::new(values, want), device).transpose())
    };
    for (p, lin) in projections(net, &LoraTarget::ALL) {
        if let Some(l) = &mut lin.lora {
            let a = get(&format!("base_model.model.{p}.lora_A.weight"), l.a.dims())?;
            let b = get(&format!("base_model.model.{p}.lora_B.weight"), l.b.dims())?;
            l.a = Param::initialized(l.a.id, a).set_require_grad(true);
            l.b = Param::initialized(l.b.id, b).set_require_grad(true);
        }
    }
    Ok(())
}
