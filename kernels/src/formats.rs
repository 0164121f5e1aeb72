//! Unpacking every supported pixel format into a [`WorkFrame`] and packing it back.
//!
//! This is the only place that knows how pixels are laid out in memory. Planes are addressed with
//! their own stride (never `width * bytes`), sizes may be odd, and alpha bytes are never written
//! by [`pack`], so a caller that starts from a copy of the input keeps alpha untouched.

use crate::frame::{Chroma, Geometry, Plane, WorkFrame};
use rayon::prelude::*;
use thiserror::Error;

/// Pixel formats the elements accept, named as in GStreamer caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Gray8,
    Gray16Le,
    I420,
    Yv12,
    Nv12,
    Y42b,
    Y444,
    Uyvy,
    Yuy2,
    I420_10Le,
    I422_10Le,
    P010_10Le,
    Rgb,
    Bgr,
    Rgba,
    Bgra,
    Rgbx,
    Bgrx,
}

#[derive(Debug, Error, PartialEq)]
pub enum FormatError {
    #[error("frame is {width}x{height}: both sides must be at least 1")]
    EmptyFrame { width: usize, height: usize },
    #[error("{format:?} needs {expected} planes, got {got}")]
    PlaneCount {
        format: PixelFormat,
        expected: usize,
        got: usize,
    },
    #[error("plane {plane} of {format:?} holds {got} bytes, {needed} needed for {width}x{height}")]
    PlaneTooSmall {
        format: PixelFormat,
        plane: usize,
        needed: usize,
        got: usize,
        width: usize,
        height: usize,
    },
    #[error("working frame is {got:?}, the format needs {expected:?}")]
    GeometryMismatch { expected: Geometry, got: Geometry },
}

/// How a component is stored in one plane: sample `x` of row `y` starts at byte
/// `y * stride + x * step + offset`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Component {
    pub(crate) plane: usize,
    pub(crate) step: usize,
    pub(crate) offset: usize,
    pub(crate) depth: Depth,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Depth {
    /// One byte.
    U8,
    /// Little-endian u16 holding `bits` significant bits starting at bit `shift`.
    U16 { bits: u32, shift: u32 },
}

impl Depth {
    pub(crate) fn bytes(self) -> usize {
        match self {
            Depth::U8 => 1,
            Depth::U16 { .. } => 2,
        }
    }

    fn max_code(self) -> f32 {
        match self {
            Depth::U8 => 255.0,
            Depth::U16 { bits, .. } => ((1u32 << bits) - 1) as f32,
        }
    }
}

const D8: Depth = Depth::U8;
const D10: Depth = Depth::U16 { bits: 10, shift: 0 };
const D10_HIGH: Depth = Depth::U16 { bits: 10, shift: 6 };
const D16: Depth = Depth::U16 { bits: 16, shift: 0 };

const fn comp(plane: usize, step: usize, offset: usize, depth: Depth) -> Component {
    Component {
        plane,
        step,
        offset,
        depth,
    }
}

/// Where the Y, Cb and Cr (or R, G, B) components live (read by the CUDA kernels' format description too).
pub(crate) enum Layout {
    Yuv([Option<Component>; 3]),
    /// Packed RGB; offsets of R, G, B within a pixel of `step` bytes.
    Rgb {
        step: usize,
        r: usize,
        g: usize,
        b: usize,
    },
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 18] = [
        PixelFormat::Gray8,
        PixelFormat::Gray16Le,
        PixelFormat::I420,
        PixelFormat::Yv12,
        PixelFormat::Nv12,
        PixelFormat::Y42b,
        PixelFormat::Y444,
        PixelFormat::Uyvy,
        PixelFormat::Yuy2,
        PixelFormat::I420_10Le,
        PixelFormat::I422_10Le,
        PixelFormat::P010_10Le,
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
    ];

    /// The caps name (`format=` field) GStreamer uses.
    pub fn caps_name(self) -> &'static str {
        use PixelFormat::*;
        match self {
            Gray8 => "GRAY8",
            Gray16Le => "GRAY16_LE",
            I420 => "I420",
            Yv12 => "YV12",
            Nv12 => "NV12",
            Y42b => "Y42B",
            Y444 => "Y444",
            Uyvy => "UYVY",
            Yuy2 => "YUY2",
            I420_10Le => "I420_10LE",
            I422_10Le => "I422_10LE",
            P010_10Le => "P010_10LE",
            Rgb => "RGB",
            Bgr => "BGR",
            Rgba => "RGBA",
            Bgra => "BGRA",
            Rgbx => "RGBx",
            Bgrx => "BGRx",
        }
    }

    pub fn from_caps_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.caps_name() == name)
    }

    pub fn is_rgb(self) -> bool {
        matches!(self.layout(), Layout::Rgb { .. })
    }

    pub fn has_alpha(self) -> bool {
        matches!(self, PixelFormat::Rgba | PixelFormat::Bgra)
    }

    /// Chroma layout of the working frame for this format.
    pub fn chroma(self) -> Chroma {
        use PixelFormat::*;
        match self {
            Gray8 | Gray16Le => Chroma::None,
            I420 | Yv12 | Nv12 | I420_10Le | P010_10Le => Chroma::Subsampled { sx: 2, sy: 2 },
            Y42b | Uyvy | Yuy2 | I422_10Le => Chroma::Subsampled { sx: 2, sy: 1 },
            Y444 | Rgb | Bgr | Rgba | Bgra | Rgbx | Bgrx => Chroma::Subsampled { sx: 1, sy: 1 },
        }
    }

    pub fn geometry(self, width: usize, height: usize) -> Geometry {
        Geometry {
            width,
            height,
            chroma: self.chroma(),
        }
    }

    /// Number of memory planes (as in `GstVideoFrame`).
    pub fn n_planes(self) -> usize {
        use PixelFormat::*;
        match self {
            Gray8 | Gray16Le | Uyvy | Yuy2 | Rgb | Bgr | Rgba | Bgra | Rgbx | Bgrx => 1,
            Nv12 | P010_10Le => 2,
            I420 | Yv12 | Y42b | Y444 | I420_10Le | I422_10Le => 3,
        }
    }

    pub(crate) fn layout(self) -> Layout {
        use PixelFormat::*;
        let planar = |d| {
            Layout::Yuv([
                Some(comp(0, d_bytes(d), 0, d)),
                Some(comp(1, d_bytes(d), 0, d)),
                Some(comp(2, d_bytes(d), 0, d)),
            ])
        };
        match self {
            Gray8 => Layout::Yuv([Some(comp(0, 1, 0, D8)), None, None]),
            Gray16Le => Layout::Yuv([Some(comp(0, 2, 0, D16)), None, None]),
            I420 | Y42b | Y444 => planar(D8),
            // YV12 stores V in plane 1 and U in plane 2.
            Yv12 => Layout::Yuv([
                Some(comp(0, 1, 0, D8)),
                Some(comp(2, 1, 0, D8)),
                Some(comp(1, 1, 0, D8)),
            ]),
            Nv12 => Layout::Yuv([
                Some(comp(0, 1, 0, D8)),
                Some(comp(1, 2, 0, D8)),
                Some(comp(1, 2, 1, D8)),
            ]),
            Uyvy => Layout::Yuv([
                Some(comp(0, 2, 1, D8)),
                Some(comp(0, 4, 0, D8)),
                Some(comp(0, 4, 2, D8)),
            ]),
            Yuy2 => Layout::Yuv([
                Some(comp(0, 2, 0, D8)),
                Some(comp(0, 4, 1, D8)),
                Some(comp(0, 4, 3, D8)),
            ]),
            I420_10Le | I422_10Le => planar(D10),
            P010_10Le => Layout::Yuv([
                Some(comp(0, 2, 0, D10_HIGH)),
                Some(comp(1, 4, 0, D10_HIGH)),
                Some(comp(1, 4, 2, D10_HIGH)),
            ]),
            Rgb => Layout::Rgb {
                step: 3,
                r: 0,
                g: 1,
                b: 2,
            },
            Bgr => Layout::Rgb {
                step: 3,
                r: 2,
                g: 1,
                b: 0,
            },
            Rgba | Rgbx => Layout::Rgb {
                step: 4,
                r: 0,
                g: 1,
                b: 2,
            },
            Bgra | Bgrx => Layout::Rgb {
                step: 4,
                r: 2,
                g: 1,
                b: 0,
            },
        }
    }
}

fn d_bytes(d: Depth) -> usize {
    d.bytes()
}

/// Read-only view of one memory plane.
#[derive(Clone, Copy, Debug)]
pub struct PlaneRef<'a> {
    pub data: &'a [u8],
    pub stride: usize,
}

/// Writable view of one memory plane.
#[derive(Debug)]
pub struct PlaneMut<'a> {
    pub data: &'a mut [u8],
    pub stride: usize,
}

// Full-range BT.601, the usual choice for film scans without colour metadata.
/// BT.601 luma weights, shared with everyone converting to and from RGB.
pub const KR: f32 = 0.299;
pub const KB: f32 = 0.114;
pub const KG: f32 = 1.0 - KR - KB;

/// Full-range BT.601 R'G'B' to Y'CbCr (chroma centred on 0.5), all in [0, 1].
#[inline]
pub fn rgb_to_ycbcr(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let y = KR * r + KG * g + KB * b;
    let cb = (b - y) / (2.0 * (1.0 - KB)) + 0.5;
    let cr = (r - y) / (2.0 * (1.0 - KR)) + 0.5;
    (y, cb, cr)
}

/// The inverse of [`rgb_to_ycbcr`].
#[inline]
pub fn ycbcr_to_rgb(y: f32, cb: f32, cr: f32) -> (f32, f32, f32) {
    let r = y + 2.0 * (1.0 - KR) * (cr - 0.5);
    let b = y + 2.0 * (1.0 - KB) * (cb - 0.5);
    let g = (y - KR * r - KB * b) / KG;
    (r, g, b)
}

#[inline]
// Not `clamp`: it keeps NaN, which the unchecked conversion must never see.
#[allow(clippy::manual_clamp)]
fn quantize(v: f32, max_code: f32) -> u32 {
    // `max` first maps NaN to 0 (as the saturating cast did), so the value is always in range
    // for the unchecked conversion, which vectorises; the saturating `as` ran four times slower.
    let v = (v * max_code + 0.5).max(0.0).min(max_code);
    // SAFETY: v is finite and in [0, max_code], and max_code is at most 65535.
    unsafe { v.to_int_unchecked::<u32>() }
}

/// Bytes a plane must hold for `rows` rows whose last row needs `row_bytes`.
fn needed_bytes(stride: usize, rows: usize, row_bytes: usize) -> usize {
    if rows == 0 {
        0
    } else {
        stride * (rows - 1) + row_bytes
    }
}

fn check_frame(format: PixelFormat, width: usize, height: usize, n_planes: usize) -> Result<(), FormatError> {
    if width == 0 || height == 0 {
        return Err(FormatError::EmptyFrame { width, height });
    }
    if n_planes < format.n_planes() {
        return Err(FormatError::PlaneCount {
            format,
            expected: format.n_planes(),
            got: n_planes,
        });
    }
    Ok(())
}

fn check_plane(
    format: PixelFormat,
    c: &Component,
    len: usize,
    stride: usize,
    plane: &Plane,
    frame: (usize, usize),
) -> Result<(), FormatError> {
    let row_bytes = (plane.width - 1) * c.step + c.offset + c.depth.bytes();
    let needed = needed_bytes(stride, plane.height, row_bytes);
    if len < needed || stride < row_bytes {
        return Err(FormatError::PlaneTooSmall {
            format,
            plane: c.plane,
            needed,
            got: len,
            width: frame.0,
            height: frame.1,
        });
    }
    Ok(())
}

fn check_rgb(
    format: PixelFormat,
    step: usize,
    len: usize,
    stride: usize,
    w: usize,
    h: usize,
) -> Result<(), FormatError> {
    let needed = needed_bytes(stride, h, w * step);
    if len < needed || stride < w * step {
        return Err(FormatError::PlaneTooSmall {
            format,
            plane: 0,
            needed,
            got: len,
            width: w,
            height: h,
        });
    }
    Ok(())
}

fn check_geometry(format: PixelFormat, frame: &WorkFrame, w: usize, h: usize) -> Result<(), FormatError> {
    let expected = format.geometry(w, h);
    if frame.geometry != expected {
        return Err(FormatError::GeometryMismatch {
            expected,
            got: frame.geometry,
        });
    }
    Ok(())
}

/// Rows of at least this many samples are converted on the rayon pool.
const PARALLEL_MIN_SAMPLES: usize = 64 * 1024;

fn unpack_component(src: PlaneRef, c: &Component, dst: &mut Plane) {
    let width = dst.width;
    let max = c.depth.max_code();
    let parallel = dst.data.len() >= PARALLEL_MIN_SAMPLES;
    let unpack_row = |(y, row): (usize, &mut [f32])| {
        let base = y * src.stride + c.offset;
        match c.depth {
            // Planar samples (step 1, the common case) as one slice, so the loop vectorises.
            Depth::U8 if c.step == 1 => {
                for (v, &code) in row.iter_mut().zip(&src.data[base..base + width]) {
                    *v = code as f32 / max;
                }
            }
            Depth::U8 => {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = src.data[base + x * c.step] as f32 / max;
                }
            }
            Depth::U16 { bits, shift } => {
                let mask = (1u32 << bits) - 1;
                for (x, v) in row.iter_mut().enumerate() {
                    let i = base + x * c.step;
                    let code = u16::from_le_bytes([src.data[i], src.data[i + 1]]) as u32;
                    *v = ((code >> shift) & mask) as f32 / max;
                }
            }
        }
    };
    if parallel {
        dst.data.par_chunks_mut(width).enumerate().for_each(unpack_row);
    } else {
        dst.data.chunks_mut(width).enumerate().for_each(unpack_row);
    }
}

fn pack_component(src: &Plane, c: &Component, dst: &mut PlaneMut) {
    let max = c.depth.max_code();
    let stride = dst.stride;
    let pack_row = |(y, out): (usize, &mut [u8])| {
        let row = src.row(y);
        match c.depth {
            // Planar samples (step 1, the common case) as one slice, so the loop vectorises.
            Depth::U8 if c.step == 1 => {
                for (o, &v) in out[c.offset..c.offset + row.len()].iter_mut().zip(row) {
                    *o = quantize(v, max) as u8;
                }
            }
            Depth::U8 => {
                for (x, &v) in row.iter().enumerate() {
                    out[c.offset + x * c.step] = quantize(v, max) as u8;
                }
            }
            Depth::U16 { shift, .. } => {
                for (x, &v) in row.iter().enumerate() {
                    let i = c.offset + x * c.step;
                    let code = (quantize(v, max) << shift) as u16;
                    out[i..i + 2].copy_from_slice(&code.to_le_bytes());
                }
            }
        }
    };
    let rows = dst.data.chunks_mut(stride).take(src.height).enumerate();
    if src.data.len() >= PARALLEL_MIN_SAMPLES {
        rows.par_bridge().for_each(pack_row);
    } else {
        rows.for_each(pack_row);
    }
}

/// Converts one frame of `format` into `dst`, which must have `format.geometry(width, height)`.
pub fn unpack(
    format: PixelFormat,
    width: usize,
    height: usize,
    planes: &[PlaneRef],
    dst: &mut WorkFrame,
) -> Result<(), FormatError> {
    check_frame(format, width, height, planes.len())?;
    check_geometry(format, dst, width, height)?;
    match format.layout() {
        Layout::Yuv(comps) => {
            let targets = std::iter::once(&mut dst.luma).chain(dst.chroma.iter_mut());
            for (c, plane) in comps.iter().flatten().zip(targets) {
                let src = planes[c.plane];
                check_plane(format, c, src.data.len(), src.stride, plane, (width, height))?;
                unpack_component(src, c, plane);
            }
        }
        Layout::Rgb { step, r, g, b } => {
            let src = planes[0];
            check_rgb(format, step, src.data.len(), src.stride, width, height)?;
            let (luma, chroma) = (&mut dst.luma, &mut dst.chroma);
            let (cb, cr) = chroma.split_at_mut(1);
            luma.data
                .par_chunks_mut(width)
                .zip(cb[0].data.par_chunks_mut(width))
                .zip(cr[0].data.par_chunks_mut(width))
                .enumerate()
                .for_each(|(y, ((ly, lcb), lcr))| {
                    let row = &src.data[y * src.stride..];
                    for x in 0..width {
                        let p = &row[x * step..];
                        let (yy, u, v) = rgb_to_ycbcr(p[r] as f32 / 255.0, p[g] as f32 / 255.0, p[b] as f32 / 255.0);
                        ly[x] = yy;
                        lcb[x] = u;
                        lcr[x] = v;
                    }
                });
        }
    }
    Ok(())
}

/// Writes `src` into the planes of `format`. Padding and alpha bytes are left as they are.
pub fn pack(format: PixelFormat, src: &WorkFrame, planes: &mut [PlaneMut]) -> Result<(), FormatError> {
    let (width, height) = (src.width(), src.height());
    check_frame(format, width, height, planes.len())?;
    check_geometry(format, src, width, height)?;
    match format.layout() {
        Layout::Yuv(comps) => {
            let sources = std::iter::once(&src.luma).chain(src.chroma.iter());
            for (c, plane) in comps.iter().flatten().zip(sources) {
                let dst = &mut planes[c.plane];
                check_plane(format, c, dst.data.len(), dst.stride, plane, (width, height))?;
                pack_component(plane, c, dst);
            }
        }
        Layout::Rgb { step, r, g, b } => {
            let dst = &mut planes[0];
            check_rgb(format, step, dst.data.len(), dst.stride, width, height)?;
            let stride = dst.stride;
            dst.data
                .par_chunks_mut(stride)
                .take(height)
                .enumerate()
                .for_each(|(y, out)| {
                    let (ly, lcb, lcr) = (src.luma.row(y), src.chroma[0].row(y), src.chroma[1].row(y));
                    for x in 0..width {
                        let (rr, gg, bb) = ycbcr_to_rgb(ly[x], lcb[x], lcr[x]);
                        let p = &mut out[x * step..];
                        p[r] = quantize(rr, 255.0) as u8;
                        p[g] = quantize(gg, 255.0) as u8;
                        p[b] = quantize(bb, 255.0) as u8;
                    }
                });
        }
    }
    Ok(())
}

/// A tightly packed (but per-plane strided) buffer of one format, for tests, benchmarks and the
/// CLI. GStreamer's own layout is used by the elements; this mirrors it with 4-byte row alignment.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedImage {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub planes: Vec<Vec<u8>>,
    pub strides: Vec<usize>,
}

impl OwnedImage {
    /// Allocates zeroed planes, each row padded to a multiple of 4 bytes plus `extra_stride`.
    pub fn new(format: PixelFormat, width: usize, height: usize, extra_stride: usize) -> Self {
        let geometry = format.geometry(width, height);
        let mut planes = Vec::new();
        let mut strides = Vec::new();
        for p in 0..format.n_planes() {
            let (row_bytes, rows) = plane_extent(format, p, &geometry);
            let stride = row_bytes.div_ceil(4) * 4 + extra_stride;
            planes.push(vec![0u8; stride * rows]);
            strides.push(stride);
        }
        OwnedImage {
            format,
            width,
            height,
            planes,
            strides,
        }
    }

    pub fn plane_refs(&self) -> Vec<PlaneRef<'_>> {
        self.planes
            .iter()
            .zip(&self.strides)
            .map(|(d, &s)| PlaneRef { data: d, stride: s })
            .collect()
    }

    pub fn plane_muts(&mut self) -> Vec<PlaneMut<'_>> {
        self.planes
            .iter_mut()
            .zip(&self.strides)
            .map(|(d, &s)| PlaneMut { data: d, stride: s })
            .collect()
    }

    /// Whether the visible pixels (not padding) of two images are equal.
    pub fn same_pixels(&self, other: &OwnedImage) -> bool {
        if (self.format, self.width, self.height) != (other.format, other.width, other.height) {
            return false;
        }
        let geometry = self.format.geometry(self.width, self.height);
        (0..self.planes.len()).all(|p| {
            let (row_bytes, rows) = plane_extent(self.format, p, &geometry);
            (0..rows).all(|y| {
                let a = &self.planes[p][y * self.strides[p]..][..row_bytes];
                let b = &other.planes[p][y * other.strides[p]..][..row_bytes];
                a == b
            })
        })
    }
}

/// Visible bytes per row and rows of memory plane `p`.
pub fn plane_extent(format: PixelFormat, p: usize, g: &Geometry) -> (usize, usize) {
    use PixelFormat::*;
    let (w, h) = (g.width, g.height);
    let (cw, ch) = g.chroma_size().unwrap_or((w, h));
    match (format, p) {
        (Gray8, _) => (w, h),
        (Gray16Le, _) => (2 * w, h),
        (I420 | Yv12 | Y42b | Y444, 0) => (w, h),
        (I420 | Yv12 | Y42b | Y444, _) => (cw, ch),
        (Nv12, 0) => (w, h),
        (Nv12, _) => (2 * cw, ch),
        (Uyvy | Yuy2, _) => (4 * cw, h),
        (I420_10Le | I422_10Le, 0) => (2 * w, h),
        (I420_10Le | I422_10Le, _) => (2 * cw, ch),
        (P010_10Le, 0) => (2 * w, h),
        (P010_10Le, _) => (4 * cw, ch),
        (Rgb | Bgr, _) => (3 * w, h),
        (Rgba | Bgra | Rgbx | Bgrx, _) => (4 * w, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills every visible byte with a seeded pattern that is valid for the format.
    fn patterned(format: PixelFormat, w: usize, h: usize, extra: usize, seed: u32) -> OwnedImage {
        let mut img = OwnedImage::new(format, w, h, extra);
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        let g = format.geometry(w, h);
        for p in 0..img.planes.len() {
            let (row_bytes, rows) = plane_extent(format, p, &g);
            for y in 0..rows {
                for x in 0..row_bytes {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    img.planes[p][y * img.strides[p] + x] = (state >> 8) as u8;
                }
            }
        }
        // Keep codes inside the format's range so a round trip can be exact.
        for p in 0..img.planes.len() {
            let (row_bytes, rows) = plane_extent(format, p, &g);
            for y in 0..rows {
                let row = &mut img.planes[p][y * img.strides[p]..][..row_bytes];
                match format {
                    PixelFormat::I420_10Le | PixelFormat::I422_10Le => row.chunks_mut(2).for_each(|b| b[1] &= 0x03),
                    PixelFormat::P010_10Le => row.chunks_mut(2).for_each(|b| b[0] &= 0xC0),
                    // An odd width leaves the second luma byte of the last pair unused.
                    PixelFormat::Uyvy if w % 2 == 1 => row[row_bytes - 1] = 0,
                    PixelFormat::Yuy2 if w % 2 == 1 => row[row_bytes - 2] = 0,
                    _ => {}
                }
            }
        }
        img
    }

    #[test]
    fn yuv_and_gray_round_trip_bit_exact_with_padding_and_odd_sizes() {
        for format in PixelFormat::ALL.into_iter().filter(|f| !f.is_rgb()) {
            for &(w, h) in &[(1, 1), (2, 2), (3, 5), (321, 241)] {
                let src = patterned(format, w, h, 7, (w * h) as u32);
                let mut frame = WorkFrame::new(format.geometry(w, h));
                unpack(format, w, h, &src.plane_refs(), &mut frame).unwrap();
                let mut out = OwnedImage::new(format, w, h, 3);
                pack(format, &frame, &mut out.plane_muts()).unwrap();
                assert!(src.same_pixels(&out), "{format:?} {w}x{h} did not round-trip");
            }
        }
    }

    #[test]
    fn rgb_round_trip_is_exact_and_alpha_untouched() {
        for format in PixelFormat::ALL.into_iter().filter(|f| f.is_rgb()) {
            let (w, h) = (37, 11);
            let src = patterned(format, w, h, 5, 9);
            let mut frame = WorkFrame::new(format.geometry(w, h));
            unpack(format, w, h, &src.plane_refs(), &mut frame).unwrap();
            let mut out = src.clone();
            // Scribble over colour bytes; pack must rewrite them and leave alpha alone.
            let step = if matches!(format, PixelFormat::Rgb | PixelFormat::Bgr) {
                3
            } else {
                4
            };
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        out.planes[0][y * out.strides[0] + x * step + c] ^= 0x55;
                    }
                }
            }
            pack(format, &frame, &mut out.plane_muts()).unwrap();
            assert!(src.same_pixels(&out), "{format:?} did not round-trip");
        }
    }

    #[test]
    fn known_values_land_in_the_right_component() {
        // UYVY: U0 Y0 V0 Y1
        let img = OwnedImage {
            format: PixelFormat::Uyvy,
            width: 2,
            height: 1,
            planes: vec![vec![10, 20, 30, 40]],
            strides: vec![4],
        };
        let mut f = WorkFrame::new(PixelFormat::Uyvy.geometry(2, 1));
        unpack(PixelFormat::Uyvy, 2, 1, &img.plane_refs(), &mut f).unwrap();
        assert_eq!(f.luma.data, vec![20.0 / 255.0, 40.0 / 255.0]);
        assert_eq!(f.chroma[0].data, vec![10.0 / 255.0]);
        assert_eq!(f.chroma[1].data, vec![30.0 / 255.0]);
        // Pure white RGB is luma 1 with neutral chroma.
        let white = OwnedImage {
            format: PixelFormat::Rgb,
            width: 1,
            height: 1,
            planes: vec![vec![255, 255, 255, 0]],
            strides: vec![4],
        };
        let mut f = WorkFrame::new(PixelFormat::Rgb.geometry(1, 1));
        unpack(PixelFormat::Rgb, 1, 1, &white.plane_refs(), &mut f).unwrap();
        assert!((f.luma.data[0] - 1.0).abs() < 1e-6);
        assert!((f.chroma[0].data[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn short_planes_and_empty_frames_are_errors_not_panics() {
        let mut f = WorkFrame::new(PixelFormat::I420.geometry(4, 4));
        let short = [PlaneRef {
            data: &[0u8; 3],
            stride: 4,
        }; 3];
        assert!(matches!(
            unpack(PixelFormat::I420, 4, 4, &short, &mut f),
            Err(FormatError::PlaneTooSmall { .. })
        ));
        let mut g = WorkFrame::new(PixelFormat::Gray8.geometry(1, 1));
        assert_eq!(
            unpack(PixelFormat::Gray8, 0, 1, &[], &mut g),
            Err(FormatError::EmptyFrame { width: 0, height: 1 })
        );
    }
}
