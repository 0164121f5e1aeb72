//! A pixel format's memory layout as the kernels read it: the whole frame in one device buffer, each plane at its
//! byte offset with its own stride (as a `GstBuffer` holds a `GstVideoFrame`).

use super::CudaError;
use crate::formats::{plane_extent, Depth, Layout, PixelFormat};
use crate::OwnedImage;
use crate::{Chroma, Geometry};
use cudarc::driver::DeviceRepr;

/// `struct Comp` of `kernels.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceComp {
    pub plane: i32,
    pub step: i32,
    pub offset: i32,
    pub bits: i32,
    pub shift: i32,
    /// 0: the component is absent.
    pub bytes: i32,
}

/// `struct Fmt` of `kernels.cu`, passed by value to the unpack and pack kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceFormat {
    pub width: i32,
    pub height: i32,
    pub sx: i32,
    pub sy: i32,
    pub offsets: [i32; 3],
    pub strides: [i32; 3],
    pub c: [DeviceComp; 3],
    pub rgb: i32,
    pub rgb_step: i32,
    pub r: i32,
    pub g: i32,
    pub b: i32,
}

// SAFETY: plain `repr(C)` integers, laid out as `struct Fmt` in kernels.cu.
unsafe impl DeviceRepr for DeviceFormat {}

/// Where the planes of one frame lie in its buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameLayout {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub offsets: [usize; 3],
    pub strides: [usize; 3],
}

impl FrameLayout {
    /// Bytes the buffer must hold: the end of the furthest plane's last visible byte.
    pub fn needed_len(&self) -> usize {
        let g = self.geometry();
        (0..self.format.n_planes())
            .map(|p| {
                let (row_bytes, rows) = plane_extent(self.format, p, &g);
                self.offsets[p] + self.strides[p] * (rows - 1) + row_bytes
            })
            .max()
            .unwrap_or(0)
    }

    pub fn geometry(&self) -> Geometry {
        self.format.geometry(self.width, self.height)
    }

    /// The kernels' description, after checking that `buffer_len` bytes hold the frame and that offsets fit in
    /// the kernels' 32-bit arithmetic.
    pub fn device_format(&self, buffer_len: usize) -> Result<DeviceFormat, CudaError> {
        let needed = self.needed_len();
        if self.width == 0 || self.height == 0 || buffer_len < needed || needed > i32::MAX as usize {
            return Err(CudaError::Shape(format!(
                "{:?} {}x{} needs a buffer of {needed} bytes (at most 2 GiB), got {buffer_len}",
                self.format, self.width, self.height
            )));
        }
        let (sx, sy) = match self.geometry().chroma {
            Chroma::None => (1, 1),
            Chroma::Subsampled { sx, sy } => (sx as i32, sy as i32),
        };
        let mut d = DeviceFormat {
            width: self.width as i32,
            height: self.height as i32,
            sx,
            sy,
            offsets: self.offsets.map(|v| v as i32),
            strides: self.strides.map(|v| v as i32),
            ..Default::default()
        };
        match self.format.layout() {
            Layout::Yuv(comps) => {
                for (dst, c) in d.c.iter_mut().zip(comps) {
                    if let Some(c) = c {
                        let (bits, shift) = match c.depth {
                            Depth::U8 => (8, 0),
                            Depth::U16 { bits, shift } => (bits as i32, shift as i32),
                        };
                        *dst = DeviceComp {
                            plane: c.plane as i32,
                            step: c.step as i32,
                            offset: c.offset as i32,
                            bits,
                            shift,
                            bytes: c.depth.bytes() as i32,
                        };
                    }
                }
            }
            Layout::Rgb { step, r, g, b } => {
                (d.rgb, d.rgb_step, d.r, d.g, d.b) = (1, step as i32, r as i32, g as i32, b as i32);
            }
        }
        Ok(d)
    }
}

/// An [`OwnedImage`]'s planes one after another in one buffer, and where they are.
pub fn concat_planes(img: &OwnedImage) -> (Vec<u8>, FrameLayout) {
    let mut bytes = Vec::new();
    let (mut offsets, mut strides) = ([0usize; 3], [0usize; 3]);
    for (p, plane) in img.planes.iter().enumerate() {
        offsets[p] = bytes.len();
        strides[p] = img.strides[p];
        bytes.extend_from_slice(plane);
    }
    let layout = FrameLayout {
        format: img.format,
        width: img.width,
        height: img.height,
        offsets,
        strides,
    };
    (bytes, layout)
}

/// The inverse of [`concat_planes`]: copies the buffer's planes back into `img`.
pub fn split_planes(bytes: &[u8], layout: &FrameLayout, img: &mut OwnedImage) {
    for (p, plane) in img.planes.iter_mut().enumerate() {
        let (start, len) = (layout.offsets[p], plane.len());
        plane.copy_from_slice(&bytes[start..start + len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_planes_split_back_and_every_format_has_a_description() {
        for format in PixelFormat::ALL {
            let mut img = OwnedImage::new(format, 7, 5, 3);
            for (p, plane) in img.planes.iter_mut().enumerate() {
                plane.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 31 + p) as u8);
            }
            let (bytes, layout) = concat_planes(&img);
            assert!(layout.needed_len() <= bytes.len(), "{format:?}");
            let d = layout.device_format(bytes.len()).unwrap();
            assert_eq!((d.width, d.height), (7, 5));
            // Packed RGB or a luma component, never neither.
            assert!(d.rgb == 1 || d.c[0].bytes > 0, "{format:?}");
            assert_eq!(
                d.c[1].bytes == 0 && d.rgb == 0,
                format.chroma() == Chroma::None,
                "{format:?}"
            );
            let mut back = OwnedImage::new(format, 7, 5, 3);
            split_planes(&bytes, &layout, &mut back);
            assert_eq!(back, img);
        }
    }

    #[test]
    fn a_short_buffer_is_an_error() {
        let img = OwnedImage::new(PixelFormat::I420, 8, 8, 0);
        let (bytes, layout) = concat_planes(&img);
        assert!(layout.device_format(bytes.len() - 1).is_err());
        assert!(layout.device_format(bytes.len()).is_ok());
    }
}
