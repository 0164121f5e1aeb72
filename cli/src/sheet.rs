//! Contact sheets: a few frames evenly spaced through the clip, one row each, with input /
//! restored / reference side by side, labelled with a tiny built-in font, as one grey PNG.
//! People would rather look than read.
//!
//! The length of the clip is not known in advance (containers lie, or the files differ in
//! length), so the sheet keeps a thinned set of frames as they stream past (every frame, then
//! every second, fourth, ...), already scaled down to the cell size, and picks the rows from
//! them at the end.

use anyhow::{Context, Result};
use kernels::Plane;
use std::path::Path;

/// Rows (frames) on a sheet.
pub const ROWS: usize = 4;
/// Widest sheet, in pixels.
pub const MAX_WIDTH: usize = 1600;
const GAP: usize = 6;
const BACKGROUND: u8 = 24;
const INK: u8 = 235;
/// Frames kept at most while streaming, to choose the rows from.
const KEEP: usize = 4 * ROWS;

pub struct ContactSheet {
    labels: Vec<&'static str>,
    cell_w: usize,
    cell_h: usize,
    /// Keep frames whose index is a multiple of this.
    stride: usize,
    /// (frame index, one scaled cell per column).
    kept: Vec<(usize, Vec<Vec<u8>>)>,
}

impl ContactSheet {
    /// A sheet for frames of `width x height`, one column per label.
    pub fn new(labels: Vec<&'static str>, width: usize, height: usize) -> Self {
        let columns = labels.len().max(1);
        let cell_w = width.min((MAX_WIDTH - GAP * (columns + 1)) / columns).max(1);
        let cell_h = (height * cell_w).div_ceil(width.max(1)).max(1);
        ContactSheet {
            labels,
            cell_w,
            cell_h,
            stride: 1,
            kept: Vec::new(),
        }
    }

    /// Whether frame `index` may end up on the sheet (then pass it to `add`).
    pub fn wants(&self, index: usize) -> bool {
        index.is_multiple_of(self.stride)
    }

    /// Offers frame `index`, one plane per column (in label order).
    pub fn add(&mut self, index: usize, planes: &[&Plane]) {
        if !self.wants(index) {
            return;
        }
        let cells = planes.iter().map(|p| scale(p, self.cell_w, self.cell_h)).collect();
        self.kept.push((index, cells));
        if self.kept.len() > KEEP {
            self.stride *= 2;
            let stride = self.stride;
            self.kept.retain(|(i, _)| i.is_multiple_of(stride));
        }
    }

    /// The kept frames closest to `ROWS` evenly spaced points of a clip of `frames` frames.
    fn chosen(&self, frames: usize) -> Vec<usize> {
        let mut rows: Vec<usize> = Vec::new();
        for k in 0..ROWS {
            let target = (frames * (2 * k + 1)) / (2 * ROWS);
            let best = (0..self.kept.len())
                .filter(|i| !rows.contains(i))
                .min_by_key(|&i| self.kept[i].0.abs_diff(target));
            if let Some(best) = best {
                rows.push(best);
            }
        }
        rows.sort_unstable();
        rows
    }

    /// Renders the sheet for a clip of `frames` frames as 8-bit grey: (width, height, pixels).
    pub fn render(&self, frames: usize) -> (usize, usize, Vec<u8>) {
        let columns = self.labels.len().max(1);
        let (cw, ch) = (self.cell_w, self.cell_h);
        let scale = text_scale(&self.labels, cw);
        let header = 7 * scale + 2 * GAP;
        let rows = self.chosen(frames);
        let width = columns * cw + (columns + 1) * GAP;
        let height = header + rows.len() * (ch + GAP);
        let mut img = Image {
            width,
            pixels: vec![BACKGROUND; width * height],
        };
        for (c, label) in self.labels.iter().enumerate() {
            let x0 = GAP + c * (cw + GAP);
            let x = x0 + cw.saturating_sub(text_width(label, scale)) / 2;
            img.text(x, GAP, label, scale, x0 + cw);
        }
        for (r, &k) in rows.iter().enumerate() {
            let (index, cells) = &self.kept[k];
            let y0 = header + r * (ch + GAP);
            for (c, cell) in cells.iter().enumerate() {
                let x0 = GAP + c * (cw + GAP);
                for y in 0..ch {
                    img.pixels[(y0 + y) * width + x0..][..cw].copy_from_slice(&cell[y * cw..][..cw]);
                }
            }
            // Frame number in the corner of the row, on a dark box so it reads on any picture.
            let label = format!("FRAME {index}");
            let s = if ch >= 60 && cw >= 160 { scale } else { 1 };
            let (bw, bh) = (text_width(&label, s) + 2 * s + 2, 7 * s + 2 * s + 2);
            img.fill(GAP, y0, bw.min(cw), bh.min(ch), 0);
            img.text(GAP + s + 1, y0 + s + 1, &label, s, GAP + cw);
        }
        (width, height, img.pixels)
    }

    /// Writes the sheet for a clip of `frames` frames as a grey PNG.
    pub fn write(&self, path: &Path, frames: usize) -> Result<()> {
        let (w, h, pixels) = self.render(frames);
        let context = || format!("cannot write '{}'", path.display());
        let file = std::fs::File::create(path).with_context(context)?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().with_context(context)?;
        writer.write_image_data(&pixels).with_context(context)?;
        writer.finish().with_context(context)?;
        Ok(())
    }
}

/// Largest text scale (2 or 1) at which every label fits its column.
fn text_scale(labels: &[&str], cell_w: usize) -> usize {
    if labels.iter().all(|l| text_width(l, 2) <= cell_w) {
        2
    } else {
        1
    }
}

/// Width in pixels of `text` at `scale` (5 pixels a glyph and 1 between).
fn text_width(text: &str, scale: usize) -> usize {
    (text.chars().count() * 6).saturating_sub(1) * scale
}

/// Box-filtered scaling of a plane to `w x h` grey bytes.
fn scale(src: &Plane, w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        let sy0 = (y * src.height / h).min(src.height - 1);
        let sy1 = ((y + 1) * src.height / h).clamp(sy0 + 1, src.height);
        for x in 0..w {
            let sx0 = (x * src.width / w).min(src.width - 1);
            let sx1 = ((x + 1) * src.width / w).clamp(sx0 + 1, src.width);
            let mut sum = 0.0;
            for yy in sy0..sy1 {
                sum += src.row(yy)[sx0..sx1].iter().sum::<f32>();
            }
            let n = ((sy1 - sy0) * (sx1 - sx0)) as f32;
            out[y * w + x] = ((sum / n).clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
    }
    out
}

struct Image {
    width: usize,
    pixels: Vec<u8>,
}

impl Image {
    fn fill(&mut self, x0: usize, y0: usize, w: usize, h: usize, v: u8) {
        for y in y0..y0 + h {
            for x in x0..(x0 + w).min(self.width) {
                if let Some(p) = self.pixels.get_mut(y * self.width + x) {
                    *p = v;
                }
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), clipped at `right`.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, right: usize) {
        let right = right.min(self.width);
        for (i, c) in text.chars().enumerate() {
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    let (px, py) = (x + (i * 6 + col) * scale, y + row * scale);
                    if px + scale <= right {
                        self.fill(px, py, scale, scale, INK);
                    }
                }
            }
        }
    }
}

/// 5x7 glyphs for the capitals and digits the labels use; each row is 5 bits, most significant
/// on the left. Anything else is blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        _ => [0; 7],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [&str; 3] = ["INPUT", "RESTORED", "REFERENCE"];

    #[test]
    fn every_letter_and_digit_used_has_a_glyph() {
        for text in LABELS.iter().copied().chain(["FRAME 0123456789"]) {
            for c in text.chars().filter(|&c| c != ' ') {
                assert!(glyph(c).iter().any(|&b| b != 0), "no glyph for {c:?}");
                assert!(glyph(c).iter().all(|&b| b < 0x20), "{c:?} is wider than 5");
            }
        }
        // Distinct glyphs, so no two characters read the same.
        let chars: Vec<char> = "ACDEFIMNOPRSTU0123456789".chars().collect();
        for (i, a) in chars.iter().enumerate() {
            for b in &chars[i + 1..] {
                assert_ne!(glyph(*a), glyph(*b), "{a} and {b} look alike");
            }
        }
    }

    #[test]
    fn text_is_drawn_where_asked() {
        let mut img = Image {
            width: 20,
            pixels: vec![0; 20 * 10],
        };
        img.text(1, 1, "T", 1, 20);
        // The top bar of the T, then its stem in the middle column.
        assert_eq!(&img.pixels[20 + 1..20 + 6], &[INK; 5]);
        assert_eq!(img.pixels[3 * 20 + 3], INK);
        assert_eq!(img.pixels[3 * 20 + 2], 0);
    }

    fn sheet_with_frames(n: usize, w: usize, h: usize) -> ContactSheet {
        let mut sheet = ContactSheet::new(LABELS.to_vec(), w, h);
        for i in 0..n {
            if sheet.wants(i) {
                let frame = Plane::filled(w, h, i as f32 / n as f32);
                sheet.add(i, &[&frame, &frame, &frame]);
            }
        }
        sheet
    }

    #[test]
    fn sheet_lays_out_columns_and_rows_within_the_width() {
        let sheet = sheet_with_frames(10, 1920, 1080);
        let (w, h, pixels) = sheet.render(10);
        assert!(w <= MAX_WIDTH);
        assert_eq!(pixels.len(), w * h);
        let cell_w = (MAX_WIDTH - GAP * 4) / 3;
        let cell_h = (1080 * cell_w).div_ceil(1920);
        let header = 7 * 2 + 2 * GAP;
        assert_eq!(h, header + ROWS * (cell_h + GAP));
        // Below the frame-number box, a frame pixel has the frame's grey; gaps are background.
        let y = header + cell_h / 2;
        assert_eq!(pixels[y * w + GAP + cell_w / 2], (1.0f32 / 10.0 * 255.0 + 0.5) as u8);
        assert_eq!(pixels[y * w + 1], BACKGROUND);
        assert_eq!(pixels[y * w + GAP + cell_w + 2], BACKGROUND);
        // The header carries ink (the labels).
        assert!(pixels[GAP * w..(GAP + 14) * w].contains(&INK));
    }

    #[test]
    fn small_frames_keep_their_size() {
        let sheet = sheet_with_frames(30, 320, 240);
        let (w, _, _) = sheet.render(30);
        assert_eq!(w, 3 * 320 + 4 * GAP);
    }

    #[test]
    fn rows_are_spread_over_the_clip_whatever_its_length() {
        for n in [1, 3, 4, 9, 30, 250, 1000, 12345] {
            let sheet = sheet_with_frames(n, 64, 48);
            assert!(sheet.kept.len() <= KEEP + 1, "{n}: kept {}", sheet.kept.len());
            let rows: Vec<usize> = sheet.chosen(n).iter().map(|&k| sheet.kept[k].0).collect();
            assert_eq!(rows.len(), ROWS.min(n), "{n}: {rows:?}");
            for (k, &index) in rows.iter().enumerate() {
                let target = n * (2 * k + 1) / (2 * ROWS);
                assert!(
                    index.abs_diff(target) <= n / ROWS / 2 + 1,
                    "{n}: row {k} is frame {index}, wanted ~{target}"
                );
            }
        }
    }

    #[test]
    fn two_columns_without_input() {
        let mut sheet = ContactSheet::new(vec!["RESTORED", "REFERENCE"], 100, 50);
        let frame = Plane::filled(100, 50, 1.0);
        sheet.add(0, &[&frame, &frame]);
        let (w, h, _) = sheet.render(1);
        assert_eq!(w, 2 * 100 + 3 * GAP);
        // Labels do not fit 100 pixels at double size: single size.
        assert_eq!(h, 7 + 2 * GAP + 50 + GAP);
    }
}
