//! The CUDA kernels run on the CPU: `kernels.cu` compiled as C++ (by the system's `c++`, which
//! `scripts/setup-debian.sh` installs) with a prelude that turns the CUDA keywords into plain C++ and the thread
//! indices into thread-locals, loaded with `libloading`, and launched by looping over the grid. The tests compare
//! it with the twins, so the kernels' indexing, layouts and arithmetic are checked on every machine, GPU or not.
//! Only the device itself is left to the GPU tests: rounding of `exp`, the parallel reduction order, launches.

use super::device::source;
use super::format::{concat_planes, split_planes, DeviceFormat};
use libloading::{Library, Symbol};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const PRELUDE: &str = r#"
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <math.h>
using std::max;
using std::min;
struct EmuDim { unsigned x, y, z; };
static thread_local EmuDim threadIdx, blockIdx, blockDim;
extern "C" void emu_set(unsigned bx, unsigned by, unsigned tx, unsigned bdx) {
    blockIdx = {bx, by, 0};
    threadIdx = {tx, 0, 0};
    blockDim = {bdx, 1, 1};
}
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline unsigned short oldfilm_emu_f32_to_f16(float v) {
    _Float16 h = (_Float16)v;
    unsigned short bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}
#define OLDFILM_EMULATED 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads()
"#;

/// Threads a block, as `device::grid` launches.
const BLOCK: u32 = 256;

fn build() -> Result<Library, String> {
    let dir = std::env::temp_dir().join(format!("oldfilm-cuda-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (src, lib) = (dir.join("kernels_emu.cpp"), dir.join("libkernels_emu.so"));
    std::fs::write(&src, format!("{PRELUDE}{}", source())).map_err(|e| e.to_string())?;
    // No fused multiply-adds, as on the device (--fmad=false) and in Rust.
    let out = Command::new("c++")
        .args(["-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run c++ (install build-essential): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "c++ failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // SAFETY: our own library; its initialisers only set thread-locals.
    unsafe { Library::new(PathBuf::from(&lib)) }.map_err(|e| e.to_string())
}

/// The emulated kernels, built once per test process.
pub(crate) struct Emu {
    lib: Library,
}

pub(crate) fn emu() -> &'static Emu {
    static EMU: OnceLock<Result<Emu, String>> = OnceLock::new();
    match EMU.get_or_init(|| build().map(|lib| Emu { lib })) {
        Ok(e) => e,
        Err(e) => panic!("cannot build the CPU emulation of the CUDA kernels: {e}"),
    }
}

impl Emu {
    /// The kernel `name` with the Rust type of its C signature.
    fn kernel<F>(&self, name: &str) -> Symbol<'_, F> {
        // SAFETY: each caller names the C signature of the kernel it asks for.
        unsafe { self.lib.get(name.as_bytes()) }.unwrap_or_else(|e| panic!("no kernel {name}: {e}"))
    }

    /// Runs `thread` for every thread of a `blocks.0 x blocks.1` grid of `block` threads.
    fn launch(&self, blocks: (u32, u32), block: u32, mut thread: impl FnMut()) {
        let set: Symbol<'_, unsafe extern "C" fn(u32, u32, u32, u32)> = self.kernel("emu_set");
        for by in 0..blocks.1 {
            for bx in 0..blocks.0 {
                for tx in 0..block {
                    // SAFETY: sets this thread's indices.
                    unsafe { set(bx, by, tx, block) };
                    thread();
                }
            }
        }
    }

    /// The `device::grid` shape: 256 threads a block over `n`, `depth` deep.
    fn grid(&self, n: usize, depth: usize, thread: impl FnMut()) {
        self.launch(
            (n.div_ceil(BLOCK as usize).max(1) as u32, depth.max(1) as u32),
            BLOCK,
            thread,
        )
    }
}

/// `unpack_tiles_f32` (T = f32) and `unpack_tiles_f16` (T = u16).
type Unpack<T> = unsafe extern "C" fn(*const u8, DeviceFormat, *const i32, i32, i32, f32, f32, *mut T);
type Pack = unsafe extern "C" fn(*const f32, DeviceFormat, *mut u8);
type Thumb = unsafe extern "C" fn(*const f32, i32, i32, i32, i32, i32, *mut f32);
type CosineSums = unsafe extern "C" fn(*const f32, *const f32, i32, *mut f64);
type Change = unsafe extern "C" fn(*const f32, *const f32, i32, i32, *mut f32);
type Blend = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i32, i32, i32, f32, f32);
type BlendTiles = unsafe extern "C" fn(*const f32, *const f32, *const i32, i32, i32, i32, i32, i32, *mut f32);
type Blur = unsafe extern "C" fn(*const f32, *const f32, i32, i32, i32, i32, *mut f32);
type Combine = unsafe extern "C" fn(*mut f32, *const f32, *const f32, usize, i32);
type AddNoise = unsafe extern "C" fn(*const f32, *const f32, f32, f32, *mut f32, usize);
type Denoise = unsafe extern "C" fn(*const f32, *mut f32, i32, f32, f32, f32, f32, usize);
type UnitFromModel = unsafe extern "C" fn(*mut f32, usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::test_util::random;
    use crate::formats::{OwnedImage, PixelFormat};
    use crate::latent::blur::{colour_fix, gaussian_kernel};
    use crate::latent::cache::blend_tile;
    use crate::latent::rgb::test_images::{max_code_diff, random_image};
    use crate::latent::rgb::{pack_rgb, unpack_tile, ModelRange, RgbImage};
    use crate::latent::similarity::{cosine_sums, thumbnail, thumbnail_size};
    use crate::latent::tiles::Grid;

    fn flat(origins: &[(usize, usize)]) -> Vec<i32> {
        origins.iter().flat_map(|&(x, y)| [x as i32, y as i32]).collect()
    }

    const ORIGINS: [(usize, usize); 3] = [(0, 0), (13, 7), (40, 30)];
    const TILE: (usize, usize) = (24, 16);

    /// `unpack_tiles_*` over every format, next to the CPU twin's tiles.
    fn unpack_both<T: Copy + Default>(name: &str, format: PixelFormat, seed: u64) -> (Vec<T>, Vec<f32>) {
        let img = random_image(format, 53, 37, seed);
        let range = ModelRange::MINUS_ONE_ONE;
        let want: Vec<f32> = ORIGINS
            .iter()
            .flat_map(|&o| unpack_tile(format, 53, 37, &img.plane_refs(), o, TILE, range).unwrap())
            .collect();
        let (bytes, layout) = concat_planes(&img);
        let fmt = layout.device_format(bytes.len()).unwrap();
        let origins = flat(&ORIGINS);
        let mut got = vec![T::default(); want.len()];
        let k: Symbol<Unpack<T>> = emu().kernel(name);
        let out = got.as_mut_ptr();
        emu().grid(TILE.0 * TILE.1, ORIGINS.len(), || {
            // SAFETY: buffers sized for every tile; the kernel bounds-checks its thread index.
            unsafe {
                k(
                    bytes.as_ptr(),
                    fmt,
                    origins.as_ptr(),
                    24,
                    16,
                    range.scale,
                    range.bias,
                    out,
                )
            }
        });
        (got, want)
    }

    #[test]
    fn emulated_unpack_equals_the_cpu_path_bit_for_bit_in_every_format() {
        for (i, format) in PixelFormat::ALL.into_iter().enumerate() {
            let (got, want) = unpack_both::<f32>("unpack_tiles_f32", format, 100 + i as u64);
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format:?}"
            );
        }
    }

    #[test]
    fn emulated_unpack_to_half_rounds_like_the_half_crate() {
        for format in [
            PixelFormat::Nv12,
            PixelFormat::Bgra,
            PixelFormat::I422_10Le,
            PixelFormat::Gray16Le,
        ] {
            let (got, want) = unpack_both::<u16>("unpack_tiles_f16", format, 7);
            let want: Vec<u16> = want.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
            assert_eq!(got, want, "{format:?}");
        }
    }

    #[test]
    fn emulated_pack_writes_the_same_bytes_as_the_cpu_path_in_every_format() {
        let (luma, chroma): (Symbol<Pack>, Symbol<Pack>) = (emu().kernel("pack_luma"), emu().kernel("pack_chroma"));
        let (w, h) = (53, 37);
        for (i, format) in PixelFormat::ALL.into_iter().enumerate() {
            let img = RgbImage::from_planar(w, h, random(3 * w * h, -0.05, 1.05, 200 + i as u64));
            let mut want = OwnedImage::new(format, w, h, 5);
            pack_rgb(format, &img, &mut want.plane_muts()).unwrap();
            let (mut bytes, layout) = concat_planes(&OwnedImage::new(format, w, h, 5));
            let fmt = layout.device_format(bytes.len()).unwrap();
            let out = bytes.as_mut_ptr();
            // SAFETY (both launches): the buffer holds the format's planes; the kernels bounds-check.
            emu().grid(w * h, 1, || unsafe { luma(img.data.as_ptr(), fmt, out) });
            if fmt.rgb == 0 && fmt.c[1].bytes > 0 {
                let n = w.div_ceil(fmt.sx as usize) * h.div_ceil(fmt.sy as usize);
                emu().grid(n, 1, || unsafe { chroma(img.data.as_ptr(), fmt, out) });
            }
            let mut got = OwnedImage::new(format, w, h, 5);
            split_planes(&bytes, &layout, &mut got);
            assert_eq!(max_code_diff(&want, &got), 0, "{format:?}");
        }
    }

    #[test]
    fn emulated_thumbnail_and_cosine_sums_equal_the_cpu() {
        let (thumb, sums): (Symbol<Thumb>, Symbol<CosineSums>) =
            (emu().kernel("thumbnail"), emu().kernel("cosine_sums"));
        for &(w, h) in &[(1920, 1080), (131, 67), (5, 3)] {
            let img = RgbImage::from_planar(w, h, random(3 * w * h, 0.0, 1.0, w as u64));
            let want = thumbnail(&img);
            let (f, tw, th) = thumbnail_size(w, h);
            let mut got = vec![0.0f32; want.len()];
            let (dims, out) = ([w, h, f, tw, th].map(|v| v as i32), got.as_mut_ptr());
            // SAFETY: sizes from thumbnail_size, as the launcher checks.
            emu().grid(tw * th, 1, || unsafe {
                thumb(img.data.as_ptr(), dims[0], dims[1], dims[2], dims[3], dims[4], out)
            });
            assert_eq!(got, want, "{w}x{h}");
            let other = random(want.len(), -1.0, 1.0, 3);
            let mut s = [0.0f64; 3];
            let n = want.len() as i32;
            // One thread: the reduction degenerates to the CPU's sequential sum.
            // SAFETY: three outputs, `n` inputs each.
            emu().launch((1, 1), 1, || unsafe {
                sums(got.as_ptr(), other.as_ptr(), n, s.as_mut_ptr())
            });
            let (ab, aa, bb) = cosine_sums(&want, &other);
            assert_eq!(s, [ab, aa, bb], "{w}x{h}");
        }
    }

    #[test]
    fn emulated_latent_cache_blend_equals_blend_tile() {
        let (change, blend): (Symbol<Change>, Symbol<Blend>) =
            (emu().kernel("latent_change"), emu().kernel("latent_blend"));
        let (tiles, c, h, w) = (3, 4, 17, 23);
        let len = tiles * c * h * w;
        let (reference, cached_ref) = (random(len, -1.0, 1.0, 1), random(len, -1.0, 1.0, 2));
        let cached_out = random(len, -1.0, 1.0, 3);
        let mut want = random(len, -1.0, 1.0, 4);
        let mut got = want.clone();
        let item = c * h * w;
        for t in 0..tiles {
            let r = t * item..(t + 1) * item;
            let den = &mut want[r.clone()];
            blend_tile(
                &reference[r.clone()],
                &cached_ref[r.clone()],
                &cached_out[r],
                den,
                (c, h, w),
                0.6,
                0.5,
            );
        }
        let mut d = vec![0.0f32; tiles * h * w];
        let (dp, gp) = (d.as_mut_ptr(), got.as_mut_ptr());
        let (c32, h32, w32, hw32) = (c as i32, h as i32, w as i32, (h * w) as i32);
        // SAFETY (both launches): `tiles` items of this shape in every buffer.
        emu().grid(h * w, tiles, || unsafe {
            change(reference.as_ptr(), cached_ref.as_ptr(), c32, hw32, dp)
        });
        emu().grid(h * w, tiles, || unsafe {
            blend(dp, cached_out.as_ptr(), gp, c32, h32, w32, 0.6, 0.5)
        });
        assert_eq!(got, want);
    }

    #[test]
    fn emulated_tile_blend_equals_grid_blend() {
        let k: Symbol<BlendTiles> = emu().kernel("blend_tiles");
        for &(w, h, t, overlap) in &[(1920, 1080, 512, 64), (99, 71, 64, 16), (30, 20, 64, 8)] {
            let grid = Grid::new(w, h, t, t, overlap);
            let tiles = random(grid.len() * 3 * t * t, 0.0, 1.0, w as u64);
            let want = grid.blend(&tiles);
            let (weights, origins) = (grid.dense_weights(), flat(&grid.tiles));
            let mut got = vec![0.0f32; 3 * w * h];
            let out = got.as_mut_ptr();
            let dims = [grid.len(), t, t, w, h].map(|v| v as i32);
            // SAFETY: buffers made from `grid`, as `DeviceGrid` makes them.
            emu().grid(w * h, 1, || unsafe {
                k(
                    tiles.as_ptr(),
                    weights.as_ptr(),
                    origins.as_ptr(),
                    dims[0],
                    dims[1],
                    dims[2],
                    dims[3],
                    dims[4],
                    out,
                )
            });
            assert_eq!(got, want.data, "{w}x{h}");
        }
    }

    #[test]
    fn emulated_colour_fix_equals_the_cpu_per_tile() {
        let (rows, cols, combine): (Symbol<Blur>, Symbol<Blur>, Symbol<Combine>) = (
            emu().kernel("blur_rows"),
            emu().kernel("blur_cols"),
            emu().kernel("colour_fix_combine"),
        );
        let (tiles, tw, th) = (2, 40, 24);
        let n = tiles * 3 * tw * th;
        let (reference, restored) = (random(n, 0.0, 1.0, 1), random(n, -0.2, 1.2, 2));
        let mut want = restored.clone();
        for (out, tile) in want.chunks_mut(3 * tw * th).zip(reference.chunks(3 * tw * th)) {
            colour_fix(out, tile, 3, tw, th, 4.0);
        }
        let taps = gaussian_kernel(4.0);
        let nt = taps.len() as i32;
        let (planes, w32, h32) = ((tiles * 3) as i32, tw as i32, th as i32);
        let blurred = |src: &[f32]| {
            let (mut tmp, mut out) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (tp, op) = (tmp.as_mut_ptr(), out.as_mut_ptr());
            // SAFETY (both passes): `n` values in every buffer.
            emu().grid(n, 1, || unsafe {
                rows(src.as_ptr(), taps.as_ptr(), nt, w32, h32, planes, tp)
            });
            emu().grid(n, 1, || unsafe { cols(tp, taps.as_ptr(), nt, w32, h32, planes, op) });
            out
        };
        let (br, bi) = (blurred(&restored), blurred(&reference));
        let mut got = restored.clone();
        let gp = got.as_mut_ptr();
        // SAFETY: `n` values in every buffer.
        emu().grid(n, 1, || unsafe { combine(gp, br.as_ptr(), bi.as_ptr(), n, 1) });
        assert_eq!(got, want);
    }

    #[test]
    fn emulated_noise_denoise_and_range_equal_the_cpu() {
        use crate::latent::schedule::{self as twin, Prediction};
        let n = 3 * 40 * 24 + 5;
        let (z0, eps) = (random(n, -3.0, 3.0, 11), random(n, -3.0, 3.0, 12));
        let (a, b) = (0.83f32, 0.557f32);
        let add: Symbol<AddNoise> = emu().kernel("add_noise");
        let mut zt = vec![0.0f32; n];
        let zp = zt.as_mut_ptr();
        // SAFETY: `n` values in every buffer.
        emu().grid(n, 1, || unsafe { add(z0.as_ptr(), eps.as_ptr(), a, b, zp, n) });
        let mut want = vec![0.0f32; n];
        twin::add_noise(&z0, &eps, a, b, &mut want);
        assert_eq!(zt, want);
        let den: Symbol<Denoise> = emu().kernel("denoise");
        for kind in [Prediction::Epsilon, Prediction::Velocity, Prediction::Sample] {
            let mut got = eps.clone();
            let gp = got.as_mut_ptr();
            // SAFETY: `n` values in both buffers.
            emu().grid(n, 1, || unsafe {
                den(zt.as_ptr(), gp, kind as i32, a, b, 0.12, 0.95, n)
            });
            let mut want = eps.clone();
            twin::denoise_values(kind, (a, b), (0.12, 0.95), &zt, &mut want);
            assert_eq!(got, want, "{kind:?}");
        }
        let unit: Symbol<UnitFromModel> = emu().kernel("unit_from_model");
        let mut got = z0.clone();
        let gp = got.as_mut_ptr();
        // SAFETY: `n` values.
        emu().grid(n, 1, || unsafe { unit(gp, n) });
        let mut want = z0.clone();
        twin::unit_from_model(&mut want);
        assert_eq!(got, want);
    }
}
