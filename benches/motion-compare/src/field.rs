//! A motion field both searches can be turned into, and the one compensation that scores them.
//!
//! Scoring both methods' vectors through the same compensation keeps the measure on the vectors:
//! each pixel takes the vector of the block whose centre is nearest (for a grid without overlap,
//! the block holding it) and samples the neighbour there, bilinearly between pixels, with the
//! border replicated. Each method's own compensation is scored separately (see `main.rs`).

use kernels::Plane;

/// One vector per block of a regular grid, pointing from a centre block to where it is found in
/// the neighbour, in units of `1 / pel` pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Block side in pixels.
    pub block: usize,
    /// Distance between block origins (the block side less the overlap).
    pub step: usize,
    /// Sub-pixel units per pixel: 1, 2 or 4.
    pub pel: i32,
    pub blocks_x: usize,
    pub blocks_y: usize,
    pub vectors: Vec<(i32, i32)>,
}

impl Field {
    /// Zero motion on an 8x8 grid covering a `width x height` frame.
    pub fn zero(width: usize, height: usize) -> Self {
        let (blocks_x, blocks_y) = (width.div_ceil(8), height.div_ceil(8));
        Field {
            block: 8,
            step: 8,
            pel: 1,
            blocks_x,
            blocks_y,
            vectors: vec![(0, 0); blocks_x * blocks_y],
        }
    }

    /// The block whose centre is nearest to coordinate `p` along one axis.
    fn block_along(&self, p: usize, blocks: usize) -> usize {
        let half_overlap = (self.block - self.step) / 2;
        (p.saturating_sub(half_overlap) / self.step).min(blocks - 1)
    }
}

/// Writes `neighbour` moved onto the centre by `field` into `out` (same size as `neighbour`).
pub fn compensate(neighbour: &Plane, field: &Field, out: &mut Plane) {
    let (w, h) = (neighbour.width, neighbour.height);
    assert_eq!((out.width, out.height), (w, h));
    let columns: Vec<usize> = (0..w).map(|x| field.block_along(x, field.blocks_x)).collect();
    let pel = field.pel;
    let inv = 1.0 / pel as f32;
    for y in 0..h {
        let by = field.block_along(y, field.blocks_y);
        let vectors = &field.vectors[by * field.blocks_x..][..field.blocks_x];
        let row = out.row_mut(y);
        for (x, o) in row.iter_mut().enumerate() {
            let (vx, vy) = vectors[columns[x]];
            let (ix, fx) = (x as isize + vx.div_euclid(pel) as isize, vx.rem_euclid(pel));
            let (iy, fy) = (y as isize + vy.div_euclid(pel) as isize, vy.rem_euclid(pel));
            *o = if fx == 0 && fy == 0 {
                neighbour.get_clamped(ix, iy)
            } else {
                let (ax, ay) = (fx as f32 * inv, fy as f32 * inv);
                let top = lerp(neighbour.get_clamped(ix, iy), neighbour.get_clamped(ix + 1, iy), ax);
                let bottom = lerp(
                    neighbour.get_clamped(ix, iy + 1),
                    neighbour.get_clamped(ix + 1, iy + 1),
                    ax,
                );
                lerp(top, bottom, ay)
            };
        }
    }
}

#[inline]
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                p.set(x, y, (x + 100 * y) as f32);
            }
        }
        p
    }

    #[test]
    fn a_whole_pixel_vector_copies_the_displaced_block() {
        let n = ramp(16, 16);
        let mut field = Field::zero(16, 16);
        field.vectors[3] = (2, -1); // block (1, 1): pixels 8..16
        let mut out = Plane::new(16, 16);
        compensate(&n, &field, &mut out);
        assert_eq!(out.get(9, 9), n.get(11, 8));
        assert_eq!(out.get(3, 3), n.get(3, 3));
        // Border replicated.
        assert_eq!(out.get(15, 15), n.get(15, 14));
    }

    #[test]
    fn a_half_pixel_vector_averages_its_two_pixels() {
        let n = ramp(16, 16);
        let mut field = Field::zero(16, 16);
        field.pel = 2;
        field.vectors[0] = (3, 0); // 1.5 pixels right
        let mut out = Plane::new(16, 16);
        compensate(&n, &field, &mut out);
        assert_eq!(out.get(2, 2), 0.5 * (n.get(3, 2) + n.get(4, 2)));
        field.vectors[0] = (-1, -1);
        compensate(&n, &field, &mut out);
        let expected = 0.25 * (n.get(1, 1) + n.get(2, 1) + n.get(1, 2) + n.get(2, 2));
        assert!((out.get(2, 2) - expected).abs() < 1e-3);
    }

    #[test]
    fn overlapped_blocks_hand_each_pixel_to_the_nearest_centre() {
        // 8x8 blocks every 4 pixels: block i covers 4i..4i+8, centred on 4i+4.
        let field = Field {
            block: 8,
            step: 4,
            pel: 1,
            blocks_x: 3,
            blocks_y: 1,
            vectors: vec![(0, 0); 3],
        };
        let along: Vec<usize> = (0..16).map(|x| field.block_along(x, 3)).collect();
        assert_eq!(along, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    }
}
