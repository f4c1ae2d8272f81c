//! Shared foundations: records, JSONL I/O with line-numbered errors, atomic writes.

pub mod fs;
pub mod hash;
pub mod jsonl;
pub mod rng;
