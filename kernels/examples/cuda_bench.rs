//! Per-kernel time for a 1080p frame, pinned copy bandwidth, and the device frame ring's overlap.
//!
//! ```text
//! cargo build --release -p oldfilm-kernels --example cuda_bench
//! ./target/release/examples/cuda_bench [frames]      # on the GPU machine; no cargo or GStreamer needed there
//! ```
//!
//! Without CUDA it prints `no CUDA: skipped (...)` and exits 0.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaSlice;
use kernels::cuda::cache::DeviceLatentCache;
use kernels::cuda::colour::DeviceColourFix;
use kernels::cuda::format::{concat_planes, DeviceFormat};
use kernels::cuda::pack::pack_rgb;
use kernels::cuda::ring::DeviceRing;
use kernels::cuda::similarity::{cosine, thumbnail};
use kernels::cuda::tiles::DeviceGrid;
use kernels::cuda::unpack::{unpack_tiles, unpack_tiles_f16, upload_origins};
use kernels::cuda::{available, CudaError, Gpu};
use kernels::latent::rgb::ModelRange;
use kernels::latent::similarity::thumbnail_size;
use kernels::latent::tiles::Grid;
use kernels::rng::Rng;
use kernels::{OwnedImage, PixelFormat};
use std::time::Instant;

const W: usize = 1920;
const H: usize = 1080;
const TILE: usize = 512;
const OVERLAP: usize = 64;
/// SD's latent: 4 channels at 1/8 of the tile.
const LATENT: (usize, usize, usize) = (4, TILE / 8, TILE / 8);
const REPS: usize = 50;

fn main() {
    if let Err(e) = available() {
        println!("no CUDA: skipped ({e})");
        return;
    }
    let frames = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    if let Err(e) = run(frames) {
        eprintln!("cuda_bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(frames: usize) -> Result<(), CudaError> {
    let gpu = Gpu::new(0)?;
    println!("device: {}", gpu.name());
    println!("frame {W}x{H}, tiles {TILE}x{TILE} overlap {OVERLAP}, {REPS} repetitions a kernel (CUDA events)");
    let mut pre_post = 0.0;
    for format in [PixelFormat::Nv12, PixelFormat::I420_10Le, PixelFormat::Bgrx] {
        pre_post = bench_formats(&gpu, format)?;
    }
    pre_post += bench_prior_kernels(&gpu)?;
    println!("pre + post per 1080p frame (BGRx unpack tiles + pack, similarity, cache, colour fix, blend): {pre_post:.3} ms (target <= 0.5 ms)");
    bench_copies(&gpu)?;
    bench_ring(&gpu, frames)
}

/// Mean milliseconds of `f` on the compute stream, timed with events.
fn time_ms(gpu: &Gpu, mut f: impl FnMut() -> Result<(), CudaError>) -> Result<f64, CudaError> {
    f()?; // warm up (first launch, caches)
    let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let (start, end) = (gpu.ctx.new_event(timing)?, gpu.ctx.new_event(timing)?);
    start.record(&gpu.stream)?;
    for _ in 0..REPS {
        f()?;
    }
    end.record(&gpu.stream)?;
    end.synchronize()?;
    Ok(start.elapsed_ms(&end)? as f64 / REPS as f64)
}

fn random_frame(format: PixelFormat, seed: u64) -> OwnedImage {
    let mut img = OwnedImage::new(format, W, H, 0);
    let mut rng = Rng::new(seed);
    img.planes
        .iter_mut()
        .flatten()
        .for_each(|b| *b = rng.next_u64() as u8 & 0x3f);
    img
}

fn upload_frame(gpu: &Gpu, format: PixelFormat) -> Result<(CudaSlice<u8>, DeviceFormat), CudaError> {
    let (bytes, layout) = concat_planes(&random_frame(format, 1));
    let fmt = layout.device_format(bytes.len())?;
    Ok((gpu.stream.clone_htod(&bytes)?, fmt))
}

/// Unpack (tiles f32 / f16, whole frame) and pack for one format; returns unpack-tiles + pack in ms.
fn bench_formats(gpu: &Gpu, format: PixelFormat) -> Result<f64, CudaError> {
    let (mut frame, fmt) = upload_frame(gpu, format)?;
    let grid = DeviceGrid::new(gpu, Grid::new(W, H, TILE, TILE, OVERLAP))?;
    let mut tiles = gpu.stream.alloc_zeros::<f32>(grid.tiles_len())?;
    let mut tiles16 = gpu.stream.alloc_zeros::<u16>(grid.tiles_len())?;
    let whole = upload_origins(gpu, &[(0, 0)])?;
    let mut rgb = gpu.stream.alloc_zeros::<f32>(3 * W * H)?;
    let range = ModelRange::MINUS_ONE_ONE;
    let origins = upload_origins(gpu, &grid.grid.tiles)?;
    let t_tiles = time_ms(gpu, || grid.unpack(gpu, &frame, &fmt, range, &mut tiles))?;
    let t_f16 = time_ms(gpu, || {
        unpack_tiles_f16(gpu, &frame, &fmt, &origins, (TILE, TILE), range, &mut tiles16)
    })?;
    let t_whole = time_ms(gpu, || {
        unpack_tiles(gpu, &frame, &fmt, &whole, (W, H), ModelRange::ZERO_ONE, &mut rgb)
    })?;
    let t_pack = time_ms(gpu, || pack_rgb(gpu, &rgb, &fmt, &mut frame))?;
    println!(
        "{:>10}: unpack {} tiles f32 {t_tiles:.3} ms, f16 {t_f16:.3} ms; unpack whole frame {t_whole:.3} ms; pack {t_pack:.3} ms",
        format.caps_name(),
        grid.grid.len()
    );
    Ok(t_tiles + t_pack)
}

/// The prior's kernels at 1080p; returns their sum in ms.
fn bench_prior_kernels(gpu: &Gpu) -> Result<f64, CudaError> {
    let grid = DeviceGrid::new(gpu, Grid::new(W, H, TILE, TILE, OVERLAP))?;
    let mut rng = Rng::new(9);
    let mut random = |n: usize| -> Result<CudaSlice<f32>, CudaError> {
        let v: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
        Ok(gpu.stream.clone_htod(&v)?)
    };
    let rgb = random(3 * W * H)?;
    let (_, tw, th) = thumbnail_size(W, H);
    let (mut ta, tb) = (gpu.stream.alloc_zeros::<f32>(3 * tw * th)?, random(3 * tw * th)?);
    let mut sums = gpu.stream.alloc_zeros::<f64>(3)?;
    let t_thumb = time_ms(gpu, || thumbnail(gpu, &rgb, W, H, &mut ta))?;
    let t0 = Instant::now();
    for _ in 0..REPS {
        cosine(gpu, &ta, &tb, 3 * tw * th, &mut sums)?;
    }
    let t_cos = t0.elapsed().as_secs_f64() * 1e3 / REPS as f64;
    let (c, lh, lw) = LATENT;
    let shape = (grid.grid.len(), c, lh, lw);
    let (reference, mut denoised) = (random(shape.0 * c * lh * lw)?, random(shape.0 * c * lh * lw)?);
    let mut cache = DeviceLatentCache::default();
    cache.apply(gpu, &reference, &mut denoised, shape, 0.5, 0.1)?;
    let t_cache = time_ms(gpu, || cache.apply(gpu, &reference, &mut denoised, shape, 0.5, 0.1))?;
    let (mut restored, tiles_in) = (random(grid.tiles_len())?, random(grid.tiles_len())?);
    let mut fix = DeviceColourFix::new(gpu, 6.0, grid.tiles_len())?;
    let t_fix = time_ms(gpu, || {
        fix.apply(gpu, &mut restored, &tiles_in, grid.grid.len() * 3, (TILE, TILE))
    })?;
    let mut out = gpu.stream.alloc_zeros::<f32>(3 * W * H)?;
    let t_blend = time_ms(gpu, || grid.blend(gpu, &restored, &mut out))?;
    println!("thumbnail {t_thumb:.3} ms; cosine (with its 24-byte download and a sync) {t_cos:.3} ms");
    println!(
        "latent cache ({} tiles of {c}x{lh}x{lw}, change + blend + store) {t_cache:.3} ms; colour fix (sigma 6) {t_fix:.3} ms; tile blend {t_blend:.3} ms",
        grid.grid.len()
    );
    Ok(t_thumb + t_cos + t_cache + t_fix + t_blend)
}

fn bench_copies(gpu: &Gpu) -> Result<(), CudaError> {
    for (name, bytes) in [("NV12 1080p", W * H * 3 / 2), ("RGB f32 1080p", 3 * W * H * 4)] {
        // SAFETY: u8 has no invalid bit patterns; the buffer is only copied.
        let mut host = unsafe { gpu.ctx.alloc_pinned_with_flags::<u8>(bytes, 0) }?;
        let mut dev = gpu.stream.alloc_zeros::<u8>(bytes)?;
        let h2d = time_ms(gpu, || Ok(gpu.stream.memcpy_htod(&host, &mut dev)?))?;
        let d2h = time_ms(gpu, || Ok(gpu.stream.memcpy_dtoh(&dev, &mut host)?))?;
        let gbs = |ms: f64| bytes as f64 / ms / 1e6;
        println!(
            "pinned copy {name} ({:.1} MB): H2D {h2d:.3} ms ({:.1} GB/s), D2H {d2h:.3} ms ({:.1} GB/s)",
            bytes as f64 / 1e6,
            gbs(h2d),
            gbs(d2h)
        );
    }
    Ok(())
}

/// NV12 in, unpack to RGB + pack back out, through a 3-slot ring: per-frame time against the sum of its stages.
fn bench_ring(gpu: &Gpu, frames: usize) -> Result<(), CudaError> {
    let img = random_frame(PixelFormat::Nv12, 2);
    let (bytes, layout) = concat_planes(&img);
    let fmt = layout.device_format(bytes.len())?;
    let whole = upload_origins(gpu, &[(0, 0)])?;
    let rgb = std::sync::Mutex::new(gpu.stream.alloc_zeros::<f32>(3 * W * H)?);
    let compute = |din: &CudaSlice<u8>, dout: &mut CudaSlice<u8>| -> Result<(), CudaError> {
        let mut rgb = rgb.lock().unwrap_or_else(|p| p.into_inner());
        unpack_tiles(gpu, din, &fmt, &whole, (W, H), ModelRange::ZERO_ONE, &mut rgb)?;
        pack_rgb(gpu, &rgb, &fmt, dout)
    };
    let ring = DeviceRing::new(gpu, 3, bytes.len(), bytes.len())?;
    let stages = stage_times(gpu, &bytes, &compute)?;
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<(), CudaError> {
        let producer = s.spawn(|| -> Result<(), CudaError> {
            for _ in 0..frames {
                ring.submit(gpu, &bytes, compute)?;
            }
            Ok(())
        });
        let mut out = vec![0u8; bytes.len()];
        for _ in 0..frames {
            ring.pop(&mut out)?;
        }
        producer.join().expect("producer thread")
    })?;
    let per_frame = t0.elapsed().as_secs_f64() * 1e3 / frames as f64;
    let (sum, slowest) = (stages.iter().sum::<f64>(), stages.iter().cloned().fold(0.0, f64::max));
    println!(
        "ring (3 slots, NV12 1080p, unpack + pack): stages upload {:.3} / compute {:.3} / download {:.3} ms, sum {sum:.3} ms",
        stages[0], stages[1], stages[2]
    );
    println!(
        "ring end to end: {per_frame:.3} ms a frame over {frames} frames = {:.0}% of the sum of stages, {:+.1}% over the slowest stage (target <= +5%)",
        100.0 * per_frame / sum,
        100.0 * (per_frame / slowest - 1.0)
    );
    Ok(())
}

/// Wall time of each stage alone (host staging copy included in the upload), synchronised after each.
fn stage_times(
    gpu: &Gpu,
    bytes: &[u8],
    compute: &impl Fn(&CudaSlice<u8>, &mut CudaSlice<u8>) -> Result<(), CudaError>,
) -> Result<[f64; 3], CudaError> {
    // SAFETY: u8 has no invalid bit patterns; written before it is read.
    let mut host = unsafe { gpu.ctx.alloc_pinned_with_flags::<u8>(bytes.len(), 0) }?;
    let (mut din, mut dout) = (
        gpu.stream.alloc_zeros::<u8>(bytes.len())?,
        gpu.stream.alloc_zeros::<u8>(bytes.len())?,
    );
    let wall = |f: &mut dyn FnMut() -> Result<(), CudaError>| -> Result<f64, CudaError> {
        f()?;
        gpu.stream.synchronize()?;
        let t0 = Instant::now();
        for _ in 0..REPS {
            f()?;
            gpu.stream.synchronize()?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1e3 / REPS as f64)
    };
    let up = wall(&mut || {
        host.as_mut_slice()?.copy_from_slice(bytes);
        Ok(gpu.stream.memcpy_htod(&host, &mut din)?)
    })?;
    let comp = wall(&mut || compute(&din, &mut dout))?;
    let mut out = vec![0u8; bytes.len()];
    let down = wall(&mut || {
        gpu.stream.memcpy_dtoh(&dout, &mut host)?;
        gpu.stream.synchronize()?;
        out.copy_from_slice(host.as_slice()?);
        Ok(())
    })?;
    Ok([up, comp, down])
}
