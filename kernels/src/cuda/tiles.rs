//! The tile grid on the device: origins and feather weights uploaded once per frame size, tiles unpacked straight
//! from the frame buffer, and the feathered blend back into a frame. Twin: [`crate::latent::tiles::Grid`]
//! (`extract_all`, `blend`), whose weights are the ones uploaded.

use super::device::grid;
use super::format::DeviceFormat;
use super::unpack::{unpack_tiles, upload_origins};
use super::{CudaError, Gpu};
use crate::latent::rgb::ModelRange;
use crate::latent::tiles::Grid;
use cudarc::driver::{CudaSlice, PushKernelArg};

/// A [`Grid`] with its origins and dense weights (`[n][tile_h][tile_w]`) on the device.
pub struct DeviceGrid {
    pub grid: Grid,
    origins: CudaSlice<i32>,
    weights: CudaSlice<f32>,
}

impl DeviceGrid {
    pub fn new(gpu: &Gpu, grid: Grid) -> Result<DeviceGrid, CudaError> {
        let origins = upload_origins(gpu, &grid.tiles)?;
        let weights = gpu.stream.clone_htod(&grid.dense_weights())?;
        Ok(DeviceGrid { grid, origins, weights })
    }

    /// Values in all tiles, `n * 3 * tile_h * tile_w`.
    pub fn tiles_len(&self) -> usize {
        self.grid.len() * 3 * self.grid.tile_w * self.grid.tile_h
    }

    /// Every tile of `frame` into `out` (`[n][3][tile_h][tile_w]`) in the model's range.
    pub fn unpack(
        &self,
        gpu: &Gpu,
        frame: &CudaSlice<u8>,
        fmt: &DeviceFormat,
        range: ModelRange,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let tile = (self.grid.tile_w, self.grid.tile_h);
        unpack_tiles(gpu, frame, fmt, &self.origins, tile, range, out)
    }

    /// Blends `tiles` (`[n][3][tile_h][tile_w]`) into `out` (`[3][h][w]`).
    pub fn blend(&self, gpu: &Gpu, tiles: &CudaSlice<f32>, out: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        let g = &self.grid;
        if tiles.len() < self.tiles_len() || out.len() < 3 * g.width * g.height {
            return Err(CudaError::Shape(format!(
                "blend of {} tiles into {}x{}: buffers too small",
                g.len(),
                g.width,
                g.height
            )));
        }
        let dims = [g.len(), g.tile_w, g.tile_h, g.width, g.height].map(|v| v as i32);
        let mut b = gpu.stream.launch_builder(&gpu.k.blend_tiles);
        b.arg(tiles).arg(&self.weights).arg(&self.origins);
        for d in &dims {
            b.arg(d);
        }
        b.arg(out);
        // SAFETY: arguments match `blend_tiles`; sizes checked above, origins and weights made from `grid`.
        unsafe { b.launch(grid(g.width * g.height, 1)) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::format::concat_planes;
    use crate::cuda::test_util::{gpu, max_diff, random};
    use crate::formats::PixelFormat;
    use crate::latent::rgb::test_images::random_image;
    use crate::latent::rgb::unpack_tile;

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn the_feathered_blend_matches_the_cpu() {
        let gpu = gpu();
        for &(w, h, t, overlap) in &[(1920, 1080, 512, 64), (99, 71, 64, 16), (30, 20, 64, 8)] {
            let cpu = Grid::new(w, h, t, t, overlap);
            let dev = DeviceGrid::new(&gpu, cpu.clone()).unwrap();
            let tiles = random(dev.tiles_len(), 0.0, 1.0, (w * h) as u64);
            let want = cpu.blend(&tiles);
            let mut out = gpu.stream.alloc_zeros::<f32>(3 * w * h).unwrap();
            dev.blend(&gpu, &gpu.stream.clone_htod(&tiles).unwrap(), &mut out)
                .unwrap();
            let got = gpu.stream.clone_dtoh(&out).unwrap();
            // Summed per pixel in the CPU's order without fused multiply-adds: expected bit-identical.
            assert!(
                max_diff(&got, &want.data) <= 1e-6,
                "{w}x{h}: {}",
                max_diff(&got, &want.data)
            );
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn unpacking_a_grid_matches_the_cpu_tile_by_tile() {
        let gpu = gpu();
        let (w, h) = (130, 67);
        let img = random_image(PixelFormat::I420, w, h, 3);
        let cpu = Grid::new(w, h, 64, 48, 16);
        let dev = DeviceGrid::new(&gpu, cpu.clone()).unwrap();
        let (bytes, layout) = concat_planes(&img);
        let fmt = layout.device_format(bytes.len()).unwrap();
        let mut out = gpu.stream.alloc_zeros::<f32>(dev.tiles_len()).unwrap();
        dev.unpack(
            &gpu,
            &gpu.stream.clone_htod(&bytes).unwrap(),
            &fmt,
            ModelRange::MINUS_ONE_ONE,
            &mut out,
        )
        .unwrap();
        let got = gpu.stream.clone_dtoh(&out).unwrap();
        let want: Vec<f32> = cpu
            .tiles
            .iter()
            .flat_map(|&o| {
                unpack_tile(
                    PixelFormat::I420,
                    w,
                    h,
                    &img.plane_refs(),
                    o,
                    (64, 48),
                    ModelRange::MINUS_ONE_ONE,
                )
                .unwrap()
            })
            .collect();
        assert!(max_diff(&got, &want) <= 1e-6, "{}", max_diff(&got, &want));
    }
}
