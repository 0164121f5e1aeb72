//! The prior's three stages, each owning its own state, so that they run either in line (one thread) or on three
//! threads with queues between them ([`crate::overlap`]) with the same results, frame for frame:
//!
//! - [`Front`], pre-processing: the similarity filter's decision and the tiling.
//! - [`Core`], inference: TAESD encode, the fixed noise, the UNet stream batch, the latent cache, decode. It lets
//!   frames out in order: a skipped frame waits behind the frames still in the stream batch.
//! - [`Back`], post-processing: colour fix and feathered blend of the tiles, and skipped frames rebuilt from the
//!   last restored one.

use crate::bundle::{Bundle, SchedulerSection};
use crate::error::{EngineError, Result};
use crate::image::{blur, colour_fix, thumbnail, RgbImage};
use crate::latent_cache::LatentCache;
use crate::models::Models;
use crate::noise::{gaussian, noise_stream};
use crate::prior::{PriorStats, StreamParams};
use crate::schedule::{add_noise, coeffs, denoise, select_timesteps};
use crate::ssf::SimilarityFilter;
use crate::stream_batch::StreamBatch;
use crate::tensor::Tensor;
use crate::tiling::Grid;
use kernels::Geometry;
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Counters shared by the stages (which may run on different threads) and read by the caller.
#[derive(Clone, Default)]
pub(crate) struct SharedStats(Arc<Mutex<PriorStats>>);

impl SharedStats {
    pub fn lock(&self) -> MutexGuard<'_, PriorStats> {
        // A stage that panicked leaves counters that are still worth reading.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A frame after pre-processing.
pub(crate) struct Prepared {
    pub seq: u64,
    pub input: RgbImage,
    pub geometry: Option<Geometry>,
    pub skipped: bool,
    pub starts_shot: bool,
    /// Tiling and the input tiles `[tiles][3][h][w]`; none for a skipped frame.
    pub grid: Option<Grid>,
    pub tiles: Tensor,
}

/// A frame after inference: the model's output tiles, none for a skipped frame.
pub(crate) struct Inferred {
    pub frame: Prepared,
    pub tiles_out: Option<Tensor>,
}

/// A restored frame, waiting to be popped.
pub(crate) struct Ready {
    pub seq: u64,
    pub skipped: bool,
    pub image: RgbImage,
    pub geometry: Option<Geometry>,
}

/// The stream batch size a bundle and the parameters give: LCM takes `steps`, the others one.
pub(crate) fn effective_steps(bundle: &Bundle, p: &StreamParams) -> usize {
    match bundle.kind() {
        crate::Kind::Lcm => p.steps.max(1),
        crate::Kind::Turbo | crate::Kind::Image => 1,
    }
}

/// The timesteps a frame is denoised at (empty for an image model).
pub(crate) fn timesteps_for(bundle: &Bundle, p: &StreamParams) -> Vec<usize> {
    bundle
        .scheduler()
        .map(|s| select_timesteps(s, p.strength, effective_steps(bundle, p)))
        .unwrap_or_default()
}

/// Pre-processing: sequence numbers, the similarity filter, tiling.
pub(crate) struct Front {
    ssf: SimilarityFilter,
    next_seq: u64,
    last_size: Option<(usize, usize)>,
    /// The model's tile size (width, height).
    tile: (usize, usize),
    params: StreamParams,
    stats: SharedStats,
}

impl Front {
    pub fn new(params: &StreamParams, tile: (usize, usize), stats: SharedStats) -> Self {
        Front {
            ssf: SimilarityFilter::new(params.ssf_threshold, params.ssf_max_skip, params.seed),
            next_seq: 0,
            last_size: None,
            tile,
            params: params.clone(),
            stats,
        }
    }

    pub fn prepare(&mut self, input: RgbImage, geometry: Option<Geometry>, mut starts_shot: bool) -> Prepared {
        if self.last_size != Some((input.width, input.height)) {
            starts_shot = true;
            self.last_size = Some((input.width, input.height));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let skipped = self.ssf.decide(seq, thumbnail(&input), starts_shot);
        let mut frame = Prepared {
            seq,
            input,
            geometry,
            skipped,
            starts_shot,
            grid: None,
            tiles: Tensor::default(),
        };
        if skipped {
            self.stats.lock().frames_skipped += 1;
            return frame;
        }
        self.stats.lock().frames_inferred += 1;
        let (tw, th) = self.tile;
        let grid = Grid::new(frame.input.width, frame.input.height, tw, th, self.params.tile_overlap);
        frame.tiles = Tensor {
            shape: vec![grid.len(), 3, th, tw],
            data: grid.extract_all(&frame.input),
        };
        frame.grid = Some(grid);
        frame
    }

    pub fn update(&mut self, params: &StreamParams) {
        if params.seed != self.params.seed {
            self.ssf = SimilarityFilter::new(params.ssf_threshold, params.ssf_max_skip, params.seed);
        }
        self.ssf.threshold = params.ssf_threshold;
        self.ssf.max_skip = params.ssf_max_skip;
        self.params = params.clone();
    }

    pub fn reset(&mut self) {
        self.ssf.reset();
        self.last_size = None;
    }
}

/// A frame inside [`Core`]: its input latents (for the cache) and, once finished, the output tiles.
struct Slot {
    frame: Prepared,
    reference: Tensor,
    out: Option<Tensor>,
}

/// Inference: the models, the stream batch, the fixed noise and the latent cache.
pub(crate) struct Core {
    bundle: Bundle,
    models: Models,
    params: StreamParams,
    timesteps: Vec<usize>,
    batch: StreamBatch<u64>,
    noise: HashMap<(usize, usize), Vec<f32>>,
    cache: LatentCache,
    /// Frames in order; the front leaves when it is skipped or finished.
    queue: VecDeque<Slot>,
    stats: SharedStats,
}

impl Core {
    pub fn new(bundle: Bundle, models: Models, params: &StreamParams, stats: SharedStats) -> Self {
        Core {
            timesteps: timesteps_for(&bundle, params),
            batch: StreamBatch::new(effective_steps(&bundle, params)),
            bundle,
            models,
            params: params.clone(),
            noise: HashMap::new(),
            cache: LatentCache::default(),
            queue: VecDeque::new(),
            stats,
        }
    }

    /// Takes the next frame in order; a frame to infer enters the stream batch (and, for one step or an image
    /// model, comes straight out).
    pub fn accept(&mut self, frame: Prepared) -> Result<()> {
        if frame.skipped {
            self.queue.push_back(Slot {
                frame,
                reference: Tensor::default(),
                out: None,
            });
            return Ok(());
        }
        let t0 = Instant::now();
        let result = self.infer(frame);
        self.account(t0);
        result
    }

    fn infer(&mut self, frame: Prepared) -> Result<()> {
        let seq = frame.seq;
        match &mut self.models {
            Models::Image(model) => {
                let mut y = model.run(&frame.tiles)?;
                if frame.starts_shot {
                    self.cache.reset();
                }
                let (th, tw) = (frame.tiles.shape[2], frame.tiles.shape[3]);
                let shape = (y.len(), 3, th, tw);
                let p = &self.params;
                self.cache.apply(
                    &frame.tiles.data,
                    &mut y.data,
                    shape,
                    p.temporal_blend,
                    p.cache_tolerance,
                );
                self.queue.push_back(Slot {
                    frame,
                    reference: Tensor::default(),
                    out: Some(y),
                });
                Ok(())
            }
            Models::Diffusion(d) => {
                let z0 = d.encode(&frame.tiles)?;
                let s = self.bundle.manifest.scheduler.as_ref().expect("validated");
                let (a, b) = coeffs(s, self.timesteps[0]);
                let mut zt = z0.clone();
                for i in 0..z0.len() {
                    let eps = fixed_noise(&mut self.noise, self.params.seed, i, 0, z0.item_len());
                    add_noise(z0.item(i), eps, a, b, zt.item_mut(i));
                }
                self.queue.push_back(Slot {
                    frame,
                    reference: z0,
                    out: None,
                });
                self.batch.push(zt, seq);
                self.step()
            }
        }
    }

    /// One batched UNet call; the frame at the last stage is decoded.
    fn step(&mut self) -> Result<()> {
        let Models::Diffusion(d) = &mut self.models else {
            return Ok(());
        };
        let s: &SchedulerSection = self.bundle.manifest.scheduler.as_ref().expect("validated");
        let timesteps = &self.timesteps;
        let (noise, seed) = (&mut self.noise, self.params.seed);
        let mut calls = 0;
        let finished = self.batch.step(
            |latents, stages| {
                let ts: Vec<usize> = stages.iter().map(|&st| timesteps[st]).collect();
                calls += 1;
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
        );
        self.stats.lock().unet_calls += calls;
        if let Some((seq, den)) = finished? {
            self.finish(seq, den)?;
        }
        Ok(())
    }

    /// Latent cache, then decode, for the frame that left the stream batch.
    fn finish(&mut self, seq: u64, mut den: Tensor) -> Result<()> {
        let Models::Diffusion(d) = &mut self.models else {
            return Ok(());
        };
        let slot = self
            .queue
            .iter_mut()
            .find(|s| s.frame.seq == seq)
            .expect("a frame in flight is queued");
        if slot.frame.starts_shot {
            self.cache.reset();
        }
        let (c, w, h) = d.latent_shape();
        let n = den.len();
        let p = &self.params;
        self.cache.apply(
            &slot.reference.data,
            &mut den.data,
            (n, c, h, w),
            p.temporal_blend,
            p.cache_tolerance,
        );
        slot.out = Some(d.decode(&den)?);
        Ok(())
    }

    /// The oldest frame, once it can leave: skipped, or inferred and finished.
    pub fn pop_done(&mut self) -> Option<Inferred> {
        let front = self.queue.front()?;
        if !front.frame.skipped && front.out.is_none() {
            return None;
        }
        let slot = self.queue.pop_front()?;
        Some(Inferred {
            frame: slot.frame,
            tiles_out: slot.out,
        })
    }

    /// Frames taken and not yet let out.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Runs the stream batch until every frame taken is finished (end of stream).
    pub fn drain(&mut self) -> Result<()> {
        while !self.batch.is_empty() {
            let t0 = Instant::now();
            let result = self.step();
            self.account(t0);
            result?;
        }
        Ok(())
    }

    /// Applies new parameters; a new schedule (strength, steps) drains the frames in flight first, so they come
    /// out with the schedule they started with.
    pub fn update(&mut self, params: &StreamParams) -> Result<()> {
        let steps = effective_steps(&self.bundle, params);
        if params.strength != self.params.strength || steps != self.batch.steps() {
            self.drain()?;
            self.batch = StreamBatch::new(steps);
            self.timesteps = timesteps_for(&self.bundle, params);
        }
        if params.seed != self.params.seed {
            self.noise.clear();
        }
        self.params = params.clone();
        Ok(())
    }

    /// Drops every frame in flight and the cache.
    pub fn reset(&mut self) {
        self.batch.clear();
        self.queue.clear();
        self.cache.reset();
    }

    fn account(&self, t0: Instant) {
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut stats = self.stats.lock();
        stats.last_inference_ms = ms;
        stats.inference_ms_total += ms;
    }
}

/// Post-processing: tiles back to a frame with the input's low frequencies; skipped frames from the last output.
pub(crate) struct Back {
    /// The last frame that came out, with its input.
    last_out: Option<(RgbImage, RgbImage)>,
    colour_fix_sigma: f32,
}

impl Back {
    pub fn new(params: &StreamParams) -> Self {
        Back {
            last_out: None,
            colour_fix_sigma: params.colour_fix_sigma,
        }
    }

    /// Frames must come in order: a skipped frame is rebuilt from the one before it.
    pub fn finish(&mut self, item: Inferred) -> Ready {
        let Inferred { frame, tiles_out } = item;
        let sigma = self.colour_fix_sigma;
        let image = match (tiles_out, &self.last_out) {
            (Some(y), _) => finish_tiles(y, &frame, sigma),
            (None, Some((last_out, last_in)))
                if (last_out.width, last_out.height) == (frame.input.width, frame.input.height) =>
            {
                reuse(last_out, last_in, &frame.input, sigma)
            }
            (None, _) => frame.input.clone(),
        };
        self.last_out = Some((image.clone(), frame.input));
        Ready {
            seq: frame.seq,
            skipped: frame.skipped,
            image,
            geometry: frame.geometry,
        }
    }

    pub fn update(&mut self, params: &StreamParams) {
        self.colour_fix_sigma = params.colour_fix_sigma;
    }

    pub fn reset(&mut self) {
        self.last_out = None;
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
fn finish_tiles(mut y: Tensor, frame: &Prepared, sigma: f32) -> RgbImage {
    let grid = frame.grid.as_ref().expect("inferred frames have a grid");
    let (th, tw) = (y.shape[2], y.shape[3]);
    let item = y.item_len();
    y.data
        .par_chunks_mut(item)
        .zip(frame.tiles.data.par_chunks(item))
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
