//! Rolling temporal latent cache (moved from `engines::latent_cache`, which re-exports it): the denoised latent of
//! each tile is blended with the previous frame's where the scene is still, weighted by how little the input's
//! latent changed there, so that static regions stop flickering and moving ones are not ghosted. Reset on cuts,
//! flushes and seeks.

/// Mean absolute change over channels at each latent pixel, then a 3x3 box (replicated border).
pub fn latent_change(cur: &[f32], prev: &[f32], channels: usize, w: usize, h: usize) -> Vec<f32> {
    let n = w * h;
    let mut d = vec![0.0f32; n];
    for c in 0..channels {
        for (i, v) in d.iter_mut().enumerate() {
            *v += (cur[c * n + i] - prev[c * n + i]).abs();
        }
    }
    for v in &mut d {
        *v /= channels as f32;
    }
    let mut out = vec![0.0f32; n];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0f32;
            for dy in -1isize..=1 {
                let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                for dx in -1isize..=1 {
                    let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                    s += d[yy * w + xx];
                }
            }
            out[y * w + x] = s / 9.0;
        }
    }
    out
}

/// How much of the cache to keep at each pixel: `blend * exp(-(change / tolerance)^2)`.
pub fn cache_weight(change: &[f32], blend: f32, tolerance: f32) -> Vec<f32> {
    change
        .iter()
        .map(|&d| {
            let x = d as f64 / tolerance as f64;
            (blend as f64 * (-(x * x)).exp()) as f32
        })
        .collect()
}

/// Blends one tile's `denoised` (`[c][h][w]`) in place with its cached output, weighted by the change between
/// `reference` and `cached_reference` (the input latents of this and the cached frame).
#[allow(clippy::too_many_arguments)]
pub fn blend_tile(
    reference: &[f32],
    cached_reference: &[f32],
    cached_output: &[f32],
    denoised: &mut [f32],
    (c, h, w): (usize, usize, usize),
    blend: f32,
    tolerance: f32,
) {
    let change = latent_change(reference, cached_reference, c, w, h);
    let weight = cache_weight(&change, blend, tolerance.max(1e-12));
    for ch in 0..c {
        for (i, &wv) in weight.iter().enumerate() {
            let j = ch * h * w + i;
            denoised[j] = wv * cached_output[j] + (1.0 - wv) * denoised[j];
        }
    }
}

/// Per-tile state: the input latents and blended output latents of the last frame.
#[derive(Clone, Debug, Default)]
pub struct LatentCache {
    /// `[tiles][channels][h][w]` as flat vectors, with their item shape.
    reference: Vec<f32>,
    output: Vec<f32>,
    shape: (usize, usize, usize, usize),
}

impl LatentCache {
    pub fn reset(&mut self) {
        self.reference.clear();
        self.output.clear();
        self.shape = (0, 0, 0, 0);
    }

    pub fn is_empty(&self) -> bool {
        self.output.is_empty()
    }

    /// Blends `denoised` (`[tiles][c][h][w]`) in place with the cache, using the change between `reference` (this
    /// frame's input latents) and the cached one; then stores both. `blend = 0` only stores.
    pub fn apply(
        &mut self,
        reference: &[f32],
        denoised: &mut [f32],
        shape: (usize, usize, usize, usize),
        blend: f32,
        tolerance: f32,
    ) {
        let (tiles, c, h, w) = shape;
        if blend > 0.0 && !self.is_empty() && self.shape == shape {
            let item = c * h * w;
            for t in 0..tiles {
                let r = t * item..(t + 1) * item;
                blend_tile(
                    &reference[r.clone()],
                    &self.reference[r.clone()],
                    &self.output[r.clone()],
                    &mut denoised[r],
                    (c, h, w),
                    blend,
                    tolerance,
                );
            }
        }
        self.shape = shape;
        self.reference.clear();
        self.reference.extend_from_slice(reference);
        self.output.clear();
        self.output.extend_from_slice(denoised);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_regions_blend_and_moving_ones_do_not() {
        let shape = (1, 1, 4, 4);
        let mut cache = LatentCache::default();
        let reference = vec![0.0f32; 16];
        let mut first = vec![1.0f32; 16];
        cache.apply(&reference, &mut first, shape, 0.5, 0.1);
        // Same input, different output: blended half way.
        let mut second = vec![0.0f32; 16];
        cache.apply(&reference, &mut second, shape, 0.5, 0.1);
        assert!(second.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        // Input changed a lot: the new output is kept.
        let moved = vec![5.0f32; 16];
        let mut third = vec![2.0f32; 16];
        cache.apply(&moved, &mut third, shape, 0.5, 0.1);
        assert!(third.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }
}
