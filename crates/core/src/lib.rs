//! Shared foundations: the generation protocol ([`engine`]), JSONL I/O with line-numbered
//! errors, atomic writes, seeds.

#![forbid(unsafe_code)]

pub mod engine;
pub mod fs;
pub mod hash;
pub mod jsonl;
pub mod rng;
