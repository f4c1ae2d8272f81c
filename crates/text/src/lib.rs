//! Text utilities shared by the data and reward crates.
//!
//! Word n-gram hashing ([`ngram`]) and MinHash ([`minhash`]) serve dedup and
//! decontamination in `corpus`. Unicode script detection ([`script`]), which the language-consistency
//! reward uses to measure how much of a chain of thought is written in the target script
//! (DeepSeek-R1 §2.3.3: "the proportion of target language words in the CoT").

#![forbid(unsafe_code)]

pub mod minhash;
pub mod ngram;
pub mod script;

pub use script::{Script, ScriptCounts, script_counts, script_of};
