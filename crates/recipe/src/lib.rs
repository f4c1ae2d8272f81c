//! Multi-stage recipes built from the stage crates: the R1-Zero demo, and the trace sampling
//! behind rejection sampling (`reasonlab sample`) and distillation (`reasonlab distill`).

pub mod demo;
pub mod plots;
pub mod traces;
