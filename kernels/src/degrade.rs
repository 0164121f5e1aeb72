//! Old-film damage synthesis, for the `oldfilmdegrade` element, tests, demos and training data.
//!
//! Every random choice is drawn from [`hash64`] of the seed, a time coordinate (frame index,
//! weave knot or scratch epoch) and a purpose tag, so a frame's damage is a pure function of
//! `(params, index, input)`: frames can be rendered in any order, skipped or repeated, and come
//! out bit-identical. Rows are processed in parallel, but every pixel's arithmetic is the same
//! whichever thread does it, so threading never changes the output either.

use crate::frame::{Chroma, Plane, WorkFrame};
use crate::rng::{hash64, Rng};
use rayon::prelude::*;
use std::f32::consts::TAU;

/// Damage strengths, each in `0..=1` (0 switches that kind of damage off; values outside are
/// clamped and NaN counts as 0).
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

impl DamageParams {
    /// Every kind of damage off (the identity), to switch single kinds on in tests and demos.
    pub fn none(seed: u64) -> Self {
        DamageParams {
            seed,
            blotches: 0.0,
            scratches: 0.0,
            flicker: 0.0,
            grain: 0.0,
            blur: 0.0,
            gate_weave: 0.0,
        }
    }

    fn sanitized(self) -> Self {
        DamageParams {
            seed: self.seed,
            blotches: strength(self.blotches),
            scratches: strength(self.scratches),
            flicker: strength(self.flicker),
            grain: strength(self.grain),
            blur: strength(self.blur),
            gate_weave: strength(self.gate_weave),
        }
    }

    fn any(&self) -> bool {
        [
            self.blotches,
            self.scratches,
            self.flicker,
            self.grain,
            self.blur,
            self.gate_weave,
        ]
        .iter()
        .any(|&s| s > 0.0)
    }
}

fn strength(v: f32) -> f32 {
    // Written so that NaN falls to 0.
    if v > 0.0 {
        v.min(1.0)
    } else {
        0.0
    }
}

/// Codes of the damage mask. A mask plane stores `code / 255` (see [`value`]).
pub mod mask {
    pub const CLEAN: u8 = 0;
    pub const SCRATCH: u8 = 128;
    pub const BLOTCH: u8 = 255;

    /// The sample a mask plane holds for `code`.
    pub fn value(code: u8) -> f32 {
        code as f32 / 255.0
    }
}

// Purpose tags: each kind of damage draws from its own stream, so switching one kind on or off
// never reshuffles the others.
const WEAVE: u64 = 0x5745_4156;
const WEAVE_JITTER: u64 = 0x5745_4A49;
const FLICKER: u64 = 0x464C_4943;
const GRAIN: u64 = 0x4752_4149;
const SCRATCHES: u64 = 0x5343_5241;
const BLOTCHES: u64 = 0x424C_4F54;

/// Planes at least this large are processed row-parallel; smaller ones are not worth the hop.
const PARALLEL_MIN_SAMPLES: usize = 64 * 1024;

/// Applies film damage to working frames; keeps scratch buffers so that steady-state frames
/// allocate nothing (they grow on the first frame and whenever the geometry grows).
#[derive(Debug, Default)]
pub struct Degrader {
    params: DamageParams,
    tmp: Vec<f32>,
    noise: Vec<f32>,
    scratches: Vec<Scratch>,
}

impl Degrader {
    pub fn new(params: DamageParams) -> Self {
        Degrader {
            params: params.sanitized(),
            ..Default::default()
        }
    }

    pub fn set_params(&mut self, p: DamageParams) {
        self.params = p.sanitized();
    }

    /// The parameters in use (strengths clamped to `0..=1`).
    pub fn params(&self) -> DamageParams {
        self.params
    }

    /// Damages `frame` in place as frame number `index` of the stream. Output depends only on
    /// (params, index, input pixels): bit-identical for the same inputs, whatever the call
    /// timing or order.
    ///
    /// If `mask` is given it is resized to the luma size if needed and filled with
    /// [`mask`] codes / 255 marking every pixel a blotch or scratch touched (blotch wins where
    /// both). Soft edges are cut to exactly zero where they end, so pixels outside the mask are
    /// untouched by blotches and scratches.
    pub fn apply(&mut self, frame: &mut WorkFrame, index: u64, mut mask: Option<&mut Plane>) {
        let (w, h) = (frame.width(), frame.height());
        if let Some(m) = mask.as_deref_mut() {
            reset_mask(m, w, h);
        }
        let p = self.params;
        if w == 0 || h == 0 || !p.any() {
            return;
        }
        if p.gate_weave > 0.0 {
            self.weave(frame, index);
        }
        if p.blur > 0.0 {
            self.blur(frame);
        }
        self.flicker_grain_clamp(&mut frame.luma, index);
        if p.scratches > 0.0 {
            self.scratch(frame, index, mask.as_deref_mut());
        }
        if p.blotches > 0.0 {
            blotch(frame, &p, index, mask);
        }
    }

    fn weave(&mut self, frame: &mut WorkFrame, index: u64) {
        let (seed, s) = (self.params.seed, self.params.gate_weave);
        let dx = weave_offset(seed, index, 0, s);
        let dy = weave_offset(seed, index, 1, s);
        shift_plane(&mut frame.luma, &mut self.tmp, dx, dy);
        let (sx, sy) = subsampling(frame);
        for c in &mut frame.chroma {
            shift_plane(c, &mut self.tmp, dx / sx, dy / sy);
        }
    }

    fn blur(&mut self, frame: &mut WorkFrame) {
        let sigma = 2.0 * self.params.blur;
        let k = Kernel::gaussian(sigma);
        blur_plane(&mut frame.luma, &mut self.tmp, &k, &k);
        let (sx, sy) = subsampling(frame);
        let (kx, ky) = (Kernel::gaussian(sigma / sx), Kernel::gaussian(sigma / sy));
        for c in &mut frame.chroma {
            blur_plane(c, &mut self.tmp, &kx, &ky);
        }
    }

    /// Flicker and grain are both per-pixel maps on luma, so they share one pass, which also
    /// does the final clamp (later stages only blend towards in-range targets).
    fn flicker_grain_clamp(&mut self, luma: &mut Plane, index: u64) {
        let p = self.params;
        let flicker = Flicker::new(p.seed, index, p.flicker, luma.width, luma.height);
        let grain = if p.grain > 0.0 {
            fill_noise(&mut self.noise, luma.width, luma.height, p.seed, index);
            Some(Grain {
                noise: &self.noise,
                amp: p.grain,
            })
        } else {
            None
        };
        let (w, h) = (luma.width, luma.height);
        for_each_row(&mut luma.data, w, |y, row| {
            flicker.line(y).apply_row(row);
            if let Some(g) = &grain {
                g.apply_row(row, y, h);
            }
        });
    }

    fn scratch(&mut self, frame: &mut WorkFrame, index: u64, mut mask: Option<&mut Plane>) {
        live_scratches(&self.params, index, &mut self.scratches);
        let (sx, sy) = subsampling(frame);
        let (w, h) = (frame.width(), frame.height());
        for s in &self.scratches {
            let look = s.look(index, w, h);
            render_scratch_luma(&mut frame.luma, mask.as_deref_mut(), &look);
            for c in &mut frame.chroma {
                render_scratch_chroma(c, &look, sx, sy);
            }
        }
    }
}

fn reset_mask(m: &mut Plane, w: usize, h: usize) {
    m.width = w;
    m.height = h;
    m.data.clear();
    m.data.resize(w * h, mask::value(mask::CLEAN));
}

fn subsampling(frame: &WorkFrame) -> (f32, f32) {
    match frame.geometry.chroma {
        Chroma::Subsampled { sx, sy } => (sx as f32, sy as f32),
        Chroma::None => (1.0, 1.0),
    }
}

fn for_each_row<F>(data: &mut [f32], width: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if data.len() >= PARALLEL_MIN_SAMPLES {
        data.par_chunks_mut(width).enumerate().for_each(|(y, r)| f(y, r));
    } else {
        data.chunks_mut(width).enumerate().for_each(|(y, r)| f(y, r));
    }
}

#[inline]
fn smoothstep(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

#[inline]
fn clamp_index(i: isize, n: usize) -> usize {
    i.clamp(0, n as isize - 1) as usize
}

// ---------------------------------------------------------------------------------------------
// Gate weave

/// Frames between the random knots the weave interpolates; real weave wanders over a few frames
/// rather than jumping every frame.
const WEAVE_KNOT: u64 = 12;

/// Displacement in pixels along `axis` (0 = x, 1 = y): a smooth random walk through knots plus
/// a little per-frame jitter, bounded by `2 * strength`.
fn weave_offset(seed: u64, index: u64, axis: u64, strength: f32) -> f32 {
    let knot = |k: u64| Rng::from_parts(&[seed, k, WEAVE, axis]).range_f32(-1.0, 1.0);
    let k = index / WEAVE_KNOT;
    let f = smoothstep((index % WEAVE_KNOT) as f32 / WEAVE_KNOT as f32);
    let (a, b) = (knot(k), knot(k.wrapping_add(1)));
    let jitter = Rng::from_parts(&[seed, index, WEAVE_JITTER, axis]).range_f32(-1.0, 1.0);
    2.0 * strength * (0.9 * (a + (b - a) * f) + 0.1 * jitter)
}

fn copy_into(tmp: &mut Vec<f32>, src: &[f32]) {
    tmp.clear();
    tmp.extend_from_slice(src);
}

/// Bilinear resampling at `(x + dx, y + dy)` with replicated borders.
fn shift_plane(plane: &mut Plane, tmp: &mut Vec<f32>, dx: f32, dy: f32) {
    copy_into(tmp, &plane.data);
    let src = &tmp[..];
    let (w, h) = (plane.width, plane.height);
    let (ix, fx) = (dx.floor() as isize, dx - dx.floor());
    let (iy, fy) = (dy.floor() as isize, dy - dy.floor());
    for_each_row(&mut plane.data, w, |y, row| {
        let r0 = &src[clamp_index(y as isize + iy, h) * w..][..w];
        let r1 = &src[clamp_index(y as isize + iy + 1, h) * w..][..w];
        // Output columns whose two source columns are both inside the plane need no clamping.
        let start = (-ix).clamp(0, w as isize) as usize;
        let end = (w as isize - 1 - ix).clamp(start as isize, w as isize) as usize;
        let first = ((start as isize + ix).max(0) as usize).min(w);
        let pairs = r0[first..].windows(2).zip(r1[first..].windows(2));
        for (out, (a, b)) in row[start..end].iter_mut().zip(pairs) {
            *out = bilerp(a[0], a[1], b[0], b[1], fx, fy);
        }
        for x in (0..start).chain(end..w) {
            let x0 = clamp_index(x as isize + ix, w);
            let x1 = clamp_index(x as isize + ix + 1, w);
            row[x] = bilerp(r0[x0], r0[x1], r1[x0], r1[x1], fx, fy);
        }
    });
}

#[inline]
fn bilerp(a0: f32, a1: f32, b0: f32, b1: f32, fx: f32, fy: f32) -> f32 {
    let top = a0 + (a1 - a0) * fx;
    let bottom = b0 + (b1 - b0) * fx;
    top + (bottom - top) * fy
}

// ---------------------------------------------------------------------------------------------
// Blur

const MAX_RADIUS: usize = 8;

/// A normalised 1-D Gaussian held inline, so building one per frame costs no allocation.
#[derive(Clone, Copy, Debug)]
struct Kernel {
    taps: [f32; 2 * MAX_RADIUS + 1],
    radius: usize,
}

impl Kernel {
    fn gaussian(sigma: f32) -> Self {
        let radius = ((3.0 * sigma).ceil() as usize).clamp(1, MAX_RADIUS);
        let mut taps = [0.0; 2 * MAX_RADIUS + 1];
        let denom = 2.0 * sigma.max(1e-3) * sigma.max(1e-3);
        for (i, t) in taps.iter_mut().take(2 * radius + 1).enumerate() {
            let d = i as f32 - radius as f32;
            *t = (-d * d / denom).exp();
        }
        let sum: f32 = taps.iter().sum();
        taps.iter_mut().for_each(|t| *t /= sum);
        Kernel { taps, radius }
    }

    fn taps(&self) -> &[f32] {
        &self.taps[..2 * self.radius + 1]
    }
}

fn blur_plane(plane: &mut Plane, tmp: &mut Vec<f32>, kx: &Kernel, ky: &Kernel) {
    let (w, h, n) = (plane.width, plane.height, plane.data.len());
    tmp.resize(n, 0.0);
    let src = &plane.data;
    for_each_row(&mut tmp[..n], w, |y, out| blur_row(&src[y * w..][..w], out, kx));
    let src = &tmp[..n];
    for_each_row(&mut plane.data, w, |y, out| blur_column_row(src, out, y, h, ky));
}

fn blur_row(src: &[f32], out: &mut [f32], k: &Kernel) {
    let (n, r) = (src.len(), k.radius);
    if n <= 2 * r {
        (0..n).for_each(|x| out[x] = blur_at(src, x, k));
        return;
    }
    // Interior: taps outermost, so the inner loop is a contiguous multiply-add that vectorises.
    let inner = &mut out[r..n - r];
    inner.fill(0.0);
    for (i, &t) in k.taps().iter().enumerate() {
        for (o, &s) in inner.iter_mut().zip(&src[i..]) {
            *o += t * s;
        }
    }
    for x in (0..r).chain(n - r..n) {
        out[x] = blur_at(src, x, k);
    }
}

/// One sample of the horizontal blur with replicated borders.
fn blur_at(src: &[f32], x: usize, k: &Kernel) -> f32 {
    let r = k.radius as isize;
    let taps = k.taps().iter().enumerate();
    taps.map(|(i, &t)| t * src[clamp_index(x as isize + i as isize - r, src.len())])
        .sum()
}

/// One output row of the vertical pass, accumulated a whole source row at a time so the inner
/// loop runs over contiguous memory.
fn blur_column_row(src: &[f32], out: &mut [f32], y: usize, h: usize, k: &Kernel) {
    let w = out.len();
    out.fill(0.0);
    for (i, &t) in k.taps().iter().enumerate() {
        let yy = clamp_index(y as isize + i as isize - k.radius as isize, h);
        for (o, &s) in out.iter_mut().zip(&src[yy * w..][..w]) {
            *o += t * s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flicker and grain

/// Per-frame exposure change: a global gain and offset times a smooth low-order gain field
/// (uneven illumination of the printer or projector lamp).
#[derive(Clone, Copy, Debug)]
struct Flicker {
    gain: f32,
    offset: f32,
    /// Field weights of nx, ny, nx*ny, T2(nx), T2(ny), with `nx, ny` in `[-1, 1]`.
    field: [f32; 5],
    x_scale: f32,
    y_scale: f32,
}

/// A row's flicker, reduced to `y' = y * (a + b nx + c T2(nx)) + offset`.
#[derive(Clone, Copy, Debug)]
struct FlickerLine {
    a: f32,
    b: f32,
    c: f32,
    offset: f32,
    x_scale: f32,
}

fn chebyshev2(t: f32) -> f32 {
    2.0 * t * t - 1.0
}

/// Maps `0..n` onto `[-1, 1]` (a single sample sits at 0).
fn unit_scale(n: usize) -> f32 {
    if n > 1 {
        2.0 / (n - 1) as f32
    } else {
        0.0
    }
}

impl Flicker {
    fn new(seed: u64, index: u64, s: f32, w: usize, h: usize) -> Self {
        let mut rng = Rng::from_parts(&[seed, index, FLICKER]);
        let gain = 1.0 + 0.15 * s * rng.range_f32(-1.0, 1.0);
        let offset = 0.05 * s * rng.range_f32(-1.0, 1.0);
        let mut field = [0.0f32; 5];
        field.iter_mut().for_each(|f| *f = rng.range_f32(-1.0, 1.0));
        // L1-normalised, so the field never departs from 1 by more than `amp`.
        let norm: f32 = field.iter().map(|f| f.abs()).sum::<f32>().max(1e-6);
        let amp = 0.1 * s * rng.range_f32(0.3, 1.0);
        field.iter_mut().for_each(|f| *f *= amp / norm);
        Flicker {
            gain,
            offset,
            field,
            x_scale: unit_scale(w),
            y_scale: unit_scale(h),
        }
    }

    fn line(&self, y: usize) -> FlickerLine {
        let ny = if self.y_scale > 0.0 {
            y as f32 * self.y_scale - 1.0
        } else {
            0.0
        };
        let f = &self.field;
        FlickerLine {
            a: self.gain * (1.0 + f[1] * ny + f[4] * chebyshev2(ny)),
            b: self.gain * (f[0] + f[2] * ny),
            c: self.gain * f[3],
            offset: self.offset,
            x_scale: self.x_scale,
        }
    }
}

impl FlickerLine {
    /// Applies the flicker and clamps to `[0, 1]`.
    fn apply_row(&self, row: &mut [f32]) {
        let bias = if self.x_scale > 0.0 { -1.0 } else { 0.0 };
        for (x, v) in row.iter_mut().enumerate() {
            let nx = x as f32 * self.x_scale + bias;
            let gain = self.a + self.b * nx + self.c * chebyshev2(nx);
            *v = (*v * gain + self.offset).clamp(0.0, 1.0);
        }
    }
}

/// Unit-variance triangular noise from 32 random bits (the sum of two 16-bit uniforms). Grain
/// sums four of these over 2x2, which is as Gaussian as the eye can tell, at a fraction of
/// Box–Muller's cost.
#[inline]
fn triangular(bits: u32) -> f32 {
    let sum = (bits & 0xFFFF) + (bits >> 16);
    (sum as f32 / 65535.0 - 1.0) * 6f32.sqrt()
}

fn fill_noise(noise: &mut Vec<f32>, w: usize, h: usize, seed: u64, index: u64) {
    noise.resize(w * h, 0.0);
    for_each_row(&mut noise[..w * h], w, |y, row| {
        let mut rng = Rng::from_parts(&[seed, index, GRAIN, y as u64]);
        for pair in row.chunks_mut(2) {
            let bits = rng.next_u64();
            pair[0] = triangular(bits as u32);
            if let Some(v) = pair.get_mut(1) {
                *v = triangular((bits >> 32) as u32);
            }
        }
    });
}

struct Grain<'a> {
    noise: &'a [f32],
    amp: f32,
}

impl Grain<'_> {
    /// Grain is the white noise summed over 2x2 (halved to keep unit variance), which gives it
    /// the slight spatial correlation of real silver clumps; it is strongest in mid-tones,
    /// where film grain is most visible, with a small floor so shadows are not dead flat.
    fn apply_row(&self, row: &mut [f32], y: usize, h: usize) {
        let w = row.len();
        let n0 = &self.noise[y * w..][..w];
        let n1 = &self.noise[(y + 1).min(h - 1) * w..][..w];
        let (body, last) = row.split_at_mut(w - 1);
        for ((v, a), b) in body.iter_mut().zip(n0.windows(2)).zip(n1.windows(2)) {
            *v = self.add(*v, 0.5 * (a[0] + a[1] + b[0] + b[1]));
        }
        // The replicated border column: its 2x2 sum is twice its own column pair.
        last[0] = self.add(last[0], n0[w - 1] + n1[w - 1]);
    }

    #[inline]
    fn add(&self, v: f32, g: f32) -> f32 {
        let sigma = self.amp * (0.06 * 4.0 * v * (1.0 - v) + 0.006);
        (v + sigma * g).clamp(0.0, 1.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Scratches

/// Scratches are born in epochs of this many frames; a frame looks back over the epochs whose
/// scratches could still be alive.
const EPOCH: u64 = 32;
const MIN_LIFE: u64 = 20;
const MAX_LIFE: u64 = 120;

/// A line scratch as drawn at birth; everything about it over its life follows from these.
#[derive(Clone, Copy, Debug)]
struct Scratch {
    start: u64,
    life: u64,
    /// Birth position and drift, in fractions of the width so the damage scales with the frame.
    x: f32,
    drift: f32,
    wobble_amp: f32,
    wobble_period: f32,
    wobble_phase: f32,
    /// Horizontal offset between the top and bottom rows, in pixels.
    slant: f32,
    bend_freq: f32,
    bend_phase: f32,
    half_width: f32,
    amp: f32,
    target: f32,
    shade_freq: f32,
    shade_phase: f32,
    gap_freq: f32,
    gap_phase: f32,
    /// Threshold of the gap wave above which the scratch is absent (above 1: no gaps).
    gap_level: f32,
    pulse_period: f32,
    pulse_phase: f32,
}

impl Scratch {
    fn random(rng: &mut Rng, epoch: u64, strength: f32) -> Self {
        Scratch {
            start: epoch.saturating_mul(EPOCH).saturating_add(rng.below(EPOCH)),
            life: MIN_LIFE + rng.below(MAX_LIFE - MIN_LIFE + 1),
            x: rng.next_f32(),
            drift: rng.range_f32(-5e-4, 5e-4),
            wobble_amp: rng.range_f32(0.0, 1.5e-3),
            wobble_period: rng.range_f32(10.0, 40.0),
            wobble_phase: rng.range_f32(0.0, TAU),
            slant: rng.range_f32(-3.0, 3.0),
            bend_freq: rng.range_f32(0.5, 3.0),
            bend_phase: rng.range_f32(0.0, TAU),
            half_width: rng.range_f32(0.5, 1.5),
            amp: rng.range_f32(0.3, 0.7) * (0.6 + 0.4 * strength),
            target: if rng.chance(0.6) { 1.0 } else { 0.0 },
            shade_freq: rng.range_f32(0.5, 4.0),
            shade_phase: rng.range_f32(0.0, TAU),
            gap_freq: rng.range_f32(1.0, 6.0),
            gap_phase: rng.range_f32(0.0, TAU),
            gap_level: if rng.chance(0.35) { rng.range_f32(0.3, 0.8) } else { 2.0 },
            pulse_period: rng.range_f32(5.0, 30.0),
            pulse_phase: rng.range_f32(0.0, TAU),
        }
    }

    fn alive_at(&self, t: u64) -> bool {
        t >= self.start && t - self.start < self.life
    }

    /// The scratch as it looks in frame `t` (which must be within its life).
    fn look(&self, t: u64, w: usize, h: usize) -> ScratchLook {
        let age = (t - self.start) as f32;
        let left = (self.life - 1 - (t - self.start)) as f32;
        let wobble = self.wobble_amp * (TAU * age / self.wobble_period + self.wobble_phase).sin();
        let fade = (0.4 + 0.3 * age).min(0.4 + 0.3 * left).min(1.0);
        let pulse = 0.85 + 0.15 * (TAU * age / self.pulse_period + self.pulse_phase).sin();
        ScratchLook {
            x: (self.x + self.drift * age + wobble) * w as f32,
            inv_h: 1.0 / h as f32,
            amp: self.amp * fade * pulse,
            scratch: *self,
        }
    }
}

/// A scratch resolved for one frame.
#[derive(Clone, Copy, Debug)]
struct ScratchLook {
    x: f32,
    inv_h: f32,
    amp: f32,
    scratch: Scratch,
}

impl ScratchLook {
    /// Centre (luma pixels) and strength of the scratch on luma row `y` (may be fractional).
    fn at_row(&self, y: f32) -> (f32, f32) {
        let s = &self.scratch;
        let v = y * self.inv_h;
        let centre = self.x + s.slant * (v - 0.5) + 0.4 * (TAU * s.bend_freq * v + s.bend_phase).sin();
        let shade = 0.75 + 0.25 * (TAU * s.shade_freq * v + s.shade_phase).sin();
        let gap_wave = (TAU * s.gap_freq * v + s.gap_phase).sin();
        let gap = ((s.gap_level - gap_wave) * 5.0).clamp(0.0, 1.0);
        (centre, self.amp * shade * gap)
    }
}

/// Fills `out` with the scratches alive at frame `t` (reusing its capacity).
fn live_scratches(p: &DamageParams, t: u64, out: &mut Vec<Scratch>) {
    out.clear();
    // Expected births per epoch so that, with the mean life, about 3 * strength are alive.
    let mean_life = (MIN_LIFE + MAX_LIFE) as f32 / 2.0;
    let births = 3.0 * p.scratches * EPOCH as f32 / mean_life;
    let first = t.saturating_sub(MAX_LIFE) / EPOCH;
    for epoch in first..=t / EPOCH {
        let mut rng = Rng::from_parts(&[p.seed, epoch, SCRATCHES]);
        for _ in 0..rng.poisson(births) {
            let s = Scratch::random(&mut rng, epoch, p.scratches);
            if s.alive_at(t) {
                out.push(s);
            }
        }
    }
}

/// Area of pixel `x` (a unit cell centred on `x`) covered by the band `centre ± half`.
#[inline]
fn coverage(x: f32, centre: f32, half: f32) -> f32 {
    let lo = (x - 0.5).max(centre - half);
    let hi = (x + 0.5).min(centre + half);
    (hi - lo).clamp(0.0, 1.0)
}

/// Blends the band `centre ± half` of `row` towards `target`; returns the touched pixel range.
fn stroke_row(row: &mut [f32], centre: f32, half: f32, amp: f32, target: f32) -> std::ops::Range<usize> {
    let lo = (centre - half - 0.5).floor().max(0.0) as usize;
    let hi = ((centre + half + 0.5).ceil().max(0.0) as usize).min(row.len());
    if amp <= 0.0 || lo >= hi {
        return 0..0;
    }
    let (mut first, mut end) = (hi, lo);
    for (x, v) in row.iter_mut().enumerate().take(hi).skip(lo) {
        let alpha = amp * coverage(x as f32, centre, half);
        if alpha > 0.0 {
            *v += alpha * (target - *v);
            first = first.min(x);
            end = x + 1;
        }
    }
    if first < end {
        first..end
    } else {
        0..0
    }
}

fn render_scratch_luma(luma: &mut Plane, mut mask: Option<&mut Plane>, look: &ScratchLook) {
    let (s, code) = (&look.scratch, mask::value(mask::SCRATCH));
    for y in 0..luma.height {
        let (centre, amp) = look.at_row(y as f32);
        let touched = stroke_row(luma.row_mut(y), centre, s.half_width, amp, s.target);
        if let Some(m) = mask.as_deref_mut() {
            m.row_mut(y)[touched].fill(code);
        }
    }
}

/// Scratches strip the emulsion's dyes as well, so chroma is pulled towards neutral.
fn render_scratch_chroma(c: &mut Plane, look: &ScratchLook, sx: f32, sy: f32) {
    for cy in 0..c.height {
        let (centre, amp) = look.at_row((cy as f32 + 0.5) * sy - 0.5);
        let centre_c = (centre + 0.5) / sx - 0.5;
        stroke_row(c.row_mut(cy), centre_c, look.scratch.half_width / sx, amp, 0.5);
    }
}

// ---------------------------------------------------------------------------------------------
// Blotches

/// Expected blotches per frame at strength 1 on a 640x480 frame.
const BLOTCHES_PER_VGA: f32 = 20.0;

/// Dust (bright) or dirt (dark) on one frame: a soft-edged disc whose radius is modulated by a
/// few angular harmonics, so no two have the same irregular outline.
#[derive(Clone, Copy, Debug)]
struct Blotch {
    cx: f32,
    cy: f32,
    radius: f32,
    /// Relative amplitude and phase of the 2nd, 3rd and 4th angular harmonics.
    harmonics: [(f32, f32); 3],
    edge: f32,
    opacity: f32,
    target: f32,
}

impl Blotch {
    fn random(rng: &mut Rng, w: usize, h: usize) -> Self {
        // Log-uniform sizes: many specks, few large blotches. Diameters reach about 1.5% of the
        // height (more with the harmonics), and a few pixels even on small frames.
        let max_radius = (0.0075 * h as f32).max(2.0);
        let radius = 0.5 * (max_radius / 0.5).powf(rng.next_f32());
        let mut harmonics = [(0.0, 0.0); 3];
        for (k, hm) in harmonics.iter_mut().enumerate() {
            *hm = (rng.range_f32(0.0, 0.3 / (k + 1) as f32), rng.range_f32(0.0, TAU));
        }
        let dust = rng.chance(0.45);
        Blotch {
            cx: rng.range_f32(-0.5, w as f32 - 0.5),
            cy: rng.range_f32(-0.5, h as f32 - 0.5),
            radius,
            harmonics,
            edge: 0.5 + 0.15 * radius,
            opacity: rng.range_f32(0.8, 1.0),
            target: if dust {
                rng.range_f32(0.85, 0.98)
            } else {
                rng.range_f32(0.02, 0.15)
            },
        }
    }

    /// Beyond this distance from the centre the blotch is exactly transparent.
    fn extent(&self) -> f32 {
        let bumps: f32 = self.harmonics.iter().map(|h| h.0).sum();
        self.radius * (1.0 + bumps) + self.edge
    }

    /// Opacity at luma position `(x, y)`: full inside the outline, falling smoothly to exactly
    /// zero one `edge` outside it.
    fn alpha(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let dist = (dx * dx + dy * dy).sqrt();
        if dist >= self.extent() {
            return 0.0;
        }
        let theta = dy.atan2(dx);
        let bump: f32 = self
            .harmonics
            .iter()
            .enumerate()
            .map(|(k, &(a, phase))| a * ((k + 2) as f32 * theta + phase).cos())
            .sum();
        let u = (dist - self.radius * (1.0 + bump)) / self.edge;
        self.opacity * (1.0 - smoothstep(0.5 * (u + 1.0)))
    }

    /// Inclusive-exclusive pixel bounds of the blotch on a plane subsampled by `s`.
    fn bounds(&self, centre: f32, s: f32, n: usize) -> std::ops::Range<usize> {
        let e = self.extent();
        let lo = ((centre - e + 0.5) / s - 0.5).floor().max(0.0) as usize;
        let hi = (((centre + e + 0.5) / s - 0.5).ceil().max(-1.0) + 1.0) as usize;
        lo.min(n)..hi.min(n)
    }
}

fn blotch(frame: &mut WorkFrame, p: &DamageParams, index: u64, mut mask: Option<&mut Plane>) {
    let (w, h) = (frame.width(), frame.height());
    let (sx, sy) = subsampling(frame);
    let mut rng = Rng::new(hash64(&[p.seed, index, BLOTCHES]));
    let expected = p.blotches * BLOTCHES_PER_VGA * (w * h) as f32 / (640.0 * 480.0);
    for _ in 0..rng.poisson(expected) {
        let b = Blotch::random(&mut rng, w, h);
        render_blotch(&mut frame.luma, mask.as_deref_mut(), &b, (1.0, 1.0), b.target);
        for c in &mut frame.chroma {
            render_blotch(c, None, &b, (sx, sy), 0.5);
        }
    }
}

/// Blends a blotch into a plane subsampled by `s`, sampling its opacity at each sample's centre
/// in luma coordinates so that luma and chroma stay registered.
fn render_blotch(plane: &mut Plane, mut mask: Option<&mut Plane>, b: &Blotch, s: (f32, f32), target: f32) {
    let code = mask::value(mask::BLOTCH);
    for y in b.bounds(b.cy, s.1, plane.height) {
        let ly = (y as f32 + 0.5) * s.1 - 0.5;
        for x in b.bounds(b.cx, s.0, plane.width) {
            let alpha = b.alpha((x as f32 + 0.5) * s.0 - 0.5, ly);
            if alpha > 0.0 {
                let v = plane.get(x, y);
                plane.set(x, y, v + alpha * (target - v));
                if let Some(m) = mask.as_deref_mut() {
                    m.set(x, y, code);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Geometry;

    fn geometry(w: usize, h: usize, chroma: Chroma) -> Geometry {
        Geometry {
            width: w,
            height: h,
            chroma,
        }
    }

    /// Mid-grey with gentle texture, so every kind of damage has room to show.
    fn textured(w: usize, h: usize, chroma: Chroma) -> WorkFrame {
        let mut f = WorkFrame::new(geometry(w, h, chroma));
        for y in 0..h {
            for x in 0..w {
                let v = 0.5 + 0.2 * ((x as f32 * 0.07).sin() * (y as f32 * 0.05).cos());
                f.luma.set(x, y, v);
            }
        }
        for (i, c) in f.chroma.iter_mut().enumerate() {
            c.data.iter_mut().for_each(|v| *v = 0.4 + 0.2 * i as f32);
        }
        f
    }

    fn only(seed: u64, set: impl FnOnce(&mut DamageParams)) -> DamageParams {
        let mut p = DamageParams::none(seed);
        set(&mut p);
        p
    }

    fn damaged(p: DamageParams, src: &WorkFrame, index: u64) -> (WorkFrame, Plane) {
        let mut f = src.clone();
        let mut m = Plane::new(0, 0);
        Degrader::new(p).apply(&mut f, index, Some(&mut m));
        (f, m)
    }

    fn code_count(m: &Plane, code: u8) -> usize {
        m.data.iter().filter(|&&v| v == mask::value(code)).count()
    }

    fn mean(p: &Plane) -> f64 {
        p.data.iter().map(|&v| v as f64).sum::<f64>() / p.data.len() as f64
    }

    const C420: Chroma = Chroma::Subsampled { sx: 2, sy: 2 };

    #[test]
    fn same_inputs_give_bit_identical_output_in_any_order() {
        let src = textured(160, 120, C420);
        let p = DamageParams {
            blur: 0.4,
            gate_weave: 0.7,
            seed: 3,
            ..Default::default()
        };
        let (a, ma) = damaged(p, &src, 7);
        let mut d = Degrader::new(p);
        let mut m = Plane::new(1, 1);
        for index in [9, 7, 2] {
            let mut f = src.clone();
            d.apply(&mut f, index, Some(&mut m));
            if index == 7 {
                assert_eq!(f, a);
                assert_eq!(m, ma);
            }
        }
    }

    #[test]
    fn row_parallel_frames_are_repeatable() {
        // 400x300 crosses the parallel threshold, so rows land on threads in varying order.
        let src = textured(400, 300, Chroma::None);
        let p = DamageParams {
            blur: 1.0,
            gate_weave: 1.0,
            ..Default::default()
        };
        assert_eq!(damaged(p, &src, 5).0, damaged(p, &src, 5).0);
    }

    #[test]
    fn seed_and_index_change_the_damage() {
        let src = textured(160, 120, C420);
        let p = DamageParams::default();
        let (a, ma) = damaged(p, &src, 4);
        let (b, _) = damaged(DamageParams { seed: 1, ..p }, &src, 4);
        let (c, mc) = damaged(p, &src, 5);
        assert_ne!(a.luma, b.luma);
        assert_ne!(a.luma, c.luma);
        assert_ne!(ma, mc);
    }

    fn blotch_overlap(m0: &Plane, m1: &Plane) -> (usize, usize) {
        let b = mask::value(mask::BLOTCH);
        let both = m0.data.iter().zip(&m1.data).filter(|(&x, &y)| x == b && y == b).count();
        (both, code_count(m0, mask::BLOTCH))
    }

    #[test]
    fn blotches_last_exactly_one_frame() {
        let src = textured(640, 480, Chroma::None);
        let p = only(11, |p| p.blotches = 1.0);
        let (mut both, mut total) = (0, 0);
        for t in 0..10 {
            let (o, n) = blotch_overlap(&damaged(p, &src, t).1, &damaged(p, &src, t + 1).1);
            both += o;
            total += n;
        }
        assert!(total > 200, "too few blotch pixels: {total}");
        assert!(
            (both as f64) < 0.05 * total as f64,
            "{both} of {total} blotch pixels repeat"
        );
    }

    #[test]
    fn blotch_count_and_mix_are_plausible() {
        // Count blobs by their mask pixels' darkness: both dust and dirt must appear.
        let src = WorkFrame {
            luma: Plane::filled(640, 480, 0.5),
            ..WorkFrame::new(geometry(640, 480, Chroma::None))
        };
        let p = only(5, |p| p.blotches = 0.5);
        let (mut bright, mut dark) = (0, 0);
        for t in 0..20 {
            let (f, _) = damaged(p, &src, t);
            bright += f.luma.data.iter().filter(|&&v| v > 0.8).count();
            dark += f.luma.data.iter().filter(|&&v| v < 0.2).count();
        }
        assert!(bright > 50 && dark > 50, "bright {bright}, dark {dark}");
        let mut rng = Rng::new(1);
        let n: u32 = (0..1000).map(|_| rng.poisson(0.5 * BLOTCHES_PER_VGA)).sum();
        assert!((9000..11000).contains(&n));
    }

    fn scratch_columns(m: &Plane) -> Vec<usize> {
        let code = mask::value(mask::SCRATCH);
        (0..m.width)
            .filter(|&x| (0..m.height).filter(|&y| m.get(x, y) == code).count() > m.height / 4)
            .collect()
    }

    fn near(cols: &[usize], x: usize, d: usize) -> Option<usize> {
        cols.iter().copied().find(|&c| c.abs_diff(x) <= d)
    }

    #[test]
    fn scratches_persist_and_move_slowly() {
        let src = textured(320, 240, Chroma::None);
        let p = only(21, |p| p.scratches = 1.0);
        let cols: Vec<Vec<usize>> = (0..160).map(|t| scratch_columns(&damaged(p, &src, t).1)).collect();
        let (mut kept, mut total) = (0, 0);
        for t in 0..cols.len() - 1 {
            total += cols[t].len();
            kept += cols[t].iter().filter(|&&x| near(&cols[t + 1], x, 2).is_some()).count();
        }
        assert!(total > 100, "too few scratch columns: {total}");
        assert!(
            kept as f64 > 0.9 * total as f64,
            "{kept} of {total} scratch columns persist"
        );
        assert!(longest_track(&cols) >= 10, "no scratch lasts 10 frames");
    }

    /// Longest run of frames over which some scratch column can be followed within 2 px.
    fn longest_track(cols: &[Vec<usize>]) -> usize {
        let mut best = 0;
        for (t0, start) in cols.iter().enumerate() {
            for &x0 in start {
                let (mut x, mut len) = (x0, 1);
                while let Some(next) = cols.get(t0 + len).and_then(|c| near(c, x, 2)) {
                    x = next;
                    len += 1;
                }
                best = best.max(len);
            }
        }
        best
    }

    #[test]
    fn live_scratch_count_follows_strength() {
        let mut live = Vec::new();
        let mean_live = |s: f32, live: &mut Vec<Scratch>| {
            let p = only(2, |p| p.scratches = s);
            (0..4000u64)
                .map(|t| {
                    live_scratches(&p, t, live);
                    live.len()
                })
                .sum::<usize>() as f64
                / 4000.0
        };
        let full = mean_live(1.0, &mut live);
        let half = mean_live(0.5, &mut live);
        assert!((2.0..4.0).contains(&full), "strength 1: {full} live");
        assert!((0.8..2.2).contains(&half), "strength 0.5: {half} live");
    }

    #[test]
    fn zero_strength_is_the_identity() {
        for chroma in [Chroma::None, C420] {
            let src = textured(97, 63, chroma);
            let (f, m) = damaged(DamageParams::none(9), &src, 3);
            assert_eq!(f, src);
            assert_eq!(code_count(&m, mask::CLEAN), 97 * 63);
        }
    }

    #[test]
    fn mask_marks_exactly_the_changed_pixels() {
        let src = textured(320, 240, C420);
        let p = only(4, |p| {
            p.blotches = 1.0;
            p.scratches = 1.0;
        });
        for t in [0, 50, 100] {
            let (f, m) = damaged(p, &src, t);
            let clean = mask::value(mask::CLEAN);
            let mut marked_unchanged = 0;
            for ((&o, &i), &k) in f.luma.data.iter().zip(&src.luma.data).zip(&m.data) {
                if k == clean {
                    assert_eq!(o, i, "unmarked pixel changed");
                } else if o == i {
                    marked_unchanged += 1;
                }
            }
            let marked = m.data.len() - code_count(&m, mask::CLEAN);
            assert!(marked > 0);
            assert!(
                marked_unchanged * 50 < marked,
                "{marked_unchanged} of {marked} marked but unchanged"
            );
        }
    }

    #[test]
    fn blotches_win_over_scratches_and_pull_chroma_to_neutral() {
        let mut src = textured(320, 240, Chroma::Subsampled { sx: 1, sy: 1 });
        src.chroma[0].data.fill(0.8);
        let p = only(8, |p| {
            p.blotches = 1.0;
            p.scratches = 1.0;
        });
        let (f, m) = (0..)
            .map(|t| damaged(p, &src, t))
            .find(|(_, m)| code_count(m, mask::SCRATCH) > 0)
            .unwrap();
        let b = mask::value(mask::BLOTCH);
        let cores = m
            .data
            .iter()
            .zip(&f.chroma[0].data)
            .filter(|(&k, &c)| k == b && c < 0.6)
            .count();
        assert!(cores > 0, "no blotch pulled chroma towards 0.5");
        assert!(code_count(&m, mask::SCRATCH) > 0 && code_count(&m, mask::BLOTCH) > 0);
    }

    #[test]
    fn odd_sizes_and_layouts_do_not_panic() {
        let p = DamageParams {
            blotches: 1.0,
            scratches: 1.0,
            flicker: 1.0,
            grain: 1.0,
            blur: 1.0,
            gate_weave: 1.0,
            seed: 77,
        };
        let layouts = [
            Chroma::None,
            C420,
            Chroma::Subsampled { sx: 2, sy: 1 },
            Chroma::Subsampled { sx: 1, sy: 1 },
        ];
        let mut d = Degrader::new(p);
        let mut m = Plane::new(0, 0);
        for &(w, h) in &[(1, 1), (3, 5), (2, 1), (321, 241)] {
            for chroma in layouts {
                for t in [0, 1, 33, 1000, u64::MAX] {
                    let mut f = textured(w, h, chroma);
                    d.apply(&mut f, t, Some(&mut m));
                    assert!(f.luma.data.iter().all(|v| (0.0..=1.0).contains(v)));
                    assert_eq!((m.width, m.height), (w, h));
                }
            }
        }
    }

    #[test]
    fn flicker_moves_the_mean_by_varying_amounts() {
        let src = textured(160, 120, Chroma::None);
        let base = mean(&src.luma);
        let p = only(6, |p| p.flicker = 1.0);
        let shifts: Vec<f64> = (0..30).map(|t| mean(&damaged(p, &src, t).0.luma) - base).collect();
        let avg = shifts.iter().sum::<f64>() / shifts.len() as f64;
        let spread = (shifts.iter().map(|s| (s - avg).powi(2)).sum::<f64>() / shifts.len() as f64).sqrt();
        assert!(spread > 0.02, "flicker spread {spread}");
        assert!(shifts.iter().all(|s| s.abs() < 0.15));
        // Flicker is not damage on the film: the mask stays clean and chroma untouched.
        let (f, m) = damaged(p, &textured(160, 120, C420), 3);
        assert_eq!(code_count(&m, mask::CLEAN), 160 * 120);
        assert_eq!(f.chroma, textured(160, 120, C420).chroma);
    }

    #[test]
    fn flicker_field_is_uneven() {
        let src = WorkFrame {
            luma: Plane::filled(200, 100, 0.5),
            ..WorkFrame::new(geometry(200, 100, Chroma::None))
        };
        let p = only(1, |p| p.flicker = 1.0);
        let uneven = (0..10).any(|t| {
            let f = damaged(p, &src, t).0.luma;
            (f.get(0, 0) - f.get(199, 99)).abs() > 0.01
        });
        assert!(uneven);
    }

    fn residual(p: DamageParams, level: f32, t: u64) -> Vec<f32> {
        let src = WorkFrame {
            luma: Plane::filled(200, 200, level),
            ..WorkFrame::new(geometry(200, 200, Chroma::None))
        };
        damaged(p, &src, t).0.luma.data.iter().map(|v| v - level).collect()
    }

    fn std_dev(xs: &[f32]) -> f64 {
        let m = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        (xs.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
    }

    #[test]
    fn grain_is_strongest_in_midtones_correlated_and_new_every_frame() {
        let p = only(3, |p| p.grain = 1.0);
        let mid = residual(p, 0.5, 0);
        let dark = residual(p, 0.05, 0);
        assert!((std_dev(&mid) - 0.066).abs() < 0.01, "mid-tone grain {}", std_dev(&mid));
        assert!(std_dev(&dark) < 0.5 * std_dev(&mid));
        let pairs = mid.chunks(200).flat_map(|r| r.windows(2)).map(|w| (w[0] * w[1]) as f64);
        let corr = pairs.sum::<f64>() / (200.0 * 199.0) / std_dev(&mid).powi(2);
        assert!((0.3..0.7).contains(&corr), "neighbour correlation {corr}");
        assert_ne!(mid, residual(p, 0.5, 1));
    }

    fn naive_shift(src: &Plane, dx: f32, dy: f32) -> Plane {
        let mut out = src.clone();
        let (ix, iy) = (dx.floor() as isize, dy.floor() as isize);
        let (fx, fy) = (dx - dx.floor(), dy - dy.floor());
        for y in 0..src.height {
            for x in 0..src.width {
                let (x0, y0) = (x as isize + ix, y as isize + iy);
                let at = |xx, yy| src.get_clamped(xx, yy);
                let v = bilerp(at(x0, y0), at(x0 + 1, y0), at(x0, y0 + 1), at(x0 + 1, y0 + 1), fx, fy);
                out.set(x, y, v);
            }
        }
        out
    }

    fn ramp(w: usize, h: usize) -> Plane {
        let mut p = Plane::new(w, h);
        p.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = ((i * 37) % 101) as f32 / 100.0);
        p
    }

    #[test]
    fn fast_shift_and_blur_match_their_naive_forms() {
        let mut tmp = Vec::new();
        for w in [1, 2, 3, 7, 20] {
            let src = ramp(w, 4);
            for &(dx, dy) in &[
                (0.0, 0.0),
                (-3.5, 1.25),
                (2.75, -2.5),
                (0.3, 0.6),
                (-0.2, -1.9),
                (5.5, 0.0),
            ] {
                let mut fast = src.clone();
                shift_plane(&mut fast, &mut tmp, dx, dy);
                assert_eq!(fast, naive_shift(&src, dx, dy), "w {w} d ({dx}, {dy})");
            }
            for sigma in [0.3, 1.0, 2.0] {
                let k = Kernel::gaussian(sigma);
                let mut out = vec![0.0; w];
                blur_row(src.row(1), &mut out, &k);
                for (x, &o) in out.iter().enumerate() {
                    assert!(
                        (o - blur_at(src.row(1), x, &k)).abs() < 1e-6,
                        "w {w} sigma {sigma} x {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn blur_softens_and_weave_moves_smoothly() {
        let mut src = textured(160, 120, C420);
        src.luma.data.iter_mut().step_by(3).for_each(|v| *v += 0.2);
        let energy = |p: &Plane| p.data.windows(2).map(|w| ((w[1] - w[0]) as f64).powi(2)).sum::<f64>();
        let (blurred, _) = damaged(only(0, |p| p.blur = 1.0), &src, 0);
        assert!(energy(&blurred.luma) < 0.8 * energy(&src.luma));
        let offsets: Vec<f32> = (0..200).map(|t| weave_offset(5, t, 0, 1.0)).collect();
        assert!(offsets.iter().all(|d| d.abs() <= 2.0));
        assert!(offsets.windows(2).all(|w| (w[1] - w[0]).abs() < 1.0));
        assert!(offsets.iter().cloned().fold(0.0f32, f32::max) - offsets.iter().cloned().fold(0.0f32, f32::min) > 1.0);
        let (woven, _) = damaged(only(5, |p| p.gate_weave = 1.0), &src, 3);
        assert_ne!(woven.luma, src.luma);
    }
}
