//! Grain reduction: a motion-compensated temporal average weighted by similarity, two light
//! edge-preserving spatial passes, then a local Wiener (Lee) step that flattens what grain is
//! left in flat areas (see [`flatten`]).
//!
//! Each compensated neighbour pixel is weighted by how close it is to the centre pixel relative
//! to the measured noise: grain (which differs frame to frame by about the noise level) is
//! averaged away, while anything the vectors got wrong (much larger differences) gets no
//! weight, so edges and motion are not smeared. `strength` blends between the input (keeping
//! all grain, as archivists often want) and the filtered frame.

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
    temporal: Plane,
    smoothed: Plane,
    strong: Plane,
    /// Working rows of the flat-area step, one set per band of rows.
    band_sums: Vec<BandSums>,
}

impl GrainFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Filters `luma` in place against its compensated neighbours, given the noise measured
    /// against the nearest two ([`NoiseProfile::measure`]).
    pub fn process(&mut self, params: &GrainParams, luma: &mut Plane, neighbours: &[&Plane], noise: &NoiseProfile) {
        let (s, sigma) = (params.strength.clamp(0.0, 1.0), noise.sigma());
        if s <= 0.0 || sigma <= 1e-4 {
            return;
        }
        let (w, h) = (luma.width, luma.height);
        if (self.temporal.width, self.temporal.height) != (w, h) {
            self.temporal = Plane::new(w, h);
            self.smoothed = Plane::new(w, h);
            self.strong = Plane::new(w, h);
            self.band_sums = BandSums::for_frame(w, h, FLAT_RADIUS);
        }
        // Against the nearest two (the first), which have the most reliable vectors.
        if let [a, b, ..] = neighbours {
            clip_spikes(luma, a, b, sigma, s);
        }
        temporal_average(luma, neighbours, sigma, &mut self.temporal);
        // Two 3x3 passes: heavy grain (the quality set's strength-1 damage) needs a wider
        // support than 3x3, and the second pass, tuned to what noise the first leaves, keeps
        // the range weights that protect edges.
        spatial_pass(&self.temporal, sigma, 1.0, &mut self.smoothed);
        spatial_pass(&self.smoothed, SECOND_PASS * sigma, 1.0, &mut self.strong);
        flatten(&self.strong, FLAT_RADIUS, noise, s, &mut self.band_sums, luma);
    }
}

/// Noise left after the second spatial pass's input, relative to the input's: the pass only
/// evens out what the first left (the flat-area pass after it does the heavy lifting there).
const SECOND_PASS: f32 = 0.25;

/// Radius of the window over which [`flatten`] judges whether an area is flat: 11x11, about
/// SSIM's own window (smaller ones left more grain in flat areas: 0.9205 at 2, 0.9233 at 3,
/// 0.9244 at 5 on the 4-case grey subset).
const FLAT_RADIUS: usize = 5;

/// Variance of the grain the spatial passes leave, relative to the input's at the same
/// brightness (as [`NoiseProfile`] measures it, on the frame before the blotch and scratch
/// stages, whose damage raises it a little); [`flatten`] treats local variance up to this as
/// grain. Tuned on the 4-case grey subset (SSIM 0.9251 at 0.22, 0.9269 at 0.17, 0.9274 at
/// 0.14, 0.9270 at 0.11): higher smooths fine texture (bbb's fur) away, lower leaves grain in
/// flat areas (bikes' walls and sky).
const LEFT_VARIANCE: f32 = 0.14;

/// Rows each job of [`flatten`] takes. Each job starts its running sums afresh, so rounding
/// cannot build up down the frame; the 2r+1 rows that start them are the overhead (a sixth).
const FLAT_BAND: usize = 64;

/// One band's working rows for [`flatten`]: the horizontal box sums (of values and of squares)
/// of the last 2r+2 rows, a ring, and their running sums down the columns. Kept per band so the
/// sums stay in cache instead of going through whole-frame planes.
#[derive(Default)]
struct BandSums {
    ring: Vec<[Vec<f32>; 2]>,
    columns: [Vec<f32>; 2],
    padded: Vec<f32>,
}

impl BandSums {
    fn for_frame(w: usize, h: usize, r: usize) -> Vec<Self> {
        let row = || vec![0.0; w];
        (0..h.div_ceil(FLAT_BAND))
            .map(|_| BandSums {
                ring: (0..2 * r + 2).map(|_| [row(), row()]).collect(),
                columns: [row(), row()],
                padded: vec![0.0; w + 2 * r],
            })
            .collect()
    }
}

/// A local Wiener (Lee) step on the spatially smoothed frame: where the 11x11 variance around a
/// pixel is no more than the grain left at its brightness, the area is flat and the pixel goes
/// to the local mean; where texture or an edge raises the variance, it keeps its value, in
/// proportion. The two 3x3 passes cannot reach far enough to flatten heavy, clumped grain, and
/// SSIM (like the eye) reads leftover grain in flat areas as lost structure. Blended into `out`
/// by `strength`.
///
/// The local moments are box sums over (2r+1)^2 pixels, the border clamped: each row's
/// horizontal sums, then running sums of those down the columns, one band of rows per job.
fn flatten(strong: &Plane, r: usize, noise: &NoiseProfile, strength: f32, bands: &mut [BandSums], out: &mut Plane) {
    let (w, h) = (out.width, out.height);
    let step = FlatStep {
        curve: noise.scaled_curve(LEFT_VARIANCE.sqrt()),
        norm: 1.0 / ((2 * r + 1) * (2 * r + 1)) as f32,
        strength,
    };
    let source = |k: isize| strong.row(k.clamp(0, h as isize - 1) as usize);
    let r = r as isize;
    out.data
        .par_chunks_mut(w * FLAT_BAND)
        .zip(bands.par_iter_mut())
        .enumerate()
        .for_each(|(band, (rows, sums))| {
            let BandSums {
                ring,
                columns: [column, column_sq],
                padded,
            } = sums;
            // Row k's horizontal sums live in slot k mod 2r+2: the row a slide adds (y + r)
            // and the one it takes away (y - r - 1) are 2r+1 apart, so never share a slot.
            let slots = ring.len() as isize;
            let slot = |k: isize| k.rem_euclid(slots) as usize;
            let y0 = (band * FLAT_BAND) as isize;
            column.fill(0.0);
            column_sq.fill(0.0);
            for k in y0 - r..=y0 + r {
                let [sum, square] = &mut ring[slot(k)];
                box_row(source(k), r as usize, padded, sum, square);
                add_rows([column, column_sq], [sum, square]);
            }
            for (dy, row) in rows.chunks_mut(w).enumerate() {
                let y = y0 + dy as isize;
                // The band's first row has its sums already: it slides by a row minus itself.
                let (come, gone) = match dy {
                    0 => (y0 + r, y0 + r),
                    _ => (y + r, y - r - 1),
                };
                if dy > 0 {
                    let [sum, square] = &mut ring[slot(come)];
                    box_row(source(come), r as usize, padded, sum, square);
                }
                let ([come, come_sq], [gone, gone_sq]) = (&ring[slot(come)], &ring[slot(gone)]);
                let slide = (
                    [&mut column[..], &mut column_sq[..]],
                    [&come[..], come_sq],
                    [&gone[..], gone_sq],
                );
                flatten_row(row, strong.row(y as usize), slide, step);
            }
        });
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

/// The columns' running sums (of values and of squares) and the horizontal sums of the rows
/// that come into the box and leave it.
type Slide<'a> = ([&'a mut [f32]; 2], [&'a [f32]; 2], [&'a [f32]; 2]);

avx2_twin! {
    /// [`flatten`] for one row: slides the columns' sums one row down (adds the horizontal sums
    /// of the row that comes into the box, takes those of the row that leaves it) and filters
    /// each pixel with the moments they give.
    fn flatten_row(out: &mut [f32], values: &[f32], slide: Slide, step: FlatStep) {
        let ([sums, squares], [come, come_sq], [gone, gone_sq]) = slide;
        let n = out.len();
        let (values, sums, squares) = (&values[..n], &mut sums[..n], &mut squares[..n]);
        let (come, come_sq, gone, gone_sq) = (&come[..n], &come_sq[..n], &gone[..n], &gone_sq[..n]);
        for i in 0..n {
            sums[i] += come[i] - gone[i];
            squares[i] += come_sq[i] - gone_sq[i];
            let (mean, mean_sq) = (sums[i] * step.norm, squares[i] * step.norm);
            let variance = (mean_sq - mean * mean).max(1e-12);
            let level = curve_level(step.curve, mean);
            let keep = ((variance - level * level) / variance).max(0.0);
            let filtered = mean + keep * (values[i] - mean);
            out[i] += step.strength * (filtered - out[i]);
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

/// Pulls one-frame grain spikes back toward the compensated neighbours where those agree with
/// each other (a static or well-compensated area), like a motion-compensated median limited to
/// small deviations. The temporal average alone cannot: it gives outliers no weight.
fn clip_spikes(luma: &mut Plane, a: &Plane, b: &Plane, sigma: f32, strength: f32) {
    let w = luma.width;
    let margin = sigma * (2.0 - 1.5 * strength);
    let agree = neighbours_agree(sigma);
    luma.data
        .par_chunks_mut(w)
        .enumerate()
        .for_each(|(y, row)| clip_row(row, a.row(y), b.row(y), margin, agree));
}

avx2_twin! {
    /// [`clip_spikes`] on one row, branch-free (a select per pixel), so the loop vectorises.
    fn clip_row(row: &mut [f32], a: &[f32], b: &[f32], margin: f32, agree: f32) {
        for ((v, &va), &vb) in row.iter_mut().zip(a).zip(b) {
            let (lo, hi) = (va.min(vb) - margin, va.max(vb) + margin);
            let clipped = v.max(lo).min(hi);
            let take = ((va - vb).abs() <= agree) & ((*v - clipped).abs() < SPIKE_CAP);
            *v = if take { clipped } else { *v };
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
/// (grain differs between frames by about 1.4 sigma; vectors that went wrong by far more).
fn temporal_average(centre: &Plane, neighbours: &[&Plane], sigma: f32, out: &mut Plane) {
    let w = centre.width;
    let inv = inv_quarter(3.0 * sigma);
    out.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let c = centre.row(y);
        match neighbours {
            [a, b] => return temporal_pair_row(row, c, a.row(y), b.row(y), inv),
            [a, b, d, e] => return temporal_quad_row(row, c, [a.row(y), b.row(y), d.row(y), e.row(y)], inv),
            _ => {}
        }
        for (x, o) in row.iter_mut().enumerate() {
            let (mut sum, mut weight) = (c[x], 1.0f32);
            for n in neighbours {
                weigh(c[x], n.row(y)[x], inv, &mut sum, &mut weight);
            }
            *o = sum / weight;
        }
    });
}

avx2_twin! {
    /// [`temporal_average`] of one row with four neighbours (two each side), in one loop.
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
    /// [`temporal_average`] of one row with two neighbours (the restorer's case): both in one
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

/// 3x3 range-weighted smoothing of the temporal result, blended into `out` by `strength`.
/// The range weight reaches 3 sigma: wide enough to average grain (the quality set's SSIM
/// rose from 0.889 to 0.926 going from 1.5 to 3 sigma), narrow enough that a real sample's
/// detail keeps its sharpness (4 sigma took one below 0.9 of its input's).
fn spatial_pass(src: &Plane, sigma: f32, strength: f32, out: &mut Plane) {
    let (w, h) = (src.width, src.height);
    let inv = inv_quarter(3.0 * sigma);
    out.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let rows = [src.row(y.saturating_sub(1)), src.row(y), src.row((y + 1).min(h - 1))];
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
            row[x] += strength * (smooth(rows[1][x], taps, inv) - row[x]);
        }
        if w > 2 {
            spatial_interior(rows, inv, strength, &mut row[1..w - 1]);
        }
    });
}

avx2_twin! {
    /// The spatial pass over a row's interior (`out` is the row without its first and last
    /// pixel). Every tap is a slice of the same length, so the loop runs without bounds checks
    /// and vectorises, with each pixel's sums kept in registers.
    fn spatial_interior(rows: [&[f32]; 3], inv: f32, strength: f32, out: &mut [f32]) {
        let n = out.len();
        let tap = |r: usize, k: usize| &rows[r][k..k + n];
        let (a0, a1, a2) = (tap(0, 0), tap(0, 1), tap(0, 2));
        let (b0, b1, b2) = (tap(1, 0), tap(1, 1), tap(1, 2));
        let (c0, c1, c2) = (tap(2, 0), tap(2, 1), tap(2, 2));
        for i in 0..n {
            let taps = [a0[i], a1[i], a2[i], b0[i], b2[i], c0[i], c1[i], c2[i]];
            out[i] += strength * (smooth(b1[i], taps, inv) - out[i]);
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

    /// [`flatten`] computed directly: each pixel's moments summed over its clamped box in f64.
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
        for (w, h) in [(3, 2), (7, 11), (11, 5), (40, 70), (13, 2 * FLAT_BAND + 9)] {
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
            let (mut fast, mut direct) = (start.clone(), start.clone());
            let mut bands = BandSums::for_frame(w, h, FLAT_RADIUS);
            flatten(&strong, FLAT_RADIUS, &noise, 0.8, &mut bands, &mut fast);
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
        let mut out = strong.clone();
        flatten(
            &strong,
            FLAT_RADIUS,
            &noise,
            1.0,
            &mut BandSums::for_frame(w, h, FLAT_RADIUS),
            &mut out,
        );
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
}
