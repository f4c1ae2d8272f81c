//! Every hand-written kernel of the model, in one place. Burn's composed ops are the
//! reference: the tests check each kernel against them.
//!
//! - [`fused`]: training kernels with hand-written backward passes (masked softmax, SwiGLU,
//!   RMSNorm) through burn's backend extension;
//! - [`decode`]: the decode step's inference kernels (RoPE, attention over the KV cache, dense
//!   layers with the bias folded in);
//! - [`skinny`]: `X · W` for a few rows of `X`, the matmul of every decode step;
//! - `gpu` (with a GPU backend compiled in): cubecl kernels for burn's GPU backends: RMSNorm,
//!   the attention softmax, SwiGLU, RoPE, flash attention and token log-probabilities with
//!   their backward passes, and the decode step's attention over the KV cache.
//!
//! The AVX-512 paths are chosen at run time; [`avx512_available`] says whether this CPU takes
//! them, and kernel tests that compare an AVX-512 path with the portable one say so loudly when
//! it cannot be exercised.

pub mod decode;
pub mod fused;
#[cfg(feature = "gpu-kernels")]
pub mod gpu;
pub mod skinny;

/// Whether this CPU runs the AVX-512 kernels.
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// For tests: whether the AVX-512 path of `what` can be exercised here; when it cannot, say so
/// on stderr (run the tests with `--nocapture` to see it, and on an AVX-512 machine to cover
/// that path).
#[doc(hidden)]
pub fn avx512_or_say(what: &str) -> bool {
    let here = avx512_available();
    if !here {
        eprintln!(
            "WARNING: {what}: this CPU has no AVX-512F, so the AVX-512 kernel was NOT exercised \
             (only the portable path was tested)"
        );
    }
    here
}
