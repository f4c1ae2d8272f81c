//! `reasonlab demo`: R1-Zero in miniature on the CPU (see the README).

#[derive(clap::Args)]
pub struct Args {
    /// Output folder.
    #[arg(long, default_value = "runs/demo")]
    out: std::path::PathBuf,
    /// The short CI variant.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = (&args.out, args.quick, args.seed);
    anyhow::bail!("the demo arrives with the GRPO trainer")
}
