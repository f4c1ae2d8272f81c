//! The corpus crate's generator is the project's SplitMix64 (`reasonlab_core::rng`): every
//! sampler here takes an explicit seed, and the stream does not depend on a crate version.

pub use reasonlab_core::rng::SplitMix64 as Rng;
