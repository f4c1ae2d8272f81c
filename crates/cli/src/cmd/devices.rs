//! `reasonlab devices`: the GPUs a backend can open, numbered as `--gpu` takes them.

use clap::Args as ClapArgs;
use reasonlab_model::BackendKind;
use reasonlab_model::gpus::{self, Adapter};

#[derive(ClapArgs)]
pub struct Args {
    /// The GPU backend whose adapters to list: wgpu or vulkan (cuda numbers its GPUs as
    /// `nvidia-smi -L` does).
    #[arg(long, default_value = "wgpu")]
    backend: BackendKind,
    /// Print one JSON object per adapter instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let adapters = gpus::adapters(args.backend)?;
    if args.json {
        for a in &adapters {
            println!("{}", serde_json::to_string(a)?);
        }
        return Ok(());
    }
    print!("{}", table(args.backend, &adapters));
    Ok(())
}

/// The listing: one line per adapter, the default marked, and how to choose.
fn table(backend: BackendKind, adapters: &[Adapter]) -> String {
    if adapters.is_empty() {
        return format!(
            "backend {backend}: no adapter found (is the GPU's Vulkan driver installed? \
             `vulkaninfo --summary` lists what the loader sees)\n"
        );
    }
    let name_width = adapters.iter().map(|a| a.name.len()).max().unwrap_or(0);
    let mut out = format!(
        "backend {backend} ({}): {} adapter{}; --gpu N or REASONLAB_GPU=N opens one, the \
         default (*) otherwise\n",
        adapters[0].api,
        adapters.len(),
        if adapters.len() == 1 { "" } else { "s" }
    );
    for a in adapters {
        out += &format!(
            "{}{:>2}  {:<name_width$}  {:<10}  {:<16}  {}\n",
            if a.default { '*' } else { ' ' },
            a.index,
            a.name,
            a.kind.name(),
            a.pci_address
                .as_deref()
                .map(|p| format!("PCI {p}"))
                .unwrap_or_else(|| "-".into()),
            a.driver
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reasonlab_model::GraphicsApi;
    use reasonlab_model::gpus::AdapterKind;

    #[test]
    fn the_table_numbers_the_adapters_and_marks_the_default() {
        let card = |index, pci: &str, default| Adapter {
            index,
            name: "NVIDIA H200".into(),
            kind: AdapterKind::Discrete,
            api: GraphicsApi::Vulkan,
            driver: "NVIDIA 570.86.15".into(),
            pci_address: Some(pci.into()),
            default,
        };
        let soft = Adapter {
            index: 2,
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            kind: AdapterKind::Software,
            api: GraphicsApi::Vulkan,
            driver: "llvmpipe Mesa 22.3.6".into(),
            pci_address: None,
            default: false,
        };
        let adapters = [
            card(0, "0000:1b:00.0", true),
            card(1, "0000:43:00.0", false),
            soft,
        ];
        let text = table(BackendKind::Vulkan, &adapters);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("backend vulkan (Vulkan): 3 adapters;"),
            "{text}"
        );
        assert!(lines[1].starts_with("* 0  NVIDIA H200 "), "{text}");
        assert!(lines[1].contains("discrete") && lines[1].contains("PCI 0000:1b:00.0"));
        assert!(lines[2].starts_with("  1  NVIDIA H200 "), "{text}");
        assert!(lines[3].starts_with("  2  llvmpipe") && lines[3].contains("software"));
        let empty = table(BackendKind::Wgpu, &[]);
        assert!(empty.contains("no adapter found"), "{empty}");
    }
}
