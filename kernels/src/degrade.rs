//! Old-film damage synthesis, for the `oldfilmdegrade` element, tests, demos and training data.
//!
//! Every random choice is drawn from a generator seeded by `(seed, frame index, purpose)`, so a
//! frame's damage depends only on the parameters, its index and its pixels: bit-identical on
//! every run, whatever the buffer timing. Line scratches persist across frames without any
//! state: each is spawned in a 32-frame epoch with its own start, lifetime and path, and a
//! frame renders the scratches of the epochs that can still be alive.

use crate::frame::{Plane, WorkFrame};
use crate::rng::{hash64, Rng};
use rayon::prelude::*;
use std::f32::consts::TAU;

/// Damage strengths, each 0 (off) to 1 (heavy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DamageParams {
    pub seed: u64,
    pub blotches: f32,
    pub scratches: f32,
    pub flicker: f32,
    pub grain: f32,
    pub blur: f32,
    pub gate_weave: f32,
}

impl Default for DamageParams {
    fn default() -> Self {
        DamageParams {
            seed: 0,
            blotches: 0.5,
            scratches: 0.5,
            flicker: 0.5,
            grain: 0.5,
            blur: 0.0,
            gate_weave: 0.0,
        }
    }
}

/// Damage mask codes (in 8-bit luma; the mask plane holds `code / 255`).
pub mod mask {
    pub const CLEAN: u8 = 0;
    pub const SCRATCH: u8 = 128;
    pub const BLOTCH: u8 = 255;
}

/// Random-stream purposes, so each kind of damage draws from its own generator.
const WEAVE: u64 = 1;
const FLICKER: u64 = 2;
const GRAIN: u64 = 3;
const SCRATCH: u64 = 4;
const BLOTCH: u64 = 5;

const EPOCH: u64 = 32;
const MAX_SCRATCH_LIFE: u64 = 120;

#[derive(Default)]
pub struct Degrader {
    params: DamageParams,
    tmp: Plane,
    noise: Plane,
}

impl Degrader {
    pub fn new(params: DamageParams) -> Self {
        Degrader {
            params,
            ..Default::default()
        }
    }

    pub fn set_params(&mut self, params: DamageParams) {
        self.params = params;
    }

    pub fn params(&self) -> DamageParams {
        self.params
    }

    /// Damages `frame` in place as frame number `index`. With `mask` (a plane of the luma size),
    /// marks where blotches and scratches were put (blotch wins where both).
    pub fn apply(&mut self, frame: &mut WorkFrame, index: u64, mut mask: Option<&mut Plane>) {
        let p = self.params;
        if let Some(m) = mask.as_deref_mut() {
            if (m.width, m.height) != (frame.width(), frame.height()) {
                *m = Plane::new(frame.width(), frame.height());
            }
            m.data.fill(0.0);
        }
        if p.gate_weave > 0.0 {
            let (dx, dy) = weave_offset(p.seed, index, p.gate_weave);
            let (w, h) = (frame.width() as f32, frame.height() as f32);
            shift(&mut frame.luma, dx, dy, &mut self.tmp);
            for c in frame.chroma.iter_mut() {
                let (sx, sy) = (c.width as f32 / w, c.height as f32 / h);
                shift(c, dx * sx, dy * sy, &mut self.tmp);
            }
        }
        if p.blur > 0.0 {
            gaussian_blur(&mut frame.luma, 2.0 * p.blur, &mut self.tmp);
        }
        if p.flicker > 0.0 {
            flicker(&mut frame.luma, p.seed, index, p.flicker);
        }
        if p.grain > 0.0 {
            self.grain(&mut frame.luma, index);
        }
        if p.scratches > 0.0 {
            scratches(frame, p.seed, index, p.scratches, mask.as_deref_mut());
        }
        if p.blotches > 0.0 {
            blotches(frame, p.seed, index, p.blotches, mask);
        }
        for v in frame.luma.data.iter_mut() {
            *v = v.clamp(0.0, 1.0);
        }
    }

    /// Spatially correlated grain, strongest in the mid-tones.
    fn grain(&mut self, luma: &mut Plane, index: u64) {
        let (w, h) = (luma.width, luma.height);
        if (self.noise.width, self.noise.height) != (w, h) {
            self.noise = Plane::new(w, h);
        }
        let seed = self.params.seed;
        self.noise.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            let mut rng = Rng::new(hash64(&[seed, index, GRAIN, y as u64]));
            for v in row.iter_mut() {
                *v = rng.normal();
            }
        });
        let strength = self.params.grain;
        let noise = &self.noise;
        luma.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            let (n0, n1) = (noise.row(y), noise.row((y + 1).min(h - 1)));
            for x in 0..w {
                // 2x2 clumps: grains are larger than pixels.
                let x1 = (x + 1).min(w - 1);
                let n = 0.5 * (n0[x] + n0[x1] + n1[x] + n1[x1]);
                let v = row[x].clamp(0.0, 1.0);
                let sigma = strength * (0.06 * 4.0 * v * (1.0 - v) + 0.008);
                row[x] += sigma * n;
            }
        });
    }
}

/// Smooth wander plus a little per-frame jitter, up to about 2 px at strength 1.
fn weave_offset(seed: u64, index: u64, strength: f32) -> (f32, f32) {
    let mut phase = Rng::new(hash64(&[seed, WEAVE]));
    let (px, py) = (phase.range_f32(0.0, TAU), phase.range_f32(0.0, TAU));
    let mut jitter = Rng::new(hash64(&[seed, index, WEAVE]));
    let t = index as f32;
    let dx = 1.4 * (0.37 * t + px).sin() + 0.6 * jitter.normal().clamp(-2.0, 2.0);
    let dy = 1.0 * (0.23 * t + py).sin() + 0.4 * jitter.normal().clamp(-2.0, 2.0);
    (strength * dx, strength * dy)
}

/// Bilinear sub-pixel translation with replicated borders.
fn shift(plane: &mut Plane, dx: f32, dy: f32, tmp: &mut Plane) {
    tmp.clone_from(plane);
    let src = &*tmp;
    let w = plane.width;
    plane.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let sy = y as f32 - dy;
        let (y0, fy) = (sy.floor(), sy - sy.floor());
        for (x, v) in row.iter_mut().enumerate() {
            let sx = x as f32 - dx;
            let (x0, fx) = (sx.floor(), sx - sx.floor());
            let (xi, yi) = (x0 as isize, y0 as isize);
            let top = src.get_clamped(xi, yi) * (1.0 - fx) + src.get_clamped(xi + 1, yi) * fx;
            let bottom = src.get_clamped(xi, yi + 1) * (1.0 - fx) + src.get_clamped(xi + 1, yi + 1) * fx;
            *v = top * (1.0 - fy) + bottom * fy;
        }
    });
}

/// Separable Gaussian blur.
pub fn gaussian_blur(plane: &mut Plane, sigma: f32, tmp: &mut Plane) {
    if sigma < 0.05 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let w = plane.width;
    tmp.clone_from(plane);
    // Horizontal into tmp, vertical back into plane.
    {
        let src = &*plane;
        tmp.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            for (x, v) in row.iter_mut().enumerate() {
                *v = kernel
                    .iter()
                    .enumerate()
                    .map(|(i, k)| k * src.get_clamped(x as isize + i as isize - radius, y as isize))
                    .sum();
            }
        });
    }
    let src = &*tmp;
    plane.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, v) in row.iter_mut().enumerate() {
            *v = kernel
                .iter()
                .enumerate()
                .map(|(i, k)| k * src.get_clamped(x as isize, y as isize + i as isize - radius))
                .sum();
        }
    });
}

/// Per-frame gain and offset, with an uneven (gradient) part across the frame.
fn flicker(luma: &mut Plane, seed: u64, index: u64, strength: f32) {
    let mut rng = Rng::new(hash64(&[seed, index, FLICKER]));
    let gain = 1.0 + strength * 0.15 * rng.normal().clamp(-2.5, 2.5);
    let offset = strength * 0.05 * rng.normal().clamp(-2.5, 2.5);
    let (ax, ay) = (
        strength * 0.1 * rng.normal().clamp(-2.0, 2.0),
        strength * 0.1 * rng.normal().clamp(-2.0, 2.0),
    );
    let (w, h) = (luma.width, luma.height);
    luma.data.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let fy = y as f32 / h as f32 - 0.5;
        for (x, v) in row.iter_mut().enumerate() {
            let fx = x as f32 / w as f32 - 0.5;
            *v = *v * gain * (1.0 + ax * fx + ay * fy) + offset;
        }
    });
}

/// One line scratch, fully determined by `(seed, epoch, k)`.
struct Scratch {
    start: u64,
    life: u64,
    x0: f32,
    drift: f32,
    wobble: f32,
    wobble_freq: f32,
    phase: f32,
    width: f32,
    bright: bool,
    intensity: f32,
    gap_phase: f32,
}

impl Scratch {
    fn spawn(seed: u64, epoch: u64, k: u64, width: usize) -> Self {
        let mut r = Rng::new(hash64(&[seed, epoch, k, SCRATCH]));
        Scratch {
            start: epoch * EPOCH + r.below(EPOCH),
            life: 20 + r.below(MAX_SCRATCH_LIFE - 20),
            x0: r.range_f32(0.04, 0.96) * width as f32,
            drift: 0.25 * r.normal(),
            wobble: r.range_f32(0.0, 1.5),
            wobble_freq: r.range_f32(0.05, 0.3),
            phase: r.range_f32(0.0, TAU),
            width: r.range_f32(1.0, 3.0),
            bright: r.next_f32() < 0.6,
            intensity: r.range_f32(0.25, 0.6),
            gap_phase: r.range_f32(0.0, TAU),
        }
    }

    fn alive(&self, t: u64) -> bool {
        t >= self.start && t < self.start + self.life
    }

    fn x_at(&self, t: u64) -> f32 {
        let age = (t - self.start) as f32;
        self.x0 + self.drift * age + self.wobble * (self.wobble_freq * t as f32 + self.phase).sin()
    }
}

fn scratches(frame: &mut WorkFrame, seed: u64, t: u64, strength: f32, mut mask: Option<&mut Plane>) {
    let w = frame.width();
    // About 3 * strength scratches alive on average (spawn rate x mean life).
    let per_epoch = strength * 3.0 * EPOCH as f32 / 70.0;
    let first_epoch = t.saturating_sub(MAX_SCRATCH_LIFE + EPOCH) / EPOCH;
    for epoch in first_epoch..=t / EPOCH {
        let count = Rng::new(hash64(&[seed, epoch, SCRATCH])).poisson(per_epoch);
        for k in 0..count as u64 {
            let s = Scratch::spawn(seed, epoch, k, w);
            if s.alive(t) {
                draw_scratch(frame, &s, t, mask.as_deref_mut());
            }
        }
    }
}

fn draw_scratch(frame: &mut WorkFrame, s: &Scratch, t: u64, mut mask: Option<&mut Plane>) {
    let (w, h) = (frame.width(), frame.height());
    let centre = s.x_at(t);
    let half = s.width / 2.0;
    let (lo, hi) = (
        (centre - half - 1.0).floor().max(0.0) as usize,
        ((centre + half + 1.0).ceil() as usize).min(w),
    );
    for y in 0..h {
        let fy = y as f32;
        // Gaps where the emulsion was not scored, and intensity varying along the line.
        if (fy * 0.021 + s.gap_phase + t as f32 * 0.05).sin() > 0.92 {
            continue;
        }
        let strength = s.intensity * (0.75 + 0.25 * (fy * 0.013 + s.phase + 0.1 * t as f32).sin());
        for x in lo..hi {
            let coverage = (half + 0.5 - (x as f32 + 0.5 - centre).abs()).clamp(0.0, 1.0);
            if coverage <= 0.0 {
                continue;
            }
            let a = strength * coverage;
            let v = frame.luma.get(x, y);
            let target = if s.bright { 1.0 } else { 0.0 };
            frame.luma.set(x, y, v + (target - v) * a);
            if let Some(m) = mask.as_deref_mut() {
                if coverage > 0.25 {
                    m.set(x, y, mask::SCRATCH as f32 / 255.0);
                }
            }
        }
    }
}

fn blotches(frame: &mut WorkFrame, seed: u64, t: u64, strength: f32, mut mask: Option<&mut Plane>) {
    let (w, h) = (frame.width(), frame.height());
    let area = (w * h) as f32 / (640.0 * 480.0);
    let count = Rng::new(hash64(&[seed, t, BLOTCH])).poisson(strength * 20.0 * area);
    for k in 0..count as u64 {
        let mut r = Rng::new(hash64(&[seed, t, BLOTCH, k + 1]));
        let (cx, cy) = (r.range_f32(0.0, w as f32), r.range_f32(0.0, h as f32));
        let max_radius = (0.015 * h as f32).max(1.5);
        let radius = (r.range_f32(0.0, 1.0) * max_radius.ln().max(0.0)).exp().max(0.7);
        let harmonics = [
            (r.range_f32(0.0, 0.3), r.range_f32(0.0, TAU)),
            (r.range_f32(0.0, 0.2), r.range_f32(0.0, TAU)),
            (r.range_f32(0.0, 0.15), r.range_f32(0.0, TAU)),
        ];
        let dark = r.next_f32() < 0.6;
        let value = if dark {
            r.range_f32(0.0, 0.12)
        } else {
            r.range_f32(0.88, 1.0)
        };
        let soft = (0.25 * radius).max(0.6);
        let reach = radius * 1.7 + soft;
        let (x0, x1) = (
            (cx - reach).floor().max(0.0) as usize,
            ((cx + reach).ceil() as usize).min(w),
        );
        let (y0, y1) = (
            (cy - reach).floor().max(0.0) as usize,
            ((cy + reach).ceil() as usize).min(h),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                let d = (dx * dx + dy * dy).sqrt();
                let theta = dy.atan2(dx);
                let edge = radius
                    * (1.0
                        + harmonics
                            .iter()
                            .enumerate()
                            .map(|(i, (a, p))| a * ((i + 1) as f32 * theta + p).sin())
                            .sum::<f32>());
                let alpha = ((edge - d) / soft + 0.5).clamp(0.0, 1.0);
                if alpha <= 0.0 {
                    continue;
                }
                let v = frame.luma.get(x, y);
                frame.luma.set(x, y, v + (value - v) * alpha);
                pull_chroma_to_neutral(frame, x, y, alpha);
                if let Some(m) = mask.as_deref_mut() {
                    if alpha > 0.25 {
                        m.set(x, y, mask::BLOTCH as f32 / 255.0);
                    }
                }
            }
        }
    }
}

/// Dirt has no colour of its own: under a blotch, chroma goes toward neutral.
fn pull_chroma_to_neutral(frame: &mut WorkFrame, x: usize, y: usize, alpha: f32) {
    let (w, h) = (frame.width(), frame.height());
    for c in frame.chroma.iter_mut() {
        let (sx, sy) = (w.div_ceil(c.width), h.div_ceil(c.height));
        let (cx, cy) = (x / sx, y / sy);
        if cx < c.width && cy < c.height {
            let v = c.get(cx, cy);
            c.set(cx, cy, v + (0.5 - v) * alpha / (sx * sy) as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Chroma, Geometry};

    fn picture(w: usize, h: usize) -> WorkFrame {
        let mut f = WorkFrame::new(Geometry {
            width: w,
            height: h,
            chroma: Chroma::Subsampled { sx: 2, sy: 2 },
        });
        for y in 0..h {
            for x in 0..w {
                f.luma.set(x, y, 0.3 + 0.4 * ((x + 2 * y) % 17) as f32 / 17.0);
            }
        }
        f
    }

    fn damaged(params: DamageParams, index: u64) -> (WorkFrame, Plane) {
        let mut f = picture(320, 240);
        let mut m = Plane::new(320, 240);
        Degrader::new(params).apply(&mut f, index, Some(&mut m));
        (f, m)
    }

    fn marked(m: &Plane, code: u8) -> Vec<bool> {
        m.data.iter().map(|&v| (v * 255.0).round() as u8 == code).collect()
    }

    #[test]
    fn same_inputs_give_identical_output_and_seeds_differ() {
        let p = DamageParams {
            seed: 3,
            ..DamageParams::default()
        };
        assert_eq!(damaged(p, 5), damaged(p, 5));
        assert_ne!(damaged(p, 5).0, damaged(DamageParams { seed: 4, ..p }, 5).0);
        assert_ne!(damaged(p, 5).0, damaged(p, 6).0);
    }

    #[test]
    fn all_strengths_zero_is_identity() {
        let p = DamageParams {
            seed: 1,
            blotches: 0.0,
            scratches: 0.0,
            flicker: 0.0,
            grain: 0.0,
            blur: 0.0,
            gate_weave: 0.0,
        };
        let (f, m) = damaged(p, 9);
        assert_eq!(f, picture(320, 240));
        assert!(m.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn blotches_live_one_frame() {
        let p = DamageParams {
            seed: 11,
            blotches: 1.0,
            scratches: 0.0,
            flicker: 0.0,
            grain: 0.0,
            ..DamageParams::default()
        };
        let (a, b) = (
            marked(&damaged(p, 10).1, mask::BLOTCH),
            marked(&damaged(p, 11).1, mask::BLOTCH),
        );
        let (na, overlap) = (
            a.iter().filter(|&&x| x).count(),
            a.iter().zip(&b).filter(|(x, y)| **x && **y).count(),
        );
        assert!(na > 20, "only {na} blotch pixels");
        assert!(
            overlap * 10 < na,
            "{overlap} of {na} blotch pixels also in the next frame"
        );
    }

    #[test]
    fn scratches_persist_for_many_frames() {
        let p = DamageParams {
            seed: 2,
            blotches: 0.0,
            scratches: 1.0,
            flicker: 0.0,
            grain: 0.0,
            ..DamageParams::default()
        };
        let columns = |m: &Plane| -> Vec<usize> {
            (0..m.width)
                .filter(|&x| (0..m.height).filter(|&y| m.get(x, y) > 0.4).count() > m.height / 2)
                .collect()
        };
        let runs: Vec<Vec<usize>> = (100..115).map(|t| columns(&damaged(p, t).1)).collect();
        let lasting = runs[0]
            .iter()
            .filter(|&&x| runs.iter().all(|cols| cols.iter().any(|&c| c.abs_diff(x) <= 6)))
            .count();
        assert!(lasting > 0, "no scratch lasted 15 frames: {runs:?}");
    }

    #[test]
    fn mask_marks_only_changed_pixels() {
        let p = DamageParams {
            seed: 5,
            blotches: 1.0,
            scratches: 1.0,
            flicker: 0.0,
            grain: 0.0,
            ..DamageParams::default()
        };
        let (f, m) = damaged(p, 3);
        let clean = picture(320, 240);
        for i in 0..f.luma.data.len() {
            if m.data[i] == 0.0 {
                let faint = (f.luma.data[i] - clean.luma.data[i]).abs() < 0.3;
                assert!(faint, "unmarked pixel {i} changed a lot");
            } else {
                assert_ne!(f.luma.data[i], clean.luma.data[i], "marked pixel {i} unchanged");
            }
        }
    }

    #[test]
    fn flicker_moves_the_mean_by_varying_amounts() {
        let p = DamageParams {
            seed: 8,
            blotches: 0.0,
            scratches: 0.0,
            flicker: 1.0,
            grain: 0.0,
            ..DamageParams::default()
        };
        let mean = |f: &WorkFrame| f.luma.data.iter().sum::<f32>() / f.luma.data.len() as f32;
        let means: Vec<f32> = (0..6).map(|t| mean(&damaged(p, t).0)).collect();
        let spread = means.iter().cloned().fold(f32::MIN, f32::max) - means.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.02, "means {means:?}");
    }

    #[test]
    fn odd_and_tiny_sizes_work() {
        for (w, h) in [(1, 1), (3, 5), (321, 241)] {
            let mut f = picture(w, h);
            let p = DamageParams {
                blur: 0.5,
                gate_weave: 0.5,
                ..DamageParams::default()
            };
            Degrader::new(p).apply(&mut f, 7, None);
            assert!(f.luma.data.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        }
    }
}
