//! Global deflicker: map each frame's tone onto a temporally smoothed target.
//!
//! Each frame's luma quantiles (robust to blotches and to moving content, see [`crate::stats`])
//! are compared with a target: a local-linear fit of the same quantiles over the neighbouring
//! frames of the shot (past frames remembered here, future frames from the window). A local
//! linear fit rather than a plain mean keeps real fades and lighting ramps, which flicker
//! removal must not flatten, and works with the window's short future side; its slope is shrunk
//! by its standard error, so the chance slopes of flicker itself do not move the target. The
//! correction is a gain and offset fitted to the quantile pairs, clamped so that a badly exposed
//! frame is helped but never inverted.

use crate::frame::Plane;
use crate::motion::{MotionField, Pyramid};
use crate::stats::QUANTILES;
use rayon::prelude::*;
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
        // 24 frames (a second of film): 12 left the real pan sample's flicker above FFmpeg's
        // deflicker chain; the local-linear target keeps fades and ramps at either length
        // (benches/RESULTS.md).
        DeflickerParams {
            strength: 1.0,
            span: 24,
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
        let w = luma.width.max(1);
        let tone = *self;
        luma.data.par_chunks_mut(w).for_each(|row| tone_row(row, tone));
    }

    /// Applies the correction to one value (for neighbours that stages compare against).
    #[inline]
    pub fn map(&self, v: f32) -> f32 {
        v * self.gain + self.offset
    }
}

crate::simd::avx2_twin! {
    /// [`ToneCorrection::apply`] on one row.
    fn tone_row(row: &mut [f32], tone: ToneCorrection) {
        for v in row.iter_mut() {
            *v = (*v * tone.gain + tone.offset).clamp(0.0, 1.0);
        }
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
            *out = f.value_at_zero(SLOPE_SHRINK);
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
    vv: f64,
}

impl LocalLinear {
    fn add(&mut self, t: f32, v: f32, w: f32) {
        let (t, v, w) = (t as f64, v as f64, w as f64);
        self.s0 += w;
        self.s1 += w * t;
        self.s2 += w * t * t;
        self.t0 += w * v;
        self.t1 += w * t * v;
        self.vv += w * v * v;
    }

    /// The line's value at t = 0, its slope shrunk by `shrink` (see [`Self::kept_slope`]; 0
    /// keeps it whole: the factor is then exactly 1).
    fn value_at_zero(&self, shrink: f64) -> f32 {
        let sxx = self.s2 - self.s1 * self.s1 / self.s0;
        // Too few frames to fit a slope (start of a shot): fall back to the weighted mean.
        if sxx.abs() < 1e-6 * self.s0.max(1.0) || self.s0 < 2.5 {
            return (self.t0 / self.s0) as f32;
        }
        let sxy = self.t1 - self.s1 * self.t0 / self.s0;
        let slope = sxy / sxx;
        let kept = self.kept_slope(slope, sxx, sxy, shrink);
        (self.t0 / self.s0 - kept * slope * self.s1 / self.s0) as f32
    }

    /// How much of the fitted slope to keep. The target is read near the end of the window
    /// (its future side holds two frames), where a line's value is about four times as noisy
    /// as a mean's, so a slope that flicker alone could have drawn is shrunk toward none:
    /// `1 - k se^2 / b^2` (none below `sqrt(k)` standard errors). A real fade or lighting
    /// ramp, consistent over the frames, keeps its slope; the flicker's chance slopes mostly go.
    fn kept_slope(&self, slope: f64, sxx: f64, sxy: f64, k: f64) -> f64 {
        let syy = self.vv - self.t0 * self.t0 / self.s0;
        let residual = (syy - slope * sxy).max(0.0) / (self.s0 - 2.0).max(0.5);
        let se2 = residual / sxx;
        (1.0 - k * se2 / (slope * slope).max(1e-30)).max(0.0)
    }
}

/// The global target's slope shrinkage `k`. 1 is the textbook estimate of the best shrinkage
/// of one value; 2 also damps the frame-to-frame wobble of the slope itself. On the quality
/// subset (4 grey cases) against no shrinkage: PSNR-Y +0.89 dB, flicker against the reference
/// 1.46 -> 1.10, blotch and scratch error down; 1 gave +0.56 dB (with the regional field shrunk
/// too), and 4 lagged a slow fade under flicker by 40 % more than no shrinkage
/// (`a_fade_under_flicker_is_followed`). The regional field's target keeps its slope whole: its
/// history is chained frame to frame, so its errors walk, and a target that lags a walk is
/// worse than a noisy one (its unit test lost a fifth).
const SLOPE_SHRINK: f64 = 2.0;

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
    let mut pairs = Vec::new();
    sample_pairs(centre, |x, y| neighbour.get(x, y), &mut pairs);
    fit_pairs(&pairs, start)
}

/// The subsample of `(neighbour, centre)` pixel pairs that [`fit_pairs`] fits, with the
/// neighbour's pixel at (x, y) given by `neighbour_at`: read through the motion vectors, the
/// compensated neighbour need not exist yet. `pairs` is reused (no allocation once it is large
/// enough).
pub fn sample_pairs(centre: &Plane, neighbour_at: impl Fn(usize, usize) -> f32 + Sync, pairs: &mut Vec<(f32, f32)>) {
    // About 10k pairs: plenty for two parameters, and reading them through the vectors
    // touches the neighbour all over.
    let step = ((centre.data.len() / 10_000).max(1) as f64).sqrt().ceil() as usize;
    let (nx, ny) = (centre.width.div_ceil(step), centre.height.div_ceil(step));
    pairs.resize(nx * ny, (0.0, 0.0));
    // Reading through the vectors costs more than the fit: rows in parallel.
    pairs.par_chunks_mut(nx.max(1)).enumerate().for_each(|(j, out)| {
        let y = j * step;
        let c = centre.row(y);
        for (i, o) in out.iter_mut().enumerate() {
            *o = (neighbour_at(i * step, y), c[i * step]);
        }
    });
}

/// The gain and offset of [`fit_pixel_pairs`] on pairs from [`sample_pairs`].
pub fn fit_pairs(pairs: &[(f32, f32)], start: ToneCorrection) -> ToneCorrection {
    let mut tone = start;
    let mut limit = f32::INFINITY;
    for _ in 0..3 {
        let (mut n, mut sx, mut sy, mut sxx, mut sxy, mut abs_dev) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for &(m, c) in pairs {
            let residual = (c - tone.map(m)).abs();
            if residual > limit {
                continue;
            }
            let (a, b) = (m as f64, c as f64);
            n += 1.0;
            sx += a;
            sy += b;
            sxx += a * a;
            sxy += a * b;
            abs_dev += residual as f64;
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

// ---------------------------------------------------------------------------------------------
// Regional deflicker

/// Regional (uneven) deflicker: a smooth gain field per frame, fitted against the
/// motion-compensated neighbours and smoothed in time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionalParams {
    /// 0 = off, 1 = full correction of the uneven part.
    pub strength: f32,
    /// Frames of history the target is fitted over, as for the global deflicker.
    pub span: usize,
}

/// The regional field's smoothing span for a global `span`: half of it. The field is fitted
/// against each compensated neighbour, and smoothing it over the global stage's 24 frames left
/// more of a per-frame uneven flicker in place (the regional test: 0.43 of the global-only error
/// against 0.40 at 12).
pub fn regional_span(span: usize) -> usize {
    (span / 2).max(1)
}

impl Default for RegionalParams {
    fn default() -> Self {
        RegionalParams {
            strength: 1.0,
            span: regional_span(DeflickerParams::default().span),
        }
    }
}

/// Terms of the field after the constant: `nx, ny, nx*ny, nx²-1/3, ny²-1/3`, with `nx, ny` in
/// `[-1, 1]`. Each has (near) zero mean over the frame, so a field changes the frame's local
/// balance and leaves its overall level to the global deflicker.
const FIELD_TERMS: usize = 5;

/// A smooth multiplicative gain over the frame, `g(x, y) = exp(Σ c_k b_k(nx, ny))`.
///
/// Low order on purpose: the unevenness of a printer or projector lamp is a broad shading, and
/// a field this smooth cannot follow a moving object or a shadow, which must keep their light.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GainField {
    pub coeffs: [f32; FIELD_TERMS],
}

impl GainField {
    pub const FLAT: GainField = GainField {
        coeffs: [0.0; FIELD_TERMS],
    };

    pub fn is_flat(&self) -> bool {
        self.max_abs() < 1e-5
    }

    /// The largest coefficient's size (each term reaches ±1 at the frame's edges or corners).
    pub fn max_abs(&self) -> f32 {
        self.coeffs.iter().fold(0.0f32, |m, c| m.max(c.abs()))
    }

    fn scaled(&self, s: f32) -> GainField {
        GainField {
            coeffs: self.coeffs.map(|c| c * s),
        }
    }

    fn plus(&self, other: &GainField) -> GainField {
        let mut coeffs = self.coeffs;
        coeffs.iter_mut().zip(other.coeffs).for_each(|(a, b)| *a += b);
        GainField { coeffs }
    }

    /// The log gain along row `ny` as `a + b nx + c nx²`.
    #[inline]
    fn row(&self, ny: f32) -> [f32; 3] {
        let [cx, cy, cxy, cxx, cyy] = self.coeffs;
        [cy * ny + cyy * (ny * ny - 1.0 / 3.0) - cxx / 3.0, cx + cxy * ny, cxx]
    }

    /// Multiplies `plane` by the gain, clamped to `[0, 1]`.
    pub fn apply(&self, plane: &mut Plane) {
        self.apply_then(ToneCorrection::IDENTITY, plane);
    }

    /// Applies the field, then `tone`, in one pass over the plane (the same values as
    /// [`Self::apply`] followed by [`ToneCorrection::apply`]).
    pub fn apply_then(&self, tone: ToneCorrection, plane: &mut Plane) {
        if self.is_flat() && tone == ToneCorrection::IDENTITY {
            return;
        }
        let size = (plane.width, plane.height);
        plane
            .data
            .par_chunks_mut(plane.width.max(1))
            .enumerate()
            .for_each(|(y, row)| {
                self.apply_rows(size, y, tone, row);
            });
    }

    /// [`Self::apply_then`] on `rows`, whole rows of a `w`x`h` plane from row `y0` on: for a
    /// pass that makes a plane band by band (or row by row) to light it while still in cache.
    pub fn apply_rows(&self, (w, h): (usize, usize), y0: usize, tone: ToneCorrection, rows: &mut [f32]) {
        if self.is_flat() {
            if tone != ToneCorrection::IDENTITY {
                tone_row(rows, tone);
            }
            return;
        }
        let (sx, sy) = (unit_scale(w), unit_scale(h));
        for (dy, row) in rows.chunks_mut(w.max(1)).enumerate() {
            let poly = self.row((y0 + dy) as f32 * sy - 1.0);
            match tone == ToneCorrection::IDENTITY {
                // The identity's multiply-add leaves a lit value (in [0, 1], never -0) as it is.
                true => light_row(row, poly, sx),
                false => apply_row(row, poly, sx, tone),
            }
        }
    }
}

crate::simd::avx2_twin! {
    /// Multiplies a row by the gain whose log is `a + b nx + c nx²` (nx = x · sx − 1), clamped,
    /// then applies `tone` (the identity leaves the lit values as they are).
    fn apply_row(row: &mut [f32], poly: [f32; 3], sx: f32, tone: ToneCorrection) {
        let [a, b, c] = poly;
        for (x, v) in row.iter_mut().enumerate() {
            // Through i32: a usize-to-f32 conversion has no vector instruction, an i32 one does.
            let nx = x as i32 as f32 * sx - 1.0;
            let lit = (*v * gain_of(a + nx * (b + c * nx))).clamp(0.0, 1.0);
            *v = (lit * tone.gain + tone.offset).clamp(0.0, 1.0);
        }
    }
}

crate::simd::avx2_twin! {
    /// [`apply_row`] with the identity tone.
    fn light_row(row: &mut [f32], poly: [f32; 3], sx: f32) {
        let [a, b, c] = poly;
        for (x, v) in row.iter_mut().enumerate() {
            let nx = x as i32 as f32 * sx - 1.0;
            *v = (*v * gain_of(a + nx * (b + c * nx))).clamp(0.0, 1.0);
        }
    }
}

/// `exp(l)` for the small log gains a field holds (|l| < 0.3: error below 0.5 %).
#[inline]
fn gain_of(l: f32) -> f32 {
    1.0 + l * (1.0 + l * (0.5 + l / 6.0))
}

/// Maps `0..n` onto `[-1, 1]` (`n - 1` maps to 1; a single sample sits at 0).
fn unit_scale(n: usize) -> f32 {
    if n > 1 {
        2.0 / (n - 1) as f32
    } else {
        1.0
    }
}

/// Cells the frame is cut into for fitting, whatever its size (fixed fitting cost).
const CELLS_X: usize = 16;
const CELLS_Y: usize = 12;
/// Pixel pairs further apart than this (after the first fit) are damage or occlusion.
const PAIR_LIMIT: f32 = 0.15;
/// Dark pixels carry no information about a gain.
const MIN_LEVEL: f32 = 0.03;
/// Log-gain residual of a cell beyond which its weight falls (a moving object, a shadow).
const CELL_ROBUST: f64 = 0.01;

#[derive(Clone, Copy, Default)]
struct CellSums {
    centre: f64,
    neighbour: f64,
    count: f64,
}

/// The centre and a neighbour at one coarse pyramid level (`level` halvings).
#[derive(Clone, Copy)]
pub struct Coarse<'a> {
    pub centre: &'a Plane,
    pub neighbour: &'a Plane,
    pub level: usize,
}

impl<'a> Coarse<'a> {
    /// The coarsest level that still gives each fitting cell a few samples each way.
    pub fn pick(centre: &'a Plane, cp: &'a Pyramid, neighbour: &'a Plane, np: &'a Pyramid) -> Self {
        let depth = cp.depth().min(np.depth());
        let level = (0..depth)
            .rev()
            .find(|&l| {
                let p = cp.level(centre, l);
                p.width >= 4 * CELLS_X && p.height >= 3 * CELLS_Y
            })
            .unwrap_or(0);
        Coarse {
            centre: cp.level(centre, level),
            neighbour: np.level(neighbour, level),
            level,
        }
    }
}

/// Fits gain fields between frames and keeps the last correction, for the next frame's target.
#[derive(Default)]
pub struct RegionalDeflicker {
    cells: Vec<CellSums>,
    /// Each recent frame's own field (chained relative fields), oldest first.
    history: VecDeque<GainField>,
}

impl RegionalDeflicker {
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The field `d` with `centre ≈ tone(neighbour) * exp(d)`, the neighbour moved onto the
    /// centre by `field`. Two rounds: the second ignores pixel pairs that disagree with the
    /// first fit by more than `limit` (blotches, occlusions).
    ///
    /// Fitted on a coarse pyramid level, with the block vectors scaled down and truncated: on
    /// smooth texture a block vector drifts a pixel to soak up a local change of light, which
    /// would hide the very unevenness measured here; at a coarse level that drift rounds away,
    /// while real motion still lines up to within a coarse pixel.
    pub fn relative_field(
        &mut self,
        frames: Coarse,
        field: &MotionField,
        tone: ToneCorrection,
        limit: f32,
    ) -> GainField {
        let mut fit = GainField::FLAT;
        for pair_limit in [PAIR_LIMIT, limit.max(0.02)] {
            self.sum_cells(&frames, field, tone, &fit, pair_limit);
            fit = self.fit_cells();
        }
        fit
    }

    fn sum_cells(&mut self, frames: &Coarse, vectors: &MotionField, tone: ToneCorrection, fit: &GainField, limit: f32) {
        let Coarse {
            centre,
            neighbour,
            level,
        } = *frames;
        let (w, h) = (centre.width, centre.height);
        self.cells.clear();
        self.cells.resize(CELLS_X * CELLS_Y, CellSums::default());
        let (sx, sy) = (unit_scale(w), unit_scale(h));
        self.cells.par_chunks_mut(CELLS_X).enumerate().for_each(|(cy, cells)| {
            for y in cy * h / CELLS_Y..(cy + 1) * h / CELLS_Y {
                let c = centre.row(y);
                let [a, b, q] = fit.row(y as f32 * sy - 1.0);
                for (cx, cell) in cells.iter_mut().enumerate() {
                    let (mut sc, mut sn, mut k) = (0.0f32, 0.0f32, 0.0f32);
                    for x in cx * w / CELLS_X..(cx + 1) * w / CELLS_X {
                        let (vx, vy) = vectors.vector_at(x << level, y << level);
                        let raw = neighbour
                            .get_clamped(x as isize + (vx >> level) as isize, y as isize + (vy >> level) as isize);
                        let n = tone.map(raw);
                        let nx = x as f32 * sx - 1.0;
                        if n > MIN_LEVEL && (c[x] - n * gain_of(a + nx * (b + q * nx))).abs() < limit {
                            sc += c[x];
                            sn += n;
                            k += 1.0;
                        }
                    }
                    cell.centre += sc as f64;
                    cell.neighbour += sn as f64;
                    cell.count += k as f64;
                }
            }
        });
    }

    /// Weighted least squares of the cells' log gains on the field terms (plus a constant,
    /// fitted and dropped), then once more with cells far off the fit weighted down.
    fn fit_cells(&self) -> GainField {
        let mut previous: Option<[f64; FIELD_TERMS + 1]> = None;
        for _ in 0..2 {
            let mut normal = [[0.0f64; FIELD_TERMS + 2]; FIELD_TERMS + 1];
            let mut used = 0;
            for (i, cell) in self.cells.iter().enumerate() {
                if cell.count < 8.0 || cell.neighbour <= 0.0 {
                    continue;
                }
                let (nx, ny) = cell_centre(i);
                let basis = basis(nx, ny);
                let value = (cell.centre / cell.neighbour).ln();
                let mut weight = cell.neighbour;
                if let Some(fit) = &previous {
                    let predicted: f64 = basis.iter().zip(fit).map(|(b, c)| b * c).sum();
                    weight *= (CELL_ROBUST / (value - predicted).abs().max(1e-9)).min(1.0);
                }
                accumulate(&mut normal, &basis, value, weight);
                used += 1;
            }
            // Too few cells to pin down a field: claim no unevenness rather than guess.
            if used < 2 * (FIELD_TERMS + 1) {
                return GainField::FLAT;
            }
            previous = Some(solve(normal).unwrap_or_default());
        }
        let fit = previous.unwrap_or_default();
        GainField {
            coeffs: std::array::from_fn(|k| fit[k + 1] as f32),
        }
    }

    /// The correction for the centre frame, given the relative fields `d` of its compensated
    /// neighbours at window offsets (see [`Self::relative_field`]). Call once per output frame,
    /// in order; `starts_shot` forgets the history.
    ///
    /// Chaining the relative fields frame to frame gives each frame's own field (up to a
    /// constant per shot, which does not matter); the target is a local-linear fit of those
    /// fields over the shot's recent frames and the window's next ones, as the global deflicker
    /// does with quantiles, so a steady change of light (a lamp warming, a cloud) is kept.
    /// (The history is a field per frame: five numbers, no frames kept.)
    pub fn correction(
        &mut self,
        params: &RegionalParams,
        starts_shot: bool,
        neighbours: &[(isize, GainField)],
    ) -> GainField {
        let previous = neighbours.iter().find(|(o, _)| *o == -1);
        let own = match (self.history.back(), previous, starts_shot) {
            (Some(last), Some((_, d)), false) => last.plus(d),
            _ => {
                self.history.clear();
                GainField::FLAT
            }
        };
        let ahead = neighbours
            .iter()
            .filter(|(o, _)| *o > 0)
            .map(|(o, d)| (*o as f32, own.plus(&d.scaled(-1.0))));
        let sigma = params.span.max(1) as f32 / 2.0;
        let past = self
            .history
            .iter()
            .rev()
            .enumerate()
            .map(|(i, f)| (-(i as f32) - 1.0, *f));
        let mut fits = [LocalLinear::default(); FIELD_TERMS];
        // The frame's own field is left out of its target: next to the end of the data its
        // leverage on a local-linear fit is high, and it would pull the target back toward
        // its own flicker. With nothing else to go on, the target is the frame itself.
        let mut others = past.chain(ahead).peekable();
        if others.peek().is_none() {
            self.history.push_back(own);
            return GainField::FLAT;
        }
        for (t, field) in others {
            let w = (-0.5 * (t / sigma) * (t / sigma)).exp();
            for (fit, c) in fits.iter_mut().zip(field.coeffs) {
                fit.add(t, c, w);
            }
        }
        self.history.push_back(own);
        while self.history.len() > params.span.max(1) {
            self.history.pop_front();
        }
        let target = GainField {
            coeffs: std::array::from_fn(|k| fits[k].value_at_zero(0.0)),
        };
        target.plus(&own.scaled(-1.0)).scaled(params.strength.clamp(0.0, 1.0))
    }
}

fn cell_centre(i: usize) -> (f64, f64) {
    let (cx, cy) = (i % CELLS_X, i / CELLS_X);
    let nx = (cx as f64 + 0.5) / CELLS_X as f64 * 2.0 - 1.0;
    let ny = (cy as f64 + 0.5) / CELLS_Y as f64 * 2.0 - 1.0;
    (nx, ny)
}

fn basis(nx: f64, ny: f64) -> [f64; FIELD_TERMS + 1] {
    [1.0, nx, ny, nx * ny, nx * nx - 1.0 / 3.0, ny * ny - 1.0 / 3.0]
}

fn accumulate(normal: &mut [[f64; FIELD_TERMS + 2]; FIELD_TERMS + 1], basis: &[f64; FIELD_TERMS + 1], v: f64, w: f64) {
    for (r, row) in normal.iter_mut().enumerate() {
        for (c, b) in basis.iter().enumerate() {
            row[c] += w * basis[r] * b;
        }
        row[FIELD_TERMS + 1] += w * basis[r] * v;
    }
}

/// Gaussian elimination with partial pivoting on the augmented normal equations.
fn solve(mut m: [[f64; FIELD_TERMS + 2]; FIELD_TERMS + 1]) -> Option<[f64; FIELD_TERMS + 1]> {
    const N: usize = FIELD_TERMS + 1;
    for col in 0..N {
        let pivot = (col..N).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 * m[0][0].abs().max(1e-300) {
            return None;
        }
        m.swap(col, pivot);
        for r in 0..N {
            if r != col {
                let f = m[r][col] / m[col][col];
                for c in col..N + 1 {
                    m[r][c] -= f * m[col][c];
                }
            }
        }
    }
    Some(std::array::from_fn(|i| m[i][N] / m[i][i]))
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

    /// Mean error of the corrected mid quantile against the flicker-free level over frames
    /// 8..60 of a sequence whose level falls by `fall` a frame, under seeded +-10 % gain flicker.
    fn fade_under_flicker_error(fall: f32) -> f32 {
        let mut d = Deflicker::new();
        let params = DeflickerParams::default();
        let mut rng = crate::rng::Rng::from_parts(&[5]);
        let gains: Vec<f32> = (0..62).map(|_| 1.0 + 0.1 * rng.range_f32(-1.0, 1.0)).collect();
        let clean = |i: usize| quantiles(1.0, 0.3 - fall * i as f32);
        let seen = |i: usize| clean(i).map(|v| v * gains[i]);
        let mut err = 0.0;
        for i in 0..60 {
            let c = d.correction(&params, &seen(i), &[seen(i + 1), seen(i + 2)]);
            if i >= 8 {
                err += (c.map(seen(i)[4]) - clean(i)[4]).abs();
            }
            d.remember(i == 0, params.span, &seen(i));
        }
        err / 52.0
    }

    #[test]
    fn a_fade_under_flicker_is_followed() {
        // Flicker alone: about 0.034 before; the local-linear fit without slope shrinkage
        // leaves 0.0104, with it 0.0047.
        let steady = fade_under_flicker_error(0.0);
        assert!(steady < 0.0065, "steady level: {steady}");
        // A fade (0.5 of the frame's range in 100 frames): 0.0083 without shrinkage. The
        // shrinkage must not make the target lag it by much more.
        let fade = fade_under_flicker_error(0.005);
        assert!(fade < 0.0095, "fade: {fade}");
        let fast = fade_under_flicker_error(0.01);
        assert!(fast < 0.0075, "fast fade: {fast}");
    }

    #[test]
    fn one_pass_equals_field_then_tone() {
        let mut plane = Plane::new(37, 21);
        for (i, v) in plane.data.iter_mut().enumerate() {
            *v = (i * 7919 % 1000) as f32 / 999.0;
        }
        let field = GainField {
            coeffs: [0.05, -0.03, 0.02, 0.01, -0.02],
        };
        let tone = ToneCorrection {
            gain: 1.1,
            offset: -0.03,
        };
        for field in [field, GainField::FLAT] {
            let (mut two, mut one) = (plane.clone(), plane.clone());
            field.apply(&mut two);
            tone.apply(&mut two);
            field.apply_then(tone, &mut one);
            assert_eq!(one, two);
            assert_ne!(one, plane);
        }
    }
}
