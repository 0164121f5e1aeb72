//! Separable Gaussian blur and the colour fix (low-frequency transfer), moved from `engines::image`.

use rayon::prelude::*;

/// Normalised Gaussian taps, radius `ceil(3 sigma)` (at least 1).
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let sigma = sigma as f64;
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter().map(|v| (v / sum) as f32).collect()
}

/// Separable Gaussian blur of `channels` planes of `w x h`, replicated borders, accumulated tap by tap (rows in
/// parallel; every output value is computed the same way whatever the threads). Each output value is
/// `((0 + k0 s0) + k1 s1) + ...` in tap order, as the device kernels compute it; the loops run tap-outer over
/// whole rows so that they vectorise without changing that order.
pub fn blur(data: &[f32], channels: usize, w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let k = gaussian_kernel(sigma);
    let n = w * h;
    let mut tmp = vec![0.0f32; channels * n];
    let mut out = vec![0.0f32; channels * n];
    tmp.par_chunks_mut(w)
        .zip(data.par_chunks(w))
        .for_each(|(dst, src)| blur_row(src, dst, &k));
    out.par_chunks_mut(w).enumerate().for_each(|(row, dst)| {
        let (c, y) = (row / h, row % h);
        blur_column_step(&tmp[c * n..(c + 1) * n], dst, &k, y, w, h);
    });
    out
}

/// One row blurred along x: `dst[x] = sum_i k[i] * src[clamp(x + i - r)]`, tap by tap.
fn blur_row(src: &[f32], dst: &mut [f32], k: &[f32]) {
    let (w, r) = (src.len(), k.len() / 2);
    dst.fill(0.0);
    for (i, &kv) in k.iter().enumerate() {
        // Outputs whose tap i falls inside the row: x + i - r in 0..w.
        let lo = r.saturating_sub(i).min(w);
        let hi = (w + r).saturating_sub(i).min(w).max(lo);
        let (left, rest) = dst.split_at_mut(lo);
        let (middle, right) = rest.split_at_mut(hi - lo);
        for d in left {
            *d += kv * src[0];
        }
        if hi > lo {
            let start = lo + i - r;
            for (d, &v) in middle.iter_mut().zip(&src[start..start + (hi - lo)]) {
                *d += kv * v;
            }
        }
        for d in right {
            *d += kv * src[w - 1];
        }
    }
}

/// Output row `y` of the vertical pass over one plane: `dst[x] = sum_i k[i] * plane[clamp(y + i - r)][x]`.
fn blur_column_step(plane: &[f32], dst: &mut [f32], k: &[f32], y: usize, w: usize, h: usize) {
    let r = (k.len() / 2) as isize;
    dst.fill(0.0);
    for (i, &kv) in k.iter().enumerate() {
        let yy = (y as isize + i as isize - r).clamp(0, h as isize - 1) as usize;
        for (d, &v) in dst.iter_mut().zip(&plane[yy * w..(yy + 1) * w]) {
            *d += kv * v;
        }
    }
}

/// Colour fix: keeps `restored`'s high frequencies and takes the low frequencies (colour, tone) from `reference`,
/// so the prior never shifts colour or brightness; clamps to `[0, 1]`. `sigma <= 0` only clamps.
pub fn colour_fix(restored: &mut [f32], reference: &[f32], channels: usize, w: usize, h: usize, sigma: f32) {
    if sigma > 0.0 {
        let br = blur(restored, channels, w, h, sigma);
        let bi = blur(reference, channels, w, h, sigma);
        for ((v, &a), &b) in restored.iter_mut().zip(&br).zip(&bi) {
            *v = (*v - a) + b;
        }
    }
    for v in restored.iter_mut() {
        *v = v.clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blur written pixel by pixel, clamping every tap: what the fast loops must equal bit for bit.
    fn blur_pixel_by_pixel(data: &[f32], channels: usize, w: usize, h: usize, sigma: f32) -> Vec<f32> {
        let k = gaussian_kernel(sigma);
        let r = (k.len() / 2) as isize;
        let n = w * h;
        let mut tmp = vec![0.0f32; channels * n];
        let mut out = vec![0.0f32; channels * n];
        for row in 0..channels * h {
            for x in 0..w {
                let mut acc = 0.0f32;
                for (i, &kv) in k.iter().enumerate() {
                    let xx = (x as isize + i as isize - r).clamp(0, w as isize - 1) as usize;
                    acc += kv * data[row * w + xx];
                }
                tmp[row * w + x] = acc;
            }
        }
        for row in 0..channels * h {
            let (c, y) = (row / h, row % h);
            for x in 0..w {
                let mut acc = 0.0f32;
                for (i, &kv) in k.iter().enumerate() {
                    let yy = (y as isize + i as isize - r).clamp(0, h as isize - 1) as usize;
                    acc += kv * tmp[c * n + yy * w + x];
                }
                out[row * w + x] = acc;
            }
        }
        out
    }

    #[test]
    fn the_row_loops_equal_the_pixel_by_pixel_blur_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5);
        // Sizes smaller than the kernel, odd sizes, and wide ones.
        for (w, h, sigma) in [
            (1, 1, 2.0f32),
            (3, 17, 6.0),
            (40, 30, 1.5),
            (97, 13, 6.0),
            (64, 64, 0.4),
        ] {
            let data: Vec<f32> = (0..3 * w * h).map(|_| rng.range_f32(-1.0, 2.0)).collect();
            let fast = blur(&data, 3, w, h, sigma);
            let slow = blur_pixel_by_pixel(&data, 3, w, h, sigma);
            assert!(
                fast.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{w}x{h} sigma {sigma}"
            );
        }
    }

    #[test]
    fn colour_fix_takes_low_frequencies_from_the_reference() {
        let (w, h) = (40, 30);
        // Restored: reference + 0.2 everywhere (a colour shift) + a fine checker (detail).
        let reference: Vec<f32> = (0..3 * w * h).map(|i| 0.3 + 0.001 * (i % w) as f32).collect();
        let mut restored: Vec<f32> = reference
            .iter()
            .enumerate()
            .map(|(i, &v)| v + 0.2 + if (i + i / w) % 2 == 0 { 0.05 } else { -0.05 })
            .collect();
        colour_fix(&mut restored, &reference, 3, w, h, 3.0);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&restored) - mean(&reference)).abs() < 2e-3);
        // The checker survives.
        assert!((restored[w * 10 + 10] - restored[w * 10 + 11]).abs() > 0.08);
    }
}
