//! AdamW (Loshchilov & Hutter 2019) with warm-up then cosine or constant schedules and global
//! gradient-norm clipping, on burn's optimiser.

use reasonlab_model::burn::grad_clipping::GradientClippingConfig;
use reasonlab_model::burn::module::Module;
use reasonlab_model::burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use reasonlab_model::burn::tensor::{Bytes, Gradients};
use serde::{Deserialize, Serialize};

/// Learning-rate shape over steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Linear warm-up, then constant.
    #[default]
    Constant,
    /// Linear warm-up, then cosine decay to `min_lr_ratio × lr` at `total_steps`.
    Cosine,
}

/// Optimiser settings (TOML-friendly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWSettings {
    pub lr: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global L2 norm clip; 0 disables.
    pub max_grad_norm: f32,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub min_lr_ratio: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            min_lr_ratio: 0.0,
        }
    }
}

impl AdamWSettings {
    /// Learning rate at `step` (0-based) of `total_steps`.
    pub fn lr_at(&self, step: usize, total_steps: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cos)
            }
        }
    }
}

/// An AdamW optimiser bound to its settings.
pub struct AdamW {
    pub settings: AdamWSettings,
    inner: ModuleOptimizer,
}

impl AdamW {
    pub fn new(settings: AdamWSettings) -> Self {
        Self {
            inner: Self::build(&settings),
            settings,
        }
    }

    fn build(settings: &AdamWSettings) -> ModuleOptimizer {
        let mut config = AdamWConfig::new()
            .with_beta_1(settings.beta1)
            .with_beta_2(settings.beta2)
            .with_epsilon(settings.eps)
            .with_weight_decay(settings.weight_decay);
        if settings.max_grad_norm > 0.0 {
            config = config
                .with_grad_clipping(Some(GradientClippingConfig::Norm(settings.max_grad_norm)));
        }
        config.init()
    }

    /// Apply `grads` (from `loss.backward()`) to `module` at learning rate `lr`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: Gradients) -> M {
        let grads = GradientsParams::from_grads(grads, &module);
        self.inner.step(lr, module, grads)
    }

    /// Apply already collected (e.g. accumulated) gradients.
    pub fn step_params<M: Module>(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        self.inner.step(lr, module, grads)
    }

    /// The moments and step counts of every parameter (burnpack bytes). Parameters are keyed
    /// by id, which the model derives from their names, so another process can load them.
    pub fn state_bytes(&self) -> Result<Vec<u8>, String> {
        self.inner
            .into_bytes()
            .map(|b| b.to_vec())
            .map_err(|e| format!("{e:?}"))
    }

    /// Restore what [`AdamW::state_bytes`] saved.
    pub fn load_state_bytes(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.inner = Self::build(&self.settings)
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_the_floor() {
        let s = AdamWSettings {
            lr: 1.0,
            warmup_steps: 4,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        assert_eq!(s.lr_at(0, 20), 0.25);
        assert_eq!(s.lr_at(3, 20), 1.0);
        assert!((s.lr_at(4, 20) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(20, 20) - 0.1).abs() < 1e-12);
        assert!(s.lr_at(12, 20) < 1.0 && s.lr_at(12, 20) > 0.1);
    }
}
