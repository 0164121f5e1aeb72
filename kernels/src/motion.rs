//! Hierarchical block motion estimation and compensation on luma.
//!
//! Vectors are searched coarse to fine on a 2x box pyramid: a full search at the top level,
//! then a ±1 refinement around the parent's (doubled) vector and the zero vector at each finer
//! level. Two choices make it fit old film:
//! - the neighbour is brightness-mapped onto the centre frame first (gain and offset fitted to
//!   their quantiles), so flicker does not pull vectors;
//! - the matching cost is a *truncated* absolute difference, so a blotch (a large difference
//!   on a few pixels) costs no more than ordinary mismatch and cannot attract vectors.
//!
//! Buffers are reused between frames: nothing is allocated once the sizes are known.

use crate::deflicker::ToneCorrection;
use crate::frame::Plane;
use rayon::prelude::*;

/// Block size in pixels at every level.
pub const BLOCK: usize = 8;
/// Full-search radius at the top level, in top-level pixels.
const TOP_SEARCH: i32 = 4;
/// Per-pixel difference above which mismatch stops counting (robust to blotches).
const TRUNCATE: f32 = 0.12;
/// Smallest side of a pyramid level worth searching on.
const MIN_LEVEL_SIDE: usize = 24;

/// A downscaled copy of a luma plane, finest level first (level 0 is the plane itself and is not
/// stored).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pyramid {
    pub levels: Vec<Plane>,
}

impl Pyramid {
    /// Rebuilds the pyramid of `luma`, reusing buffers of the right size.
    pub fn build(&mut self, luma: &Plane) {
        let mut count = 0;
        let (mut w, mut h) = (luma.width, luma.height);
        while w / 2 >= MIN_LEVEL_SIDE && h / 2 >= MIN_LEVEL_SIDE && count < 4 {
            w /= 2;
            h /= 2;
            count += 1;
        }
        self.levels.truncate(count);
        for level in 0..count {
            let (src_w, src_h) = (luma.width >> level, luma.height >> level);
            let (dw, dh) = (src_w / 2, src_h / 2);
            if self.levels.len() <= level {
                self.levels.push(Plane::new(dw, dh));
            } else if (self.levels[level].width, self.levels[level].height) != (dw, dh) {
                self.levels[level] = Plane::new(dw, dh);
            }
            let (before, after) = self.levels.split_at_mut(level);
            let src = if level == 0 { luma } else { &before[level - 1] };
            downsample(src, &mut after[0]);
        }
    }

    /// Level `l` (0 = full resolution `luma`).
    pub fn level<'a>(&'a self, luma: &'a Plane, l: usize) -> &'a Plane {
        if l == 0 {
            luma
        } else {
            &self.levels[l - 1]
        }
    }

    pub fn depth(&self) -> usize {
        self.levels.len() + 1
    }
}

fn downsample(src: &Plane, dst: &mut Plane) {
    let w = dst.width;
    dst.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let (r0, r1) = (src.row(2 * y), src.row(2 * y + 1));
        for (x, v) in row.iter_mut().enumerate() {
            *v = 0.25 * (r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1]);
        }
    });
}

/// One vector per `BLOCK x BLOCK` block of the full-resolution frame, pointing from a centre
/// block to where it is found in the neighbour.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MotionField {
    pub blocks_x: usize,
    pub blocks_y: usize,
    pub vectors: Vec<(i32, i32)>,
    /// Mean truncated absolute difference per pixel of the chosen match (0 = perfect).
    pub cost: Vec<f32>,
    scratch: Vec<(i32, i32)>,
}

impl MotionField {
    #[inline]
    pub fn vector_at(&self, x: usize, y: usize) -> (i32, i32) {
        let bx = (x / BLOCK).min(self.blocks_x - 1);
        let by = (y / BLOCK).min(self.blocks_y - 1);
        self.vectors[by * self.blocks_x + bx]
    }

    #[inline]
    pub fn cost_at(&self, x: usize, y: usize) -> f32 {
        let bx = (x / BLOCK).min(self.blocks_x - 1);
        let by = (y / BLOCK).min(self.blocks_y - 1);
        self.cost[by * self.blocks_x + bx]
    }

    fn resize(&mut self, bx: usize, by: usize) {
        self.blocks_x = bx;
        self.blocks_y = by;
        self.vectors.clear();
        self.vectors.resize(bx * by, (0, 0));
        self.cost.clear();
        self.cost.resize(bx * by, 0.0);
    }
}

/// Estimates the motion from `centre` to `neighbour`. `tone` maps neighbour brightness onto the
/// centre's.
pub fn estimate(
    centre: &Plane,
    centre_pyramid: &Pyramid,
    neighbour: &Plane,
    neighbour_pyramid: &Pyramid,
    tone: ToneCorrection,
    field: &mut MotionField,
) {
    let depth = centre_pyramid.depth().min(neighbour_pyramid.depth());
    let mut parent: Option<(usize, usize)> = None;
    for level in (0..depth).rev() {
        let c = centre_pyramid.level(centre, level);
        let n = neighbour_pyramid.level(neighbour, level);
        let (bx, by) = (c.width.div_ceil(BLOCK), c.height.div_ceil(BLOCK));
        // Keep the coarser field as the predictor while the finer one is filled in.
        std::mem::swap(&mut field.vectors, &mut field.scratch);
        let predictors = std::mem::take(&mut field.scratch);
        field.resize(bx, by);
        let top = parent.is_none();
        let parent_dims = parent;
        field
            .vectors
            .par_chunks_mut(bx)
            .zip(field.cost.par_chunks_mut(bx))
            .enumerate()
            .for_each(|(row, (vectors, costs))| {
                for col in 0..bx {
                    let (x0, y0) = (col * BLOCK, row * BLOCK);
                    let (v, cost) = if top {
                        full_search(c, n, tone, x0, y0)
                    } else {
                        let (pw, ph) = parent_dims.unwrap_or((1, 1));
                        let p = predictors[(row / 2).min(ph - 1) * pw + (col / 2).min(pw - 1)];
                        refine(c, n, tone, x0, y0, (p.0 * 2, p.1 * 2))
                    };
                    vectors[col] = v;
                    costs[col] = cost;
                }
            });
        field.scratch = predictors;
        parent = Some((bx, by));
    }
}

/// Tries `v` against the best so far; ties keep the earlier (shorter) vector so flat areas do
/// not wander.
#[inline]
fn try_vector(
    c: &Plane,
    n: &Plane,
    tone: ToneCorrection,
    x0: usize,
    y0: usize,
    v: (i32, i32),
    best: &mut ((i32, i32), f32),
) {
    let cost = block_cost(c, n, tone, x0, y0, v, best.1);
    if cost < best.1 - 1e-4 {
        *best = (v, cost);
    }
}

fn full_search(c: &Plane, n: &Plane, tone: ToneCorrection, x0: usize, y0: usize) -> ((i32, i32), f32) {
    let mut best = ((0, 0), block_cost(c, n, tone, x0, y0, (0, 0), f32::INFINITY));
    for dy in -TOP_SEARCH..=TOP_SEARCH {
        for dx in -TOP_SEARCH..=TOP_SEARCH {
            try_vector(c, n, tone, x0, y0, (dx, dy), &mut best);
        }
    }
    best
}

/// Small-diamond descent from the predictor (at most a few steps), plus the zero vector
/// (static scenes, film borders).
///
/// Each step revisits the previous centre; a vector already tried is skipped, which cannot
/// change the result: it lost (or was beaten) against a best that has only fallen since.
fn refine(
    c: &Plane,
    n: &Plane,
    tone: ToneCorrection,
    x0: usize,
    y0: usize,
    predictor: (i32, i32),
) -> ((i32, i32), f32) {
    // Predictor, zero, and at most 4 + 3 + 3 diamond points.
    let mut tried = [predictor; 12];
    let mut count = 1;
    let mut best;
    if predictor != (0, 0) {
        // Both in one pass; the zero vector costed without a bound decides as it would with
        // the predictor's cost as its bound (see the diamond step below).
        let both = block_costs(c, n, tone, x0, y0, [predictor, (0, 0)], f32::INFINITY);
        let (p, z) = match both {
            Some([p, z]) => (p, z),
            None => {
                let p = block_cost(c, n, tone, x0, y0, predictor, f32::INFINITY);
                (p, block_cost(c, n, tone, x0, y0, (0, 0), p))
            }
        };
        best = if z < p - 1e-4 { ((0, 0), z) } else { (predictor, p) };
        tried[count] = (0, 0);
        count += 1;
    } else {
        best = (predictor, block_cost(c, n, tone, x0, y0, predictor, f32::INFINITY));
    }
    for _ in 0..3 {
        let centre = best.0;
        let diamond = [(-1, 0), (1, 0), (0, -1), (0, 1)].map(|(dx, dy)| (centre.0 + dx, centre.1 + dy));
        let costs = block_costs(c, n, tone, x0, y0, diamond, best.1);
        for (k, v) in diamond.into_iter().enumerate() {
            if tried[..count].contains(&v) {
                continue;
            }
            // The four were costed against the best at the start of the step, looser than
            // the one-by-one bound; that cannot change a decision: a cost cut short exceeds
            // the looser bound, and one completed where the tighter bound would have cut it
            // short is above that tighter best, so it is turned down all the same.
            let cost = match costs {
                Some(costs) => costs[k],
                None => block_cost(c, n, tone, x0, y0, v, best.1),
            };
            if cost < best.1 - 1e-4 {
                best = (v, cost);
            }
            tried[count] = v;
            count += 1;
        }
        if best.0 == centre {
            break;
        }
    }
    best
}

/// `block_cost` of `N` vectors at once, for a whole block whose matches all lie inside the
/// neighbour (else `None`). Each vector's sum runs in the same order as `block_cost`'s, so the
/// values are the same; the independent sums keep the core busy where one waits on its
/// previous addition.
fn block_costs<const N: usize>(
    c: &Plane,
    n: &Plane,
    tone: ToneCorrection,
    x0: usize,
    y0: usize,
    vs: [(i32, i32); N],
    bound: f32,
) -> Option<[f32; N]> {
    let (x1, y1) = (x0 + BLOCK, y0 + BLOCK);
    let inside = |v: &(i32, i32)| {
        x0 as i32 + v.0 >= 0
            && y0 as i32 + v.1 >= 0
            && x1 as i32 + v.0 <= n.width as i32
            && y1 as i32 + v.1 <= n.height as i32
    };
    if x1 > c.width || y1 > c.height || !vs.iter().all(inside) {
        return None;
    }
    let row_step = if c.height >= 400 { 2 } else { 1 };
    let count = (BLOCK * BLOCK.div_ceil(row_step)) as f32;
    let limit = bound * count;
    let mut sums = [0.0f32; N];
    for y in (y0..y1).step_by(row_step) {
        // A sum past the limit stops growing, as `block_cost` stops its loop.
        let live = sums.map(|s| s <= limit);
        if !live.iter().any(|&l| l) {
            break;
        }
        let crow: &[f32; BLOCK] = c.row(y)[x0..x1].try_into().expect("a whole block row");
        let rows = vs.map(|v| {
            let off = (x0 as i32 + v.0) as usize;
            let row: &[f32; BLOCK] = n.row((y as i32 + v.1) as usize)[off..off + BLOCK]
                .try_into()
                .expect("a whole block row");
            row
        });
        for (x, cv) in crow.iter().enumerate() {
            for k in 0..N {
                if live[k] {
                    sums[k] += (cv - tone.map(rows[k][x])).abs().min(TRUNCATE);
                }
            }
        }
    }
    Some(sums.map(|s| s / count))
}

/// Mean truncated absolute difference between a centre block and the displaced neighbour
/// block; stops early (returning a value >= `bound`) once it cannot beat `bound`.
#[inline]
fn block_cost(c: &Plane, n: &Plane, tone: ToneCorrection, x0: usize, y0: usize, v: (i32, i32), bound: f32) -> f32 {
    let x1 = (x0 + BLOCK).min(c.width);
    let y1 = (y0 + BLOCK).min(c.height);
    // On large planes every other row is enough to rank candidates, at half the cost.
    let row_step = if c.height >= 400 && y1 - y0 == BLOCK { 2 } else { 1 };
    let mut sum = 0.0;
    let inside = x0 as i32 + v.0 >= 0
        && y0 as i32 + v.1 >= 0
        && x1 as i32 + v.0 <= n.width as i32
        && y1 as i32 + v.1 <= n.height as i32;
    let count = ((x1 - x0) * (y1 - y0).div_ceil(row_step)) as f32;
    let limit = bound * count;
    for y in (y0..y1).step_by(row_step) {
        if sum > limit {
            break;
        }
        let crow = c.row(y);
        if inside {
            let nrow = n.row((y as i32 + v.1) as usize);
            let off = (x0 as i32 + v.0) as usize;
            for (cv, nv) in crow[x0..x1].iter().zip(&nrow[off..off + (x1 - x0)]) {
                sum += (cv - tone.map(*nv)).abs().min(TRUNCATE);
            }
        } else {
            for (x, cv) in crow.iter().enumerate().take(x1).skip(x0) {
                let nv = n.get_clamped(x as isize + v.0 as isize, y as isize + v.1 as isize);
                sum += (cv - tone.map(nv)).abs().min(TRUNCATE);
            }
        }
    }
    sum / count
}

/// Writes the neighbour, moved onto the centre by `field` and brightness-mapped by `tone`.
pub fn compensate(neighbour: &Plane, field: &MotionField, tone: ToneCorrection, out: &mut Plane) {
    let (w, h) = (out.width, out.height);
    out.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (bx, run) in row.chunks_mut(BLOCK).enumerate() {
            let x0 = bx * BLOCK;
            let (dx, dy) = field.vector_at(x0, y);
            let (sx, sy) = (x0 as isize + dx as isize, y as isize + dy as isize);
            if sx >= 0 && sy >= 0 && (sx as usize) + run.len() <= w && (sy as usize) < h {
                let src = &neighbour.row(sy as usize)[sx as usize..sx as usize + run.len()];
                for (o, &v) in run.iter_mut().zip(src) {
                    *o = tone.map(v);
                }
            } else {
                for (i, o) in run.iter_mut().enumerate() {
                    *o = tone.map(neighbour.get_clamped(sx + i as isize, sy));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(w: usize, h: usize, shift: (i32, i32), gain: f32) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (x as f32 - shift.0 as f32, y as f32 - shift.1 as f32);
                let v = 0.5 + 0.2 * (sx * 0.21).sin() * (sy * 0.17).cos() + 0.15 * ((sx * 0.05 + sy * 0.09).sin());
                p.set(x, y, (v * gain).clamp(0.0, 1.0));
            }
        }
        p
    }

    fn field_between(c: &Plane, n: &Plane, tone: ToneCorrection) -> MotionField {
        let (mut pc, mut pn) = (Pyramid::default(), Pyramid::default());
        pc.build(c);
        pn.build(n);
        let mut field = MotionField::default();
        estimate(c, &pc, n, &pn, tone, &mut field);
        field
    }

    #[test]
    fn finds_a_global_shift_through_the_pyramid() {
        let c = scene(160, 120, (0, 0), 1.0);
        let n = scene(160, 120, (9, -5), 1.0);
        let field = field_between(&c, &n, ToneCorrection::IDENTITY);
        let interior: Vec<_> = (2..field.blocks_y - 2)
            .flat_map(|by| (2..field.blocks_x - 2).map(move |bx| (bx, by)))
            .map(|(bx, by)| field.vectors[by * field.blocks_x + bx])
            .collect();
        let right = interior.iter().filter(|v| **v == (9, -5)).count();
        assert!(
            right * 10 >= interior.len() * 9,
            "{right} of {} blocks found (9,-5)",
            interior.len()
        );
        let mut out = Plane::new(160, 120);
        compensate(&n, &field, ToneCorrection::IDENTITY, &mut out);
        let err: f32 = (20..100)
            .flat_map(|y| (20..140).map(move |x| (x, y)))
            .map(|(x, y)| (out.get(x, y) - c.get(x, y)).abs())
            .sum();
        assert!(err / (80.0 * 120.0) < 0.01, "compensated frame differs by {err}");
    }

    #[test]
    fn flicker_does_not_pull_vectors_when_mapped() {
        let c = scene(128, 96, (0, 0), 1.0);
        let n = scene(128, 96, (3, 2), 0.8);
        let tone = ToneCorrection {
            gain: 1.25,
            offset: 0.0,
        };
        let field = field_between(&c, &n, tone);
        let centre_block = field.vectors[(field.blocks_y / 2) * field.blocks_x + field.blocks_x / 2];
        assert_eq!(centre_block, (3, 2));
    }

    #[test]
    fn a_blotch_does_not_attract_the_vector() {
        // A blotch in the centre frame, over parts of four blocks, in a static scene.
        let mut c = scene(128, 96, (0, 0), 1.0);
        let n = scene(128, 96, (0, 0), 1.0);
        for y in 36..44 {
            for x in 60..68 {
                c.set(x, y, 0.0);
            }
        }
        let field = field_between(&c, &n, ToneCorrection::IDENTITY);
        for (x, y) in [(60, 36), (67, 36), (60, 43), (67, 43)] {
            assert_eq!(field.vector_at(x, y), (0, 0), "block at {x},{y}");
        }
    }

    /// The diamond descent as first written, re-trying vectors it has already costed.
    fn refine_plain(
        c: &Plane,
        n: &Plane,
        tone: ToneCorrection,
        x0: usize,
        y0: usize,
        p: (i32, i32),
    ) -> ((i32, i32), f32) {
        let mut best = (p, block_cost(c, n, tone, x0, y0, p, f32::INFINITY));
        if p != (0, 0) {
            try_vector(c, n, tone, x0, y0, (0, 0), &mut best);
        }
        for _ in 0..3 {
            let centre = best.0;
            for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                try_vector(c, n, tone, x0, y0, (centre.0 + dx, centre.1 + dy), &mut best);
            }
            if best.0 == centre {
                break;
            }
        }
        best
    }

    #[test]
    fn four_costs_at_once_equal_one_at_a_time() {
        for h in [96, 416] {
            let c = scene(96, h, (0, 0), 1.0);
            let n = scene(96, h, (1, 2), 0.9);
            let tone = ToneCorrection {
                gain: 1.1,
                offset: 0.01,
            };
            let vs = [(0, 0), (1, 2), (-3, 1), (2, -2)];
            for bound in [f32::INFINITY, 0.05, 0.01, 0.001] {
                for y0 in (0..h).step_by(BLOCK) {
                    for x0 in (0..96).step_by(BLOCK) {
                        if let Some(costs) = block_costs(&c, &n, tone, x0, y0, vs, bound) {
                            let one = vs.map(|v| block_cost(&c, &n, tone, x0, y0, v, bound));
                            assert_eq!(costs.map(f32::to_bits), one.map(f32::to_bits));
                        }
                        let pair = [vs[0], vs[2]];
                        if let Some(costs) = block_costs(&c, &n, tone, x0, y0, pair, bound) {
                            let one = pair.map(|v| block_cost(&c, &n, tone, x0, y0, v, bound));
                            assert_eq!(costs.map(f32::to_bits), one.map(f32::to_bits));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn skipping_tried_vectors_does_not_change_the_refinement() {
        // Tall enough for the every-other-row cost, with noise so that the descent wanders.
        let (w, h) = (96, 416);
        let mut c = scene(w, h, (0, 0), 1.0);
        let n = scene(w, h, (2, -3), 0.9);
        let mut s = 7u32;
        for v in c.data.iter_mut() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *v += 0.05 * ((s >> 8) as f32 / (1u32 << 24) as f32);
        }
        let tone = ToneCorrection {
            gain: 1.1,
            offset: 0.01,
        };
        for y0 in (0..h).step_by(BLOCK) {
            for x0 in (0..w).step_by(BLOCK) {
                for p in [(0, 0), (2, -3), (-4, 1), (1, 1)] {
                    assert_eq!(refine(&c, &n, tone, x0, y0, p), refine_plain(&c, &n, tone, x0, y0, p));
                }
            }
        }
    }

    #[test]
    fn tiny_frames_work() {
        let c = Plane::filled(3, 2, 0.5);
        let field = field_between(&c, &c, ToneCorrection::IDENTITY);
        assert_eq!(field.vectors, vec![(0, 0)]);
    }
}
