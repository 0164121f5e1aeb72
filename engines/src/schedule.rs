//! Scheduler maths: which timesteps a frame is denoised at, the noise coefficients, and the one-step estimate of
//! the clean latent (with LCM's boundary condition where the bundle asks for it).

use crate::bundle::{Boundary, PredictionType, SchedulerSection};
use kernels::latent::schedule::{denoise_values, Prediction};

/// `k` timesteps, descending, for img2img at `strength`: start at the allowed timestep nearest to
/// `strength * (T - 1)`, then spread the others evenly over the rest of the allowed list (LCM's 4-step schedule
/// 999, 759, 499, 259 at strength 1 with 50 origin steps).
pub fn select_timesteps(s: &SchedulerSection, strength: f32, k: usize) -> Vec<usize> {
    let all: Vec<usize>;
    let allowed: &[usize] = if s.timesteps.is_empty() {
        all = (0..s.num_train_timesteps).rev().collect();
        &all
    } else {
        &s.timesteps
    };
    let target = strength as f64 * (s.num_train_timesteps - 1) as f64;
    let mut i0 = 0;
    for (i, &t) in allowed.iter().enumerate() {
        if (t as f64 - target).abs() < (allowed[i0] as f64 - target).abs() {
            i0 = i;
        }
    }
    let n = allowed.len();
    (0..k).map(|j| allowed[i0 + (j * (n - i0)) / k]).collect()
}

/// `(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`.
pub fn coeffs(s: &SchedulerSection, t: usize) -> (f32, f32) {
    let a = s.alphas_cumprod[t];
    (a.sqrt() as f32, (1.0 - a).sqrt() as f32)
}

/// `(c_skip, c_out)` of the boundary condition at `t`.
pub fn boundary(s: &SchedulerSection, t: usize) -> (f32, f32) {
    match s.boundary {
        Boundary::None => (0.0, 1.0),
        Boundary::Lcm => {
            let x = s.timestep_scaling * t as f64;
            let sd2 = s.sigma_data * s.sigma_data;
            ((sd2 / (x * x + sd2)) as f32, (x / (x * x + sd2).sqrt()) as f32)
        }
    }
}

/// `z_t = a * z0 + b * noise`, into `out` (in `kernels::latent::schedule`, next to its kernel).
pub use kernels::latent::schedule::add_noise;

/// The prediction type as the per-value maths (and its kernel) take it.
pub fn prediction(s: &SchedulerSection) -> Prediction {
    match s.prediction_type {
        PredictionType::Epsilon => Prediction::Epsilon,
        PredictionType::VPrediction => Prediction::Velocity,
        PredictionType::Sample => Prediction::Sample,
    }
}

/// The denoised latent from the model's prediction at `t`, overwriting `pred`.
pub fn denoise(s: &SchedulerSection, t: usize, zt: &[f32], pred: &mut [f32]) {
    denoise_values(prediction(s), coeffs(s, t), boundary(s, t), zt, pred);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(timesteps: Vec<usize>) -> SchedulerSection {
        SchedulerSection {
            num_train_timesteps: 1000,
            prediction_type: PredictionType::Epsilon,
            boundary: Boundary::Lcm,
            timestep_scaling: 10.0,
            sigma_data: 0.5,
            timesteps,
            alphas_cumprod: (0..1000).map(|t| 1.0 - t as f64 / 1001.0).collect(),
        }
    }

    #[test]
    fn lcm_schedule_matches_the_lcm_scheduler() {
        let lcm: Vec<usize> = (1..=50).rev().map(|i| i * 20 - 1).collect();
        assert_eq!(select_timesteps(&sched(lcm.clone()), 1.0, 4), vec![999, 759, 499, 259]);
        assert_eq!(select_timesteps(&sched(lcm), 1.0, 1), vec![999]);
        assert_eq!(select_timesteps(&sched(vec![]), 0.0, 1), vec![0]);
        assert_eq!(select_timesteps(&sched(vec![]), 0.25, 1), vec![250]);
    }

    #[test]
    fn boundary_is_identity_at_zero_and_x0_late() {
        let s = sched(vec![]);
        assert_eq!(boundary(&s, 0), (1.0, 0.0));
        let (skip, out) = boundary(&s, 999);
        assert!(skip < 1e-6 && (out - 1.0).abs() < 1e-6);
    }
}
