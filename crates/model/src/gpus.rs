//! Which of the machine's GPUs a GPU backend opens: the adapters a backend can reach, as
//! `reasonlab devices` lists them, and the choice of one (`--gpu N`, `REASONLAB_GPU=N`).
//!
//! CUDA numbers its devices itself and honours `CUDA_VISIBLE_DEVICES`. The `wgpu` and `vulkan`
//! backends reach the GPUs through the graphics API's adapter list instead, which CUDA's
//! variable does not filter (the NVIDIA driver's Vulkan devices ignore it): on a machine with
//! several GPUs those backends open wgpu's high-performance pick, the first discrete GPU, unless
//! a GPU is chosen here. One process runs on one chosen GPU.

use std::sync::OnceLock;

use serde::Serialize;

use crate::backend::{BackendKind, GraphicsApi};
use crate::error::ModelError;

/// The environment variable that chooses the GPU where the command line does not.
pub const GPU_VAR: &str = "REASONLAB_GPU";

/// Which GPU a GPU backend opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuChoice {
    /// The runtime's pick: for `wgpu` and `vulkan`, wgpu's high-performance preference (the
    /// first discrete GPU, else integrated, other, virtual, software); for `cuda`, device 0
    /// after `CUDA_VISIBLE_DEVICES`.
    #[default]
    Default,
    /// For `wgpu` and `vulkan`, the adapter at this place of [`adapters`]' list; for `cuda`,
    /// CUDA's device of this number.
    Index(usize),
}

impl std::str::FromStr for GpuChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "default" => Ok(Self::Default),
            n => n.parse().map(Self::Index).map_err(|_| {
                format!("`{s}` is not a GPU: expected its number in `reasonlab devices` (0, 1, …)")
            }),
        }
    }
}

static CHOSEN: OnceLock<GpuChoice> = OnceLock::new();

/// Choose the GPU the GPU backends open in this process, ahead of `REASONLAB_GPU`. Make the
/// choice before the first device opens: a device already open stays where it is. Choosing
/// again is refused unless it is the same choice.
pub fn choose(choice: GpuChoice) -> Result<(), ModelError> {
    let held = *CHOSEN.get_or_init(|| choice);
    match held == choice {
        true => Ok(()),
        false => Err(ModelError::Input(format!(
            "this process has chosen GPU {held:?} already; it cannot move to {choice:?}"
        ))),
    }
}

/// The choice in force: [`choose`]'s, else `REASONLAB_GPU`'s, else [`GpuChoice::Default`].
pub fn chosen() -> Result<GpuChoice, ModelError> {
    if let Some(choice) = CHOSEN.get() {
        return Ok(*choice);
    }
    match std::env::var(GPU_VAR) {
        Ok(value) => value
            .parse()
            .map_err(|e| ModelError::Input(format!("{GPU_VAR}: {e}"))),
        Err(_) => Ok(GpuChoice::Default),
    }
}

/// What kind of adapter the graphics API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    /// A software rasterizer on the CPU (Mesa's llvmpipe/lavapipe, WARP).
    Software,
    /// What the API does not classify (OpenGL's adapters often).
    Other,
}

impl AdapterKind {
    /// wgpu's order under its high-performance preference (`wgpu-core`'s adapter sort): the
    /// default device is the first adapter of the lowest rank.
    fn preference(self) -> u8 {
        match self {
            Self::Discrete => 1,
            Self::Integrated => 2,
            Self::Other => 3,
            Self::Virtual => 4,
            Self::Software => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Discrete => "discrete",
            Self::Integrated => "integrated",
            Self::Virtual => "virtual",
            Self::Software => "software",
            Self::Other => "other",
        }
    }
}

/// One adapter a GPU backend can open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adapter {
    /// Its place in the list: what `--gpu` and `REASONLAB_GPU` take.
    pub index: usize,
    /// As the driver names it (`NVIDIA H200`).
    pub name: String,
    pub kind: AdapterKind,
    pub api: GraphicsApi,
    /// The driver's name and version, as the API reports them.
    pub driver: String,
    /// `domain:bus:device.function`, where the API reports it (Vulkan on Linux does).
    pub pci_address: Option<String>,
    /// The adapter the backend opens when no GPU is chosen.
    pub default: bool,
}

/// The place among `kinds` of the adapter wgpu opens by default (its high-performance pick).
pub fn default_place(kinds: &[AdapterKind]) -> Option<usize> {
    (0..kinds.len()).min_by_key(|&i| (kinds[i].preference(), i))
}

/// How wgpu addresses the adapter at `place` of `kinds` (its own enumeration, in order): each
/// type counts from zero on its own, and only the first software adapter can be named.
pub fn device_kind_at(
    kinds: &[AdapterKind],
    place: usize,
) -> Result<burn::tensor::DeviceKind, String> {
    use burn::tensor::DeviceKind;
    let Some(&kind) = kinds.get(place) else {
        return Err(format!(
            "there is no GPU {place}: the backend reaches {} adapter{} (numbered from 0; \
             `reasonlab devices` lists them)",
            kinds.len(),
            if kinds.len() == 1 { "" } else { "s" }
        ));
    };
    let same = kinds[..place].iter().filter(|k| **k == kind).count();
    match kind {
        AdapterKind::Discrete => Ok(DeviceKind::DiscreteGpu(same)),
        AdapterKind::Integrated => Ok(DeviceKind::IntegratedGpu(same)),
        AdapterKind::Virtual => Ok(DeviceKind::VirtualGpu(same)),
        AdapterKind::Software if same == 0 => Ok(DeviceKind::Cpu),
        AdapterKind::Software => Err(format!(
            "GPU {place} is the machine's software adapter number {same}; wgpu opens only the \
             first"
        )),
        AdapterKind::Other => Err(format!(
            "GPU {place} is of no type the graphics API names, which wgpu cannot open by number"
        )),
    }
}

/// The adapters `kind` can open, in the order `--gpu` numbers them (the graphics API's own):
/// Vulkan's for `vulkan`, those of the API wgpu settles on for `wgpu`. Listed once per API
/// and process.
pub fn adapters(kind: BackendKind) -> Result<Vec<Adapter>, ModelError> {
    match kind {
        BackendKind::Flex => Err(ModelError::Input(
            "backend flex runs on the CPU; `reasonlab devices` lists the GPU backends' \
             adapters (--backend wgpu or vulkan)"
                .into(),
        )),
        BackendKind::Cuda => Err(ModelError::Input(
            "backend cuda numbers its GPUs as CUDA does (`nvidia-smi -L`, after \
             CUDA_VISIBLE_DEVICES); --gpu N opens CUDA's device N"
                .into(),
        )),
        _ if !kind.compiled() => Err(ModelError::Input(format!(
            "backend {kind} is not compiled in; rebuild with `--features {kind}`"
        ))),
        _ => wgpu_adapters(kind),
    }
}

#[cfg(any(feature = "wgpu", feature = "vulkan"))]
fn wgpu_adapters(kind: BackendKind) -> Result<Vec<Adapter>, ModelError> {
    use cubecl_wgpu::wgpu;
    let backend = match kind {
        BackendKind::Vulkan => wgpu::Backend::Vulkan,
        _ => <cubecl_wgpu::AutoGraphicsApi as cubecl_wgpu::GraphicsApi>::backend(),
    };
    let api = crate::backend::api_of(backend).ok_or_else(|| {
        ModelError::Backend(format!(
            "backend {kind} settled on {backend:?}, which it cannot list"
        ))
    })?;
    // Each API's list with the instance that made it, kept for the process: the Vulkan loader
    // is fragile when instances come and go while another thread opens a device.
    type Listed = (wgpu::Backend, wgpu::Instance, Vec<Adapter>);
    static LISTED: std::sync::Mutex<Vec<Listed>> = std::sync::Mutex::new(Vec::new());
    let mut listed = LISTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, adapters)) = listed.iter().find(|(b, _, _)| *b == backend) {
        return Ok(adapters.clone());
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let found = futures_lite::future::block_on(instance.enumerate_adapters(backend.into()));
    let infos: Vec<wgpu::AdapterInfo> = found.iter().map(wgpu::Adapter::get_info).collect();
    let kinds: Vec<AdapterKind> = infos
        .iter()
        .map(|info| match info.device_type {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
            wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
            wgpu::DeviceType::Cpu => AdapterKind::Software,
            wgpu::DeviceType::Other => AdapterKind::Other,
        })
        .collect();
    let default = default_place(&kinds);
    let adapters: Vec<Adapter> = infos
        .into_iter()
        .zip(kinds)
        .enumerate()
        .map(|(index, (info, kind))| Adapter {
            index,
            name: info.name,
            kind,
            api,
            driver: [info.driver, info.driver_info]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            pci_address: Some(info.device_pci_bus_id).filter(|s| !s.is_empty()),
            default: default == Some(index),
        })
        .collect();
    listed.push((backend, instance, adapters.clone()));
    Ok(adapters)
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan")))]
fn wgpu_adapters(kind: BackendKind) -> Result<Vec<Adapter>, ModelError> {
    Err(ModelError::Input(format!(
        "backend {kind} is not compiled in; rebuild with `--features {kind}`"
    )))
}

/// The wgpu device `kind` opens under the choice in force: wgpu's default, or the chosen
/// adapter addressed by its type and number.
#[cfg(any(feature = "wgpu", feature = "vulkan"))]
pub(crate) fn wgpu_device_kind(kind: BackendKind) -> Result<burn::tensor::DeviceKind, ModelError> {
    use burn::tensor::DeviceKind;
    let place = match chosen()? {
        GpuChoice::Default => return Ok(DeviceKind::DefaultDevice),
        GpuChoice::Index(place) => place,
    };
    let kinds: Vec<AdapterKind> = adapters(kind)?.iter().map(|a| a.kind).collect();
    device_kind_at(&kinds, place).map_err(|e| ModelError::Input(format!("backend {kind}: {e}")))
}

/// CUDA's device number under the choice in force.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_index() -> Result<usize, ModelError> {
    Ok(match chosen()? {
        GpuChoice::Default => 0,
        GpuChoice::Index(n) => n,
    })
}

/// `CUDA_VISIBLE_DEVICES` where it is set, a `wgpu` or `vulkan` backend runs on a machine
/// with more than one GPU, and no GPU was chosen: the variable then narrows nothing for it,
/// which a run launched the CUDA way should be told.
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
pub(crate) fn unheeded_cuda_mask(kind: BackendKind) -> Option<String> {
    if !matches!(kind, BackendKind::Wgpu | BackendKind::Vulkan) {
        return None;
    }
    let mask = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    if chosen().ok()? != GpuChoice::Default {
        return None;
    }
    let cards = adapters(kind).ok()?;
    let cards = cards
        .iter()
        .filter(|a| a.kind != AdapterKind::Software)
        .count();
    (cards > 1).then_some(mask)
}

/// The card a GPU backend runs on, named so that a CUDA program on the same machine can find
/// it: `pci:ADDRESS` for `wgpu` and `vulkan` (the adapter chosen, else the default one, where
/// the API reports its PCI address), CUDA's device number for `cuda`. `None` on flex and where
/// the card cannot be named.
pub fn cuda_card(kind: BackendKind) -> Option<String> {
    let choice = chosen().ok()?;
    match kind {
        BackendKind::Flex => None,
        BackendKind::Cuda => match choice {
            GpuChoice::Index(n) => Some(n.to_string()),
            GpuChoice::Default => None,
        },
        _ => {
            let adapters = adapters(kind).ok()?;
            let card = match choice {
                GpuChoice::Index(n) => adapters.get(n)?,
                GpuChoice::Default => adapters.iter().find(|a| a.default)?,
            };
            card.pci_address.as_ref().map(|a| format!("pci:{a}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AdapterKind::*;
    use burn::tensor::DeviceKind;

    #[test]
    fn a_place_in_the_list_is_addressed_by_its_type_and_number() {
        let machine = [Integrated, Discrete, Software, Discrete, Virtual];
        let expected = [
            DeviceKind::IntegratedGpu(0),
            DeviceKind::DiscreteGpu(0),
            DeviceKind::Cpu,
            DeviceKind::DiscreteGpu(1),
            DeviceKind::VirtualGpu(0),
        ];
        for (place, want) in expected.into_iter().enumerate() {
            assert_eq!(device_kind_at(&machine, place).unwrap(), want, "{place}");
        }
        let err = device_kind_at(&machine, 5).unwrap_err();
        assert!(
            err.contains("no GPU 5") && err.contains("5 adapters"),
            "{err}"
        );
        let err = device_kind_at(&[Software, Software], 1).unwrap_err();
        assert!(err.contains("only the first"), "{err}");
        assert!(device_kind_at(&[Other], 0).is_err());
    }

    #[test]
    fn the_default_is_wgpus_high_performance_pick() {
        assert_eq!(default_place(&[Integrated, Discrete, Discrete]), Some(1));
        assert_eq!(default_place(&[Software, Integrated]), Some(1));
        assert_eq!(default_place(&[Software, Virtual, Other]), Some(2));
        assert_eq!(default_place(&[Software]), Some(0));
        assert_eq!(default_place(&[]), None);
    }

    #[test]
    fn a_choice_parses_from_the_variable() {
        assert_eq!("3".parse::<GpuChoice>(), Ok(GpuChoice::Index(3)));
        assert_eq!(" 0 ".parse::<GpuChoice>(), Ok(GpuChoice::Index(0)));
        assert_eq!("".parse::<GpuChoice>(), Ok(GpuChoice::Default));
        let err = "cuda:1".parse::<GpuChoice>().unwrap_err();
        assert!(
            err.contains("`cuda:1`") && err.contains("reasonlab devices"),
            "{err}"
        );
        assert!("-1".parse::<GpuChoice>().is_err());
    }

    #[test]
    fn the_cpu_and_cuda_backends_list_nothing_and_say_why() {
        let err = adapters(BackendKind::Flex).unwrap_err().to_string();
        assert!(err.contains("CPU"), "{err}");
        let err = adapters(BackendKind::Cuda).unwrap_err().to_string();
        assert!(err.contains("CUDA_VISIBLE_DEVICES"), "{err}");
    }
}
