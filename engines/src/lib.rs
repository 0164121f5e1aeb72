//! The diffusion prior of oldfilmrestore, StreamDiffusion-style, with no GStreamer dependency.
//!
//! - [`bundle`]: engine bundles (`manifest.toml`, ONNX models, prompt embeddings), checked when opened.
//! - [`runtime`]: ONNX Runtime loaded at run time, sessions on TensorRT / CUDA / CPU, model calls.
//! - [`prior`]: [`DiffusionPrior`], the per-frame algorithm on [`kernels::WorkFrame`]s.
//! - the pieces it is made of, each testable alone: [`tiling`], [`noise`], [`schedule`], [`ssf`],
//!   [`latent_cache`], [`stream_batch`], [`image`] (RGB conversion, colour fix).
//!
//! `engines/export/` holds the Python side: the bundle exporter and the reference implementation the tests compare
//! against.

pub mod bundle;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod image;
pub mod latent_cache;
pub mod models;
pub mod noise;
mod overlap;
pub mod prior;
pub mod runtime;
pub mod schedule;
pub mod ssf;
mod stages;
pub mod stream_batch;
pub mod tensor;
pub mod tiling;

pub use bundle::{Bundle, Kind};
pub use error::EngineError;
pub use image::RgbImage;
pub use prior::{DiffusionPrior, PriorConfig, PriorStats, Restored, StreamParams};
pub use runtime::{Device, Provider};
pub use tensor::Tensor;
