//! Planar RGB frames, the conversion from and to the working frame, the Gaussian colour fix and the similarity
//! filter's thumbnail.

use kernels::formats::{rgb_to_ycbcr, ycbcr_to_rgb, KB, KG, KR};
use kernels::{Chroma, Geometry, WorkFrame};
use rayon::prelude::*;

/// Planar RGB, `[3][height][width]`, nominally in `[0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize) -> Self {
        RgbImage {
            width,
            height,
            data: vec![0.0; 3 * width * height],
        }
    }

    pub fn from_planar(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            3 * width * height,
            "planar RGB needs 3 x {width} x {height} values"
        );
        RgbImage { width, height, data }
    }

    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[c * n..(c + 1) * n]
    }

    pub fn plane_mut(&mut self, c: usize) -> &mut [f32] {
        let n = self.width * self.height;
        &mut self.data[c * n..(c + 1) * n]
    }

    /// RGB of a working frame: chroma is upsampled by replication; grey is replicated to the three channels.
    pub fn from_work_frame(f: &WorkFrame) -> Self {
        let (w, h) = (f.width(), f.height());
        let mut img = RgbImage::new(w, h);
        let n = w * h;
        match f.geometry.chroma {
            Chroma::None => {
                for c in 0..3 {
                    img.data[c * n..(c + 1) * n].copy_from_slice(&f.luma.data);
                }
            }
            Chroma::Subsampled { sx, sy } => {
                let (cb, cr) = (&f.chroma[0], &f.chroma[1]);
                for y in 0..h {
                    for x in 0..w {
                        let i = y * w + x;
                        let (r, g, b) = ycbcr_to_rgb(f.luma.data[i], cb.get(x / sx, y / sy), cr.get(x / sx, y / sy));
                        img.data[i] = r;
                        img.data[n + i] = g;
                        img.data[2 * n + i] = b;
                    }
                }
            }
        }
        img
    }

    /// Writes this image into `out` (which takes `geometry`): grey keeps the luma of the RGB, subsampled chroma is
    /// the mean of each block, so a frame that came in through [`RgbImage::from_work_frame`] goes back unchanged.
    pub fn to_work_frame(&self, geometry: Geometry, out: &mut WorkFrame) {
        assert_eq!((geometry.width, geometry.height), (self.width, self.height));
        if out.geometry != geometry {
            *out = WorkFrame::new(geometry);
        }
        let (w, h) = (self.width, self.height);
        let n = w * h;
        let (r, g, b) = (&self.data[..n], &self.data[n..2 * n], &self.data[2 * n..]);
        match geometry.chroma {
            Chroma::None => {
                for i in 0..n {
                    out.luma.data[i] = KR * r[i] + KG * g[i] + KB * b[i];
                }
            }
            Chroma::Subsampled { sx, sy } => {
                let (cw, ch) = geometry.chroma_size().expect("chroma");
                let mut cb = vec![0.0f32; cw * ch];
                let mut cr = vec![0.0f32; cw * ch];
                for y in 0..h {
                    for x in 0..w {
                        let i = y * w + x;
                        let (yy, u, v) = rgb_to_ycbcr(r[i], g[i], b[i]);
                        out.luma.data[i] = yy;
                        let j = (y / sy) * cw + x / sx;
                        cb[j] += u;
                        cr[j] += v;
                    }
                }
                for cy in 0..ch {
                    let rows = sy.min(h - cy * sy);
                    for cx in 0..cw {
                        let count = (rows * sx.min(w - cx * sx)) as f32;
                        let j = cy * cw + cx;
                        out.chroma[0].data[j] = cb[j] / count;
                        out.chroma[1].data[j] = cr[j] / count;
                    }
                }
            }
        }
    }

    pub fn clamp01(&mut self) {
        for v in &mut self.data {
            *v = v.clamp(0.0, 1.0);
        }
    }
}

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

/// The similarity filter's view of a frame: RGB mapped to `[-1, 1]`, box-averaged so the longer side is at most
/// 64 samples.
pub fn thumbnail(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width, img.height);
    let f = w.max(h).div_ceil(64).max(1);
    let (tw, th) = (w.div_ceil(f), h.div_ceil(f));
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

    #[test]
    fn grey_and_subsampled_frames_round_trip() {
        for chroma in [
            Chroma::None,
            Chroma::Subsampled { sx: 2, sy: 2 },
            Chroma::Subsampled { sx: 2, sy: 1 },
        ] {
            let g = Geometry {
                width: 7,
                height: 5,
                chroma,
            };
            let mut f = WorkFrame::new(g);
            for (i, v) in f.luma.data.iter_mut().enumerate() {
                *v = (i as f32 * 0.37).fract();
            }
            for (p, plane) in f.chroma.iter_mut().enumerate() {
                for (i, v) in plane.data.iter_mut().enumerate() {
                    *v = 0.3 + 0.4 * ((i + p) as f32 * 0.29).fract();
                }
            }
            let mut out = WorkFrame::new(g);
            RgbImage::from_work_frame(&f).to_work_frame(g, &mut out);
            for (a, b) in f.luma.data.iter().zip(&out.luma.data) {
                assert!((a - b).abs() < 2e-6, "{chroma:?}: {a} vs {b}");
            }
            for (pa, pb) in f.chroma.iter().zip(&out.chroma) {
                for (a, b) in pa.data.iter().zip(&pb.data) {
                    assert!((a - b).abs() < 2e-6, "{chroma:?}: {a} vs {b}");
                }
            }
        }
    }
}
