//! Pixel format to planar RGB tiles in the model's range, f32 or f16, on the device. Twin:
//! [`crate::latent::rgb::unpack_tile`] (`formats::unpack`, `RgbImage::from_work_frame`, the tile crop, the range).

use super::device::grid;
use super::format::DeviceFormat;
use super::{CudaError, Gpu};
use crate::latent::rgb::ModelRange;
use cudarc::driver::{CudaFunction, CudaSlice, PushKernelArg};

/// Tile origins on the device, `[n][2]` as `(x, y)`.
pub fn upload_origins(gpu: &Gpu, origins: &[(usize, usize)]) -> Result<CudaSlice<i32>, CudaError> {
    let flat: Vec<i32> = origins.iter().flat_map(|&(x, y)| [x as i32, y as i32]).collect();
    Ok(gpu.stream.clone_htod(&flat)?)
}

/// Unpacks `n = origins.len() / 2` tiles of `tile = (w, h)` from `frame` into `out` (`[n][3][h][w]` f32).
pub fn unpack_tiles(
    gpu: &Gpu,
    frame: &CudaSlice<u8>,
    fmt: &DeviceFormat,
    origins: &CudaSlice<i32>,
    tile: (usize, usize),
    range: ModelRange,
    out: &mut CudaSlice<f32>,
) -> Result<(), CudaError> {
    check(out.len(), origins.len(), tile)?;
    launch(gpu, &gpu.k.unpack_f32, frame, fmt, origins, tile, range, out)
}

/// The same, written as IEEE half bits (`[n][3][h][w]` u16), for fp16 engines.
pub fn unpack_tiles_f16(
    gpu: &Gpu,
    frame: &CudaSlice<u8>,
    fmt: &DeviceFormat,
    origins: &CudaSlice<i32>,
    tile: (usize, usize),
    range: ModelRange,
    out: &mut CudaSlice<u16>,
) -> Result<(), CudaError> {
    check(out.len(), origins.len(), tile)?;
    launch(gpu, &gpu.k.unpack_f16, frame, fmt, origins, tile, range, out)
}

fn check(out_len: usize, origins_len: usize, (tw, th): (usize, usize)) -> Result<(), CudaError> {
    let needed = origins_len / 2 * 3 * tw * th;
    if out_len < needed || tw == 0 || th == 0 {
        return Err(CudaError::Shape(format!(
            "{} tiles of {tw}x{th} need {needed} values, the output holds {out_len}",
            origins_len / 2
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn launch<T>(
    gpu: &Gpu,
    f: &CudaFunction,
    frame: &CudaSlice<u8>,
    fmt: &DeviceFormat,
    origins: &CudaSlice<i32>,
    (tw, th): (usize, usize),
    range: ModelRange,
    out: &mut CudaSlice<T>,
) -> Result<(), CudaError> {
    let (tw32, th32) = (tw as i32, th as i32);
    let mut b = gpu.stream.launch_builder(f);
    b.arg(frame).arg(fmt).arg(origins).arg(&tw32).arg(&th32);
    b.arg(&range.scale).arg(&range.bias).arg(out);
    // SAFETY: the argument list matches the kernel's signature; `out` holds every tile (checked) and the frame
    // buffer holds the format's planes (checked when `fmt` was made).
    unsafe { b.launch(grid(tw * th, origins.len() / 2)) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::format::concat_planes;
    use crate::cuda::test_util::{gpu, max_diff};
    use crate::formats::PixelFormat;
    use crate::latent::rgb::test_images::random_image;
    use crate::latent::rgb::unpack_tile;

    /// Tiles inside, across and past the bottom-right edge of a frame with odd sizes.
    const ORIGINS: [(usize, usize); 3] = [(0, 0), (13, 7), (40, 30)];
    const TILE: (usize, usize) = (24, 16);

    fn cpu_tiles(format: PixelFormat, seed: u64, range: ModelRange) -> (crate::OwnedImage, Vec<f32>) {
        let img = random_image(format, 53, 37, seed);
        let mut want = Vec::new();
        for &o in &ORIGINS {
            want.extend(unpack_tile(format, 53, 37, &img.plane_refs(), o, TILE, range).unwrap());
        }
        (img, want)
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn unpack_matches_the_cpu_for_every_format() {
        let gpu = gpu();
        let origins = upload_origins(&gpu, &ORIGINS).unwrap();
        for (i, format) in PixelFormat::ALL.into_iter().enumerate() {
            let (img, want) = cpu_tiles(format, 100 + i as u64, ModelRange::MINUS_ONE_ONE);
            let (bytes, layout) = concat_planes(&img);
            let frame = gpu.stream.clone_htod(&bytes).unwrap();
            let fmt = layout.device_format(bytes.len()).unwrap();
            let mut out = gpu.stream.alloc_zeros::<f32>(want.len()).unwrap();
            unpack_tiles(&gpu, &frame, &fmt, &origins, TILE, ModelRange::MINUS_ONE_ONE, &mut out).unwrap();
            let got = gpu.stream.clone_dtoh(&out).unwrap();
            // The same operations in the same order, no fused multiply-add: equal up to the last bit or so.
            assert!(max_diff(&got, &want) <= 1e-6, "{format:?}: {}", max_diff(&got, &want));
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn unpack_to_half_rounds_like_the_half_crate() {
        let gpu = gpu();
        let origins = upload_origins(&gpu, &ORIGINS).unwrap();
        for format in [PixelFormat::Nv12, PixelFormat::Bgra, PixelFormat::I422_10Le] {
            let (img, want) = cpu_tiles(format, 7, ModelRange::MINUS_ONE_ONE);
            let (bytes, layout) = concat_planes(&img);
            let frame = gpu.stream.clone_htod(&bytes).unwrap();
            let fmt = layout.device_format(bytes.len()).unwrap();
            let mut out = gpu.stream.alloc_zeros::<u16>(want.len()).unwrap();
            unpack_tiles_f16(&gpu, &frame, &fmt, &origins, TILE, ModelRange::MINUS_ONE_ONE, &mut out).unwrap();
            let got = gpu.stream.clone_dtoh(&out).unwrap();
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(&g, &w)| g != half::f16::from_f32(w).to_bits())
                .count();
            // An f32 a last bit away can round to the neighbouring half: allow a handful, never many.
            assert!(
                differ * 1000 <= want.len(),
                "{format:?}: {differ} of {} halves differ",
                want.len()
            );
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn a_short_output_is_an_error_before_any_launch() {
        let gpu = gpu();
        let origins = upload_origins(&gpu, &ORIGINS).unwrap();
        let img = random_image(PixelFormat::Gray8, 53, 37, 1);
        let (bytes, layout) = concat_planes(&img);
        let frame = gpu.stream.clone_htod(&bytes).unwrap();
        let fmt = layout.device_format(bytes.len()).unwrap();
        let mut out = gpu.stream.alloc_zeros::<f32>(10).unwrap();
        let r = unpack_tiles(&gpu, &frame, &fmt, &origins, TILE, ModelRange::ZERO_ONE, &mut out);
        assert!(matches!(r, Err(CudaError::Shape(_))));
    }
}
