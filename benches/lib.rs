//! Inputs shared by the benchmarks: seeded textured frames in any format and size.

use kernels::{OwnedImage, PixelFormat, WorkFrame};

/// A seeded, textured frame (checker pattern plus noise) in the working representation.
pub fn textured(format: PixelFormat, width: usize, height: usize, seed: u64) -> WorkFrame {
    let mut frame = WorkFrame::new(format.geometry(width, height));
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, v) in frame.luma.data.iter_mut().enumerate() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let (x, y) = (i % width, i / width);
        *v = 0.25 + 0.35 * (((x / 16 + y / 16) % 2) as f32) + 0.15 * ((state >> 40) as f32 / (1u64 << 24) as f32);
    }
    frame
}

/// The same frame packed into `format`'s memory layout.
pub fn packed(format: PixelFormat, width: usize, height: usize, seed: u64) -> OwnedImage {
    let frame = textured(format, width, height, seed);
    let mut image = OwnedImage::new(format, width, height, 0);
    kernels::pack(format, &frame, &mut image.plane_muts()).expect("pack");
    image
}

/// Sizes the benchmarks report: 720p and 1080p.
pub const SIZES: [(&str, usize, usize); 2] = [("720p", 1280, 720), ("1080p", 1920, 1080)];
