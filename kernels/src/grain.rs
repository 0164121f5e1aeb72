//! Grain reduction: a motion-compensated temporal average weighted by similarity, two light
//! edge-preserving spatial passes, then a local Wiener (Lee) step that flattens what grain is
//! left in flat areas (see [`flatten_band`]).
//!
//! Each compensated neighbour pixel is weighted by how close it is to the centre pixel relative
//! to the measured noise: grain (which differs frame to frame by about the noise level) is
//! averaged away, while anything the vectors got wrong (much larger differences) gets no
//! weight, so edges and motion are not smeared. `strength` blends between the input (keeping
//! all grain, as archivists often want) and the filtered frame.
//!
//! The passes run fused, one band of rows per job: each pass keeps only the few rows the next
//! one reads, in a ring, so a row goes from the input to the output while its neighbourhood is
//! still in cache, instead of through four whole-frame planes (the stage was bound by memory
//! traffic at 1080p). Each pixel gets the same arithmetic as when the passes ran one after the
//! other over whole planes; the tests compare the two.

use crate::frame::Plane;
use crate::noise::{curve_level, NoiseProfile};
use crate::simd::avx2_twin;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrainParams {
    /// 0 keeps the grain, 1 removes as much as the filter can.
    pub strength: f32,
    /// Frames either side the temporal average takes: 1, or 2 for the frames two away as
    /// well (where the window holds them).
    pub radius: usize,
}

impl Default for GrainParams {
    fn default() -> Self {
        // Full strength by default: the restorer's quality targets are scored against a grain-free
        // reference; archivists who keep grain lower it (the filter never erases all of it).
        // Radius 1: the frames two away cost an eighth of the frame rate and some detail for a
        // little SSIM (benches/RESULTS.md).
        GrainParams {
            strength: 1.0,
            radius: 1,
        }
    }
}

#[derive(Default)]
pub struct GrainFilter {
    /// The filtered frame, swapped with the caller's (whose buffer takes the next frame's).
    out: Plane,
    /// Rows each job takes (a multiple of [`FLAT_BAND`]), see [`band_height`].
    band_height: usize,
    /// Working rows, one set per band.
    bands: Vec<BandWork>,
}

impl GrainFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Filters `luma` in place against its compensated neighbours, given the noise measured
    /// against the nearest two ([`NoiseProfile::measure`]).
    pub fn process(&mut self, params: &GrainParams, luma: &mut Plane, neighbours: &[&Plane], noise: &NoiseProfile) {
        self.process_then(params, luma, neighbours, noise, |_, _| {});
    }

    /// [`Self::process`], then `finish(y, row)` on every row `y` of the result as soon as it is
    /// made (while in cache), once each, filtered or not: for a per-pixel pass that would
    /// otherwise take a pass of its own over the frame (the restorer's light correction).
    pub fn process_then<F>(
        &mut self,
        params: &GrainParams,
        luma: &mut Plane,
        neighbours: &[&Plane],
        noise: &NoiseProfile,
        finish: F,
    ) where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        let (s, sigma) = (params.strength.clamp(0.0, 1.0), noise.sigma());
        if s <= 0.0 || sigma <= 1e-4 {
            let w = luma.width.max(1);
            luma.data
                .par_chunks_mut(w)
                .enumerate()
                .for_each(|(y, row)| finish(y, row));
            return;
        }
        let (w, h) = (luma.width, luma.height);
        if (self.out.width, self.out.height) != (w, h) {
            self.resize(w, h, band_height(h, rayon::current_num_threads()));
        }
        let input = FrameInput {
            luma,
            neighbours,
            // Against the nearest two (the first), which have the most reliable vectors.
            spikes: match neighbours {
                [a, b, ..] => Some(SpikeClip {
                    a,
                    b,
                    margin: sigma * (2.0 - 1.5 * s),
                    agree: neighbours_agree(sigma),
                }),
                _ => None,
            },
            inv: inv_quarter(3.0 * sigma),
        };
        // Two 3x3 passes: heavy grain (the quality set's strength-1 damage) needs a wider
        // support than 3x3, and the second pass, tuned to what noise the first leaves, keeps
        // the range weights that protect edges.
        let passes = [inv_quarter(3.0 * sigma), inv_quarter(3.0 * SECOND_PASS * sigma)];
        let step = FlatStep::new(noise, s, left_variance(1 + neighbours.len()));
        let band_height = self.band_height;
        self.out
            .data
            .par_chunks_mut(w * band_height)
            .zip(self.bands.par_iter_mut())
            .enumerate()
            .for_each(|(band, (out, work))| {
                let BandWork {
                    temporal,
                    clipped,
                    smoothed,
                    strong,
                    sums,
                } = work;
                let temporal = Temporal {
                    input: &input,
                    rows: temporal,
                    clipped,
                };
                let smoothed = Spatial::new(temporal, smoothed, passes[0], h);
                let mut strong = Spatial::new(smoothed, strong, passes[1], h);
                flatten_band(&mut strong, sums, (band * band_height, out), step, h, &finish);
            });
        std::mem::swap(luma, &mut self.out);
    }

    /// Sizes the working rows for `w`x`h` frames cut into bands of `band_height` rows.
    fn resize(&mut self, w: usize, h: usize, band_height: usize) {
        debug_assert!(band_height.is_multiple_of(FLAT_BAND));
        self.out = Plane::new(w, h);
        self.band_height = band_height;
        self.bands = (0..h.div_ceil(band_height)).map(|_| BandWork::new(w)).collect();
    }
}

/// Noise left after the second spatial pass's input, relative to the input's: the pass only
/// evens out what the first left (the flat-area pass after it does the heavy lifting there).
const SECOND_PASS: f32 = 0.25;

/// Radius of the window over which [`flatten_band`] judges whether an area is flat: 11x11,
/// about SSIM's own window (smaller ones left more grain in flat areas: 0.9205 at 2, 0.9233 at
/// 3, 0.9244 at 5 on the 4-case grey subset).
const FLAT_RADIUS: usize = 5;

/// Variance of the grain the spatial passes leave after a temporal average of three frames,
/// relative to the input's at the same brightness (as [`NoiseProfile`] measures it, on the
/// frame before the blotch and scratch stages, whose damage raises it a little);
/// [`flatten_band`] treats local variance up to this as grain: higher smooths fine texture
/// (bbb's fur) away, lower leaves grain in flat areas (bikes' walls and sky). Tuned on the 8
/// grey quality cases (SSIM 0.9297 at 0.14, 0.9304 at 0.125, 0.9309 at 0.11, 0.9314 at 0.09,
/// 0.9312 at 0.075; the 8 colour cases 0.9196 at 0.14, 0.9224 at 0.09, 0.9225 at 0.075). It
/// was 0.14 while the vectors wandered under heavy grain ([`crate::motion`]'s neighbour
/// preference): a neighbour a pixel or two out of place averages less grain away, so the
/// passes left more.
const LEFT_VARIANCE: f32 = 0.09;

/// [`LEFT_VARIANCE`] for a temporal average of `frames` frames (the centre and its
/// neighbours): an average of more frames leaves less grain, in proportion. With five
/// (`grain-radius=2`) this gives 3/5 of the three-frame level, where sweeps on the 8 grey
/// quality cases peaked both times it was measured (when the level was 0.14: SSIM 0.9289 at
/// 0.06, 0.9295 at 0.08 and 0.084, 0.9293 at 0.10, 0.9277 at 0.14; at 0.09, five frames get
/// 0.054: 0.9332, against 0.9317 with 0.084). Three frames give `LEFT_VARIANCE` exactly
/// (times 1.0).
fn left_variance(frames: usize) -> f32 {
    LEFT_VARIANCE * (3.0 / frames as f32)
}

/// Rows after which [`flatten_band`] starts its running sums afresh, so rounding cannot build
/// up down the frame; the 2r+1 rows that start them are the overhead (a sixth of the box sums).
const FLAT_BAND: usize = 64;

/// Rows above and below its own that a band's passes make: the flat-area box's radius, and
/// one for each 3x3 pass before it.
const HALO: usize = FLAT_RADIUS + 2;

/// Rows per band for a frame `h` rows high shared among `threads`: the multiple of
/// [`FLAT_BAND`] that finishes soonest, counting the halo each band remakes (taller bands waste
/// fewer rows, but must share out evenly among the threads), among those that leave at least
/// two bands per thread where the frame has rows enough, so that a thread the machine takes
/// away for a while does not hold up the frame. The first of equals, the smallest.
fn band_height(h: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    (1..=h.div_ceil(FLAT_BAND).max(1))
        .map(|k| k * FLAT_BAND)
        .min_by_key(|&rows| {
            let bands = h.div_ceil(rows);
            (bands < 2 * threads, bands.div_ceil(threads) * (rows.min(h) + 2 * HALO))
        })
        .unwrap_or(FLAT_BAND)
}

/// One band's working rows: each pass's ring, and the flat-area step's sums.
struct BandWork {
    /// The temporal average (a 3x3 pass reads three rows).
    temporal: RowRing,
    /// The input with its grain spikes clipped, which the output blends with: held from the
    /// temporal pass until the flat-area step, r + 2 rows behind, takes it.
    clipped: RowRing,
    /// The first spatial pass.
    smoothed: RowRing,
    /// The second spatial pass, held while the box (r rows ahead) reaches past it.
    strong: RowRing,
    sums: BandSums,
}

impl BandWork {
    fn new(w: usize) -> Self {
        BandWork {
            temporal: RowRing::new(w, 3),
            clipped: RowRing::new(w, HALO + 1),
            smoothed: RowRing::new(w, 3),
            strong: RowRing::new(w, FLAT_RADIUS + 1),
            sums: BandSums::new(w, FLAT_RADIUS),
        }
    }
}

/// The last rows a pass made, a ring: row `c` lives in slot `c % len`.
struct RowRing {
    slots: Vec<Vec<f32>>,
    /// The next row to make.
    next: usize,
}

impl RowRing {
    fn new(w: usize, len: usize) -> Self {
        RowRing {
            slots: (0..len).map(|_| vec![0.0; w]).collect(),
            next: 0,
        }
    }

    fn row(&self, c: usize) -> &[f32] {
        debug_assert!(
            c < self.next && c + self.slots.len() >= self.next,
            "row {c} not held (next {})",
            self.next
        );
        &self.slots[c % self.slots.len()]
    }

    fn slot(&mut self, c: usize) -> &mut [f32] {
        let len = self.slots.len();
        &mut self.slots[c % len]
    }
}

/// A pass that makes rows in order, from a start each band chooses.
trait RowSource {
    /// Starts a band: the first row asked for will be `c`.
    fn start(&mut self, c: usize);
    /// Makes every row up to `c`.
    fn make(&mut self, c: usize);
    /// Row `c` of the pass (made, and recent enough to be held).
    fn row(&self, c: usize) -> &[f32];
    /// Row `c` of the frame the output blends with (the input, its grain spikes clipped).
    fn base(&self, c: usize) -> &[f32];
}

/// What the temporal pass reads.
struct FrameInput<'a> {
    luma: &'a Plane,
    neighbours: &'a [&'a Plane],
    spikes: Option<SpikeClip<'a>>,
    /// The temporal weights' reach ([`inv_quarter`]).
    inv: f32,
}

/// [`clip_row`]'s neighbours and limits.
struct SpikeClip<'a> {
    a: &'a Plane,
    b: &'a Plane,
    margin: f32,
    agree: f32,
}

/// The first pass: clips one-frame grain spikes, then averages with the neighbours.
struct Temporal<'a> {
    input: &'a FrameInput<'a>,
    rows: &'a mut RowRing,
    clipped: &'a mut RowRing,
}

impl RowSource for Temporal<'_> {
    fn start(&mut self, c: usize) {
        self.rows.next = c;
        self.clipped.next = c;
    }

    fn make(&mut self, c: usize) {
        let input = self.input;
        while self.rows.next <= c {
            let y = self.rows.next;
            let base = self.clipped.slot(y);
            match &input.spikes {
                Some(clip) => clip_row(
                    base,
                    input.luma.row(y),
                    clip.a.row(y),
                    clip.b.row(y),
                    clip.margin,
                    clip.agree,
                ),
                None => base.copy_from_slice(input.luma.row(y)),
            }
            temporal_row(self.rows.slot(y), base, input.neighbours, y, input.inv);
            self.rows.next += 1;
            self.clipped.next += 1;
        }
    }

    fn row(&self, c: usize) -> &[f32] {
        self.rows.row(c)
    }

    fn base(&self, c: usize) -> &[f32] {
        self.clipped.row(c)
    }
}

/// A 3x3 range-weighted pass over its source's rows ([`spatial_row`]).
struct Spatial<'a, S> {
    source: S,
    rows: &'a mut RowRing,
    inv: f32,
    last: usize,
}

impl<'a, S: RowSource> Spatial<'a, S> {
    fn new(source: S, rows: &'a mut RowRing, inv: f32, h: usize) -> Self {
        Spatial {
            source,
            rows,
            inv,
            last: h - 1,
        }
    }
}

impl<S: RowSource> RowSource for Spatial<'_, S> {
    fn start(&mut self, c: usize) {
        self.rows.next = c;
        self.source.start(c.saturating_sub(1));
    }

    fn make(&mut self, c: usize) {
        while self.rows.next <= c {
            let y = self.rows.next;
            let below = (y + 1).min(self.last);
            self.source.make(below);
            let src = &self.source;
            spatial_row(
                [src.row(y.saturating_sub(1)), src.row(y), src.row(below)],
                self.inv,
                self.rows.slot(y),
            );
            self.rows.next += 1;
        }
    }

    fn row(&self, c: usize) -> &[f32] {
        self.rows.row(c)
    }

    fn base(&self, c: usize) -> &[f32] {
        self.source.base(c)
    }
}

/// The flat-area step's working rows: the horizontal box sums (of values and of squares) of
/// the last 2r+2 rows, a ring, and their running sums down the columns.
struct BandSums {
    ring: Vec<[Vec<f32>; 2]>,
    columns: [Vec<f32>; 2],
    padded: Vec<f32>,
}

impl BandSums {
    fn new(w: usize, r: usize) -> Self {
        let row = || vec![0.0; w];
        BandSums {
            ring: (0..2 * r + 2).map(|_| [row(), row()]).collect(),
            columns: [row(), row()],
            padded: vec![0.0; w + 2 * r],
        }
    }
}

/// A local Wiener (Lee) step on the spatially smoothed frame, over one band of rows (`out`,
/// from row `y0`): where the 11x11 variance around a pixel is no more than the grain left at
/// its brightness, the area is flat and the pixel goes to the local mean; where texture or an
/// edge raises the variance, it keeps its value, in proportion. The two 3x3 passes cannot
/// reach far enough to flatten heavy, clumped grain, and SSIM (like the eye) reads leftover
/// grain in flat areas as lost structure. Blended with the source's base by `strength`, then
/// each row `finish`ed.
///
/// The local moments are box sums over (2r+1)^2 pixels, the border clamped: each row's
/// horizontal sums, then running sums of those down the columns, started afresh every
/// [`FLAT_BAND`] rows.
fn flatten_band<S, F>(
    source: &mut S,
    sums: &mut BandSums,
    (y0, out): (usize, &mut [f32]),
    step: FlatStep,
    h: usize,
    finish: &F,
) where
    S: RowSource,
    F: Fn(usize, &mut [f32]),
{
    let r = FLAT_RADIUS as isize;
    let w = sums.columns[0].len();
    let BandSums {
        ring,
        columns: [column, column_sq],
        padded,
    } = sums;
    // Row k's horizontal sums (k unclamped) live in slot k mod 2r+2: the row a slide adds
    // (y + r) and the one it takes away (y - r - 1) are 2r+1 apart, so never share a slot.
    let slots = ring.len() as isize;
    let slot = |k: isize| k.rem_euclid(slots) as usize;
    let clamp = |k: isize| k.clamp(0, h as isize - 1) as usize;
    let mut next_box = y0 as isize - r;
    source.start(clamp(next_box));
    for (dy, row) in out.chunks_mut(w).enumerate() {
        let y = (y0 + dy) as isize;
        while next_box <= y + r {
            let c = clamp(next_box);
            source.make(c);
            let [sum, square] = &mut ring[slot(next_box)];
            box_row(source.row(c), FLAT_RADIUS, padded, sum, square);
            next_box += 1;
        }
        // A fresh start has its sums already: it slides by a row minus itself.
        let restart = (y as usize).is_multiple_of(FLAT_BAND);
        if restart {
            column.fill(0.0);
            column_sq.fill(0.0);
            for k in y - r..=y + r {
                let [sum, square] = &ring[slot(k)];
                add_rows([column, column_sq], [sum, square]);
            }
        }
        let gone = if restart { y + r } else { y - r - 1 };
        let ([come, come_sq], [gone, gone_sq]) = (&ring[slot(y + r)], &ring[slot(gone)]);
        let slide = (
            [&mut column[..], &mut column_sq[..]],
            [&come[..], come_sq],
            [&gone[..], gone_sq],
        );
        let y = y as usize;
        flatten_row(row, [source.base(y), source.row(y)], slide, step);
        finish(y, row);
    }
}

avx2_twin! {
    /// Adds a row's horizontal sums (of values and of squares) to the columns' running sums.
    fn add_rows(columns: [&mut [f32]; 2], row: [&[f32]; 2]) {
        for (column, row) in columns.into_iter().zip(row) {
            for (c, &v) in column.iter_mut().zip(row) {
                *c += v;
            }
        }
    }
}

/// `sums[x]` = the sum of `src[x - r ..= x + r]` (indices clamped to the row), and `squares[x]`
/// the sum of their squares. `padded` (2r longer than the row) takes the row with its end
/// pixels repeated r times, so every pixel, border or not, sums the same way.
fn box_row(src: &[f32], r: usize, padded: &mut [f32], sums: &mut [f32], squares: &mut [f32]) {
    let w = src.len();
    padded[..r].fill(src[0]);
    padded[r..r + w].copy_from_slice(src);
    padded[r + w..].fill(src[w - 1]);
    box_sums(padded, 2 * r + 1, sums, squares);
}

avx2_twin! {
    /// `sums[x]` = the sum of `src[x .. x + taps]`, `squares[x]` of their squares: 32 pixels at
    /// a time, their sums held in registers while the taps are added.
    fn box_sums(src: &[f32], taps: usize, sums: &mut [f32], squares: &mut [f32]) {
        const LANES: usize = 32;
        let n = sums.len();
        let squares = &mut squares[..n];
        let whole = n - n % LANES;
        for x in (0..whole).step_by(LANES) {
            let (mut sum, mut square) = ([0.0f32; LANES], [0.0f32; LANES]);
            for k in 0..taps {
                let v: &[f32; LANES] = src[x + k..x + k + LANES].try_into().unwrap();
                for j in 0..LANES {
                    sum[j] += v[j];
                    square[j] += v[j] * v[j];
                }
            }
            sums[x..x + LANES].copy_from_slice(&sum);
            squares[x..x + LANES].copy_from_slice(&square);
        }
        for x in whole..n {
            let (mut sum, mut square) = (0.0f32, 0.0f32);
            for &v in &src[x..x + taps] {
                sum += v;
                square += v * v;
            }
            sums[x] = sum;
            squares[x] = square;
        }
    }
}

/// What [`flatten_row`] needs besides the rows.
#[derive(Clone, Copy)]
struct FlatStep {
    /// The grain left, by brightness ([`NoiseProfile::scaled_curve`], for [`curve_level`]).
    curve: [f32; 5],
    /// One over the box's area.
    norm: f32,
    strength: f32,
}

impl FlatStep {
    /// `left`: the grain the passes leave, as a share of the input's variance ([`left_variance`]).
    fn new(noise: &NoiseProfile, strength: f32, left: f32) -> Self {
        FlatStep {
            curve: noise.scaled_curve(left.sqrt()),
            norm: 1.0 / ((2 * FLAT_RADIUS + 1) * (2 * FLAT_RADIUS + 1)) as f32,
            strength,
        }
    }
}

/// The columns' running sums (of values and of squares) and the horizontal sums of the rows
/// that come into the box and leave it.
type Slide<'a> = ([&'a mut [f32]; 2], [&'a [f32]; 2], [&'a [f32]; 2]);

avx2_twin! {
    /// [`flatten_band`] for one row: slides the columns' sums one row down (adds the horizontal
    /// sums of the row that comes into the box, takes those of the row that leaves it), filters
    /// each pixel of `values` with the moments they give, and blends the result with `base`.
    fn flatten_row(out: &mut [f32], rows: [&[f32]; 2], slide: Slide, step: FlatStep) {
        let [base, values] = rows;
        let ([sums, squares], [come, come_sq], [gone, gone_sq]) = slide;
        let n = out.len();
        let (base, values, sums, squares) = (&base[..n], &values[..n], &mut sums[..n], &mut squares[..n]);
        let (come, come_sq, gone, gone_sq) = (&come[..n], &come_sq[..n], &gone[..n], &gone_sq[..n]);
        for i in 0..n {
            sums[i] += come[i] - gone[i];
            squares[i] += come_sq[i] - gone_sq[i];
            let (mean, mean_sq) = (sums[i] * step.norm, squares[i] * step.norm);
            let variance = (mean_sq - mean * mean).max(1e-12);
            let level = curve_level(step.curve, mean);
            let keep = ((variance - level * level) / variance).max(0.0);
            let filtered = mean + keep * (values[i] - mean);
            out[i] = base[i] + step.strength * (filtered - base[i]);
        }
    }
}

/// Largest one-frame deviation treated as grain; larger ones are left to the blotch stage,
/// which checks whether they are real moving objects before touching them.
const SPIKE_CAP: f32 = 0.12;

/// Largest difference between two compensated neighbours, at noise level `sigma`, for which
/// they count as seeing the same thing (grain apart): the spike clip here and the scratch
/// stage's refill from the neighbours both ask it.
pub(crate) fn neighbours_agree(sigma: f32) -> f32 {
    3.0 * sigma + 0.02
}

avx2_twin! {
    /// Pulls one-frame grain spikes back toward the compensated neighbours `a` and `b` where
    /// those agree with each other (a static or well-compensated area), like a
    /// motion-compensated median limited to small deviations. The temporal average alone
    /// cannot: it gives outliers no weight. Branch-free (a select per pixel), so the loop
    /// vectorises. Writes `row` clipped into `out`: the row is read where it lies, not copied
    /// first.
    fn clip_row(out: &mut [f32], row: &[f32], a: &[f32], b: &[f32], margin: f32, agree: f32) {
        for (((o, &v), &va), &vb) in out.iter_mut().zip(row).zip(a).zip(b) {
            let (lo, hi) = (va.min(vb) - margin, va.max(vb) + margin);
            let clipped = v.max(lo).min(hi);
            let take = ((va - vb).abs() <= agree) & ((v - clipped).abs() < SPIKE_CAP);
            *o = if take { clipped } else { v };
        }
    }
}

/// A smooth, compactly supported stand-in for `exp(-x)` (x >= 0): `(1 - x/4)^4`, cheap enough
/// to evaluate eleven times per pixel. It takes `quarter` = x/4, which callers get as
/// `d * d * inv_quarter(...)`: a quarter is a power of two, so folding it into the inverse
/// gives the very same `f32` as quartering each product (one multiply less per weight).
#[inline(always)]
fn similarity(quarter: f32) -> f32 {
    let t = (1.0 - quarter).max(0.0);
    let t2 = t * t;
    t2 * t2
}

/// A quarter of `1 / (2 r^2)` for the weights' reach `r` (see [`similarity`]).
#[inline]
fn inv_quarter(reach: f32) -> f32 {
    0.25 / (2.0 * reach * reach)
}

/// Weights each compensated neighbour by its difference from the centre, out to ~3 sigma
/// (grain differs between frames by about 1.4 sigma; vectors that went wrong by far more): row
/// `y` of the average of centre row `c` with `neighbours`.
fn temporal_row(out: &mut [f32], c: &[f32], neighbours: &[&Plane], y: usize, inv: f32) {
    match neighbours {
        [a, b] => return temporal_pair_row(out, c, a.row(y), b.row(y), inv),
        [a, b, d, e] => return temporal_quad_row(out, c, [a.row(y), b.row(y), d.row(y), e.row(y)], inv),
        _ => {}
    }
    for (x, o) in out.iter_mut().enumerate() {
        let (mut sum, mut weight) = (c[x], 1.0f32);
        for n in neighbours {
            weigh(c[x], n.row(y)[x], inv, &mut sum, &mut weight);
        }
        *o = sum / weight;
    }
}

avx2_twin! {
    /// [`temporal_row`] with four neighbours (two each side), in one loop.
    fn temporal_quad_row(out: &mut [f32], c: &[f32], n: [&[f32]; 4], inv: f32) {
        let len = out.len();
        let (c, [a, b, d, e]) = (&c[..len], n.map(|r| &r[..len]));
        for i in 0..len {
            let (mut sum, mut weight) = (c[i], 1.0f32);
            for v in [a[i], b[i], d[i], e[i]] {
                weigh(c[i], v, inv, &mut sum, &mut weight);
            }
            out[i] = sum / weight;
        }
    }
}

/// Adds neighbour sample `v` to a centre sample `c`'s weighted sums.
#[inline(always)]
fn weigh(c: f32, v: f32, inv: f32, sum: &mut f32, weight: &mut f32) {
    let d = v - c;
    let wn = similarity(d * d * inv);
    *sum += wn * v;
    *weight += wn;
}

avx2_twin! {
    /// [`temporal_row`] with two neighbours (the restorer's case): both in one
    /// loop, the sums in registers.
    fn temporal_pair_row(out: &mut [f32], c: &[f32], a: &[f32], b: &[f32], inv: f32) {
        for (((o, &c), &va), &vb) in out.iter_mut().zip(c).zip(a).zip(b) {
            let (mut sum, mut weight) = (c, 1.0f32);
            weigh(c, va, inv, &mut sum, &mut weight);
            weigh(c, vb, inv, &mut sum, &mut weight);
            *o = sum / weight;
        }
    }
}

/// 3x3 range-weighted smoothing: the row between `rows` (the rows above and below it clamped
/// to the frame). The range weight reaches 3 sigma: wide enough to average grain (the quality
/// set's SSIM rose from 0.889 to 0.926 going from 1.5 to 3 sigma), narrow enough that a real
/// sample's detail keeps its sharpness (4 sigma took one below 0.9 of its input's).
fn spatial_row(rows: [&[f32]; 3], inv: f32, out: &mut [f32]) {
    let w = out.len();
    // The first and last columns clamp their outer neighbours to themselves.
    for x in [0, w - 1] {
        let at = |r: usize, dx: isize| rows[r][(x as isize + dx).clamp(0, w as isize - 1) as usize];
        let taps = [
            at(0, -1),
            at(0, 0),
            at(0, 1),
            at(1, -1),
            at(1, 1),
            at(2, -1),
            at(2, 0),
            at(2, 1),
        ];
        out[x] = smooth(rows[1][x], taps, inv);
    }
    if w > 2 {
        spatial_interior(rows, inv, &mut out[1..w - 1]);
    }
}

avx2_twin! {
    /// The spatial pass over a row's interior (`out` is the row without its first and last
    /// pixel). Every tap is a slice of the same length, so the loop runs without bounds checks
    /// and vectorises, with each pixel's sums kept in registers.
    fn spatial_interior(rows: [&[f32]; 3], inv: f32, out: &mut [f32]) {
        let n = out.len();
        let tap = |r: usize, k: usize| &rows[r][k..k + n];
        let (a0, a1, a2) = (tap(0, 0), tap(0, 1), tap(0, 2));
        let (b0, b1, b2) = (tap(1, 0), tap(1, 1), tap(1, 2));
        let (c0, c1, c2) = (tap(2, 0), tap(2, 1), tap(2, 2));
        for i in 0..n {
            let taps = [a0[i], a1[i], a2[i], b0[i], b2[i], c0[i], c1[i], c2[i]];
            out[i] = smooth(b1[i], taps, inv);
        }
    }
}

/// The range-weighted mean of `centre` (weight 1) and its eight neighbours `taps` (in raster
/// order), each weighted by its similarity to the centre.
#[inline(always)]
fn smooth(centre: f32, taps: [f32; 8], inv: f32) -> f32 {
    let (mut sum, mut weight) = (centre, 1.0f32);
    for v in taps {
        let wv = similarity((v - centre) * (v - centre) * inv);
        sum += wv * v;
        weight += wv;
    }
    sum / weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn noisy(base: &Plane, seed: u32, sigma: f32) -> Plane {
        let mut p = base.clone();
        // Odd and distinct for every seed (`seed | 1` gave 2 and 3 the same noise).
        let mut s = 2 * seed + 1;
        for v in p.data.iter_mut() {
            let mut u = 0.0;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                u += (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            }
            *v += sigma * u * (3.0f32).sqrt();
        }
        p
    }

    fn edges() -> Plane {
        let mut p = Plane::new(64, 48);
        for y in 0..48 {
            for x in 0..64 {
                p.set(x, y, if (x / 16 + y / 12) % 2 == 0 { 0.3 } else { 0.7 });
            }
        }
        p
    }

    fn rms(a: &Plane, b: &Plane) -> f32 {
        (a.data.iter().zip(&b.data).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / a.data.len() as f32).sqrt()
    }

    #[test]
    fn the_folded_quarter_gives_the_same_weights() {
        // The weight as first written: x = d^2 / (2 r^2), then (1 - x/4)^4.
        let direct = |d: f32, sigma: f32| {
            let inv = 1.0 / (2.0 * (3.0 * sigma) * (3.0 * sigma));
            let t = (1.0 - 0.25 * (d * d * inv)).max(0.0);
            (t * t) * (t * t)
        };
        let mut s = 0x9e37_79b9u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32
        };
        let mut inside = 0;
        for _ in 0..200_000 {
            let sigma = 1e-4 + 0.2 * next();
            let d = (next() - 0.5) * 14.0 * sigma;
            let folded = similarity(d * d * inv_quarter(3.0 * sigma));
            assert_eq!(folded.to_bits(), direct(d, sigma).to_bits(), "d {d}, sigma {sigma}");
            inside += (folded > 0.0 && folded < 1.0) as usize;
        }
        assert!(inside > 100_000, "only {inside} weights strictly between 0 and 1");
    }

    #[test]
    fn grain_is_reduced_and_edges_survive() {
        let clean = edges();
        let (a, mut c, b) = (noisy(&clean, 1, 0.03), noisy(&clean, 2, 0.03), noisy(&clean, 3, 0.03));
        let before = rms(&c, &clean);
        GrainFilter::new().process(
            &GrainParams {
                strength: 1.0,
                radius: 1,
            },
            &mut c,
            &[&a, &b],
            &NoiseProfile::flat(0.03),
        );
        let after = rms(&c, &clean);
        assert!(after < 0.6 * before, "noise {before} -> {after}");
        // The edge between 0.3 and 0.7 stays sharp: pixels either side keep their level.
        assert!((c.get(15, 5) - 0.3).abs() < 0.05 && (c.get(16, 5) - 0.7).abs() < 0.05);
    }

    #[test]
    fn one_frame_grain_spikes_are_pulled_in_but_a_bright_object_is_not() {
        let flat = Plane::filled(16, 16, 0.5);
        let mut c = flat.clone();
        c.set(4, 4, 0.6); // a grain spike
        c.set(10, 10, 0.95); // a small object seen in this frame only
        GrainFilter::new().process(
            &GrainParams {
                strength: 0.5,
                radius: 1,
            },
            &mut c,
            &[&flat, &flat],
            &NoiseProfile::flat(0.01),
        );
        assert!((c.get(4, 4) - 0.5).abs() < 0.03, "spike left at {}", c.get(4, 4));
        assert!(c.get(10, 10) > 0.85, "object damaged: {}", c.get(10, 10));
    }

    #[test]
    fn zero_strength_keeps_the_grain() {
        let clean = edges();
        let (a, c0, b) = (noisy(&clean, 1, 0.03), noisy(&clean, 2, 0.03), noisy(&clean, 3, 0.03));
        let mut c = c0.clone();
        GrainFilter::new().process(
            &GrainParams {
                strength: 0.0,
                radius: 1,
            },
            &mut c,
            &[&a, &b],
            &NoiseProfile::flat(0.03),
        );
        assert_eq!(c, c0);
    }

    /// Whole planes' rows, for running [`flatten_band`] on its own.
    struct PlaneRows<'a> {
        values: &'a Plane,
        base: &'a Plane,
    }

    impl RowSource for PlaneRows<'_> {
        fn start(&mut self, _: usize) {}
        fn make(&mut self, _: usize) {}
        fn row(&self, c: usize) -> &[f32] {
            self.values.row(c)
        }
        fn base(&self, c: usize) -> &[f32] {
            self.base.row(c)
        }
    }

    /// The flat-area step over a whole frame `strong`, blended with `base`, in bands of
    /// `band_height` rows.
    fn flatten(
        strong: &Plane,
        base: &Plane,
        noise: &NoiseProfile,
        (strength, left): (f32, f32),
        band_height: usize,
    ) -> Plane {
        let (w, h) = (strong.width, strong.height);
        let mut out = Plane::new(w, h);
        for (band, rows) in out.data.chunks_mut(w * band_height).enumerate() {
            let mut source = PlaneRows { values: strong, base };
            let mut sums = BandSums::new(w, FLAT_RADIUS);
            let step = FlatStep::new(noise, strength, left);
            flatten_band(&mut source, &mut sums, (band * band_height, rows), step, h, &|_, _| {});
        }
        out
    }

    /// [`flatten_band`] computed directly: each pixel's moments summed over its clamped box in f64.
    fn flatten_directly(strong: &Plane, r: usize, noise: &NoiseProfile, strength: f32, out: &mut Plane) {
        let (w, h) = (strong.width as isize, strong.height as isize);
        let r = r as isize;
        let [c0, c1, c2, lo, hi] = noise.scaled_curve(LEFT_VARIANCE.sqrt()).map(|c| c as f64);
        for y in 0..h {
            for x in 0..w {
                let (mut sum, mut square) = (0.0f64, 0.0f64);
                for dy in -r..=r {
                    for dx in -r..=r {
                        let v = strong.get((x + dx).clamp(0, w - 1) as usize, (y + dy).clamp(0, h - 1) as usize) as f64;
                        sum += v;
                        square += v * v;
                    }
                }
                let area = ((2 * r + 1) * (2 * r + 1)) as f64;
                let (mean, variance) = (sum / area, (square / area - (sum / area).powi(2)).max(1e-12));
                let t = mean - 0.5;
                let level = (c0 + t * (c1 + t * c2)).max(lo).min(hi);
                let keep = ((variance - level * level) / variance).max(0.0);
                let filtered = mean + keep * (strong.get(x as usize, y as usize) as f64 - mean);
                let o = out.get(x as usize, y as usize) as f64;
                out.set(x as usize, y as usize, (o + strength as f64 * (filtered - o)) as f32);
            }
        }
    }

    #[test]
    fn the_flat_area_step_equals_its_direct_sum_at_every_size() {
        // Narrower and shorter than the box, one band, several bands with a short last one.
        for (w, h) in [(3, 2), (7, 11), (11, 5), (40, 70), (13, 4 * FLAT_BAND + 9)] {
            let mut rng = Rng::new((w * 1000 + h) as u64);
            let mut strong = Plane::new(w, h);
            // Flat areas, texture and noise at several brightnesses, so keep takes every value.
            for y in 0..h {
                for x in 0..w {
                    let base = if x < w / 2 {
                        0.2 + 0.6 * y as f32 / h as f32
                    } else {
                        0.3 + 0.3 * ((x + y) % 2) as f32
                    };
                    strong.set(x, y, base + 0.02 * rng.normal());
                }
            }
            let noise = NoiseProfile::measure(&strong, &noisy(&strong, 5, 0.03), &noisy(&strong, 6, 0.03));
            let start = noisy(&strong, 7, 0.05);
            // Two bands of two restarts each: the second band and the restarts within a band.
            let fast = flatten(&strong, &start, &noise, (0.8, LEFT_VARIANCE), 2 * FLAT_BAND);
            let mut direct = start.clone();
            flatten_directly(&strong, FLAT_RADIUS, &noise, 0.8, &mut direct);
            let worst = fast
                .data
                .iter()
                .zip(&direct.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 2e-4, "{w}x{h}: differs by {worst}");
            assert_ne!(fast, start, "{w}x{h}: nothing filtered");
        }
    }

    #[test]
    fn an_average_of_more_frames_leaves_less_grain_for_the_flat_step_to_take() {
        // Three frames (the default radius) keep the tuned level to the bit.
        assert_eq!(left_variance(3).to_bits(), LEFT_VARIANCE.to_bits());
        assert!((left_variance(5) - 0.6 * LEFT_VARIANCE).abs() < 1e-7);
        assert!(left_variance(4) < left_variance(3) && left_variance(5) < left_variance(4));
        // Stripes whose variance lies between what five frames and what three leave (0.85 of
        // the three-frame level, 3/5 being the five-frame one): grain after three frames
        // (flattened), texture after five (kept in part).
        let sigma = 0.1f32;
        let amplitude = (0.85 * LEFT_VARIANCE * sigma * sigma).sqrt();
        let (w, h) = (48, 40);
        let mut stripes = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                stripes.set(x, y, 0.5 + if x % 2 == 0 { amplitude } else { -amplitude });
            }
        }
        let noise = NoiseProfile::flat(sigma);
        let spread = |frames: usize| {
            let out = flatten(&stripes, &stripes, &noise, (1.0, left_variance(frames)), FLAT_BAND);
            let d: Vec<f32> = (12..h - 12)
                .flat_map(|y| (12..w - 12).map(move |x| (x, y)))
                .map(|(x, y)| out.get(x, y) - 0.5)
                .collect();
            (d.iter().map(|v| v * v).sum::<f32>() / d.len() as f32).sqrt()
        };
        let (three, five) = (spread(3), spread(5));
        // Flattened: what is left is the 11-pixel box mean's own swing over odd and even
        // columns (six stripes of one sign against five of the other, a/11).
        assert!(three < 0.12 * amplitude, "three frames left {three} of {amplitude}");
        assert!(five > 0.2 * amplitude, "five frames kept only {five} of {amplitude}");
    }

    #[test]
    fn the_flat_area_step_flattens_grain_and_keeps_texture() {
        // Left half flat grey under the grain the spatial passes leave; right half stripes two
        // pixels wide, far above it.
        let (w, h, left) = (64, 48, 0.01);
        let mut rng = Rng::new(11);
        let mut strong = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let clean = if x < w / 2 {
                    0.5
                } else {
                    0.35 + 0.3 * ((x / 2) % 2) as f32
                };
                strong.set(x, y, clean + left * rng.normal());
            }
        }
        // The input's level, of which LEFT_VARIANCE is what the passes left.
        let noise = NoiseProfile::flat(left / LEFT_VARIANCE.sqrt());
        let out = flatten(&strong, &strong, &noise, (1.0, LEFT_VARIANCE), FLAT_BAND);
        let spread = |p: &Plane, xs: std::ops::Range<usize>, clean: &dyn Fn(usize) -> f32| {
            let d: Vec<f32> = (8..h - 8)
                .flat_map(|y| xs.clone().map(move |x| (y, x)))
                .map(|(y, x)| p.get(x, y) - clean(x))
                .collect();
            (d.iter().map(|v| v * v).sum::<f32>() / d.len() as f32).sqrt()
        };
        let flat = |_| 0.5;
        let (before, after) = (spread(&strong, 8..24, &flat), spread(&out, 8..24, &flat));
        assert!(after < 0.35 * before, "flat area: grain {before} -> {after}");
        let stripes = |x: usize| 0.35 + 0.3 * ((x / 2) % 2) as f32;
        let contrast = spread(&out, 40..56, &stripes);
        assert!(contrast < 1.5 * left, "stripes moved by {contrast} (grain {left})");
    }

    #[test]
    fn heavy_grain_on_flat_grey_is_flattened_through_the_whole_filter() {
        // Three frames of flat grey under heavy, independent grain (the quality set's strength 1).
        let flat = Plane::filled(96, 64, 0.45);
        let (a, mut c, b) = (noisy(&flat, 1, 0.06), noisy(&flat, 2, 0.06), noisy(&flat, 3, 0.06));
        let before = rms(&c, &flat);
        let noise = NoiseProfile::measure(&c, &a, &b);
        assert!((noise.sigma() - 0.06).abs() < 0.01, "measured {}", noise.sigma());
        GrainFilter::new().process(&GrainParams::default(), &mut c, &[&a, &b], &noise);
        let after = rms(&c, &flat);
        // Without the flat-area step it leaves 0.15x; with it 0.05x.
        assert!(after < 0.09 * before, "grain {before} -> {after}");
    }

    /// The passes run one after the other over whole planes, for comparison with the fused
    /// bands: the same row functions, so the same arithmetic, in a different order.
    fn process_whole(params: &GrainParams, luma: &Plane, neighbours: &[&Plane], noise: &NoiseProfile) -> Plane {
        let (s, sigma) = (params.strength, noise.sigma());
        let (w, h) = (luma.width, luma.height);
        let mut clipped = luma.clone();
        if let [a, b, ..] = neighbours {
            for y in 0..h {
                let row = &mut clipped.data[y * w..][..w];
                clip_row(
                    row,
                    luma.row(y),
                    a.row(y),
                    b.row(y),
                    sigma * (2.0 - 1.5 * s),
                    neighbours_agree(sigma),
                );
            }
        }
        let mut temporal = Plane::new(w, h);
        for y in 0..h {
            temporal_row(
                &mut temporal.data[y * w..][..w],
                clipped.row(y),
                neighbours,
                y,
                inv_quarter(3.0 * sigma),
            );
        }
        let spatial = |src: &Plane, reach: f32| {
            let mut out = Plane::new(w, h);
            for y in 0..h {
                let rows = [src.row(y.saturating_sub(1)), src.row(y), src.row((y + 1).min(h - 1))];
                spatial_row(rows, inv_quarter(reach), &mut out.data[y * w..][..w]);
            }
            out
        };
        let strong = spatial(&spatial(&temporal, 3.0 * sigma), 3.0 * SECOND_PASS * sigma);
        flatten(
            &strong,
            &clipped,
            noise,
            (s, left_variance(1 + neighbours.len())),
            FLAT_BAND,
        )
    }

    #[test]
    fn the_fused_bands_equal_the_passes_over_whole_planes() {
        // Frames narrower and shorter than the halo, band edges inside and outside the halo,
        // and every neighbour count the temporal pass handles.
        let sizes = [
            (1, 1),
            (2, 3),
            (3, 2),
            (7, 11),
            (40, 70),
            (13, 137),
            (33, 300),
            (70, 200),
        ];
        for (i, (w, h)) in sizes.into_iter().enumerate() {
            let clean = Plane::filled(w, h, 0.4);
            let mut frames: Vec<Plane> = (0..5).map(|k| noisy(&clean, (10 * i + k) as u32, 0.04)).collect();
            // An edge and a bright one-frame spot, so the weights take every value.
            for (x, y) in (0..w).flat_map(|x| (0..h / 2).map(move |y| (x, y))) {
                for f in frames.iter_mut() {
                    f.set(x, y, f.get(x, y) + 0.3);
                }
            }
            frames[0].set(w / 2, h / 2, 0.95);
            let luma = frames.remove(0);
            let noise = NoiseProfile::measure(&luma, &frames[0], &frames[1]);
            for count in [0, 1, 2, 3, 4] {
                let neighbours: Vec<&Plane> = frames[..count].iter().collect();
                for strength in [1.0, 0.6] {
                    let params = GrainParams { strength, radius: 1 };
                    let whole = process_whole(&params, &luma, &neighbours, &noise);
                    for band_height in [FLAT_BAND, 2 * FLAT_BAND, 3 * FLAT_BAND, 0] {
                        let mut filter = GrainFilter::new();
                        if band_height > 0 {
                            filter.resize(w, h, band_height);
                        }
                        // Twice: the second frame must not see the first's rows.
                        for _ in 0..2 {
                            let mut fused = luma.clone();
                            filter.process(&params, &mut fused, &neighbours, &noise);
                            let same = fused
                                .data
                                .iter()
                                .zip(&whole.data)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(
                                same,
                                "{w}x{h}, {count} neighbours, strength {strength}, bands of {band_height}"
                            );
                        }
                    }
                    assert_ne!(whole, luma, "{w}x{h}, {count} neighbours: nothing filtered");
                }
            }
        }
    }

    #[test]
    fn bands_share_out_evenly() {
        // Two threads: 1080 rows in six bands (the last 120 rows), 720 in four (the last 144).
        assert_eq!(band_height(1080, 2), 192);
        assert_eq!(band_height(720, 2), 192);
        for (h, threads) in [(1, 1), (70, 2), (720, 2), (1080, 2), (1080, 16), (2160, 8)] {
            let rows = band_height(h, threads);
            assert_eq!(rows % FLAT_BAND, 0, "{h} rows, {threads} threads");
            assert!(
                rows <= h.next_multiple_of(FLAT_BAND),
                "{h} rows, {threads} threads: {rows}"
            );
        }
    }

    #[test]
    fn every_row_is_finished_once_filtered_or_not() {
        let clean = edges();
        let (a, c, b) = (noisy(&clean, 1, 0.03), noisy(&clean, 2, 0.03), noisy(&clean, 3, 0.03));
        let finish = |_: usize, row: &mut [f32]| row.iter_mut().for_each(|v| *v = *v * 0.5 + 0.25);
        for strength in [1.0, 0.0] {
            let params = GrainParams { strength, radius: 1 };
            let mut then = c.clone();
            let calls = std::sync::Mutex::new(vec![0; c.height]);
            let counted = |y: usize, row: &mut [f32]| {
                calls.lock().unwrap()[y] += 1;
                finish(y, row);
            };
            GrainFilter::new().process_then(&params, &mut then, &[&a, &b], &NoiseProfile::flat(0.03), counted);
            assert!(
                calls.into_inner().unwrap().iter().all(|&n| n == 1),
                "strength {strength}"
            );
            let mut after = c.clone();
            GrainFilter::new().process(&params, &mut after, &[&a, &b], &NoiseProfile::flat(0.03));
            after
                .data
                .chunks_mut(c.width)
                .enumerate()
                .for_each(|(y, row)| finish(y, row));
            assert_eq!(then, after, "strength {strength}");
        }
    }
}
