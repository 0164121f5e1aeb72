//! Grain reduction: a motion-compensated temporal average weighted by similarity, then a light
//! edge-preserving spatial pass.
//!
//! Each compensated neighbour pixel is weighted by how close it is to the centre pixel relative
//! to the measured noise: grain (which differs frame to frame by about the noise level) is
//! averaged away, while anything the vectors got wrong (much larger differences) gets no
//! weight, so edges and motion are not smeared. `strength` blends between the input (keeping
//! all grain, as archivists often want) and the filtered frame.

use crate::frame::Plane;
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
}

impl GrainFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Filters `luma` in place against its compensated neighbours; `sigma` is the noise level.
    pub fn process(&mut self, params: &GrainParams, luma: &mut Plane, neighbours: &[&Plane], sigma: f32) {
        let s = params.strength.clamp(0.0, 1.0);
        if s <= 0.0 || sigma <= 1e-4 {
            return;
        }
        if (self.temporal.width, self.temporal.height) != (luma.width, luma.height) {
            self.temporal = Plane::new(luma.width, luma.height);
            self.smoothed = Plane::new(luma.width, luma.height);
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
        spatial_pass(&self.smoothed, SECOND_PASS * sigma, s, luma);
    }
}

/// Noise left after the temporal average and one spatial pass, relative to the input's.
const SECOND_PASS: f32 = 0.4;

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

    fn noisy(base: &Plane, seed: u32, sigma: f32) -> Plane {
        let mut p = base.clone();
        let mut s = seed | 1;
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
            0.03,
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
            0.01,
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
            0.03,
        );
        assert_eq!(c, c0);
    }
}
