//! Dust and dirt (blotch) removal by motion-compensated spike detection.
//!
//! A blotch lives on one frame only, so its pixels differ from *both* motion-compensated
//! neighbours in the *same* direction (the SDI/ROD family of detectors). Three guards keep real
//! picture content:
//! - the threshold follows the frame's measured noise, so grain is not taken for dust;
//! - a candidate whose 3x3 patch is found nearby in either raw neighbour is real content that
//!   the block vectors did not follow (a small, fast object: a hand, a bird), and is kept;
//! - the mask only grows into pixels that are themselves spikes, at a lower threshold, to take
//!   soft edges without eating into the picture.
//!
//! Detected pixels are filled from the compensated neighbours: their mean where they agree,
//! otherwise the median of the two and a spatial estimate from unmasked pixels around.

use crate::frame::Plane;
use crate::motion::MotionField;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlotchParams {
    /// 0 = off; higher detects fainter blotches (lower threshold).
    pub strength: f32,
}

impl Default for BlotchParams {
    fn default() -> Self {
        BlotchParams { strength: 0.5 }
    }
}

/// A neighbour as the detector sees it: compensated onto the centre, and raw with its vectors
/// for the real-motion check.
pub struct Neighbour<'a> {
    pub compensated: &'a Plane,
    pub raw: &'a Plane,
    pub field: &'a MotionField,
    pub tone: crate::deflicker::ToneCorrection,
}

/// Search radius (pixels) of the real-motion check around the compensated position.
const MOTION_CHECK_RADIUS: isize = 8;

#[derive(Default)]
pub struct BlotchRemover {
    mask: Vec<u8>,
    grown: Vec<u8>,
}

const SEED: u8 = 2;
const EDGE: u8 = 1;

impl BlotchRemover {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `centre` with blotches removed into `out`; returns the number of pixels replaced.
    pub fn process(
        &mut self,
        params: &BlotchParams,
        centre: &Plane,
        a: &Neighbour,
        b: &Neighbour,
        out: &mut Plane,
    ) -> usize {
        out.copy_from(centre);
        if params.strength <= 0.0 {
            return 0;
        }
        let n = centre.data.len();
        self.mask.clear();
        self.mask.resize(n, 0);
        self.grown.clear();
        self.grown.resize(n, 0);
        let sigma = noise_sigma(centre, a.compensated, b.compensated);
        // Strength 0.5 asks for a spike of ~5 sigma (and at least 0.06) on both sides.
        let k = 7.0 - 4.0 * params.strength.clamp(0.0, 1.0);
        let threshold = (k * sigma).max(0.10 - 0.08 * params.strength.clamp(0.0, 1.0));
        let match_tolerance = (2.0 * sigma).max(0.025);
        self.detect_seeds(centre, a, b, threshold, match_tolerance);
        self.grow(centre, a.compensated, b.compensated, threshold / 3.0);
        fill(centre, a.compensated, b.compensated, &self.grown, sigma, out)
    }

    /// The last mask: 0 clean, 1 grown edge, 2 detected core.
    pub fn last_mask(&self) -> &[u8] {
        &self.grown
    }

    fn detect_seeds(&mut self, centre: &Plane, a: &Neighbour, b: &Neighbour, threshold: f32, tolerance: f32) {
        let w = centre.width;
        self.mask.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            let (c, fa, fb) = (centre.row(y), a.compensated.row(y), b.compensated.row(y));
            for x in 0..w {
                if is_spike(c[x], fa[x], fb[x], threshold)
                    && !found_nearby(centre, a, x, y, tolerance)
                    && !found_nearby(centre, b, x, y, tolerance)
                {
                    row[x] = SEED;
                }
            }
        });
    }

    /// Two rounds of conditional dilation into weaker spikes.
    fn grow(&mut self, centre: &Plane, fa: &Plane, fb: &Plane, threshold: f32) {
        let (w, h) = (centre.width, centre.height);
        for _ in 0..2 {
            let mask = &self.mask;
            self.grown.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
                // Most rows have no blotch near them: nothing to grow.
                let near = (y.saturating_sub(1)..=(y + 1).min(h - 1))
                    .any(|yy| mask[yy * w..(yy + 1) * w].iter().any(|&m| m != 0));
                if !near {
                    row.fill(0);
                    return;
                }
                for x in 0..w {
                    let here = mask[y * w + x];
                    row[x] = if here != 0 {
                        here
                    } else if touches(mask, w, h, x, y)
                        && is_spike(centre.get(x, y), fa.get(x, y), fb.get(x, y), threshold)
                    {
                        EDGE
                    } else {
                        0
                    };
                }
            });
            std::mem::swap(&mut self.mask, &mut self.grown);
        }
        std::mem::swap(&mut self.mask, &mut self.grown);
    }
}

#[inline]
fn is_spike(c: f32, a: f32, b: f32, threshold: f32) -> bool {
    let (da, db) = (c - a, c - b);
    da * db > 0.0 && da.abs().min(db.abs()) > threshold
}

#[inline]
fn touches(mask: &[u8], w: usize, h: usize, x: usize, y: usize) -> bool {
    let (x0, x1) = (x.saturating_sub(1), (x + 1).min(w - 1));
    let (y0, y1) = (y.saturating_sub(1), (y + 1).min(h - 1));
    (y0..=y1).any(|yy| mask[yy * w + x0..=yy * w + x1].iter().any(|&m| m != 0))
}

/// Whether the 3x3 patch around (x, y) appears in the raw neighbour near where the vectors put
/// it: then it is real content that moved differently from its block, not a blotch.
fn found_nearby(centre: &Plane, n: &Neighbour, x: usize, y: usize, tolerance: f32) -> bool {
    let mut patch = [0.0f32; 9];
    for (i, v) in patch.iter_mut().enumerate() {
        *v = centre.get_clamped(x as isize + (i % 3) as isize - 1, y as isize + (i / 3) as isize - 1);
    }
    // Edges of real objects land on a different sub-pixel phase in the next frame: allow for
    // that in proportion to the patch's own contrast. A blotch core is flat, so stays strict.
    let range = patch.iter().cloned().fold(f32::MIN, f32::max) - patch.iter().cloned().fold(f32::MAX, f32::min);
    let tolerance = tolerance.max(0.2 * range);
    let (vx, vy) = n.field.vector_at(x, y);
    let (cx, cy) = (x as isize + vx as isize, y as isize + vy as isize);
    let r = MOTION_CHECK_RADIUS;
    for sy in -r..=r {
        for sx in -r..=r {
            let mut diff = 0.0;
            for (i, cv) in patch.iter().enumerate() {
                let nv = n.tone.map(
                    n.raw
                        .get_clamped(cx + sx + (i % 3) as isize - 1, cy + sy + (i / 3) as isize - 1),
                );
                diff += (cv - nv).abs();
            }
            if diff / 9.0 < tolerance {
                return true;
            }
        }
    }
    false
}

/// Robust noise level of the centre against its compensated neighbours (median absolute
/// deviation of the temporal residual, on a subsample).
pub fn noise_sigma(centre: &Plane, a: &Plane, b: &Plane) -> f32 {
    let mut hist = [0u32; 256];
    let mut count = 0u32;
    let step = ((centre.data.len() / 50_000).max(1) as f64).sqrt().ceil() as usize;
    for y in (0..centre.height).step_by(step) {
        for x in (0..centre.width).step_by(step) {
            let r = (centre.get(x, y) - 0.5 * (a.get(x, y) + b.get(x, y))).abs();
            hist[((r * 1020.0) as usize).min(255)] += 1;
            count += 1;
        }
    }
    let mut seen = 0;
    for (bin, &n) in hist.iter().enumerate() {
        seen += n;
        if seen * 2 >= count {
            // The residual of three noisy samples has 1.22x the noise of one.
            return (bin as f32 + 0.5) / 1020.0 / 0.6745 / 1.22;
        }
    }
    0.0
}

fn fill(centre: &Plane, fa: &Plane, fb: &Plane, mask: &[u8], sigma: f32, out: &mut Plane) -> usize {
    let w = centre.width;
    let agree = (3.0 * sigma).max(0.06);
    out.data
        .par_chunks_mut(w)
        .enumerate()
        .map(|(y, row)| {
            let mut replaced = 0;
            for x in 0..w {
                if mask[y * w + x] == 0 {
                    continue;
                }
                let (a, b) = (fa.get(x, y), fb.get(x, y));
                row[x] = if (a - b).abs() < agree {
                    0.5 * (a + b)
                } else {
                    median3(a, b, spatial_estimate(centre, mask, x, y).unwrap_or(0.5 * (a + b)))
                };
                replaced += 1;
            }
            replaced
        })
        .sum()
}

/// Mean of the unmasked pixels in the 7x7 window around (x, y).
fn spatial_estimate(p: &Plane, mask: &[u8], x: usize, y: usize) -> Option<f32> {
    let (mut sum, mut n) = (0.0, 0);
    for yy in y.saturating_sub(3)..(y + 4).min(p.height) {
        for xx in x.saturating_sub(3)..(x + 4).min(p.width) {
            if mask[yy * p.width + xx] == 0 {
                sum += p.get(xx, yy);
                n += 1;
            }
        }
    }
    (n > 0).then(|| sum / n as f32)
}

#[inline]
fn median3(a: f32, b: f32, c: f32) -> f32 {
    a.max(b).min(a.min(b).max(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflicker::ToneCorrection;
    use crate::motion::{estimate, Pyramid};

    fn textured(w: usize, h: usize, shift: i32, seed: u32) -> Plane {
        let mut p = Plane::new(w, h);
        let mut s = seed | 1;
        for y in 0..h {
            for x in 0..w {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let xs = x as f32 - shift as f32;
                let v = 0.45
                    + 0.2 * (xs * 0.13).sin() * (y as f32 * 0.11).cos()
                    + 0.01 * ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
                p.set(x, y, v);
            }
        }
        p
    }

    fn run(frames: [&Plane; 3], params: BlotchParams) -> (Plane, usize) {
        let [prev, centre, next] = frames;
        let pyr = |p: &Plane| {
            let mut py = Pyramid::default();
            py.build(p);
            py
        };
        let (pp, pc, pn) = (pyr(prev), pyr(centre), pyr(next));
        let (mut fa, mut fb) = (MotionField::default(), MotionField::default());
        estimate(centre, &pc, prev, &pp, ToneCorrection::IDENTITY, &mut fa);
        estimate(centre, &pc, next, &pn, ToneCorrection::IDENTITY, &mut fb);
        let (mut ca, mut cb) = (
            Plane::new(centre.width, centre.height),
            Plane::new(centre.width, centre.height),
        );
        crate::motion::compensate(prev, &fa, ToneCorrection::IDENTITY, &mut ca);
        crate::motion::compensate(next, &fb, ToneCorrection::IDENTITY, &mut cb);
        let a = Neighbour {
            compensated: &ca,
            raw: prev,
            field: &fa,
            tone: ToneCorrection::IDENTITY,
        };
        let b = Neighbour {
            compensated: &cb,
            raw: next,
            field: &fb,
            tone: ToneCorrection::IDENTITY,
        };
        let mut out = Plane::new(centre.width, centre.height);
        let n = BlotchRemover::new().process(&params, centre, &a, &b, &mut out);
        (out, n)
    }

    #[test]
    fn a_planted_blotch_is_removed_and_little_else_changes() {
        let (prev, clean, next) = (textured(96, 64, -2, 1), textured(96, 64, 0, 2), textured(96, 64, 2, 3));
        let mut centre = clean.clone();
        for y in 30..36 {
            for x in 40..47 {
                centre.set(x, y, 0.02);
            }
        }
        let (out, replaced) = run([&prev, &centre, &next], BlotchParams::default());
        assert!(replaced >= 42, "only {replaced} pixels replaced");
        let blotch_err: f32 = (30..36)
            .flat_map(|y| (40..47).map(move |x| (x, y)))
            .map(|(x, y)| (out.get(x, y) - clean.get(x, y)).abs())
            .sum::<f32>()
            / 42.0;
        assert!(blotch_err < 0.03, "blotch filled with error {blotch_err}");
        assert!(
            replaced < 150,
            "{replaced} pixels replaced: too much of the picture touched"
        );
    }

    #[test]
    fn a_small_fast_moving_square_survives() {
        let mut frames = [textured(96, 64, 0, 1), textured(96, 64, 0, 2), textured(96, 64, 0, 3)];
        // A bright 5x5 square moving 6 px per frame: smaller than a block, so vectors miss it.
        for (i, f) in frames.iter_mut().enumerate() {
            let x0 = 30 + 6 * i;
            for y in 20..25 {
                for x in x0..x0 + 5 {
                    f.set(x, y, 0.95);
                }
            }
        }
        let (out, _) = run([&frames[0], &frames[1], &frames[2]], BlotchParams::default());
        for y in 20..25 {
            for x in 36..41 {
                assert!((out.get(x, y) - 0.95).abs() < 1e-6, "moving square damaged at {x},{y}");
            }
        }
    }

    #[test]
    fn a_flat_static_frame_is_left_alone() {
        let flat = Plane::filled(40, 30, 0.4);
        let (out, replaced) = run([&flat, &flat, &flat], BlotchParams { strength: 1.0 });
        assert_eq!(replaced, 0);
        assert_eq!(out, flat);
    }
}
