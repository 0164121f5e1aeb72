//! Stream batch (StreamDiffusion): with `k` denoising steps, `k` frames at different stages share one batched UNet
//! call. A new frame enters at stage 0, every call moves each frame one stage on, and the frame at the last stage
//! comes out finished: one finished frame per call, `k - 1` frames of latency. At the end of a stream the batch is
//! drained by calls without a new frame.

use crate::tensor::Tensor;

/// One frame in flight: its latents (`[tiles][c][h][w]`) at `stage`.
#[derive(Clone, Debug)]
pub struct InFlight<T> {
    pub stage: usize,
    pub latents: Tensor,
    pub tag: T,
}

#[derive(Clone, Debug)]
pub struct StreamBatch<T> {
    steps: usize,
    /// Newest (lowest stage) first: the order of the batch.
    entries: Vec<InFlight<T>>,
}

impl<T> StreamBatch<T> {
    pub fn new(steps: usize) -> Self {
        assert!(steps >= 1);
        StreamBatch {
            steps,
            entries: Vec::new(),
        }
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn entries(&self) -> &[InFlight<T>] {
        &self.entries
    }

    /// A new frame, noised for stage 0.
    pub fn push(&mut self, latents: Tensor, tag: T) {
        debug_assert!(self.entries.iter().all(|e| e.stage > 0), "one frame per stage");
        self.entries.insert(0, InFlight { stage: 0, latents, tag });
    }

    /// One batched call. `denoise(latents, stages)` gets every frame's latents concatenated (newest first) and the
    /// stage of each batch item, and returns the denoised latents in the same order; `renoise(stage, latents)`
    /// noises a frame's denoised latents for its next stage. Returns the frame that finished, if any.
    pub fn step<E>(
        &mut self,
        denoise: impl FnOnce(&Tensor, &[usize]) -> Result<Tensor, E>,
        mut renoise: impl FnMut(usize, &mut Tensor),
    ) -> Result<Option<(T, Tensor)>, E> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let parts: Vec<&Tensor> = self.entries.iter().map(|e| &e.latents).collect();
        let batch = Tensor::concat(&parts);
        let stages: Vec<usize> = self
            .entries
            .iter()
            .flat_map(|e| std::iter::repeat_n(e.stage, e.latents.len()))
            .collect();
        let denoised = denoise(&batch, &stages)?;
        let mut finished = None;
        let mut offset = 0;
        let mut kept = Vec::with_capacity(self.entries.len());
        for mut e in self.entries.drain(..) {
            let n = e.latents.len();
            let mut den = denoised.slice(offset, offset + n);
            offset += n;
            if e.stage + 1 >= self.steps {
                finished = Some((e.tag, den));
            } else {
                e.stage += 1;
                renoise(e.stage, &mut den);
                e.latents = den;
                kept.push(e);
            }
        }
        self.entries = kept;
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake model: "denoising" adds 1 to every value, so a frame's value counts the calls it went through.
    fn step(b: &mut StreamBatch<u32>) -> Option<(u32, f32)> {
        b.step::<()>(
            |lat, stages| {
                assert_eq!(lat.len(), stages.len());
                assert!(stages.windows(2).all(|s| s[0] <= s[1]), "newest first");
                Ok(Tensor {
                    shape: lat.shape.clone(),
                    data: lat.data.iter().map(|v| v + 1.0).collect(),
                })
            },
            |_, _| {},
        )
        .unwrap()
        .map(|(tag, t)| (tag, t.data[0]))
    }

    #[test]
    fn one_finished_frame_per_call_in_order_with_k_minus_one_latency() {
        let k = 3;
        let mut b = StreamBatch::new(k);
        let mut out = Vec::new();
        for frame in 0..5u32 {
            b.push(
                Tensor {
                    shape: vec![2, 1],
                    data: vec![0.0; 2],
                },
                frame,
            );
            if let Some(done) = step(&mut b) {
                out.push(done);
            }
            assert_eq!(out.len(), (frame as usize + 1).saturating_sub(k - 1));
        }
        while !b.is_empty() {
            out.extend(step(&mut b));
        }
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        // Every frame went through exactly k calls.
        assert!(out.iter().all(|o| o.1 == k as f32));
    }
}
