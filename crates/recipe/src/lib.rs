//! The application layer: run drivers for every stage ([`run`]: each owns its TOML schema and
//! run folder), where completions come from ([`engines`]), the trace sampling behind rejection
//! sampling and distillation ([`traces`]), plots, and the R1-Zero demo.

#![forbid(unsafe_code)]

pub mod demo;
pub mod engines;
pub mod experiments;
pub mod pipeline;
pub mod plots;
pub mod run;
pub mod supervision;
pub mod task;
pub mod traces;
