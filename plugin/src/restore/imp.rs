//! The `oldfilmrestore` subclass: negotiation, events and the streaming thread's side of the
//! worker. Frames are unpacked here, restored on the worker thread (`kernels::worker`) over a
//! temporal window, and packed and pushed here, in order, with their input's timestamps.

use super::prior::{GpuStage, PriorLink, PriorStage};
use crate::video::{copy_packed_rows, filter_pad_templates, lock, pack_frame, parse_caps, unpack_frame};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::base_transform::GenerateOutputSuccess;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use kernels::blotch::BlotchParams;
use kernels::clean::CleanParams;
use kernels::compare::CompareMode as KernelCompare;
use kernels::deflicker::{DeflickerParams, RegionalParams};
use kernels::grain::GrainParams;
use kernels::restorer::{RestoreParams, Stage};
use kernels::scratch::ScratchParams;
use kernels::stabilise::StabiliseParams;
use kernels::worker::{Done, OnPostFailure, PostStage, Worker};
use kernels::{PixelFormat, WorkFrame};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "oldfilmrestore",
        gst::DebugColorFlags::empty(),
        Some("Old film restoration"),
    )
});

/// Before/after view for telecine preview.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOldFilmCompareMode")]
pub enum CompareMode {
    #[default]
    #[enum_value(name = "None: the restored picture only", nick = "none")]
    None = 0,
    #[enum_value(
        name = "Split: left half original, right half restored, a white divider",
        nick = "split"
    )]
    Split = 1,
    #[enum_value(
        name = "Side by side: original left, restored right (output is twice as wide)",
        nick = "side-by-side"
    )]
    SideBySide = 2,
}

/// What to do when the diffusion engine cannot be loaded or fails while running.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstOldFilmFallback")]
pub enum Fallback {
    #[default]
    #[enum_value(name = "Error: post an element error and stop", nick = "error")]
    Error = 0,
    #[enum_value(
        name = "Classic: post a warning and go on with the classic stages only",
        nick = "classic"
    )]
    Classic = 1,
}

impl From<CompareMode> for KernelCompare {
    fn from(mode: CompareMode) -> Self {
        match mode {
            CompareMode::None => KernelCompare::None,
            CompareMode::Split => KernelCompare::Split,
            CompareMode::SideBySide => KernelCompare::SideBySide,
        }
    }
}

const DEFAULT_BYPASS: bool = false;
const DEFAULT_TEMPORAL_RADIUS: u32 = 2;
const MAX_TEMPORAL_RADIUS: u32 = 8;
const DEFAULT_DEFLICKER: bool = true;
const DEFAULT_DEFLICKER_STRENGTH: f64 = 1.0;
const DEFAULT_DEFLICKER_SPAN: u32 = 24;
const DEFAULT_REGIONAL_DEFLICKER: bool = true;
const DEFAULT_REGIONAL_DEFLICKER_STRENGTH: f64 = 1.0;
const DEFAULT_STABILISE: bool = false;
const DEFAULT_STABILISE_SPAN: u32 = 16;
const DEFAULT_STABILISE_MAX_SHIFT: f64 = 8.0;
const DEFAULT_CUT_THRESHOLD: f64 = 0.6;
const DEFAULT_BLOTCHES: bool = true;
const DEFAULT_BLOTCH_STRENGTH: f64 = 0.5;
const DEFAULT_SCRATCHES: bool = true;
const DEFAULT_SCRATCH_STRENGTH: f64 = 0.5;
const DEFAULT_GRAIN: bool = true;
const DEFAULT_GRAIN_STRENGTH: f64 = 1.0;
const DEFAULT_GRAIN_RADIUS: u32 = 1;
const DEFAULT_STATS_INTERVAL: u32 = 250;

/// Properties. Copied once per frame; never locked across processing.
#[derive(Debug, Clone)]
struct Settings {
    bypass: bool,
    temporal_radius: u32,
    deflicker: bool,
    deflicker_strength: f64,
    deflicker_span: u32,
    regional_deflicker: bool,
    regional_deflicker_strength: f64,
    stabilise: bool,
    stabilise_span: u32,
    stabilise_max_shift: f64,
    cut_threshold: f64,
    blotches: bool,
    blotch_strength: f64,
    scratches: bool,
    scratch_strength: f64,
    grain: bool,
    grain_strength: f64,
    grain_radius: u32,
    compare: CompareMode,
    stats_interval: u32,
    /// Diffusion engine bundle folder; `None` = classic stages only.
    // Shared strings: `Settings` is copied for every frame.
    engine: Option<Arc<str>>,
    device: Arc<str>,
    prior: engines::StreamParams,
    fallback: Fallback,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bypass: DEFAULT_BYPASS,
            temporal_radius: DEFAULT_TEMPORAL_RADIUS,
            deflicker: DEFAULT_DEFLICKER,
            deflicker_strength: DEFAULT_DEFLICKER_STRENGTH,
            deflicker_span: DEFAULT_DEFLICKER_SPAN,
            regional_deflicker: DEFAULT_REGIONAL_DEFLICKER,
            regional_deflicker_strength: DEFAULT_REGIONAL_DEFLICKER_STRENGTH,
            stabilise: DEFAULT_STABILISE,
            stabilise_span: DEFAULT_STABILISE_SPAN,
            stabilise_max_shift: DEFAULT_STABILISE_MAX_SHIFT,
            cut_threshold: DEFAULT_CUT_THRESHOLD,
            blotches: DEFAULT_BLOTCHES,
            blotch_strength: DEFAULT_BLOTCH_STRENGTH,
            scratches: DEFAULT_SCRATCHES,
            scratch_strength: DEFAULT_SCRATCH_STRENGTH,
            grain: DEFAULT_GRAIN,
            grain_strength: DEFAULT_GRAIN_STRENGTH,
            grain_radius: DEFAULT_GRAIN_RADIUS,
            compare: CompareMode::None,
            stats_interval: DEFAULT_STATS_INTERVAL,
            engine: None,
            device: Arc::from("auto"),
            prior: engines::StreamParams::default(),
            fallback: Fallback::Error,
        }
    }
}

/// What travels with a frame through the worker.
struct FrameTag {
    input: gst::Buffer,
    arrived: Instant,
    unpack_ms: f64,
}

/// Diffusion-prior properties that take effect on a running stream (from its next frame).
const LIVE_PRIOR_PROPERTIES: [&str; 7] = [
    "strength",
    "steps",
    "ssf-threshold",
    "ssf-max-skip",
    "temporal-blend",
    "tile-overlap",
    "seed",
];

/// Running totals for the `oldfilmrestore-stats` message.
#[derive(Default)]
struct RunStats {
    frames_in: u64,
    frames_out: u64,
    shots: u64,
    processing_ms: f64,
    unpack_ms: f64,
    pack_ms: f64,
    stage_ms: [f64; Stage::ALL.len()],
    wall_latency_ms: f64,
}

/// The output side of the stream: everything needed to turn a finished frame into a buffer.
struct Output {
    in_info: gst_video::VideoInfo,
    out_info: gst_video::VideoInfo,
    format: PixelFormat,
    /// Compare mode the negotiated caps were made for.
    compare: KernelCompare,
    pool: Option<gst::BufferPool>,
    /// Packed buffers waiting to be pushed once the state lock is released.
    outbox: Vec<gst::Buffer>,
    error: Option<String>,
    stats: RunStats,
    /// Latency the window adds, reported in the LATENCY query and the stats.
    latency: gst::ClockTime,
    /// Execution provider running the diffusion prior, or "none".
    provider: String,
    /// The running diffusion prior's counters and live parameter changes.
    prior_link: Option<PriorLink>,
}

/// The diffusion prior as the worker will run it, or none.
struct OpenedPrior {
    stage: Option<Box<dyn PostStage>>,
    /// Execution provider, or "none".
    provider: String,
    /// Frames the prior holds back (stream batch and overlap).
    latency: usize,
    link: Option<PriorLink>,
}

impl OpenedPrior {
    fn none() -> Self {
        OpenedPrior {
            stage: None,
            provider: "none".into(),
            latency: 0,
            link: None,
        }
    }
}

/// Per-stream state, created when caps are set and dropped on stop.
struct State {
    worker: Worker<FrameTag>,
    output: Output,
    /// The next frame starts a new shot (after a GAP event).
    discont_pending: bool,
}

#[derive(Default)]
pub struct OldFilmRestore {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl OldFilmRestore {
    fn params(settings: &Settings, negotiated: KernelCompare) -> RestoreParams {
        // The compare mode that changes the frame size only takes effect once renegotiated.
        let wanted: KernelCompare = settings.compare.into();
        let compare = match (negotiated, wanted) {
            (KernelCompare::SideBySide, _) => KernelCompare::SideBySide,
            (_, KernelCompare::SideBySide) => KernelCompare::None,
            (_, mode) => mode,
        };
        RestoreParams {
            bypass: settings.bypass,
            deflicker: settings.deflicker,
            deflicker_params: DeflickerParams {
                strength: settings.deflicker_strength as f32,
                span: settings.deflicker_span as usize,
            },
            clean: CleanParams {
                stabilise: settings.stabilise.then_some(StabiliseParams {
                    span: settings.stabilise_span as usize,
                    max_shift: settings.stabilise_max_shift as f32,
                }),
                // Regional flicker is part of the deflicker stage: off with it.
                regional: (settings.deflicker && settings.regional_deflicker).then_some(RegionalParams {
                    strength: settings.regional_deflicker_strength as f32,
                    span: kernels::deflicker::regional_span(settings.deflicker_span as usize),
                }),
                blotches: settings.blotches.then_some(BlotchParams {
                    strength: settings.blotch_strength as f32,
                }),
                scratches: settings.scratches.then_some(ScratchParams {
                    strength: settings.scratch_strength as f32,
                }),
                grain: settings.grain.then_some(GrainParams {
                    strength: settings.grain_strength as f32,
                    radius: settings.grain_radius as usize,
                }),
            },
            cut_threshold: settings.cut_threshold as f32,
            compare,
        }
    }

    /// Unpacks `input`, queues it on the worker and packs whatever the worker has finished.
    fn feed(&self, state: &mut State, settings: &Settings, input: gst::Buffer) -> Result<(), gst::FlowError> {
        let params = Self::params(settings, state.output.compare);
        let discontinuity =
            input.flags().contains(gst::BufferFlags::DISCONT) || std::mem::take(&mut state.discont_pending);
        let State { worker, output, .. } = state;
        let element = self.obj();
        let mut frame = worker
            .acquire_input(&mut |done| output.finish(done, worker, settings, &element))
            .map_err(|e| self.fail(e.to_string()))?;
        let start = Instant::now();
        if let Err(message) = unpack_buffer(&input, &output.in_info, output.format, &mut frame) {
            worker.release_input(frame);
            return Err(self.fail(message));
        }
        let tag = FrameTag {
            input,
            arrived: start,
            unpack_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        output.stats.frames_in += 1;
        let mut on_done = |done| output.finish(done, worker, settings, &element);
        worker
            .submit(frame, tag, discontinuity, params, &mut on_done)
            .map_err(|e| self.fail(e.to_string()))?;
        worker.collect(&mut on_done);
        self.check_output_error(state)
    }

    /// Restores and packs every held frame (EOS, caps change, new segment).
    fn drain(&self, state: &mut State, settings: &Settings) -> Result<(), gst::FlowError> {
        let params = Self::params(settings, state.output.compare);
        let State { worker, output, .. } = state;
        let mut on_done = |done| output.finish(done, worker, settings, &self.obj());
        worker
            .drain(params, &mut on_done)
            .map_err(|e| self.fail(e.to_string()))?;
        self.check_output_error(state)
    }

    fn check_output_error(&self, state: &mut State) -> Result<(), gst::FlowError> {
        match state.output.error.take() {
            Some(message) => Err(self.fail(message)),
            None => Ok(()),
        }
    }

    /// Posts an element error and returns the flow error to give upstream.
    fn fail(&self, message: String) -> gst::FlowError {
        gst::element_imp_error!(self, gst::StreamError::Failed, ("{}", message));
        gst::FlowError::Error
    }

    /// Pushes packed buffers downstream, outside the state lock.
    fn push_outbox(&self, outbox: Vec<gst::Buffer>) -> Result<gst::FlowSuccess, gst::FlowError> {
        let src = self.obj().src_pad().clone();
        let mut result = Ok(gst::FlowSuccess::Ok);
        for buffer in outbox {
            if result.is_ok() {
                result = src.push(buffer);
            }
        }
        result
    }

    /// Runs `f` on the state, then pushes whatever it packed.
    fn with_state(
        &self,
        f: impl FnOnce(&mut State, &Settings) -> Result<(), gst::FlowError>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = lock(&self.settings).clone();
        let outbox = {
            let mut guard = lock(&self.state);
            let Some(state) = guard.as_mut() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            state.output.pool = self.obj().buffer_pool();
            let result = f(state, &settings);
            let outbox = std::mem::take(&mut state.output.outbox);
            result?;
            outbox
        };
        self.push_outbox(outbox)
    }

    fn drain_and_reset(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.with_state(|state, settings| {
            self.drain(state, settings)?;
            state.worker.reset().map_err(|e| self.fail(e.to_string()))
        })
    }

    /// Loads the diffusion engine if one is set: the worker's post stage, the provider that
    /// runs it, and the frames of latency it adds.
    fn open_prior(&self, settings: &Settings, compare: KernelCompare) -> Result<OpenedPrior, gst::LoggableError> {
        let Some(bundle) = settings.engine.as_deref() else {
            return Ok(OpenedPrior::none());
        };
        if compare == KernelCompare::SideBySide {
            gst::warning!(
                CAT,
                imp = self,
                "the diffusion prior is not run in side-by-side compare mode"
            );
            return Ok(OpenedPrior::none());
        }
        if let Some(gpu) = self.open_gpu_prior(settings, bundle) {
            return Ok(gpu);
        }
        let opened = settings
            .device
            .parse::<engines::Device>()
            .map_err(|e| e.to_string())
            .and_then(|device| {
                let mut config = engines::PriorConfig::new(bundle);
                config.device = device;
                config.params = settings.prior.clone();
                // Pre- and post-processing of the neighbouring frames run while a frame is in the models.
                config.overlap = true;
                engines::DiffusionPrior::new(config).map_err(|e| e.to_string())
            });
        match opened {
            Ok(prior) => {
                for note in prior.provider_notes() {
                    gst::warning!(CAT, imp = self, "{}", note);
                }
                let provider = prior.provider().to_string();
                let latency = prior.latency_frames() + prior.overlap_lag_frames();
                gst::info!(
                    CAT,
                    imp = self,
                    "diffusion engine {bundle} on {provider}, {latency} frames of latency"
                );
                let stage = PriorStage::new(prior);
                Ok(OpenedPrior {
                    link: Some(stage.link()),
                    stage: Some(Box::new(stage)),
                    provider,
                    latency,
                })
            }
            Err(message) if settings.fallback == Fallback::Classic => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenRead,
                    (
                        "cannot use diffusion engine '{}', continuing with the classic stages: {}",
                        bundle,
                        message
                    )
                );
                Ok(OpenedPrior::none())
            }
            Err(message) => {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::OpenRead,
                    ("cannot use diffusion engine '{}': {}", bundle, message)
                );
                Err(gst::loggable_error!(
                    CAT,
                    "cannot use diffusion engine '{}': {}",
                    bundle,
                    message
                ))
            }
        }
    }

    /// The GPU-resident prior, when a GPU provider may be used, CUDA is present and the bundle is in its scope;
    /// otherwise (logged) the caller opens the prior with host tensors around the models.
    fn open_gpu_prior(&self, settings: &Settings, bundle: &str) -> Option<OpenedPrior> {
        let device = settings.device.parse::<engines::Device>().ok()?;
        if device == engines::Device::Cpu {
            return None;
        }
        if let Err(e) = kernels::cuda::available() {
            gst::info!(CAT, imp = self, "GPU-resident engine path not used: {e}");
            return None;
        }
        let mut config = engines::PriorConfig::new(bundle);
        config.device = device;
        config.params = settings.prior.clone();
        match engines::gpu::GpuPrior::new(config, 0) {
            Ok(prior) => {
                let provider = format!("{} (GPU-resident, {})", prior.provider(), prior.device_name());
                let stage = GpuStage::new(engines::gpu::GpuFrames::new(prior));
                let link = stage.link();
                // The ring's frames, and one for the hand-over to the stage's thread.
                let latency = stage.latency_frames() + 1;
                // On its own thread: the classic stages work on the next frame while the device works on this one.
                let threaded = match kernels::post_thread::Threaded::spawn(Box::new(stage), 2, "oldfilm-gpu") {
                    Ok(t) => t,
                    Err(e) => {
                        gst::info!(CAT, imp = self, "GPU-resident engine path not used: no thread ({e})");
                        return None;
                    }
                };
                gst::info!(
                    CAT,
                    imp = self,
                    "diffusion engine {bundle} on {provider}, {latency} frames of latency"
                );
                Some(OpenedPrior {
                    link: Some(link),
                    stage: Some(Box::new(threaded)),
                    provider,
                    latency,
                })
            }
            Err(e) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "GPU-resident engine path not used ({e}): the models run with host tensors"
                );
                None
            }
        }
    }

    /// Gives parameters set while playing to the running prior (if any), for its next frame.
    fn hand_to_running_prior(&self, params: engines::StreamParams) {
        let guard = lock(&self.state);
        if let Some(link) = guard.as_ref().and_then(|s| s.output.prior_link.as_ref()) {
            link.lock().pending = Some(params);
        }
    }

    fn post_stats(&self, eos: bool) {
        let guard = lock(&self.state);
        if let Some(state) = guard.as_ref() {
            let message = state.output.stats_message(&self.obj(), eos);
            drop(guard);
            let _ = self.obj().post_message(message);
        }
    }
}

fn unpack_buffer(
    input: &gst::Buffer,
    info: &gst_video::VideoInfo,
    format: PixelFormat,
    frame: &mut WorkFrame,
) -> Result<(), String> {
    let mapped = gst_video::VideoFrameRef::from_buffer_ref_readable(input.as_ref(), info).map_err(|_| {
        format!(
            "input buffer of {} bytes cannot hold a {}x{} {} frame ({} bytes): corrupt or truncated",
            input.size(),
            info.width(),
            info.height(),
            info.format().to_str(),
            info.size()
        )
    })?;
    unpack_frame(format, &mapped, frame).map_err(|e| format!("cannot read input frame: {e}"))
}

impl Output {
    /// Handles one message from the worker: packs a finished frame into a buffer for the outbox.
    fn finish(
        &mut self,
        done: Done<FrameTag>,
        worker: &Worker<FrameTag>,
        settings: &Settings,
        element: &super::OldFilmRestore,
    ) {
        let (output, restored, processing_ms) = match done {
            Done::Frame {
                output,
                restored,
                processing_ms,
            } => (output, restored, processing_ms),
            Done::PostFailed { message, fatal: true } => {
                self.error.get_or_insert(format!("diffusion engine failed: {message}"));
                return;
            }
            Done::PostFailed { message, fatal: false } => {
                gst::element_warning!(
                    element,
                    gst::StreamError::Failed,
                    (
                        "diffusion engine failed, continuing with the classic stages: {}",
                        message
                    )
                );
                self.provider = "none".into();
                return;
            }
            _ => return,
        };
        self.warn_refused_prior_change(element);
        let start = Instant::now();
        let tag = restored.tag;
        let buffer = match output {
            None => Ok(tag.input.clone()),
            Some(frame) => {
                let packed = self.pack(&tag.input, &frame);
                worker.recycle_output(frame);
                packed
            }
        };
        match buffer {
            Ok(buffer) => self.outbox.push(buffer),
            Err(message) => {
                self.error.get_or_insert(message);
                return;
            }
        }
        let stats = &mut self.stats;
        stats.frames_out += 1;
        stats.shots += restored.starts_shot as u64;
        stats.processing_ms += processing_ms;
        stats.unpack_ms += tag.unpack_ms;
        stats.pack_ms += start.elapsed().as_secs_f64() * 1e3;
        stats.wall_latency_ms += tag.arrived.elapsed().as_secs_f64() * 1e3;
        for (total, ms) in stats.stage_ms.iter_mut().zip(restored.times.ms) {
            *total += ms;
        }
        gst::debug!(
            CAT,
            obj = element,
            "frame {} out: cut score {:.3}{}, tone {:?}, {} blotch pixels",
            restored.seq,
            restored.cut_score,
            if restored.starts_shot { " (new shot)" } else { "" },
            restored.correction,
            restored.blotch_pixels
        );
        if settings.stats_interval > 0 && stats.frames_out.is_multiple_of(settings.stats_interval as u64) {
            let _ = element.post_message(self.stats_message(element, false));
        }
    }

    fn acquire_buffer(&self) -> Result<gst::Buffer, String> {
        if let Some(pool) = &self.pool {
            if pool.is_active() || pool.set_active(true).is_ok() {
                if let Ok(buffer) = pool.acquire_buffer(None) {
                    return Ok(buffer);
                }
            }
        }
        gst::Buffer::with_size(self.out_info.size()).map_err(|_| "cannot allocate an output buffer".to_string())
    }

    fn pack(&self, input: &gst::Buffer, frame: &WorkFrame) -> Result<gst::Buffer, String> {
        let mut buffer = self.acquire_buffer()?;
        {
            let out = buffer.make_mut();
            out.set_pts(input.pts());
            out.set_dts(input.dts());
            out.set_duration(input.duration());
            out.set_offset(input.offset());
            out.set_offset_end(input.offset_end());
            out.set_flags(input.flags());
            let mut mapped = gst_video::VideoFrameRef::from_buffer_ref_writable(out, &self.out_info)
                .map_err(|_| "cannot map the output buffer".to_string())?;
            if self.format.has_alpha() {
                self.copy_alpha(input, &mut mapped)?;
            }
            pack_frame(self.format, frame, &mut mapped).map_err(|e| format!("cannot write output frame: {e}"))?;
        }
        Ok(buffer)
    }

    /// Alpha is not restored: it goes through untouched, under both halves when side by side.
    fn copy_alpha(
        &self,
        input: &gst::Buffer,
        out: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<(), String> {
        let mapped = gst_video::VideoFrameRef::from_buffer_ref_readable(input.as_ref(), &self.in_info)
            .map_err(|_| "cannot map the input buffer".to_string())?;
        copy_packed_rows(&mapped, out, 0);
        if self.compare == KernelCompare::SideBySide {
            copy_packed_rows(&mapped, out, self.in_info.width() as usize * 4);
        }
        Ok(())
    }

    fn warn_refused_prior_change(&self, element: &super::OldFilmRestore) {
        let refused = self.prior_link.as_ref().and_then(|link| link.lock().rejected.take());
        if let Some(reason) = refused {
            gst::element_warning!(
                element,
                gst::LibraryError::Settings,
                ("diffusion engine parameters not applied: {}", reason)
            );
        }
    }

    /// The prior's counters (zero when it does not run).
    fn prior_counters(&self) -> engines::PriorStats {
        self.prior_link
            .as_ref()
            .map(|link| link.lock().stats.clone())
            .unwrap_or_default()
    }

    fn stats_message(&self, element: &super::OldFilmRestore, eos: bool) -> gst::Message {
        let s = &self.stats;
        let per_frame = |total: f64| {
            if s.frames_out > 0 {
                total / s.frames_out as f64
            } else {
                0.0
            }
        };
        let mut structure = gst::Structure::builder("oldfilmrestore-stats")
            .field("frames-in", s.frames_in)
            .field("frames-out", s.frames_out)
            .field("shots", s.shots)
            .field("latency-ms", self.latency.nseconds() as f64 / 1e6)
            .field("wall-latency-ms", per_frame(s.wall_latency_ms))
            .field("processing-ms", per_frame(s.processing_ms))
            .field("unpack-ms", per_frame(s.unpack_ms))
            .field("pack-ms", per_frame(s.pack_ms))
            .field("provider", self.provider.as_str())
            .field("eos", eos)
            .build();
        let prior = self.prior_counters();
        let per_inferred = if prior.frames_inferred > 0 {
            prior.inference_ms_total / prior.frames_inferred as f64
        } else {
            0.0
        };
        structure.set("frames-inferred", prior.frames_inferred);
        structure.set("frames-skipped", prior.frames_skipped);
        structure.set("unet-calls", prior.unet_calls);
        structure.set("inference-ms", per_inferred);
        for (stage, total) in Stage::ALL.iter().zip(s.stage_ms) {
            structure.set(format!("{}-ms", stage.name()), per_frame(total));
        }
        gst::message::Element::builder(structure).src(element).build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for OldFilmRestore {
    const NAME: &'static str = "GstOldFilmRestore";
    type Type = super::OldFilmRestore;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for OldFilmRestore {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("bypass")
                    .nick("Bypass")
                    .blurb("Pass buffers through untouched (frames still leave in order after the window). Default: false")
                    .default_value(DEFAULT_BYPASS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("temporal-radius")
                    .nick("Temporal radius")
                    .blurb("Past and future frames each frame is restored with. Adds radius x frame duration of latency. Range 0-8, default 2")
                    .minimum(0)
                    .maximum(MAX_TEMPORAL_RADIUS)
                    .default_value(DEFAULT_TEMPORAL_RADIUS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("deflicker")
                    .nick("Deflicker")
                    .blurb("Remove frame-to-frame brightness and contrast flicker, never smoothing across a shot cut. Default: true")
                    .default_value(DEFAULT_DEFLICKER)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("deflicker-strength")
                    .nick("Deflicker strength")
                    .blurb("0 leaves brightness as it is, 1 removes all flicker the stage measures. Range 0-1, default 1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_DEFLICKER_STRENGTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("deflicker-span")
                    .nick("Deflicker span")
                    .blurb("Frames of history the brightness target is smoothed over; longer is steadier but follows real lighting changes more slowly. Range 1-100, default 24")
                    .minimum(1)
                    .maximum(100)
                    .default_value(DEFAULT_DEFLICKER_SPAN)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("regional-deflicker")
                    .nick("Regional deflicker")
                    .blurb("Also remove uneven flicker (one side or corner of the frame pulsing against the rest): a smooth gain field per frame, fitted against the motion-compensated neighbours and smoothed over half of deflicker-span frames, so moving objects, shadows and steady lighting changes keep their light. Only with deflicker on. Default: true")
                    .default_value(DEFAULT_REGIONAL_DEFLICKER)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("regional-deflicker-strength")
                    .nick("Regional deflicker strength")
                    .blurb("0 leaves uneven flicker as it is, 1 removes all of it the stage measures. Range 0-1, default 1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_REGIONAL_DEFLICKER_STRENGTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("stabilise")
                    .nick("Stabilise gate weave")
                    .blurb("Remove gate weave: the frame-to-frame jitter of the picture's position, measured from the motion field (median vector refined to sub-pixel), while steady pans and tilts are kept. Edges shifted in repeat the border. Off by default: on a steady camera it can only add a slight resampling softness. Default: false")
                    .default_value(DEFAULT_STABILISE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("stabilise-span")
                    .nick("Stabilise span")
                    .blurb("Frames of history the intended camera path is fitted over; longer removes slower weave but follows a change of pan speed later. Range 2-100, default 16")
                    .minimum(2)
                    .maximum(100)
                    .default_value(DEFAULT_STABILISE_SPAN)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("stabilise-max-shift")
                    .nick("Stabilise max shift")
                    .blurb("Largest correction in pixels; a larger measured jitter is taken for a deliberate jerk or a misestimate and left alone. Range 0.5-64, default 8")
                    .minimum(0.5)
                    .maximum(64.0)
                    .default_value(DEFAULT_STABILISE_MAX_SHIFT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("cut-threshold")
                    .nick("Cut threshold")
                    .blurb("How different two consecutive frames must be (mean change of the brightness-normalised picture, in standard deviations) to count as a shot cut. A cut must also stand out from the frames just before it, so fast pans are not cuts. Lower finds more cuts. Range 0.05-10, default 0.6")
                    .minimum(0.05)
                    .maximum(10.0)
                    .default_value(DEFAULT_CUT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("blotches")
                    .nick("Blotches")
                    .blurb("Remove dust and dirt: spots that differ from both motion-compensated neighbours in the same direction; real moving objects are kept. Default: true")
                    .default_value(DEFAULT_BLOTCHES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("blotch-strength")
                    .nick("Blotch strength")
                    .blurb("Higher finds fainter blotches (lower threshold, relative to the measured noise). Range 0-1, default 0.5")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_BLOTCH_STRENGTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("scratches")
                    .nick("Scratches")
                    .blurb("Remove vertical line scratches that persist over frames, refilled from both sides with texture. Default: true")
                    .default_value(DEFAULT_SCRATCHES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("scratch-strength")
                    .nick("Scratch strength")
                    .blurb("Higher finds fainter scratches. Range 0-1, default 0.5")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_SCRATCH_STRENGTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("grain")
                    .nick("Grain reduction")
                    .blurb("Reduce film grain with a motion-compensated temporal filter and a light edge-preserving spatial pass. Default: true")
                    .default_value(DEFAULT_GRAIN)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("grain-strength")
                    .nick("Grain strength")
                    .blurb("0 keeps all grain, 1 removes as much as the filter can (some fine grain always stays); archivists who want the grain kept set it lower. Range 0-1, default 1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_GRAIN_STRENGTH)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("grain-radius")
                    .nick("Grain radius")
                    .blurb("Frames either side the grain filter averages: 1 the adjacent frames; 2 also those two away (vectors chained over the frame between; needs temporal-radius of at least 2), which removes more heavy grain (the flat-area step then expects the less grain five frames leave; SSIM 0.927 -> 0.929 on the quality set) but costs about an eighth of the frame rate and some fine detail. Range 1-2, default 1")
                    .minimum(1)
                    .maximum(2)
                    .default_value(DEFAULT_GRAIN_RADIUS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("engine")
                    .nick("Diffusion engine")
                    .blurb("Engine bundle folder (see engines/README.md) for the one-step diffusion prior run after the classic stages; empty: classic stages only. Default: empty")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("Where the engine runs: auto (TensorRT, then CUDA, then CPU, logging each fallback), cpu, cuda or tensorrt (an error if unavailable). The provider that really runs is in the stats message. Default: auto")
                    .default_value(Some("auto"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("strength")
                    .nick("Diffusion strength")
                    .blurb("How much of the frame the prior may re-imagine (noise level of the img2img step). Range 0-1, default from the engine (0.3)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(engines::StreamParams::default().strength as f64)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("steps")
                    .nick("Steps")
                    .blurb("LCM denoising steps, run as a stream batch (adds steps-1 frames of latency); turbo bundles always take one. Range 1-8")
                    .minimum(1)
                    .maximum(8)
                    .default_value(engines::StreamParams::default().steps as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("ssf-threshold")
                    .nick("Similarity threshold")
                    .blurb("Stochastic similarity filter: frames more similar than this to the last inferred one may skip inference. Range 0-1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(engines::StreamParams::default().ssf_threshold as f64)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("ssf-max-skip")
                    .nick("Most skips in a row")
                    .blurb("Never skip inference on more than this many frames in a row. Range 0-1000")
                    .maximum(1000)
                    .default_value(engines::StreamParams::default().ssf_max_skip)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("temporal-blend")
                    .nick("Temporal blend")
                    .blurb("Rolling latent cache: how much of the previous latents static regions keep (0 = none). Range 0-1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(engines::StreamParams::default().temporal_blend as f64)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("tile-size")
                    .nick("Tile size")
                    .blurb("Tile side for frames larger than the model input; 0 = the model's own size (the exported models have static shapes). Default 0")
                    .default_value(engines::StreamParams::default().tile_size as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("tile-overlap")
                    .nick("Tile overlap")
                    .blurb("Pixels neighbouring tiles share, blended with feathered weights")
                    .default_value(engines::StreamParams::default().tile_overlap as u32)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("Seed of the fixed noise tensor and of the similarity filter's choices")
                    .default_value(engines::StreamParams::default().seed)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("fallback", Fallback::Error)
                    .nick("Fallback")
                    .blurb("If the engine is missing, broken or fails: error (element error) or classic (warning, then the classic stages only). Default: error")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("compare", CompareMode::None)
                    .nick("Compare")
                    .blurb("Before/after view for preview: none, split (left original, right restored) or side-by-side (double width; renegotiates). Default: none")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("stats-interval")
                    .nick("Statistics interval")
                    .blurb("Post an oldfilmrestore-stats element message every this many output frames (0: only at end of stream). Range 0-4294967295, default 250")
                    .default_value(DEFAULT_STATS_INTERVAL)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        // Types are checked by GObject against the ParamSpec before we are called.
        match pspec.name() {
            "bypass" => settings.bypass = value.get().expect("type checked upstream"),
            "temporal-radius" => settings.temporal_radius = value.get().expect("type checked upstream"),
            "deflicker" => settings.deflicker = value.get().expect("type checked upstream"),
            "deflicker-strength" => settings.deflicker_strength = value.get().expect("type checked upstream"),
            "deflicker-span" => settings.deflicker_span = value.get().expect("type checked upstream"),
            "regional-deflicker" => settings.regional_deflicker = value.get().expect("type checked upstream"),
            "regional-deflicker-strength" => {
                settings.regional_deflicker_strength = value.get().expect("type checked upstream")
            }
            "stabilise" => settings.stabilise = value.get().expect("type checked upstream"),
            "stabilise-span" => settings.stabilise_span = value.get().expect("type checked upstream"),
            "stabilise-max-shift" => settings.stabilise_max_shift = value.get().expect("type checked upstream"),
            "cut-threshold" => settings.cut_threshold = value.get().expect("type checked upstream"),
            "blotches" => settings.blotches = value.get().expect("type checked upstream"),
            "blotch-strength" => settings.blotch_strength = value.get().expect("type checked upstream"),
            "scratches" => settings.scratches = value.get().expect("type checked upstream"),
            "scratch-strength" => settings.scratch_strength = value.get().expect("type checked upstream"),
            "grain" => settings.grain = value.get().expect("type checked upstream"),
            "grain-strength" => settings.grain_strength = value.get().expect("type checked upstream"),
            "grain-radius" => settings.grain_radius = value.get().expect("type checked upstream"),
            "compare" => {
                let mode: CompareMode = value.get().expect("type checked upstream");
                let resize = (mode == CompareMode::SideBySide) != (settings.compare == CompareMode::SideBySide);
                settings.compare = mode;
                drop(settings);
                if resize {
                    // The output size changes: renegotiate on the next buffer.
                    self.obj().reconfigure_src();
                }
                return;
            }
            "stats-interval" => settings.stats_interval = value.get().expect("type checked upstream"),
            "engine" => {
                let path: Option<String> = value.get().expect("type checked upstream");
                settings.engine = path.filter(|p| !p.is_empty()).map(Arc::from);
            }
            "device" => {
                let device: Option<String> = value.get().expect("type checked upstream");
                settings.device = Arc::from(device.as_deref().unwrap_or("auto"));
            }
            "strength" => settings.prior.strength = value.get::<f64>().expect("type checked upstream") as f32,
            "steps" => settings.prior.steps = value.get::<u32>().expect("type checked upstream") as usize,
            "ssf-threshold" => settings.prior.ssf_threshold = value.get::<f64>().expect("type checked upstream") as f32,
            "ssf-max-skip" => settings.prior.ssf_max_skip = value.get().expect("type checked upstream"),
            "temporal-blend" => {
                settings.prior.temporal_blend = value.get::<f64>().expect("type checked upstream") as f32
            }
            "tile-size" => settings.prior.tile_size = value.get::<u32>().expect("type checked upstream") as usize,
            "tile-overlap" => settings.prior.tile_overlap = value.get::<u32>().expect("type checked upstream") as usize,
            "seed" => settings.prior.seed = value.get().expect("type checked upstream"),
            "fallback" => settings.fallback = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "{} set to {:?}", pspec.name(), value);
        let live_prior = LIVE_PRIOR_PROPERTIES
            .contains(&pspec.name())
            .then(|| settings.prior.clone());
        drop(settings);
        if let Some(params) = live_prior {
            self.hand_to_running_prior(params);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "bypass" => settings.bypass.to_value(),
            "temporal-radius" => settings.temporal_radius.to_value(),
            "deflicker" => settings.deflicker.to_value(),
            "deflicker-strength" => settings.deflicker_strength.to_value(),
            "deflicker-span" => settings.deflicker_span.to_value(),
            "regional-deflicker" => settings.regional_deflicker.to_value(),
            "regional-deflicker-strength" => settings.regional_deflicker_strength.to_value(),
            "stabilise" => settings.stabilise.to_value(),
            "stabilise-span" => settings.stabilise_span.to_value(),
            "stabilise-max-shift" => settings.stabilise_max_shift.to_value(),
            "cut-threshold" => settings.cut_threshold.to_value(),
            "blotches" => settings.blotches.to_value(),
            "blotch-strength" => settings.blotch_strength.to_value(),
            "scratches" => settings.scratches.to_value(),
            "scratch-strength" => settings.scratch_strength.to_value(),
            "grain" => settings.grain.to_value(),
            "grain-strength" => settings.grain_strength.to_value(),
            "grain-radius" => settings.grain_radius.to_value(),
            "compare" => settings.compare.to_value(),
            "stats-interval" => settings.stats_interval.to_value(),
            "engine" => settings.engine.as_deref().to_value(),
            "device" => settings.device.as_ref().to_value(),
            "strength" => (settings.prior.strength as f64).to_value(),
            "steps" => (settings.prior.steps as u32).to_value(),
            "ssf-threshold" => (settings.prior.ssf_threshold as f64).to_value(),
            "ssf-max-skip" => settings.prior.ssf_max_skip.to_value(),
            "temporal-blend" => (settings.prior.temporal_blend as f64).to_value(),
            "tile-size" => (settings.prior.tile_size as u32).to_value(),
            "tile-overlap" => (settings.prior.tile_overlap as u32).to_value(),
            "seed" => settings.prior.seed.to_value(),
            "fallback" => settings.fallback.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for OldFilmRestore {}

impl ElementImpl for OldFilmRestore {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Old film restoration",
                "Filter/Effect/Video",
                "Cleans up old film live over a short temporal window of frames: deflicker, motion-compensated dust/dirt (blotch) removal, line-scratch removal and grain reduction, never blending across shot cuts; with a before/after compare view",
                "oldfilmrestore developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(filter_pad_templates);
        PAD_TEMPLATES.as_ref()
    }
}

/// Maps the `width` of each structure for a side-by-side output (`double`) or back.
fn map_width(caps: &gst::Caps, double: bool) -> gst::Caps {
    let mut out = gst::Caps::new_empty();
    let max = i32::MAX;
    for s in caps.iter() {
        let mut s = s.to_owned();
        if let Ok(w) = s.get::<i32>("width") {
            match (double, w % 2 == 0) {
                (true, _) if w <= max / 2 => s.set("width", w * 2),
                (false, true) => s.set("width", w / 2),
                _ => continue,
            }
        } else if let Ok(range) = s.get::<gst::IntRange<i32>>("width") {
            let (lo, hi) = (range.min(), range.max());
            let mapped = if double {
                gst::IntRange::new(lo.saturating_mul(2).max(2), hi.saturating_mul(2).min(max - 1))
            } else {
                gst::IntRange::new(((lo + 1) / 2).max(1), (hi / 2).max(1))
            };
            s.set("width", mapped);
        }
        out.get_mut().expect("new caps are writable").append_structure(s);
    }
    out
}

impl BaseTransformImpl for OldFilmRestore {
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::NeverInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let compare = lock(&self.settings).compare;
        let other = if compare == CompareMode::SideBySide {
            map_width(caps, direction == gst::PadDirection::Sink)
        } else {
            caps.clone()
        };
        gst::debug!(CAT, imp = self, "transformed {caps} ({direction:?}) into {other}");
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&other, gst::CapsIntersectMode::First),
            None => other,
        })
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let (in_info, format) = parse_caps(incaps).map_err(|m| {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{}", m));
            gst::loggable_error!(CAT, "{}", m)
        })?;
        let out_info = gst_video::VideoInfo::from_caps(outcaps)
            .map_err(|_| gst::loggable_error!(CAT, "output caps {} are not raw video", outcaps))?;
        // Frames held for the old caps go out first, still under the old caps.
        if self.drain_and_reset().is_err() {
            gst::warning!(
                CAT,
                imp = self,
                "could not push every held frame before the caps change"
            );
        }
        let compare = if out_info.width() == 2 * in_info.width() {
            KernelCompare::SideBySide
        } else {
            KernelCompare::None
        };
        let settings = lock(&self.settings).clone();
        let radius = settings.temporal_radius as usize;
        let geometry = format.geometry(in_info.width() as usize, in_info.height() as usize);
        let OpenedPrior {
            stage: post,
            provider,
            latency: prior_latency,
            link: prior_link,
        } = self.open_prior(&settings, compare)?;
        let on_failure = match settings.fallback {
            Fallback::Error => OnPostFailure::Error,
            Fallback::Classic => OnPostFailure::Continue,
        };
        let worker = Worker::spawn_with(
            geometry,
            compare.output_geometry(geometry),
            radius,
            radius,
            post,
            on_failure,
        )
        .map_err(|e| gst::loggable_error!(CAT, "cannot start the worker thread: {}", e))?;
        let fps = in_info.fps();
        let latency_frames = (radius + prior_latency) as u64;
        let latency = if fps.numer() > 0 {
            gst::ClockTime::SECOND
                .mul_div_floor(latency_frames * fps.denom() as u64, fps.numer() as u64)
                .unwrap_or(gst::ClockTime::ZERO)
        } else {
            gst::ClockTime::ZERO
        };
        gst::info!(
            CAT,
            imp = self,
            "configured {format:?} {}x{}, radius {radius}, latency {latency}",
            in_info.width(),
            in_info.height()
        );
        let mut guard = lock(&self.state);
        let previous_latency = guard.as_ref().map(|s| s.output.latency);
        // Statistics cover the whole stream, across caps changes.
        let stats = guard.take().map(|s| s.output.stats).unwrap_or_default();
        *guard = Some(State {
            worker,
            output: Output {
                in_info,
                out_info,
                format,
                compare,
                pool: None,
                outbox: Vec::with_capacity(2 * radius + 4),
                error: None,
                stats,
                latency,
                provider,
                prior_link,
            },
            discont_pending: false,
        });
        drop(guard);
        if previous_latency != Some(latency) {
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if direction == gst::PadDirection::Src {
            if let gst::QueryViewMut::Latency(_) = query.view_mut() {
                if !BaseTransformImplExt::parent_query(self, direction, query) {
                    return false;
                }
                let ours = lock(&self.state)
                    .as_ref()
                    .map(|s| s.output.latency)
                    .unwrap_or(gst::ClockTime::ZERO);
                if let gst::QueryViewMut::Latency(q) = query.view_mut() {
                    let (live, min, max) = q.result();
                    q.set(live, min + ours, max.map(|m| m + ours));
                    gst::debug!(CAT, imp = self, "latency: upstream {min} + ours {ours}");
                }
                return true;
            }
        }
        BaseTransformImplExt::parent_query(self, direction, query)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) => {
                if self.with_state(|state, settings| self.drain(state, settings)).is_err() {
                    gst::warning!(CAT, imp = self, "could not push every held frame at end of stream");
                }
                self.post_stats(true);
            }
            gst::EventView::FlushStop(_) => {
                if let Some(state) = lock(&self.state).as_mut() {
                    let _ = state.worker.reset();
                    state.output.outbox.clear();
                    state.discont_pending = false;
                }
            }
            // A new segment (a seek, a new stream): held frames belong to the old one.
            gst::EventView::Segment(_) => {
                let _ = self.drain_and_reset();
            }
            gst::EventView::Gap(_) => {
                if let Some(state) = lock(&self.state).as_mut() {
                    state.discont_pending = true;
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn generate_output(&self) -> Result<GenerateOutputSuccess, gst::FlowError> {
        let Some(input) = self.take_queued_buffer() else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        if lock(&self.state).is_none() {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("buffer before caps"));
            return Err(gst::FlowError::NotNegotiated);
        }
        self.with_state(|state, settings| self.feed(state, settings, input))?;
        Ok(GenerateOutputSuccess::NoOutput)
    }
}
