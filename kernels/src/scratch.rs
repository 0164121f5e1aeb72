//! Vertical line-scratch detection and removal.
//!
//! A line scratch is a thin bright or dark vertical line that stays for many frames and drifts
//! slowly sideways. Per frame, each column's *line profile* is the mean (over rows, clipped so
//! picture detail averages out) of the pixel minus the mean of the pixels a few columns either
//! side. A scratch gives one narrow peak; a picture edge gives a pair of peaks of opposite sign,
//! which the detector refuses. A column is taken as scratched when its peak is strong in this
//! frame *and* the scratch tracker has seen a peak within a couple of columns in recent frames
//! (scratches persist; picture content rarely makes a frame-high line).
//!
//! Scratches slant and bend by a pixel or two over the frame's height, so the fill finds the
//! scratch again on each row (the strongest residual of the scratch's sign within a few pixels
//! of the frame's column run, grown over its soft edges) and refills just those pixels by a
//! linear blend of two-pixel means either side. Each row is filled from its own sides, so the
//! fill carries the picture's texture and grain down the column instead of a flat smear, and
//! rows where the scratch has a gap are left alone.

use crate::frame::Plane;
use crate::grain::neighbours_agree;
use crate::motion::MotionField;
use crate::simd::avx2_twin;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScratchParams {
    /// 0 = off; higher finds fainter scratches.
    pub strength: f32,
}

impl Default for ScratchParams {
    fn default() -> Self {
        ScratchParams { strength: 0.5 }
    }
}

/// Columns either side the line profile compares against.
const SIDE: usize = 3;
/// Widest scratch filled, in pixels.
const MAX_WIDTH: usize = 4;
/// Residual (against the columns either side) that makes a row count toward a line.
const ROW_RESIDUAL: f32 = 0.015;
/// Fraction of rows a line must cover (scratches have gaps, objects rarely span the frame).
const MIN_COVERAGE: f32 = 0.55;
/// Frames a scratch is remembered without being seen.
const PERSISTENCE_DECAY: f32 = 0.6;
/// Sampled rows summed together in one job of the line profile.
const PROFILE_BAND: usize = 16;

#[derive(Default)]
pub struct ScratchRemover {
    profile: Vec<f32>,
    /// Fraction of rows whose residual has the sign of the column's mean.
    coverage: Vec<f32>,
    /// Rows clearly darker, per column (while the profile is summed).
    dark: Vec<f32>,
    /// The line profile's sums per band of rows, reused.
    band_sums: Vec<f32>,
    /// How strongly a scratch has been seen near each column recently (0..1).
    track: Vec<f32>,
    next_track: Vec<f32>,
    columns: Vec<bool>,
    runs: Vec<(usize, usize)>,
    /// Pixels refilled in the last frame (valid while `runs` is not empty).
    filled: Vec<bool>,
}

impl ScratchRemover {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets tracked scratches (shot cut, flush).
    pub fn reset(&mut self) {
        self.track.iter_mut().for_each(|t| *t = 0.0);
    }

    /// Columns found scratched in the last frame.
    pub fn scratched_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns.iter().enumerate().filter(|(_, &s)| s).map(|(x, _)| x)
    }

    /// Removes scratches from `luma` in place; returns the number of pixels replaced.
    pub fn process(&mut self, params: &ScratchParams, luma: &mut Plane, starts_shot: bool) -> usize {
        let w = luma.width;
        self.runs.clear();
        if params.strength <= 0.0 || w < 2 * SIDE + 3 || luma.height < 8 {
            return 0;
        }
        if self.track.len() != w || starts_shot {
            self.track = vec![0.0; w];
        }
        self.line_profile(luma);
        let threshold = 0.045 - 0.03 * params.strength.clamp(0.0, 1.0);
        self.update_track_and_columns(threshold);
        self.fill(luma, threshold)
    }

    fn line_profile(&mut self, luma: &Plane) {
        let w = luma.width;
        let step = (luma.height / 256).max(1);
        let rows = luma.height.div_ceil(step);
        // Per band of rows and per column: clipped residual sum, rows clearly brighter, rows
        // clearly darker. Fixed bands summed in order: the sums (and so the columns found) do
        // not depend on how the pool splits the work.
        self.band_sums.resize(rows.div_ceil(PROFILE_BAND) * 3 * w, 0.0);
        self.band_sums
            .par_chunks_mut(3 * w)
            .enumerate()
            .for_each(|(band, sums)| {
                sums.fill(0.0);
                let (sum, rest) = sums.split_at_mut(w);
                let (bright, dark) = rest.split_at_mut(w);
                let first = band * PROFILE_BAND;
                for k in first..(first + PROFILE_BAND).min(rows) {
                    profile_row(luma.row(k * step), sum, bright, dark);
                }
            });
        for column in [&mut self.profile, &mut self.coverage, &mut self.dark] {
            column.clear();
            column.resize(w, 0.0);
        }
        for sums in self.band_sums.chunks_exact(3 * w) {
            let (sum, rest) = sums.split_at(w);
            let (bright, dark) = rest.split_at(w);
            add_to(&mut self.profile, sum);
            add_to(&mut self.coverage, bright);
            add_to(&mut self.dark, dark);
        }
        let n = rows as f32;
        for ((mean, coverage), &dark) in self.profile.iter_mut().zip(self.coverage.iter_mut()).zip(&self.dark) {
            *mean /= n;
            *coverage = if *mean >= 0.0 { *coverage } else { dark } / n;
        }
    }

    fn update_track_and_columns(&mut self, threshold: f32) {
        let w = self.profile.len();
        self.columns.clear();
        self.columns.resize(w, false);
        self.next_track.clear();
        self.next_track.resize(w, 0.0);
        for x in SIDE..w - SIDE {
            let peak = self.profile[x];
            // A scratch runs down most of the frame; an object's edge covers only its height.
            let is_line = peak.abs() > threshold && self.coverage[x] > MIN_COVERAGE && is_single_peak(&self.profile, x);
            // Scratches drift: a track within two columns counts.
            let remembered = (x.saturating_sub(2)..=(x + 2).min(w - 1))
                .map(|i| self.track[i])
                .fold(0.0f32, f32::max);
            self.next_track[x] = if is_line { 1.0 } else { remembered * PERSISTENCE_DECAY };
            self.columns[x] = is_line && remembered > 0.3;
        }
        std::mem::swap(&mut self.track, &mut self.next_track);
    }

    fn fill(&mut self, luma: &mut Plane, threshold: f32) -> usize {
        let w = luma.width;
        column_runs(&self.columns, &mut self.runs);
        if self.runs.is_empty() {
            return 0;
        }
        self.filled.clear();
        self.filled.resize(luma.data.len(), false);
        let (runs, profile) = (&self.runs, &self.profile);
        luma.data
            .par_chunks_mut(w)
            .zip(self.filled.par_chunks_mut(w))
            .map(|(row, filled)| {
                let mut replaced = 0;
                for &(x0, x1) in runs {
                    let sign = profile[x0..=x1].iter().sum::<f32>().signum();
                    // Rows where the scratch has a gap are left as they are.
                    if let Some((a, b)) = scratch_in_row(row, x0, x1, sign, threshold) {
                        replaced += fill_row(row, a, b);
                        filled[a..=b].fill(true);
                    }
                }
                replaced
            })
            .sum()
    }

    /// Replaces the last frame's spatial fills with what the compensated neighbours saw there,
    /// where the picture moved across the film: the scratch is on the film, so a neighbour's
    /// pixel that came from far enough sideways was not under it, and it carries the real
    /// picture, not an interpolation (textured areas interpolate badly). A neighbour is used on
    /// a row only where it matches the centre on the scratch's flanks (its vectors hold there);
    /// elsewhere the spatial fill stays. Returns the pixels taken from the neighbours.
    pub fn refill_from_neighbours(
        &self,
        luma: &mut Plane,
        neighbours: [(&Plane, &MotionField); 2],
        sigma: f32,
    ) -> usize {
        if self.runs.is_empty() || self.filled.len() != luma.data.len() {
            return 0;
        }
        let (w, h) = (luma.width, luma.height);
        let flank_limit = FLANK_AGREE_SIGMAS * sigma + FLANK_AGREE_FLOOR;
        let agree = neighbours_agree(sigma);
        let mut taken = 0;
        for &(x0, x1) in &self.runs {
            let (lo, hi) = (x0.saturating_sub(ROW_SEARCH), (x1 + ROW_SEARCH).min(w - 1));
            for y in 0..h {
                let Some((a, b)) = filled_span(&self.filled[y * w..(y + 1) * w], lo, hi) else {
                    continue;
                };
                let usable = neighbours.map(|(plane, field)| {
                    clear_of_scratch(field, a, b, y) && flanks_differ(luma, plane, a, b, y) < flank_limit
                });
                for x in a..=b {
                    let spatial = luma.get(x, y);
                    let seen = [0, 1].map(|i| usable[i].then(|| neighbours[i].0.get(x, y)));
                    let value = match seen {
                        [Some(p), Some(q)] if (p - q).abs() <= agree => 0.5 * (p + q),
                        [Some(p), Some(q)] => nearer(spatial, p, q),
                        [Some(p), None] | [None, Some(p)] => p,
                        [None, None] => continue,
                    };
                    luma.set(x, y, value);
                    taken += 1;
                }
            }
        }
        taken
    }

    /// Copies the last frame's refilled pixels from `from` into `to`: the compensated
    /// neighbours carry the same scratch (it is on the film, which the picture moves across
    /// slowly), and the grain filter would otherwise pull the fill back toward it.
    pub fn copy_fills(&self, from: &Plane, to: &mut Plane) {
        if self.runs.is_empty() || self.filled.len() != from.data.len() {
            return;
        }
        let w = from.width;
        // A row's fill lies within `ROW_SEARCH` of its run (see `scratch_in_row`): only those
        // columns need looking at, not the whole frame.
        for &(x0, x1) in &self.runs {
            let (lo, hi) = (x0.saturating_sub(ROW_SEARCH), (x1 + ROW_SEARCH).min(w - 1));
            for y in 0..from.height {
                let span = y * w + lo..=y * w + hi;
                let filled = &self.filled[span.clone()];
                for ((t, f), &m) in to.data[span.clone()].iter_mut().zip(&from.data[span]).zip(filled) {
                    if m {
                        *t = *f;
                    }
                }
            }
        }
    }
}

avx2_twin! {
    /// Adds one row's line residuals to the per-column sums (`r[x]` against the mean of the
    /// pixels `SIDE` either side, for the columns that have both).
    fn profile_row(r: &[f32], sum: &mut [f32], bright: &mut [f32], dark: &mut [f32]) {
        let n = r.len() - 2 * SIDE;
        let (left, centre, right) = (&r[..n], &r[SIDE..SIDE + n], &r[2 * SIDE..2 * SIDE + n]);
        let sum = &mut sum[SIDE..SIDE + n];
        let bright = &mut bright[SIDE..SIDE + n];
        let dark = &mut dark[SIDE..SIDE + n];
        for i in 0..n {
            let residual = centre[i] - 0.5 * (left[i] + right[i]);
            sum[i] += residual.clamp(-0.4, 0.4);
            bright[i] += (residual > ROW_RESIDUAL) as u32 as f32;
            dark[i] += (residual < -ROW_RESIDUAL) as u32 as f32;
        }
    }
}

fn add_to(total: &mut [f32], part: &[f32]) {
    for (t, p) in total.iter_mut().zip(part) {
        *t += p;
    }
}

/// Pixels a scratch may stray, on one row, from the column run found for the whole frame
/// (scratches slant and bend a little).
const ROW_SEARCH: usize = 3;

/// The pixels `a..=b` of the scratch on this row: the strongest line residual of the scratch's
/// sign near its run, grown over its soft edges; `None` where the scratch has a gap.
fn scratch_in_row(row: &[f32], x0: usize, x1: usize, sign: f32, threshold: f32) -> Option<(usize, usize)> {
    let w = row.len();
    let lo = x0.saturating_sub(ROW_SEARCH).max(SIDE);
    let hi = (x1 + ROW_SEARCH).min(w - 1 - SIDE);
    if lo > hi {
        return None;
    }
    let residual = |x: usize| sign * (row[x] - 0.5 * (row[x - SIDE] + row[x + SIDE]));
    let peak = (lo..=hi).max_by(|&a, &b| residual(a).total_cmp(&residual(b)))?;
    if residual(peak) < threshold {
        return None;
    }
    let edge = 0.4 * threshold;
    let (mut a, mut b) = (peak, peak);
    while a > lo && b - a + 1 < MAX_WIDTH && residual(a - 1) > edge {
        a -= 1;
    }
    while b < hi && b - a + 1 < MAX_WIDTH && residual(b + 1) > edge {
        b += 1;
    }
    Some((a, b))
}

/// How far (in noise sigmas, plus a floor) a neighbour may differ from the centre on a
/// scratch's flanks, on average, and still be trusted inside it (two grainy samples differ by
/// about 1.13 sigma on average).
const FLANK_AGREE_SIGMAS: f32 = 1.5;
const FLANK_AGREE_FLOOR: f32 = 0.01;
/// Pixels either side of a row's fill, and rows above and below, that the flank check reads.
const FLANK: usize = 3;
const FLANK_ROWS: usize = 2;
/// How far a scratch may drift between neighbouring frames, in pixels.
const DRIFT: i32 = 2;

/// The first contiguous run of filled pixels within `lo..=hi` of a row's mask.
fn filled_span(filled: &[bool], lo: usize, hi: usize) -> Option<(usize, usize)> {
    let a = (lo..=hi).find(|&x| filled[x])?;
    let b = (a..=hi).take_while(|&x| filled[x]).last()?;
    Some((a, b))
}

/// Whether the vectors fetched every pixel of the fill `a..=b` on row `y` from outside where
/// the scratch lies in the neighbour (its columns here, give or take its drift).
fn clear_of_scratch(field: &MotionField, a: usize, b: usize, y: usize) -> bool {
    (a..=b).all(|x| {
        let source = x as i32 + field.vector_at(x, y).0;
        source < a as i32 - DRIFT - 1 || source > b as i32 + DRIFT + 1
    })
}

/// Mean absolute difference between the centre and a compensated neighbour on the flanks of
/// the fill `a..=b` (a few pixels either side, a few rows up and down).
fn flanks_differ(centre: &Plane, neighbour: &Plane, a: usize, b: usize, y: usize) -> f32 {
    let (w, h) = (centre.width, centre.height);
    let left = a.saturating_sub(FLANK)..a;
    let right = (b + 1).min(w)..(b + 1 + FLANK).min(w);
    let (mut sum, mut n) = (0.0f32, 0u32);
    for yy in y.saturating_sub(FLANK_ROWS)..(y + FLANK_ROWS + 1).min(h) {
        for x in left.clone().chain(right.clone()) {
            sum += (centre.get(x, yy) - neighbour.get(x, yy)).abs();
            n += 1;
        }
    }
    if n == 0 {
        f32::INFINITY
    } else {
        sum / n as f32
    }
}

/// Of two candidates that disagree, the one nearer the spatial fill (the other may be a
/// blotch or a failed vector).
fn nearer(spatial: f32, p: f32, q: f32) -> f32 {
    if (p - spatial).abs() <= (q - spatial).abs() {
        p
    } else {
        q
    }
}

/// Refills `row[a..=b]` by a linear blend of two-pixel means just outside it (a single pixel
/// would carry its grain across the whole fill).
fn fill_row(row: &mut [f32], a: usize, b: usize) -> usize {
    let w = row.len();
    let side = |x: usize, y: usize| 0.5 * (row[x] + row[y]);
    let left = if a >= 2 {
        side(a - 1, a - 2)
    } else {
        row[a.saturating_sub(1)]
    };
    let right = if b + 2 < w {
        side(b + 1, b + 2)
    } else {
        row[(b + 1).min(w - 1)]
    };
    // The outside means sit half a pixel further out than the pixels next to the run.
    let span = (b - a) as f32 + 3.0;
    for x in a..=b {
        let t = (x - a) as f32 + 1.5;
        row[x] = left + (right - left) * t / span;
    }
    b - a + 1
}

/// Contiguous runs of scratched columns, each at most `MAX_WIDTH` wide (wider runs are not
/// line scratches and are left alone), into `runs`.
fn column_runs(columns: &[bool], runs: &mut Vec<(usize, usize)>) {
    runs.clear();
    let mut x = 0;
    while x < columns.len() {
        if columns[x] {
            let start = x;
            while x + 1 < columns.len() && columns[x + 1] {
                x += 1;
            }
            if x - start < MAX_WIDTH {
                runs.push((start, x));
            }
        }
        x += 1;
    }
}

/// A line gives a peak without an equally strong opposite peak beside it (an edge has one).
fn is_single_peak(profile: &[f32], x: usize) -> bool {
    let peak = profile[x];
    let lo = x.saturating_sub(SIDE + 1);
    let hi = (x + SIDE + 1).min(profile.len() - 1);
    let opposite = (lo..=hi).map(|i| -profile[i] * peak.signum()).fold(0.0f32, f32::max);
    opposite < 0.75 * peak.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: usize, h: usize, seed: u32) -> Plane {
        let mut p = Plane::new(w, h);
        let mut s = seed | 1;
        for y in 0..h {
            for x in 0..w {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = 0.45
                    + 0.15 * (x as f32 * 0.07).sin() * (y as f32 * 0.05).cos()
                    + 0.04 * ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
                p.set(x, y, v);
            }
        }
        p
    }

    fn scratched(clean: &Plane, column: usize, value: f32) -> Plane {
        let mut p = clean.clone();
        for y in 0..p.height {
            if !(40..46).contains(&y) {
                p.set(column, y, value);
            }
        }
        p
    }

    #[test]
    fn a_persistent_scratch_is_found_at_its_column_and_filled() {
        let mut remover = ScratchRemover::new();
        let params = ScratchParams::default();
        let mut last_err = 0.0;
        for frame in 0..4 {
            let clean = textured(120, 90, frame + 1);
            let column = 50 + (frame as usize % 2);
            let mut luma = scratched(&clean, column, 0.95);
            remover.process(&params, &mut luma, frame == 0);
            if frame > 0 {
                assert!(
                    remover.scratched_columns().any(|x| x == column),
                    "frame {frame}: column {column} not found"
                );
                assert!(
                    remover.scratched_columns().all(|x| x.abs_diff(column) <= 1),
                    "frame {frame}: other columns flagged"
                );
                last_err = (0..90)
                    .map(|y| (luma.get(column, y) - clean.get(column, y)).abs())
                    .sum::<f32>()
                    / 90.0;
            }
        }
        assert!(last_err < 0.05, "scratch column still off by {last_err}");
    }

    #[test]
    fn the_line_profile_does_not_depend_on_the_thread_count() {
        let plane = scratched(&textured(203, 700, 5), 60, 0.9);
        let profile = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut remover = ScratchRemover::new();
            pool.install(|| remover.line_profile(&plane));
            (remover.profile, remover.coverage)
        };
        let one = profile(1);
        assert!(one.0[60] > 0.1 && one.1[60] > 0.9, "the scratch's column stands out");
        for threads in [2, 3, 8] {
            assert_eq!(profile(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn a_vertical_edge_is_not_a_scratch() {
        let mut remover = ScratchRemover::new();
        let mut luma = textured(120, 90, 7);
        for y in 0..90 {
            for x in 60..120 {
                let v = luma.get(x, y) + 0.3;
                luma.set(x, y, v);
            }
        }
        let before = luma.clone();
        for first in [true, false, false] {
            remover.process(&ScratchParams { strength: 1.0 }, &mut luma, first);
        }
        assert_eq!(remover.scratched_columns().count(), 0);
        assert_eq!(luma, before);
    }

    #[test]
    fn a_flat_frame_stays_flat() {
        let mut remover = ScratchRemover::new();
        let mut luma = Plane::filled(64, 48, 0.3);
        for first in [true, false] {
            assert_eq!(remover.process(&ScratchParams { strength: 1.0 }, &mut luma, first), 0);
        }
        assert!(luma.data.iter().all(|&v| v == 0.3));
    }

    #[test]
    fn fills_are_copied_into_a_neighbour_at_the_filled_pixels_only() {
        let mut remover = ScratchRemover::new();
        let params = ScratchParams::default();
        for frame in 0..3 {
            let mut luma = scratched(&textured(120, 90, frame + 1), 50, 0.95);
            remover.process(&params, &mut luma, frame == 0);
            // A neighbour with the same scratch, as the compensated neighbours have.
            let neighbour = scratched(&textured(120, 90, frame + 7), 50, 0.95);
            let mut copy = neighbour.clone();
            remover.copy_fills(&luma, &mut copy);
            let changed: Vec<usize> = (0..copy.data.len())
                .filter(|&i| copy.data[i] != neighbour.data[i])
                .collect();
            if frame > 0 {
                assert!(
                    changed.len() >= 60,
                    "frame {frame}: only {} pixels copied",
                    changed.len()
                );
            }
            assert!(
                changed.iter().all(|&i| (i % 120).abs_diff(50) <= 2),
                "copied away from the scratch"
            );
            assert!(changed.iter().all(|&i| copy.data[i] == luma.data[i]));
        }
    }

    /// A textured picture panning sideways under a scratch fixed on the film.
    fn panned(frame: usize) -> Plane {
        let mut p = Plane::new(160, 96);
        for y in 0..96 {
            for x in 0..160 {
                let u = x as f32 + 8.0 * frame as f32;
                let v =
                    0.45 + 0.2 * (u * 0.37).sin() * (y as f32 * 0.21).cos() + 0.1 * (u * 0.13 + y as f32 * 0.3).sin();
                p.set(x, y, v);
            }
        }
        p
    }

    #[test]
    fn a_scratch_over_a_pan_is_refilled_with_the_picture_the_neighbours_saw() {
        use crate::deflicker::ToneCorrection;
        use crate::motion::{compensate, estimate, Pyramid};
        let column = 80;
        let frames: Vec<Plane> = (0..5).map(|f| scratched(&panned(f), column, 0.95)).collect();
        let mut remover = ScratchRemover::new();
        let params = ScratchParams::default();
        // Frames 0-2 let the tracker see the scratch; frame 3 is the one refilled, between
        // frames 2 and 4, each compensated onto it.
        for (f, frame) in frames.iter().take(3).enumerate() {
            remover.process(&params, &mut frame.clone(), f == 0);
        }
        let centre = &frames[3];
        let mut pc = Pyramid::default();
        pc.build(centre);
        let neighbour = |n: &Plane| {
            let mut pn = Pyramid::default();
            pn.build(n);
            let mut field = MotionField::default();
            estimate(&pc, &pn, ToneCorrection::IDENTITY, &mut field);
            let mut comp = Plane::new(160, 96);
            compensate(n, &field, ToneCorrection::IDENTITY, &mut comp);
            (comp, field)
        };
        let ((ca, fa), (cb, fb)) = (neighbour(&frames[2]), neighbour(&frames[4]));
        let mut luma = centre.clone();
        remover.process(&params, &mut luma, false);
        let spatial = luma.clone();
        let taken = remover.refill_from_neighbours(&mut luma, [(&ca, &fa), (&cb, &fb)], 0.01);
        assert!(taken >= 60, "only {taken} pixels taken from the neighbours");
        let truth = panned(3);
        let err = |p: &Plane| {
            (16..80)
                .map(|y| (p.get(column, y) - truth.get(column, y)).abs())
                .sum::<f32>()
                / 64.0
        };
        assert!(err(&luma) < 0.02, "refilled column off by {}", err(&luma));
        assert!(
            err(&luma) < 0.5 * err(&spatial),
            "no better than the spatial fill: {} vs {}",
            err(&luma),
            err(&spatial)
        );
        // Only the filled pixels change.
        let changed = (0..luma.data.len()).filter(|&i| luma.data[i] != spatial.data[i]);
        assert!(changed.clone().all(|i| (i % 160).abs_diff(column) <= 3));
    }

    #[test]
    fn a_still_picture_keeps_the_spatial_fill() {
        use crate::deflicker::ToneCorrection;
        use crate::motion::{estimate, Pyramid};
        let mut remover = ScratchRemover::new();
        let params = ScratchParams::default();
        for f in 0..3 {
            remover.process(&params, &mut scratched(&textured(120, 90, f + 1), 50, 0.95), f == 0);
        }
        let mut luma = scratched(&textured(120, 90, 4), 50, 0.95);
        remover.process(&params, &mut luma, false);
        let before = luma.clone();
        // Still neighbours carry the scratch where the centre has it: zero vectors.
        let neighbour = scratched(&textured(120, 90, 5), 50, 0.95);
        let mut pyramid = Pyramid::default();
        pyramid.build(&luma);
        let mut field = MotionField::default();
        estimate(&pyramid, &pyramid, ToneCorrection::IDENTITY, &mut field);
        assert!(field.vectors.iter().all(|&v| v == (0, 0)));
        let taken = remover.refill_from_neighbours(&mut luma, [(&neighbour, &field), (&neighbour, &field)], 0.01);
        assert_eq!(taken, 0);
        assert_eq!(luma, before);
    }
}
