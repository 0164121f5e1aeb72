//! Planar RGB back to a pixel format on the device. Twin: [`crate::latent::rgb::pack_rgb`]
//! (`RgbImage::to_work_frame`, then `formats::pack`). Bytes the format does not define (alpha, padding) are left
//! as they are, so a frame buffer that starts as a copy of the input keeps its alpha.

use super::device::grid;
use super::format::DeviceFormat;
use super::{CudaError, Gpu};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// Writes `rgb` (`[3][h][w]`, `[0, 1]`) into `frame`, laid out as `fmt` says.
pub fn pack_rgb(
    gpu: &Gpu,
    rgb: &CudaSlice<f32>,
    fmt: &DeviceFormat,
    frame: &mut CudaSlice<u8>,
) -> Result<(), CudaError> {
    let (w, h) = (fmt.width as usize, fmt.height as usize);
    if rgb.len() < 3 * w * h {
        return Err(CudaError::Shape(format!(
            "{w}x{h} RGB needs {} values, got {}",
            3 * w * h,
            rgb.len()
        )));
    }
    let mut b = gpu.stream.launch_builder(&gpu.k.pack_luma);
    b.arg(rgb).arg(fmt).arg(&mut *frame);
    // SAFETY: arguments match `pack_luma`; `rgb` holds the frame (checked), `frame` the planes (checked with `fmt`).
    unsafe { b.launch(grid(w * h, 1)) }?;
    if fmt.rgb == 0 && fmt.c[1].bytes > 0 {
        let chroma = w.div_ceil(fmt.sx as usize) * h.div_ceil(fmt.sy as usize);
        let mut b = gpu.stream.launch_builder(&gpu.k.pack_chroma);
        b.arg(rgb).arg(fmt).arg(frame);
        // SAFETY: as above, for `pack_chroma`.
        unsafe { b.launch(grid(chroma, 1)) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::format::{concat_planes, split_planes};
    use crate::cuda::test_util::{gpu, random};
    use crate::formats::{OwnedImage, PixelFormat};
    use crate::latent::rgb::test_images::max_code_diff;
    use crate::latent::rgb::{pack_rgb as cpu_pack, RgbImage};

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn pack_matches_the_cpu_for_every_format() {
        let gpu = gpu();
        let (w, h) = (53, 37);
        for (i, format) in PixelFormat::ALL.into_iter().enumerate() {
            // A little outside [0, 1] too, to exercise the clamping.
            let img = RgbImage::from_planar(w, h, random(3 * w * h, -0.05, 1.05, 200 + i as u64));
            let mut want = OwnedImage::new(format, w, h, 5);
            cpu_pack(format, &img, &mut want.plane_muts()).unwrap();
            let (bytes, layout) = concat_planes(&OwnedImage::new(format, w, h, 5));
            let mut frame = gpu.stream.clone_htod(&bytes).unwrap();
            let fmt = layout.device_format(bytes.len()).unwrap();
            let rgb = gpu.stream.clone_htod(&img.data).unwrap();
            pack_rgb(&gpu, &rgb, &fmt, &mut frame).unwrap();
            let mut got = OwnedImage::new(format, w, h, 5);
            split_planes(&gpu.stream.clone_dtoh(&frame).unwrap(), &layout, &mut got);
            // Same operations in the same order: equal codes (one code of slack for a value on a .5 boundary).
            let worst = max_code_diff(&want, &got);
            let allowed = if format == PixelFormat::P010_10Le { 64 } else { 1 };
            assert!(worst <= allowed, "{format:?}: off by {worst}");
        }
    }
}
