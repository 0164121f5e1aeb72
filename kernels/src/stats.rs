//! Per-frame statistics computed once when a frame enters the window and shared by the stages
//! that need them (cut detection, deflicker), instead of each stage recomputing them.

use crate::frame::Plane;

/// Quantile levels the statistics keep. Deflicker fits its tone correction to these, so
/// blotches (a few percent of pixels at the extremes) and small moving objects barely move them.
pub const QUANTILES: [f32; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Thumbnail grid used to compare consecutive frames for cut detection.
pub const THUMB_W: usize = 16;
pub const THUMB_H: usize = 12;

const HIST_BINS: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct FrameStats {
    /// Luma value at each of [`QUANTILES`].
    pub quantiles: [f32; QUANTILES.len()],
    /// Block means on a `THUMB_W x THUMB_H` grid.
    pub thumb: [f32; THUMB_W * THUMB_H],
}

impl Default for FrameStats {
    fn default() -> Self {
        FrameStats {
            quantiles: [0.0; QUANTILES.len()],
            thumb: [0.0; THUMB_W * THUMB_H],
        }
    }
}

impl FrameStats {
    pub fn compute(luma: &Plane) -> Self {
        let samples = Samples::gather(luma);
        FrameStats {
            quantiles: samples.quantiles(),
            thumb: samples.thumbnail(),
        }
    }

    /// Robust brightness: the median.
    pub fn level(&self) -> f32 {
        self.quantiles[QUANTILES.len() / 2]
    }

    /// Robust contrast: the 10–90 % spread.
    pub fn spread(&self) -> f32 {
        self.quantiles[QUANTILES.len() - 1] - self.quantiles[0]
    }
}

/// Subsampling step that keeps the histogram to roughly 100k samples, whatever the frame size.
fn sample_step(width: usize, height: usize) -> usize {
    let n = width * height;
    ((n as f64 / 100_000.0).sqrt().floor() as usize).max(1)
}

/// One pass over the subsampled pixels: the histogram the quantiles come from and the
/// thumbnail cells' sums.
struct Samples {
    hist: [u32; HIST_BINS],
    count: u64,
    sums: [f64; THUMB_W * THUMB_H],
    counts: [u32; THUMB_W * THUMB_H],
}

impl Samples {
    fn gather(luma: &Plane) -> Self {
        let mut s = Samples {
            hist: [0; HIST_BINS],
            count: 0,
            sums: [0.0; THUMB_W * THUMB_H],
            counts: [0; THUMB_W * THUMB_H],
        };
        let step = sample_step(luma.width, luma.height);
        // The sampled columns of each thumbnail column, as a range of sample indices (the
        // cell of column x is x * THUMB_W / width, which only grows with x): no division per
        // sample.
        let columns = luma.width.div_ceil(step);
        let mut bounds = [columns; THUMB_W + 1];
        for cx in (0..THUMB_W).rev() {
            let first = (0..bounds[cx + 1])
                .rev()
                .take_while(|i| i * step * THUMB_W / luma.width >= cx)
                .count();
            bounds[cx] = bounds[cx + 1] - first;
        }
        for y in (0..luma.height).step_by(step) {
            let row = luma.row(y);
            let cells = (y * THUMB_H / luma.height) * THUMB_W;
            for cx in 0..THUMB_W {
                let (lo, hi) = (bounds[cx], bounds[cx + 1]);
                let mut sum = s.sums[cells + cx];
                for i in lo..hi {
                    let v = row[i * step];
                    sum += v as f64;
                    s.hist[(v.clamp(0.0, 1.0) * (HIST_BINS - 1) as f32 + 0.5) as usize] += 1;
                }
                s.sums[cells + cx] = sum;
                s.counts[cells + cx] += (hi - lo) as u32;
            }
            s.count += columns as u64;
        }
        s
    }

    fn quantiles(&self) -> [f32; QUANTILES.len()] {
        let mut out = [0.0; QUANTILES.len()];
        let mut cumulative = 0u64;
        let mut bin = 0usize;
        for (q, slot) in QUANTILES.iter().zip(out.iter_mut()) {
            let target = (*q as f64 * self.count as f64).ceil().max(1.0) as u64;
            while bin < HIST_BINS && cumulative + (self.hist[bin] as u64) < target {
                cumulative += self.hist[bin] as u64;
                bin += 1;
            }
            *slot = bin.min(HIST_BINS - 1) as f32 / (HIST_BINS - 1) as f32;
        }
        out
    }

    fn thumbnail(&self) -> [f32; THUMB_W * THUMB_H] {
        let mut thumb = [0.0f32; THUMB_W * THUMB_H];
        let total = self.counts.iter().map(|&c| c as f64).sum::<f64>().max(1.0);
        let overall = self.sums.iter().sum::<f64>() / total;
        for i in 0..thumb.len() {
            // Frames smaller than the grid leave cells empty: give them the frame mean.
            thumb[i] = if self.counts[i] > 0 {
                (self.sums[i] / self.counts[i] as f64) as f32
            } else {
                overall as f32
            };
        }
        thumb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics as first written, two passes with a division per sample: what the
    /// one-pass [`Samples`] must equal.
    fn reference(luma: &Plane) -> FrameStats {
        FrameStats {
            quantiles: quantiles(luma),
            thumb: thumbnail(luma),
        }
    }

    fn quantiles(luma: &Plane) -> [f32; QUANTILES.len()] {
        let mut hist = [0u32; HIST_BINS];
        let step = sample_step(luma.width, luma.height);
        let mut count = 0u64;
        for y in (0..luma.height).step_by(step) {
            for &v in luma.row(y).iter().step_by(step) {
                let bin = (v.clamp(0.0, 1.0) * (HIST_BINS - 1) as f32 + 0.5) as usize;
                hist[bin] += 1;
                count += 1;
            }
        }
        let mut out = [0.0; QUANTILES.len()];
        let mut cumulative = 0u64;
        let mut bin = 0usize;
        for (q, slot) in QUANTILES.iter().zip(out.iter_mut()) {
            let target = (*q as f64 * count as f64).ceil().max(1.0) as u64;
            while bin < HIST_BINS && cumulative + (hist[bin] as u64) < target {
                cumulative += hist[bin] as u64;
                bin += 1;
            }
            *slot = bin.min(HIST_BINS - 1) as f32 / (HIST_BINS - 1) as f32;
        }
        out
    }

    fn thumbnail(luma: &Plane) -> [f32; THUMB_W * THUMB_H] {
        let mut sums = [0.0f64; THUMB_W * THUMB_H];
        let mut counts = [0u32; THUMB_W * THUMB_H];
        let step = sample_step(luma.width, luma.height);
        for y in (0..luma.height).step_by(step) {
            let ty = y * THUMB_H / luma.height;
            for (x, &v) in luma.row(y).iter().enumerate().step_by(step) {
                let cell = ty * THUMB_W + x * THUMB_W / luma.width;
                sums[cell] += v as f64;
                counts[cell] += 1;
            }
        }
        let mut thumb = [0.0f32; THUMB_W * THUMB_H];
        let overall = sums.iter().sum::<f64>() / counts.iter().map(|&c| c as f64).sum::<f64>().max(1.0);
        for i in 0..thumb.len() {
            // Frames smaller than the grid leave cells empty: give them the frame mean.
            thumb[i] = if counts[i] > 0 {
                (sums[i] / counts[i] as f64) as f32
            } else {
                overall as f32
            };
        }
        thumb
    }

    #[test]
    fn one_pass_equals_the_two_pass_reference() {
        let mut seed = 7u32;
        for (w, h) in [
            (1280, 720),
            (1920, 1080),
            (641, 273),
            (15, 11),
            (1, 1),
            (17, 300),
            (3000, 2),
        ] {
            let mut p = Plane::new(w, h);
            for (i, v) in p.data.iter_mut().enumerate() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                // Out-of-range values too: the histogram clamps them.
                *v = ((i % w) as f32 / w as f32) * 0.8 + (seed >> 8) as f32 / (1u32 << 24) as f32 * 0.5 - 0.1;
            }
            assert_eq!(FrameStats::compute(&p), reference(&p), "{w}x{h}");
        }
    }

    #[test]
    fn quantiles_of_a_ramp_are_its_levels() {
        let mut p = Plane::new(1000, 10);
        for y in 0..10 {
            for x in 0..1000 {
                p.set(x, y, x as f32 / 999.0);
            }
        }
        let s = FrameStats::compute(&p);
        for (q, v) in QUANTILES.iter().zip(s.quantiles) {
            assert!((q - v).abs() < 0.01, "quantile {q} gave {v}");
        }
    }

    #[test]
    fn a_few_blotches_do_not_move_the_median() {
        let mut p = Plane::filled(200, 100, 0.5);
        for x in 0..20 {
            for y in 0..20 {
                p.set(x, y, 0.0);
            }
        }
        let s = FrameStats::compute(&p);
        assert!((s.level() - 0.5).abs() < 0.002);
    }

    #[test]
    fn tiny_frames_fill_every_thumbnail_cell() {
        let p = Plane::filled(1, 1, 0.25);
        let s = FrameStats::compute(&p);
        assert!(s.thumb.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
