//! The one place the tensor backend is chosen.
//!
//! `flex` (pure-Rust CPU, SIMD + rayon) is always built. `wgpu` (Vulkan/Metal/DX12) builds
//! offline behind the `wgpu` feature. `cuda` is behind the `cuda` feature: its build downloads an
//! LLVM bundle, so it needs network at build time.

use burn::tensor::Device;

use crate::error::ModelError;

/// Where tensors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// Pure-Rust CPU backend (default).
    #[default]
    Flex,
    /// GPU through wgpu (Vulkan, Metal, DX12); needs the `wgpu` feature.
    Wgpu,
    /// NVIDIA GPU through CUDA; needs the `cuda` feature.
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flex" | "cpu" => Ok(Self::Flex),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(ModelError::Input(format!(
                "unknown backend {other:?}; expected flex, wgpu or cuda"
            ))),
        }
    }
}

/// The device for a backend; `autodiff` wraps it for training.
pub fn device_for(kind: BackendKind, autodiff: bool) -> Result<Device, ModelError> {
    let device = match kind {
        BackendKind::Flex => Device::flex(),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Device::wgpu(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Device::cuda(0),
        #[allow(unreachable_patterns)]
        other => {
            return Err(ModelError::Input(format!(
                "backend {other:?} is not compiled in; rebuild with `--features {}`",
                format!("{other:?}").to_lowercase()
            )));
        }
    };
    Ok(if autodiff { device.autodiff() } else { device })
}
