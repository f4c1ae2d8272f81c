//! Math corpus curation, the DeepSeekMath way (Shao et al. 2024, §2.1): a fastText-compatible
//! classifier ([`fasttext`]), readers for WARC / WET / JSONL with math-preserving HTML to text
//! ([`reader`]), iterative recall rounds over a pool of pages ([`recall`]), exact and MinHash
//! near-duplicate removal ([`dedup`]) and 10-gram benchmark decontamination ([`decontam`]);
//! optional CJK word segmentation before classifier features ([`segment`]).

pub mod bench;
pub mod classifier;
pub mod decontam;
pub mod dedup;
pub mod fasttext;
pub mod reader;
pub mod recall;
mod rng;
pub mod segment;
pub mod stages;

pub use rng::Rng;
