//! The scheduler's per-value steps on the device: the fixed noise added at a timestep, the prediction turned into
//! the denoised latent, the decoder's range back to `[0, 1]`. Twins: [`crate::latent::schedule`].

use super::device::grid;
use super::{CudaError, Gpu};
use crate::latent::schedule::Prediction;
use cudarc::driver::{CudaSlice, PushKernelArg};

fn check(what: &str, n: usize, lens: &[usize]) -> Result<(), CudaError> {
    if lens.iter().any(|&l| l < n) {
        return Err(CudaError::Shape(format!("{what} of {n} values: a buffer is too small")));
    }
    Ok(())
}

/// `out = a * z0 + b * noise` over the first `n` values.
pub fn add_noise(
    gpu: &Gpu,
    z0: &CudaSlice<f32>,
    noise: &CudaSlice<f32>,
    (a, b): (f32, f32),
    out: &mut CudaSlice<f32>,
    n: usize,
) -> Result<(), CudaError> {
    check("add_noise", n, &[z0.len(), noise.len(), out.len()])?;
    let mut l = gpu.stream.launch_builder(&gpu.k.add_noise);
    l.arg(z0).arg(noise).arg(&a).arg(&b).arg(out).arg(&n);
    // SAFETY: arguments match `add_noise`; every buffer holds `n` values (checked).
    unsafe { l.launch(grid(n, 1)) }?;
    Ok(())
}

/// The denoised latent from `pred` (in place) and `zt`, over the first `n` values.
pub fn denoise(
    gpu: &Gpu,
    zt: &CudaSlice<f32>,
    pred: &mut CudaSlice<f32>,
    kind: Prediction,
    (a, b): (f32, f32),
    (c_skip, c_out): (f32, f32),
    n: usize,
) -> Result<(), CudaError> {
    check("denoise", n, &[zt.len(), pred.len()])?;
    let kind = kind as i32;
    let mut l = gpu.stream.launch_builder(&gpu.k.denoise);
    l.arg(zt)
        .arg(pred)
        .arg(&kind)
        .arg(&a)
        .arg(&b)
        .arg(&c_skip)
        .arg(&c_out)
        .arg(&n);
    // SAFETY: arguments match `denoise`; both buffers hold `n` values (checked).
    unsafe { l.launch(grid(n, 1)) }?;
    Ok(())
}

/// `v = (v + 1) / 2` over the first `n` values.
pub fn unit_from_model(gpu: &Gpu, v: &mut CudaSlice<f32>, n: usize) -> Result<(), CudaError> {
    check("unit_from_model", n, &[v.len()])?;
    let mut l = gpu.stream.launch_builder(&gpu.k.unit_from_model);
    l.arg(v).arg(&n);
    // SAFETY: arguments match `unit_from_model`; the buffer holds `n` values (checked).
    unsafe { l.launch(grid(n, 1)) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::test_util::{gpu, max_diff, random};
    use crate::latent::schedule as twin;

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn noise_denoise_and_range_match_the_cpu() {
        let gpu = gpu();
        let n = 4 * 64 * 64 * 3 + 17;
        let (z0, eps) = (random(n, -3.0, 3.0, 1), random(n, -3.0, 3.0, 2));
        let (d_z0, d_eps) = (
            gpu.stream.clone_htod(&z0).unwrap(),
            gpu.stream.clone_htod(&eps).unwrap(),
        );
        let mut d_zt = gpu.stream.alloc_zeros::<f32>(n).unwrap();
        add_noise(&gpu, &d_z0, &d_eps, (0.7, 0.3), &mut d_zt, n).unwrap();
        let mut zt = vec![0.0; n];
        twin::add_noise(&z0, &eps, 0.7, 0.3, &mut zt);
        assert_eq!(max_diff(&gpu.stream.clone_dtoh(&d_zt).unwrap(), &zt), 0.0);
        for kind in [Prediction::Epsilon, Prediction::Velocity, Prediction::Sample] {
            let mut d_pred = gpu.stream.clone_htod(&eps).unwrap();
            denoise(&gpu, &d_zt, &mut d_pred, kind, (0.7, 0.3), (0.1, 0.9), n).unwrap();
            let mut pred = eps.clone();
            twin::denoise_values(kind, (0.7, 0.3), (0.1, 0.9), &zt, &mut pred);
            assert!(
                max_diff(&gpu.stream.clone_dtoh(&d_pred).unwrap(), &pred) <= 1e-6,
                "{kind:?}"
            );
        }
        let mut d_v = gpu.stream.clone_htod(&z0).unwrap();
        unit_from_model(&gpu, &mut d_v, n).unwrap();
        let mut v = z0.clone();
        twin::unit_from_model(&mut v);
        assert_eq!(max_diff(&gpu.stream.clone_dtoh(&d_v).unwrap(), &v), 0.0);
    }
}
