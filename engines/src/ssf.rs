//! Stochastic similarity filter (StreamDiffusion): a frame much like the last one that went through inference is
//! skipped with probability `max(0, 1 - (1 - sim) / (1 - threshold))`, never more than `max_skip` in a row.
//! Decisions are drawn from a seeded counter, so a run is reproducible.

use crate::noise::{uniform, SSF_STREAM};

#[derive(Clone, Debug)]
pub struct SimilarityFilter {
    pub threshold: f32,
    pub max_skip: u32,
    seed: u64,
    reference: Option<Vec<f32>>,
    run: u32,
}

/// Cosine similarity, in f64 (in `kernels::latent::similarity`, next to its device reduction).
pub use kernels::latent::similarity::cosine;

/// The skip probability for a similarity.
pub fn skip_probability(sim: f64, threshold: f32) -> f64 {
    let t = threshold as f64;
    if t >= 1.0 {
        return 0.0;
    }
    (1.0 - (1.0 - sim) / (1.0 - t)).max(0.0)
}

impl SimilarityFilter {
    pub fn new(threshold: f32, max_skip: u32, seed: u64) -> Self {
        SimilarityFilter {
            threshold,
            max_skip,
            seed,
            reference: None,
            run: 0,
        }
    }

    /// Forgets the reference (a cut, a flush, a seek).
    pub fn reset(&mut self) {
        self.reference = None;
        self.run = 0;
    }

    /// Whether frame number `index` (its thumbnail) is skipped. A frame that is not skipped becomes the reference.
    pub fn decide(&mut self, index: u64, thumb: Vec<f32>, starts_shot: bool) -> bool {
        let reference = self.reference.take();
        let comparable = reference.as_ref().is_some_and(|r| r.len() == thumb.len());
        let skip = self.decide_by(index, starts_shot, comparable, || {
            cosine(&thumb, reference.as_ref().expect("comparable"))
        });
        self.reference = if skip { reference } else { Some(thumb) };
        skip
    }

    /// The decision for callers that keep the reference themselves (the device path keeps it on the GPU):
    /// `comparable` says a reference of the same size exists, `similarity` measures against it (called only when
    /// the decision needs it). When this returns false, the caller's frame becomes the reference.
    pub fn decide_by(
        &mut self,
        index: u64,
        starts_shot: bool,
        comparable: bool,
        similarity: impl FnOnce() -> f64,
    ) -> bool {
        if comparable && !starts_shot && self.max_skip > 0 && self.run < self.max_skip {
            let p = skip_probability(similarity(), self.threshold);
            if uniform(self.seed, SSF_STREAM, index) < p {
                self.run += 1;
                return true;
            }
        }
        self.run = 0;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_max_skip_in_a_row() {
        let mut f = SimilarityFilter::new(0.5, 2, 1);
        let thumb = vec![0.5f32; 48];
        let decisions: Vec<bool> = (0..9).map(|i| f.decide(i, thumb.clone(), i == 0)).collect();
        assert_eq!(decisions, [false, true, true, false, true, true, false, true, true]);
    }

    #[test]
    fn probability_formula() {
        assert_eq!(skip_probability(1.0, 0.98), 1.0);
        assert_eq!(skip_probability(0.9, 0.98), 0.0);
        assert!((skip_probability(0.99, 0.98) - 0.5).abs() < 1e-5);
    }
}
