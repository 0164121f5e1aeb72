//! Hierarchical block motion estimation and compensation on luma.
//!
//! Vectors are searched coarse to fine on a 2x box pyramid: a full search at the top level,
//! then a small-diamond descent from the parent's (doubled) vector and the zero vector at each
//! finer level. Two choices make it fit old film:
//! - the neighbour is brightness-mapped onto the centre frame first (gain and offset fitted to
//!   their quantiles), so flicker does not pull vectors;
//! - the matching cost is a *truncated* absolute difference, so a blotch (a large difference
//!   on a few pixels) costs no more than ordinary mismatch and cannot attract vectors.
//!
//! The search runs on 8-bit copies of the pyramid levels (built with the pyramid, once per
//! frame): a block's cost is then a handful of byte-vector instructions (saturating
//! differences, a minimum for the truncation, `psadbw` for the sum) where the `f32` form took
//! a scalar loop per pixel, and the brightness mapping is one table look-up per pixel of the
//! neighbour instead of one multiply-add per pixel per candidate vector. Eight bits are what
//! MVTools searches on too; the stages that compare pixels keep working in `f32`.
//!
//! Buffers are reused between frames: nothing is allocated once the sizes are known.

use crate::deflicker::{GainField, ToneCorrection};
use crate::frame::Plane;
use crate::simd::avx2_twin;
use rayon::prelude::*;

/// Block size in pixels at every level.
pub const BLOCK: usize = 8;
/// Full-search radius at the top level, in top-level pixels.
const TOP_SEARCH: i32 = 4;
/// Per-pixel difference above which mismatch stops counting (robust to blotches): 0.12 of
/// full scale, in 8-bit levels.
const TRUNCATE: u8 = 31;
/// The small diamond's points around its centre, in the order they are tried.
const DIAMOND: [(i32, i32); 4] = [(-1, 0), (1, 0), (0, -1), (0, 1)];
/// Smallest side of a pyramid level worth searching on.
const MIN_LEVEL_SIDE: usize = 24;

/// An 8-bit plane (0 = black, 255 = white), tightly packed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BytePlane {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl BytePlane {
    fn resize(&mut self, width: usize, height: usize) {
        if (self.width, self.height) != (width, height) {
            *self = BytePlane {
                width,
                height,
                data: vec![0; width * height],
            };
        }
    }

    #[inline]
    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// `src` in 8 bits, rounded.
    fn quantise_from(&mut self, src: &Plane) {
        self.resize(src.width, src.height);
        self.data
            .par_chunks_mut(4096)
            .zip(src.data.par_chunks(4096))
            .for_each(|(dst, src)| quantise_run(dst, src));
    }

    /// `src` through `tone` (on the values as fractions of full scale), back in 8 bits. As
    /// arithmetic rather than a 256-entry table: a table look-up per byte does not vectorise.
    fn map_from(&mut self, src: &BytePlane, tone: ToneCorrection) {
        self.resize(src.width, src.height);
        self.data
            .par_chunks_mut(4096)
            .zip(src.data.par_chunks(4096))
            .for_each(|(dst, src)| map_run(dst, src, tone));
    }
}

avx2_twin! {
    fn map_run(dst: &mut [u8], src: &[u8], tone: ToneCorrection) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = to_byte(tone.map(v as f32 / 255.0));
        }
    }
}

avx2_twin! {
    fn quantise_run(dst: &mut [u8], src: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = to_byte(v);
        }
    }
}

#[inline]
// Not `clamp`: it keeps NaN, which the unchecked conversion must never see.
#[allow(clippy::manual_clamp)]
fn to_byte(v: f32) -> u8 {
    // `max` first: it maps NaN to 0, so the value is always in range for the unchecked
    // conversion, which vectorises where a saturating `as u8` runs four times slower.
    let v = (v * 255.0 + 0.5).max(0.0).min(255.0);
    // SAFETY: v is finite and in [0, 255].
    unsafe { v.to_int_unchecked::<u32>() as u8 }
}

/// A downscaled copy of a luma plane, finest level first (level 0 is the plane itself and is not
/// stored), and every level (level 0 included) in 8 bits for the block search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pyramid {
    pub levels: Vec<Plane>,
    bytes: Vec<BytePlane>,
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
            let (dw, dh) = ((luma.width >> level) / 2, (luma.height >> level) / 2);
            if self.levels.len() <= level {
                self.levels.push(Plane::new(dw, dh));
            } else if (self.levels[level].width, self.levels[level].height) != (dw, dh) {
                self.levels[level] = Plane::new(dw, dh);
            }
        }
        self.bytes.resize_with(count + 1, BytePlane::default);
        if count == 0 {
            self.bytes[0].quantise_from(luma);
            return;
        }
        let (full_bytes, rest) = self.bytes.split_at_mut(1);
        first_level(luma, &mut self.levels[0], &mut full_bytes[0], &mut rest[0]);
        for level in 1..count {
            let (before, after) = self.levels.split_at_mut(level);
            downsample(&before[level - 1], &mut after[0]);
        }
        for level in 2..=count {
            self.bytes[level].quantise_from(&self.levels[level - 1]);
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

/// Rows of the half-size level per job of [`first_level`].
const FIRST_LEVEL_BAND: usize = 8;

/// The half-size level of `luma` and the 8-bit copies of both, in one pass: each job reads
/// its rows of the frame once, for all three (the largest planes of the pyramid, and the
/// frame's only read here), instead of a pass over the frame for each.
fn first_level(luma: &Plane, half: &mut Plane, full_bytes: &mut BytePlane, half_bytes: &mut BytePlane) {
    let (w, hw) = (luma.width, half.width);
    full_bytes.resize(w, luma.height);
    half_bytes.resize(hw, half.height);
    half.data
        .par_chunks_mut(hw * FIRST_LEVEL_BAND)
        .zip(half_bytes.data.par_chunks_mut(hw * FIRST_LEVEL_BAND))
        .zip(full_bytes.data.par_chunks_mut(2 * w * FIRST_LEVEL_BAND))
        .enumerate()
        .for_each(|(band, ((half_rows, half_byte_rows), full_byte_rows))| {
            let rows = half_rows.chunks_exact_mut(hw).zip(half_byte_rows.chunks_exact_mut(hw));
            for (i, (row, row_bytes)) in rows.enumerate() {
                let y = 2 * (band * FIRST_LEVEL_BAND + i);
                let (r0, r1) = (luma.row(y), luma.row(y + 1));
                downsample_row(row, r0, r1);
                quantise_run(row_bytes, row);
                let (b0, b1) = full_byte_rows[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
                quantise_run(b0, r0);
                quantise_run(b1, r1);
            }
        });
    // An odd frame's last row has no pair in the half-size level.
    if luma.height % 2 == 1 {
        let y = luma.height - 1;
        quantise_run(&mut full_bytes.data[y * w..], luma.row(y));
    }
}

fn downsample(src: &Plane, dst: &mut Plane) {
    let w = dst.width;
    dst.data
        .par_chunks_mut(w)
        .enumerate()
        .for_each(|(y, row)| downsample_row(row, src.row(2 * y), src.row(2 * y + 1)));
}

avx2_twin! {
    fn downsample_row(row: &mut [f32], r0: &[f32], r1: &[f32]) {
        for ((v, a), b) in row.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
            *v = 0.25 * (a[0] + a[1] + b[0] + b[1]);
        }
    }
}

/// One vector per `BLOCK x BLOCK` block of the full-resolution frame, pointing from a centre
/// block to where it is found in the neighbour.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MotionField {
    pub blocks_x: usize,
    pub blocks_y: usize,
    pub vectors: Vec<(i32, i32)>,
    /// Mean truncated absolute difference per pixel of the chosen match (0 = perfect), in
    /// units of full scale.
    pub cost: Vec<f32>,
    scratch: Vec<(i32, i32)>,
    /// Each block's zero-vector cost from the last search, and the same sorted (for the
    /// median), reused.
    zero_costs: Vec<f32>,
    sorted_costs: Vec<f32>,
    /// The vectors as searched, which [`prefer_neighbours`] reads while it rewrites them.
    searched: Vec<(i32, i32)>,
    /// The neighbour's 8-bit levels mapped onto the centre's brightness.
    mapped: Vec<BytePlane>,
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

    /// Takes `other`'s vectors and costs, leaving out its search buffers (the mapped
    /// neighbour levels alone are over a megabyte at 720p, which a whole `clone_from` copied).
    pub fn copy_vectors_from(&mut self, other: &MotionField) {
        self.blocks_x = other.blocks_x;
        self.blocks_y = other.blocks_y;
        self.vectors.clone_from(&other.vectors);
        self.cost.clone_from(&other.cost);
    }

    fn resize(&mut self, bx: usize, by: usize) {
        self.blocks_x = bx;
        self.blocks_y = by;
        self.vectors.clear();
        self.vectors.resize(bx * by, (0, 0));
        self.cost.clear();
        self.cost.resize(bx * by, 0.0);
    }

    /// Fills `mapped` with the first `depth` levels of `neighbour` through `tone`.
    fn map_neighbour(&mut self, neighbour: &Pyramid, depth: usize, tone: ToneCorrection) {
        self.mapped.resize_with(depth, BytePlane::default);
        for (dst, src) in self.mapped.iter_mut().zip(&neighbour.bytes) {
            dst.map_from(src, tone);
        }
    }
}

/// Estimates the motion from the frame of `centre` to the frame of `neighbour` (both built
/// with [`Pyramid::build`]). `tone` maps neighbour brightness onto the centre's.
pub fn estimate(centre: &Pyramid, neighbour: &Pyramid, tone: ToneCorrection, field: &mut MotionField) {
    estimate_with(centre, neighbour, tone, field, NEIGHBOUR_PREFERENCE);
}

/// [`estimate`] with the given [`NEIGHBOUR_PREFERENCE`] (the tests compare it with none).
fn estimate_with(
    centre: &Pyramid,
    neighbour: &Pyramid,
    tone: ToneCorrection,
    field: &mut MotionField,
    neighbour_preference: f32,
) {
    let depth = centre.depth().min(neighbour.depth());
    field.map_neighbour(neighbour, depth, tone);
    let mapped = std::mem::take(&mut field.mapped);
    let mut parent: Option<(usize, usize)> = None;
    // The last searched level's typical zero-vector cost ([`typical_zero_cost`]).
    let mut typical = 0.0;
    for level in (0..depth).rev() {
        let search = Search::new(&centre.bytes[level], &mapped[level]);
        let (bx, by) = (search.c.width.div_ceil(BLOCK), search.c.height.div_ceil(BLOCK));
        // Keep the coarser field as the predictor while the finer one is filled in.
        std::mem::swap(&mut field.vectors, &mut field.scratch);
        let predictors = std::mem::take(&mut field.scratch);
        field.resize(bx, by);
        let parent_dims = parent;
        search_blocks(field, &search, |col, row, vectors| match parent_dims {
            None => {
                let (v, cost) = search.full(col * BLOCK, row * BLOCK);
                (v, cost, 0)
            }
            Some((pw, ph)) => {
                let (pc, pr) = ((col / 2).min(pw - 1), (row / 2).min(ph - 1));
                let parent_at = |c: usize, r: usize| {
                    let p = predictors[r * pw + c];
                    (p.0 * 2, p.1 * 2)
                };
                // Besides the parent's vector: the coarse blocks beside the parent nearest this
                // one, and this level's block to the left (already found: a row is searched
                // left to right). Starting the descent from the best of them follows motion
                // boundaries the parent's block straddles (on the quality clips compensation
                // PSNR rose 1.0-1.9 dB at strength 0.5, for a search about a fifth slower).
                let side_c = if col % 2 == 0 {
                    pc.checked_sub(1)
                } else {
                    (pc + 1 < pw).then_some(pc + 1)
                };
                let side_r = if row % 2 == 0 {
                    pr.checked_sub(1)
                } else {
                    (pr + 1 < ph).then_some(pr + 1)
                };
                let others = [
                    side_c.map(|c| parent_at(c, pr)),
                    side_r.map(|r| parent_at(pc, r)),
                    (col > 0).then(|| vectors[col - 1]),
                ];
                let (x0, y0) = (col * BLOCK, row * BLOCK);
                let start = search.best_of(x0, y0, parent_at(pc, pr), &others);
                search.refine_from(x0, y0, start, 3)
            }
        });
        field.scratch = predictors;
        // Below the top level (whose full search has no zero-vector costs to scale by), and
        // before this level's vectors become the next one's predictors.
        if parent_dims.is_some() {
            typical = typical_zero_cost(field);
            prefer_neighbours(field, &search, neighbour_preference * typical);
        }
        parent = Some((bx, by));
    }
    // The finest level is never the top one but on frames too small for a pyramid: those keep
    // their full-search answer.
    if depth > 1 {
        // The finest level's, once: the neighbour preference leaves the zero-vector costs as
        // searched.
        prefer_zero(field, typical);
    }
    field.mapped = mapped;
}

/// How much worse than the best match (as a fraction of the frame's typical mismatch at the
/// zero vector) the zero vector may be and still be taken.
const ZERO_PREFERENCE: f32 = 0.15;

/// Takes the zero vector for each block whose zero-vector cost is within a noise margin of
/// its best match.
///
/// On grain over a flat or static area every vector matches about as well, and the search
/// picks the one where the neighbour's grain happens to resemble the centre's (on a static
/// grainy test scene, fewer than one block in five kept the zero vector). The compensated
/// neighbour then carries a copy of the centre's own grain, which the grain filter cannot
/// average away. The margin follows the frame's typical zero-vector mismatch, so it scales
/// with the grain; real motion on texture beats the zero vector by far more.
///
/// `field.zero_costs` holds each block's zero-vector cost, from the search, and `typical` their
/// median ([`typical_zero_cost`]).
fn prefer_zero(field: &mut MotionField, typical: f32) {
    let margin = ZERO_PREFERENCE * typical;
    for ((v, cost), &zero) in field
        .vectors
        .iter_mut()
        .zip(field.cost.iter_mut())
        .zip(field.zero_costs.iter())
    {
        if zero <= *cost + margin {
            (*v, *cost) = ((0, 0), zero);
        }
    }
}

/// The median of the blocks' zero-vector costs from the last search: the frame's typical
/// mismatch where nothing is moved, which grows with the grain, so margins scaled by it are
/// noise margins.
fn typical_zero_cost(field: &mut MotionField) -> f32 {
    let sorted = &mut field.sorted_costs;
    sorted.clear();
    sorted.extend_from_slice(&field.zero_costs);
    let mid = sorted.len() / 2;
    *sorted.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// How much worse than its own best match (as a fraction of the frame's typical zero-vector
/// mismatch) the vector its neighbourhood agrees on may be and still be taken. Tuned on the
/// 8 grey quality cases, SSIM: 0.9269 without, 0.9295 at 0.2, 0.9297 at 0.3, 0.9295 at 0.4
/// (at the finest level only, 0.9290 at 0.2 and 0.9294 at 0.3).
const NEIGHBOUR_PREFERENCE: f32 = 0.3;

/// Takes, for each block, the component-wise median of its 3x3 neighbourhood's vectors (its
/// own included) where that matches within `margin` of the block's own best (a noise margin:
/// [`NEIGHBOUR_PREFERENCE`] times the level's [`typical_zero_cost`]).
///
/// Under heavy grain a block's cost is noisy enough that a vector a pixel or two off the true
/// one can win by chance: on a still scene at the quality set's strength 1, two blocks in five
/// took a vector other than (0, 0). The grain filter then averages texture a pixel or two out
/// of place. Real motion is coherent over neighbouring blocks, grain's chance winners are not,
/// so the neighbourhood's vector is the better guess wherever the block cannot tell them apart
/// (MVTools' coherence penalty does the same job). A block on a motion boundary keeps its own
/// side: at most three of its eight neighbours lie across, so the median is its side's vector,
/// and where a small object moves on its own the median vector's cost is far above the margin.
/// Every block reads the vectors as searched, so the order of the rows does not matter.
fn prefer_neighbours(field: &mut MotionField, search: &Search, margin: f32) {
    let (bx, by) = (field.blocks_x, field.blocks_y);
    field.searched.clone_from(&field.vectors);
    let searched = &field.searched;
    field
        .vectors
        .par_chunks_mut(bx)
        .zip(field.cost.par_chunks_mut(bx))
        .enumerate()
        .for_each(|(row, (vectors, costs))| {
            for (col, (v, cost)) in vectors.iter_mut().zip(costs.iter_mut()).enumerate() {
                let median = neighbourhood_median(searched, (bx, by), (col, row));
                if median == *v {
                    continue;
                }
                let (x0, y0) = (col * BLOCK, row * BLOCK);
                let median_cost = search.mean(x0, y0, search.cost(x0, y0, median));
                if median_cost <= *cost + margin {
                    (*v, *cost) = (median, median_cost);
                }
            }
        });
}

/// The component-wise median of the vectors of block (`col`, `row`) and its neighbours within
/// the `blocks` grid (fewer at the frame's edges).
fn neighbourhood_median(vectors: &[(i32, i32)], blocks: (usize, usize), (col, row): (usize, usize)) -> (i32, i32) {
    let (bx, by) = blocks;
    if (1..bx - 1).contains(&col) && (1..by - 1).contains(&row) {
        // Three rows of three, each one slice.
        let (mut xs, mut ys) = ([0i32; 9], [0i32; 9]);
        for (k, r) in (row - 1..=row + 1).enumerate() {
            let three: &[(i32, i32); 3] = vectors[r * bx + col - 1..][..3].try_into().unwrap();
            for (j, &(x, y)) in three.iter().enumerate() {
                (xs[3 * k + j], ys[3 * k + j]) = (x, y);
            }
        }
        return (median_of_9(xs), median_of_9(ys));
    }
    let (mut xs, mut ys, mut n) = ([0i32; 9], [0i32; 9], 0);
    for r in row.saturating_sub(1)..(row + 2).min(by) {
        for c in col.saturating_sub(1)..(col + 2).min(bx) {
            (xs[n], ys[n]) = vectors[r * bx + c];
            n += 1;
        }
    }
    let (xs, ys) = (&mut xs[..n], &mut ys[..n]);
    xs.sort_unstable();
    ys.sort_unstable();
    (xs[n / 2], ys[n / 2])
}

/// The median of nine values by a fixed network of 19 compare-exchanges (Paeth's, as in
/// Devillard's `opt_med9`), unrolled on locals: branch-free, where sorting them mispredicts
/// its way through the frame's every block.
fn median_of_9(p: [i32; 9]) -> i32 {
    let [mut p0, mut p1, mut p2, mut p3, mut p4, mut p5, mut p6, mut p7, mut p8] = p;
    macro_rules! sort2 {
        ($a:ident, $b:ident) => {
            ($a, $b) = ($a.min($b), $a.max($b));
        };
    }
    sort2!(p1, p2);
    sort2!(p4, p5);
    sort2!(p7, p8);
    sort2!(p0, p1);
    sort2!(p3, p4);
    sort2!(p6, p7);
    sort2!(p1, p2);
    sort2!(p4, p5);
    sort2!(p7, p8);
    sort2!(p0, p3);
    sort2!(p5, p8);
    sort2!(p4, p7);
    sort2!(p3, p6);
    sort2!(p1, p4);
    sort2!(p2, p5);
    sort2!(p4, p7);
    sort2!(p4, p2);
    sort2!(p6, p4);
    sort2!(p4, p2);
    // Only p4 is wanted; the network leaves the others partly sorted.
    let _ = (p0, p1, p2, p3, p5, p6, p7, p8);
    p4
}

/// Searches every block of `field` (already sized for `search`'s level), rows in parallel:
/// `block(col, row, vectors)` gives a block's vector, its summed cost and the zero vector's,
/// with `vectors` the block row as it stands (left of `col` already searched, from `col` on
/// as before). Stores the vectors, and both costs as means.
fn search_blocks(
    field: &mut MotionField,
    search: &Search,
    block: impl Fn(usize, usize, &[(i32, i32)]) -> ((i32, i32), u32, u32) + Sync,
) {
    let bx = field.blocks_x;
    field.zero_costs.resize(field.vectors.len(), 0.0);
    field
        .vectors
        .par_chunks_mut(bx)
        .zip(field.cost.par_chunks_mut(bx))
        .zip(field.zero_costs.par_chunks_mut(bx))
        .enumerate()
        .for_each(|(row, ((vectors, costs), zeros))| {
            for col in 0..bx {
                let (v, cost, zero) = block(col, row, vectors);
                let (x0, y0) = (col * BLOCK, row * BLOCK);
                vectors[col] = v;
                costs[col] = search.mean(x0, y0, cost);
                zeros[col] = search.mean(x0, y0, zero);
            }
        });
}

/// Refines `field` (vectors from the frame of `centre` to that of `neighbour`, from some other
/// source: chained fields, say) by at most `steps` small-diamond steps at full resolution
/// only, each block starting from its own vector.
pub fn refine(centre: &Pyramid, neighbour: &Pyramid, tone: ToneCorrection, field: &mut MotionField, steps: usize) {
    field.map_neighbour(neighbour, 1, tone);
    let mapped = std::mem::take(&mut field.mapped);
    let search = Search::new(&centre.bytes[0], &mapped[0]);
    search_blocks(field, &search, |col, row, vectors| {
        search.refine_steps(col * BLOCK, row * BLOCK, vectors[col], steps)
    });
    let typical = typical_zero_cost(field);
    prefer_zero(field, typical);
    field.mapped = mapped;
}

/// Vectors two frames on: `first` (this frame to the next) followed, from where each block
/// lands, by `second` (the next frame to the one after). On the block grid of `first`; the
/// cost of each is the sum of the two steps' costs.
pub fn chain(first: &MotionField, second: &MotionField, out: &mut MotionField) {
    out.resize(first.blocks_x, first.blocks_y);
    let half = (BLOCK / 2) as i32;
    for by in 0..first.blocks_y {
        for bx in 0..first.blocks_x {
            let i = by * first.blocks_x + bx;
            let u = first.vectors[i];
            // Where the block's centre lands in the next frame (clamped onto its blocks).
            let lx = (bx as i32 * BLOCK as i32 + half + u.0).max(0) as usize;
            let ly = (by as i32 * BLOCK as i32 + half + u.1).max(0) as usize;
            let v = second.vector_at(lx, ly);
            out.vectors[i] = (u.0 + v.0, u.1 + v.1);
            out.cost[i] = first.cost[i] + second.cost_at(lx, ly);
        }
    }
}

/// Motion between a frame and its immediate neighbours in the stream, estimated as frames
/// arrive (each pair of consecutive frames once each way) and kept with the pooled frame, so
/// that its buffers are reused and every stage of the next frames can read it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameMotion {
    /// Vectors from this frame to the previous one, when `has_prev`.
    pub to_prev: MotionField,
    /// Vectors from this frame to the next one, when `has_next`.
    pub to_next: MotionField,
    pub has_prev: bool,
    pub has_next: bool,
}

impl FrameMotion {
    /// Forgets both fields (the frame is new, or its neighbours are gone).
    pub fn clear(&mut self) {
        self.has_prev = false;
        self.has_next = false;
    }

    /// The field towards the neighbour one frame away on side `step` (-1 or 1), if known.
    pub fn towards(&self, step: isize) -> Option<&MotionField> {
        match step {
            -1 => self.has_prev.then_some(&self.to_prev),
            1 => self.has_next.then_some(&self.to_next),
            _ => None,
        }
    }
}

/// One level's block search: the centre level and the brightness-mapped neighbour level.
struct Search<'a> {
    c: &'a BytePlane,
    n: &'a BytePlane,
    /// On large levels every other row is enough to rank candidates, at half the cost.
    row_step: usize,
}

impl<'a> Search<'a> {
    fn new(c: &'a BytePlane, n: &'a BytePlane) -> Self {
        let row_step = if c.height >= 400 { 2 } else { 1 };
        Search { c, n, row_step }
    }

    /// Rows a block at `y0` is costed on, and its columns.
    fn extent(&self, x0: usize, y0: usize) -> (usize, usize) {
        let cols = BLOCK.min(self.c.width - x0);
        let rows = BLOCK.min(self.c.height - y0);
        let step = if rows == BLOCK { self.row_step } else { 1 };
        (cols, rows.div_ceil(step))
    }

    /// The summed cost as a mean per pixel, in units of full scale.
    fn mean(&self, x0: usize, y0: usize, sum: u32) -> f32 {
        let (cols, rows) = self.extent(x0, y0);
        sum as f32 / (255 * cols * rows) as f32
    }

    fn full(&self, x0: usize, y0: usize) -> ((i32, i32), u32) {
        let mut best = ((0, 0), self.cost(x0, y0, (0, 0)));
        for dy in -TOP_SEARCH..=TOP_SEARCH {
            for dx in -TOP_SEARCH..=TOP_SEARCH {
                let cost = self.cost(x0, y0, (dx, dy));
                // Ties keep the earlier (shorter) vector so flat areas do not wander.
                if cost < best.1 {
                    best = ((dx, dy), cost);
                }
            }
        }
        best
    }

    /// Small-diamond descent from the predictor (at most three steps), plus the zero vector
    /// (static scenes, film borders).
    #[cfg(test)]
    fn refine(&self, x0: usize, y0: usize, predictor: (i32, i32)) -> ((i32, i32), u32) {
        let (v, cost, _) = self.refine_steps(x0, y0, predictor, 3);
        (v, cost)
    }

    /// [`Self::refine`] with at most `steps` steps, also returning the zero vector's cost.
    fn refine_steps(&self, x0: usize, y0: usize, predictor: (i32, i32), steps: usize) -> ((i32, i32), u32, u32) {
        self.refine_from(x0, y0, (predictor, self.cost(x0, y0, predictor)), steps)
    }

    /// [`Self::refine_steps`] from a predictor whose cost is known. Each step costs the four
    /// diamond points together ([`Self::diamond`]), those already tried included: a vector
    /// tried before lost against a best that has only fallen since, so with ties keeping the
    /// earlier it cannot win again, and the answer is that of costing only the new ones.
    fn refine_from(&self, x0: usize, y0: usize, predictor: ((i32, i32), u32), steps: usize) -> ((i32, i32), u32, u32) {
        let mut best = predictor;
        let mut zero = best.1;
        if predictor.0 != (0, 0) {
            zero = self.cost(x0, y0, (0, 0));
            if zero < best.1 {
                best = ((0, 0), zero);
            }
        }
        for _ in 0..steps {
            let centre = best.0;
            for (v, cost) in DIAMOND.iter().zip(self.diamond(x0, y0, centre)) {
                if cost < best.1 {
                    best = ((centre.0 + v.0, centre.1 + v.1), cost);
                }
            }
            if best.0 == centre {
                break;
            }
        }
        (best.0, best.1, zero)
    }

    /// The costs of the four [`DIAMOND`] points around `centre`.
    #[inline]
    fn diamond(&self, x0: usize, y0: usize, centre: (i32, i32)) -> [u32; 4] {
        let (c, n) = (self.c, self.n);
        let whole = x0 + BLOCK <= c.width && y0 + BLOCK <= c.height;
        let (sx, sy) = (x0 as isize + centre.0 as isize, y0 as isize + centre.1 as isize);
        // Every point's block lies inside the neighbour: one pixel of margin all round.
        let inside = sx >= 1 && sy >= 1 && sx as usize + BLOCK < n.width && sy as usize + BLOCK < n.height;
        if whole && inside {
            let c_at = y0 * c.width + x0;
            let n_at = sy as usize * n.width + sx as usize;
            sad_diamond(&c.data, c.width, c_at, &n.data, n.width, n_at, self.row_step)
        } else {
            DIAMOND.map(|v| self.cost(x0, y0, (centre.0 + v.0, centre.1 + v.1)))
        }
    }

    /// The cheapest of `first` and the `others` given (a tie keeps the earlier), with its cost.
    /// A vector equal to one already costed is not costed again.
    fn best_of(&self, x0: usize, y0: usize, first: (i32, i32), others: &[Option<(i32, i32)>; 3]) -> ((i32, i32), u32) {
        let mut best = (first, self.cost(x0, y0, first));
        let mut tried = [first; 4];
        for (i, &v) in others.iter().enumerate() {
            let Some(v) = v else { continue };
            if !tried[..=i].contains(&v) {
                tried[i + 1] = v;
                let cost = self.cost(x0, y0, v);
                if cost < best.1 {
                    best = (v, cost);
                }
            }
        }
        best
    }

    /// Summed truncated absolute difference between the centre block at (x0, y0) and the
    /// neighbour block displaced by `v` (border pixels replicated).
    #[inline]
    fn cost(&self, x0: usize, y0: usize, v: (i32, i32)) -> u32 {
        let (c, n) = (self.c, self.n);
        let whole = x0 + BLOCK <= c.width && y0 + BLOCK <= c.height;
        let (sx, sy) = (x0 as isize + v.0 as isize, y0 as isize + v.1 as isize);
        let inside = sx >= 0 && sy >= 0 && sx as usize + BLOCK <= n.width && sy as usize + BLOCK <= n.height;
        if whole && inside {
            let c_at = y0 * c.width + x0;
            let n_at = sy as usize * n.width + sx as usize;
            sad_block(&c.data, c.width, c_at, &n.data, n.width, n_at, self.row_step)
        } else {
            self.cost_clamped(x0, y0, v)
        }
    }

    fn cost_clamped(&self, x0: usize, y0: usize, v: (i32, i32)) -> u32 {
        let (c, n) = (self.c, self.n);
        let (cols, y1) = (BLOCK.min(c.width - x0), (y0 + BLOCK).min(c.height));
        let step = if y1 - y0 == BLOCK { self.row_step } else { 1 };
        // The neighbour's columns for this block, clamped once rather than per pixel.
        let mut xs = [0usize; BLOCK];
        for (i, x) in xs.iter_mut().enumerate().take(cols) {
            *x = (x0 as isize + i as isize + v.0 as isize).clamp(0, n.width as isize - 1) as usize;
        }
        if cols == BLOCK && y1 - y0 == BLOCK {
            // A whole block: gather the clamped neighbour block, then the vector SAD on it
            // (the same pixel pairs, so the same sum).
            let mut block = [0u8; BLOCK * BLOCK];
            for (r, dst) in block.chunks_exact_mut(BLOCK).enumerate().step_by(step) {
                let ny = ((y0 + r) as isize + v.1 as isize).clamp(0, n.height as isize - 1) as usize;
                let nrow = n.row(ny);
                for (d, &x) in dst.iter_mut().zip(&xs) {
                    *d = nrow[x];
                }
            }
            return sad_block(&c.data, c.width, y0 * c.width + x0, &block, BLOCK, 0, step);
        }
        let mut sum = 0;
        for y in (y0..y1).step_by(step) {
            let ny = (y as isize + v.1 as isize).clamp(0, n.height as isize - 1) as usize;
            let (crow, nrow) = (&c.row(y)[x0..x0 + cols], n.row(ny));
            for (&cv, &x) in crow.iter().zip(&xs) {
                sum += cv.abs_diff(nrow[x]).min(TRUNCATE) as u32;
            }
        }
        sum
    }
}

/// Truncated SAD of an 8x8 block (every `row_step`-th row) at `c_at` in `c` (row length
/// `cw`) against the one at `n_at` in `n` (row length `nw`). Both blocks must lie inside
/// their planes.
#[inline]
fn sad_block(c: &[u8], cw: usize, c_at: usize, n: &[u8], nw: usize, n_at: usize, row_step: usize) -> u32 {
    let [sum] = sad_blocks(c, cw, c_at, n, nw, [n_at], row_step);
    sum
}

/// The truncated SADs of the 8x8 block at `c_at` against the four [`DIAMOND`] points around
/// `n_at`, whose blocks must all lie inside `n`: [`sad_block`] four times, the centre block
/// read once and the four sums accumulated side by side (two to a register with AVX2).
#[inline]
fn sad_diamond(c: &[u8], cw: usize, c_at: usize, n: &[u8], nw: usize, n_at: usize, row_step: usize) -> [u32; 4] {
    let ats = DIAMOND.map(|(dx, dy)| (n_at as isize + dy as isize * nw as isize + dx as isize) as usize);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        assert_blocks_inside(c, cw, c_at, n, nw, &ats);
        // SAFETY: the CPU has AVX2 (checked at run time); every load is inside the slices
        // (asserted above).
        return unsafe { sad_diamond_avx2(c, cw, c_at, n, nw, ats, row_step) };
    }
    sad_blocks(c, cw, c_at, n, nw, ats, row_step)
}

/// [`sad_block`] of the centre block against each of the neighbour blocks at `ats`.
#[inline]
fn sad_blocks<const N: usize>(
    c: &[u8],
    cw: usize,
    c_at: usize,
    n: &[u8],
    nw: usize,
    ats: [usize; N],
    row_step: usize,
) -> [u32; N] {
    assert_blocks_inside(c, cw, c_at, n, nw, &ats);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of x86_64; every load is inside the slices (asserted above).
        unsafe { sad_blocks_sse2(c, cw, c_at, n, nw, ats, row_step) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        ats.map(|at| sad_block_scalar(c, cw, c_at, n, nw, at, row_step))
    }
}

/// The unsafe loads read 8 bytes at the start of each block row: checks that the last row of
/// the centre block and of every neighbour block ends inside its plane (an offset computed
/// below zero wraps to a huge one, so this bounds both ends).
#[inline]
fn assert_blocks_inside(c: &[u8], cw: usize, c_at: usize, n: &[u8], nw: usize, ats: &[usize]) {
    let last_row = |at: usize, w: usize| at.checked_add((BLOCK - 1) * w + BLOCK);
    assert!(last_row(c_at, cw).is_some_and(|end| end <= c.len()));
    assert!(ats.iter().all(|&at| last_row(at, nw).is_some_and(|end| end <= n.len())));
}

/// The portable form of [`sad_block`], and its twin in the tests.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn sad_block_scalar(c: &[u8], cw: usize, c_at: usize, n: &[u8], nw: usize, n_at: usize, row_step: usize) -> u32 {
    (0..BLOCK)
        .step_by(row_step)
        .map(|r| {
            let (cr, nr) = (&c[c_at + r * cw..][..BLOCK], &n[n_at + r * nw..][..BLOCK]);
            cr.iter()
                .zip(nr)
                .map(|(&a, &b)| a.abs_diff(b).min(TRUNCATE) as u32)
                .sum::<u32>()
        })
        .sum()
}

/// Block rows `r` and `r + row_step` of the block at `at` (row length `w`) in one 16-byte
/// register. The caller guarantees both rows' 8 bytes lie inside the plane behind `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_row_pair(p: *const u8, at: usize, w: usize, r: usize, row_step: usize) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    let first = _mm_loadl_epi64(p.add(at + r * w) as *const __m128i);
    let second = _mm_loadl_epi64(p.add(at + (r + row_step) * w) as *const __m128i);
    _mm_unpacklo_epi64(first, second)
}

/// Two block rows per 16-byte register: |a - b| as the OR of both saturating differences,
/// truncated by an unsigned minimum, summed by `psadbw`; the centre's rows read once for all
/// `N` neighbour blocks, whose sums are kept side by side.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn sad_blocks_sse2<const N: usize>(
    c: &[u8],
    cw: usize,
    c_at: usize,
    n: &[u8],
    nw: usize,
    ats: [usize; N],
    row_step: usize,
) -> [u32; N] {
    use std::arch::x86_64::*;
    let truncate = _mm_set1_epi8(TRUNCATE as i8);
    let zero = _mm_setzero_si128();
    let mut acc = [_mm_setzero_si128(); N];
    let (cp, np) = (c.as_ptr(), n.as_ptr());
    let mut r = 0;
    while r < BLOCK {
        let a = load_row_pair(cp, c_at, cw, r, row_step);
        for (acc, &at) in acc.iter_mut().zip(&ats) {
            let b = load_row_pair(np, at, nw, r, row_step);
            let diff = _mm_or_si128(_mm_subs_epu8(a, b), _mm_subs_epu8(b, a));
            *acc = _mm_add_epi64(*acc, _mm_sad_epu8(_mm_min_epu8(diff, truncate), zero));
        }
        r += 2 * row_step;
    }
    acc.map(|acc| (_mm_cvtsi128_si32(acc) + _mm_cvtsi128_si32(_mm_srli_si128(acc, 8))) as u32)
}

/// [`sad_blocks_sse2`] for the four diamond points, two points to a 256-bit register: the
/// same byte differences and sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sad_diamond_avx2(
    c: &[u8],
    cw: usize,
    c_at: usize,
    n: &[u8],
    nw: usize,
    ats: [usize; 4],
    row_step: usize,
) -> [u32; 4] {
    use std::arch::x86_64::*;
    let truncate = _mm256_set1_epi8(TRUNCATE as i8);
    let zero = _mm256_setzero_si256();
    let mut acc = [_mm256_setzero_si256(); 2];
    let (cp, np) = (c.as_ptr(), n.as_ptr());
    let mut r = 0;
    while r < BLOCK {
        let a = _mm256_broadcastsi128_si256(load_row_pair(cp, c_at, cw, r, row_step));
        for (k, acc) in acc.iter_mut().enumerate() {
            let b = _mm256_set_m128i(
                load_row_pair(np, ats[2 * k + 1], nw, r, row_step),
                load_row_pair(np, ats[2 * k], nw, r, row_step),
            );
            let diff = _mm256_or_si256(_mm256_subs_epu8(a, b), _mm256_subs_epu8(b, a));
            *acc = _mm256_add_epi64(*acc, _mm256_sad_epu8(_mm256_min_epu8(diff, truncate), zero));
        }
        r += 2 * row_step;
    }
    let mut lanes = [[0u64; 4]; 2];
    for (lane, acc) in lanes.iter_mut().zip(acc) {
        _mm256_storeu_si256(lane.as_mut_ptr() as *mut __m256i, acc);
    }
    [
        (lanes[0][0] + lanes[0][1]) as u32,
        (lanes[0][2] + lanes[0][3]) as u32,
        (lanes[1][0] + lanes[1][1]) as u32,
        (lanes[1][2] + lanes[1][3]) as u32,
    ]
}

/// Writes the neighbour, moved onto the centre by `field` and brightness-mapped by `tone`.
///
/// Block by block (eight rows of one block, then the next block), so each block's source rows
/// are read together: going row by row across blocks whose vectors differ jumps between
/// source rows at every block, which measured four times slower on grainy footage.
pub fn compensate(neighbour: &Plane, field: &MotionField, tone: ToneCorrection, out: &mut Plane) {
    compensate_lit(neighbour, field, tone, None, out);
}

/// [`compensate`], then the regional `light` over it ([`GainField::apply`]) where given, each
/// block row lit as soon as it is made, while in cache: the same values as the two passes.
pub fn compensate_lit(
    neighbour: &Plane,
    field: &MotionField,
    tone: ToneCorrection,
    light: Option<&GainField>,
    out: &mut Plane,
) {
    let (w, h) = (out.width, out.height);
    out.data.par_chunks_mut(w * BLOCK).enumerate().for_each(|(by, band)| {
        let vectors = &field.vectors[by.min(field.blocks_y - 1) * field.blocks_x..][..field.blocks_x];
        compensate_band(neighbour, vectors, tone, by * BLOCK, band);
        if let Some(light) = light {
            light.apply_rows((w, h), by * BLOCK, ToneCorrection::IDENTITY, band);
        }
    });
}

avx2_twin! {
    /// [`compensate`] of the block row starting at row `y0` (`band`, whole rows), with that
    /// block row's `vectors`.
    fn compensate_band(neighbour: &Plane, vectors: &[(i32, i32)], tone: ToneCorrection, y0: usize, band: &mut [f32]) {
        let (w, h) = (neighbour.width, neighbour.height);
        let rows = band.len() / w;
        for x0 in (0..w).step_by(BLOCK) {
            let v = vectors[(x0 / BLOCK).min(vectors.len() - 1)];
            let (sx, sy) = (x0 as isize + v.0 as isize, y0 as isize + v.1 as isize);
            let whole = x0 + BLOCK <= w && sx >= 0 && sy >= 0 && sx as usize + BLOCK <= w && sy as usize + rows <= h;
            for r in 0..rows {
                let dst = &mut band[r * w + x0..r * w + (x0 + BLOCK).min(w)];
                if whole {
                    let at = (sy as usize + r) * w + sx as usize;
                    let src: &[f32; BLOCK] = neighbour.data[at..at + BLOCK].try_into().expect("a block row");
                    let dst: &mut [f32; BLOCK] = dst.try_into().expect("a block row");
                    for (o, &s) in dst.iter_mut().zip(src) {
                        *o = tone.map(s);
                    }
                } else {
                    copy_clamped(neighbour, tone, sx, sy + r as isize, dst);
                }
            }
        }
    }
}

/// A block row of the neighbour from (sx, sy) on, read with clamping.
fn copy_clamped(neighbour: &Plane, tone: ToneCorrection, sx: isize, sy: isize, run: &mut [f32]) {
    for (i, o) in run.iter_mut().enumerate() {
        *o = tone.map(neighbour.get_clamped(sx + i as isize, sy));
    }
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
        estimate(&pc, &pn, tone, &mut field);
        field
    }

    /// Each level halved from the one before, then every level quantised: the passes one
    /// after the other, which the fused first level must equal.
    fn pyramid_by_passes(luma: &Plane, count: usize) -> (Vec<Plane>, Vec<BytePlane>) {
        let mut levels: Vec<Plane> = Vec::new();
        for level in 0..count {
            let src = if level == 0 { luma } else { &levels[level - 1] };
            let mut dst = Plane::new(src.width / 2, src.height / 2);
            downsample(src, &mut dst);
            levels.push(dst);
        }
        let bytes = std::iter::once(luma)
            .chain(&levels)
            .map(|plane| {
                let mut b = BytePlane::default();
                b.quantise_from(plane);
                b
            })
            .collect();
        (levels, bytes)
    }

    #[test]
    fn the_fused_pyramid_equals_the_passes_one_after_the_other() {
        // Even and odd sizes, a band count that divides the rows and one that does not, a
        // frame too small for any level; rebuilt at a new size after a first one.
        let mut pyramid = Pyramid::default();
        for (w, h, count) in [(160, 128, 2), (203, 141, 2), (1280, 720, 4), (97, 16, 0), (641, 273, 3)] {
            let luma = scene(w, h, (3, 1), 1.0);
            pyramid.build(&luma);
            let (levels, bytes) = pyramid_by_passes(&luma, count);
            // Not `assert_eq!`: a failure would print whole planes.
            assert_eq!(pyramid.depth(), count + 1, "{w}x{h}");
            assert!(pyramid.levels == levels, "{w}x{h}: levels differ");
            assert!(pyramid.bytes == bytes, "{w}x{h}: 8-bit levels differ");
        }
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
    fn refine_plain(s: &Search, x0: usize, y0: usize, p: (i32, i32)) -> ((i32, i32), u32) {
        let mut best = (p, s.cost(x0, y0, p));
        let try_vector = |v: (i32, i32), best: &mut ((i32, i32), u32)| {
            let cost = s.cost(x0, y0, v);
            if cost < best.1 {
                *best = (v, cost);
            }
        };
        if p != (0, 0) {
            try_vector((0, 0), &mut best);
        }
        for _ in 0..3 {
            let centre = best.0;
            for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                try_vector((centre.0 + dx, centre.1 + dy), &mut best);
            }
            if best.0 == centre {
                break;
            }
        }
        best
    }

    /// A textured plane with seeded noise, in 8 bits.
    fn noisy_bytes(w: usize, h: usize, shift: (i32, i32), seed: u32) -> BytePlane {
        let mut p = scene(w, h, shift, 0.9);
        let mut s = seed | 1;
        for v in p.data.iter_mut() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *v = (*v + 0.3 * ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5)).clamp(0.0, 1.0);
        }
        let mut b = BytePlane::default();
        b.quantise_from(&p);
        b
    }

    #[test]
    fn the_vector_sad_equals_the_scalar_twin() {
        // Differences above and below the truncation, every row step, blocks at odd offsets.
        let (w, h) = (37, 29);
        let (c, n) = (noisy_bytes(w, h, (0, 0), 3), noisy_bytes(w, h, (2, 1), 11));
        let mut compared = 0;
        for row_step in [1, 2] {
            for (cy, cx, ny, nx) in [(0, 0, 0, 0), (3, 5, 7, 1), (21, 29, 20, 28), (13, 2, 0, 17)] {
                let (c_at, n_at) = (cy * w + cx, ny * w + nx);
                let fast = sad_block(&c.data, w, c_at, &n.data, w, n_at, row_step);
                let plain = sad_block_scalar(&c.data, w, c_at, &n.data, w, n_at, row_step);
                assert_eq!(fast, plain, "row step {row_step}, block at {cx},{cy} against {nx},{ny}");
                assert!(plain > 0);
                compared += 1;
            }
        }
        assert_eq!(compared, 8);
    }

    #[test]
    fn the_diamond_and_border_costs_equal_the_pixel_by_pixel_sum() {
        // Every block of a small plane, vectors reaching past every border, both row steps:
        // the four-at-once diamond and the clamped border cost against the sum written out.
        let (w, h) = (43, 35);
        let (c, n) = (noisy_bytes(w, h, (0, 0), 5), noisy_bytes(w, h, (1, 2), 13));
        let plain = |s: &Search, x0: usize, y0: usize, v: (i32, i32)| -> u32 {
            let (x1, y1) = ((x0 + BLOCK).min(w), (y0 + BLOCK).min(h));
            let step = if y1 - y0 == BLOCK { s.row_step } else { 1 };
            let mut sum = 0;
            for y in (y0..y1).step_by(step) {
                for x in x0..x1 {
                    let nx = (x as i32 + v.0).clamp(0, w as i32 - 1) as usize;
                    let ny = (y as i32 + v.1).clamp(0, h as i32 - 1) as usize;
                    sum += c.data[y * w + x].abs_diff(n.data[ny * w + nx]).min(TRUNCATE) as u32;
                }
            }
            sum
        };
        let mut fast_diamonds = 0;
        for row_step in [1, 2] {
            let s = Search { c: &c, n: &n, row_step };
            for y0 in (0..h).step_by(BLOCK) {
                for x0 in (0..w).step_by(BLOCK) {
                    for centre in [(0, 0), (-3, 2), (5, -6), (-40, 0), (2, 30), (1, 1)] {
                        let want = DIAMOND.map(|d| plain(&s, x0, y0, (centre.0 + d.0, centre.1 + d.1)));
                        assert_eq!(
                            s.diamond(x0, y0, centre),
                            want,
                            "block {x0},{y0} round {centre:?}, step {row_step}"
                        );
                        assert_eq!(s.cost(x0, y0, centre), plain(&s, x0, y0, centre));
                        let (sx, sy) = (x0 as i32 + centre.0, y0 as i32 + centre.1);
                        let fast = x0 + BLOCK <= w
                            && y0 + BLOCK <= h
                            && sx >= 1
                            && sy >= 1
                            && sx as usize + BLOCK < w
                            && sy as usize + BLOCK < h;
                        #[cfg(target_arch = "x86_64")]
                        if fast {
                            // Both vector forms, whichever the machine picks above.
                            let ats = DIAMOND.map(|d| (sy + d.1) as usize * w + (sx + d.0) as usize);
                            let c_at = y0 * w + x0;
                            // SAFETY: the blocks are inside (`fast`); SSE2 is part of x86_64.
                            let sse2 = unsafe { sad_blocks_sse2(&c.data, w, c_at, &n.data, w, ats, row_step) };
                            assert_eq!(sse2, want);
                            if crate::simd::avx2() {
                                // SAFETY: as above, and the CPU has AVX2.
                                let avx2 = unsafe { sad_diamond_avx2(&c.data, w, c_at, &n.data, w, ats, row_step) };
                                assert_eq!(avx2, want);
                            }
                        }
                        fast_diamonds += fast as usize;
                    }
                }
            }
        }
        assert!(
            fast_diamonds > 20,
            "only {fast_diamonds} diamonds took the four-at-once path"
        );
    }

    #[test]
    fn the_cost_truncates_large_differences() {
        let black = BytePlane {
            width: 8,
            height: 8,
            data: vec![0; 64],
        };
        let white = BytePlane {
            data: vec![255; 64],
            ..black.clone()
        };
        let s = Search::new(&black, &white);
        assert_eq!(s.cost(0, 0, (0, 0)), 64 * TRUNCATE as u32);
        assert!((s.mean(0, 0, s.cost(0, 0, (0, 0))) - TRUNCATE as f32 / 255.0).abs() < 1e-6);
        assert_eq!(Search::new(&black, &black).cost(0, 0, (3, -2)), 0);
    }

    #[test]
    fn skipping_tried_vectors_does_not_change_the_refinement() {
        // Tall enough for the every-other-row cost, with noise so that the descent wanders.
        let (w, h) = (96, 416);
        let (c, n) = (noisy_bytes(w, h, (0, 0), 7), noisy_bytes(w, h, (2, -3), 9));
        let s = Search::new(&c, &n);
        assert_eq!(s.row_step, 2);
        for y0 in (0..h).step_by(BLOCK) {
            for x0 in (0..w).step_by(BLOCK) {
                for p in [(0, 0), (2, -3), (-4, 1), (1, 1)] {
                    assert_eq!(s.refine(x0, y0, p), refine_plain(&s, x0, y0, p));
                }
            }
        }
    }

    #[test]
    fn chained_vectors_add_and_a_refine_keeps_a_right_answer() {
        let (a, b, c) = (
            scene(160, 120, (0, 0), 1.0),
            scene(160, 120, (3, -1), 1.0),
            scene(160, 120, (7, -3), 1.0),
        );
        let (ab, bc) = (
            field_between(&a, &b, ToneCorrection::IDENTITY),
            field_between(&b, &c, ToneCorrection::IDENTITY),
        );
        let mut ac = MotionField::default();
        chain(&ab, &bc, &mut ac);
        let at = |f: &MotionField| f.vectors[(f.blocks_y / 2) * f.blocks_x + f.blocks_x / 2];
        assert_eq!((at(&ab), at(&bc), at(&ac)), ((3, -1), (4, -2), (7, -3)));
        let (mut pa, mut pc) = (Pyramid::default(), Pyramid::default());
        pa.build(&a);
        pc.build(&c);
        // A wrong start one pixel off is pulled back by the full-resolution descent.
        for v in ac.vectors.iter_mut() {
            *v = (v.0 + 1, v.1);
        }
        refine(&pa, &pc, ToneCorrection::IDENTITY, &mut ac, 3);
        assert_eq!(at(&ac), (7, -3));
    }

    #[test]
    fn grain_on_a_still_scene_keeps_the_zero_vector() {
        // Two frames of the same flat grey under independent grain: every vector matches about
        // as well, and without the zero preference fewer than one block in five kept (0, 0).
        let noisy = |seed: u32| {
            let mut s = seed | 1;
            let mut p = Plane::filled(128, 96, 0.5);
            for v in p.data.iter_mut() {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                *v += 0.136 * ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5);
            }
            p
        };
        let field = field_between(&noisy(3), &noisy(8), ToneCorrection::IDENTITY);
        let zero = field.vectors.iter().filter(|v| **v == (0, 0)).count();
        assert!(
            zero * 2 >= field.vectors.len(),
            "{zero} of {} blocks at (0, 0)",
            field.vectors.len()
        );
    }

    #[test]
    fn median_of_9_equals_the_middle_of_the_sorted_nine() {
        let mut rng = crate::rng::Rng::new(17);
        for _ in 0..20_000 {
            // Small ranges, so that ties (as among real vectors) are common.
            let p: [i32; 9] = std::array::from_fn(|_| rng.below(7) as i32 - 3);
            let mut sorted = p;
            sorted.sort_unstable();
            assert_eq!(median_of_9(p), sorted[4], "{p:?}");
        }
    }

    /// A textured scene panned by (3, 2) under light grain, except a 24x24 object that moves
    /// by (6, 2) on its own; the centre frame, the neighbour, and the object's top-left pixel.
    fn pan_with_an_object() -> (Plane, Plane, (usize, usize)) {
        let (w, h) = (192, 128);
        let mut rng = crate::rng::Rng::new(5);
        // Fine texture over the smooth scene, on a canvas a margin larger than the frame.
        let fine: Vec<f32> = (0..(w + 16) * (h + 16)).map(|_| 0.3 * rng.next_f32()).collect();
        let smooth = scene(w + 16, h + 16, (0, 0), 0.8);
        let at = |x: i32, y: i32| {
            let (x, y) = ((x + 8) as usize, (y + 8) as usize);
            smooth.get(x, y) + fine[y * (w + 16) + x]
        };
        let object = (88, 56);
        let inside =
            |x: usize, y: usize| (object.0..object.0 + 24).contains(&x) && (object.1..object.1 + 24).contains(&y);
        let (mut c, mut n) = (Plane::new(w, h), Plane::new(w, h));
        for y in 0..h {
            for x in 0..w {
                let (xi, yi) = (x as i32, y as i32);
                // The object is a patch from elsewhere on the canvas.
                let centre = if inside(x, y) { at(xi - 60, yi - 30) } else { at(xi, yi) };
                c.set(x, y, centre + 0.02 * (rng.next_f32() - 0.5));
                let (ox, oy) = (xi - 6, yi - 2);
                let moved = if (0..24).contains(&(ox - object.0 as i32)) && (0..24).contains(&(oy - object.1 as i32)) {
                    at(ox - 60, oy - 30)
                } else {
                    at(xi - 3, yi - 2)
                };
                n.set(x, y, moved + 0.02 * (rng.next_f32() - 0.5));
            }
        }
        (c, n, object)
    }

    #[test]
    fn chance_winners_take_the_vector_their_neighbours_agree_on_and_an_object_keeps_its_own() {
        let (c, n, object) = pan_with_an_object();
        let (mut pc, mut pn) = (Pyramid::default(), Pyramid::default());
        pc.build(&c);
        pn.build(&n);
        let mut field = MotionField::default();
        estimate_with(&pc, &pn, ToneCorrection::IDENTITY, &mut field, 0.0);
        let bx = field.blocks_x;
        let object_blocks: Vec<usize> = (0..3)
            .flat_map(|r| (0..3).map(move |k| (object.1 / BLOCK + r) * bx + object.0 / BLOCK + k))
            .collect();
        for &i in &object_blocks {
            assert_eq!(field.vectors[i], (6, 2), "the object's block {i} before");
        }
        // Chance winners, as heavy grain makes them: a few blocks of the pan given a vector a
        // pixel or two off, recorded as matching a little better than the true one.
        let mapped = field.mapped[0].clone();
        let search = Search::new(&pc.bytes[0], &mapped);
        let margin = NEIGHBOUR_PREFERENCE * typical_zero_cost(&mut field);
        let winners = [(3, 3, (4, 2)), (10, 4, (2, 3)), (5, 12, (3, 0)), (18, 9, (1, 2))];
        for &(col, row, wrong) in &winners {
            let i = row * bx + col;
            assert_eq!(field.vectors[i], (3, 2), "block ({col}, {row}) before");
            field.vectors[i] = wrong;
            field.cost[i] -= 0.5 * margin;
        }
        // Without the margin they keep the vectors they won with.
        let mut alone = field.clone();
        prefer_neighbours(&mut alone, &search, 0.0);
        for &(col, row, wrong) in &winners {
            assert_eq!(
                alone.vectors[row * bx + col],
                wrong,
                "block ({col}, {row}) without the margin"
            );
        }
        prefer_neighbours(&mut field, &search, margin);
        for &(col, row, _) in &winners {
            assert_eq!(field.vectors[row * bx + col], (3, 2), "block ({col}, {row}) after");
        }
        for &i in &object_blocks {
            assert_eq!(field.vectors[i], (6, 2), "the object's block {i} after");
        }
    }

    #[test]
    fn blocks_along_a_motion_boundary_find_their_own_side() {
        // The left part of the picture pans by (14, -6), the rest stands still; the boundary
        // cuts through coarse blocks, whose vectors are then right for one side only.
        let (w, h) = (192, 128);
        let still = scene(w, h, (0, 0), 1.0);
        let panned = scene(w, h, (14, -6), 1.0);
        let boundary = 92;
        let mut n = still.clone();
        for y in 0..h {
            for x in 0..boundary {
                n.set(x, y, panned.get(x, y));
            }
        }
        let field = field_between(&still, &n, ToneCorrection::IDENTITY);
        let (mut right, mut total) = (0, 0);
        for by in 2..field.blocks_y - 2 {
            // The blocks next to the boundary on either side (whole blocks, no straddling).
            for (bx, want) in [(boundary / BLOCK - 2, (14, -6)), (boundary / BLOCK + 1, (0, 0))] {
                right += (field.vectors[by * field.blocks_x + bx] == want) as usize;
                total += 1;
            }
        }
        assert!(right * 10 >= total * 9, "{right} of {total} boundary blocks right");
    }

    #[test]
    fn tiny_frames_work() {
        let c = Plane::filled(3, 2, 0.5);
        let field = field_between(&c, &c, ToneCorrection::IDENTITY);
        assert_eq!(field.vectors, vec![(0, 0)]);
    }

    #[test]
    fn lighting_each_block_row_as_made_equals_a_pass_of_its_own() {
        // Odd sizes (a part block row and column) and vectors that reach past the border.
        let (w, h) = (45, 30);
        let n = scene(w, h, (0, 0), 1.0);
        let mut field = MotionField::default();
        field.resize(w.div_ceil(BLOCK), h.div_ceil(BLOCK));
        for (i, v) in field.vectors.iter_mut().enumerate() {
            *v = ((i % 7) as i32 - 3, (i % 5) as i32 - 2);
        }
        let light = GainField {
            coeffs: [0.03, -0.02, 0.01, 0.02, -0.01],
        };
        let tone = ToneCorrection {
            gain: 1.1,
            offset: 0.02,
        };
        let (mut two, mut one) = (Plane::new(w, h), Plane::new(w, h));
        compensate(&n, &field, tone, &mut two);
        let unlit = two.clone();
        light.apply(&mut two);
        compensate_lit(&n, &field, tone, Some(&light), &mut one);
        assert!(two.data.iter().zip(&one.data).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_ne!(two, unlit, "the light changed nothing");
    }
}
