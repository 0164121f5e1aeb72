//! The working representation every stage sees: planar `f32` in `[0, 1]`.
//!
//! Luma is always full resolution. Chroma (Cb, Cr, centred on 0.5) keeps the subsampling of the
//! negotiated format, so that a frame that goes through untouched packs back bit-exactly and the
//! luma-only stages never pay for chroma they do not touch. RGB input is converted to full-range
//! BT.601 Y'CbCr with 4:4:4 chroma; grey input has no chroma at all.

/// One plane of samples, tightly packed (`stride == width`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Plane {
    pub fn new(width: usize, height: usize) -> Self {
        Self::filled(width, height, 0.0)
    }

    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Plane {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    #[inline]
    pub fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    #[inline]
    pub fn row_mut(&mut self, y: usize) -> &mut [f32] {
        &mut self.data[y * self.width..(y + 1) * self.width]
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, v: f32) {
        self.data[y * self.width + x] = v;
    }

    /// Sample with coordinates clamped to the plane (replicated border).
    #[inline]
    pub fn get_clamped(&self, x: isize, y: isize) -> f32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.data[y * self.width + x]
    }

    pub fn copy_from(&mut self, other: &Plane) {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        self.data.copy_from_slice(&other.data);
    }
}

/// How chroma is stored relative to luma.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chroma {
    /// No chroma planes (GRAY8, GRAY16).
    None,
    /// Cb/Cr at `ceil(w / sx) x ceil(h / sy)`.
    Subsampled { sx: usize, sy: usize },
}

/// The size and layout of a working frame: everything a pool needs to preallocate one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub width: usize,
    pub height: usize,
    pub chroma: Chroma,
}

impl Geometry {
    pub fn chroma_size(&self) -> Option<(usize, usize)> {
        match self.chroma {
            Chroma::None => None,
            Chroma::Subsampled { sx, sy } => Some((self.width.div_ceil(sx), self.height.div_ceil(sy))),
        }
    }
}

/// A frame in the working representation.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkFrame {
    pub geometry: Geometry,
    pub luma: Plane,
    /// `[Cb, Cr]`, empty for grey formats.
    pub chroma: Vec<Plane>,
    /// Downscaled luma for motion search, built when the frame enters the temporal window and
    /// kept with the pooled frame so its buffers are reused.
    pub pyramid: crate::motion::Pyramid,
    /// Motion to the neighbouring frames, estimated as they arrive (see
    /// [`crate::motion::FrameMotion`]).
    pub motion: crate::motion::FrameMotion,
}

impl WorkFrame {
    pub fn new(geometry: Geometry) -> Self {
        let chroma = match geometry.chroma_size() {
            None => Vec::new(),
            Some((cw, ch)) => vec![Plane::filled(cw, ch, 0.5), Plane::filled(cw, ch, 0.5)],
        };
        WorkFrame {
            geometry,
            luma: Plane::new(geometry.width, geometry.height),
            chroma,
            pyramid: crate::motion::Pyramid::default(),
            motion: crate::motion::FrameMotion::default(),
        }
    }

    pub fn width(&self) -> usize {
        self.geometry.width
    }

    pub fn height(&self) -> usize {
        self.geometry.height
    }

    /// Copies pixels from a frame of the same geometry (no allocation).
    pub fn copy_from(&mut self, other: &WorkFrame) {
        debug_assert_eq!(self.geometry, other.geometry);
        self.luma.copy_from(&other.luma);
        for (dst, src) in self.chroma.iter_mut().zip(&other.chroma) {
            dst.copy_from(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_sizes_round_chroma_up() {
        let g = Geometry {
            width: 321,
            height: 241,
            chroma: Chroma::Subsampled { sx: 2, sy: 2 },
        };
        let f = WorkFrame::new(g);
        assert_eq!(f.chroma[0].width, 161);
        assert_eq!(f.chroma[0].height, 121);
        assert_eq!(f.luma.data.len(), 321 * 241);
    }

    #[test]
    fn clamped_sampling_replicates_border() {
        let mut p = Plane::new(2, 2);
        p.set(1, 1, 0.75);
        assert_eq!(p.get_clamped(5, 9), 0.75);
        assert_eq!(p.get_clamped(-3, -1), 0.0);
    }
}
