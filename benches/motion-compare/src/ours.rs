//! Our search, called the way the restorer calls it (`kernels/src/clean.rs`, `Cleaner::motion`):
//! a pyramid per frame, built once; per neighbour a rough tone map fitted to the two frames'
//! quantiles, then `estimate`.

use crate::field::Field;
use kernels::deflicker::{fit_gain_offset, ToneCorrection};
use kernels::motion::{estimate, MotionField, Pyramid, BLOCK};
use kernels::stats::FrameStats;
use kernels::Plane;

/// The neighbour's brightness mapped onto the centre's, as the restorer steers its search.
pub fn rough_tone(centre: &FrameStats, neighbour: &FrameStats) -> ToneCorrection {
    fit_gain_offset(&neighbour.quantiles, &centre.quantiles)
}

/// Per-frame work: the pyramid (the statistics are computed for every frame anyway).
pub fn prepare(luma: &Plane, pyramid: &mut Pyramid) {
    pyramid.build(luma);
}

/// Motion from the centre to the neighbour.
pub fn search(centre: (&Pyramid, &FrameStats), neighbour: (&Pyramid, &FrameStats), field: &mut MotionField) {
    let tone = rough_tone(centre.1, neighbour.1);
    estimate(centre.0, neighbour.0, tone, field);
}

/// `field` on the common grid (whole-pixel vectors, `BLOCK`-pixel blocks, no overlap).
pub fn to_field(field: &MotionField) -> Field {
    let (bx, by) = (field.blocks_x, field.blocks_y);
    let vectors = (0..by)
        .flat_map(|y| (0..bx).map(move |x| (x, y)))
        .map(|(x, y)| field.vector_at(x * BLOCK, y * BLOCK))
        .collect();
    Field {
        block: BLOCK,
        step: BLOCK,
        pel: 1,
        blocks_x: bx,
        blocks_y: by,
        vectors,
    }
}
