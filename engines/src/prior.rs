//! The diffusion prior: frames in, restored frames out, in order, with the stream batch's latency.
//!
//! Per frame (StreamDiffusion's img2img, one step or a few): tile the frame to the model's size → TAESD encode →
//! add the fixed seeded noise at `strength` → UNet (one step for turbo; for LCM, `steps` stages in one batched
//! call) → blend the denoised latent with the rolling latent cache → decode → colour fix each tile against its
//! input → blend the tiles back. Frames the similarity filter skips reuse the last restored detail with their own
//! low frequencies. `engines/export/reference.py` is the same algorithm in numpy, and the tests hold the two
//! together.

use crate::bundle::{Bundle, Kind, SchedulerSection};
use crate::error::{EngineError, Result};
use crate::image::{blur, colour_fix, thumbnail, RgbImage};
use crate::latent_cache::LatentCache;
use crate::models::Models;
use crate::noise::{gaussian, noise_stream};
use crate::runtime::{Device, Provider, RuntimeOptions};
use crate::schedule::{add_noise, coeffs, denoise, select_timesteps};
use crate::ssf::SimilarityFilter;
use crate::stream_batch::StreamBatch;
use crate::tensor::Tensor;
use crate::tiling::Grid;
use kernels::{Chroma, Geometry, WorkFrame};
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

/// What can change while a stream runs (element properties).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamParams {
    /// How much of the frame the prior may re-imagine: the start timestep is `strength * (T - 1)`.
    pub strength: f32,
    /// LCM denoising steps (stream batch size); turbo always takes one.
    pub steps: usize,
    /// Similarity above which frames start to be skipped (StreamDiffusion's 0.98).
    pub ssf_threshold: f32,
    /// Most frames skipped in a row; 0 turns the filter off.
    pub ssf_max_skip: u32,
    /// How much of the cached latent a static region keeps (0 = off).
    pub temporal_blend: f32,
    /// Latent change at which the cache weight falls to `1/e` of `temporal_blend`.
    pub cache_tolerance: f32,
    /// Tile size in pixels: 0 = the model's input size (the only size a static-shape model takes).
    pub tile_size: usize,
    /// Minimum overlap between tiles, in pixels.
    pub tile_overlap: usize,
    /// Seed of the fixed noise and of the filter's decisions.
    pub seed: u64,
    /// Gaussian sigma (pixels) below which frequencies come from the input; 0 = no colour fix.
    pub colour_fix_sigma: f32,
}

impl Default for StreamParams {
    fn default() -> Self {
        StreamParams {
            strength: 0.5,
            steps: 2,
            ssf_threshold: 0.98,
            ssf_max_skip: 10,
            temporal_blend: 0.5,
            cache_tolerance: 0.5,
            tile_size: 0,
            tile_overlap: 32,
            seed: 0,
            colour_fix_sigma: 6.0,
        }
    }
}

/// Everything [`DiffusionPrior::new`] needs.
#[derive(Clone, Debug)]
pub struct PriorConfig {
    /// The bundle folder.
    pub bundle: PathBuf,
    pub device: Device,
    /// The ONNX Runtime library; `None` = `ORT_DYLIB_PATH`, then the onnxruntime pip wheel.
    pub ort_library: Option<PathBuf>,
    /// CPU threads per operator; 0 = ONNX Runtime's default.
    pub intra_threads: usize,
    /// Let TensorRT build fp16 engines.
    pub trt_fp16: bool,
    pub params: StreamParams,
}

impl PriorConfig {
    pub fn new(bundle: impl Into<PathBuf>) -> Self {
        PriorConfig {
            bundle: bundle.into(),
            device: Device::Auto,
            ort_library: None,
            intra_threads: 0,
            trt_fp16: true,
            params: StreamParams::default(),
        }
    }
}

/// One restored frame taken out with [`DiffusionPrior::pop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The number [`DiffusionPrior::push`] returned for the input frame.
    pub seq: u64,
    /// The similarity filter skipped inference for it.
    pub skipped: bool,
}

/// Counters for the element's stats message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriorStats {
    pub frames_inferred: u64,
    pub frames_skipped: u64,
    pub unet_calls: u64,
    /// Time spent running models, all frames.
    pub inference_ms_total: f64,
    /// Model time of the last push or drain step.
    pub last_inference_ms: f64,
}

struct Pending {
    seq: u64,
    input: RgbImage,
    geometry: Option<Geometry>,
    skipped: bool,
    starts_shot: bool,
    grid: Option<Grid>,
    tiles: Tensor,
    /// Input latents (diffusion) or input tiles (image), for the cache.
    reference: Tensor,
    out: Option<RgbImage>,
}

struct Ready {
    seq: u64,
    skipped: bool,
    image: RgbImage,
    geometry: Option<Geometry>,
}

pub struct DiffusionPrior {
    bundle: Bundle,
    models: Models,
    provider: Provider,
    notes: Vec<String>,
    params: StreamParams,
    timesteps: Vec<usize>,
    ssf: SimilarityFilter,
    cache: LatentCache,
    batch: StreamBatch<u64>,
    noise: HashMap<(usize, usize), Vec<f32>>,
    pending: VecDeque<Pending>,
    ready: VecDeque<Ready>,
    /// The last frame that came out, with its input.
    last_out: Option<(RgbImage, RgbImage)>,
    last_size: Option<(usize, usize)>,
    next_seq: u64,
    stats: PriorStats,
}

impl DiffusionPrior {
    /// Opens the bundle, loads its models on the requested device and checks `config.params` against it.
    pub fn new(config: PriorConfig) -> Result<Self> {
        let bundle = Bundle::open(&config.bundle)?;
        let options = RuntimeOptions {
            device: config.device,
            ort_library: config.ort_library.clone(),
            intra_threads: config.intra_threads,
            trt_fp16: config.trt_fp16,
        };
        let mut notes = Vec::new();
        let (models, provider) = Models::load(&bundle, &options, &mut notes)?;
        tracing::info!(
            "diffusion prior {} ({:?}) runs on {}",
            bundle.dir.display(),
            bundle.kind(),
            provider.name()
        );
        check_params(&bundle, &config.params)?;
        let steps = effective_steps(&bundle, &config.params);
        let timesteps = bundle
            .scheduler()
            .map(|s| select_timesteps(s, config.params.strength, steps))
            .unwrap_or_default();
        let p = &config.params;
        Ok(DiffusionPrior {
            ssf: SimilarityFilter::new(p.ssf_threshold, p.ssf_max_skip, p.seed),
            batch: StreamBatch::new(steps),
            params: config.params,
            bundle,
            models,
            provider,
            notes,
            timesteps,
            cache: LatentCache::default(),
            noise: HashMap::new(),
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            last_out: None,
            last_size: None,
            next_seq: 0,
            stats: PriorStats::default(),
        })
    }

    /// ONNX Runtime's name of the execution provider that runs the models (the slowest one, if they differ).
    pub fn provider(&self) -> &str {
        self.provider.name()
    }

    /// Fallbacks and skipped providers, for a warning message.
    pub fn provider_notes(&self) -> &[String] {
        &self.notes
    }

    pub fn stats(&self) -> &PriorStats {
        &self.stats
    }

    pub fn params(&self) -> &StreamParams {
        &self.params
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The timesteps each frame is denoised at (empty for an image model).
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Inferred frames a frame waits behind before it comes out: `steps - 1` with a stream batch, else 0.
    /// Skipped frames wait in order behind frames still in flight.
    pub fn latency_frames(&self) -> usize {
        self.batch.steps() - 1
    }

    /// Frames pushed and not yet popped.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// Changes the live parameters. A change of `strength` or `steps` drains the frames in flight first (they come
    /// out with the old schedule); the rest applies from the next frame.
    pub fn update(&mut self, params: StreamParams) -> Result<()> {
        check_params(&self.bundle, &params)?;
        let steps = effective_steps(&self.bundle, &params);
        if params.strength != self.params.strength || steps != self.batch.steps() {
            self.drain()?;
            self.batch = StreamBatch::new(steps);
            self.timesteps = self
                .bundle
                .scheduler()
                .map(|s| select_timesteps(s, params.strength, steps))
                .unwrap_or_default();
        }
        if params.seed != self.params.seed {
            self.noise.clear();
        }
        self.ssf.threshold = params.ssf_threshold;
        self.ssf.max_skip = params.ssf_max_skip;
        if params.seed != self.params.seed {
            self.ssf = SimilarityFilter::new(params.ssf_threshold, params.ssf_max_skip, params.seed);
        }
        self.params = params;
        Ok(())
    }

    /// Takes a working frame in (`starts_shot`: the first frame after a cut, which resets the filter and the
    /// cache). Returns its sequence number; restored frames come out of [`DiffusionPrior::pop`] in order.
    pub fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<u64> {
        self.push_inner(RgbImage::from_work_frame(frame), Some(frame.geometry), starts_shot)
    }

    /// As [`DiffusionPrior::push`], for a planar RGB frame.
    pub fn push_rgb(&mut self, frame: RgbImage, starts_shot: bool) -> Result<u64> {
        self.push_inner(frame, None, starts_shot)
    }

    /// The next restored frame, written into `out` (reallocated if its geometry is not the input's).
    pub fn pop(&mut self, out: &mut WorkFrame) -> Option<Restored> {
        let r = self.ready.pop_front()?;
        let geometry = r.geometry.unwrap_or(Geometry {
            width: r.image.width,
            height: r.image.height,
            chroma: Chroma::Subsampled { sx: 1, sy: 1 },
        });
        r.image.to_work_frame(geometry, out);
        Some(Restored {
            seq: r.seq,
            skipped: r.skipped,
        })
    }

    /// The next restored frame as planar RGB.
    pub fn pop_rgb(&mut self) -> Option<(Restored, RgbImage)> {
        let r = self.ready.pop_front()?;
        Some((
            Restored {
                seq: r.seq,
                skipped: r.skipped,
            },
            r.image,
        ))
    }

    /// Push then pop one frame: with no latency (turbo, image) `out` is this frame restored.
    pub fn process(&mut self, frame: &WorkFrame, out: &mut WorkFrame, starts_shot: bool) -> Result<Option<Restored>> {
        self.push(frame, starts_shot)?;
        Ok(self.pop(out))
    }

    /// Runs the stream batch until every frame pushed is ready to pop (end of stream).
    pub fn drain(&mut self) -> Result<()> {
        while !self.batch.is_empty() {
            let t0 = Instant::now();
            self.step()?;
            self.account(t0);
            self.resolve();
        }
        self.resolve();
        Ok(())
    }

    /// Drops every frame in flight or waiting (flush, seek) and forgets the filter's and the cache's history.
    /// Returns how many frames were dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending.len() + self.ready.len();
        self.batch.clear();
        self.pending.clear();
        self.ready.clear();
        self.ssf.reset();
        self.cache.reset();
        self.last_out = None;
        self.last_size = None;
        dropped
    }

    fn push_inner(&mut self, input: RgbImage, geometry: Option<Geometry>, mut starts_shot: bool) -> Result<u64> {
        if input.width == 0 || input.height == 0 {
            return Err(EngineError::Frame(format!("{}x{} frame", input.width, input.height)));
        }
        if self.last_size != Some((input.width, input.height)) {
            starts_shot = true;
            self.last_size = Some((input.width, input.height));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let skipped = self.ssf.decide(seq, thumbnail(&input), starts_shot);
        let mut p = Pending {
            seq,
            input,
            geometry,
            skipped,
            starts_shot,
            grid: None,
            tiles: Tensor::default(),
            reference: Tensor::default(),
            out: None,
        };
        if skipped {
            self.stats.frames_skipped += 1;
            self.pending.push_back(p);
            self.resolve();
            return Ok(seq);
        }
        self.stats.frames_inferred += 1;
        let t0 = Instant::now();
        let m = &self.bundle.manifest.model;
        let (tw, th) = (m.width, m.height);
        let grid = Grid::new(p.input.width, p.input.height, tw, th, self.params.tile_overlap);
        p.tiles = Tensor {
            shape: vec![grid.len(), 3, th, tw],
            data: grid.extract_all(&p.input),
        };
        p.grid = Some(grid);
        match &mut self.models {
            Models::Image(model) => {
                let mut y = model.run(&p.tiles)?;
                if p.starts_shot {
                    self.cache.reset();
                }
                let shape = (y.len(), 3, th, tw);
                self.cache.apply(
                    &p.tiles.data,
                    &mut y.data,
                    shape,
                    self.params.temporal_blend,
                    self.params.cache_tolerance,
                );
                p.out = Some(finish_tiles(y, &p, self.params.colour_fix_sigma));
                self.pending.push_back(p);
            }
            Models::Diffusion(d) => {
                let z0 = d.encode(&p.tiles)?;
                let s = self.bundle.manifest.scheduler.as_ref().expect("validated");
                let (a, b) = coeffs(s, self.timesteps[0]);
                let mut zt = z0.clone();
                for i in 0..z0.len() {
                    let eps = fixed_noise(&mut self.noise, self.params.seed, i, 0, z0.item_len());
                    add_noise(z0.item(i), eps, a, b, zt.item_mut(i));
                }
                p.reference = z0;
                self.pending.push_back(p);
                self.batch.push(zt, seq);
                self.step()?;
            }
        }
        self.account(t0);
        self.resolve();
        Ok(seq)
    }

    /// One batched UNet call; finishes the frame at the last stage.
    fn step(&mut self) -> Result<()> {
        let Models::Diffusion(d) = &mut self.models else {
            return Ok(());
        };
        let s: &SchedulerSection = self.bundle.manifest.scheduler.as_ref().expect("validated");
        let timesteps = &self.timesteps;
        let (noise, seed) = (&mut self.noise, self.params.seed);
        let unet_calls = &mut self.stats.unet_calls;
        let finished = self.batch.step(
            |latents, stages| {
                let ts: Vec<usize> = stages.iter().map(|&st| timesteps[st]).collect();
                *unet_calls += 1;
                let mut pred = d.predict(latents, &ts)?;
                for (i, &t) in ts.iter().enumerate() {
                    denoise(s, t, latents.item(i), pred.item_mut(i));
                }
                Ok::<_, EngineError>(pred)
            },
            |stage, lat| {
                let (a, b) = coeffs(s, timesteps[stage]);
                for i in 0..lat.len() {
                    let eps = fixed_noise(noise, seed, i, stage, lat.item_len());
                    let x0 = lat.item(i).to_vec();
                    add_noise(&x0, eps, a, b, lat.item_mut(i));
                }
            },
        )?;
        if let Some((seq, den)) = finished {
            self.finish(seq, den)?;
        }
        Ok(())
    }

    fn finish(&mut self, seq: u64, mut den: Tensor) -> Result<()> {
        let Models::Diffusion(d) = &mut self.models else {
            return Ok(());
        };
        let p = self
            .pending
            .iter_mut()
            .find(|p| p.seq == seq)
            .expect("a frame in flight is pending");
        if p.starts_shot {
            self.cache.reset();
        }
        let (c, w, h) = d.latent_shape();
        let n = den.len();
        self.cache.apply(
            &p.reference.data,
            &mut den.data,
            (n, c, h, w),
            self.params.temporal_blend,
            self.params.cache_tolerance,
        );
        let y = d.decode(&den)?;
        p.out = Some(finish_tiles(y, p, self.params.colour_fix_sigma));
        Ok(())
    }

    /// Moves finished frames, in order, to the ready queue; a skipped frame is made when its turn comes.
    fn resolve(&mut self) {
        while let Some(front) = self.pending.front_mut() {
            if front.skipped {
                let out = match &self.last_out {
                    Some((last_out, last_in))
                        if (last_out.width, last_out.height) == (front.input.width, front.input.height) =>
                    {
                        reuse(last_out, last_in, &front.input, self.params.colour_fix_sigma)
                    }
                    _ => front.input.clone(),
                };
                front.out = Some(out);
            }
            if front.out.is_none() {
                return;
            }
            let p = self.pending.pop_front().expect("front");
            let image = p.out.expect("checked");
            self.last_out = Some((image.clone(), p.input));
            self.ready.push_back(Ready {
                seq: p.seq,
                skipped: p.skipped,
                image,
                geometry: p.geometry,
            });
        }
    }

    fn account(&mut self, t0: Instant) {
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.stats.last_inference_ms = ms;
        self.stats.inference_ms_total += ms;
    }
}

/// A skipped frame: the last restored frame moved by the change of the input's low frequencies since then, so a
/// still scene is reused as it was while fades and small changes of tone still show.
fn reuse(last_out: &RgbImage, last_in: &RgbImage, input: &RgbImage, sigma: f32) -> RgbImage {
    let mut out = last_out.clone();
    if sigma > 0.0 {
        let change: Vec<f32> = input.data.iter().zip(&last_in.data).map(|(a, b)| a - b).collect();
        let low = blur(&change, 3, out.width, out.height, sigma);
        for (v, d) in out.data.iter_mut().zip(&low) {
            *v += d;
        }
    }
    out.clamp01();
    out
}

/// Per-tile colour fix against the input tiles, then the feathered blend.
fn finish_tiles(mut y: Tensor, p: &Pending, sigma: f32) -> RgbImage {
    let grid = p.grid.as_ref().expect("inferred frames have a grid");
    let (th, tw) = (y.shape[2], y.shape[3]);
    let item = y.item_len();
    y.data
        .par_chunks_mut(item)
        .zip(p.tiles.data.par_chunks(item))
        .for_each(|(out, tile)| colour_fix(out, tile, 3, tw, th, sigma));
    grid.blend(&y.data)
}

fn fixed_noise(
    cache: &mut HashMap<(usize, usize), Vec<f32>>,
    seed: u64,
    tile: usize,
    stage: usize,
    len: usize,
) -> &[f32] {
    cache
        .entry((tile, stage))
        .or_insert_with(|| gaussian(seed, noise_stream(tile, stage), len))
}

fn effective_steps(bundle: &Bundle, p: &StreamParams) -> usize {
    match bundle.kind() {
        Kind::Lcm => p.steps.max(1),
        Kind::Turbo | Kind::Image => 1,
    }
}

fn check_params(bundle: &Bundle, p: &StreamParams) -> Result<()> {
    let m = &bundle.manifest.model;
    if p.tile_size != 0 && (p.tile_size != m.width || p.tile_size != m.height) {
        return Err(EngineError::Config(format!(
            "tile-size {} does not fit the bundle, whose models take {}x{} tiles (use 0, or re-export with --size {})",
            p.tile_size, m.width, m.height, p.tile_size
        )));
    }
    if !(0.0..=1.0).contains(&p.strength) {
        return Err(EngineError::Config(format!(
            "strength {} is outside [0, 1]",
            p.strength
        )));
    }
    if !(0.0..=1.0).contains(&p.temporal_blend) {
        return Err(EngineError::Config(format!(
            "temporal-blend {} is outside [0, 1]",
            p.temporal_blend
        )));
    }
    if !(0.0..=1.0).contains(&p.ssf_threshold) {
        return Err(EngineError::Config(format!(
            "ssf-threshold {} is outside [0, 1]",
            p.ssf_threshold
        )));
    }
    if let Some(s) = bundle.scheduler() {
        let allowed = if s.timesteps.is_empty() {
            s.num_train_timesteps
        } else {
            s.timesteps.len()
        };
        if bundle.kind() == Kind::Lcm && (p.steps == 0 || p.steps > allowed) {
            return Err(EngineError::Config(format!(
                "steps {} must be between 1 and {allowed} for this bundle",
                p.steps
            )));
        }
    }
    if p.colour_fix_sigma < 0.0 || !p.colour_fix_sigma.is_finite() {
        return Err(EngineError::Config(format!(
            "colour-fix sigma {} is not >= 0",
            p.colour_fix_sigma
        )));
    }
    Ok(())
}
