//! Gate-weave stabilisation: remove the frame-to-frame jitter of the picture's position that a
//! worn gate or sprocket holes add, and keep the camera's intended moves (pans, tilts).
//!
//! The translation between the centre and each neighbour comes from the motion field the
//! classic stages already computed: the median of the block vectors (robust to moving objects
//! and to blotches), refined to sub-pixel by a Lucas–Kanade step on the pixels that follow the
//! median (so a moving object does not drag it). Chaining those translations gives each frame's
//! position in the shot; the wanted position is a local-linear fit of the neighbouring frames'
//! positions (steady pans and tilts are straight lines, kept exactly), and the frame is shifted
//! by the difference.
//!
//! The shift is applied last, after the deflicker gains (whose fields are fitted in the
//! input's coordinates), with one separable Catmull-Rom resampling (sharper than bilinear);
//! pixels shifted in from outside the frame repeat the border.

use crate::deflicker::ToneCorrection;
use crate::frame::{Plane, WorkFrame};
use crate::motion::MotionField;
use rayon::prelude::*;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StabiliseParams {
    /// Frames of history the wanted path is fitted over (longer removes slower weave, but
    /// follows changes of pan speed later).
    pub span: usize,
    /// Largest shift applied, in pixels (a larger measured jitter is a misestimate or a
    /// deliberate jerk, and is left alone beyond this).
    pub max_shift: f32,
}

impl Default for StabiliseParams {
    fn default() -> Self {
        StabiliseParams {
            span: 16,
            max_shift: 8.0,
        }
    }
}

/// Pixels whose difference after the integer shift exceeds this take no part in the sub-pixel
/// step (blotches, occlusions, flicker left over).
const LK_RESIDUAL: f32 = 0.1;
/// Largest sub-pixel correction the refinement may add to the median vector.
const LK_MAX_STEP: f32 = 1.5;

/// Positions of the recent frames of the shot, and a buffer for resampling.
#[derive(Default)]
pub struct Stabiliser {
    history: VecDeque<(f32, f32)>,
    scratch: Plane,
}

impl Stabiliser {
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The shift `(dx, dy)` that puts the centre frame on the smoothed path, given the
    /// translations to its neighbours at window offsets (see [`translation`]). Call once per
    /// output frame, in order; `starts_shot` forgets the path.
    pub fn correction(
        &mut self,
        params: &StabiliseParams,
        starts_shot: bool,
        neighbours: &[(isize, (f32, f32))],
    ) -> (f32, f32) {
        // Content at x in the centre is at x + t in the neighbour, so the neighbour's picture
        // sits at (centre's position + t) for a later frame and (centre's - t) for an earlier.
        let previous = neighbours.iter().find(|(o, _)| *o == -1);
        let own = match (self.history.back(), previous, starts_shot) {
            (Some(&(px, py)), Some((_, (tx, ty))), false) => (px - tx, py - ty),
            _ => {
                self.history.clear();
                (0.0, 0.0)
            }
        };
        let ahead = neighbours
            .iter()
            .filter(|(o, _)| *o > 0)
            .map(|&(o, (tx, ty))| (o as f32, (own.0 + tx, own.1 + ty)));
        let past = self
            .history
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &p)| (-(i as f32) - 1.0, p));
        // The frame's own position is left out of its target, as in the regional deflicker:
        // its leverage at the end of the data would keep most of its own jitter.
        let sigma = params.span.max(1) as f32 / 2.0;
        let (mut fx, mut fy) = (Line::default(), Line::default());
        for (t, (x, y)) in past.chain(ahead) {
            let w = (-0.5 * (t / sigma) * (t / sigma)).exp();
            fx.add(t, x, w);
            fy.add(t, y, w);
        }
        self.history.push_back(own);
        while self.history.len() > params.span.max(1) {
            self.history.pop_front();
        }
        let (Some(tx), Some(ty)) = (fx.value_at_zero(), fy.value_at_zero()) else {
            return (0.0, 0.0);
        };
        let (dx, dy) = (tx - own.0, ty - own.1);
        if dx.abs().max(dy.abs()) > params.max_shift {
            return (0.0, 0.0);
        }
        (dx, dy)
    }

    /// Moves the picture of `frame` by `shift` (content at x goes to x + shift).
    pub fn apply(&mut self, shift: (f32, f32), frame: &mut WorkFrame) {
        if shift.0.abs() < 0.01 && shift.1.abs() < 0.01 {
            return;
        }
        let (w, h) = (frame.width(), frame.height());
        shift_plane(&mut frame.luma, shift, &mut self.scratch);
        for plane in frame.chroma.iter_mut() {
            let (sx, sy) = (w.div_ceil(plane.width) as f32, h.div_ceil(plane.height) as f32);
            shift_plane(plane, (shift.0 / sx, shift.1 / sy), &mut self.scratch);
        }
    }
}

/// Weighted least-squares line through (t, v), evaluated at t = 0; `None` unless there are
/// samples on both sides of 0 (a single neighbour cannot tell a pan from weave, and a line
/// through one side's frames, extrapolated, has more jitter than the frame itself).
#[derive(Default)]
struct Line {
    before: bool,
    after: bool,
    s0: f64,
    s1: f64,
    s2: f64,
    t0: f64,
    t1: f64,
}

impl Line {
    fn add(&mut self, t: f32, v: f32, w: f32) {
        let (t, v, w) = (t as f64, v as f64, w as f64);
        self.before |= t < 0.0;
        self.after |= t > 0.0;
        self.s0 += w;
        self.s1 += w * t;
        self.s2 += w * t * t;
        self.t0 += w * v;
        self.t1 += w * t * v;
    }

    fn value_at_zero(&self) -> Option<f32> {
        let det = self.s0 * self.s2 - self.s1 * self.s1;
        if !(self.before && self.after) || det.abs() < 1e-9 {
            return None;
        }
        Some(((self.s2 * self.t0 - self.s1 * self.t1) / det) as f32)
    }
}

/// Sub-pixel translation `t` with `centre(x) ≈ tone(neighbour(x + t))` over the background.
pub fn translation(centre: &Plane, neighbour: &Plane, field: &MotionField, tone: ToneCorrection) -> (f32, f32) {
    let median = median_vector(field);
    let m = (median.0 as f32, median.1 as f32);
    let mut d = (0.0f32, 0.0f32);
    // Two Gauss–Newton steps: the first from the integer vector, the second at the sub-pixel
    // position it found (bilinear sampling), which takes out most of the first's bias.
    for _ in 0..2 {
        let step = lucas_kanade_step(centre, neighbour, field, median, tone, (m.0 + d.0, m.1 + d.1));
        d = (
            (d.0 + step.0).clamp(-LK_MAX_STEP, LK_MAX_STEP),
            (d.1 + step.1).clamp(-LK_MAX_STEP, LK_MAX_STEP),
        );
    }
    (m.0 + d.0, m.1 + d.1)
}

/// Component-wise median of the block vectors.
fn median_vector(field: &MotionField) -> (i32, i32) {
    let median = |get: fn(&(i32, i32)) -> i32| {
        let mut hist = [0u32; 129];
        for v in &field.vectors {
            hist[(get(v).clamp(-64, 64) + 64) as usize] += 1;
        }
        let half = field.vectors.len().div_ceil(2) as u32;
        let mut seen = 0;
        for (i, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= half {
                return i as i32 - 64;
            }
        }
        0
    };
    (median(|v| v.0), median(|v| v.1))
}

/// The least-squares sub-pixel step at `at`, over every other pixel of the blocks whose vector
/// is within a pixel of `median` (the background).
fn lucas_kanade_step(
    centre: &Plane,
    neighbour: &Plane,
    field: &MotionField,
    median: (i32, i32),
    tone: ToneCorrection,
    at: (f32, f32),
) -> (f32, f32) {
    let (w, h) = (centre.width, centre.height);
    if w < 8 || h < 8 {
        return (0.0, 0.0);
    }
    let sums = (2..h - 2)
        .into_par_iter()
        .step_by(2)
        .map(|y| {
            let mut s = [0.0f64; 5];
            for x in (2..w - 2).step_by(2) {
                let v = field.vector_at(x, y);
                if (v.0 - median.0).abs() > 1 || (v.1 - median.1).abs() > 1 {
                    continue;
                }
                let (px, py) = (x as f32 + at.0, y as f32 + at.1);
                let n = tone.map(bilinear(neighbour, px, py));
                let r = n - centre.get(x, y);
                if r.abs() > LK_RESIDUAL {
                    continue;
                }
                let gx = 0.5 * tone.gain * (bilinear(neighbour, px + 1.0, py) - bilinear(neighbour, px - 1.0, py));
                let gy = 0.5 * tone.gain * (bilinear(neighbour, px, py + 1.0) - bilinear(neighbour, px, py - 1.0));
                let (gx, gy, r) = (gx as f64, gy as f64, r as f64);
                s[0] += gx * gx;
                s[1] += gx * gy;
                s[2] += gy * gy;
                s[3] += gx * r;
                s[4] += gy * r;
            }
            s
        })
        .reduce(|| [0.0; 5], |a, b| std::array::from_fn(|i| a[i] + b[i]));
    let [a, b, c, rx, ry] = sums;
    let det = a * c - b * b;
    // A flat or one-directional picture does not pin the translation down.
    if det <= 1e-9 * (a + c).max(1e-12).powi(2) {
        return (0.0, 0.0);
    }
    // n(at + d) ≈ n(at) + g·d should equal c, so g·d = -r.
    let dx = -(c * rx - b * ry) / det;
    let dy = -(a * ry - b * rx) / det;
    (dx as f32, dy as f32)
}

#[inline]
fn bilinear(p: &Plane, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (xi, yi) = (x0 as isize, y0 as isize);
    let top = p.get_clamped(xi, yi) * (1.0 - fx) + p.get_clamped(xi + 1, yi) * fx;
    let bottom = p.get_clamped(xi, yi + 1) * (1.0 - fx) + p.get_clamped(xi + 1, yi + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Catmull-Rom weights for taps at -1, 0, 1, 2 around a sample `t` past tap 0.
fn cubic_weights(t: f32) -> [f32; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// `out(x) = in(x - shift)`, separable, via `scratch` (resized only when the size changes).
fn shift_plane(plane: &mut Plane, shift: (f32, f32), scratch: &mut Plane) {
    let (w, h) = (plane.width, plane.height);
    if (scratch.width, scratch.height) != (w, h) {
        *scratch = Plane::new(w, h);
    }
    // Source position x - s = (x + base) + frac, with frac in [0, 1).
    let taps = |s: f32| {
        let src = -s;
        let base = src.floor();
        (base as isize, cubic_weights(src - base))
    };
    let (bx, wx) = taps(shift.0);
    let (by, wy) = taps(shift.1);
    scratch.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let src = plane.row(y);
        for (x, o) in row.iter_mut().enumerate() {
            let x0 = x as isize + bx;
            let mut v = 0.0;
            for (k, wk) in wx.iter().enumerate() {
                v += wk * src[(x0 + k as isize - 1).clamp(0, w as isize - 1) as usize];
            }
            *o = v;
        }
    });
    let source = &*scratch;
    plane.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let y0 = y as isize + by;
        let rows: [&[f32]; 4] =
            std::array::from_fn(|k| source.row((y0 + k as isize - 1).clamp(0, h as isize - 1) as usize));
        for (x, o) in row.iter_mut().enumerate() {
            let v = wy[0] * rows[0][x] + wy[1] * rows[1][x] + wy[2] * rows[2][x] + wy[3] * rows[3][x];
            *o = v.clamp(0.0, 1.0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(w: usize, h: usize, at: (f32, f32)) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (x as f32 - at.0, y as f32 - at.1);
                let v = 0.5 + 0.2 * (sx * 0.21).sin() * (sy * 0.17).cos() + 0.15 * (sx * 0.05 + sy * 0.09).sin();
                p.set(x, y, v);
            }
        }
        p
    }

    #[test]
    fn shifting_a_plane_moves_its_content_by_a_sub_pixel_amount() {
        let mut p = scene(96, 64, (0.0, 0.0));
        shift_plane(&mut p, (1.3, -0.6), &mut Plane::default());
        let want = scene(96, 64, (1.3, -0.6));
        let err = (8..56)
            .flat_map(|y| (8..88).map(move |x| (x, y)))
            .map(|(x, y)| (p.get(x, y) - want.get(x, y)).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.01, "resampled content off by {err}");
    }

    #[test]
    fn a_static_path_is_held_still_and_a_steady_pan_is_kept() {
        let params = StabiliseParams::default();
        let mut s = Stabiliser::default();
        // Pan of 1.5 px a frame: each neighbour is 1.5 px further along.
        for i in 0..20 {
            let c = s.correction(&params, i == 0, &[(-1, (-1.5, 0.0)), (1, (1.5, 0.0))]);
            assert!(c.0.abs() < 1e-3 && c.1.abs() < 1e-3, "frame {i}: pan moved by {c:?}");
        }
    }
}
