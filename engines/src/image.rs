//! Planar RGB frames, the conversion from and to the working frame, the Gaussian colour fix and the similarity
//! filter's thumbnail.
//!
//! The maths lives in `kernels::latent` (next to the CUDA kernels that are checked against it); this module keeps
//! the paths the rest of the crate and its users know.

pub use kernels::latent::blur::{blur, colour_fix, gaussian_kernel};
pub use kernels::latent::rgb::RgbImage;
pub use kernels::latent::similarity::thumbnail;
