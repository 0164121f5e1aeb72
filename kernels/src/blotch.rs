//! Dust and dirt (blotch) removal by motion-compensated spike detection.
//!
//! A blotch lives on one frame only, so its pixels differ from *both* motion-compensated
//! neighbours in the *same* direction (the SDI/ROD family of detectors). Three guards keep real
//! picture content:
//! - the threshold follows the frame's measured noise, so grain is not taken for dust;
//! - a candidate whose 3x3 patch is found nearby in either raw neighbour is real content that
//!   the block vectors did not follow (a small, fast object: a hand, a bird), and is kept;
//! - the mask only grows into pixels that are themselves spikes, at a lower threshold, to take
//!   soft edges without eating into the picture;
//! - a detected region is dropped when the compensated neighbours disagree with each other
//!   inside it, or do not match the centre on a ring around it: there the vectors failed (a
//!   cyclist's shirt opening as he turns) and the "spike" is real content. On the quality set
//!   these false fills were a few hundred pixels a frame, each off by ~60 levels.
//!
//! Detected pixels are filled from the compensated neighbours: their mean where they agree,
//! otherwise the median of the two and a spatial estimate from unmasked pixels around.

use crate::deflicker::ToneCorrection;
use crate::frame::Plane;
use crate::motion::MotionField;
use crate::noise::NoiseProfile;
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
    pub tone: ToneCorrection,
}

/// Search radius (pixels) of the real-motion check around the compensated position.
const MOTION_CHECK_RADIUS: isize = 8;

#[derive(Default)]
pub struct BlotchRemover {
    mask: Vec<u8>,
    grown: Vec<u8>,
    /// Indices of the pixels set in `grown`, for growing and region checks that visit only
    /// those (a frame has a few thousand at most, out of a million).
    members: Vec<usize>,
    /// Flood-fill work space for the surround check, reused frame to frame.
    seen: Vec<bool>,
    stack: Vec<usize>,
    component: Vec<usize>,
}

/// Width of the ring around a detected region that must match the compensated neighbours for
/// the region to count as a blotch, and the gap left between region and ring.
const RING: usize = 2;
const RING_GAP: usize = 1;
/// Mean surround mismatch, in noise sigmas, above which the compensation around a region is
/// not trusted (a deforming or occluding object, not dirt on a well-tracked background).
const RING_SIGMAS: f32 = 2.0;
/// Mean disagreement between the two compensated neighbours inside a region, in noise sigmas,
/// above which they are not showing the same picture (occlusion), so a fill would be a guess.
const AGREE_SIGMAS: f32 = 3.0;

/// The halo round's threshold, relative to the growing threshold.
const HALO: f32 = 0.35;

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
        let sigma = NoiseProfile::measure(centre, a.compensated, b.compensated).sigma();
        self.process_copy(params, centre, a, b, sigma, out)
    }

    /// [`Self::process`] on an `out` that already holds a copy of `centre`, with the noise
    /// level `sigma` already measured ([`NoiseProfile::sigma`] of the centre and the compensated
    /// neighbours): the restorer has both in hand, and each costs a pass over the frame.
    pub fn process_copy(
        &mut self,
        params: &BlotchParams,
        centre: &Plane,
        a: &Neighbour,
        b: &Neighbour,
        sigma: f32,
        out: &mut Plane,
    ) -> usize {
        let n = centre.data.len();
        // No clearing pass over either plane: `detect_seeds` writes every seed byte and
        // `grow` copies them all into `grown`.
        self.grown.resize(n, 0);
        if params.strength <= 0.0 {
            // An empty mask, so that nothing reads the last frame's as this one's.
            self.grown.fill(0);
            return 0;
        }
        self.mask.resize(n, 0);
        // Strength 0.5 asks for a spike of ~5 sigma (and at least 0.06) on both sides.
        let k = 7.0 - 4.0 * params.strength.clamp(0.0, 1.0);
        let threshold = (k * sigma).max(0.10 - 0.08 * params.strength.clamp(0.0, 1.0));
        let match_tolerance = (2.0 * sigma).max(0.025);
        self.detect_seeds(centre, a, b, threshold, match_tolerance);
        self.grow(centre, a.compensated, b.compensated, threshold / 3.0);
        self.drop_untracked_regions(centre, a.compensated, b.compensated, sigma);
        fill(
            centre,
            a.compensated,
            b.compensated,
            &self.grown,
            &self.members,
            sigma,
            out,
        )
    }

    /// The last mask: 0 clean, 1 grown edge, 2 detected core.
    pub fn last_mask(&self) -> &[u8] {
        &self.grown
    }

    fn detect_seeds(&mut self, centre: &Plane, a: &Neighbour, b: &Neighbour, threshold: f32, tolerance: f32) {
        let w = centre.width;
        self.mask.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            let (c, fa, fb) = (centre.row(y), a.compensated.row(y), b.compensated.row(y));
            // The spike test over the whole row first (a straight loop), then the costly
            // real-motion check on the few candidates it leaves.
            spike_row(row, c, fa, fb, threshold);
            for x in 0..w {
                if row[x] != 0 && (found_nearby(centre, a, x, y, tolerance) || found_nearby(centre, b, x, y, tolerance))
                {
                    row[x] = 0;
                }
            }
        });
    }

    /// Clears detected regions whose surround the compensated neighbours do not match either:
    /// there the vectors failed (a hand turning, cloth folding) and the "spike" is real
    /// content, which a fill from the neighbours would wreck. Dirt sits on a picture that is
    /// otherwise well tracked.
    fn drop_untracked_regions(&mut self, centre: &Plane, fa: &Plane, fb: &Plane, sigma: f32) {
        let (w, h) = (centre.width, centre.height);
        // All false between frames: only region pixels, all of them in `members`, are marked,
        // and they are unmarked below (not a clearing pass over the frame).
        self.seen.resize(w * h, false);
        let limit = RING_SIGMAS * sigma + 0.01;
        // In raster order, as a scan of the whole mask would meet the regions: dropping one
        // uncovers its pixels for the surround of the next.
        self.members.sort_unstable();
        for k in 0..self.members.len() {
            let start = self.members[k];
            if self.grown[start] == 0 || self.seen[start] {
                continue;
            }
            let bbox = self.flood(start, w, h);
            let disagree = self
                .component
                .iter()
                .map(|&p| (fa.data[p] - fb.data[p]).abs())
                .sum::<f32>()
                / self.component.len() as f32;
            if disagree > AGREE_SIGMAS * sigma + 0.02 || surround_mismatch(centre, fa, fb, &self.grown, bbox) > limit {
                for &p in &self.component {
                    self.grown[p] = 0;
                }
            }
        }
        for &p in &self.members {
            self.seen[p] = false;
        }
    }

    /// Collects the 8-connected region of `grown` around `start` into `component`; returns its
    /// bounding box `(x0, y0, x1, y1)`, inclusive.
    fn flood(&mut self, start: usize, w: usize, h: usize) -> (usize, usize, usize, usize) {
        self.component.clear();
        self.stack.clear();
        self.stack.push(start);
        self.seen[start] = true;
        let mut bbox = (start % w, start / w, start % w, start / w);
        while let Some(p) = self.stack.pop() {
            self.component.push(p);
            let (x, y) = (p % w, p / w);
            bbox = (bbox.0.min(x), bbox.1.min(y), bbox.2.max(x), bbox.3.max(y));
            for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for xx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let q = yy * w + xx;
                    if self.grown[q] != 0 && !self.seen[q] {
                        self.seen[q] = true;
                        self.stack.push(q);
                    }
                }
            }
        }
        bbox
    }

    /// Conditional dilation into weaker spikes: two rounds at `threshold`, then one into the
    /// faint halo (dust and dirt have soft edges that still differ from both neighbours).
    ///
    /// Each round tests only the 8 neighbours of the pixels the mask held before it, which is
    /// the whole of where a pixel touching the mask can be.
    fn grow(&mut self, centre: &Plane, fa: &Plane, fb: &Plane, threshold: f32) {
        let (w, h) = (centre.width, centre.height);
        self.grown.copy_from_slice(&self.mask);
        self.members.clear();
        // Eight mask bytes at a time: seeds are a few hundred pixels in a million.
        for (chunk_index, chunk) in self.mask.chunks(8).enumerate() {
            let word = match <[u8; 8]>::try_from(chunk) {
                Ok(bytes) => u64::from_ne_bytes(bytes),
                Err(_) => chunk.iter().fold(0, |acc, &m| acc | m as u64),
            };
            if word != 0 {
                let base = chunk_index * 8;
                self.members
                    .extend((0..chunk.len()).filter(|&i| chunk[i] != 0).map(|i| base + i));
            }
        }
        for threshold in [threshold, threshold, HALO * threshold] {
            for k in 0..self.members.len() {
                let p = self.members[k];
                let (x, y) = (p % w, p / w);
                for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for q in yy * w + x.saturating_sub(1)..=yy * w + (x + 1).min(w - 1) {
                        if self.grown[q] == 0 && is_spike(centre.data[q], fa.data[q], fb.data[q], threshold) {
                            self.grown[q] = EDGE;
                            self.members.push(q);
                        }
                    }
                }
            }
        }
    }
}

/// Mean absolute difference between the centre and the compensated neighbours over a
/// rectangular ring `RING_GAP` to `RING_GAP + RING` pixels outside the region's bounding box
/// (the gap skips the blotch's soft halo), leaving out pixels of other detected regions.
fn surround_mismatch(centre: &Plane, fa: &Plane, fb: &Plane, mask: &[u8], bbox: (usize, usize, usize, usize)) -> f32 {
    let (w, h) = (centre.width as isize, centre.height as isize);
    let (bx0, by0, bx1, by1) = (bbox.0 as isize, bbox.1 as isize, bbox.2 as isize, bbox.3 as isize);
    let outer = (RING_GAP + RING) as isize;
    let gap = RING_GAP as isize;
    let (mut sum, mut n) = (0.0f32, 0u32);
    for y in (by0 - outer).max(0)..=(by1 + outer).min(h - 1) {
        let inner_row = y >= by0 - gap && y <= by1 + gap;
        for x in (bx0 - outer).max(0)..=(bx1 + outer).min(w - 1) {
            if inner_row && x >= bx0 - gap && x <= bx1 + gap {
                continue;
            }
            let p = (y * w + x) as usize;
            if mask[p] != 0 {
                continue;
            }
            let c = centre.data[p];
            sum += 0.5 * ((c - fa.data[p]).abs() + (c - fb.data[p]).abs());
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

crate::simd::avx2_twin! {
    /// Marks the row's spikes as seeds.
    fn spike_row(row: &mut [u8], c: &[f32], fa: &[f32], fb: &[f32], threshold: f32) {
        for (((m, &c), &a), &b) in row.iter_mut().zip(c).zip(fa).zip(fb) {
            *m = SEED * is_spike(c, a, b, threshold) as u8;
        }
    }
}

#[inline]
fn is_spike(c: f32, a: f32, b: f32, threshold: f32) -> bool {
    let (da, db) = (c - a, c - b);
    // `&`, not `&&`: both tests always run, so a loop of them vectorises.
    (da * db > 0.0) & (da.abs().min(db.abs()) > threshold)
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
    let limit = 9.0 * tolerance.max(0.2 * range);
    let (vx, vy) = n.field.vector_at(x, y);
    let (cx, cy) = (x as isize + vx as isize, y as isize + vy as isize);
    let reach = MOTION_CHECK_RADIUS + 1;
    let (w, h) = (n.raw.width as isize, n.raw.height as isize);
    if cx - reach >= 0 && cy - reach >= 0 && cx + reach < w && cy + reach < h {
        patch_found(&patch, n.tone, limit, n.raw, cx, cy)
    } else {
        patch_found_clamped(&patch, n.tone, limit, n.raw, cx, cy)
    }
}

/// Positions per row of the real-motion search.
const SPAN: usize = 2 * MOTION_CHECK_RADIUS as usize + 1;

/// Added to the limit before a position is ruled out by [`patch_found`]'s bound: far more than
/// the `f32` rounding of sums of nine values in [0, 1], so a position the bound rules out is one
/// whose exact sum is past the limit too.
const BOUND_MARGIN: f32 = 1e-3;

crate::simd::avx2_twin! {
    /// Whether `patch` matches (summed absolute difference below `limit`) at some position within
    /// `MOTION_CHECK_RADIUS` of (cx, cy) in `raw`, whose search window (and one pixel round it)
    /// lies inside it.
    ///
    /// A row of positions at a time: each patch pixel's differences are added across the row's
    /// positions in one straight loop (vectorised), where a position-by-position scan with an
    /// early exit cost ten times more on real footage. Each position's sum is added in the same
    /// order as the scan's, so the answers are the same (the scan's early exit only ever cuts a
    /// sum that is already past the limit).
    ///
    /// Rows are summed only where a cheap bound leaves a match possible: a position's summed
    /// difference is at least the difference of the two patches' sums (the triangle
    /// inequality), and the neighbour's 3x3 sums cost a tenth of the differences. A blotch
    /// pixel, the usual candidate, differs from everything round it, so most of its rows are
    /// ruled out; rows that are not are summed as before, so the answer is unchanged.
    fn patch_found(patch: &[f32; 9], tone: ToneCorrection, limit: f32, raw: &Plane, cx: isize, cy: isize) -> bool {
        let r = MOTION_CHECK_RADIUS;
        let w = raw.width as isize;
        let patch_sum: f32 = patch.iter().sum();
        // Three-pixel sums along each window row, one row and column beyond the positions.
        let mut across = [[0.0f32; SPAN]; SPAN + 2];
        for (j, sums) in across.iter_mut().enumerate() {
            let start = ((cy - r - 1 + j as isize) * w + cx - r - 1) as usize;
            let src: &[f32; SPAN + 2] = raw.data[start..start + SPAN + 2].try_into().expect("a window row");
            for (k, s) in sums.iter_mut().enumerate() {
                *s = src[k] + src[k + 1] + src[k + 2];
            }
        }
        let reach = limit + BOUND_MARGIN;
        (-r..=r).any(|sy| {
            let j = (sy + r) as usize;
            let mut possible = false;
            for k in 0..SPAN {
                let sum = across[j][k] + across[j + 1][k] + across[j + 2][k];
                possible |= (patch_sum - (tone.gain * sum + 9.0 * tone.offset)).abs() <= reach;
            }
            if !possible {
                return false;
            }
            let mut diff = [0.0f32; SPAN];
            for (i, &cv) in patch.iter().enumerate() {
                let (dx, dy) = ((i % 3) as isize - 1, (i / 3) as isize - 1);
                let start = ((cy + sy + dy) * w + cx - r + dx) as usize;
                let src: &[f32; SPAN] = raw.data[start..start + SPAN].try_into().expect("a window row");
                for (d, &nv) in diff.iter_mut().zip(src) {
                    *d += (cv - tone.map(nv)).abs();
                }
            }
            diff.iter().any(|&d| d < limit)
        })
    }
}

/// [`patch_found`] near the borders, with clamped reads, position by position.
fn patch_found_clamped(patch: &[f32; 9], tone: ToneCorrection, limit: f32, raw: &Plane, cx: isize, cy: isize) -> bool {
    let matches = |sx: isize, sy: isize| {
        let mut diff = 0.0;
        for (i, cv) in patch.iter().enumerate() {
            let (px, py) = (cx + sx + (i % 3) as isize - 1, cy + sy + (i / 3) as isize - 1);
            diff += (cv - tone.map(raw.get_clamped(px, py))).abs();
            if diff >= limit {
                return false;
            }
        }
        diff < limit
    };
    let r = MOTION_CHECK_RADIUS;
    (-r..=r).any(|sy| (-r..=r).any(|sx| matches(sx, sy)))
}

/// Replaces the pixels of `mask` (listed, among others since cleared, in `members`).
fn fill(centre: &Plane, fa: &Plane, fb: &Plane, mask: &[u8], members: &[usize], sigma: f32, out: &mut Plane) -> usize {
    let w = centre.width;
    let agree = (3.0 * sigma).max(0.06);
    let mut replaced = 0;
    for &p in members {
        if mask[p] == 0 {
            continue;
        }
        let (a, b) = (fa.data[p], fb.data[p]);
        out.data[p] = if (a - b).abs() < agree {
            0.5 * (a + b)
        } else {
            median3(
                a,
                b,
                spatial_estimate(centre, mask, p % w, p / w).unwrap_or(0.5 * (a + b)),
            )
        };
        replaced += 1;
    }
    replaced
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
        run_with(&mut BlotchRemover::new(), frames, params)
    }

    fn run_with(remover: &mut BlotchRemover, frames: [&Plane; 3], params: BlotchParams) -> (Plane, usize) {
        let [prev, centre, next] = frames;
        let pyr = |p: &Plane| {
            let mut py = Pyramid::default();
            py.build(p);
            py
        };
        let (pp, pc, pn) = (pyr(prev), pyr(centre), pyr(next));
        let (mut fa, mut fb) = (MotionField::default(), MotionField::default());
        estimate(&pc, &pp, ToneCorrection::IDENTITY, &mut fa);
        estimate(&pc, &pn, ToneCorrection::IDENTITY, &mut fb);
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
        let n = remover.process(&params, centre, &a, &b, &mut out);
        (out, n)
    }

    #[test]
    fn a_reused_remover_answers_as_a_fresh_one() {
        // Its planes are not cleared between frames (every byte is rewritten, the marks of
        // the region search are undone): blotches in different places, a frame size change,
        // and a frame with the stage off must leave nothing behind for the next.
        let blotched = |w: usize, h: usize, x0: usize, level: f32| {
            let frames = [textured(w, h, -2, 1), textured(w, h, 0, 2), textured(w, h, 2, 3)];
            let [prev, mut centre, next] = frames;
            for y in 20..26 {
                for x in x0..x0 + 7 {
                    centre.set(x, y, level);
                }
            }
            [prev, centre, next]
        };
        let off = BlotchParams { strength: 0.0 };
        let cases = [
            (blotched(96, 64, 40, 0.02), BlotchParams::default()),
            (blotched(96, 64, 10, 0.98), BlotchParams::default()),
            (blotched(96, 64, 60, 0.02), off),
            (blotched(80, 72, 50, 0.02), BlotchParams::default()),
            (blotched(96, 64, 40, 0.02), BlotchParams::default()),
        ];
        let mut reused = BlotchRemover::new();
        for (i, ([prev, centre, next], params)) in cases.iter().enumerate() {
            let again = run_with(&mut reused, [prev, centre, next], *params);
            let mut new = BlotchRemover::new();
            let fresh = run_with(&mut new, [prev, centre, next], *params);
            assert!(again == fresh, "frame {i}: the reused remover's output differs");
            assert!(reused.last_mask() == new.last_mask(), "frame {i}: the masks differ");
            assert!(reused.seen.iter().all(|&s| !s), "frame {i}: region marks left");
        }
    }

    /// The real-motion check as first written: clamped reads everywhere.
    fn found_nearby_raster(centre: &Plane, n: &Neighbour, x: usize, y: usize, tolerance: f32) -> bool {
        let mut patch = [0.0f32; 9];
        for (i, v) in patch.iter_mut().enumerate() {
            *v = centre.get_clamped(x as isize + (i % 3) as isize - 1, y as isize + (i / 3) as isize - 1);
        }
        let range = patch.iter().cloned().fold(f32::MIN, f32::max) - patch.iter().cloned().fold(f32::MAX, f32::min);
        let limit = 9.0 * tolerance.max(0.2 * range);
        let (vx, vy) = n.field.vector_at(x, y);
        let (cx, cy) = (x as isize + vx as isize, y as isize + vy as isize);
        let r = MOTION_CHECK_RADIUS;
        (-r..=r).any(|sy| {
            (-r..=r).any(|sx| {
                let mut diff = 0.0;
                for (i, cv) in patch.iter().enumerate() {
                    let (px, py) = (cx + sx + (i % 3) as isize - 1, cy + sy + (i / 3) as isize - 1);
                    diff += (cv - n.tone.map(n.raw.get_clamped(px, py))).abs();
                    if diff >= limit {
                        break;
                    }
                }
                diff < limit
            })
        })
    }

    #[test]
    fn the_direct_read_motion_check_equals_the_clamped_scan() {
        let (prev, mut centre) = (textured(64, 48, 0, 3), textured(64, 48, 2, 5));
        // Content that is not in the neighbour, so some checks fail.
        for y in 10..16 {
            for x in 20..27 {
                centre.set(x, y, 0.95);
            }
        }
        let (mut pp, mut pc) = (Pyramid::default(), Pyramid::default());
        pp.build(&prev);
        pc.build(&centre);
        let mut field = MotionField::default();
        let tone = ToneCorrection {
            gain: 1.05,
            offset: -0.01,
        };
        estimate(&pc, &pp, tone, &mut field);
        let n = Neighbour {
            compensated: &prev,
            raw: &prev,
            field: &field,
            tone,
        };
        let (mut found, mut total) = (0, 0);
        for tolerance in [0.002, 0.01, 0.025] {
            for y in 0..centre.height {
                for x in 0..centre.width {
                    let fast = found_nearby(&centre, &n, x, y, tolerance);
                    assert_eq!(
                        fast,
                        found_nearby_raster(&centre, &n, x, y, tolerance),
                        "{x},{y} at {tolerance}"
                    );
                    found += fast as usize;
                    total += 1;
                }
            }
        }
        assert!(found > 0 && found < total, "{found} of {total}: both answers exercised");
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

    #[test]
    fn a_spike_on_an_untracked_surround_is_real_content_and_kept() {
        // Neighbours show something else around (an occluding object that has moved away in
        // the centre): the bright patch differs from both, but so does everything around it,
        // so the vectors, not the film, are at fault there.
        let bg = textured(96, 64, 0, 5);
        let mut centre = bg.clone();
        for y in 30..34 {
            for x in 40..44 {
                centre.set(x, y, 0.95);
            }
        }
        let occluded = |seed: u32| {
            let mut p = bg.clone();
            let other = textured(96, 64, 7 + seed as i32, seed);
            for y in 24..40 {
                for x in 34..50 {
                    p.set(x, y, other.get(x, y));
                }
            }
            p
        };
        let (prev, next) = (occluded(11), occluded(12));
        let mut field = MotionField::default();
        (field.blocks_x, field.blocks_y) = (12, 8);
        (field.vectors, field.cost) = (vec![(0, 0); 96], vec![0.0; 96]);
        let view = |p| Neighbour {
            compensated: p,
            raw: p,
            field: &field,
            tone: ToneCorrection::IDENTITY,
        };
        let (a, b) = (view(&prev), view(&next));
        let mut out = Plane::new(96, 64);
        BlotchRemover::new().process(&BlotchParams::default(), &centre, &a, &b, &mut out);
        for y in 30..34 {
            for x in 40..44 {
                assert_eq!(out.get(x, y), 0.95, "real content replaced at {x},{y}");
            }
        }
    }
}
