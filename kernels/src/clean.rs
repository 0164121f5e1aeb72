//! The motion-compensated classic stages for one centre frame: motion → regional deflicker →
//! blotches → line scratches → grain. (Both deflicker corrections are per-pixel gains, so the
//! restorer applies them last, with the stabilising shift; the stages compare frames in the
//! centre's own light instead, by mapping each compensated neighbour's tone, overall and
//! regional, onto the centre's.)
//!
//! The motion field and the compensated neighbours are computed once here and shared by the
//! stages that need them.

use crate::blotch::{noise_sigma, BlotchParams, BlotchRemover, Neighbour};
use crate::deflicker::{
    fit_gain_offset, fit_pairs, sample_pairs, Coarse, GainField, RegionalDeflicker, RegionalParams, ToneCorrection,
};
use crate::frame::{Plane, WorkFrame};
use crate::grain::{GrainFilter, GrainParams};
use crate::motion::{compensate, estimate, MotionField};
use crate::restorer::{Stage, StageTimes};
use crate::scratch::{ScratchParams, ScratchRemover};
use crate::stabilise::{translation, StabiliseParams, Stabiliser};
use crate::window::{Slot, TemporalWindow};
use std::time::Instant;

/// Which classic stages run, and how strongly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CleanParams {
    /// Gate-weave removal (off by default: see the README's quality notes).
    pub stabilise: Option<StabiliseParams>,
    /// Uneven (regional) flicker, fitted against the compensated neighbours.
    pub regional: Option<RegionalParams>,
    pub blotches: Option<BlotchParams>,
    pub scratches: Option<ScratchParams>,
    pub grain: Option<GrainParams>,
}

impl Default for CleanParams {
    fn default() -> Self {
        CleanParams {
            stabilise: None,
            regional: Some(RegionalParams::default()),
            blotches: Some(BlotchParams::default()),
            scratches: Some(ScratchParams::default()),
            grain: Some(GrainParams::default()),
        }
    }
}

impl CleanParams {
    fn needs_motion(&self) -> bool {
        self.blotches.is_some() || self.grain.is_some() || self.regional.is_some() || self.stabilise.is_some()
    }
}

/// Buffers and per-stream state of the classic stages, reused frame to frame.
#[derive(Default)]
pub struct Cleaner {
    fields: [MotionField; 2],
    compensated: [Plane; 2],
    /// Brightness mapping of each neighbour onto the centre.
    tones: [ToneCorrection; 2],
    /// Pixel pairs the brightness mapping is fitted on, reused frame to frame.
    pairs: Vec<(f32, f32)>,
    /// Each neighbour's regional light relative to the centre's.
    relative: [GainField; 2],
    regional: RegionalDeflicker,
    stabiliser: Stabiliser,
    blotches: BlotchRemover,
    scratches: ScratchRemover,
    grain: GrainFilter,
    /// Luma pixels replaced by the blotch stage in the last frame.
    pub blotch_pixels: usize,
    /// The regional deflicker's gain for the last frame, for the restorer to apply.
    pub regional_correction: GainField,
    /// The stabilising shift for the last frame (content at x goes to x + shift).
    pub shift: (f32, f32),
}

/// Offsets of the two neighbours used for the centre: the adjacent ones, or two on one side at
/// the start or end of a shot.
const NEIGHBOUR_CHOICES: [[isize; 2]; 3] = [[-1, 1], [1, 2], [-1, -2]];

/// Pixel pairs further than this from the first regional fit are left out of the second
/// (a few grain sigmas: damage and occlusions, not grain, are what it must drop).
const REGIONAL_PAIR_LIMIT: f32 = 0.06;

/// Largest field coefficient (log gain) a compensated neighbour is left unmapped at.
const NEGLIGIBLE_FIELD: f32 = 0.0025;

impl Cleaner {
    pub fn reset(&mut self) {
        self.scratches.reset();
        self.regional.reset();
        self.stabiliser.reset();
    }

    /// Moves `out` by the last frame's stabilising shift (after every per-pixel correction).
    pub fn apply_shift(&mut self, out: &mut WorkFrame) {
        self.stabiliser.apply(self.shift, out);
    }

    /// Writes the cleaned centre frame of `window` into `out` (same geometry).
    pub fn run<T>(
        &mut self,
        params: &CleanParams,
        window: &TemporalWindow<T>,
        out: &mut WorkFrame,
        times: &mut StageTimes,
    ) {
        let centre = window.centre();
        out.copy_from(&centre.frame);
        let neighbours = NEIGHBOUR_CHOICES
            .iter()
            .find_map(|&[a, b]| Some(([a, b], [window.neighbour(a)?, window.neighbour(b)?])));
        self.blotch_pixels = 0;
        self.regional_correction = GainField::FLAT;
        self.shift = (0.0, 0.0);
        if let (Some((offsets, pair)), true) = (neighbours, params.needs_motion()) {
            let start = Instant::now();
            self.motion(centre, pair);
            self.compensate(centre, pair);
            times.add(Stage::Motion, start);
            let start = Instant::now();
            if let Some(p) = &params.stabilise {
                self.stabilise(p, centre, pair, offsets);
            }
            times.add(Stage::Stabilise, start);
            let start = Instant::now();
            if let Some(p) = &params.regional {
                self.regional_deflicker(p, centre, pair, offsets);
            }
            times.add(Stage::Deflicker, start);
            let start = Instant::now();
            let [a, b] = neighbour_views(&self.fields, &self.compensated, &self.tones, pair);
            let sigma = noise_sigma(&centre.frame.luma, a.compensated, b.compensated);
            if let Some(p) = &params.blotches {
                self.blotch_pixels = self.blotches.process(p, &centre.frame.luma, &a, &b, &mut out.luma);
                fill_chroma(out, pair, &self.fields, self.blotches.last_mask());
            }
            times.add(Stage::Blotches, start);
            let start = Instant::now();
            if let Some(p) = &params.scratches {
                self.scratches.process(p, &mut out.luma, centre.starts_shot);
            }
            times.add(Stage::Scratches, start);
            let start = Instant::now();
            if let Some(p) = &params.grain {
                if params.scratches.is_some() {
                    for comp in self.compensated.iter_mut() {
                        self.scratches.copy_fills(&out.luma, comp);
                    }
                }
                let [ca, cb] = &self.compensated;
                self.grain.process(p, &mut out.luma, &[ca, cb], sigma);
            }
            times.add(Stage::Grain, start);
        } else {
            if let Some(p) = &params.stabilise {
                self.stabiliser.correction(p, centre.starts_shot, &[]);
            }
            if let Some(p) = &params.regional {
                // No neighbours in this shot: nothing to compare against, but keep the state in step.
                self.regional.correction(p, centre.starts_shot, &[]);
            }
            if let Some(p) = &params.scratches {
                let start = Instant::now();
                self.scratches.process(p, &mut out.luma, centre.starts_shot);
                times.add(Stage::Scratches, start);
            }
        }
    }

    fn stabilise<T>(&mut self, params: &StabiliseParams, centre: &Slot<T>, pair: [&Slot<T>; 2], offsets: [isize; 2]) {
        let c = &centre.frame.luma;
        let t = |i: usize| {
            (
                offsets[i],
                translation(c, &pair[i].frame.luma, &self.fields[i], self.tones[i]),
            )
        };
        let steps = [t(0), t(1)];
        self.shift = self.stabiliser.correction(params, centre.starts_shot, &steps);
    }

    /// Maps each compensated neighbour's regional light onto the centre's (so later stages see
    /// flicker as no difference), and derives the centre's own correction from the same fits.
    fn regional_deflicker<T>(
        &mut self,
        params: &RegionalParams,
        centre: &Slot<T>,
        pair: [&Slot<T>; 2],
        offsets: [isize; 2],
    ) {
        let c = &centre.frame;
        for (i, n) in pair.iter().enumerate() {
            let coarse = Coarse::pick(&c.luma, &c.pyramid, &n.frame.luma, &n.frame.pyramid);
            self.relative[i] =
                self.regional
                    .relative_field(coarse, &self.fields[i], self.tones[i], REGIONAL_PAIR_LIMIT);
            // Below a quarter of a per cent of gain anywhere, mapping the neighbour is not
            // worth a full-resolution pass.
            if self.relative[i].max_abs() > NEGLIGIBLE_FIELD {
                self.relative[i].apply(&mut self.compensated[i]);
            }
        }
        let fits = [(offsets[0], self.relative[0]), (offsets[1], self.relative[1])];
        self.regional_correction = self.regional.correction(params, centre.starts_shot, &fits);
    }

    fn motion<T>(&mut self, centre: &Slot<T>, pair: [&Slot<T>; 2]) {
        let c = &centre.frame;
        for (i, n) in pair.iter().enumerate() {
            let (field, tone) = (&mut self.fields[i], &mut self.tones[i]);
            // Quantiles are good enough to steer the vectors; the pixel-pair fit through the
            // vectors then gets the brightness right for comparing pixels.
            let rough = fit_gain_offset(&n.stats.quantiles, &centre.stats.quantiles);
            estimate(&c.pyramid, &n.frame.pyramid, rough, field);
            let (raw, field) = (&n.frame.luma, &*field);
            sample_pairs(
                &c.luma,
                |x, y| {
                    let (vx, vy) = field.vector_at(x, y);
                    raw.get_clamped(x as isize + vx as isize, y as isize + vy as isize)
                },
                &mut self.pairs,
            );
            *tone = fit_pairs(&self.pairs, rough);
        }
    }

    /// The neighbours moved onto the centre, in its light: one pass each, tone mapping included.
    fn compensate<T>(&mut self, centre: &Slot<T>, pair: [&Slot<T>; 2]) {
        let (w, h) = (centre.frame.luma.width, centre.frame.luma.height);
        for (i, n) in pair.iter().enumerate() {
            let comp = &mut self.compensated[i];
            if (comp.width, comp.height) != (w, h) {
                *comp = Plane::new(w, h);
            }
            compensate(&n.frame.luma, &self.fields[i], self.tones[i], comp);
        }
    }
}

fn neighbour_views<'a, T>(
    fields: &'a [MotionField; 2],
    compensated: &'a [Plane; 2],
    tones: &[ToneCorrection; 2],
    pair: [&'a Slot<T>; 2],
) -> [Neighbour<'a>; 2] {
    let view = |i: usize| Neighbour {
        compensated: &compensated[i],
        raw: &pair[i].frame.luma,
        field: &fields[i],
        tone: tones[i],
    };
    [view(0), view(1)]
}

/// Chroma under replaced luma comes from the compensated neighbours too (dirt has colour).
fn fill_chroma<T>(out: &mut WorkFrame, pair: [&Slot<T>; 2], fields: &[MotionField; 2], mask: &[u8]) {
    let (w, h) = (out.width(), out.height());
    for (ci, plane) in out.chroma.iter_mut().enumerate() {
        let (sx, sy) = (w.div_ceil(plane.width), h.div_ceil(plane.height));
        for cy in 0..plane.height {
            for cx in 0..plane.width {
                let (x, y) = ((cx * sx).min(w - 1), (cy * sy).min(h - 1));
                if mask[y * w + x] == 0 {
                    continue;
                }
                let sample = |i: usize| {
                    let (vx, vy) = fields[i].vector_at(x, y);
                    let src = &pair[i].frame.chroma[ci];
                    src.get_clamped(
                        (cx as isize) + vx as isize / sx as isize,
                        (cy as isize) + vy as isize / sy as isize,
                    )
                };
                plane.set(cx, cy, 0.5 * (sample(0) + sample(1)));
            }
        }
    }
}
