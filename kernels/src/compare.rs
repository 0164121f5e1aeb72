//! Before/after views for telecine preview.

use crate::frame::{Geometry, Plane, WorkFrame};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompareMode {
    /// Restored frame only.
    #[default]
    None,
    /// Left half original, right half restored, a thin white divider.
    Split,
    /// Original and restored next to each other (double width).
    SideBySide,
}

impl CompareMode {
    /// Output width for an input `width`.
    pub fn output_width(self, width: usize) -> usize {
        match self {
            CompareMode::SideBySide => width * 2,
            _ => width,
        }
    }

    /// Input width that produces an output of `width`, if any.
    pub fn input_width(self, width: usize) -> Option<usize> {
        match self {
            CompareMode::SideBySide if width.is_multiple_of(2) => Some(width / 2),
            CompareMode::SideBySide => None,
            _ => Some(width),
        }
    }

    pub fn output_geometry(self, g: Geometry) -> Geometry {
        Geometry {
            width: self.output_width(g.width),
            ..g
        }
    }
}

/// Width of the divider line in `Split` mode, in luma pixels.
const DIVIDER: usize = 2;

/// Writes the comparison of `original` and `restored` into `out` (of `mode.output_geometry`).
pub fn compose(mode: CompareMode, original: &WorkFrame, restored: &WorkFrame, out: &mut WorkFrame) {
    match mode {
        CompareMode::None => out.copy_from(restored),
        CompareMode::Split => {
            out.copy_from(restored);
            let half = original.width() / 2;
            copy_columns(&original.luma, &mut out.luma, 0, half, 0);
            for (o, c) in out.chroma.iter_mut().zip(&original.chroma) {
                let sub = original.width().div_ceil(c.width);
                copy_columns(c, o, 0, half / sub, 0);
            }
            let start = half.saturating_sub(DIVIDER / 2);
            let end = (start + DIVIDER).min(out.width());
            for y in 0..out.height() {
                out.luma.row_mut(y)[start..end].fill(1.0);
            }
        }
        CompareMode::SideBySide => {
            let w = original.width();
            copy_columns(&original.luma, &mut out.luma, 0, w, 0);
            copy_columns(&restored.luma, &mut out.luma, 0, w, w);
            for ((o, a), b) in out.chroma.iter_mut().zip(&original.chroma).zip(&restored.chroma) {
                let sub = w.div_ceil(a.width).max(1);
                // Each output chroma sample takes the source under its first luma pixel, so an odd
                // width (whose two halves do not split a chroma pair evenly) stays aligned.
                for y in 0..o.height {
                    for cx in 0..o.width {
                        let x = cx * sub;
                        o.data[y * o.width + cx] = if x < w {
                            a.get((x / sub).min(a.width - 1), y)
                        } else {
                            b.get(((x - w) / sub).min(b.width - 1), y)
                        };
                    }
                }
            }
        }
    }
}

fn copy_columns(src: &Plane, dst: &mut Plane, from: usize, count: usize, to: usize) {
    let count = count.min(src.width - from).min(dst.width.saturating_sub(to));
    for y in 0..src.height.min(dst.height) {
        dst.row_mut(y)[to..to + count].copy_from_slice(&src.row(y)[from..from + count]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Chroma;

    fn frame(width: usize, v: f32) -> WorkFrame {
        let mut f = WorkFrame::new(Geometry {
            width,
            height: 3,
            chroma: Chroma::Subsampled { sx: 2, sy: 2 },
        });
        f.luma.data.fill(v);
        f
    }

    #[test]
    fn split_shows_original_left_restored_right_and_a_divider() {
        let (a, b) = (frame(20, 0.1), frame(20, 0.3));
        let mut out = frame(20, 0.0);
        compose(CompareMode::Split, &a, &b, &mut out);
        assert_eq!(out.luma.get(0, 1), 0.1);
        assert_eq!(out.luma.get(19, 1), 0.3);
        assert_eq!(out.luma.get(10, 1), 1.0);
    }

    #[test]
    fn side_by_side_doubles_width_even_for_odd_sizes() {
        let (a, b) = (frame(7, 0.1), frame(7, 0.3));
        let g = CompareMode::SideBySide.output_geometry(a.geometry);
        let mut out = WorkFrame::new(g);
        compose(CompareMode::SideBySide, &a, &b, &mut out);
        assert_eq!(out.width(), 14);
        assert_eq!(out.luma.get(6, 0), 0.1);
        assert_eq!(out.luma.get(7, 0), 0.3);
        assert_eq!(CompareMode::SideBySide.input_width(14), Some(7));
        assert_eq!(CompareMode::SideBySide.input_width(15), None);
    }
}
