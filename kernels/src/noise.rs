//! The frame's noise (grain) level, measured against its motion-compensated neighbours: one
//! level for the frame, which the blotch, scratch and grain stages take as their unit, and the
//! level as a function of brightness, which the grain filter's flat-area step needs.
//!
//! Both come from one pass over a subsample of about 50,000 pixels: each pixel's residual
//! against the mean of its two compensated neighbours, binned by its magnitude and by the
//! neighbours' brightness. A median of the residuals (not their spread) is the level, so the
//! few pixels that blotches, scratches or wrong vectors put far out do not raise it.

use crate::frame::Plane;

/// Grain level over the frame and by brightness (see the module's notes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseProfile {
    sigma: f32,
    /// `level(t) = c0 + c1 t + c2 t^2` at brightness `t + 0.5`, held within `[lowest,
    /// highest]`: `[c0, c1, c2, lowest, highest]`.
    curve: [f32; 5],
}

/// Brightness bands the level is measured in.
const BANDS: usize = 16;
/// Fewest samples a band needs for its own level (else the frame's level stands in).
const MIN_SAMPLES: u32 = 200;
/// Residual magnitudes are binned in quarters of an 8-bit level, up to 64 levels.
const BINS: usize = 256;
const BINS_PER_UNIT: f32 = 1020.0;

impl NoiseProfile {
    /// One level at every brightness.
    pub fn flat(sigma: f32) -> Self {
        NoiseProfile {
            sigma,
            curve: [sigma, 0.0, 0.0, sigma, sigma],
        }
    }

    /// Measures the levels of `centre` against its compensated neighbours `a` and `b`.
    pub fn measure(centre: &Plane, a: &Plane, b: &Plane) -> Self {
        let mut hist = [[0u32; BINS]; BANDS];
        let step = ((centre.data.len() / 50_000).max(1) as f64).sqrt().ceil() as usize;
        for y in (0..centre.height).step_by(step) {
            let (cr, ar, br) = (centre.row(y), a.row(y), b.row(y));
            for x in (0..centre.width).step_by(step) {
                let mean = 0.5 * (ar[x] + br[x]);
                let band = ((mean * BANDS as f32).max(0.0) as usize).min(BANDS - 1);
                hist[band][residual_bin(cr[x] - mean)] += 1;
            }
        }
        let mut frame = [0u32; BINS];
        for band in &hist {
            frame.iter_mut().zip(band).for_each(|(f, &n)| *f += n);
        }
        let sigma = sigma_of_residuals(&frame);
        let levels = hist.map(|h| match h.iter().sum::<u32>() >= MIN_SAMPLES {
            true => sigma_of_residuals(&h),
            false => sigma,
        });
        NoiseProfile {
            sigma,
            curve: fit_curve(&levels),
        }
    }

    /// The frame's level: the standard deviation of its grain, in units of full scale.
    pub fn sigma(&self) -> f32 {
        self.sigma
    }

    /// The level at `brightness` (0 to 1).
    pub fn level_at(&self, brightness: f32) -> f32 {
        curve_level(self.curve, brightness)
    }

    /// The curve of [`Self::level_at`], every term scaled by `scale`, for per-pixel loops to
    /// evaluate with [`curve_level`].
    pub(crate) fn scaled_curve(&self, scale: f32) -> [f32; 5] {
        self.curve.map(|c| c * scale)
    }
}

/// A curve `[c0, c1, c2, lowest, highest]` at `brightness`: `c0 + c1 t + c2 t^2` with t =
/// brightness - 0.5, held within `[lowest, highest]`.
#[inline(always)]
pub(crate) fn curve_level(curve: [f32; 5], brightness: f32) -> f32 {
    let [c0, c1, c2, lowest, highest] = curve;
    let t = brightness - 0.5;
    (c0 + t * (c1 + t * c2)).max(lowest).min(highest)
}

/// The histogram bin of a residual's magnitude.
#[inline]
fn residual_bin(residual: f32) -> usize {
    ((residual.abs() * BINS_PER_UNIT) as usize).min(BINS - 1)
}

/// The noise level whose residuals against the mean of two neighbours have the median of
/// `hist` (binned by [`residual_bin`]); 0 for an empty histogram.
fn sigma_of_residuals(hist: &[u32; BINS]) -> f32 {
    let count: u32 = hist.iter().sum();
    let mut seen = 0;
    for (bin, &n) in hist.iter().enumerate() {
        seen += n;
        if seen * 2 >= count && seen > 0 {
            // The median of |N(0, s)| is 0.6745 s, and the residual of a noisy sample against
            // the mean of two others has 1.22x the noise of one.
            return (bin as f32 + 0.5) / BINS_PER_UNIT / 0.6745 / 1.22;
        }
    }
    0.0
}

/// Fits `level(t) = c0 + c1 t + c2 t^2` (t = brightness - 0.5) to the bands' levels at their
/// centres by least squares: a smooth curve that a per-pixel loop evaluates without a table
/// (so it vectorises), held within the bands' range so that it cannot overshoot at the ends.
fn fit_curve(levels: &[f32; BANDS]) -> [f32; 5] {
    let mut normal = [[0.0f64; 4]; 3];
    for (band, &level) in levels.iter().enumerate() {
        let t = (band as f64 + 0.5) / BANDS as f64 - 0.5;
        let powers = [1.0, t, t * t];
        for (row, &p) in normal.iter_mut().zip(&powers) {
            for (m, &q) in row.iter_mut().zip(&powers) {
                *m += p * q;
            }
            row[3] += p * level as f64;
        }
    }
    let [c0, c1, c2] = solve3(normal).map(|c| c as f32);
    let lowest = levels.iter().copied().fold(f32::INFINITY, f32::min);
    let highest = levels.iter().copied().fold(0.0, f32::max);
    [c0, c1, c2, lowest, highest]
}

/// Solves a 3x3 system given as its augmented rows, by elimination with partial pivoting (the
/// normal equations of 16 evenly spread points are well conditioned).
fn solve3(mut m: [[f64; 4]; 3]) -> [f64; 3] {
    for col in 0..3 {
        let pivot = (col..3)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        for row in col + 1..3 {
            let f = m[row][col] / m[col][col];
            for k in col..4 {
                m[row][k] -= f * m[col][k];
            }
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let rest: f64 = (row + 1..3).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][3] - rest) / m[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Three frames of `base` under independent Gaussian grain of level `level(brightness)`.
    fn grainy(base: &Plane, level: impl Fn(f32) -> f32, seed: u64) -> [Plane; 3] {
        let mut rng = Rng::new(seed);
        [0; 3].map(|_| {
            let mut p = base.clone();
            p.data.iter_mut().for_each(|v| *v += level(*v) * rng.normal());
            p
        })
    }

    fn ramp(w: usize, h: usize) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                p.set(x, y, 0.05 + 0.9 * x as f32 / (w - 1) as f32);
            }
        }
        p
    }

    #[test]
    fn an_even_level_is_measured_at_every_brightness() {
        let [c, a, b] = grainy(&ramp(640, 360), |_| 0.03, 1);
        let noise = NoiseProfile::measure(&c, &a, &b);
        assert!((noise.sigma() - 0.03).abs() < 0.003, "frame level {}", noise.sigma());
        for t in [0.1, 0.3, 0.5, 0.7, 0.9] {
            let level = noise.level_at(t);
            assert!((level - 0.03).abs() < 0.004, "at {t}: {level}");
        }
    }

    #[test]
    fn grain_strongest_in_midtones_is_measured_so() {
        // As film grain (and the synthetic damage): 0.05 at mid grey, 0.014 at the ends.
        let level = |v: f32| 0.01 + 0.16 * v * (1.0 - v);
        let [c, a, b] = grainy(&ramp(640, 360), level, 2);
        let noise = NoiseProfile::measure(&c, &a, &b);
        for t in [0.15, 0.3, 0.5, 0.7, 0.85] {
            let (measured, truth) = (noise.level_at(t), level(t));
            assert!(
                (measured - truth).abs() < 0.15 * truth,
                "at {t}: {measured}, truly {truth}"
            );
        }
        // One level for the frame lies between the ends and the middle.
        assert!(
            noise.sigma() > level(0.1) && noise.sigma() < level(0.5),
            "frame level {}",
            noise.sigma()
        );
    }

    #[test]
    fn outliers_do_not_raise_the_level() {
        // A tenth of the pixels far off (dirt, wrong vectors): the median ignores them.
        let [mut c, a, b] = grainy(&ramp(320, 180), |_| 0.02, 3);
        c.data.iter_mut().step_by(10).for_each(|v| *v = 1.0 - *v);
        let noise = NoiseProfile::measure(&c, &a, &b);
        assert!(noise.sigma() < 0.026, "frame level {}", noise.sigma());
    }

    #[test]
    fn bands_with_too_few_samples_take_the_frame_level() {
        // Nearly all pixels in one band: the others fall back to the frame's level (not to
        // zero), so the curve stays within a histogram bin (0.0012) of it everywhere.
        let [c, a, b] = grainy(&Plane::filled(100, 60, 0.53), |_| 0.02, 4);
        let noise = NoiseProfile::measure(&c, &a, &b);
        for t in [0.05, 0.3, 0.53, 0.95] {
            assert!(
                (noise.level_at(t) - noise.sigma()).abs() < 0.0013,
                "at {t}: {}",
                noise.level_at(t)
            );
        }
    }

    #[test]
    fn the_fit_recovers_a_quadratic_and_flat_is_flat() {
        let truth = |t: f64| 0.02 + 0.01 * t - 0.05 * t * t;
        let levels = std::array::from_fn(|band| truth((band as f64 + 0.5) / BANDS as f64 - 0.5) as f32);
        let [c0, c1, c2, lowest, highest] = fit_curve(&levels);
        assert!(
            (c0 - 0.02).abs() < 1e-6 && (c1 - 0.01).abs() < 1e-6 && (c2 + 0.05).abs() < 1e-6,
            "{c0} {c1} {c2}"
        );
        assert!(lowest < highest);
        // A zero first pivot, which the row swap must get round.
        let x = solve3([[0.0, 2.0, 1.0, 5.0], [1.0, 1.0, 1.0, 5.0], [4.0, 1.0, 2.0, 11.0]]);
        for (got, want) in x.iter().zip([1.0, 1.0, 3.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
        let flat = NoiseProfile::flat(0.03);
        assert_eq!(
            (flat.level_at(0.0), flat.level_at(1.0), flat.sigma()),
            (0.03, 0.03, 0.03)
        );
    }
}
