//! Multi-stage recipes built from the stage crates. For now: the R1-Zero demo.

pub mod demo;
pub mod plots;
