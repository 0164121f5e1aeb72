//! Planar RGB frames, the conversion from and to the working frame, and the adapters that the CUDA unpack / pack
//! kernels are compared with (moved from `engines::image`, which re-exports [`RgbImage`]).

use crate::formats::{self, rgb_to_ycbcr, ycbcr_to_rgb, FormatError, PixelFormat, PlaneMut, PlaneRef, KB, KG, KR};
use crate::{Chroma, Geometry, WorkFrame};

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

    /// The `tw x th` window at `(x0, y0)`, `[3][th][tw]`, with coordinates clamped to the frame (the border is
    /// replicated past the right and bottom edges). The tile grid's `extract` is this at each tile origin.
    pub fn extract_tile(&self, x0: usize, y0: usize, tw: usize, th: usize, out: &mut [f32]) {
        for c in 0..3 {
            let plane = self.plane(c);
            for ty in 0..th {
                let y = (y0 + ty).min(self.height - 1);
                for tx in 0..tw {
                    let x = (x0 + tx).min(self.width - 1);
                    out[c * tw * th + ty * tw + tx] = plane[y * self.width + x];
                }
            }
        }
    }
}

/// The value range a model takes images in, as `v * scale + bias` of `[0, 1]` RGB: TAESD and `range =
/// minus_one_one` image models take `[-1, 1]` (`engines::models` applies `v * 2 - 1`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelRange {
    pub scale: f32,
    pub bias: f32,
}

impl ModelRange {
    pub const MINUS_ONE_ONE: ModelRange = ModelRange { scale: 2.0, bias: -1.0 };
    pub const ZERO_ONE: ModelRange = ModelRange { scale: 1.0, bias: 0.0 };

    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        v * self.scale + self.bias
    }
}

/// A tile of a frame of `format` at `(x0, y0)`, `[3][th][tw]` in the model's range: the CPU path's
/// [`formats::unpack`], then [`RgbImage::from_work_frame`], then [`RgbImage::extract_tile`], then the range. The
/// CPU twin of the CUDA unpack kernel.
#[allow(clippy::too_many_arguments)]
pub fn unpack_tile(
    format: PixelFormat,
    width: usize,
    height: usize,
    planes: &[PlaneRef],
    origin: (usize, usize),
    tile: (usize, usize),
    range: ModelRange,
) -> Result<Vec<f32>, FormatError> {
    let mut frame = WorkFrame::new(format.geometry(width, height));
    formats::unpack(format, width, height, planes, &mut frame)?;
    let rgb = RgbImage::from_work_frame(&frame);
    let mut out = vec![0.0f32; 3 * tile.0 * tile.1];
    rgb.extract_tile(origin.0, origin.1, tile.0, tile.1, &mut out);
    for v in &mut out {
        *v = range.apply(*v);
    }
    Ok(out)
}

/// Packs planar RGB into the planes of `format`: the CPU path's [`RgbImage::to_work_frame`] then [`formats::pack`].
/// The CPU twin of the CUDA pack kernels.
pub fn pack_rgb(format: PixelFormat, img: &RgbImage, planes: &mut [PlaneMut]) -> Result<(), FormatError> {
    let geometry = format.geometry(img.width, img.height);
    let mut frame = WorkFrame::new(geometry);
    img.to_work_frame(geometry, &mut frame);
    formats::pack(format, &frame, planes)
}

#[cfg(test)]
mod tests {
    use super::test_images::{max_code_diff, random_image};
    use super::*;
    use crate::formats::OwnedImage;

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

    #[test]
    fn a_tile_at_an_offset_is_the_crop_of_the_whole_frame_with_the_border_replicated() {
        let (w, h) = (37, 23);
        for format in PixelFormat::ALL {
            let img = random_image(format, w, h, 5);
            let full = unpack_tile(format, w, h, &img.plane_refs(), (0, 0), (w, h), ModelRange::ZERO_ONE).unwrap();
            // A 16x12 tile hanging over the bottom-right corner.
            let (x0, y0, tw, th) = (30, 15, 16, 12);
            let tile = unpack_tile(
                format,
                w,
                h,
                &img.plane_refs(),
                (x0, y0),
                (tw, th),
                ModelRange::MINUS_ONE_ONE,
            )
            .unwrap();
            for c in 0..3 {
                for ty in 0..th {
                    for tx in 0..tw {
                        let (x, y) = ((x0 + tx).min(w - 1), (y0 + ty).min(h - 1));
                        let want = full[c * w * h + y * w + x] * 2.0 - 1.0;
                        assert_eq!(tile[c * tw * th + ty * tw + tx], want, "{format:?} c{c} ({tx},{ty})");
                    }
                }
            }
        }
    }

    #[test]
    fn unpacked_rgb_packs_back_to_the_same_codes_in_every_format() {
        // Chroma is replicated on the way in and block-averaged on the way out, so nothing is lost but rounding.
        let (w, h) = (20, 9);
        for format in PixelFormat::ALL {
            let src = random_image(format, w, h, 11);
            let rgb = unpack_tile(format, w, h, &src.plane_refs(), (0, 0), (w, h), ModelRange::ZERO_ONE).unwrap();
            let mut out = OwnedImage::new(format, w, h, 2);
            pack_rgb(format, &RgbImage::from_planar(w, h, rgb), &mut out.plane_muts()).unwrap();
            let worst = max_code_diff(&src, &out);
            // P010 keeps its 10 bits in the high bits of the u16: one 10-bit code is 64 there.
            let allowed = if format == PixelFormat::P010_10Le { 64 } else { 1 };
            assert!(worst <= allowed, "{format:?}: off by {worst}");
        }
    }
}

/// Random frames of every format and a code-level comparison, shared by the CPU and the GPU tests.
#[cfg(test)]
pub(crate) mod test_images {
    use crate::formats::{plane_extent, OwnedImage, PixelFormat};
    use crate::rng::Rng;

    /// Random visible bytes, with the 10-bit formats' unused bits cleared (as a decoder would write them).
    pub fn random_image(format: PixelFormat, w: usize, h: usize, seed: u64) -> OwnedImage {
        let mut img = OwnedImage::new(format, w, h, 6);
        let mut rng = Rng::new(seed);
        let g = format.geometry(w, h);
        for p in 0..img.planes.len() {
            let (row_bytes, rows) = plane_extent(format, p, &g);
            for y in 0..rows {
                let row = &mut img.planes[p][y * img.strides[p]..][..row_bytes];
                row.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
                match format {
                    PixelFormat::I420_10Le | PixelFormat::I422_10Le => row.chunks_mut(2).for_each(|b| b[1] &= 0x03),
                    PixelFormat::P010_10Le => row.chunks_mut(2).for_each(|b| b[0] &= 0xC0),
                    _ => {}
                }
            }
        }
        img
    }

    /// Largest difference between the visible codes of two images (u16 codes for 16-bit formats), skipping the
    /// alpha / padding byte of 4-byte RGB.
    pub fn max_code_diff(a: &OwnedImage, b: &OwnedImage) -> u32 {
        let g = a.format.geometry(a.width, a.height);
        let wide = matches!(
            a.format,
            PixelFormat::Gray16Le | PixelFormat::I420_10Le | PixelFormat::I422_10Le | PixelFormat::P010_10Le
        );
        let four = matches!(
            a.format,
            PixelFormat::Rgba | PixelFormat::Bgra | PixelFormat::Rgbx | PixelFormat::Bgrx
        );
        let mut worst = 0;
        for p in 0..a.planes.len() {
            let (row_bytes, rows) = plane_extent(a.format, p, &g);
            for y in 0..rows {
                let ra = &a.planes[p][y * a.strides[p]..][..row_bytes];
                let rb = &b.planes[p][y * b.strides[p]..][..row_bytes];
                if wide {
                    for (x, y) in ra.chunks(2).zip(rb.chunks(2)) {
                        let (x, y) = (u16::from_le_bytes([x[0], x[1]]), u16::from_le_bytes([y[0], y[1]]));
                        worst = worst.max(x.abs_diff(y) as u32);
                    }
                } else {
                    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
                        if !(four && i % 4 == 3) {
                            worst = worst.max(x.abs_diff(*y) as u32);
                        }
                    }
                }
            }
        }
        worst
    }
}
