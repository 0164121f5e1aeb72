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
/// parallel; every output value is computed the same way whatever the threads).
pub fn blur(data: &[f32], channels: usize, w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as isize;
    let n = w * h;
    let mut tmp = vec![0.0f32; channels * n];
    let mut out = vec![0.0f32; channels * n];
    tmp.par_chunks_mut(w).enumerate().for_each(|(row, dst)| {
        let src = &data[row * w..(row + 1) * w];
        for (x, d) in dst.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (i, &kv) in k.iter().enumerate() {
                let xx = (x as isize + i as isize - r).clamp(0, w as isize - 1) as usize;
                acc += kv * src[xx];
            }
            *d = acc;
        }
    });
    out.par_chunks_mut(w).enumerate().for_each(|(row, dst)| {
        let (c, y) = (row / h, row % h);
        let src = &tmp[c * n..(c + 1) * n];
        for (x, d) in dst.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (i, &kv) in k.iter().enumerate() {
                let yy = (y as isize + i as isize - r).clamp(0, h as isize - 1) as usize;
                acc += kv * src[yy * w + x];
            }
            *d = acc;
        }
    });
    out
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
