//! The rolling latent cache on the device. Twin: [`crate::latent::cache::LatentCache`] (`apply` and
//! `blend_tile`): the same change, weight and blend, and the same rules for when it blends and what it keeps.

use super::device::grid;
use super::{CudaError, Gpu};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// Device state of [`crate::latent::cache::LatentCache`]: last frame's input latents and blended output, and the
/// change scratch. Buffers are allocated when the shape changes, never per frame.
#[derive(Default)]
pub struct DeviceLatentCache {
    reference: Option<CudaSlice<f32>>,
    output: Option<CudaSlice<f32>>,
    change: Option<CudaSlice<f32>>,
    shape: (usize, usize, usize, usize),
    filled: bool,
}

impl DeviceLatentCache {
    pub fn reset(&mut self) {
        self.filled = false;
        self.shape = (0, 0, 0, 0);
    }

    pub fn is_empty(&self) -> bool {
        !self.filled
    }

    /// Blends `denoised` (`[tiles][c][h][w]`) in place with the cache, then stores `reference` and the result, as
    /// `LatentCache::apply` does.
    pub fn apply(
        &mut self,
        gpu: &Gpu,
        reference: &CudaSlice<f32>,
        denoised: &mut CudaSlice<f32>,
        shape: (usize, usize, usize, usize),
        blend: f32,
        tolerance: f32,
    ) -> Result<(), CudaError> {
        let (tiles, c, h, w) = shape;
        let len = tiles * c * h * w;
        if reference.len() < len || denoised.len() < len {
            return Err(CudaError::Shape(format!(
                "latents of shape {shape:?} need {len} values"
            )));
        }
        if blend > 0.0 && self.filled && self.shape == shape {
            self.blend(gpu, reference, denoised, shape, blend, tolerance.max(1e-12))?;
        }
        self.store(gpu, reference, denoised, shape)
    }

    fn blend(
        &mut self,
        gpu: &Gpu,
        reference: &CudaSlice<f32>,
        denoised: &mut CudaSlice<f32>,
        (tiles, c, h, w): (usize, usize, usize, usize),
        blend: f32,
        tolerance: f32,
    ) -> Result<(), CudaError> {
        let (cached_ref, cached_out, change) = match (&self.reference, &self.output, &mut self.change) {
            (Some(r), Some(o), Some(d)) => (r, o, d),
            _ => return Ok(()),
        };
        let (c32, h32, w32, hw32) = (c as i32, h as i32, w as i32, (h * w) as i32);
        let mut b = gpu.stream.launch_builder(&gpu.k.latent_change);
        b.arg(reference).arg(cached_ref).arg(&c32).arg(&hw32).arg(&mut *change);
        // SAFETY: arguments match `latent_change`; every buffer holds `tiles` items of this shape.
        unsafe { b.launch(grid(h * w, tiles)) }?;
        let mut b = gpu.stream.launch_builder(&gpu.k.latent_blend);
        b.arg(&*change)
            .arg(cached_out)
            .arg(denoised)
            .arg(&c32)
            .arg(&h32)
            .arg(&w32);
        b.arg(&blend).arg(&tolerance);
        // SAFETY: as above, for `latent_blend`.
        unsafe { b.launch(grid(h * w, tiles)) }?;
        Ok(())
    }

    fn store(
        &mut self,
        gpu: &Gpu,
        reference: &CudaSlice<f32>,
        denoised: &CudaSlice<f32>,
        shape: (usize, usize, usize, usize),
    ) -> Result<(), CudaError> {
        let (tiles, c, h, w) = shape;
        let len = tiles * c * h * w;
        if self.shape != shape || self.reference.is_none() {
            self.reference = Some(gpu.stream.alloc_zeros(len)?);
            self.output = Some(gpu.stream.alloc_zeros(len)?);
            self.change = Some(gpu.stream.alloc_zeros(tiles * h * w)?);
        }
        let (r, o) = (self.reference.as_mut(), self.output.as_mut());
        let (r, o) = r.zip(o).expect("allocated above");
        gpu.stream.memcpy_dtod(&reference.slice(..len), r)?;
        gpu.stream.memcpy_dtod(&denoised.slice(..len), o)?;
        self.shape = shape;
        self.filled = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::test_util::{gpu, max_diff, random};
    use crate::latent::cache::LatentCache;

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn the_cache_matches_the_cpu_over_a_sequence_with_a_reset() {
        let gpu = gpu();
        let shape = (3, 4, 32, 40);
        let len = 3 * 4 * 32 * 40;
        let (mut cpu, mut dev) = (LatentCache::default(), DeviceLatentCache::default());
        let base = random(len, -2.0, 2.0, 1);
        for frame in 0..5u64 {
            if frame == 3 {
                cpu.reset();
                dev.reset();
            }
            // Inputs that change a little (blended) in most places and a lot (kept) in others.
            let noise = random(len, -0.3, 0.3, 10 + frame);
            let reference: Vec<f32> = base
                .iter()
                .zip(&noise)
                .map(|(b, n)| b + n * (n.abs() > 0.2) as u8 as f32)
                .collect();
            let mut want = random(len, -1.0, 1.0, 20 + frame);
            let mut got = gpu.stream.clone_htod(&want).unwrap();
            dev.apply(
                &gpu,
                &gpu.stream.clone_htod(&reference).unwrap(),
                &mut got,
                shape,
                0.6,
                0.1,
            )
            .unwrap();
            cpu.apply(&reference, &mut want, shape, 0.6, 0.1);
            let got = gpu.stream.clone_dtoh(&got).unwrap();
            // exp in f64 on both sides; the f32 weight can differ in its last bit at most.
            assert!(
                max_diff(&got, &want) <= 1e-6,
                "frame {frame}: {}",
                max_diff(&got, &want)
            );
            assert_eq!(dev.is_empty(), cpu.is_empty());
        }
    }
}
