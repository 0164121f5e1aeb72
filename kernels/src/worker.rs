//! The processing thread: a [`Restorer`] fed and drained through bounded channels.
//!
//! The caller (the element's streaming thread) unpacks a frame into a pooled input frame,
//! submits it, and is handed finished frames, in order, through its `on_done` callback, which
//! packs them and gives the output frame straight back. While the caller waits for anything (a
//! free frame, room in the job queue, a drain) it keeps taking finished frames, which is what
//! makes the bounded queues deadlock-free: the worker only ever waits for frames that the
//! caller is about to give back.
//!
//! Nothing is allocated per frame: input and output frames come from fixed pools and go back
//! to them, and the done queue is large enough to hold every output frame at once.

use crate::frame::{Geometry, WorkFrame};
use crate::pool::{FramePool, FrameReturner};
use crate::restorer::{RestoreParams, Restored, Restorer};
use crossbeam_channel::{bounded, select, Receiver, Select, Sender};
use std::thread::JoinHandle;
use std::time::Instant;
use thiserror::Error;

/// Jobs queued ahead of the worker; enough to keep it busy while the caller packs and pushes.
const JOB_QUEUE: usize = 2;
/// Output frames in flight between the worker and the caller.
const OUTPUT_FRAMES: usize = 3;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("the restoration worker thread stopped unexpectedly")]
pub struct WorkerGone;

enum Job<T> {
    Frame {
        frame: Box<WorkFrame>,
        tag: T,
        discontinuity: bool,
        params: RestoreParams,
    },
    Drain(RestoreParams),
    Reset,
}

/// A message from the worker.
pub enum Done<T> {
    /// One frame, in input order. `output` is `None` when the stages were bypassed.
    Frame {
        output: Option<Box<WorkFrame>>,
        restored: Restored<T>,
        /// Wall time the worker spent on this frame, in milliseconds.
        processing_ms: f64,
    },
    /// Every frame submitted before the drain has been sent.
    Drained,
    /// Temporal state is cleared.
    ResetDone,
}

pub struct Worker<T: Send + 'static> {
    jobs: Option<Sender<Job<T>>>,
    done: Receiver<Done<T>>,
    input_pool: FramePool,
    output_returner: FrameReturner,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts a worker restoring frames of `input` geometry into frames of `output` geometry,
    /// with `past` and `future` temporal neighbours.
    pub fn spawn(input: Geometry, output: Geometry, past: usize, future: usize) -> std::io::Result<Self> {
        let restorer = Restorer::new(input, past, future);
        // Window + queued jobs + the one being unpacked + one being returned.
        let input_pool = FramePool::new(input, restorer.capacity() + JOB_QUEUE + 2);
        let output_pool = FramePool::new(output, OUTPUT_FRAMES);
        let output_returner = output_pool.returner();
        let (job_tx, job_rx) = bounded(JOB_QUEUE);
        // Room for every output frame plus bypassed frames and one control answer, so the
        // worker rarely waits on the caller; the caller keeps draining it anyway.
        let (done_tx, done_rx) = bounded(input_pool.capacity() + OUTPUT_FRAMES + 1);
        let input_returner = input_pool.returner();
        let thread = std::thread::Builder::new()
            .name("oldfilm-worker".into())
            .spawn(move || run(restorer, job_rx, done_tx, input_returner, output_pool))?;
        Ok(Worker {
            jobs: Some(job_tx),
            done: done_rx,
            input_pool,
            output_returner,
            thread: Some(thread),
        })
    }

    /// A free input frame to unpack into; finished frames that arrive meanwhile go to `on_done`.
    pub fn acquire_input(&self, on_done: &mut dyn FnMut(Done<T>)) -> Result<Box<WorkFrame>, WorkerGone> {
        if let Some(frame) = self.input_pool.try_get() {
            return Ok(frame);
        }
        loop {
            select! {
                recv(self.input_pool.receiver()) -> frame => return frame.map_err(|_| WorkerGone),
                recv(self.done) -> done => on_done(done.map_err(|_| WorkerGone)?),
            }
        }
    }

    /// Gives back an input frame that was acquired but not submitted.
    pub fn release_input(&self, frame: Box<WorkFrame>) {
        self.input_pool.put(frame);
    }

    /// Queues a frame for restoration.
    pub fn submit(
        &self,
        frame: Box<WorkFrame>,
        tag: T,
        discontinuity: bool,
        params: RestoreParams,
        on_done: &mut dyn FnMut(Done<T>),
    ) -> Result<(), WorkerGone> {
        self.send(
            Job::Frame {
                frame,
                tag,
                discontinuity,
                params,
            },
            on_done,
        )
    }

    /// Hands every finished frame already available to `on_done`, without waiting.
    pub fn collect(&self, on_done: &mut dyn FnMut(Done<T>)) {
        self.done.try_iter().for_each(on_done);
    }

    /// Restores every held frame (end of stream, caps change) and returns once all of them
    /// have gone to `on_done`.
    pub fn drain(&self, params: RestoreParams, on_done: &mut dyn FnMut(Done<T>)) -> Result<(), WorkerGone> {
        self.send(Job::Drain(params), on_done)?;
        self.wait_for(on_done, |d| matches!(d, Done::Drained))
    }

    /// Drops every held and finished frame and clears temporal state (flush, seek).
    pub fn reset(&self) -> Result<(), WorkerGone> {
        let mut discard = |done| self.recycle(done);
        self.send(Job::Reset, &mut discard)?;
        self.wait_for(&mut discard, |d| matches!(d, Done::ResetDone))
    }

    /// Returns an output frame to its pool once the caller has packed it.
    pub fn recycle_output(&self, frame: Box<WorkFrame>) {
        self.output_returner.put(frame);
    }

    fn recycle(&self, done: Done<T>) {
        if let Done::Frame {
            output: Some(frame), ..
        } = done
        {
            self.recycle_output(frame);
        }
    }

    fn send(&self, job: Job<T>, on_done: &mut dyn FnMut(Done<T>)) -> Result<(), WorkerGone> {
        let jobs = self.jobs.as_ref().ok_or(WorkerGone)?;
        // Wait for room in the queue or a finished frame, whichever comes first: the worker may
        // need the caller to take finished frames before it can take the next job.
        loop {
            let mut select = Select::new();
            let send_index = select.send(jobs);
            let recv_index = select.recv(&self.done);
            let operation = select.select();
            if operation.index() == send_index {
                return operation.send(jobs, job).map_err(|_| WorkerGone);
            }
            debug_assert_eq!(operation.index(), recv_index);
            on_done(operation.recv(&self.done).map_err(|_| WorkerGone)?);
        }
    }

    fn wait_for(
        &self,
        on_done: &mut dyn FnMut(Done<T>),
        is_marker: impl Fn(&Done<T>) -> bool,
    ) -> Result<(), WorkerGone> {
        loop {
            let done = self.done.recv().map_err(|_| WorkerGone)?;
            if is_marker(&done) {
                return Ok(());
            }
            on_done(done);
        }
    }
}

impl<T: Send + 'static> Drop for Worker<T> {
    fn drop(&mut self) {
        // Closing the job queue ends the worker loop.
        self.jobs = None;
        // Unblock a worker waiting to hand over a result.
        while self.done.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            drop(std::mem::replace(&mut self.done, crossbeam_channel::never()));
            let _ = thread.join();
        }
    }
}

fn run<T>(
    mut restorer: Restorer<T>,
    jobs: Receiver<Job<T>>,
    done: Sender<Done<T>>,
    input_returner: FrameReturner,
    output_pool: FramePool,
) {
    let emit = |restorer: &mut Restorer<T>, params: &RestoreParams, draining: bool| -> bool {
        loop {
            let start = Instant::now();
            let mut output = if params.bypass || !restorer.is_ready(draining) {
                None
            } else {
                Some(output_pool.get())
            };
            let Some(restored) = restorer.restore_next(params, output.as_deref_mut(), draining) else {
                if let Some(frame) = output {
                    output_pool.put(frame);
                }
                return true;
            };
            for frame in restorer.take_evicted() {
                input_returner.put(frame);
            }
            let processing_ms = start.elapsed().as_secs_f64() * 1e3 + restored.times.ms[0];
            if done
                .send(Done::Frame {
                    output,
                    restored,
                    processing_ms,
                })
                .is_err()
            {
                return false;
            }
        }
    };
    for job in jobs.iter() {
        let alive = match job {
            Job::Frame {
                frame,
                tag,
                discontinuity,
                params,
            } => {
                restorer.push(frame, tag, discontinuity, &params);
                emit(&mut restorer, &params, false)
            }
            Job::Drain(params) => emit(&mut restorer, &params, true) && done.send(Done::Drained).is_ok(),
            Job::Reset => {
                restorer.reset();
                for frame in restorer.take_evicted() {
                    input_returner.put(frame);
                }
                done.send(Done::ResetDone).is_ok()
            }
        };
        if !alive {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Chroma;

    fn geometry() -> Geometry {
        Geometry {
            width: 16,
            height: 8,
            chroma: Chroma::None,
        }
    }

    /// An `on_done` that records tags and gives output frames straight back, as the element does.
    fn recorder<'a>(worker: &'a Worker<u32>, seen: &'a mut Vec<(u32, bool)>) -> impl FnMut(Done<u32>) + 'a {
        move |done| {
            if let Done::Frame { output, restored, .. } = done {
                seen.push((restored.tag, output.is_some()));
                if let Some(f) = output {
                    worker.recycle_output(f);
                }
            }
        }
    }

    #[test]
    fn many_frames_in_order_with_bounded_queues_and_drain() {
        let worker = Worker::spawn(geometry(), geometry(), 2, 2).unwrap();
        let params = RestoreParams::default();
        let mut seen = Vec::new();
        let mut on_done = recorder(&worker, &mut seen);
        for i in 0..200u32 {
            let mut frame = worker.acquire_input(&mut on_done).unwrap();
            frame.luma.data.fill((i % 7) as f32 / 10.0);
            worker.submit(frame, i, false, params, &mut on_done).unwrap();
            worker.collect(&mut on_done);
        }
        worker.drain(params, &mut on_done).unwrap();
        drop(on_done);
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..200).collect::<Vec<_>>()
        );
        assert!(seen.iter().all(|s| s.1), "every frame restored into an output frame");
    }

    #[test]
    fn reset_discards_held_frames_and_worker_keeps_going() {
        let worker = Worker::spawn(geometry(), geometry(), 1, 3).unwrap();
        let params = RestoreParams::default();
        let mut seen = Vec::new();
        let mut on_done = recorder(&worker, &mut seen);
        for i in 0..3u32 {
            let frame = worker.acquire_input(&mut on_done).unwrap();
            worker.submit(frame, i, false, params, &mut on_done).unwrap();
        }
        worker.reset().unwrap();
        for i in 10..12u32 {
            let frame = worker.acquire_input(&mut on_done).unwrap();
            worker.submit(frame, i, false, params, &mut on_done).unwrap();
        }
        worker.drain(params, &mut on_done).unwrap();
        drop(on_done);
        assert_eq!(seen, vec![(10, true), (11, true)]);
    }

    #[test]
    fn bypass_sends_no_output_frame() {
        let worker = Worker::spawn(geometry(), geometry(), 0, 0).unwrap();
        let params = RestoreParams {
            bypass: true,
            ..RestoreParams::default()
        };
        let mut seen = Vec::new();
        let mut on_done = recorder(&worker, &mut seen);
        let frame = worker.acquire_input(&mut on_done).unwrap();
        worker.submit(frame, 1u32, false, params, &mut on_done).unwrap();
        worker.drain(params, &mut on_done).unwrap();
        drop(on_done);
        assert_eq!(seen, vec![(1, false)]);
    }
}
