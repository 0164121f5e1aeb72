//! Tiling for frames larger (or smaller) than the model (moved from `engines::tiling`, which re-exports it): tiles
//! of the model's size with at least `overlap` pixels of overlap, run as one batch, blended back with feathered
//! weights. A frame smaller than a tile is padded by replicating its border.

use super::rgb::RgbImage;

/// Tile origins along one axis: evenly spread, consecutive tiles overlap by at least `overlap`.
pub fn tile_starts(size: usize, tile: usize, overlap: usize) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    let n = (size - overlap).div_ceil(tile - overlap);
    (0..n).map(|i| (i * (size - tile)) / (n - 1)).collect()
}

/// Feather weights along one axis of a tile: ramps over `overlap` pixels at the edges shared with another tile,
/// full weight at the frame's own edges.
pub fn ramp(length: usize, tile: usize, lo_interior: bool, hi_interior: bool, overlap: usize) -> Vec<f32> {
    (0..length)
        .map(|d| {
            let mut v = 1.0f32;
            if lo_interior && d < overlap {
                v = v.min((d + 1) as f32 / (overlap + 1) as f32);
            }
            let e = tile - 1 - d;
            if hi_interior && e < overlap {
                v = v.min((e + 1) as f32 / (overlap + 1) as f32);
            }
            v
        })
        .collect()
}

/// The tiles of one frame size.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    pub tile_w: usize,
    pub tile_h: usize,
    /// Tile origins, row-major.
    pub tiles: Vec<(usize, usize)>,
    /// Per tile, weights of its in-frame part (`min(tile, frame - origin)` on each side).
    weights: Vec<(usize, usize, Vec<f32>)>,
}

impl Grid {
    pub fn new(width: usize, height: usize, tile_w: usize, tile_h: usize, overlap: usize) -> Grid {
        let overlap_x = overlap.min(tile_w.saturating_sub(1));
        let overlap_y = overlap.min(tile_h.saturating_sub(1));
        let xs = tile_starts(width, tile_w, overlap_x);
        let ys = tile_starts(height, tile_h, overlap_y);
        let tiles: Vec<(usize, usize)> = ys.iter().flat_map(|&y| xs.iter().map(move |&x| (x, y))).collect();
        let weights = tiles
            .iter()
            .map(|&(x, y)| {
                let w = tile_w.min(width - x);
                let h = tile_h.min(height - y);
                let wx = ramp(w, tile_w, x > 0, x + tile_w < width, overlap_x);
                let wy = ramp(h, tile_h, y > 0, y + tile_h < height, overlap_y);
                let mut m = Vec::with_capacity(w * h);
                for &vy in &wy {
                    for &vx in &wx {
                        m.push(vy * vx);
                    }
                }
                (w, h, m)
            })
            .collect();
        Grid {
            width,
            height,
            tile_w,
            tile_h,
            tiles,
            weights,
        }
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Tile `i`'s weights: the in-frame width and height and `[h][w]` weights.
    pub fn weights(&self, i: usize) -> (usize, usize, &[f32]) {
        let (w, h, m) = &self.weights[i];
        (*w, *h, m)
    }

    /// Every tile's weights as a `[n][tile_h][tile_w]` map, zero outside the frame: the form the device blend
    /// reads, built from the same weights as [`Grid::blend`].
    pub fn dense_weights(&self) -> Vec<f32> {
        let (tw, th) = (self.tile_w, self.tile_h);
        let mut out = vec![0.0f32; self.len() * tw * th];
        for (i, dst) in out.chunks_mut(tw * th).enumerate() {
            let (rw, rh, m) = self.weights(i);
            for ty in 0..rh {
                dst[ty * tw..ty * tw + rw].copy_from_slice(&m[ty * rw..(ty + 1) * rw]);
            }
        }
        out
    }

    /// Tile `i` of `img`, `[3][tile_h][tile_w]`, with coordinates clamped to the frame.
    pub fn extract(&self, img: &RgbImage, i: usize, out: &mut [f32]) {
        let (x0, y0) = self.tiles[i];
        img.extract_tile(x0, y0, self.tile_w, self.tile_h, out);
    }

    /// All tiles of `img`, `[n][3][tile_h][tile_w]`.
    pub fn extract_all(&self, img: &RgbImage) -> Vec<f32> {
        let n = 3 * self.tile_w * self.tile_h;
        let mut out = vec![0.0; self.len() * n];
        for i in 0..self.len() {
            self.extract(img, i, &mut out[i * n..(i + 1) * n]);
        }
        out
    }

    /// Adds tile `i` (`[3][tile_h][tile_w]`), weighted, into `acc` (`[3][h][w]`) and its weights into `wsum`.
    pub fn accumulate(&self, i: usize, tile: &[f32], acc: &mut [f32], wsum: &mut [f32]) {
        let (w, h) = (self.width, self.height);
        let (x0, y0) = self.tiles[i];
        let (rw, rh, m) = self.weights(i);
        for c in 0..3 {
            for ty in 0..rh {
                for tx in 0..rw {
                    let wv = m[ty * rw + tx];
                    acc[c * w * h + (y0 + ty) * w + x0 + tx] +=
                        wv * tile[c * self.tile_w * self.tile_h + ty * self.tile_w + tx];
                }
            }
        }
        for ty in 0..rh {
            for tx in 0..rw {
                wsum[(y0 + ty) * w + x0 + tx] += m[ty * rw + tx];
            }
        }
    }

    /// Blends `tiles` (`[n][3][tile_h][tile_w]`) into a frame: every tile accumulated in order, then divided by
    /// the summed weights.
    pub fn blend(&self, tiles: &[f32]) -> RgbImage {
        let (w, h) = (self.width, self.height);
        let n = 3 * self.tile_w * self.tile_h;
        let mut acc = vec![0.0f32; 3 * w * h];
        let mut wsum = vec![0.0f32; w * h];
        for i in 0..self.len() {
            self.accumulate(i, &tiles[i * n..(i + 1) * n], &mut acc, &mut wsum);
        }
        for c in 0..3 {
            for (v, &s) in acc[c * w * h..(c + 1) * w * h].iter_mut().zip(&wsum) {
                *v /= s;
            }
        }
        RgbImage::from_planar(w, h, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_frame_with_the_overlap() {
        assert_eq!(tile_starts(64, 64, 16), vec![0]);
        assert_eq!(tile_starts(30, 64, 16), vec![0]);
        assert_eq!(tile_starts(99, 64, 16), vec![0, 35]);
        let s = tile_starts(1920, 512, 64);
        assert_eq!(*s.last().unwrap(), 1920 - 512);
        assert!(s.windows(2).all(|p| p[0] + 512 >= p[1] + 64));
    }

    #[test]
    fn extract_then_blend_is_the_identity_at_odd_sizes() {
        for &(w, h) in &[(5, 3), (64, 64), (99, 71), (130, 65)] {
            let data: Vec<f32> = (0..3 * w * h).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
            let img = RgbImage::from_planar(w, h, data);
            let g = Grid::new(w, h, 64, 64, 16);
            let back = g.blend(&g.extract_all(&img));
            for (a, b) in img.data.iter().zip(&back.data) {
                assert!((a - b).abs() < 1e-6, "{w}x{h}");
            }
        }
    }

    #[test]
    fn dense_weights_hold_each_tiles_weights_and_zero_outside_the_frame() {
        let g = Grid::new(99, 71, 64, 64, 16);
        let dense = g.dense_weights();
        for i in 0..g.len() {
            let (rw, rh, m) = g.weights(i);
            let d = &dense[i * 64 * 64..(i + 1) * 64 * 64];
            for ty in 0..64 {
                for tx in 0..64 {
                    let want = if tx < rw && ty < rh { m[ty * rw + tx] } else { 0.0 };
                    assert_eq!(d[ty * 64 + tx], want, "tile {i} ({tx},{ty})");
                }
            }
        }
        // Interior overlaps ramp down, so some weight is below one.
        assert!(dense.iter().any(|&v| v > 0.0 && v < 1.0));
    }
}
