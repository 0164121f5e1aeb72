//! The CUDA path (issue 5): NVRTC kernels with CPU twins, and the device frame ring.
//!
//! Everything here is loaded at run time (`cudarc` with dynamic loading): the crate builds without CUDA, and every
//! entry point goes through [`available`] first, which checks that the driver (`libcuda`) and NVRTC can be loaded
//! and that a device exists, so a machine without CUDA gets a [`CudaUnavailable`] error and never a panic.
//!
//! - [`Gpu`]: one context, its streams, and the one module compiled by NVRTC from `kernels.cu` when it is opened.
//! - [`format`]: a pixel format's layout as the kernels read it (one device buffer, planes at offsets).
//! - one file per kernel family, each next to its twin test: [`unpack`] (pixel format to planar RGB tiles, f32 or
//!   f16), [`pack`] (planar RGB back to the format), [`similarity`] (thumbnail + cosine reduced on the device),
//!   [`cache`] (latent-cache blend), [`tiles`] (feathered tile blend), [`colour`] (Gaussian colour fix),
//!   [`schedule`] (fixed noise, denoising, the decoder's range).
//! - [`ring`]: the device frame ring (pinned staging, device buffers, upload / compute / download streams) on top
//!   of the CPU-tested [`crate::ring`].
//!
//! `emulate` (tests only) compiles `kernels.cu` as C++ and runs it on the CPU against the twins, bit for bit, so
//! the kernels' logic is tested on every machine. Tests that need a GPU are `#[ignore = "needs a CUDA GPU"]`: run them with `cargo test -p oldfilm-kernels --
//! --ignored` on a CUDA machine.

pub mod cache;
pub mod colour;
mod device;
#[cfg(test)]
mod emulate;
pub mod format;
pub mod pack;
pub mod ring;
pub mod schedule;
pub mod similarity;
pub mod tiles;
pub mod unpack;

pub use device::{available, CudaError, CudaUnavailable, Gpu};

#[cfg(test)]
pub(crate) mod test_util {
    use super::Gpu;
    use crate::rng::Rng;

    /// The first GPU, for tests that are ignored without one.
    pub fn gpu() -> Gpu {
        Gpu::new(0).unwrap_or_else(|e| panic!("this test needs a CUDA GPU: {e}"))
    }

    pub fn random(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.range_f32(lo, hi)).collect()
    }

    /// Largest absolute difference.
    pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }
}
