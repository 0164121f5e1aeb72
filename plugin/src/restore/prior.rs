//! The diffusion prior as the worker's post stage: a thin adapter from `engines` to
//! `kernels::worker::PostStage`.

use engines::DiffusionPrior;
use kernels::worker::PostStage;
use kernels::WorkFrame;

pub struct PriorStage {
    prior: DiffusionPrior,
    max_held: usize,
}

impl PriorStage {
    pub fn new(prior: DiffusionPrior) -> Self {
        // Stream-batch latency, plus frames the similarity filter lets wait behind it.
        let max_held = prior.latency_frames() + prior.params().ssf_max_skip as usize + 4;
        PriorStage { prior, max_held }
    }
}

impl PostStage for PriorStage {
    fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<(), String> {
        self.prior
            .push(frame, starts_shot)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn pop(&mut self, out: &mut WorkFrame) -> bool {
        self.prior.pop(out).is_some()
    }

    fn drain(&mut self) -> Result<(), String> {
        self.prior.drain().map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        self.prior.reset();
    }

    fn max_held(&self) -> usize {
        self.max_held
    }
}
