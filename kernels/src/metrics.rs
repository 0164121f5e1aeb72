//! Scoring: PSNR, SSIM, temporal flicker, sharpness, error on damaged pixels, one-frame spikes.
//! All on luma planes in [0, 1]; PSNR uses peak 1 (the same as 8-bit PSNR).

use crate::degrade::mask;
use crate::frame::Plane;
use rayon::prelude::*;
use std::fmt;

/// PSNR caps at this for identical planes, so means stay finite.
pub const PSNR_CAP: f64 = 100.0;

pub fn mse(a: &Plane, b: &Plane) -> f64 {
    let sum: f64 = a
        .data
        .par_iter()
        .zip(&b.data)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    sum / a.data.len().max(1) as f64
}

/// PSNR in dB, capped at [`PSNR_CAP`].
pub fn psnr(a: &Plane, b: &Plane) -> f64 {
    let m = mse(a, b);
    if m <= 0.0 {
        PSNR_CAP
    } else {
        (10.0 * (1.0 / m).log10()).min(PSNR_CAP)
    }
}

pub fn mean(p: &Plane) -> f64 {
    p.data.par_iter().map(|&v| v as f64).sum::<f64>() / p.data.len().max(1) as f64
}

/// Gaussian-weighted SSIM (Wang et al. 2004): 11x11 window, sigma 1.5, clamped borders.
pub fn ssim(a: &Plane, b: &Plane) -> f64 {
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let kernel = gaussian_kernel(1.5, 5);
    let blur = |f: &(dyn Fn(usize) -> f32 + Sync)| separable(a.width, a.height, f, &kernel);
    let mu_a = blur(&|i| a.data[i]);
    let mu_b = blur(&|i| b.data[i]);
    let aa = blur(&|i| a.data[i] * a.data[i]);
    let bb = blur(&|i| b.data[i] * b.data[i]);
    let ab = blur(&|i| a.data[i] * b.data[i]);
    let total: f64 = (0..a.data.len())
        .into_par_iter()
        .map(|i| {
            let (ma, mb) = (mu_a[i] as f64, mu_b[i] as f64);
            let va = aa[i] as f64 - ma * ma;
            let vb = bb[i] as f64 - mb * mb;
            let cov = ab[i] as f64 - ma * mb;
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
        })
        .sum();
    total / a.data.len().max(1) as f64
}

fn gaussian_kernel(sigma: f32, radius: usize) -> Vec<f32> {
    let k: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let d = i as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = k.iter().sum();
    k.into_iter().map(|v| v / total).collect()
}

fn separable(w: usize, h: usize, f: &(dyn Fn(usize) -> f32 + Sync), kernel: &[f32]) -> Vec<f32> {
    let r = (kernel.len() / 2) as isize;
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    let mut tmp = vec![0.0f32; w * h];
    tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, out) in row.iter_mut().enumerate() {
            *out = kernel
                .iter()
                .enumerate()
                .map(|(i, k)| k * f(y * w + clamp(x as isize + i as isize - r, w)))
                .sum();
        }
    });
    let mut out = vec![0.0f32; w * h];
    out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
        for (x, o) in row.iter_mut().enumerate() {
            *o = kernel
                .iter()
                .enumerate()
                .map(|(i, k)| k * tmp[clamp(y as isize + i as isize - r, h) * w + x])
                .sum();
        }
    });
    out
}

/// High-frequency energy: mean squared Laplacian.
pub fn sharpness(p: &Plane) -> f64 {
    let (w, h) = (p.width, p.height);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let sum: f64 = (1..h - 1)
        .into_par_iter()
        .map(|y| {
            (1..w - 1)
                .map(|x| {
                    let l = 4.0 * p.get(x, y) - p.get(x - 1, y) - p.get(x + 1, y) - p.get(x, y - 1) - p.get(x, y + 1);
                    (l as f64).powi(2)
                })
                .sum::<f64>()
        })
        .sum();
    sum / ((w - 2) * (h - 2)) as f64
}

/// Whether a mask sample holds `code` (mask planes carry `code / 255`).
#[inline]
fn has_code(v: f32, code: u8) -> bool {
    (v * 255.0 - code as f32).abs() < 26.0
}

/// Sum of absolute errors and pixel count where `mask` holds `code`.
pub fn masked_mae(a: &Plane, b: &Plane, mask: &Plane, code: u8) -> (f64, usize) {
    a.data
        .iter()
        .zip(&b.data)
        .zip(&mask.data)
        .filter(|(_, &m)| has_code(m, code))
        .fold((0.0, 0), |(s, n), ((x, y), _)| (s + (x - y).abs() as f64, n + 1))
}

/// Fraction of pixels of `cur` that differ from both `prev` and `next` in the same direction by
/// more than `threshold`: one-frame spikes, a no-reference measure of dust left behind.
pub fn spike_fraction(prev: &Plane, cur: &Plane, next: &Plane, threshold: f32) -> f64 {
    let count = cur
        .data
        .par_iter()
        .zip(&prev.data)
        .zip(&next.data)
        .filter(|((c, p), n)| {
            let (a, b) = (**c - **p, **c - **n);
            a * b > 0.0 && a.abs().min(b.abs()) > threshold
        })
        .count();
    count as f64 / cur.data.len().max(1) as f64
}

/// Threshold for [`spike_fraction`] in reports (about 20/255).
pub const SPIKE_THRESHOLD: f32 = 0.08;

/// Scores averaged over a clip, with `None` where the needed inputs were not given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreReport {
    pub frames: usize,
    pub psnr_y: Option<f64>,
    pub ssim: Option<f64>,
    pub psnr_input: Option<f64>,
    pub ssim_input: Option<f64>,
    /// Mean |mean_t - mean_{t-1}| of the output, in 8-bit levels.
    pub flicker: Option<f64>,
    pub flicker_input: Option<f64>,
    /// Mean frame-to-frame change of (output mean - reference mean), in 8-bit levels.
    pub flicker_vs_ref: Option<f64>,
    pub sharpness_kept: Option<f64>,
    pub blotch_error_ratio: Option<f64>,
    pub scratch_error_ratio: Option<f64>,
    pub spike_rate: Option<f64>,
}

impl ScoreReport {
    pub fn to_json(&self) -> String {
        let field = |name: &str, v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("\"{name}\": {v:.6}"),
            _ => format!("\"{name}\": null"),
        };
        let fields = [
            format!("\"frames\": {}", self.frames),
            field("psnr_y", self.psnr_y),
            field("ssim", self.ssim),
            field("psnr_input", self.psnr_input),
            field("ssim_input", self.ssim_input),
            field("flicker", self.flicker),
            field("flicker_input", self.flicker_input),
            field("flicker_vs_ref", self.flicker_vs_ref),
            field("sharpness_kept", self.sharpness_kept),
            field("blotch_error_ratio", self.blotch_error_ratio),
            field("scratch_error_ratio", self.scratch_error_ratio),
            field("spike_rate", self.spike_rate),
        ];
        format!("{{{}}}", fields.join(", "))
    }
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        writeln!(f, "frames scored            {}", self.frames)?;
        writeln!(
            f,
            "PSNR-Y (dB)              {}   (input {})",
            show(self.psnr_y, 2),
            show(self.psnr_input, 2)
        )?;
        writeln!(
            f,
            "SSIM                     {}   (input {})",
            show(self.ssim, 4),
            show(self.ssim_input, 4)
        )?;
        writeln!(
            f,
            "flicker (8-bit levels)   {}   (input {})",
            show(self.flicker, 3),
            show(self.flicker_input, 3)
        )?;
        writeln!(f, "flicker vs reference     {}", show(self.flicker_vs_ref, 3))?;
        writeln!(f, "sharpness kept           {}", show(self.sharpness_kept, 3))?;
        writeln!(f, "blotch error / input     {}", show(self.blotch_error_ratio, 3))?;
        writeln!(f, "scratch error / input    {}", show(self.scratch_error_ratio, 3))?;
        write!(f, "one-frame spike rate     {}", show(self.spike_rate, 5))
    }
}

/// Accumulates scores frame by frame.
#[derive(Default)]
pub struct ScoreAccumulator {
    frames: usize,
    psnr: Sum,
    ssim: Sum,
    psnr_input: Sum,
    ssim_input: Sum,
    flicker: Sum,
    flicker_input: Sum,
    flicker_vs_ref: Sum,
    sharpness: Sum,
    blotch: (f64, f64),
    scratch: (f64, f64),
    spikes: Sum,
    last_means: Option<(f64, Option<f64>, Option<f64>)>,
    /// The two previous output frames, for the spike measure.
    history: [Plane; 2],
}

#[derive(Default, Clone, Copy)]
struct Sum {
    total: f64,
    n: usize,
}

impl Sum {
    fn add(&mut self, v: f64) {
        self.total += v;
        self.n += 1;
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.total / self.n as f64)
    }
}

impl ScoreAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, out: &Plane, reference: Option<&Plane>, input: Option<&Plane>, mask: Option<&Plane>) {
        let m_out = mean(out);
        let m_ref = reference.map(mean);
        let m_in = input.map(mean);
        if let Some((p_out, p_ref, p_in)) = self.last_means {
            self.flicker.add((m_out - p_out).abs() * 255.0);
            if let (Some(a), Some(b)) = (m_in, p_in) {
                self.flicker_input.add((a - b).abs() * 255.0);
            }
            if let (Some(r), Some(pr)) = (m_ref, p_ref) {
                self.flicker_vs_ref.add(((m_out - r) - (p_out - pr)).abs() * 255.0);
            }
        }
        self.last_means = Some((m_out, m_ref, m_in));
        if let Some(r) = reference {
            self.psnr.add(psnr(out, r));
            self.ssim.add(ssim(out, r));
            let sr = sharpness(r);
            if sr > 0.0 {
                self.sharpness.add(sharpness(out) / sr);
            }
            if let Some(i) = input {
                self.psnr_input.add(psnr(i, r));
                self.ssim_input.add(ssim(i, r));
                if let Some(m) = mask {
                    let (eo, _) = masked_mae(out, r, m, mask::BLOTCH);
                    let (ei, _) = masked_mae(i, r, m, mask::BLOTCH);
                    self.blotch.0 += eo;
                    self.blotch.1 += ei;
                    let (eo, _) = masked_mae(out, r, m, mask::SCRATCH);
                    let (ei, _) = masked_mae(i, r, m, mask::SCRATCH);
                    self.scratch.0 += eo;
                    self.scratch.1 += ei;
                }
            }
        }
        if self.frames >= 2 && self.history[0].data.len() == out.data.len() {
            // history[0] is t-2, history[1] is t-1: score t-1 as the middle frame.
            self.spikes
                .add(spike_fraction(&self.history[0], &self.history[1], out, SPIKE_THRESHOLD));
        }
        self.history.swap(0, 1);
        if (self.history[1].width, self.history[1].height) != (out.width, out.height) {
            self.history[1] = out.clone();
        } else {
            self.history[1].copy_from(out);
        }
        self.frames += 1;
    }

    pub fn report(&self) -> ScoreReport {
        let ratio = |(o, i): (f64, f64)| (i > 0.0).then(|| o / i);
        ScoreReport {
            frames: self.frames,
            psnr_y: self.psnr.mean(),
            ssim: self.ssim.mean(),
            psnr_input: self.psnr_input.mean(),
            ssim_input: self.ssim_input.mean(),
            flicker: self.flicker.mean(),
            flicker_input: self.flicker_input.mean(),
            flicker_vs_ref: self.flicker_vs_ref.mean(),
            sharpness_kept: self.sharpness.mean(),
            blotch_error_ratio: ratio(self.blotch),
            scratch_error_ratio: ratio(self.scratch),
            spike_rate: self.spikes.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize) -> Plane {
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                p.set(x, y, 0.2 + 0.6 * (((x * 7 + y * 13) % 23) as f32 / 23.0));
            }
        }
        p
    }

    fn noisy(p: &Plane, amount: f32) -> Plane {
        let mut q = p.clone();
        let mut r = crate::rng::Rng::new(9);
        for v in q.data.iter_mut() {
            *v += amount * r.normal();
        }
        q
    }

    #[test]
    fn psnr_of_known_offset_and_identical() {
        let a = pattern(32, 32);
        let mut b = a.clone();
        b.data.iter_mut().for_each(|v| *v += 0.1);
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-3);
        assert_eq!(psnr(&a, &a), PSNR_CAP);
    }

    #[test]
    fn ssim_is_one_for_identical_and_falls_with_noise() {
        let a = pattern(48, 40);
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-9);
        let (s1, s2) = (ssim(&a, &noisy(&a, 0.02)), ssim(&a, &noisy(&a, 0.1)));
        assert!(s1 < 1.0 && s2 < s1, "{s1} {s2}");
        let tiny = Plane::filled(1, 1, 0.5);
        assert!((ssim(&tiny, &tiny) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn flicker_measures_alternating_brightness() {
        let mut acc = ScoreAccumulator::new();
        let mut steady = ScoreAccumulator::new();
        for t in 0..6 {
            acc.push(
                &Plane::filled(8, 8, if t % 2 == 0 { 0.4 } else { 0.5 }),
                None,
                None,
                None,
            );
            steady.push(&Plane::filled(8, 8, 0.4), None, None, None);
        }
        assert!((acc.report().flicker.unwrap() - 25.5).abs() < 1e-3);
        assert_eq!(steady.report().flicker, Some(0.0));
    }

    #[test]
    fn masked_ratio_compares_output_and_input_errors() {
        let reference = Plane::filled(4, 1, 0.5);
        let input = Plane {
            width: 4,
            height: 1,
            data: vec![0.0, 0.5, 0.5, 0.5],
        };
        let output = Plane {
            width: 4,
            height: 1,
            data: vec![0.4, 0.5, 0.5, 0.9],
        };
        let m = Plane {
            width: 4,
            height: 1,
            data: vec![1.0, 0.0, 0.0, 0.0],
        };
        let mut acc = ScoreAccumulator::new();
        acc.push(&output, Some(&reference), Some(&input), Some(&m));
        assert!((acc.report().blotch_error_ratio.unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(acc.report().scratch_error_ratio, None);
    }

    #[test]
    fn spikes_are_found_but_static_squares_are_not() {
        let base = pattern(20, 20);
        let mut spiked = base.clone();
        spiked.set(5, 5, 1.0);
        spiked.set(6, 5, 1.0);
        assert!(spike_fraction(&base, &spiked, &base, SPIKE_THRESHOLD) > 0.004);
        let mut square = base.clone();
        for y in 2..6 {
            for x in 2..6 {
                square.set(x, y, 1.0);
            }
        }
        assert_eq!(spike_fraction(&square, &square, &square, SPIKE_THRESHOLD), 0.0);
    }

    #[test]
    fn json_has_every_field_and_nulls() {
        let json = ScoreReport {
            frames: 3,
            psnr_y: Some(30.0),
            ..Default::default()
        }
        .to_json();
        assert!(
            json.contains("\"frames\": 3") && json.contains("\"psnr_y\": 30.000000") && json.contains("\"ssim\": null")
        );
    }
}
