//! Pixel maths for oldfilmrestore. Nothing here knows about GStreamer: every stage works on
//! [`frame::WorkFrame`]s and is testable with plain arrays.

// Frames travel between pools, channels and the window as one pointer each.
#![allow(clippy::vec_box)]
// Pixel loops index several rows and planes with one coordinate.
#![allow(clippy::needless_range_loop)]

pub mod blotch;
pub mod clean;
pub mod compare;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod cut;
pub mod deflicker;
pub mod degrade;
pub mod formats;
pub mod frame;
pub mod grain;
pub mod latent;
pub mod metrics;
pub mod motion;
pub mod noise;
pub mod pool;
pub mod post_thread;
pub mod restorer;
pub mod ring;
pub mod rng;
pub mod scratch;
pub mod simd;
pub mod stabilise;
pub mod stats;
pub mod window;
pub mod worker;

pub use formats::{pack, unpack, FormatError, OwnedImage, PixelFormat, PlaneMut, PlaneRef};
pub use frame::{Chroma, Geometry, Plane, WorkFrame};
