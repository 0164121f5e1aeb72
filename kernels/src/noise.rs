//! The noise level as a function of brightness.
//!
//! Film grain is not equally strong at every level: it is strongest in the mid-tones and
//! weakest in deep shadows and highlights (silver density saturates at both ends). One noise
//! figure for the whole frame makes a filter too timid in the mid-tones and too strong in the
//! shadows, so the grain filter asks this curve for the noise at each pixel's own level.
//!
//! The curve is measured like the single figure: the robust spread of the temporal residual
//! (the centre against the mean of its two compensated neighbours), but in bands of brightness,
//! then fitted with a quadratic (smooth, and cheap to evaluate per pixel in a vector loop).

use crate::frame::Plane;

/// Brightness bands the residual is measured in.
const BANDS: usize = 8;

/// Residual histogram bins per band, over residuals 0..0.25.
const BINS: usize = 256;
const BIN_SCALE: f32 = 1020.0;

/// Fewest samples a band needs to count in the fit.
const MIN_BAND_SAMPLES: u32 = 64;

/// The median absolute residual of three noisy samples to the noise of one: 0.6745 (a
/// Gaussian's median absolute value) times 1.22 (the residual of a sample against the mean of
/// two others has 1.22 times one sample's spread).
const MEDIAN_TO_SIGMA: f32 = 0.6745 * 1.22;

/// How far the curve may leave the overall noise level, either way: a band's figure can be
/// thrown by a few large residuals (motion the vectors missed) where the band holds few
/// samples, and the grain filter's weights should never collapse or run away.
const MAX_RATIO: f32 = 3.0;

/// `sigma(v) = c0 + c1 v + c2 v^2` between the lowest and highest band figures measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseLevel {
    /// The overall level: the median over the whole frame, as the blotch and scratch stages
    /// use it.
    pub overall: f32,
    coefficients: [f32; 3],
    min: f32,
    max: f32,
}

impl NoiseLevel {
    /// The same level everywhere.
    pub fn flat(sigma: f32) -> Self {
        NoiseLevel {
            overall: sigma,
            coefficients: [sigma, 0.0, 0.0],
            min: sigma,
            max: sigma,
        }
    }

    /// The noise at brightness `v`.
    #[inline(always)]
    pub fn at(&self, v: f32) -> f32 {
        let [c0, c1, c2] = self.coefficients;
        (c0 + v * (c1 + v * c2)).max(self.min).min(self.max)
    }

    /// Measures the curve from the centre frame and its two compensated neighbours, on a
    /// subsample of about 50,000 pixels.
    pub fn estimate(centre: &Plane, a: &Plane, b: &Plane) -> Self {
        let mut hist = vec![[0u32; BINS]; BANDS];
        let mut level_sum = [0f64; BANDS];
        let step = ((centre.data.len() / 50_000).max(1) as f64).sqrt().ceil() as usize;
        for y in (0..centre.height).step_by(step) {
            let (c, ra, rb) = (centre.row(y), a.row(y), b.row(y));
            for x in (0..centre.width).step_by(step) {
                let level = 0.5 * (ra[x] + rb[x]);
                let band = ((level * BANDS as f32) as usize).min(BANDS - 1);
                let residual = (c[x] - level).abs();
                hist[band][((residual * BIN_SCALE) as usize).min(BINS - 1)] += 1;
                level_sum[band] += level as f64;
            }
        }
        let mut total = [0u32; BINS];
        for band in &hist {
            for (t, n) in total.iter_mut().zip(band) {
                *t += n;
            }
        }
        let Some(overall) = median_sigma(&total) else {
            return Self::flat(0.0);
        };
        let points: Vec<(f32, f32, f32)> = hist
            .iter()
            .zip(level_sum)
            .filter_map(|(band, sum)| {
                let count: u32 = band.iter().sum();
                let sigma = median_sigma(band)?;
                (count >= MIN_BAND_SAMPLES).then(|| ((sum / count as f64) as f32, sigma, count as f32))
            })
            .collect();
        Self::fit(overall, &points)
    }

    /// Fits the quadratic to `(level, sigma, weight)` points, bounded by the points' own range
    /// and by [`MAX_RATIO`] around `overall`; fewer than three points give a flat level.
    fn fit(overall: f32, points: &[(f32, f32, f32)]) -> Self {
        if points.len() < 3 || overall <= 0.0 {
            return Self::flat(overall);
        }
        let Some(coefficients) = weighted_quadratic(points) else {
            return Self::flat(overall);
        };
        let lowest = points.iter().map(|p| p.1).fold(f32::INFINITY, f32::min);
        let highest = points.iter().map(|p| p.1).fold(0.0, f32::max);
        NoiseLevel {
            overall,
            coefficients,
            min: lowest.max(overall / MAX_RATIO),
            max: highest.min(overall * MAX_RATIO),
        }
    }
}

/// The noise level behind a histogram of absolute residuals: its median, scaled.
fn median_sigma(hist: &[u32; BINS]) -> Option<f32> {
    let count: u32 = hist.iter().sum();
    if count == 0 {
        return None;
    }
    let mut seen = 0;
    for (bin, &n) in hist.iter().enumerate() {
        seen += n;
        if seen * 2 >= count {
            return Some((bin as f32 + 0.5) / BIN_SCALE / MEDIAN_TO_SIGMA);
        }
    }
    None
}

/// Least squares `y = c0 + c1 x + c2 x^2` over `(x, y, weight)`, by the normal equations
/// (3x3, solved by Cramer's rule in f64); `None` when they are singular.
fn weighted_quadratic(points: &[(f32, f32, f32)]) -> Option<[f32; 3]> {
    let mut s = [0f64; 5];
    let mut t = [0f64; 3];
    for &(x, y, w) in points {
        let (x, y, w) = (x as f64, y as f64, w as f64);
        let mut p = w;
        for k in 0..5 {
            s[k] += p;
            if k < 3 {
                t[k] += p * y;
            }
            p *= x;
        }
    }
    let m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]];
    let det = det3(m);
    if det.abs() < 1e-12 * s[0].powi(3).max(1e-300) {
        return None;
    }
    let mut c = [0f32; 3];
    for (k, ck) in c.iter_mut().enumerate() {
        let mut mk = m;
        for row in 0..3 {
            mk[row][k] = t[row];
        }
        *ck = (det3(mk) / det) as f32;
    }
    Some(c)
}

fn det3(m: [[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A horizontal ramp 0..1 with three independent noisy copies, the noise at each pixel
    /// `sigma(v)`.
    fn ramp_frames(sigma: impl Fn(f32) -> f32) -> [Plane; 3] {
        let (w, h) = (400, 200);
        let mut rng = Rng::from_parts(&[7, 1]);
        let mut frames = [Plane::new(w, h), Plane::new(w, h), Plane::new(w, h)];
        for f in frames.iter_mut() {
            for y in 0..h {
                for x in 0..w {
                    let v = x as f32 / (w - 1) as f32;
                    f.data[y * w + x] = v + sigma(v) * rng.normal();
                }
            }
        }
        frames
    }

    #[test]
    fn finds_midtone_grain_stronger_than_shadow_grain() {
        let truth = |v: f32| 0.06 * 4.0 * v * (1.0 - v) + 0.006;
        let [c, a, b] = ramp_frames(truth);
        let level = NoiseLevel::estimate(&c, &a, &b);
        for v in [0.2f32, 0.5, 0.8] {
            let (got, want) = (level.at(v), truth(v));
            assert!((got - want).abs() < 0.15 * want, "at {v}: {got} vs {want}");
        }
        assert!(level.at(0.5) > 2.0 * level.at(0.1), "{level:?}");
    }

    #[test]
    fn even_noise_gives_an_even_level() {
        let [c, a, b] = ramp_frames(|_| 0.03);
        let level = NoiseLevel::estimate(&c, &a, &b);
        for v in [0.05f32, 0.3, 0.6, 0.95] {
            assert!((level.at(v) - 0.03).abs() < 0.004, "at {v}: {}", level.at(v));
        }
        assert!((level.overall - 0.03).abs() < 0.003, "{}", level.overall);
    }

    #[test]
    fn a_frame_of_one_level_gives_a_flat_curve() {
        let mut rng = Rng::from_parts(&[3]);
        let noisy = |rng: &mut Rng| {
            let mut p = Plane::new(64, 64);
            p.data.iter_mut().for_each(|v| *v = 0.4 + 0.02 * rng.normal());
            p
        };
        let (c, a, b) = (noisy(&mut rng), noisy(&mut rng), noisy(&mut rng));
        let level = NoiseLevel::estimate(&c, &a, &b);
        assert_eq!(level.at(0.0), level.at(1.0), "{level:?}");
        assert!((level.overall - 0.02).abs() < 0.004, "{}", level.overall);
    }

    #[test]
    fn the_curve_stays_within_its_bounds() {
        let level = NoiseLevel::fit(0.02, &[(0.1, 0.01, 100.0), (0.5, 0.08, 100.0), (0.9, 0.01, 100.0)]);
        for v in [-1.0f32, 0.0, 0.5, 1.0, 2.0] {
            let s = level.at(v);
            assert!((0.01..=0.06).contains(&s), "at {v}: {s}");
        }
    }
}
