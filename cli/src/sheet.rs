//! Contact sheets: a few frames, one row each, with input / restored / reference side by side
//! and labelled, as one grey PNG. People would rather look than read.

use anyhow::{Context, Result};
use kernels::Plane;
use std::path::Path;

/// Widest sheet, in pixels.
const MAX_WIDTH: usize = 1600;
const GAP: usize = 6;
const LABEL_SCALE: usize = 2;
const LABEL_HEIGHT: usize = 7 * LABEL_SCALE + 2 * GAP;

pub struct ContactSheet {
    with_input: bool,
    rows: Vec<Vec<Plane>>,
}

impl ContactSheet {
    pub fn new(with_input: bool) -> Self {
        ContactSheet {
            with_input,
            rows: Vec::new(),
        }
    }

    pub fn add_row(&mut self, input: Option<&Plane>, output: &Plane, reference: &Plane) {
        let mut row = Vec::new();
        if self.with_input {
            if let Some(i) = input {
                row.push(i.clone());
            }
        }
        row.push(output.clone());
        row.push(reference.clone());
        self.rows.push(row);
    }

    fn labels(&self) -> Vec<&'static str> {
        if self.with_input {
            vec!["INPUT", "RESTORED", "REFERENCE"]
        } else {
            vec!["RESTORED", "REFERENCE"]
        }
    }

    /// Renders the sheet as 8-bit grey pixels: (width, height, pixels).
    pub fn render(&self) -> (usize, usize, Vec<u8>) {
        let columns = self.labels().len();
        let Some(first) = self.rows.first().and_then(|r| r.first()) else {
            return (1, 1, vec![0]);
        };
        let cell_w = first.width.min((MAX_WIDTH - GAP * (columns + 1)) / columns).max(1);
        let cell_h = (first.height * cell_w / first.width).max(1);
        let width = columns * cell_w + (columns + 1) * GAP;
        let height = LABEL_HEIGHT + self.rows.len() * (cell_h + GAP);
        let mut pixels = vec![24u8; width * height];
        for (c, label) in self.labels().iter().enumerate() {
            let text_w = label.len() * 6 * LABEL_SCALE;
            let x = GAP + c * (cell_w + GAP) + cell_w.saturating_sub(text_w) / 2;
            draw_text(&mut pixels, width, x, GAP, label);
        }
        for (r, row) in self.rows.iter().enumerate() {
            for (c, plane) in row.iter().enumerate() {
                let (x0, y0) = (GAP + c * (cell_w + GAP), LABEL_HEIGHT + r * (cell_h + GAP));
                blit_scaled(plane, &mut pixels, width, x0, y0, cell_w, cell_h);
            }
        }
        (width, height, pixels)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let (w, h, pixels) = self.render();
        let file = std::fs::File::create(path).with_context(|| format!("cannot write '{}'", path.display()))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        writer
            .write_image_data(&pixels)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        Ok(())
    }
}

/// Box-filtered scaling of a plane into a cell of the sheet.
fn blit_scaled(src: &Plane, dst: &mut [u8], dst_w: usize, x0: usize, y0: usize, w: usize, h: usize) {
    for y in 0..h {
        let (sy0, sy1) = (
            y * src.height / h,
            ((y + 1) * src.height / h).max(y * src.height / h + 1),
        );
        for x in 0..w {
            let (sx0, sx1) = (x * src.width / w, ((x + 1) * src.width / w).max(x * src.width / w + 1));
            let mut sum = 0.0;
            for yy in sy0..sy1.min(src.height) {
                for xx in sx0..sx1.min(src.width) {
                    sum += src.get(xx, yy);
                }
            }
            let n = ((sy1.min(src.height) - sy0) * (sx1.min(src.width) - sx0)).max(1) as f32;
            dst[(y0 + y) * dst_w + x0 + x] = ((sum / n).clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
    }
}

/// 5x7 glyphs for the few capitals the labels use; each row is 5 bits, most significant left.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        _ => [0; 7],
    }
}

fn draw_text(pixels: &mut [u8], width: usize, x: usize, y: usize, text: &str) {
    for (i, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..LABEL_SCALE {
                    for dx in 0..LABEL_SCALE {
                        let px = x + (i * 6 + col) * LABEL_SCALE + dx;
                        let py = y + row * LABEL_SCALE + dy;
                        if px < width && py * width + px < pixels.len() {
                            pixels[py * width + px] = 235;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_letter_has_a_glyph() {
        for label in ["INPUT", "RESTORED", "REFERENCE"] {
            assert!(label.chars().all(|c| glyph(c).iter().any(|&b| b != 0)), "{label}");
        }
    }

    #[test]
    fn sheet_lays_out_columns_and_rows_within_the_width() {
        let mut sheet = ContactSheet::new(true);
        let frame = Plane::filled(1920, 1080, 0.5);
        sheet.add_row(Some(&frame), &frame, &frame);
        sheet.add_row(Some(&frame), &frame, &frame);
        let (w, h, pixels) = sheet.render();
        assert!(w <= MAX_WIDTH);
        assert_eq!(pixels.len(), w * h);
        let cell_w = (MAX_WIDTH - GAP * 4) / 3;
        let cell_h = 1080 * cell_w / 1920;
        assert_eq!(h, LABEL_HEIGHT + 2 * (cell_h + GAP));
        // A frame pixel is mid grey, a gap pixel is the background.
        assert_eq!(pixels[(LABEL_HEIGHT + 5) * w + GAP + 5], 128);
        assert_eq!(pixels[(LABEL_HEIGHT + 5) * w + 1], 24);
    }
}
