//! The colour fix on the device: a separable Gaussian blur (the CPU's taps, uploaded) of the restored tiles and
//! of their reference, then `(v - blur(v)) + blur(ref)`, clamped. Twin: [`crate::latent::blur::colour_fix`], run
//! per tile as the prior does.

use super::device::grid;
use super::{CudaError, Gpu};
use crate::latent::blur::gaussian_kernel;
use cudarc::driver::{CudaFunction, CudaSlice, PushKernelArg};

/// Taps and scratch for one sigma and up to `capacity` values; nothing is allocated per frame.
pub struct DeviceColourFix {
    sigma: f32,
    taps: CudaSlice<f32>,
    ntaps: i32,
    tmp: CudaSlice<f32>,
    blurred: CudaSlice<f32>,
    blurred_ref: CudaSlice<f32>,
}

impl DeviceColourFix {
    pub fn new(gpu: &Gpu, sigma: f32, capacity: usize) -> Result<Self, CudaError> {
        let k = gaussian_kernel(sigma.max(f32::MIN_POSITIVE));
        Ok(DeviceColourFix {
            sigma,
            ntaps: k.len() as i32,
            taps: gpu.stream.clone_htod(&k)?,
            tmp: gpu.stream.alloc_zeros(capacity.max(1))?,
            blurred: gpu.stream.alloc_zeros(capacity.max(1))?,
            blurred_ref: gpu.stream.alloc_zeros(capacity.max(1))?,
        })
    }

    /// Fixes `planes` planes of `w x h` (e.g. `tiles * 3`) of `restored` against `reference`, in place.
    pub fn apply(
        &mut self,
        gpu: &Gpu,
        restored: &mut CudaSlice<f32>,
        reference: &CudaSlice<f32>,
        planes: usize,
        (w, h): (usize, usize),
    ) -> Result<(), CudaError> {
        self.check(restored.len(), reference.len(), planes, (w, h))?;
        if self.sigma > 0.0 {
            self.blur_into(gpu, restored, true, planes, (w, h))?;
            self.blur_into(gpu, reference, false, planes, (w, h))?;
        }
        self.combine(gpu, restored, planes * w * h)
    }

    /// `v + blur(reference) - blur(base)`, clamped, in place: a frame the similarity filter skipped is the last
    /// output moved by the change of the input's low frequencies since it. (The CPU computes it as `blur(reference
    /// - base)`: the same sum, rounded in another order.)
    pub fn shift_low(
        &mut self,
        gpu: &Gpu,
        v: &mut CudaSlice<f32>,
        base: &CudaSlice<f32>,
        reference: &CudaSlice<f32>,
        planes: usize,
        (w, h): (usize, usize),
    ) -> Result<(), CudaError> {
        self.check(v.len(), reference.len().min(base.len()), planes, (w, h))?;
        if self.sigma > 0.0 {
            self.blur_into(gpu, base, true, planes, (w, h))?;
            self.blur_into(gpu, reference, false, planes, (w, h))?;
        }
        self.combine(gpu, v, planes * w * h)
    }

    fn check(&self, out_len: usize, in_len: usize, planes: usize, (w, h): (usize, usize)) -> Result<(), CudaError> {
        let n = planes * w * h;
        if out_len < n || in_len < n || self.tmp.len() < n {
            return Err(CudaError::Shape(format!(
                "colour fix of {planes} planes of {w}x{h}: buffers too small"
            )));
        }
        Ok(())
    }

    /// Blurs `src` into the first (`restored`-side) or the second (reference-side) scratch buffer.
    fn blur_into(
        &mut self,
        gpu: &Gpu,
        src: &CudaSlice<f32>,
        first: bool,
        planes: usize,
        (w, h): (usize, usize),
    ) -> Result<(), CudaError> {
        let dst = if first {
            &mut self.blurred
        } else {
            &mut self.blurred_ref
        };
        blur(gpu, &self.taps, self.ntaps, src, &mut self.tmp, dst, planes, (w, h))
    }

    /// `v = (v - blurred) + blurred_ref` (or just the clamp without blur), over `n` values.
    fn combine(&self, gpu: &Gpu, v: &mut CudaSlice<f32>, n: usize) -> Result<(), CudaError> {
        let have = (self.sigma > 0.0) as i32;
        let mut b = gpu.stream.launch_builder(&gpu.k.colour_fix_combine);
        b.arg(v).arg(&self.blurred).arg(&self.blurred_ref).arg(&n).arg(&have);
        // SAFETY: arguments match `colour_fix_combine`; every buffer holds `n` values (checked by the callers).
        unsafe { b.launch(grid(n, 1)) }?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn blur(
    gpu: &Gpu,
    taps: &CudaSlice<f32>,
    ntaps: i32,
    src: &CudaSlice<f32>,
    tmp: &mut CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
    planes: usize,
    (w, h): (usize, usize),
) -> Result<(), CudaError> {
    pass(gpu, &gpu.k.blur_rows, taps, ntaps, src, tmp, planes, (w, h))?;
    pass(gpu, &gpu.k.blur_cols, taps, ntaps, tmp, dst, planes, (w, h))
}

#[allow(clippy::too_many_arguments)]
fn pass(
    gpu: &Gpu,
    f: &CudaFunction,
    taps: &CudaSlice<f32>,
    ntaps: i32,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
    planes: usize,
    (w, h): (usize, usize),
) -> Result<(), CudaError> {
    let dims = [w, h, planes].map(|v| v as i32);
    let mut b = gpu.stream.launch_builder(f);
    b.arg(src).arg(taps).arg(&ntaps);
    for d in &dims {
        b.arg(d);
    }
    b.arg(dst);
    // SAFETY: arguments match `blur_rows` / `blur_cols`; the caller checked that `planes * w * h` values fit.
    unsafe { b.launch(grid(planes * w * h, 1)) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::test_util::{gpu, max_diff, random};
    use crate::latent::blur::colour_fix;

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn the_colour_fix_matches_the_cpu_per_tile() {
        let gpu = gpu();
        let (tiles, tw, th) = (4, 96, 64);
        let n = tiles * 3 * tw * th;
        for sigma in [6.0f32, 1.5, 0.0] {
            let reference = random(n, 0.0, 1.0, 1);
            let restored = random(n, -0.2, 1.2, 2);
            let mut want = restored.clone();
            for (out, tile) in want.chunks_mut(3 * tw * th).zip(reference.chunks(3 * tw * th)) {
                colour_fix(out, tile, 3, tw, th, sigma);
            }
            let mut fix = DeviceColourFix::new(&gpu, sigma, n).unwrap();
            let mut got = gpu.stream.clone_htod(&restored).unwrap();
            fix.apply(
                &gpu,
                &mut got,
                &gpu.stream.clone_htod(&reference).unwrap(),
                tiles * 3,
                (tw, th),
            )
            .unwrap();
            let got = gpu.stream.clone_dtoh(&got).unwrap();
            // Same taps, same order, no fused multiply-adds: expected bit-identical.
            assert!(
                max_diff(&got, &want) <= 1e-6,
                "sigma {sigma}: {}",
                max_diff(&got, &want)
            );
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn shifting_the_low_frequencies_matches_the_cpu_reuse_of_a_skipped_frame() {
        let gpu = gpu();
        let (w, h, sigma) = (123, 77, 6.0f32);
        let n = 3 * w * h;
        let (last_out, last_in, input) = (random(n, 0.0, 1.0, 1), random(n, 0.0, 1.0, 2), random(n, 0.0, 1.0, 3));
        // The CPU path (engines' reuse of a skipped frame): last_out + blur(input - last_in), clamped.
        let change: Vec<f32> = input.iter().zip(&last_in).map(|(a, b)| a - b).collect();
        let low = crate::latent::blur::blur(&change, 3, w, h, sigma);
        let want: Vec<f32> = last_out
            .iter()
            .zip(&low)
            .map(|(v, d)| (v + d).clamp(0.0, 1.0))
            .collect();
        let mut fix = DeviceColourFix::new(&gpu, sigma, n).unwrap();
        let mut v = gpu.stream.clone_htod(&last_out).unwrap();
        let (base, reference) = (
            gpu.stream.clone_htod(&last_in).unwrap(),
            gpu.stream.clone_htod(&input).unwrap(),
        );
        fix.shift_low(&gpu, &mut v, &base, &reference, 3, (w, h)).unwrap();
        assert!(max_diff(&gpu.stream.clone_dtoh(&v).unwrap(), &want) < 1e-5);
    }
}
