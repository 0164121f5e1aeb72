//! Global deflicker: map each frame's tone onto a temporally smoothed target.
//!
//! Each frame's luma quantiles (robust to blotches and to moving content, see [`crate::stats`])
//! are compared with a target: a local-linear fit of the same quantiles over the neighbouring
//! frames of the shot (past frames remembered here, future frames from the window). A local
//! linear fit rather than a plain mean keeps real fades and lighting ramps, which flicker
//! removal must not flatten, and works with the window's short future side. The correction is
//! a gain and offset fitted to the quantile pairs, clamped so that a badly exposed frame is
//! helped but never inverted.

use crate::frame::Plane;
use crate::stats::QUANTILES;
use std::collections::VecDeque;

const NQ: usize = QUANTILES.len();

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeflickerParams {
    /// 0 = off, 1 = full correction.
    pub strength: f32,
    /// Frames of history the target is fitted over (and the Gaussian weight's width).
    pub span: usize,
}

impl Default for DeflickerParams {
    fn default() -> Self {
        DeflickerParams {
            strength: 1.0,
            span: 12,
        }
    }
}

/// Gain and offset applied to luma: `y' = gain * y + offset`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToneCorrection {
    pub gain: f32,
    pub offset: f32,
}

impl Default for ToneCorrection {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl ToneCorrection {
    pub const IDENTITY: ToneCorrection = ToneCorrection { gain: 1.0, offset: 0.0 };

    pub fn apply(&self, luma: &mut Plane) {
        if *self == Self::IDENTITY {
            return;
        }
        let (g, o) = (self.gain, self.offset);
        for v in luma.data.iter_mut() {
            *v = (*v * g + o).clamp(0.0, 1.0);
        }
    }

    /// Applies the correction to one value (for neighbours that stages compare against).
    #[inline]
    pub fn map(&self, v: f32) -> f32 {
        v * self.gain + self.offset
    }
}

/// Remembers the quantiles of the frames already output in the current shot.
pub struct Deflicker {
    history: VecDeque<[f32; NQ]>,
}

impl Default for Deflicker {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflicker {
    pub fn new() -> Self {
        Deflicker {
            history: VecDeque::with_capacity(64),
        }
    }

    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The correction for the centre frame. `future` holds the quantiles of the following
    /// frames of the same shot, nearest first. Call [`Self::remember`] after each frame.
    pub fn correction(&self, params: &DeflickerParams, centre: &[f32; NQ], future: &[[f32; NQ]]) -> ToneCorrection {
        if params.strength <= 0.0 {
            return ToneCorrection::IDENTITY;
        }
        let target = self.target(params.span, centre, future);
        let full = if is_mostly_one_level(centre) {
            // Most of the frame is one level (a small object on black, a title card): the outer
            // quantiles jump between background and object from frame to frame and say nothing
            // about gain. Correct the level only.
            ToneCorrection {
                gain: 1.0,
                offset: target[NQ / 2] - centre[NQ / 2],
            }
        } else {
            fit_gain_offset(centre, &target)
        };
        let s = params.strength.min(1.0);
        ToneCorrection {
            gain: 1.0 + s * (full.gain - 1.0),
            offset: s * full.offset,
        }
    }

    /// Records the centre frame's quantiles as history for the frames after it.
    pub fn remember(&mut self, starts_shot: bool, span: usize, quantiles: &[f32; NQ]) {
        if starts_shot {
            self.history.clear();
        }
        self.history.push_back(*quantiles);
        while self.history.len() > span.max(1) {
            self.history.pop_front();
        }
    }

    fn target(&self, span: usize, centre: &[f32; NQ], future: &[[f32; NQ]]) -> [f32; NQ] {
        let sigma = (span.max(1) as f32) / 2.0;
        let past = self
            .history
            .iter()
            .rev()
            .take(span)
            .enumerate()
            .map(|(i, q)| (-(i as f32) - 1.0, q));
        let ahead = future.iter().enumerate().map(|(i, q)| (i as f32 + 1.0, q));
        let samples = std::iter::once((0.0f32, centre)).chain(past).chain(ahead);
        let mut fit = [LocalLinear::default(); NQ];
        for (t, q) in samples {
            let w = (-0.5 * (t / sigma) * (t / sigma)).exp();
            for (f, &v) in fit.iter_mut().zip(q.iter()) {
                f.add(t, v, w);
            }
        }
        let mut target = [0.0; NQ];
        for (out, f) in target.iter_mut().zip(fit.iter()) {
            *out = f.value_at_zero();
        }
        target
    }
}

/// Weighted least-squares line through (t, v) samples, evaluated at t = 0.
#[derive(Clone, Copy, Default)]
struct LocalLinear {
    s0: f64,
    s1: f64,
    s2: f64,
    t0: f64,
    t1: f64,
}

impl LocalLinear {
    fn add(&mut self, t: f32, v: f32, w: f32) {
        let (t, v, w) = (t as f64, v as f64, w as f64);
        self.s0 += w;
        self.s1 += w * t;
        self.s2 += w * t * t;
        self.t0 += w * v;
        self.t1 += w * t * v;
    }

    fn value_at_zero(&self) -> f32 {
        let det = self.s0 * self.s2 - self.s1 * self.s1;
        // Too few frames to fit a slope (start of a shot): fall back to the weighted mean.
        if det.abs() < 1e-6 * self.s0 * self.s0.max(1.0) || self.s0 < 2.5 {
            (self.t0 / self.s0) as f32
        } else {
            ((self.s2 * self.t0 - self.s1 * self.t1) / det) as f32
        }
    }
}

/// Whether the 30-70 % quantiles are (nearly) the same level.
fn is_mostly_one_level(quantiles: &[f32; NQ]) -> bool {
    quantiles[NQ - 3] - quantiles[2] < 0.02
}

/// Least-squares gain/offset taking `from` quantiles onto `to`, clamped to a sane range.
pub fn fit_gain_offset(from: &[f32; NQ], to: &[f32; NQ]) -> ToneCorrection {
    let n = NQ as f32;
    let mean_f = from.iter().sum::<f32>() / n;
    let mean_t = to.iter().sum::<f32>() / n;
    let var_f: f32 = from.iter().map(|f| (f - mean_f) * (f - mean_f)).sum();
    let cov: f32 = from.iter().zip(to).map(|(f, t)| (f - mean_f) * (t - mean_t)).sum();
    // A flat frame carries no contrast information: correct its level only.
    let gain = if var_f > 1e-6 {
        (cov / var_f).clamp(0.5, 2.0)
    } else {
        1.0
    };
    ToneCorrection {
        gain,
        offset: mean_t - gain * mean_f,
    }
}

/// Gain and offset taking `neighbour` onto `centre`, fitted on co-located pixel pairs (the
/// neighbour already motion-compensated), ignoring pairs that disagree (damage, occlusion).
/// Unlike a fit on quantiles, this still works on frames that are mostly one level (a small
/// bright object on black), where the quantiles say nothing about the gain.
pub fn fit_pixel_pairs(neighbour: &Plane, centre: &Plane, start: ToneCorrection) -> ToneCorrection {
    let step = ((centre.data.len() / 40_000).max(1) as f64).sqrt().ceil() as usize;
    let mut tone = start;
    let mut limit = f32::INFINITY;
    for _ in 0..3 {
        let (mut n, mut sx, mut sy, mut sxx, mut sxy, mut abs_dev) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for y in (0..centre.height).step_by(step) {
            let (c, m) = (centre.row(y), neighbour.row(y));
            for x in (0..centre.width).step_by(step) {
                let residual = (c[x] - tone.map(m[x])).abs();
                if residual > limit {
                    continue;
                }
                let (a, b) = (m[x] as f64, c[x] as f64);
                n += 1.0;
                sx += a;
                sy += b;
                sxx += a * a;
                sxy += a * b;
                abs_dev += residual as f64;
            }
        }
        if n < 16.0 {
            break;
        }
        let var = sxx - sx * sx / n;
        let gain = if var > 1e-3 * n * 1e-3 {
            ((sxy - sx * sy / n) / var).clamp(0.5, 2.0)
        } else {
            1.0
        };
        let offset = (sy - gain * sx) / n;
        tone = ToneCorrection {
            gain: gain as f32,
            offset: offset as f32,
        };
        // Next round: keep pairs within a few mean deviations of this fit.
        limit = (3.0 * abs_dev / n).max(0.02) as f32;
    }
    tone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantiles(gain: f32, offset: f32) -> [f32; NQ] {
        let mut q = [0.0; NQ];
        for (i, v) in q.iter_mut().enumerate() {
            *v = (0.2 + 0.06 * i as f32) * gain + offset;
        }
        q
    }

    #[test]
    fn fit_recovers_a_known_gain_and_offset() {
        let c = fit_gain_offset(&quantiles(1.2, 0.05), &quantiles(1.0, 0.0));
        let back = c.map(0.5 * 1.2 + 0.05);
        assert!((back - 0.5).abs() < 1e-4, "{c:?}");
    }

    #[test]
    fn a_flickering_sequence_is_pulled_to_its_average() {
        let mut d = Deflicker::new();
        let params = DeflickerParams::default();
        let gains = [1.0, 1.15, 0.9, 1.1, 0.85, 1.05, 0.95, 1.12, 0.88, 1.0];
        let mut residual = 0.0;
        for i in 0..gains.len() - 2 {
            let cur = quantiles(gains[i], 0.0);
            let future = [quantiles(gains[i + 1], 0.0), quantiles(gains[i + 2], 0.0)];
            let c = d.correction(&params, &cur, &future);
            if i >= 4 {
                residual += (c.map(cur[4]) - quantiles(1.0, 0.0)[4]).abs();
            }
            d.remember(i == 0, params.span, &cur);
        }
        let before: f32 = gains[4..8]
            .iter()
            .map(|g| (quantiles(*g, 0.0)[4] - quantiles(1.0, 0.0)[4]).abs())
            .sum();
        assert!(residual < 0.5 * before, "residual {residual} vs flicker {before}");
    }

    #[test]
    fn a_steady_fade_is_kept() {
        let mut d = Deflicker::new();
        let params = DeflickerParams::default();
        let level = |i: usize| quantiles(1.0, -0.01 * i as f32);
        for i in 0..30 {
            let future = [level(i + 1), level(i + 2)];
            let c = d.correction(&params, &level(i), &future);
            if i > 3 {
                let err = (c.map(level(i)[4]) - level(i)[4]).abs();
                assert!(err < 2e-3, "frame {i}: fade moved by {err}");
            }
            d.remember(i == 0, params.span, &level(i));
        }
    }

    #[test]
    fn pixel_pairs_recover_the_gain_of_a_small_object_on_black() {
        let mut centre = Plane::new(64, 48);
        let mut neighbour = Plane::new(64, 48);
        for y in 20..30 {
            for x in 20..30 {
                centre.set(x, y, 0.8);
                neighbour.set(x, y, 0.95);
            }
        }
        // A blotch that must not drag the fit.
        neighbour.set(5, 5, 1.0);
        let t = fit_pixel_pairs(&neighbour, &centre, ToneCorrection::IDENTITY);
        assert!((t.map(0.95) - 0.8).abs() < 0.01 && t.map(0.0).abs() < 0.01, "{t:?}");
    }

    #[test]
    fn a_small_object_on_black_does_not_make_the_gain_jump() {
        // 85 % black, a bright object that sometimes reaches the 90 % quantile and sometimes not.
        let frame = |object_in_q90: bool| {
            let mut q = [0.02; NQ];
            q[NQ - 1] = if object_in_q90 { 0.8 } else { 0.03 };
            q
        };
        let mut d = Deflicker::new();
        let params = DeflickerParams::default();
        for i in 0..10 {
            let cur = frame(i % 2 == 0);
            let c = d.correction(&params, &cur, &[frame(i % 2 == 1), frame(i % 2 == 0)]);
            assert!((c.gain - 1.0).abs() < 1e-6 && c.offset.abs() < 0.01, "frame {i}: {c:?}");
            d.remember(i == 0, params.span, &cur);
        }
    }

    #[test]
    fn zero_strength_is_identity() {
        let d = Deflicker::new();
        let p = DeflickerParams {
            strength: 0.0,
            span: 12,
        };
        assert_eq!(d.correction(&p, &quantiles(1.3, 0.0), &[]), ToneCorrection::IDENTITY);
    }
}
