//! One module per subcommand: a clap `Args` struct and a `run` function.

pub mod bench;
pub mod corpus;
pub mod demo;
pub mod devices;
pub mod distill;
pub mod eval;
pub mod experiment;
pub mod generate;
pub mod grpo;
pub mod local;
pub mod model;
pub mod pretrain;
pub mod recipe;
pub mod rm;
pub mod runcfg;
pub mod sample;
pub mod sandbox;
pub mod serve;
pub mod sft;
pub mod source;
pub mod verify;
