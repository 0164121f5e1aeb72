//! The motion-compensated classic stages for one centre frame: motion → regional deflicker →
//! blotches → line scratches → grain. (Both deflicker corrections are per-pixel gains, so the
//! restorer applies them last, with the stabilising shift; the stages compare frames in the
//! centre's own light instead, by mapping each compensated neighbour's tone, overall and
//! regional, onto the centre's.)
//!
//! The motion field and the compensated neighbours are computed once here and shared by the
//! stages that need them.

use crate::blotch::{BlotchParams, BlotchRemover, Neighbour};
use crate::deflicker::{
    fit_gain_offset, fit_pairs, sample_pairs, Coarse, GainField, RegionalDeflicker, RegionalParams, ToneCorrection,
};
use crate::frame::{Plane, WorkFrame};
use crate::grain::{GrainFilter, GrainParams};
use crate::motion::{chain, compensate, compensate_lit, estimate, refine, MotionField};
use crate::noise::NoiseProfile;
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
    pub(crate) fn needs_motion(&self) -> bool {
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
    /// The neighbours two frames away (when the pair is the adjacent frames), for the grain
    /// filter: vectors chained over the frame between, and the compensated neighbour.
    far_fields: [MotionField; 2],
    far: [Plane; 2],
    far_count: usize,
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

/// Diamond steps refining the chained vectors to the frames two away. None: the chained
/// vectors as they are. On the quality set's bbb strength 0.5 case one step gained SSIM
/// 0.9276 -> 0.9308 and PSNR 32.81 -> 32.99 dB, but a full-resolution search and its zero
/// preference per neighbour roughly doubled what the frames two away cost.
const FAR_REFINE_STEPS: usize = 0;

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

    /// Writes the cleaned centre frame of `window` into `out` (same geometry), lit: its
    /// regional correction and then `tone` (the overall deflicker's) applied last, after every
    /// stage that compares it with its neighbours (in their light as they are).
    pub fn run<T>(
        &mut self,
        params: &CleanParams,
        window: &TemporalWindow<T>,
        tone: ToneCorrection,
        out: &mut WorkFrame,
        times: &mut StageTimes,
    ) {
        let centre = window.centre();
        out.copy_from(&centre.frame);
        let neighbours = NEIGHBOUR_CHOICES
            .iter()
            .find_map(|&[a, b]| Some(([a, b], [window.neighbour(a)?, window.neighbour(b)?])));
        self.blotch_pixels = 0;
        // Whether the grain filter applied the light with its last step.
        let mut lit = false;
        self.regional_correction = GainField::FLAT;
        self.shift = (0.0, 0.0);
        if let (Some((offsets, pair)), true) = (neighbours, params.needs_motion()) {
            let start = Instant::now();
            self.motion(window, offsets);
            self.far_neighbours(params, window, offsets);
            times.add(Stage::Motion, start);
            let start = Instant::now();
            if let Some(p) = &params.stabilise {
                self.stabilise(p, centre, pair, offsets);
            }
            times.add(Stage::Stabilise, start);
            let start = Instant::now();
            self.relative = [GainField::FLAT; 2];
            if let Some(p) = &params.regional {
                self.regional_deflicker(p, centre, pair, offsets);
            }
            times.add(Stage::Deflicker, start);
            // After the regional fits (made on the pyramids), which light each compensated
            // neighbour as its block rows are made rather than in a pass of their own.
            let start = Instant::now();
            self.compensate(centre, pair);
            times.add(Stage::Motion, start);
            let start = Instant::now();
            let [a, b] = neighbour_views(&self.fields, &self.compensated, &self.tones, pair);
            // One measurement for every stage: the frame's level, and by brightness for the grain.
            let noise = NoiseProfile::measure(&centre.frame.luma, a.compensated, b.compensated);
            let sigma = noise.sigma();
            if let Some(p) = &params.blotches {
                // `out` holds the centre already (copied above).
                self.blotch_pixels = self
                    .blotches
                    .process_copy(p, &centre.frame.luma, &a, &b, sigma, &mut out.luma);
                fill_chroma(out, pair, &self.fields, self.blotches.last_mask());
            }
            times.add(Stage::Blotches, start);
            let start = Instant::now();
            if let Some(p) = &params.scratches {
                self.scratches.process(p, &mut out.luma, centre.starts_shot);
                let [ca, cb] = &self.compensated;
                let [fa, fb] = &self.fields;
                self.scratches
                    .refill_from_neighbours(&mut out.luma, [(ca, fa), (cb, fb)], sigma);
            }
            times.add(Stage::Scratches, start);
            let start = Instant::now();
            if let Some(p) = &params.grain {
                let far = &mut self.far[..self.far_count];
                if params.scratches.is_some() {
                    for comp in self.compensated.iter_mut().chain(far.iter_mut()) {
                        self.scratches.copy_fills(&out.luma, comp);
                    }
                }
                let [ca, cb] = &self.compensated;
                let mut neighbours: [&Plane; 4] = [ca, cb, ca, cb];
                for (slot, plane) in neighbours[2..].iter_mut().zip(far.iter()) {
                    *slot = plane;
                }
                // The light with the grain filter's last step, row by row.
                let (light, size) = (self.regional_correction, (out.luma.width, out.luma.height));
                let finish = |y: usize, row: &mut [f32]| light.apply_rows(size, y, tone, row);
                let neighbours = &neighbours[..2 + self.far_count];
                self.grain.process_then(p, &mut out.luma, neighbours, &noise, finish);
                lit = true;
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
        if !lit {
            let start = Instant::now();
            self.regional_correction.apply_then(tone, &mut out.luma);
            times.add(Stage::Deflicker, start);
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

    /// Fits each neighbour's regional light relative to the centre's (for [`Self::compensate`]
    /// to map onto the centre's, so later stages see flicker as no difference), and derives the
    /// centre's own correction from the same fits.
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
        }
        let fits = [(offsets[0], self.relative[0]), (offsets[1], self.relative[1])];
        self.regional_correction = self.regional.correction(params, centre.starts_shot, &fits);
    }

    /// The vectors from the centre to its chosen neighbours, and each neighbour's light.
    fn motion<T>(&mut self, window: &TemporalWindow<T>, offsets: [isize; 2]) {
        for (i, &offset) in offsets.iter().enumerate() {
            self.tones[i] = field_to(window, offset, &mut self.fields[i], &mut self.pairs);
        }
    }

    /// The neighbours two frames away, for the grain filter, when the chosen pair is the two
    /// adjacent frames and the filter is on with radius 2: their vectors chained over the
    /// frame between (no search of their own, see [`FAR_REFINE_STEPS`]), compensated in their
    /// overall light. Their regional light is not mapped: the filter's similarity weights
    /// absorb a few per cent, and the extra pass cost more than it gained on the quality set.
    fn far_neighbours<T>(&mut self, params: &CleanParams, window: &TemporalWindow<T>, offsets: [isize; 2]) {
        self.far_count = 0;
        if params.grain.is_none_or(|g| g.radius < 2) || offsets != [-1, 1] {
            return;
        }
        let centre = window.centre();
        let (w, h) = (centre.frame.luma.width, centre.frame.luma.height);
        for offset in [-2isize, 2] {
            let k = self.far_count;
            let field = &mut self.far_fields[k];
            let Some(tone) = chained_field(window, offset, field, FAR_REFINE_STEPS, &mut self.pairs) else {
                continue;
            };
            let n = window.neighbour(offset).expect("chained to it");
            let plane = &mut self.far[k];
            if (plane.width, plane.height) != (w, h) {
                *plane = Plane::new(w, h);
            }
            compensate(&n.frame.luma, &self.far_fields[k], tone, plane);
            self.far_count += 1;
        }
    }

    /// The neighbours moved onto the centre, in its light: one pass each, the overall tone
    /// mapping and the regional light ([`Self::regional_deflicker`]) included.
    fn compensate<T>(&mut self, centre: &Slot<T>, pair: [&Slot<T>; 2]) {
        let (w, h) = (centre.frame.luma.width, centre.frame.luma.height);
        for (i, n) in pair.iter().enumerate() {
            let comp = &mut self.compensated[i];
            if (comp.width, comp.height) != (w, h) {
                *comp = Plane::new(w, h);
            }
            // Below a quarter of a per cent of gain anywhere, the regional light is left out.
            let light = Some(&self.relative[i]).filter(|l| l.max_abs() > NEGLIGIBLE_FIELD);
            compensate_lit(&n.frame.luma, &self.fields[i], self.tones[i], light, comp);
        }
    }
}

/// Fills `field` with the vectors from the window's centre to its neighbour at `offset` (±1 or
/// ±2, which must exist) and returns the neighbour's light mapped onto the centre's. The
/// frames' own motion (estimated as they arrived) gives ±1; ±2 is chained over the frame
/// between and refined at full resolution (the blotch stage compares pixels through it).
/// Missing motion (the stages were switched on mid-stream) is estimated here.
fn field_to<T>(
    window: &TemporalWindow<T>,
    offset: isize,
    field: &mut MotionField,
    pairs: &mut Vec<(f32, f32)>,
) -> ToneCorrection {
    if offset.abs() == 2 {
        if let Some(tone) = chained_field(window, offset, field, 3, pairs) {
            return tone;
        }
    }
    let centre = window.centre();
    let n = window.neighbour(offset).expect("a chosen neighbour");
    let rough = fit_gain_offset(&n.stats.quantiles, &centre.stats.quantiles);
    match centre.frame.motion.towards(offset) {
        Some(known) => field.copy_vectors_from(known),
        None => estimate(&centre.frame.pyramid, &n.frame.pyramid, rough, field),
    }
    fitted_tone(&centre.frame.luma, &n.frame.luma, field, rough, pairs)
}

/// The vectors from the centre to its neighbour at `offset` (±2): the frames' own motion
/// chained over the frame between, then refined by `steps` diamond steps at full resolution
/// (a one-level search from there, not a whole pyramid). Returns the neighbour's fitted light, or `None` when a step's
/// motion is not known.
fn chained_field<T>(
    window: &TemporalWindow<T>,
    offset: isize,
    field: &mut MotionField,
    steps: usize,
    pairs: &mut Vec<(f32, f32)>,
) -> Option<ToneCorrection> {
    let step = offset.signum();
    let (centre, between, n) = (window.centre(), window.neighbour(step)?, window.neighbour(offset)?);
    let first = centre.frame.motion.towards(step)?;
    let second = between.frame.motion.towards(step)?;
    chain(first, second, field);
    let rough = fit_gain_offset(&n.stats.quantiles, &centre.stats.quantiles);
    if steps > 0 {
        refine(&centre.frame.pyramid, &n.frame.pyramid, rough, field, steps);
    }
    Some(fitted_tone(&centre.frame.luma, &n.frame.luma, field, rough, pairs))
}

/// The neighbour's brightness mapped onto the centre's, fitted on pixel pairs read through
/// the vectors (the compensated neighbour need not exist yet).
fn fitted_tone(
    centre: &Plane,
    raw: &Plane,
    field: &MotionField,
    rough: ToneCorrection,
    pairs: &mut Vec<(f32, f32)>,
) -> ToneCorrection {
    let at = |x: usize, y: usize| {
        let (vx, vy) = field.vector_at(x, y);
        raw.get_clamped(x as isize + vx as isize, y as isize + vy as isize)
    };
    sample_pairs(centre, at, pairs);
    fit_pairs(pairs, rough)
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
