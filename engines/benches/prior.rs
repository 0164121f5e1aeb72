//! Cost of the diffusion prior per frame, stage by stage, and end to end in line and overlapped, in one run.
//!
//! cargo bench -p oldfilm-engines --bench prior -- [BUNDLE] [auto|cpu|cuda|tensorrt] [WIDTH] [HEIGHT] [FRAMES] [STEPS]
//!
//! Defaults: the committed tiny-turbo fixture on the CPU, 640x360, 12 frames. Give a full-size bundle
//! (`oldfilm export DIR --random-weights`) for the real cost. No GStreamer: the binary runs on a GPU machine as is.
//! Figures are medians; the end-to-end lines are compared with the sum of the stages measured in the same run.

use engines::image::{colour_fix, thumbnail};
use engines::latent_cache::LatentCache;
use engines::models::Models;
use engines::noise::{gaussian, noise_stream};
use engines::runtime::RuntimeOptions;
use engines::schedule::{add_noise, coeffs, denoise, select_timesteps};
use engines::ssf::cosine;
use engines::tiling::Grid;
use engines::{Bundle, Device, DiffusionPrior, PriorConfig, RgbImage, StreamParams, Tensor};
use kernels::{Chroma, Geometry, WorkFrame};
use rayon::prelude::*;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

struct Setup {
    bundle: String,
    device: Device,
    width: usize,
    height: usize,
    frames: usize,
    steps: usize,
}

fn setup() -> Result<Setup, Error> {
    // `cargo bench` passes `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let num = |i: usize, default: usize| -> Result<usize, Error> {
        Ok(args.get(i).map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny-turbo").to_string();
    Ok(Setup {
        bundle: args.first().cloned().unwrap_or(fixture),
        device: args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(Device::Cpu),
        width: num(2, 640)?,
        height: num(3, 360)?,
        frames: num(4, 12)?,
        steps: num(5, 1)?,
    })
}

/// A moving, coloured test picture (4:2:0), different every frame so the similarity filter never skips.
fn frame(width: usize, height: usize, index: usize) -> WorkFrame {
    let mut f = WorkFrame::new(Geometry {
        width,
        height,
        chroma: Chroma::Subsampled { sx: 2, sy: 2 },
    });
    for (i, v) in f.luma.data.iter_mut().enumerate() {
        let (x, y) = ((i % width) as f32, (i / width) as f32);
        *v = 0.5 + 0.35 * ((x + 3.0 * index as f32) * 0.05).sin() * (y * 0.04).cos();
    }
    for (c, plane) in f.chroma.iter_mut().enumerate() {
        for (i, v) in plane.data.iter_mut().enumerate() {
            *v = 0.5 + 0.1 * ((i + 7 * c + index) as f32 * 0.01).sin();
        }
    }
    f
}

/// Keeps the optimiser from dropping the work whose result is not used.
fn keep<T>(value: T) -> Result<(), Error> {
    std::hint::black_box(value);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` once per frame after one warm-up call; returns the median in ms.
fn time(frames: usize, mut f: impl FnMut(usize) -> Result<(), Error>) -> Result<f64, Error> {
    f(0)?;
    let mut ms = Vec::with_capacity(frames);
    for i in 1..=frames {
        let t = Instant::now();
        f(i)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(ms))
}

fn params(s: &Setup) -> StreamParams {
    StreamParams {
        steps: s.steps,
        ssf_max_skip: 0,
        ..StreamParams::default()
    }
}

/// Each stage alone, on the same frames, the way the prior calls it. Returns (name, ms) rows.
fn stages(s: &Setup) -> Result<Vec<(&'static str, f64)>, Error> {
    let bundle = Bundle::open(&s.bundle)?;
    let options = RuntimeOptions {
        device: s.device,
        ort_library: None,
        intra_threads: 0,
        trt_fp16: true,
    };
    let (mut models, _) = Models::load(&bundle, &options, &mut Vec::new())?;
    let Models::Diffusion(d) = &mut models else {
        return Err("the stage breakdown needs a turbo or lcm bundle".into());
    };
    let m = &bundle.manifest.model;
    let p = params(s);
    let sched = bundle.scheduler().ok_or("no scheduler")?;
    let t0 = select_timesteps(sched, p.strength, 1)[0];
    let (a, b) = coeffs(sched, t0);
    let work: Vec<WorkFrame> = (0..=s.frames).map(|i| frame(s.width, s.height, i)).collect();
    let rgb: Vec<RgbImage> = work.iter().map(RgbImage::from_work_frame).collect();
    let grid = Grid::new(s.width, s.height, m.width, m.height, p.tile_overlap);
    let tiles = Tensor {
        shape: vec![grid.len(), 3, m.height, m.width],
        data: grid.extract_all(&rgb[0]),
    };
    let z0 = d.encode(&tiles)?;
    let noise = gaussian(p.seed, noise_stream(0, 0), z0.item_len());
    let mut zt = z0.clone();
    let pred = d.predict(&zt, &vec![t0; zt.len()])?;
    let y = d.decode(&pred)?;
    let (c, lw, lh) = d.latent_shape();
    let mut cache = LatentCache::default();
    let mut out = work[0].clone();
    let n = s.frames;
    let thumb0 = thumbnail(&rgb[0]);
    let mut rows = vec![
        ("unpack to RGB", time(n, |i| keep(RgbImage::from_work_frame(&work[i])))?),
        (
            "similarity filter (thumbnail + cosine)",
            time(n, |i| keep(cosine(&thumbnail(&rgb[i]), &thumb0)))?,
        ),
        ("tiles out", time(n, |i| keep(grid.extract_all(&rgb[i])))?),
        ("TAESD encode", time(n, |_| keep(d.encode(&tiles)?))?),
    ];
    rows.push((
        "fixed noise",
        time(n, |_| {
            for i in 0..z0.len() {
                add_noise(z0.item(i), &noise, a, b, zt.item_mut(i));
            }
            Ok(())
        })?,
    ));
    rows.push((
        "UNet (one step, all tiles)",
        time(n, |_| {
            let mut pr = d.predict(&zt, &vec![t0; zt.len()])?;
            for i in 0..zt.len() {
                denoise(sched, t0, zt.item(i), pr.item_mut(i));
            }
            Ok(())
        })?,
    ));
    rows.push((
        "latent cache",
        time(n, |_| {
            let mut den = pred.clone();
            let shape = (den.len(), c, lh, lw);
            cache.apply(&z0.data, &mut den.data, shape, 0.5, 0.5);
            Ok(())
        })?,
    ));
    rows.push(("TAESD decode", time(n, |_| keep(d.decode(&pred)?))?));
    rows.push((
        "colour fix (per tile)",
        time(n, |_| {
            // Tiles in parallel, as the prior runs it.
            let mut yy = y.data.clone();
            let item = y.item_len();
            yy.par_chunks_mut(item)
                .zip(tiles.data.par_chunks(item))
                .for_each(|(o, t)| colour_fix(o, t, 3, m.width, m.height, p.colour_fix_sigma));
            Ok(())
        })?,
    ));
    rows.push(("tiles blended back", time(n, |_| keep(grid.blend(&y.data)))?));
    rows.push((
        "RGB to frame",
        time(n, |i| {
            rgb[i].to_work_frame(work[i].geometry, &mut out);
            Ok(())
        })?,
    ));
    Ok(rows)
}

/// ms per frame through `DiffusionPrior`, pushing and popping as the element does.
fn end_to_end(s: &Setup, overlap: bool) -> Result<(f64, String), Error> {
    let mut config = PriorConfig::new(&s.bundle);
    config.device = s.device;
    config.params = params(s);
    config.overlap = overlap;
    let mut prior = DiffusionPrior::new(config)?;
    let work: Vec<WorkFrame> = (0..s.frames + 2).map(|i| frame(s.width, s.height, i)).collect();
    let mut out = work[0].clone();
    // Two frames to warm up (TensorRT builds engines, allocators grow), then the clock runs.
    for (i, f) in work[..2].iter().enumerate() {
        prior.push(f, i == 0)?;
        while prior.pop(&mut out).is_some() {}
    }
    prior.drain()?;
    while prior.pop(&mut out).is_some() {}
    let t = Instant::now();
    let mut popped = 0;
    for f in &work[2..] {
        prior.push(f, false)?;
        while prior.pop(&mut out).is_some() {
            popped += 1;
        }
    }
    prior.drain()?;
    while prior.pop(&mut out).is_some() {
        popped += 1;
    }
    assert_eq!(popped, s.frames, "N in = N out");
    let ms = t.elapsed().as_secs_f64() * 1e3 / s.frames as f64;
    Ok((ms, prior.provider().to_string()))
}

/// ms per frame through the GPU-resident prior (packed I420 in and out through the device ring).
#[cfg(feature = "cuda")]
fn gpu_end_to_end(s: &Setup) -> Result<(f64, String), Error> {
    use kernels::cuda::format::concat_planes;
    use kernels::formats::{pack, OwnedImage, PixelFormat};
    let mut config = PriorConfig::new(&s.bundle);
    config.device = s.device;
    config.params = params(s);
    let mut prior = engines::gpu::GpuPrior::new(config, 0)?;
    let packed: Vec<(Vec<u8>, kernels::cuda::format::FrameLayout)> = (0..s.frames + 2)
        .map(|i| {
            let mut img = OwnedImage::new(PixelFormat::I420, s.width, s.height, 0);
            pack(PixelFormat::I420, &frame(s.width, s.height, i), &mut img.plane_muts())?;
            Ok(concat_planes(&img))
        })
        .collect::<Result<_, Error>>()?;
    let mut out = vec![0u8; packed[0].0.len()];
    for (i, (bytes, layout)) in packed[..2].iter().enumerate() {
        prior.process(layout, bytes, i == 0, &mut out)?;
    }
    prior.drain(&mut out, |_, _| {})?;
    let t = Instant::now();
    let mut popped = 0;
    for (bytes, layout) in &packed[2..] {
        popped += usize::from(prior.process(layout, bytes, false, &mut out)?.is_some());
    }
    prior.drain(&mut out, |_, _| popped += 1)?;
    assert_eq!(popped, s.frames, "N in = N out");
    let ms = t.elapsed().as_secs_f64() * 1e3 / s.frames as f64;
    Ok((ms, format!("{} on {}", prior.provider(), prior.device_name())))
}

fn main() -> Result<(), Error> {
    let s = setup()?;
    println!(
        "bundle {} on {:?}, {}x{}, {} frames, {} step(s)",
        s.bundle, s.device, s.width, s.height, s.frames, s.steps
    );
    let rows = stages(&s)?;
    let sum: f64 = rows.iter().map(|(_, ms)| ms).sum();
    println!("{:<42} {:>10}", "stage (median per frame)", "ms");
    for (name, ms) in &rows {
        println!("{name:<42} {ms:>10.2}");
    }
    println!("{:<42} {sum:>10.2}", "sum of stages");
    let (inline, provider) = end_to_end(&s, false)?;
    let (overlapped, _) = end_to_end(&s, true)?;
    println!("provider: {provider}");
    println!(
        "end to end, in line:    {inline:>8.2} ms/frame ({:.1} fps), {:.2} x the sum of stages",
        1e3 / inline,
        inline / sum
    );
    println!(
        "end to end, overlapped: {overlapped:>8.2} ms/frame ({:.1} fps), {:.2} x in line",
        1e3 / overlapped,
        overlapped / inline
    );
    #[cfg(feature = "cuda")]
    if s.device != Device::Cpu {
        match gpu_end_to_end(&s) {
            Ok((ms, what)) => println!(
                "end to end, GPU-resident ({what}): {ms:>8.2} ms/frame ({:.1} fps), {:.2} x in line",
                1e3 / ms,
                ms / inline
            ),
            Err(e) => println!("GPU-resident path not run: {e}"),
        }
    }
    Ok(())
}
