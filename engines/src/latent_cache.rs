//! Rolling temporal latent cache: the denoised latent of each tile is blended with the previous frame's where the
//! scene is still, weighted by how little the input's latent changed there, so that static regions stop
//! flickering and moving ones are not ghosted. Reset on cuts, flushes and seeks.
//!
//! The maths lives in `kernels::latent::cache` (the CPU twin of the device cache blend); re-exported here.

pub use kernels::latent::cache::{cache_weight, latent_change, LatentCache};
