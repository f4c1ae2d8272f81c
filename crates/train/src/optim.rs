//! AdamW (Loshchilov & Hutter 2019) with warm-up then cosine or constant schedules and global
//! gradient-norm clipping (PyTorch's `clip_grad_norm_`, which TRL's `max_grad_norm` applies),
//! on burn's optimiser.

use reasonlab_model::burn::module::{Module, ModuleVisitor, Param};
use reasonlab_model::burn::optim::{
    AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, ModuleOptimizer,
    Optimizer,
};
use reasonlab_model::burn::tensor::{Bytes, Device, FloatDType, Gradients, Tensor};
use reasonlab_model::fused::{self, AdamWScalars};
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
    /// Clip the gradients' global L2 norm (over every parameter together) to this; 0
    /// disables.
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
        // Clipping is global, here (burn's own clips each parameter's gradient alone).
        let burn = AdamWConfig::new()
            .with_beta_1(settings.beta1)
            .with_beta_2(settings.beta2)
            .with_epsilon(settings.eps)
            .with_weight_decay(settings.weight_decay)
            .build();
        ModuleOptimizer::from(OneKernelAdamW {
            burn,
            settings: settings.clone(),
        })
    }

    /// Apply `grads` (from `loss.backward()`) to `module` at learning rate `lr`.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: Gradients) -> M {
        let grads = GradientsParams::from_grads(grads, &module);
        self.step_params(lr, module, grads)
    }

    /// Apply already collected (e.g. accumulated) gradients.
    pub fn step_params<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        if self.settings.max_grad_norm > 0.0 {
            clip_global_norm(&module, &mut grads, self.settings.max_grad_norm);
        }
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

/// burn's AdamW, whose update is some fourteen ops per parameter, as one kernel per parameter
/// where the fused GPU kernels run ([`fused::adamw`]: the same ops in the same order, `m`, `v`
/// and the parameter updated in place); burn's own step elsewhere. The state is burn's, so
/// checkpoints of either load in the other.
#[derive(Clone)]
struct OneKernelAdamW {
    burn: reasonlab_model::burn::optim::AdamW,
    settings: AdamWSettings,
}

impl Optimizer for OneKernelAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if !fused::fuses_adamw(&tensor.device()) {
            return self.burn.step(lr, tensor, grad, state);
        }
        let (time, m, v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                s.momentum.moment_1,
                s.momentum.moment_2,
            ),
            // Zero moments give burn's first step exactly: β·0 + (1−β)g = (1−β)g.
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let s = &self.settings;
        let scalars = AdamWScalars {
            beta1: s.beta1,
            beta2: s.beta2,
            correction1: 1f32 - s.beta1.powi(time as i32),
            correction2: 1f32 - s.beta2.powi(time as i32),
            eps: s.eps,
            lr: lr as f32,
            decay: (1.0 - lr * s.weight_decay as f64) as f32,
        };
        let (tensor, m, v) = fused::adamw(tensor, grad, m, v, scalars);
        let momentum = AdaptiveMomentumState::new(time, m, v);
        (tensor, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <reasonlab_model::burn::optim::AdamW as Optimizer>::to_device(state, device)
    }
}

/// Scale every gradient of `module`'s parameters by `min(1, max_norm / (‖g‖ + 1e-6))`, where
/// `‖g‖` is the L2 norm of all of them together, as PyTorch's `clip_grad_norm_`: one sum of
/// squares per parameter and one product, all on the device (no read-back). Returns the norm,
/// a (1) tensor in f32, or `None` without gradients.
pub fn clip_global_norm<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f32,
) -> Option<Tensor<1>> {
    /// Σ g² over the parameters that have a gradient, in f32.
    struct SumOfSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumOfSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let squares = g.cast(FloatDType::F32).square().sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + squares,
                    None => squares,
                });
            }
        }
    }
    /// Every gradient times `coef` (1), in its own type.
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        coef: Tensor<1>,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let dtype = g.dtype();
                let coef = self.coef.clone().cast(dtype).reshape([1; D]);
                self.grads.register(param.id, g * coef);
            }
        }
    }

    let mut sum = SumOfSquares { grads, total: None };
    module.visit(&mut sum);
    let norm = sum.total?.sqrt();
    let max = Tensor::<1>::from_data([max_norm], &norm.device());
    let coef = (max / norm.clone().add_scalar(1e-6)).clamp_max(1.0);
    module.visit(&mut Scale { grads, coef });
    Some(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reasonlab_model::Model;
    use reasonlab_model::tensor::Device;

    /// Gradients of `c_i` in every element of parameter `i` of the fixture model; returns the
    /// model's net, the gradients and each parameter's (constant, element count).
    fn constant_grads() -> (
        reasonlab_model::CausalLm,
        GradientsParams,
        Vec<(f32, usize)>,
    ) {
        struct Fill {
            grads: GradientsParams,
            made: Vec<(f32, usize)>,
        }
        impl ModuleVisitor for Fill {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let c = 0.01 * (self.made.len() + 1) as f32;
                let value = param.val();
                self.made.push((c, value.shape().num_elements()));
                self.grads
                    .register(param.id, value.ones_like().mul_scalar(c));
            }
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-qwen2");
        let net = Model::load(&dir, &Device::flex()).unwrap().net;
        let mut fill = Fill {
            grads: GradientsParams::new(),
            made: Vec::new(),
        };
        net.visit(&mut fill);
        (net, fill.grads, fill.made)
    }

    /// Each gradient's first element, in visiting order.
    fn firsts(net: &reasonlab_model::CausalLm, grads: &GradientsParams) -> Vec<f32> {
        struct Read<'a>(&'a GradientsParams, Vec<f32>);
        impl ModuleVisitor for Read<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let g = self.0.get::<D>(param.id).unwrap();
                self.1.push(g.try_into_vec_as::<f32>().unwrap()[0]);
            }
        }
        let mut read = Read(grads, Vec::new());
        net.visit(&mut read);
        read.1
    }

    #[test]
    fn clipping_scales_every_gradient_by_the_global_norm() {
        let (net, mut grads, made) = constant_grads();
        assert!(made.len() > 10, "{} parameters", made.len());
        let norm = made
            .iter()
            .map(|&(c, n)| (c as f64).powi(2) * n as f64)
            .sum::<f64>()
            .sqrt();
        assert!(norm > 1.0, "the test needs a norm above the limit: {norm}");
        let got = clip_global_norm(&net, &mut grads, 1.0).unwrap();
        let got = got.try_into_vec_as::<f32>().unwrap()[0] as f64;
        assert!(
            (got - norm).abs() < 1e-4 * norm,
            "norm {got} against {norm}"
        );
        // One factor for all (per-parameter clipping would scale each by its own norm).
        let coef = 1.0 / (norm + 1e-6);
        for (i, (g, &(c, _))) in firsts(&net, &grads).iter().zip(&made).enumerate() {
            let want = c as f64 * coef;
            assert!(
                ((*g as f64) - want).abs() < 1e-5 * want,
                "parameter {i}: {g} against {want}"
            );
        }
        // Under the limit, nothing changes.
        let (net, mut grads, made) = constant_grads();
        clip_global_norm(&net, &mut grads, 1e6).unwrap();
        for (g, &(c, _)) in firsts(&net, &grads).iter().zip(&made) {
            assert_eq!(*g, c);
        }
    }

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
