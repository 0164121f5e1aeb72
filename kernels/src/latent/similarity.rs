//! The similarity filter's maths: a small thumbnail of a frame and the cosine between two thumbnails (moved from
//! `engines::image` and `engines::ssf`; the skip decision itself stays in `engines::ssf`).

use super::rgb::RgbImage;

/// Longest side of a thumbnail, in samples.
pub const THUMB_MAX: usize = 64;

/// The box factor and thumbnail size for a `w x h` frame.
pub fn thumbnail_size(w: usize, h: usize) -> (usize, usize, usize) {
    let f = w.max(h).div_ceil(THUMB_MAX).max(1);
    (f, w.div_ceil(f), h.div_ceil(f))
}

/// The similarity filter's view of a frame: RGB mapped to `[-1, 1]`, box-averaged so the longer side is at most
/// 64 samples.
pub fn thumbnail(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width, img.height);
    let (f, tw, th) = thumbnail_size(w, h);
    let mut out = vec![0.0f32; 3 * tw * th];
    for ty in 0..th {
        for tx in 0..tw {
            let (y1, x1) = ((ty * f + f).min(h), (tx * f + f).min(w));
            let count = ((y1 - ty * f) * (x1 - tx * f)) as f32;
            let mut s = [0.0f32; 3];
            for y in ty * f..y1 {
                for x in tx * f..x1 {
                    for (c, sc) in s.iter_mut().enumerate() {
                        *sc += 2.0 * img.plane(c)[y * w + x] - 1.0;
                    }
                }
            }
            for (c, sc) in s.iter().enumerate() {
                out[c * tw * th + ty * tw + tx] = sc / count;
            }
        }
    }
    out
}

/// `(a.b, a.a, b.b)` in f64: what a device reduction hands back.
pub fn cosine_sums(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    (ab, aa, bb)
}

/// The cosine from its three sums; two empty (all-zero) vectors are identical, one is unlike anything.
pub fn cosine_from_sums(ab: f64, aa: f64, bb: f64) -> f64 {
    if aa == 0.0 || bb == 0.0 {
        return if aa == bb { 1.0 } else { 0.0 };
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Cosine similarity, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (ab, aa, bb) = cosine_sums(a, b);
    cosine_from_sums(ab, aa, bb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_at_most_64_wide_and_average_the_block() {
        assert_eq!(thumbnail_size(1920, 1080), (30, 64, 36));
        assert_eq!(thumbnail_size(5, 3), (1, 5, 3));
        let img = RgbImage::from_planar(3, 1, vec![0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(thumbnail(&img), vec![-1.0, 1.0, 0.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_of_parallel_opposite_and_empty_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[-1.0, -2.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
