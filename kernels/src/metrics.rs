//! Scores for restored luma, used by `oldfilm score`, the tests and the benchmarks.
//!
//! Everything works on luma [`Plane`]s in `[0, 1]`; PSNR uses a peak of 1.0, which gives the same
//! number as 8-bit PSNR on the quantised frames. Sums are taken in `f64` in a fixed order, so
//! scores are reproducible to the last bit.

use crate::degrade::mask;
use crate::frame::Plane;
use rayon::prelude::*;
use std::fmt;

/// [`psnr`] never exceeds this (identical planes score it), so that averages stay finite.
pub const PSNR_CAP: f64 = 100.0;

/// Threshold [`ScoreAccumulator`] uses for [`spike_fraction`].
pub const SPIKE_THRESHOLD: f32 = 0.08;

/// How far a mask sample may be from `code / 255` and still count as that code.
const MASK_TOLERANCE: f32 = 0.1;

fn assert_same_size(a: &Plane, b: &Plane) {
    assert_eq!((a.width, a.height), (b.width, b.height), "planes of different sizes");
}

/// Mean squared difference; 0 for empty planes. Panics if the sizes differ.
pub fn mse(a: &Plane, b: &Plane) -> f64 {
    assert_same_size(a, b);
    if a.data.is_empty() {
        return 0.0;
    }
    let sum: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum();
    sum / a.data.len() as f64
}

/// PSNR in dB with peak 1.0, capped at [`PSNR_CAP`] (which identical planes score).
pub fn psnr(a: &Plane, b: &Plane) -> f64 {
    let e = mse(a, b);
    if e == 0.0 {
        PSNR_CAP
    } else {
        (-10.0 * e.log10()).min(PSNR_CAP)
    }
}

/// Mean sample value; 0 for an empty plane.
pub fn mean(p: &Plane) -> f64 {
    if p.data.is_empty() {
        return 0.0;
    }
    p.data.iter().map(|&v| v as f64).sum::<f64>() / p.data.len() as f64
}

// ---------------------------------------------------------------------------------------------
// SSIM

const SSIM_RADIUS: usize = 5;
const SSIM_TAPS: usize = 2 * SSIM_RADIUS + 1;
const SSIM_SIGMA: f32 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

/// Windowed local sums of a, b, a², b² and ab.
type Moments = [f32; 5];

fn ssim_kernel() -> [f32; SSIM_TAPS] {
    let mut k = [0.0f32; SSIM_TAPS];
    for (i, t) in k.iter_mut().enumerate() {
        let d = i as f32 - SSIM_RADIUS as f32;
        *t = (-d * d / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|t| *t /= sum);
    k
}

/// The taps of the window at `x` that fall inside `0..n`, as `(first source index, taps)`.
/// Windows cut by the border are renormalised, which makes SSIM defined for any size.
fn window(k: &[f32; SSIM_TAPS], x: usize, n: usize) -> (usize, &[f32], f32) {
    let lo = SSIM_RADIUS.saturating_sub(x);
    let hi = SSIM_TAPS.min(n + SSIM_RADIUS - x);
    let taps = &k[lo..hi];
    (x + lo - SSIM_RADIUS, taps, taps.iter().sum())
}

fn horizontal_moments(a: &Plane, b: &Plane, k: &[f32; SSIM_TAPS]) -> Vec<Moments> {
    let w = a.width;
    let mut out = vec![[0.0f32; 5]; a.data.len()];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        let (ra, rb) = (a.row(y), b.row(y));
        for (x, m) in row.iter_mut().enumerate() {
            let (start, taps, norm) = window(k, x, w);
            let mut acc = [0.0f32; 5];
            for (&t, (&va, &vb)) in taps.iter().zip(ra[start..].iter().zip(&rb[start..])) {
                acc[0] += t * va;
                acc[1] += t * vb;
                acc[2] += t * va * va;
                acc[3] += t * vb * vb;
                acc[4] += t * va * vb;
            }
            *m = acc.map(|v| v / norm);
        }
    });
    out
}

fn ssim_at(m: &[f64; 5]) -> f64 {
    let (ma, mb) = (m[0], m[1]);
    let (vaa, vbb, vab) = (m[2] - ma * ma, m[3] - mb * mb, m[4] - ma * mb);
    ((2.0 * ma * mb + C1) * (2.0 * vab + C2)) / ((ma * ma + mb * mb + C1) * (vaa + vbb + C2))
}

/// Sum of the SSIM map over columns `cols` of row `y`.
fn ssim_row_sum(
    h: &[Moments],
    w: usize,
    rows: usize,
    y: usize,
    cols: std::ops::Range<usize>,
    k: &[f32; SSIM_TAPS],
) -> f64 {
    let (start, taps, norm) = window(k, y, rows);
    cols.map(|x| {
        let mut acc = [0.0f64; 5];
        for (i, &t) in taps.iter().enumerate() {
            let src = &h[(start + i) * w + x];
            acc.iter_mut().zip(src).for_each(|(a, &s)| *a += (t * s) as f64);
        }
        ssim_at(&acc.map(|v| v / norm as f64))
    })
    .sum()
}

/// Mean SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5, C1 = 0.01², C2 = 0.03²
/// for a peak of 1, computed separably.
///
/// As in the reference implementation, the mean is over the pixels whose whole window lies
/// inside the image. Images smaller than the window average over every pixel instead, with
/// windows cut at the border and renormalised, so even a 1x1 image has a score (1.0 when equal).
/// Empty planes score 1.0. Panics if the sizes differ.
pub fn ssim(a: &Plane, b: &Plane) -> f64 {
    assert_same_size(a, b);
    let (w, h) = (a.width, a.height);
    if a.data.is_empty() {
        return 1.0;
    }
    let k = ssim_kernel();
    let moments = horizontal_moments(a, b, &k);
    let valid = |n: usize| {
        if n >= SSIM_TAPS {
            SSIM_RADIUS..n - SSIM_RADIUS
        } else {
            0..n
        }
    };
    let (xs, ys) = if w >= SSIM_TAPS && h >= SSIM_TAPS {
        (valid(w), valid(h))
    } else {
        (0..w, 0..h)
    };
    let count = xs.len() * ys.len();
    let rows: Vec<f64> = ys
        .into_par_iter()
        .map(|y| ssim_row_sum(&moments, w, h, y, xs.clone(), &k))
        .collect();
    rows.iter().sum::<f64>() / count as f64
}

// ---------------------------------------------------------------------------------------------
// Sharpness, masks, spikes

/// The 4-neighbour Laplacian at (x, y), borders replicated.
#[inline]
fn laplacian(p: &Plane, x: isize, y: isize) -> f64 {
    let c = p.get_clamped(x, y);
    let around = p.get_clamped(x - 1, y) + p.get_clamped(x + 1, y) + p.get_clamped(x, y - 1) + p.get_clamped(x, y + 1);
    (4.0 * c - around) as f64
}

/// Sum over the plane of `f(x, y)`, rows in parallel.
fn sum_over(w: usize, h: usize, f: impl Fn(isize, isize) -> f64 + Sync) -> f64 {
    let rows: Vec<f64> = (0..h as isize)
        .into_par_iter()
        .map(|y| (0..w as isize).map(|x| f(x, y)).sum())
        .collect();
    rows.iter().sum()
}

/// High-frequency energy: mean squared response of the 4-neighbour Laplacian (replicated
/// borders). Compare as `sharpness(out) / sharpness(reference)`, the "sharpness kept".
pub fn sharpness(p: &Plane) -> f64 {
    if p.data.is_empty() {
        return 0.0;
    }
    sum_over(p.width, p.height, |x, y| laplacian(p, x, y).powi(2)) / p.data.len() as f64
}

/// The reference's detail that the output kept: the output's Laplacian projected onto the
/// reference's, `Σ L(out)·L(ref) / Σ L(ref)²` (1 = all of it; blur lowers it). Unlike
/// [`sharpness`], grain left in the output does not raise it (it is uncorrelated with the
/// reference's detail), so it tells "sharp" from "noisy". `None` for a flat reference.
/// Panics if the sizes differ.
pub fn detail_kept(out: &Plane, reference: &Plane) -> Option<f64> {
    assert_same_size(out, reference);
    let (w, h) = (out.width, out.height);
    let energy = sum_over(w, h, |x, y| laplacian(reference, x, y).powi(2));
    let shared = sum_over(w, h, |x, y| laplacian(out, x, y) * laplacian(reference, x, y));
    (energy > 1e-9).then(|| shared / energy)
}

/// Whether a mask sample holds `code`.
#[inline]
fn has_code(m: f32, code: u8) -> bool {
    (m - mask::value(code)).abs() < MASK_TOLERANCE
}

/// Sum of `|a - b|` over the pixels whose mask holds `code` (see [`mask`]), and their count.
/// Panics if the sizes differ.
pub fn masked_mae(a: &Plane, b: &Plane, mask: &Plane, code: u8) -> (f64, usize) {
    assert_same_size(a, b);
    assert_same_size(a, mask);
    let hits = a
        .data
        .iter()
        .zip(&b.data)
        .zip(&mask.data)
        .filter(|(_, &m)| has_code(m, code));
    hits.fold((0.0, 0), |(sum, n), ((&x, &y), _)| (sum + (x - y).abs() as f64, n + 1))
}

/// Fraction of pixels where `cur` differs from both `prev` and `next` by more than `threshold`
/// in the same direction: one-frame spikes, a no-reference measure of blotches left behind.
/// Panics if the sizes differ.
pub fn spike_fraction(prev: &Plane, cur: &Plane, next: &Plane, threshold: f32) -> f64 {
    assert_same_size(prev, cur);
    assert_same_size(cur, next);
    if cur.data.is_empty() {
        return 0.0;
    }
    let spikes = prev
        .data
        .iter()
        .zip(&cur.data)
        .zip(&next.data)
        .filter(|((&p, &c), &n)| (c - p > threshold && c - n > threshold) || (p - c > threshold && n - c > threshold))
        .count();
    spikes as f64 / cur.data.len() as f64
}

// ---------------------------------------------------------------------------------------------
// Accumulation over a clip

/// A running mean that knows whether it saw anything.
#[derive(Clone, Copy, Debug, Default)]
struct Mean {
    sum: f64,
    n: usize,
}

impl Mean {
    fn push(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn value(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Mean absolute change of a per-frame quantity between consecutive frames (×255), for flicker.
#[derive(Clone, Copy, Debug, Default)]
struct Steadiness {
    last: Option<f64>,
    steps: Mean,
}

impl Steadiness {
    /// `None` breaks the chain: the next value starts a new run.
    fn push(&mut self, v: Option<f64>) {
        if let (Some(last), Some(v)) = (self.last, v) {
            self.steps.push((v - last).abs() * 255.0);
        }
        self.last = v;
    }
}

/// The last two frames of a stream, kept in preallocated copies, for three-frame measures.
#[derive(Clone, Debug, Default)]
struct History {
    older: Option<Plane>,
    old: Option<Plane>,
    spikes: Mean,
}

impl History {
    /// Scores the spike rate of the previous frame now that its successor `next` is known, then
    /// remembers `next`. `None` (no frame of this kind this time) breaks the chain.
    fn push(&mut self, next: Option<&Plane>) {
        let Some(next) = next else {
            self.older = None;
            self.old = None;
            return;
        };
        if let (Some(prev), Some(cur)) = (&self.older, &self.old) {
            if same_size(prev, next) {
                self.spikes.push(spike_fraction(prev, cur, next, SPIKE_THRESHOLD));
            }
        }
        std::mem::swap(&mut self.older, &mut self.old);
        match &mut self.old {
            Some(p) if same_size(p, next) => p.copy_from(next),
            slot => *slot = Some(next.clone()),
        }
    }
}

fn same_size(a: &Plane, b: &Plane) -> bool {
    (a.width, a.height) == (b.width, b.height)
}

/// Error on masked pixels of the output and of the input, against the reference.
#[derive(Clone, Copy, Debug, Default)]
struct MaskedError {
    out: f64,
    input: f64,
    seen: bool,
}

impl MaskedError {
    fn push(&mut self, out: &Plane, input: &Plane, reference: &Plane, mask: &Plane, code: u8) {
        self.out += masked_mae(out, reference, mask, code).0;
        self.input += masked_mae(input, reference, mask, code).0;
        self.seen = true;
    }

    fn ratio(&self) -> Option<f64> {
        (self.seen && self.input > 0.0).then(|| self.out / self.input)
    }
}

/// Collects scores frame by frame; [`ScoreAccumulator::report`] summarises them.
#[derive(Clone, Debug, Default)]
pub struct ScoreAccumulator {
    frames: usize,
    psnr: Mean,
    ssim: Mean,
    psnr_input: Mean,
    ssim_input: Mean,
    flicker: Steadiness,
    flicker_input: Steadiness,
    flicker_vs_ref: Steadiness,
    sharpness_kept: Mean,
    detail_kept: Mean,
    blotch: MaskedError,
    scratch: MaskedError,
    out_history: History,
    input_history: History,
}

impl ScoreAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next frame of the clip. `reference` is the clean original, `input` the damaged
    /// frame the restorer saw and `mask` its damage mask (see [`mask`]); each is optional, and
    /// the measures that need a missing one skip this frame. Panics if sizes differ.
    pub fn push(&mut self, out: &Plane, reference: Option<&Plane>, input: Option<&Plane>, mask: Option<&Plane>) {
        self.frames += 1;
        let m_out = mean(out);
        self.flicker.push(Some(m_out));
        self.flicker_input.push(input.map(mean));
        self.flicker_vs_ref.push(reference.map(|r| m_out - mean(r)));
        self.out_history.push(Some(out));
        self.input_history.push(input);
        if let Some(r) = reference {
            self.push_reference(out, r, input, mask);
        }
    }

    fn push_reference(&mut self, out: &Plane, r: &Plane, input: Option<&Plane>, mask: Option<&Plane>) {
        self.psnr.push(psnr(out, r));
        self.ssim.push(ssim(out, r));
        let sharp_ref = sharpness(r);
        if sharp_ref > 0.0 {
            self.sharpness_kept.push(sharpness(out) / sharp_ref);
        }
        if let Some(kept) = detail_kept(out, r) {
            self.detail_kept.push(kept);
        }
        let Some(input) = input else { return };
        self.psnr_input.push(psnr(input, r));
        self.ssim_input.push(ssim(input, r));
        if let Some(m) = mask {
            self.blotch.push(out, input, r, m, mask::BLOTCH);
            self.scratch.push(out, input, r, m, mask::SCRATCH);
        }
    }

    pub fn report(&self) -> ScoreReport {
        ScoreReport {
            frames: self.frames,
            psnr_y: self.psnr.value(),
            ssim: self.ssim.value(),
            psnr_input: self.psnr_input.value(),
            ssim_input: self.ssim_input.value(),
            flicker: self.flicker.steps.value(),
            flicker_input: self.flicker_input.steps.value(),
            flicker_vs_ref: self.flicker_vs_ref.steps.value(),
            sharpness_kept: self.sharpness_kept.value(),
            detail_kept: self.detail_kept.value(),
            blotch_error_ratio: self.blotch.ratio(),
            scratch_error_ratio: self.scratch.ratio(),
            spike_rate: self.out_history.spikes.value(),
            spike_rate_input: self.input_history.spikes.value(),
        }
    }
}

/// Summary of a clip. `None` where the inputs a measure needs were never given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreReport {
    pub frames: usize,
    /// Mean per-frame PSNR of the output against the reference, each capped at [`PSNR_CAP`].
    pub psnr_y: Option<f64>,
    pub ssim: Option<f64>,
    /// The same for the damaged input, to show the improvement.
    pub psnr_input: Option<f64>,
    pub ssim_input: Option<f64>,
    /// Mean |mean_t − mean_{t−1}| × 255 of the output (no reference needed).
    pub flicker: Option<f64>,
    pub flicker_input: Option<f64>,
    /// Mean frame-to-frame change of (mean_out − mean_ref) × 255: flicker the restorer added or
    /// left, with the reference's own brightness changes taken out.
    pub flicker_vs_ref: Option<f64>,
    /// Mean of sharpness(out) / sharpness(ref) over frames whose reference is not flat.
    pub sharpness_kept: Option<f64>,
    /// Mean of [`detail_kept`] over frames whose reference is not flat: detail kept, grain not
    /// counted.
    pub detail_kept: Option<f64>,
    /// Absolute error on blotch pixels of the output over that of the input (0 = all repaired,
    /// 1 = untouched).
    pub blotch_error_ratio: Option<f64>,
    pub scratch_error_ratio: Option<f64>,
    /// Mean fraction of one-frame spike pixels ([`spike_fraction`] at [`SPIKE_THRESHOLD`]).
    pub spike_rate: Option<f64>,
    pub spike_rate_input: Option<f64>,
}

fn json_number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".to_string(),
    }
}

impl ScoreReport {
    fn fields(&self) -> [(&'static str, Option<f64>); 13] {
        [
            ("psnr_y", self.psnr_y),
            ("ssim", self.ssim),
            ("psnr_input", self.psnr_input),
            ("ssim_input", self.ssim_input),
            ("flicker", self.flicker),
            ("flicker_input", self.flicker_input),
            ("flicker_vs_ref", self.flicker_vs_ref),
            ("sharpness_kept", self.sharpness_kept),
            ("detail_kept", self.detail_kept),
            ("blotch_error_ratio", self.blotch_error_ratio),
            ("scratch_error_ratio", self.scratch_error_ratio),
            ("spike_rate", self.spike_rate),
            ("spike_rate_input", self.spike_rate_input),
        ]
    }

    /// One JSON object on one line, `"name": value` separated by `", "` (scripts and tests
    /// read it as such); missing (and non-finite) values are `null`.
    pub fn to_json(&self) -> String {
        let fields = self.fields().map(|(k, v)| format!("\"{k}\": {}", json_number(v)));
        let frames = format!("\"frames\": {}", self.frames);
        format!("{{{frames}, {}}}", fields.join(", "))
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, Option<f64>, Option<f64>, usize); 7] = [
            ("PSNR Y (dB)", self.psnr_y, self.psnr_input, 2),
            ("SSIM", self.ssim, self.ssim_input, 4),
            ("flicker (/255)", self.flicker, self.flicker_input, 3),
            ("flicker vs ref (/255)", self.flicker_vs_ref, None, 3),
            ("sharpness kept", self.sharpness_kept, None, 3),
            ("detail kept", self.detail_kept, None, 3),
            ("spike rate", self.spike_rate, self.spike_rate_input, 5),
        ];
        writeln!(f, "{:<24}{:>12}{:>12}", "metric", "output", "input")?;
        writeln!(f, "{:<24}{:>12}", "frames", self.frames)?;
        for (name, out, input, d) in rows {
            writeln!(f, "{name:<24}{:>12}{:>12}", cell(out, d), cell(input, d))?;
        }
        writeln!(
            f,
            "{:<24}{:>12}",
            "blotch error ratio",
            cell(self.blotch_error_ratio, 3)
        )?;
        write!(
            f,
            "{:<24}{:>12}",
            "scratch error ratio",
            cell(self.scratch_error_ratio, 3)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn textured(w: usize, h: usize) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                p.set(x, y, 0.5 + 0.3 * ((x as f32 * 0.3).sin() * (y as f32 * 0.2).cos()));
            }
        }
        p
    }

    fn noisy(p: &Plane, sigma: f32, seed: u64) -> Plane {
        let mut rng = Rng::new(seed);
        let mut out = p.clone();
        out.data
            .iter_mut()
            .for_each(|v| *v = (*v + sigma * rng.normal()).clamp(0.0, 1.0));
        out
    }

    fn offset(p: &Plane, d: f32) -> Plane {
        let mut out = p.clone();
        out.data.iter_mut().for_each(|v| *v += d);
        out
    }

    #[test]
    fn psnr_of_identical_is_the_cap_and_averages_stay_finite() {
        let p = textured(20, 10);
        assert_eq!(psnr(&p, &p), PSNR_CAP);
        assert_eq!(psnr(&p, &offset(&p, 2e-6)), PSNR_CAP);
        let mut acc = ScoreAccumulator::new();
        acc.push(&p, Some(&p), None, None);
        assert_eq!(acc.report().psnr_y, Some(PSNR_CAP));
    }

    #[test]
    fn psnr_of_constant_offset_is_known() {
        let a = Plane::filled(16, 9, 0.25);
        assert!((psnr(&a, &offset(&a, 0.1)) - 20.0).abs() < 1e-4);
        assert!((psnr(&a, &offset(&a, 0.01)) - 40.0).abs() < 1e-3);
    }

    #[test]
    fn ssim_is_one_for_identical_and_falls_with_noise() {
        for &(w, h) in &[(1, 1), (3, 5), (10, 30), (64, 48)] {
            let p = textured(w, h);
            assert!((ssim(&p, &p) - 1.0).abs() < 1e-9, "{w}x{h}");
        }
        let p = textured(64, 48);
        let scores: Vec<f64> = [0.01, 0.03, 0.1, 0.3]
            .iter()
            .map(|&s| ssim(&p, &noisy(&p, s, 1)))
            .collect();
        assert!(scores[0] < 1.0);
        assert!(scores.windows(2).all(|w| w[1] < w[0]), "{scores:?}");
        assert!(scores[3] < 0.5, "{scores:?}");
    }

    #[test]
    fn ssim_matches_a_direct_2d_window_in_the_interior() {
        // SSIM of a single 11x11 image is the single full window at its centre.
        let a = textured(11, 11);
        let b = noisy(&a, 0.05, 2);
        let k = ssim_kernel();
        let mut m = [0.0f64; 5];
        for y in 0..11 {
            for x in 0..11 {
                let wgt = (k[x] * k[y]) as f64;
                let (va, vb) = (a.get(x, y) as f64, b.get(x, y) as f64);
                for (acc, v) in m.iter_mut().zip([va, vb, va * va, vb * vb, va * vb]) {
                    *acc += wgt * v;
                }
            }
        }
        assert!((ssim(&a, &b) - ssim_at(&m)).abs() < 1e-5);
    }

    #[test]
    fn ssim_ignores_brightness_more_than_noise() {
        let p = textured(40, 40);
        assert!(ssim(&p, &offset(&p, 0.05)) > ssim(&p, &noisy(&p, 0.05, 3)));
    }

    #[test]
    fn mean_and_sharpness() {
        assert!((mean(&Plane::filled(3, 3, 0.4)) - 0.4).abs() < 1e-7);
        assert_eq!(sharpness(&Plane::filled(5, 5, 0.7)), 0.0);
        let sharp = noisy(&Plane::filled(32, 32, 0.5), 0.1, 4);
        let mut soft = sharp.clone();
        for y in 0..32 {
            for x in 0..32 {
                let s: f32 = (0..3)
                    .flat_map(|dy| (0..3).map(move |dx| (dx, dy)))
                    .map(|(dx, dy)| sharp.get_clamped(x + dx - 1, y + dy - 1))
                    .sum();
                soft.set(x as usize, y as usize, s / 9.0);
            }
        }
        assert!(sharpness(&soft) < 0.3 * sharpness(&sharp));
    }

    #[test]
    fn detail_kept_counts_lost_detail_but_not_added_grain() {
        // Fine detail (a few pixels a period), so that a blur has something to take away.
        let mut reference = Plane::new(96, 80);
        for y in 0..80 {
            for x in 0..96 {
                reference.set(x, y, 0.5 + 0.3 * (x as f32 * 1.1).sin() * (y as f32 * 0.9).cos());
            }
        }
        assert!((detail_kept(&reference, &reference).unwrap() - 1.0).abs() < 1e-9);
        // Grain on top: sharpness rises well above the reference's, detail kept barely moves.
        let grainy = noisy(&reference, 0.05, 9);
        assert!(sharpness(&grainy) > 1.5 * sharpness(&reference));
        let kept = detail_kept(&grainy, &reference).unwrap();
        assert!((kept - 1.0).abs() < 0.05, "grain counted as detail: {kept}");
        // A 3x3 blur loses detail, and the measure says so.
        let mut soft = reference.clone();
        for y in 0..80isize {
            for x in 0..96isize {
                let s: f32 = (0..9)
                    .map(|i| reference.get_clamped(x + i % 3 - 1, y + i / 3 - 1))
                    .sum();
                soft.set(x as usize, y as usize, s / 9.0);
            }
        }
        assert!(detail_kept(&soft, &reference).unwrap() < 0.6);
        assert_eq!(detail_kept(&reference, &Plane::filled(96, 80, 0.3)), None);
    }

    #[test]
    fn flicker_is_large_for_alternating_and_zero_for_constant_clips() {
        let base = textured(32, 24);
        let (mut steady, mut flashing) = (ScoreAccumulator::new(), ScoreAccumulator::new());
        for t in 0..10 {
            steady.push(&base, None, None, None);
            flashing.push(
                &offset(&base, if t % 2 == 0 { 0.05 } else { -0.05 }),
                Some(&base),
                Some(&base),
                None,
            );
        }
        assert_eq!(steady.report().flicker, Some(0.0));
        assert!((flashing.report().flicker.unwrap() - 25.5).abs() < 0.01);
        assert!((flashing.report().flicker_vs_ref.unwrap() - 25.5).abs() < 0.01);
        assert_eq!(flashing.report().flicker_input, Some(0.0));
        assert_eq!(steady.report().flicker_vs_ref, None);
    }

    fn code_plane(w: usize, h: usize, code: u8, region: impl Fn(usize, usize) -> bool) -> Plane {
        let mut m = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                if region(x, y) {
                    m.set(x, y, mask::value(code));
                }
            }
        }
        m
    }

    #[test]
    fn masked_errors_count_only_their_code() {
        let r = textured(20, 20);
        let mut m = code_plane(20, 20, mask::BLOTCH, |x, y| x < 5 && y < 5);
        for y in 10..20 {
            m.set(7, y, mask::value(mask::SCRATCH));
        }
        let mut input = r.clone();
        let mut out = r.clone();
        for (i, v) in input.data.iter_mut().enumerate() {
            if m.data[i] > 0.0 {
                *v += 0.4;
                out.data[i] += if m.data[i] > 0.9 { 0.1 } else { 0.2 };
            }
        }
        input.data[399] += 0.5; // Unmasked damage counts for neither.
        let (sum, n) = masked_mae(&input, &r, &m, mask::BLOTCH);
        assert_eq!(n, 25);
        assert!((sum - 25.0 * 0.4).abs() < 1e-4);
        assert_eq!(masked_mae(&input, &r, &m, mask::SCRATCH).1, 10);
        assert_eq!(masked_mae(&input, &r, &m, mask::CLEAN).1, 400 - 35);
        let mut acc = ScoreAccumulator::new();
        acc.push(&out, Some(&r), Some(&input), Some(&m));
        let rep = acc.report();
        assert!((rep.blotch_error_ratio.unwrap() - 0.25).abs() < 1e-3);
        assert!((rep.scratch_error_ratio.unwrap() - 0.5).abs() < 1e-3);
        assert!(rep.psnr_y.unwrap() > rep.psnr_input.unwrap());
        assert!(rep.ssim.unwrap() > rep.ssim_input.unwrap());
    }

    fn with_square(base: &Plane, v: f32) -> Plane {
        let mut p = base.clone();
        for y in 10..14 {
            for x in 10..14 {
                p.set(x, y, v);
            }
        }
        p
    }

    #[test]
    fn spike_fraction_finds_one_frame_spikes_only() {
        let base = Plane::filled(32, 32, 0.4);
        let (bright, dark) = (with_square(&base, 0.9), with_square(&base, 0.0));
        let sixteen = 16.0 / 1024.0;
        assert_eq!(spike_fraction(&base, &bright, &base, 0.08), sixteen);
        assert_eq!(spike_fraction(&base, &dark, &base, 0.08), sixteen);
        assert_eq!(spike_fraction(&bright, &bright, &bright, 0.08), 0.0);
        assert_eq!(
            spike_fraction(&base, &bright, &bright, 0.08),
            0.0,
            "a cut is not a spike"
        );
        assert_eq!(
            spike_fraction(&dark, &base, &bright, 0.08),
            0.0,
            "a ramp is not a spike"
        );
        assert_eq!(spike_fraction(&base, &with_square(&base, 0.45), &base, 0.08), 0.0);
    }

    #[test]
    fn accumulator_spike_rate_needs_three_frames() {
        let base = Plane::filled(32, 32, 0.4);
        let spike = with_square(&base, 0.9);
        let mut acc = ScoreAccumulator::new();
        acc.push(&base, None, Some(&spike), None);
        acc.push(&base, None, Some(&spike), None);
        assert_eq!(acc.report().spike_rate, None);
        acc.push(&spike, None, Some(&spike), None);
        acc.push(&base, None, Some(&base), None);
        let rep = acc.report();
        assert_eq!(rep.spike_rate, Some(0.5 * 16.0 / 1024.0));
        assert_eq!(rep.spike_rate_input, Some(0.0));
        assert_eq!(rep.frames, 4);
    }

    #[test]
    fn json_and_table_show_every_field() {
        let mut acc = ScoreAccumulator::new();
        let p = textured(16, 16);
        acc.push(&p, Some(&offset(&p, 0.1)), None, None);
        let rep = acc.report();
        let json = rep.to_json();
        assert!(json.starts_with("{\"frames\": 1, \"psnr_y\": 19.99"), "{json}");
        assert!(json.contains("\"psnr_input\": null"));
        assert!(json.contains("\"flicker_input\": null"));
        assert!(json.ends_with('}'));
        assert_eq!(json.matches(':').count(), 14);
        let table = rep.to_string();
        assert!(table.contains("PSNR Y (dB)") && table.contains("20.00") && table.contains("n/a"));
    }
}
