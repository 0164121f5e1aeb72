//! Tiling for frames larger (or smaller) than the model: tiles of the model's size with at least `overlap` pixels
//! of overlap, run as one batch, blended back with feathered weights. A frame smaller than a tile is padded by
//! replicating its border.
//!
//! The maths lives in `kernels::latent::tiles` (the CPU twin of the device tile blend); re-exported here.

pub use kernels::latent::tiles::{tile_starts, Grid};
