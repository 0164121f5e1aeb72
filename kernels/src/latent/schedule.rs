//! The scheduler's per-value maths, apart from the scheduler itself (which lives in `engines::schedule`): adding
//! the fixed noise at a timestep, turning a UNet prediction into the denoised latent, and the VAE decoder's range
//! back to `[0, 1]`. Each is the CPU twin of a kernel in `cuda/kernels.cu`.

/// What the UNet predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Prediction {
    /// The noise (epsilon).
    Epsilon = 0,
    /// The velocity (v).
    Velocity = 1,
    /// The clean sample.
    Sample = 2,
}

/// `z_t = a * z0 + b * noise`, into `out`.
pub fn add_noise(z0: &[f32], noise: &[f32], a: f32, b: f32, out: &mut [f32]) {
    for ((o, &z), &e) in out.iter_mut().zip(z0).zip(noise) {
        *o = a * z + b * e;
    }
}

/// The denoised latent from the model's prediction, overwriting `pred`: the clean estimate `x0` for the
/// prediction type with `(a, b) = (sqrt(alpha_bar), sqrt(1 - alpha_bar))`, then the boundary condition
/// `c_out * x0 + c_skip * z_t` (`(0, 1)` without one).
pub fn denoise_values(kind: Prediction, (a, b): (f32, f32), (c_skip, c_out): (f32, f32), zt: &[f32], pred: &mut [f32]) {
    for (p, &z) in pred.iter_mut().zip(zt) {
        let x0 = match kind {
            Prediction::Epsilon => (z - b * *p) / a,
            Prediction::Velocity => a * z - b * *p,
            Prediction::Sample => *p,
        };
        *p = c_out * x0 + c_skip * z;
    }
}

/// The VAE decoder's `[-1, 1]` back to `[0, 1]` (not clamped), in place.
pub fn unit_from_model(values: &mut [f32]) {
    for v in values {
        *v = (*v + 1.0) * 0.5;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denoising_the_noised_sample_with_the_true_noise_gives_it_back() {
        let z0 = [0.3f32, -0.7, 1.2];
        let eps = [0.5f32, 0.1, -0.9];
        let (a, b) = (0.8f32, 0.6f32);
        let mut zt = [0.0f32; 3];
        add_noise(&z0, &eps, a, b, &mut zt);
        let mut pred = eps;
        denoise_values(Prediction::Epsilon, (a, b), (0.0, 1.0), &zt, &mut pred);
        for (x, y) in pred.iter().zip(&z0) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
        let mut v = [-1.0f32, 0.0, 1.0];
        unit_from_model(&mut v);
        assert_eq!(v, [0.0, 0.5, 1.0]);
    }
}
