//! The diffusion prior: frames in, restored frames out, in order, with the stream batch's latency.
//!
//! Per frame (StreamDiffusion's img2img, one step or a few): tile the frame to the model's size → TAESD encode →
//! add the fixed seeded noise at `strength` → UNet (one step for turbo; for LCM, `steps` stages in one batched
//! call) → blend the denoised latent with the rolling latent cache → decode → colour fix each tile against its
//! input → blend the tiles back. Frames the similarity filter skips reuse the last restored detail with their own
//! low frequencies. `engines/export/reference.py` is the same algorithm in numpy, and the tests hold the two
//! together.

use crate::bundle::{Bundle, Kind};
use crate::error::{EngineError, Result};
use crate::image::RgbImage;
use crate::models::Models;
use crate::overlap::{Out, Overlap};
use crate::runtime::{Device, Provider, RuntimeOptions};
use crate::stages::{effective_steps, timesteps_for, Back, Core, Front, Ready, SharedStats};
use kernels::{Chroma, Geometry, WorkFrame};
use std::collections::VecDeque;
use std::path::PathBuf;

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
    /// Run pre-processing, inference and post-processing on three threads with queues between them, so that they
    /// overlap (the element's choice). Off: everything runs in `push`, and a frame with no stream-batch latency is
    /// ready as soon as `push` returns.
    pub overlap: bool,
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
            overlap: false,
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

/// Where the stages run.
enum Run {
    /// All three on the caller's thread: a frame is ready as soon as `push` returns (zero-latency bundles).
    Inline(Box<Inline>),
    /// On three threads with queues between them; frames come out as they are finished.
    Overlapped(Overlapped),
}

struct Inline {
    front: Front,
    core: Core,
    back: Back,
}

struct Overlapped {
    threads: Overlap,
    /// Frames pushed and not yet back from the post-processing thread.
    in_flight: usize,
    /// Most frames in flight before `push` waits for one to come back.
    capacity: usize,
    /// The first error a thread reported, kept for the next call; then a message saying why nothing runs.
    failed: Option<EngineError>,
    failure_message: Option<String>,
    next_seq: u64,
}

pub struct DiffusionPrior {
    bundle: Bundle,
    provider: Provider,
    notes: Vec<String>,
    params: StreamParams,
    timesteps: Vec<usize>,
    run: Run,
    ready: VecDeque<Ready>,
    stats: SharedStats,
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
            "diffusion prior {} ({:?}) runs on {}{}",
            bundle.dir.display(),
            bundle.kind(),
            provider.name(),
            if config.overlap {
                ", pre/post-processing overlapped"
            } else {
                ""
            }
        );
        check_params(&bundle, &config.params)?;
        let params = config.params;
        let stats = SharedStats::default();
        let m = &bundle.manifest.model;
        let front = Front::new(&params, (m.width, m.height), stats.clone());
        let core = Core::new(bundle.clone(), models, &params, stats.clone());
        let back = Back::new(&params);
        let run = if config.overlap {
            let capacity = max_in_flight(&bundle, &params);
            let threads = Overlap::spawn(front, core, back, capacity)
                .map_err(|e| EngineError::Runtime(format!("cannot start the prior's threads: {e}")))?;
            Run::Overlapped(Overlapped {
                threads,
                in_flight: 0,
                capacity,
                failed: None,
                failure_message: None,
                next_seq: 0,
            })
        } else {
            Run::Inline(Box::new(Inline { front, core, back }))
        };
        Ok(DiffusionPrior {
            timesteps: timesteps_for(&bundle, &params),
            bundle,
            provider,
            notes,
            params,
            run,
            ready: VecDeque::new(),
            stats,
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

    /// Counters so far (a copy: the stages may be updating them on their threads).
    pub fn stats(&self) -> PriorStats {
        self.stats.lock().clone()
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
        effective_steps(&self.bundle, &self.params) - 1
    }

    /// Whether pre- and post-processing run on their own threads.
    pub fn is_overlapped(&self) -> bool {
        matches!(self.run, Run::Overlapped(_))
    }

    /// Frames that come out later than in line: one with the overlapped stages (a frame finishes while the next
    /// is taken in), none in line.
    pub fn overlap_lag_frames(&self) -> usize {
        usize::from(self.is_overlapped())
    }

    /// Most frames the prior holds at once: the stream batch, the skipped frames that may wait behind it, and
    /// with overlap the frames inside the queues. `push` waits rather than hold more.
    pub fn max_in_flight(&self) -> usize {
        max_in_flight(&self.bundle, &self.params)
    }

    /// What [`DiffusionPrior::max_in_flight`] would be with `params`.
    pub fn max_in_flight_with(&self, params: &StreamParams) -> usize {
        max_in_flight(&self.bundle, params)
    }

    /// Frames pushed and not yet popped.
    pub fn pending(&self) -> usize {
        let inside = match &self.run {
            Run::Inline(stages) => stages.core_pending(),
            Run::Overlapped(o) => o.in_flight,
        };
        inside + self.ready.len()
    }

    /// Changes the live parameters. A change of `strength` or `steps` drains the frames in flight first (they come
    /// out with the old schedule); the rest applies from the next frame.
    pub fn update(&mut self, params: StreamParams) -> Result<()> {
        check_params(&self.bundle, &params)?;
        match &mut self.run {
            Run::Inline(stages) => {
                stages.front.update(&params);
                stages.core.update(&params)?;
                stages.collect(&mut self.ready);
                stages.back.update(&params);
            }
            Run::Overlapped(o) => {
                let wanted = max_in_flight(&self.bundle, &params);
                if wanted > o.capacity {
                    return Err(EngineError::Config(format!(
                        "steps {} and ssf-max-skip {} need room for {wanted} frames in flight; this prior was started \
                         with room for {}",
                        params.steps, params.ssf_max_skip, o.capacity
                    )));
                }
                o.check()?;
                o.send(|t| t.send_update(params.clone()))?;
            }
        }
        self.timesteps = timesteps_for(&self.bundle, &params);
        self.params = params;
        Ok(())
    }

    /// Takes a working frame in (`starts_shot`: the first frame after a cut, which resets the filter and the
    /// cache). Returns its sequence number; restored frames come out of [`DiffusionPrior::pop`] in order.
    pub fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<u64> {
        check_size(frame.width(), frame.height())?;
        match &mut self.run {
            Run::Inline(stages) => {
                let rgb = RgbImage::from_work_frame(frame);
                stages.push(rgb, Some(frame.geometry), starts_shot, &mut self.ready)
            }
            Run::Overlapped(o) => o.push(|t| t.send_work(frame, starts_shot), &mut self.ready),
        }
    }

    /// As [`DiffusionPrior::push`], for a planar RGB frame.
    pub fn push_rgb(&mut self, frame: RgbImage, starts_shot: bool) -> Result<u64> {
        check_size(frame.width, frame.height)?;
        match &mut self.run {
            Run::Inline(stages) => stages.push(frame, None, starts_shot, &mut self.ready),
            Run::Overlapped(o) => o.push(|t| t.send_rgb(frame, starts_shot), &mut self.ready),
        }
    }

    /// The next restored frame, written into `out` (reallocated if its geometry is not the input's). Does not
    /// wait: with overlap, a frame comes out once its post-processing is done.
    pub fn pop(&mut self, out: &mut WorkFrame) -> Option<Restored> {
        let r = self.next_ready()?;
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
        let r = self.next_ready()?;
        Some((
            Restored {
                seq: r.seq,
                skipped: r.skipped,
            },
            r.image,
        ))
    }

    /// Push then pop one frame: with no latency (turbo, image) `out` is this frame restored (with overlap, this
    /// waits for it).
    pub fn process(&mut self, frame: &WorkFrame, out: &mut WorkFrame, starts_shot: bool) -> Result<Option<Restored>> {
        let seq = self.push(frame, starts_shot)?;
        let no_latency = self.latency_frames() == 0;
        if let Run::Overlapped(o) = &mut self.run {
            if no_latency {
                o.wait_for(seq, &mut self.ready)?;
            }
        }
        Ok(self.pop(out))
    }

    /// Runs the stream batch until every frame pushed is ready to pop (end of stream).
    pub fn drain(&mut self) -> Result<()> {
        match &mut self.run {
            Run::Inline(stages) => {
                stages.core.drain()?;
                stages.collect(&mut self.ready);
                Ok(())
            }
            Run::Overlapped(o) => {
                o.check()?;
                o.send(|t| t.send_drain())?;
                o.wait_marker(&mut self.ready, |m| matches!(m, Out::Drained))
            }
        }
    }

    /// Drops every frame in flight or waiting (flush, seek) and forgets the filter's and the cache's history.
    /// Returns how many frames were dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending();
        self.ready.clear();
        match &mut self.run {
            Run::Inline(stages) => {
                stages.front.reset();
                stages.core.reset();
                stages.back.reset();
            }
            Run::Overlapped(o) => {
                let mut discarded = VecDeque::new();
                if o.send(|t| t.send_reset()).is_ok() {
                    let _ = o.wait_marker(&mut discarded, |m| matches!(m, Out::ResetDone));
                }
                o.in_flight = 0;
                o.failed = None;
                o.failure_message = None;
            }
        }
        dropped
    }

    fn next_ready(&mut self) -> Option<Ready> {
        if let Run::Overlapped(o) = &mut self.run {
            o.poll(&mut self.ready);
        }
        self.ready.pop_front()
    }
}

impl Inline {
    fn push(
        &mut self,
        rgb: RgbImage,
        geometry: Option<Geometry>,
        starts_shot: bool,
        ready: &mut VecDeque<Ready>,
    ) -> Result<u64> {
        let frame = self.front.prepare(rgb, geometry, starts_shot);
        let seq = frame.seq;
        let accepted = self.core.accept(frame);
        self.collect(ready);
        accepted.map(|_| seq)
    }

    /// Post-processes every frame the core has finished, in order.
    fn collect(&mut self, ready: &mut VecDeque<Ready>) {
        while let Some(item) = self.core.pop_done() {
            ready.push_back(self.back.finish(item));
        }
    }

    fn core_pending(&self) -> usize {
        self.core.queued()
    }
}

impl Overlapped {
    /// Sends one frame in, first waiting (and collecting what comes back) while the queues are full.
    fn push(&mut self, send: impl FnOnce(&Overlap) -> bool, ready: &mut VecDeque<Ready>) -> Result<u64> {
        self.check()?;
        while self.in_flight >= self.capacity {
            self.receive_blocking(ready)?;
            self.check()?;
        }
        self.send(send)?;
        self.in_flight += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.poll(ready);
        Ok(seq)
    }

    fn send(&mut self, send: impl FnOnce(&Overlap) -> bool) -> Result<()> {
        if send(&self.threads) {
            Ok(())
        } else {
            Err(EngineError::Runtime(
                "the diffusion prior's threads have stopped".into(),
            ))
        }
    }

    /// The error a thread reported, once; then the same message on every later call until a reset.
    fn check(&mut self) -> Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        match &self.failure_message {
            Some(m) => Err(EngineError::Frame(format!(
                "the diffusion prior stopped after an error: {m}"
            ))),
            None => Ok(()),
        }
    }

    /// Collects whatever has come back, without waiting.
    fn poll(&mut self, ready: &mut VecDeque<Ready>) {
        while let Some(out) = self.threads.try_recv() {
            self.take(out, ready);
        }
    }

    fn receive_blocking(&mut self, ready: &mut VecDeque<Ready>) -> Result<()> {
        let out = self
            .threads
            .recv()
            .ok_or_else(|| EngineError::Runtime("the diffusion prior's threads have stopped".into()))?;
        self.take(out, ready);
        Ok(())
    }

    fn take(&mut self, out: Out, ready: &mut VecDeque<Ready>) -> bool {
        match out {
            Out::Frame(r) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                ready.push_back(r);
                false
            }
            Out::Failed(e) => {
                self.failure_message = Some(e.to_string());
                self.failed = Some(e);
                false
            }
            Out::Drained | Out::ResetDone => true,
        }
    }

    /// Collects frames until the marker `is_marker` accepts comes back.
    fn wait_marker(&mut self, ready: &mut VecDeque<Ready>, is_marker: impl Fn(&Out) -> bool) -> Result<()> {
        loop {
            let out = self
                .threads
                .recv()
                .ok_or_else(|| EngineError::Runtime("the diffusion prior's threads have stopped".into()))?;
            let done = is_marker(&out);
            self.take(out, ready);
            if done {
                // Frames a failed core dropped never come back.
                if self.failed.is_some() || self.failure_message.is_some() {
                    self.in_flight = 0;
                }
                return self.check();
            }
        }
    }

    /// Collects frames until frame `seq` is ready.
    fn wait_for(&mut self, seq: u64, ready: &mut VecDeque<Ready>) -> Result<()> {
        while !ready.iter().any(|r| r.seq == seq) {
            self.check()?;
            self.receive_blocking(ready)?;
        }
        Ok(())
    }
}

/// See [`DiffusionPrior::max_in_flight`]: the similarity filter lets at most `ssf_max_skip` frames wait behind the
/// stream batch before an inferred frame moves it on, so this bound can never stop the stream.
fn max_in_flight(bundle: &Bundle, params: &StreamParams) -> usize {
    effective_steps(bundle, params) + params.ssf_max_skip as usize + 3
}

fn check_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(EngineError::Frame(format!("{width}x{height} frame")));
    }
    Ok(())
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
