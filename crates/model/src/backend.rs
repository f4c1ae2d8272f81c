//! The one place the tensor backend is chosen, and the device it landed on described.
//!
//! `flex` (pure-Rust CPU, SIMD + rayon) is always built. `wgpu` (Vulkan/Metal/DX12 through
//! WGSL) and `vulkan` (wgpu pinned to Vulkan with the SPIR-V compiler) build offline behind the
//! features of the same names. `cuda` is behind the `cuda` feature: its build downloads an LLVM
//! bundle, so it needs network at build time.
//!
//! Every command and run config takes the same choice (`--backend`, `backend = "…"`), and every
//! run reports the device it opened ([`DeviceInfo`]). A GPU backend that lands on a software
//! adapter (Mesa's llvmpipe/lavapipe, on a machine without a GPU driver) still runs, correctly
//! and slowly; [`DeviceInfo::warning`] says so rather than let it pass for a GPU.

use std::fmt;

use burn::tensor::{Device, FloatDType};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Where tensors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Pure-Rust CPU backend (default).
    #[default]
    #[serde(alias = "cpu")]
    Flex,
    /// GPU through wgpu, the graphics API chosen at run time (Vulkan, Metal, DX12); needs the
    /// `wgpu` feature.
    Wgpu,
    /// GPU through wgpu pinned to Vulkan, kernels compiled to SPIR-V; needs the `vulkan` feature.
    Vulkan,
    /// NVIDIA GPU through CUDA; needs the `cuda` feature.
    Cuda,
}

impl BackendKind {
    /// Every backend, in the order the error messages list them.
    pub const ALL: [BackendKind; 4] = [Self::Flex, Self::Wgpu, Self::Vulkan, Self::Cuda];

    /// The name `--backend` and `backend =` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Vulkan => "vulkan",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this build can open the backend (its cargo feature is on).
    pub fn compiled(self) -> bool {
        match self {
            Self::Flex => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Flex),
            _ => Self::ALL
                .into_iter()
                .find(|k| k.name() == s)
                .ok_or_else(|| {
                    ModelError::Input(format!(
                        "unknown backend {s:?}; expected flex, wgpu, vulkan or cuda"
                    ))
                }),
        }
    }
}

/// The device for a backend; `autodiff` wraps it for training. A GPU backend opens the GPU
/// chosen for the process ([`crate::gpus::chosen`]), else the runtime's default.
pub fn device_for(kind: BackendKind, autodiff: bool) -> Result<Device, ModelError> {
    let device = match kind {
        BackendKind::Flex => Device::flex(),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Device::wgpu(crate::gpus::wgpu_device_kind(kind)?),
        #[cfg(feature = "vulkan")]
        BackendKind::Vulkan => Device::vulkan(crate::gpus::wgpu_device_kind(kind)?),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Device::cuda(crate::gpus::cuda_index()?),
        #[allow(unreachable_patterns)]
        other => {
            return Err(ModelError::Input(format!(
                "backend {other} is not compiled in; rebuild with `--features {other}`"
            )));
        }
    };
    Ok(if autodiff { device.autodiff() } else { device })
}

/// Open the device for `kind` and say what it is.
pub fn open(kind: BackendKind, autodiff: bool) -> Result<(Device, DeviceInfo), ModelError> {
    let device = device_for(kind, autodiff)?;
    let info = DeviceInfo::of(kind, &device)?;
    Ok((device, info))
}

/// The float type of an inference model's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The name `--dtype` and `dtype =` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }

    pub(crate) fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::Bf16 => FloatDType::BF16,
            Self::F16 => FloatDType::F16,
        }
    }

    /// The precision of a float type: `None` for one that is none of the three.
    pub fn of(dtype: burn::tensor::DType) -> Option<Self> {
        [Self::F32, Self::Bf16, Self::F16]
            .into_iter()
            .find(|p| burn::tensor::DType::from(p.float_dtype()) == dtype)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::F32, Self::Bf16, Self::F16]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                ModelError::Input(format!("unknown dtype {s:?}; expected f32, bf16 or f16"))
            })
    }
}

/// Open an inference device for `kind` for models in `precision`, checked against it, and say
/// what it is. The model takes the precision, not the device: [`crate::Model::load_as`] reads
/// the weights into it from any checkpoint dtype, and its forward passes, KV caches and
/// activations follow the weights. The device keeps its float type, so one process can sample
/// with a bf16 model and train an f32 one on the same GPU (a recipe's stages).
///
/// Reduced precision is for the GPU backends (`flex` computes in f32, and its fused kernels
/// read f32), where the adapter must support the type: wgpu's WGSL kernels have f16 but no
/// bf16.
pub fn open_inference(
    kind: BackendKind,
    precision: Precision,
) -> Result<(Device, DeviceInfo), ModelError> {
    let (device, mut info) = open(kind, false)?;
    let what = format!("backend {kind} on {}", info.name);
    check_inference_precision(&device, precision, &what)?;
    info.precision = precision;
    Ok((device, info))
}

/// Whether models on `device` (`what`, in the error) can run inference in `precision`: any
/// device in f32; bf16 and f16 on a GPU backend whose adapter has the type (wgpu's WGSL
/// kernels have f16, no bf16).
pub(crate) fn check_inference_precision(
    device: &Device,
    precision: Precision,
    what: &str,
) -> Result<(), ModelError> {
    if precision == Precision::F32 {
        return Ok(());
    }
    if crate::fused::is_flex(device) {
        return Err(ModelError::Input(format!(
            "dtype {precision} is for the GPU backends; flex computes in f32"
        )));
    }
    if !device.supports_dtype(precision.float_dtype()) {
        return Err(ModelError::Input(format!(
            "{what} has no {precision} support; try {}",
            if precision == Precision::Bf16 {
                "--dtype f16 (or f32)"
            } else {
                "--dtype f32"
            }
        )));
    }
    Ok(())
}

/// Whether training keeps every activation for the backward pass or recomputes some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationCheckpointing {
    /// Keep every activation: the fastest step, the most memory.
    #[default]
    Off,
    /// burn's balanced strategy: the outputs of memory-bound ops (the elementwise burn ops left
    /// between the fused kernels) are recomputed in the backward pass, those of compute-bound
    /// ops (matmuls, reasonlab's fused CPU and GPU kernels) kept. Gradients are unchanged. With
    /// the norms, softmax and SwiGLU fused it saves no memory on the models measured
    /// (docs/gpu.md#activation-checkpointing). The LM head's logits are also computed in
    /// chunks and recomputed in the backward pass where [`crate::fused::head_logprobs`] fuses
    /// (flex in f32, the GPU backends' fused kernels; a head without a bias or LoRA adapter),
    /// so the (tokens, vocab) block is never whole there.
    Balanced,
}

/// How a training run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Training {
    /// Activations kept for the backward pass, or recomputed there.
    pub checkpointing: ActivationCheckpointing,
    /// Mixed precision: the type the forward and backward passes compute in, with f32 master
    /// weights and optimiser state ([`crate::Model::with_mixed_precision`]); f32 is off.
    pub mixed_precision: Precision,
}

/// What a device is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Inference, for models in this type ([`open_inference`]).
    Inference(Precision),
    /// Training (autodiff) ([`open_for_training`]).
    Training(Training),
}

/// Host workers that split a batch on `device` (data-parallel training steps, generation
/// groups). On flex, rayon's thread count (the `RAYON_NUM_THREADS` environment variable, else
/// the cores), which the tensor kernels use too. On a GPU backend one: the device runs one
/// pass's kernels after another whatever the host threads, so a batch split over workers only
/// makes each matmul smaller and multiplies the launches (a 16-core host would run an 8 × 512
/// step as eight 1 × 512 passes).
pub fn data_parallel_workers(device: &Device) -> usize {
    match crate::fused::is_flex(device) {
        true => rayon::current_num_threads().max(1),
        false => 1,
    }
}

/// Open the device for `kind` as `purpose` needs it, and say what it is.
pub fn open_for(kind: BackendKind, purpose: Purpose) -> Result<(Device, DeviceInfo), ModelError> {
    match purpose {
        Purpose::Inference(precision) => open_inference(kind, precision),
        Purpose::Training(training) => open_for_training(kind, training),
    }
}

/// Open a training (autodiff) device for `kind` as `training` asks, and say what it is.
/// Mixed precision is checked against the device here, before any weight loads; the model
/// takes it with [`crate::Model::with_mixed_precision`].
pub fn open_for_training(
    kind: BackendKind,
    training: Training,
) -> Result<(Device, DeviceInfo), ModelError> {
    let (device, mut info) = open(kind, true)?;
    check_mixed_precision(&device, training.mixed_precision)?;
    info.mixed_precision = training.mixed_precision;
    Ok(match training.checkpointing {
        ActivationCheckpointing::Off => (device, info),
        ActivationCheckpointing::Balanced => (device.gradient_checkpointing(), info),
    })
}

/// Whether a model on `device` can train with `precision` compute: not on flex (its fused
/// kernels and gemm read f32), and only in a type the adapter has (wgpu's WGSL kernels have
/// f16, no bf16).
pub(crate) fn check_mixed_precision(
    device: &Device,
    precision: Precision,
) -> Result<(), ModelError> {
    if precision == Precision::F32 {
        return Ok(());
    }
    if crate::fused::is_flex(device) {
        return Err(ModelError::Input(format!(
            "mixed precision ({precision}) is for the GPU backends; flex trains in f32"
        )));
    }
    if !device.supports_dtype(precision.float_dtype()) {
        return Err(ModelError::Input(format!(
            "this device has no {precision} support for mixed precision; try {}",
            if precision == Precision::Bf16 {
                "mixed_precision = \"f16\" (or \"f32\")"
            } else {
                "mixed_precision = \"f32\""
            }
        )));
    }
    Ok(())
}

/// `read` of the runtime properties of the GPU device behind `device` (cubecl's); `None` on
/// the CPU. Opens the device.
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
fn gpu_properties<T>(
    device: &Device,
    read: impl FnOnce(&cubecl::ir::DeviceProperties) -> T,
) -> Option<T> {
    use burn::backend::DispatchDevice;
    #[allow(unreachable_patterns)]
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube) => Some(read(cube.client().properties())),
        _ => None,
    }
}

/// The most bytes one tensor may take on `device`: on a GPU backend the runtime's largest
/// allocation, the driver's storage-buffer range (128 MiB on Mesa's lavapipe); `None` on the
/// CPU, whose tensors are bounded by memory alone. Opens the device.
pub fn max_buffer_bytes(device: &Device) -> Option<u64> {
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
    return gpu_properties(device, |p| p.memory.max_page_size);
    #[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
    {
        let _ = device;
        None
    }
}

/// The memory of the GPU behind `device`, in bytes, where its runtime states it (cubecl reads
/// it from Vulkan in `vulkan` builds; WebGPU, under `wgpu` builds, states none); `None` on the
/// CPU. Opens the device.
pub fn device_memory_bytes(device: &Device) -> Option<u64> {
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
    return gpu_properties(device, |p| p.memory.max_memory()).flatten();
    #[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
    {
        let _ = device;
        None
    }
}

/// The cooperative-matrix (matrix-multiply-accumulate) configurations the device behind
/// `device` registers: the shapes and types burn's matmuls can run on tensor cores. Opens the
/// device.
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
fn cooperative_matrix_configs(device: &Device) -> Vec<cubecl::features::MmaConfig> {
    gpu_properties(device, |p| p.features.matmul.cmma.iter().copied().collect()).unwrap_or_default()
}

/// One ceiling of a GPU device, measured through burn's own runtime (cubecl's throughput
/// probes): what a kernel launch costs, how fast memory moves, how fast the scalar and the
/// cooperative-matrix units compute. A step's time against these says which one binds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ceiling {
    /// What was measured: `launch`, `memory-copy`, `memory-read`, `scalar-f32`, `scalar-f16`,
    /// or `cmma-A-ACC-MxNxK` for a cooperative-matrix configuration (input and accumulator
    /// types, tile).
    pub name: String,
    /// The value, in `unit`; `None` where the device has none (`error` says why).
    pub value: Option<f64>,
    pub unit: CeilingUnit,
    pub error: Option<String>,
}

/// The unit of a [`Ceiling`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CeilingUnit {
    /// Microseconds per kernel launch.
    MicrosecondsPerLaunch,
    /// Bytes moved across the memory interface, 10⁹ per second (a copy counts both its reads
    /// and its writes).
    GigabytesPerSecond,
    /// The probe's operations, 10¹² per second.
    TeraOpsPerSecond,
}

impl CeilingUnit {
    pub fn symbol(self) -> &'static str {
        match self {
            CeilingUnit::MicrosecondsPerLaunch => "µs per launch",
            CeilingUnit::GigabytesPerSecond => "GB/s",
            CeilingUnit::TeraOpsPerSecond => "Tops/s",
        }
    }
}

impl fmt::Display for Ceiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.value, &self.error) {
            (Some(v), _) => write!(f, "{}: {v:.3} {}", self.name, self.unit.symbol()),
            (None, Some(e)) => write!(f, "{}: none ({e})", self.name),
            (None, None) => write!(f, "{}: none", self.name),
        }
    }
}

/// The ceilings of the GPU behind `device` (empty on flex, whose limits
/// `examples/machine_limits.rs` measures): launch cost, memory copy and read bandwidth, scalar
/// f32 and f16 compute, and each cooperative-matrix configuration the device registers. Runs
/// cubecl's probes, seconds each.
pub fn measure_ceilings(device: &Device) -> Vec<Ceiling> {
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
    {
        gpu_ceilings(device)
    }
    #[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
    {
        let _ = device;
        Vec::new()
    }
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
fn gpu_ceilings(device: &Device) -> Vec<Ceiling> {
    use burn::tensor::{MemoryAccess, ThroughputKey, ThroughputMode};
    use cubecl::ir::{ElemType, FloatKind};
    use cubecl::throughput::{CmmaDims, ComputeCmmaConfig};
    let f32 = ElemType::Float(FloatKind::F32);
    let f16 = ElemType::Float(FloatKind::F16);
    let mut named = vec![
        ("launch".to_string(), ThroughputMode::Launch),
        (
            "memory-copy".into(),
            ThroughputMode::memory(MemoryAccess::Copy),
        ),
        (
            "memory-read".into(),
            ThroughputMode::memory(MemoryAccess::Read),
        ),
        (
            "scalar-f32".into(),
            ThroughputMode::ComputeDirect { dtype: f32 },
        ),
        (
            "scalar-f16".into(),
            ThroughputMode::ComputeDirect { dtype: f16 },
        ),
    ];
    for c in cooperative_matrix_configs(device) {
        let name = format!("cmma-{}-{}-{}x{}x{}", c.a_type, c.cd_type, c.m, c.n, c.k);
        let config = ComputeCmmaConfig {
            accumulator_type: c.cd_type,
            cmma_dims: CmmaDims {
                m: c.m as usize,
                n: c.n as usize,
                k: c.k as usize,
            },
        };
        let mode = ThroughputMode::ComputeCmma {
            dtype: c.a_type,
            config,
        };
        named.push((name, mode));
    }
    let keys: Vec<ThroughputKey> = named
        .iter()
        .map(|(_, mode)| ThroughputKey { mode: *mode })
        .collect();
    let stats = device.performance_stats(&keys);
    named
        .into_iter()
        .zip(stats)
        .map(|((name, mode), stat)| {
            let unit = match mode {
                ThroughputMode::Launch => CeilingUnit::MicrosecondsPerLaunch,
                ThroughputMode::Memory(_) => CeilingUnit::GigabytesPerSecond,
                _ => CeilingUnit::TeraOpsPerSecond,
            };
            let (value, error) = match stat.value {
                Ok(v) => {
                    let value = match unit {
                        CeilingUnit::MicrosecondsPerLaunch => {
                            v.duration_per_op().as_secs_f64() * 1e6
                        }
                        CeilingUnit::GigabytesPerSecond => v.bytes_per_s(&stat.key) / 1e9,
                        CeilingUnit::TeraOpsPerSecond => v.ops_per_s() / 1e12,
                    };
                    (value.is_finite().then_some(value), None)
                }
                Err(e) => (None, Some(e.to_string())),
            };
            Ceiling {
                name,
                value,
                unit,
                error,
            }
        })
        .collect()
}

/// The device a run landed on, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    pub backend: BackendKind,
    /// The adapter as it names itself (`NVIDIA H200`, `llvmpipe (LLVM 15.0.6, 256 bits)`), or
    /// the CPU backend's thread count.
    pub name: String,
    /// A GPU backend that runs on no card: a software rasterizer such as llvmpipe/lavapipe.
    pub software: bool,
    /// The float type inference models load in on the device ([`open_inference`]).
    pub precision: Precision,
    /// The compute type of mixed-precision training ([`open_for_training`]); f32 is off.
    pub mixed_precision: Precision,
    /// On a GPU backend: reasonlab's fused kernels, or burn's composed ops
    /// (`REASONLAB_GPU_KERNELS`).
    pub kernels: crate::fused::GpuKernels,
    /// On a GPU backend with the fused kernels: flash attention, or the scores as matmuls
    /// (`REASONLAB_GPU_ATTENTION`).
    pub attention: crate::fused::GpuAttention,
    /// What burn's matmuls run on.
    pub matmul: MatmulUnits,
    /// The graphics API under the wgpu and vulkan backends; `None` elsewhere.
    pub api: Option<GraphicsApi>,
    /// The card's PCI address (`0000:1b:00.0`) where the runtime reports one; `None` on the
    /// CPU and on a software adapter.
    pub pci_address: Option<String>,
    /// The GPU chosen for the process (`--gpu`, `REASONLAB_GPU`); `None`: the runtime's pick.
    pub gpu: Option<usize>,
    /// `CUDA_VISIBLE_DEVICES` where it is set but narrows nothing: a `wgpu` or `vulkan`
    /// backend, more than one GPU on the machine, and none chosen.
    pub unheeded_cuda_mask: Option<String>,
}

/// The graphics API a wgpu device runs on. On Linux the `wgpu` backend takes Vulkan where it
/// reaches a GPU and falls back to OpenGL; the `vulkan` backend is pinned to Vulkan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GraphicsApi {
    Vulkan,
    Metal,
    Dx12,
    OpenGl,
    WebGpu,
}

impl fmt::Display for GraphicsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GraphicsApi::Vulkan => "Vulkan",
            GraphicsApi::Metal => "Metal",
            GraphicsApi::Dx12 => "DX12",
            GraphicsApi::OpenGl => "OpenGL",
            GraphicsApi::WebGpu => "WebGPU",
        })
    }
}

/// The graphics API the device of backend `kind` comes up on (what wgpu's adapter choice
/// lands on for `wgpu`).
#[cfg(any(feature = "wgpu", feature = "vulkan"))]
fn graphics_api(kind: BackendKind) -> Option<GraphicsApi> {
    match kind {
        BackendKind::Vulkan => Some(GraphicsApi::Vulkan),
        BackendKind::Wgpu => {
            api_of(<cubecl_wgpu::AutoGraphicsApi as cubecl_wgpu::GraphicsApi>::backend())
        }
        _ => None,
    }
}

/// The API of one of wgpu's backends.
#[cfg(any(feature = "wgpu", feature = "vulkan"))]
pub(crate) fn api_of(backend: cubecl_wgpu::wgpu::Backend) -> Option<GraphicsApi> {
    use cubecl_wgpu::wgpu::Backend;
    match backend {
        Backend::Vulkan => Some(GraphicsApi::Vulkan),
        Backend::Metal => Some(GraphicsApi::Metal),
        Backend::Dx12 => Some(GraphicsApi::Dx12),
        Backend::Gl => Some(GraphicsApi::OpenGl),
        Backend::BrowserWebGpu => Some(GraphicsApi::WebGpu),
        _ => None,
    }
}

#[cfg(all(feature = "cuda", not(any(feature = "wgpu", feature = "vulkan"))))]
fn graphics_api(_kind: BackendKind) -> Option<GraphicsApi> {
    None
}

/// What burn's matmuls run on. burn picks its matmul kernel through cubek's `Auto` strategy:
/// the cooperative-matrix routine where the device registers cooperative-matrix
/// configurations, else a routine on scalar units. cubecl registers them for SPIR-V on Vulkan
/// (the `vulkan` build), MSL on Metal and CUDA, never for WGSL (the `wgpu` build on Vulkan or
/// DX12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatmulUnits {
    /// flex: reasonlab's and burn's SIMD kernels on the CPU.
    Cpu,
    /// A GPU device with no cooperative-matrix configuration: scalar (CUDA-core) units.
    Scalar,
    /// A GPU device with cooperative-matrix configurations (tensor cores on NVIDIA): how many.
    CooperativeMatrix(usize),
}

impl DeviceInfo {
    /// Describe an opened `device` of backend `kind` (opening a GPU device initialises it, so a
    /// missing driver fails here with the runtime's message instead of at the first tensor).
    pub fn of(kind: BackendKind, device: &Device) -> Result<Self, ModelError> {
        if kind == BackendKind::Flex {
            return Ok(Self {
                backend: kind,
                name: format!("CPU, {} threads", rayon::current_num_threads()),
                software: false,
                precision: Precision::F32,
                mixed_precision: Precision::F32,
                kernels: crate::fused::GpuKernels::Fused,
                attention: crate::fused::GpuAttention::Flash,
                matmul: MatmulUnits::Cpu,
                api: None,
                pci_address: None,
                gpu: None,
                unheeded_cuda_mask: None,
            });
        }
        Self::of_gpu(kind, device)
    }

    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
    fn of_gpu(kind: BackendKind, device: &Device) -> Result<Self, ModelError> {
        let identity = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.identity()))
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("the runtime panicked");
                ModelError::Backend(format!("could not open a {kind} device: {why}"))
            })?;
        let kernels = crate::fused::GpuKernels::from_env()?;
        let attention = crate::fused::GpuAttention::from_env()?;
        crate::fused::DecodeSplit::from_env()?;
        crate::fused::DecodeOverlap::from_env()?;
        let matmul = match cooperative_matrix_configs(device).len() {
            0 => MatmulUnits::Scalar,
            n => MatmulUnits::CooperativeMatrix(n),
        };
        let (name, software, pci_address) = match identity {
            Some(id) => {
                let pci = id.physical.as_ref().and_then(|p| p.pci_address);
                (id.name, id.physical.is_none(), pci.map(|a| a.to_string()))
            }
            None => ("unnamed device".into(), false, None),
        };
        let gpu = match crate::gpus::chosen()? {
            crate::gpus::GpuChoice::Index(n) => Some(n),
            crate::gpus::GpuChoice::Default => None,
        };
        Ok(Self {
            backend: kind,
            name,
            software,
            precision: Precision::F32,
            mixed_precision: Precision::F32,
            kernels,
            attention,
            matmul,
            api: graphics_api(kind),
            pci_address,
            gpu,
            unheeded_cuda_mask: crate::gpus::unheeded_cuda_mask(kind),
        })
    }

    #[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
    fn of_gpu(kind: BackendKind, _device: &Device) -> Result<Self, ModelError> {
        // `device_for` refuses GPU backends that are not compiled in, so this is not reached.
        Err(ModelError::Input(format!(
            "backend {kind} is not compiled in; rebuild with `--features {kind}`"
        )))
    }

    /// What a run on this device should be warned of: a GPU backend on a software adapter, or
    /// on a GPU whose matmuls cannot use its tensor cores; `CUDA_VISIBLE_DEVICES` narrowing
    /// nothing for it.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(mask) = &self.unheeded_cuda_mask {
            warnings.push(format!(
                "CUDA_VISIBLE_DEVICES={mask} does not reach backend {}: the graphics API lists \
                 every GPU of the machine, and this run opened {}{}, its default; choose a GPU \
                 with --gpu N or REASONLAB_GPU=N (`reasonlab devices --backend {}` lists them)",
                self.backend,
                self.name,
                self.pci_address
                    .as_ref()
                    .map(|a| format!(" at PCI {a}"))
                    .unwrap_or_default(),
                self.backend
            ));
        }
        warnings.extend(self.device_warning());
        warnings
    }

    fn device_warning(&self) -> Option<String> {
        if self.software {
            return Some(format!(
                "backend {} is running on a software adapter ({}), not a GPU: results are \
                 correct but slower than `--backend flex`; install the GPU's Vulkan driver or \
                 use flex",
                self.backend, self.name
            ));
        }
        if self.backend == BackendKind::Wgpu && self.api == Some(GraphicsApi::OpenGl) {
            return Some(format!(
                "backend wgpu runs on {} through OpenGL, not Vulkan: no Vulkan driver for it was \
                 found (install the GPU's Vulkan driver, or point VK_DRIVER_FILES at its ICD \
                 file); through OpenGL burn's matmuls get no tensor cores",
                self.name
            ));
        }
        (self.matmul == MatmulUnits::Scalar).then(|| {
            let hint = match self.backend {
                BackendKind::Wgpu if !BackendKind::Vulkan.compiled() => {
                    ": this build compiles its kernels to WGSL, which has no cooperative-matrix \
                     instructions; on Vulkan, a build with `--features vulkan` and \
                     `--backend vulkan` gives burn's matmuls the tensor cores where the driver \
                     offers them"
                }
                BackendKind::Wgpu => {
                    ": the device registered no cooperative-matrix configuration for its \
                     compiler (WGSL, on a graphics API other than Vulkan, has none; \
                     `--backend vulkan` compiles to SPIR-V)"
                }
                _ => ": the device offers no cooperative-matrix configuration",
            };
            format!(
                "backend {} runs burn's matmuls on {}'s scalar units, not its tensor cores{hint}",
                self.backend, self.name
            )
        })
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device: {}", self.backend)?;
        if let Some(gpu) = self.gpu {
            write!(f, " GPU {gpu}")?;
        }
        write!(f, " ({}", self.name)?;
        if let Some(pci) = &self.pci_address {
            write!(f, ", PCI {pci}")?;
        }
        f.write_str(")")?;
        if let Some(api) = self.api {
            write!(f, ", {api}")?;
        }
        if self.precision != Precision::F32 {
            write!(f, ", {}", self.precision)?;
        }
        if self.mixed_precision != Precision::F32 {
            write!(f, ", mixed precision {}", self.mixed_precision)?;
        }
        if self.kernels == crate::fused::GpuKernels::Composed {
            f.write_str(", burn's composed ops (REASONLAB_GPU_KERNELS=composed)")?;
        } else if self.backend != BackendKind::Flex
            && self.attention == crate::fused::GpuAttention::Matmul
        {
            f.write_str(", attention as matmuls (REASONLAB_GPU_ATTENTION=matmul)")?;
        }
        if self.software {
            f.write_str(", software adapter")?;
        }
        match self.matmul {
            MatmulUnits::CooperativeMatrix(n) => write!(
                f,
                ", matmuls on cooperative-matrix units ({n} configurations)"
            )?,
            MatmulUnits::Scalar if !self.software => f.write_str(", matmuls on scalar units")?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_flags_and_toml() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.name().parse::<BackendKind>().unwrap(), kind);
            let toml = format!("backend = {:?}", kind.name());
            #[derive(Deserialize)]
            struct T {
                backend: BackendKind,
            }
            assert_eq!(toml::from_str::<T>(&toml).unwrap().backend, kind);
        }
        assert_eq!("cpu".parse::<BackendKind>().unwrap(), BackendKind::Flex);
        let err = "tpu".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("flex, wgpu, vulkan or cuda"), "{err}");
    }

    #[test]
    fn a_backend_not_compiled_in_says_which_feature_to_add() {
        for kind in BackendKind::ALL.into_iter().filter(|k| !k.compiled()) {
            let err = device_for(kind, false).unwrap_err().to_string();
            assert!(err.contains(&format!("--features {kind}")), "{err}");
        }
    }

    #[test]
    fn the_cpu_backend_reports_itself_and_never_warns() {
        let (_, info) = open(BackendKind::Flex, true).unwrap();
        assert_eq!(info.backend, BackendKind::Flex);
        assert!(info.name.contains("threads"), "{info}");
        assert_eq!(info.matmul, MatmulUnits::Cpu);
        assert!(info.warnings().is_empty());
        assert!(info.to_string().starts_with("device: flex"));
    }

    #[test]
    fn the_gpu_kernels_choice_parses_and_shows() {
        use crate::fused::{GpuAttention, GpuKernels};
        assert_eq!("fused".parse::<GpuKernels>(), Ok(GpuKernels::Fused));
        assert_eq!("composed".parse::<GpuKernels>(), Ok(GpuKernels::Composed));
        let err = "compose".parse::<GpuKernels>().unwrap_err();
        assert!(
            err.contains("`compose`") && err.contains("fused or composed"),
            "{err}"
        );
        let info = DeviceInfo {
            backend: BackendKind::Wgpu,
            name: "NVIDIA H200".into(),
            software: false,
            precision: Precision::F32,
            mixed_precision: Precision::F32,
            kernels: GpuKernels::Composed,
            attention: GpuAttention::Flash,
            matmul: MatmulUnits::Scalar,
            api: None,
            pci_address: None,
            gpu: None,
            unheeded_cuda_mask: None,
        };
        assert!(
            info.to_string().contains("REASONLAB_GPU_KERNELS=composed"),
            "{info}"
        );
        assert_eq!("flash".parse::<GpuAttention>(), Ok(GpuAttention::Flash));
        assert_eq!("matmul".parse::<GpuAttention>(), Ok(GpuAttention::Matmul));
        let err = "flashy".parse::<GpuAttention>().unwrap_err();
        assert!(err.contains("flash or matmul"), "{err}");
        let info = DeviceInfo {
            kernels: GpuKernels::Fused,
            attention: GpuAttention::Matmul,
            ..info
        };
        assert!(
            info.to_string().contains("REASONLAB_GPU_ATTENTION=matmul"),
            "{info}"
        );
    }

    #[test]
    fn a_software_adapter_is_warned_about() {
        let info = DeviceInfo {
            backend: BackendKind::Wgpu,
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            software: true,
            precision: Precision::F16,
            mixed_precision: Precision::F32,
            kernels: crate::fused::GpuKernels::Fused,
            attention: crate::fused::GpuAttention::Flash,
            matmul: MatmulUnits::Scalar,
            api: None,
            pci_address: None,
            gpu: None,
            unheeded_cuda_mask: None,
        };
        let warning = info.warnings().pop().unwrap();
        assert!(warning.contains("software adapter") && warning.contains("llvmpipe"));
        assert!(
            info.to_string().ends_with(", f16, software adapter"),
            "{info}"
        );
    }

    #[test]
    fn a_gpu_without_tensor_cores_for_its_matmuls_is_warned_about() {
        let card = DeviceInfo {
            backend: BackendKind::Vulkan,
            name: "NVIDIA H200".into(),
            software: false,
            precision: Precision::F32,
            mixed_precision: Precision::F16,
            kernels: crate::fused::GpuKernels::Fused,
            attention: crate::fused::GpuAttention::Flash,
            matmul: MatmulUnits::CooperativeMatrix(6),
            api: Some(GraphicsApi::Vulkan),
            pci_address: None,
            gpu: None,
            unheeded_cuda_mask: None,
        };
        assert!(card.warnings().is_empty(), "{card}");
        assert!(
            card.to_string().ends_with(
                ", mixed precision f16, matmuls on cooperative-matrix units (6 configurations)"
            ),
            "{card}"
        );
        let scalar = DeviceInfo {
            matmul: MatmulUnits::Scalar,
            ..card.clone()
        };
        let warning = scalar.warnings().pop().unwrap();
        assert!(
            warning.contains("scalar units") && warning.contains("NVIDIA H200"),
            "{warning}"
        );
        assert!(
            scalar.to_string().ends_with(", matmuls on scalar units"),
            "{scalar}"
        );
        // Through WGSL, the warning names the build that has the instructions.
        let wgsl = DeviceInfo {
            backend: BackendKind::Wgpu,
            ..scalar
        };
        let warning = wgsl.warnings().pop().unwrap();
        assert_eq!(
            warning.contains("--features vulkan"),
            !BackendKind::Vulkan.compiled(),
            "{warning}"
        );
        let json = serde_json::to_string(&card.matmul).unwrap();
        assert_eq!(json, r#"{"cooperative-matrix":6}"#);
    }

    #[test]
    fn the_line_names_the_chosen_gpu_and_an_unheeded_cuda_mask_is_warned_about() {
        let card = DeviceInfo {
            backend: BackendKind::Vulkan,
            name: "NVIDIA H200".into(),
            software: false,
            precision: Precision::F32,
            mixed_precision: Precision::F32,
            kernels: crate::fused::GpuKernels::Fused,
            attention: crate::fused::GpuAttention::Flash,
            matmul: MatmulUnits::CooperativeMatrix(6),
            api: Some(GraphicsApi::Vulkan),
            pci_address: Some("0000:1b:00.0".into()),
            gpu: Some(3),
            unheeded_cuda_mask: None,
        };
        assert!(
            card.to_string()
                .starts_with("device: vulkan GPU 3 (NVIDIA H200, PCI 0000:1b:00.0), Vulkan,"),
            "{card}"
        );
        assert!(card.warnings().is_empty());
        let unpinned = DeviceInfo {
            gpu: None,
            unheeded_cuda_mask: Some("2".into()),
            ..card
        };
        assert!(
            unpinned
                .to_string()
                .starts_with("device: vulkan (NVIDIA H200, PCI 0000:1b:00.0),"),
            "{unpinned}"
        );
        let warnings = unpinned.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("CUDA_VISIBLE_DEVICES=2")
                && warnings[0].contains("at PCI 0000:1b:00.0")
                && warnings[0].contains("--gpu N"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_gpu_reached_through_opengl_is_warned_about() {
        let gl = DeviceInfo {
            backend: BackendKind::Wgpu,
            name: "NVIDIA H100 80GB HBM3".into(),
            software: false,
            precision: Precision::F32,
            mixed_precision: Precision::F32,
            kernels: crate::fused::GpuKernels::Fused,
            attention: crate::fused::GpuAttention::Flash,
            matmul: MatmulUnits::Scalar,
            api: Some(GraphicsApi::OpenGl),
            pci_address: None,
            gpu: None,
            unheeded_cuda_mask: None,
        };
        let warning = gl.warnings().pop().unwrap();
        assert!(
            warning.contains("through OpenGL") && warning.contains("VK_DRIVER_FILES"),
            "{warning}"
        );
        assert!(
            gl.to_string()
                .starts_with("device: wgpu (NVIDIA H100 80GB HBM3), OpenGL,"),
            "{gl}"
        );
        let vulkan = DeviceInfo {
            api: Some(GraphicsApi::Vulkan),
            ..gl
        };
        let warning = vulkan.warnings().pop().unwrap();
        assert!(
            !warning.contains("OpenGL") && warning.contains("scalar units"),
            "{warning}"
        );
        assert_eq!(serde_json::to_string(&vulkan.api).unwrap(), r#""vulkan""#);
    }

    #[test]
    fn reduced_precision_is_refused_on_the_cpu_backend() {
        for p in [Precision::Bf16, Precision::F16] {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            let err = open_inference(BackendKind::Flex, p)
                .unwrap_err()
                .to_string();
            assert!(err.contains("flex computes in f32"), "{err}");
        }
        let (_, info) = open_inference(BackendKind::Flex, Precision::F32).unwrap();
        assert_eq!(info.precision, Precision::F32);
        assert!("fp8".parse::<Precision>().is_err());
    }

    #[test]
    fn mixed_precision_is_refused_on_the_cpu_backend() {
        for p in [Precision::Bf16, Precision::F16] {
            let training = Training {
                mixed_precision: p,
                ..Default::default()
            };
            let err = open_for_training(BackendKind::Flex, training)
                .unwrap_err()
                .to_string();
            assert!(err.contains("flex trains in f32"), "{err}");
            let model = crate::Model::random(crate::bench_config(), 0, &Device::flex().autodiff());
            assert!(model.with_mixed_precision(p).is_err());
        }
        let (_, info) = open_for_training(BackendKind::Flex, Training::default()).unwrap();
        assert_eq!(info.mixed_precision, Precision::F32);
        assert!(!info.to_string().contains("mixed"));
    }
}
