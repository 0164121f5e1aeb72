//! The diffusion prior as the worker's post stage: a thin adapter from `engines` to
//! `kernels::worker::PostStage`, and the link through which the streaming thread reads the
//! prior's counters and hands it live parameter changes.

use engines::{DiffusionPrior, PriorStats, StreamParams};
use kernels::worker::PostStage;
use kernels::WorkFrame;
use std::sync::{Arc, Mutex, MutexGuard};

/// What the element and the worker thread share about the running prior.
#[derive(Default)]
pub struct PriorShared {
    /// Counters as of the last frame.
    pub stats: PriorStats,
    /// New parameters set while playing, applied before the next frame.
    pub pending: Option<StreamParams>,
    /// Why the last live change was refused, for a warning.
    pub rejected: Option<String>,
}

#[derive(Clone, Default)]
pub struct PriorLink(Arc<Mutex<PriorShared>>);

impl PriorLink {
    pub fn lock(&self) -> MutexGuard<'_, PriorShared> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct PriorStage {
    prior: DiffusionPrior,
    max_held: usize,
    link: PriorLink,
}

impl PriorStage {
    pub fn new(prior: DiffusionPrior) -> Self {
        // What the prior holds at most, plus the frame being handed over on each side.
        let max_held = prior.max_in_flight() + 2;
        PriorStage {
            prior,
            max_held,
            link: PriorLink::default(),
        }
    }

    pub fn link(&self) -> PriorLink {
        self.link.clone()
    }

    /// Applies parameters set while playing. The worker sized its frame pools for the prior it
    /// started with, so a change that would hold more frames waits for the next stream.
    fn apply_pending(&mut self) {
        let Some(params) = self.link.lock().pending.take() else {
            return;
        };
        if params == *self.prior.params() {
            return;
        }
        let mut params = params;
        let mut refusal = None;
        if self.prior.max_in_flight_with(&params) + 2 > self.max_held {
            refusal = Some(format!(
                "steps {} / ssf-max-skip {} hold more frames than the stream was started with: they take effect from \
                 the next stream",
                params.steps, params.ssf_max_skip
            ));
            let running = self.prior.params();
            (params.steps, params.ssf_max_skip) = (running.steps, running.ssf_max_skip);
        }
        if let Err(e) = self.prior.update(params) {
            refusal = Some(e.to_string());
        }
        self.link.lock().rejected = refusal;
    }

    fn publish_stats(&self) {
        self.link.lock().stats = self.prior.stats();
    }
}

impl PostStage for PriorStage {
    fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<(), String> {
        self.apply_pending();
        let pushed = self
            .prior
            .push(frame, starts_shot)
            .map(|_| ())
            .map_err(|e| e.to_string());
        self.publish_stats();
        pushed
    }

    fn pop(&mut self, out: &mut WorkFrame) -> bool {
        self.prior.pop(out).is_some()
    }

    fn drain(&mut self) -> Result<(), String> {
        let drained = self.prior.drain().map_err(|e| e.to_string());
        self.publish_stats();
        drained
    }

    fn reset(&mut self) {
        self.prior.reset();
    }

    fn max_held(&self) -> usize {
        self.max_held
    }
}

/// The GPU-resident prior as the worker's post stage (`engines::gpu`): chosen when a GPU provider is asked for
/// (or `auto`) and CUDA is present; it takes parameter changes from the next stream only.
pub struct GpuStage {
    frames: engines::gpu::GpuFrames,
    link: PriorLink,
}

impl GpuStage {
    pub fn new(frames: engines::gpu::GpuFrames) -> Self {
        GpuStage {
            frames,
            link: PriorLink::default(),
        }
    }

    pub fn link(&self) -> PriorLink {
        self.link.clone()
    }

    /// Frames a frame waits behind on the device (the ring).
    pub fn latency_frames(&self) -> usize {
        self.frames.max_held() - 2
    }

    fn refuse_pending(&self) {
        let mut shared = self.link.lock();
        if shared.pending.take().is_some() {
            shared.rejected = Some("the GPU-resident engine takes new parameters from the next stream".into());
        }
    }

    fn publish_stats(&self) {
        self.link.lock().stats = self.frames.prior().stats().clone();
    }
}

impl PostStage for GpuStage {
    fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<(), String> {
        self.refuse_pending();
        let pushed = self.frames.push(frame, starts_shot).map_err(|e| e.to_string());
        self.publish_stats();
        pushed
    }

    fn pop(&mut self, out: &mut WorkFrame) -> bool {
        self.frames.pop(out)
    }

    fn drain(&mut self) -> Result<(), String> {
        let drained = self.frames.drain().map_err(|e| e.to_string());
        self.publish_stats();
        drained
    }

    fn reset(&mut self) {
        self.frames.reset();
    }

    fn max_held(&self) -> usize {
        self.frames.max_held()
    }
}
