//! The diffusion prior as the worker's post stage: a thin adapter from `engines` to
//! `kernels::worker::PostStage`, which also hands the prior's counters to the stats message.

use engines::{DiffusionPrior, PriorStats};
use kernels::worker::PostStage;
use kernels::WorkFrame;
use std::sync::{Arc, Mutex};

/// The prior's counters as of the last frame, readable from the streaming thread.
pub type SharedPriorStats = Arc<Mutex<PriorStats>>;

pub struct PriorStage {
    prior: DiffusionPrior,
    max_held: usize,
    stats: SharedPriorStats,
}

impl PriorStage {
    pub fn new(prior: DiffusionPrior) -> Self {
        // What the prior holds at most, plus the frame being handed over on each side.
        let max_held = prior.max_in_flight() + 2;
        PriorStage {
            prior,
            max_held,
            stats: SharedPriorStats::default(),
        }
    }

    pub fn stats(&self) -> SharedPriorStats {
        self.stats.clone()
    }

    fn publish_stats(&self) {
        let mut shared = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *shared = self.prior.stats();
    }
}

impl PostStage for PriorStage {
    fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<(), String> {
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
