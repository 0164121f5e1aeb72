//! The diffusion prior's pixel and latent maths on planar RGB and latents, with no model and no GStreamer.
//!
//! `engines` runs these on the CPU (it re-exports them under its old paths: `engines::image`, `engines::tiling`,
//! `engines::latent_cache`, `engines::ssf::cosine`); the CUDA kernels in [`crate::cuda`] are checked against the
//! very same functions, so each function here is the CPU twin of one kernel.
//!
//! - [`rgb`]: [`rgb::RgbImage`] (planar RGB in `[0, 1]`), conversion from and to [`crate::WorkFrame`], the model's
//!   value range, and the one-tile unpack / whole-frame pack adapters over [`crate::formats`].
//! - [`blur`]: separable Gaussian blur and the colour fix (low-frequency transfer).
//! - [`similarity`]: the similarity filter's thumbnail and cosine.
//! - [`cache`]: the rolling latent cache (change, weight, blend).
//! - [`tiles`]: the tile grid (origins, feather ramps, extract, blend accumulation).
//! - [`schedule`]: adding the fixed noise, denoising a prediction, the decoder's range back to `[0, 1]`.

pub mod blur;
pub mod cache;
pub mod rgb;
pub mod schedule;
pub mod similarity;
pub mod tiles;

pub use rgb::RgbImage;
