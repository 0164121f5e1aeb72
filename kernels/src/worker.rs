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
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A submitted frame on its way into the restorer.
struct Arrival<T> {
    frame: Box<WorkFrame>,
    tag: T,
    discontinuity: bool,
}

impl<T> Arrival<T> {
    fn push_into(self, restorer: &mut Restorer<T>, params: &RestoreParams) {
        restorer.push(self.frame, self.tag, self.discontinuity, params);
    }
}

/// A stage run after the classic stages on every restored frame, possibly holding frames back
/// (the diffusion prior's stream batch). It lives on the worker thread.
pub trait PostStage: Send {
    /// Takes the next restored frame, in order.
    fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<(), String>;
    /// Writes the oldest finished frame into `out`; false when none is ready yet.
    fn pop(&mut self, out: &mut WorkFrame) -> bool;
    /// Finishes every frame pushed (end of stream).
    fn drain(&mut self) -> Result<(), String>;
    /// Drops frames in flight and temporal state (flush, seek).
    fn reset(&mut self);
    /// Most frames it holds back at once.
    fn max_held(&self) -> usize;
}

/// What the worker does when the post stage fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPostFailure {
    /// Report the error; the stream stops.
    Error,
    /// Report a warning, drop the post stage and go on with the classic result.
    Continue,
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
    /// The post stage failed; with [`OnPostFailure::Continue`] frames keep coming without it.
    PostFailed { message: String, fatal: bool },
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
        Self::spawn_with(input, output, past, future, None, OnPostFailure::Error)
    }

    /// Like [`Self::spawn`], with a stage run after the classic ones on every restored frame.
    pub fn spawn_with(
        input: Geometry,
        output: Geometry,
        past: usize,
        future: usize,
        post: Option<Box<dyn PostStage>>,
        on_failure: OnPostFailure,
    ) -> std::io::Result<Self> {
        let restorer = Restorer::new(input, past, future);
        // Window + queued jobs + the one being unpacked + one being returned.
        let input_pool = FramePool::new(input, restorer.capacity() + JOB_QUEUE + 2);
        // Frames the post stage holds back keep their output frame until they come out.
        let held = post.as_ref().map_or(0, |p| p.max_held());
        let output_pool = FramePool::new(output, OUTPUT_FRAMES + held);
        let output_returner = output_pool.returner();
        let (job_tx, job_rx) = bounded(JOB_QUEUE);
        // Room for every output frame plus bypassed frames and one control answer, so the
        // worker rarely waits on the caller; the caller keeps draining it anyway.
        let (done_tx, done_rx) = bounded(input_pool.capacity() + OUTPUT_FRAMES + held + 2);
        let input_returner = input_pool.returner();
        let thread = std::thread::Builder::new()
            .name("oldfilm-worker".into())
            .spawn(move || {
                let mut post = post.map(|stage| PostRunner {
                    stage,
                    pending: VecDeque::new(),
                    on_failure,
                });
                run(restorer, job_rx, done_tx, input_returner, output_pool, &mut post)
            })?;
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
        // Only frames carry an output frame; control and failure messages have nothing to return.
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

/// A restored frame waiting for the post stage.
struct Held<T> {
    output: Option<Box<WorkFrame>>,
    restored: Restored<T>,
    processing_ms: f64,
    /// Still inside the post stage (frames without an output frame pass straight through, but
    /// never overtake one that is inside).
    inside: bool,
}

impl<T> Held<T> {
    fn into_done(self) -> Done<T> {
        Done::Frame {
            output: self.output,
            restored: self.restored,
            processing_ms: self.processing_ms,
        }
    }
}

struct PostRunner<T> {
    stage: Box<dyn PostStage>,
    pending: VecDeque<Held<T>>,
    on_failure: OnPostFailure,
}

impl<T> PostRunner<T> {
    /// Sends every frame at the front of the queue that the post stage has finished.
    fn release(&mut self, done: &Sender<Done<T>>, draining: bool) -> bool {
        while let Some(front) = self.pending.front_mut() {
            if front.inside {
                let out = front
                    .output
                    .as_deref_mut()
                    .expect("a frame inside the stage has an output frame");
                if !self.stage.pop(out) && !draining {
                    break;
                }
                front.inside = false;
            }
            let Some(held) = self.pending.pop_front() else { break };
            if done.send(held.into_done()).is_err() {
                return false;
            }
        }
        true
    }

    /// Lets every held frame out as it is (after a failure): the classic result.
    fn release_all_as_is(&mut self, done: &Sender<Done<T>>) -> bool {
        for held in self.pending.drain(..) {
            if done.send(held.into_done()).is_err() {
                return false;
            }
        }
        true
    }
}

/// Sends a restored frame, through the post stage when there is one. Returns whether the
/// caller is still listening, and drops the post stage after a failure it may continue from.
fn deliver<T>(
    post: &mut Option<PostRunner<T>>,
    done: &Sender<Done<T>>,
    output: Option<Box<WorkFrame>>,
    restored: Restored<T>,
    processing_ms: f64,
    use_post: bool,
) -> bool {
    let Some(runner) = post.as_mut() else {
        return done
            .send(Done::Frame {
                output,
                restored,
                processing_ms,
            })
            .is_ok();
    };
    let inside = match output.as_deref().filter(|_| use_post) {
        Some(frame) => match runner.stage.push(frame, restored.starts_shot) {
            Ok(()) => true,
            Err(message) => return fail(post, done, message, output, restored, processing_ms),
        },
        None => false,
    };
    runner.pending.push_back(Held {
        output,
        restored,
        processing_ms,
        inside,
    });
    runner.release(done, false)
}

fn fail<T>(
    post: &mut Option<PostRunner<T>>,
    done: &Sender<Done<T>>,
    message: String,
    output: Option<Box<WorkFrame>>,
    restored: Restored<T>,
    processing_ms: f64,
) -> bool {
    let fatal = post.as_ref().is_some_and(|r| r.on_failure == OnPostFailure::Error);
    if done.send(Done::PostFailed { message, fatal }).is_err() {
        return false;
    }
    let Some(mut runner) = post.take() else { return true };
    runner.release_all_as_is(done)
        && done
            .send(Done::Frame {
                output,
                restored,
                processing_ms,
            })
            .is_ok()
}

/// Runs `f` on a thread of rayon's pool while the calling thread waits. Started from a thread
/// outside the pool, as the worker is, every parallel loop inside pays a cross-thread wake-up
/// (about 20 µs measured on the development VM, against well under 1 µs from inside), and one
/// frame's stages run some fifty of them. Only pure computation goes through here, never a
/// wait on another thread, so a pool thread is never held blocked.
///
/// While `f` runs, the pool's other threads are kept awake ([`keep_awake`]): between two
/// parallel loops a frame has short serial steps, and a pool thread left idle for about
/// 50 µs goes to sleep, so the next loop paid a futex wake-up (some 28 a frame at 720p, 8%
/// of the worker's time in the kernel on the development VM).
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| {
        // Held until every keep-awake job has finished (they are joined below, on this thread).
        let _busy = Busy::enter();
        let done = AtomicBool::new(false);
        let keepers = (rayon::current_num_threads() - 1).min(MAX_KEEPERS);
        kept_awake(keepers, &done, f)
    })
}

/// Pool threads at most kept awake beside the one running a frame (the wake-ups were measured
/// on 2 cores, where one is). On a large pool the rest sleep between loops as before, so a
/// frame's trip does not hold every core of a shared server spinning.
const MAX_KEEPERS: usize = 3;

/// Runs `f` beside `keepers` [`keep_awake`] jobs, then tells them it is done. Joined rather
/// than spawned, so no job is allocated: each waits on this thread's deque, the oldest first
/// in line for a thief, and one no thread took runs here at the end and returns at once.
fn kept_awake<R: Send>(keepers: usize, done: &AtomicBool, f: impl FnOnce() -> R + Send) -> R {
    if keepers == 0 {
        // Set when `f` returns or panics: a join waits for its other half before passing a
        // panic on, so a keeper never told would hold the panic, and the stream, for ever.
        let _done = SetOnDrop(done);
        return f();
    }
    rayon::join(|| kept_awake(keepers - 1, done, f), || keep_awake(done)).0
}

/// Runs the pool's pending jobs, yielding the core between them, until `done`. On a busy
/// thread it returns at once: the thread running the frame may pop it while it waits inside a
/// join, and spinning there would wait on itself; a thread keeping awake for another stream's
/// frame could not see that frame end until this one's did. (With several streams, a thread
/// keeping awake for one may still take up another's whole frame, as an idle thread would;
/// the first frame's trip then ends when that one does.)
fn keep_awake(done: &AtomicBool) {
    if BUSY.get() {
        return;
    }
    let _busy = Busy::enter();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            // Nothing to take: let the decoder or the encoder have the core meanwhile.
            std::thread::yield_now();
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

thread_local! {
    /// Whether this thread runs a frame ([`on_pool`]) or keeps the pool awake for one.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread busy until dropped (a job it runs may panic), then restores what it was:
/// a thread keeping awake may itself take up another stream's whole frame.
struct Busy {
    was: bool,
}

impl Busy {
    fn enter() -> Self {
        Busy {
            was: BUSY.replace(true),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.set(self.was);
    }
}

fn run<T: Send>(
    mut restorer: Restorer<T>,
    jobs: Receiver<Job<T>>,
    done: Sender<Done<T>>,
    input_returner: FrameReturner,
    output_pool: FramePool,
    post: &mut Option<PostRunner<T>>,
) {
    // Restores frames while the window is ready. `arriving` is a frame to push first: it goes
    // onto the pool in the same trip as the restoration it makes ready, one trip a frame (each
    // trip is a wake-up of a pool thread and of this one).
    let emit = |restorer: &mut Restorer<T>,
                post: &mut Option<PostRunner<T>>,
                params: &RestoreParams,
                draining: bool,
                mut arriving: Option<Arrival<T>>|
     -> bool {
        loop {
            let ready = match arriving {
                Some(_) => restorer.ready_after_push(),
                None => restorer.is_ready(draining),
            };
            if !ready {
                if let Some(frame) = arriving.take() {
                    on_pool(|| frame.push_into(restorer, params));
                }
                return true;
            }
            let waited = Instant::now();
            let mut output = (!params.bypass).then(|| output_pool.get());
            let waited_ms = waited.elapsed().as_secs_f64() * 1e3;
            let (restored, restore_ms) = on_pool(|| {
                if let Some(frame) = arriving.take() {
                    frame.push_into(restorer, params);
                }
                let start = Instant::now();
                let restored = restorer.restore_next(params, output.as_deref_mut(), draining);
                (restored, start.elapsed().as_secs_f64() * 1e3)
            });
            let restored = restored.expect("restore_next gives a frame once the window is ready");
            for frame in restorer.take_evicted() {
                input_returner.put(frame);
            }
            let processing_ms = waited_ms + restore_ms + restored.arrival_ms;
            // A compare view is composed already: the post stage would see the original half too.
            let use_post = params.compare == crate::compare::CompareMode::None;
            if !deliver(post, &done, output, restored, processing_ms, use_post) {
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
                let arriving = Arrival {
                    frame,
                    tag,
                    discontinuity,
                };
                emit(&mut restorer, post, &params, false, Some(arriving))
            }
            Job::Drain(params) => {
                emit(&mut restorer, post, &params, true, None)
                    && drain_post(post, &done)
                    && done.send(Done::Drained).is_ok()
            }
            Job::Reset => {
                restorer.reset();
                for frame in restorer.take_evicted() {
                    input_returner.put(frame);
                }
                if let Some(runner) = post.as_mut() {
                    runner.stage.reset();
                    for held in runner.pending.drain(..) {
                        if let Some(frame) = held.output {
                            output_pool.put(frame);
                        }
                    }
                }
                done.send(Done::ResetDone).is_ok()
            }
        };
        if !alive {
            return;
        }
    }
}

fn drain_post<T>(post: &mut Option<PostRunner<T>>, done: &Sender<Done<T>>) -> bool {
    let Some(runner) = post.as_mut() else { return true };
    if let Err(message) = runner.stage.drain() {
        let fatal = runner.on_failure == OnPostFailure::Error;
        let alive = done.send(Done::PostFailed { message, fatal }).is_ok() && runner.release_all_as_is(done);
        *post = None;
        return alive;
    }
    runner.release(done, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Chroma;
    use rayon::prelude::*;

    #[test]
    fn frames_of_several_streams_on_the_pool_at_once_all_finish() {
        // Each caller's frame keeps the pool awake while the others' do too: nested or
        // stolen keep-awake jobs must neither hang nor change a result. A pool of its own, so
        // that no other test's frames are on it when it is checked at the end.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let callers: Vec<_> = (0..4u64)
                .map(|k| {
                    let pool = &pool;
                    s.spawn(move || {
                        let frame = || (0..20_000u64).into_par_iter().map(|i| i * k).sum::<u64>();
                        (0..30).map(|_| pool.install(|| on_pool(frame))).sum::<u64>()
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for (k, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum, 30 * k as u64 * (20_000 * 19_999 / 2), "caller {k}");
        }
        let marked = pool.broadcast(|_| BUSY.get());
        assert!(marked.iter().all(|&busy| !busy), "no pool thread is left marked busy");
    }

    #[test]
    fn a_panic_in_a_frame_reaches_the_caller_instead_of_hanging() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let frame = std::panic::AssertUnwindSafe(|| pool.install(|| on_pool(|| panic!("a stage failed"))));
            let result = std::panic::catch_unwind(frame);
            tx.send(result.is_err()).unwrap();
        });
        // A hang would be the keeper spinning for a frame that never ends: fail, not wait.
        let panicked = rx.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(panicked, Ok(true), "the panic came back to the caller");
    }

    #[test]
    fn busy_marks_nest_and_restore() {
        assert!(!BUSY.get());
        let outer = Busy::enter();
        let inner = Busy::enter();
        drop(inner);
        assert!(BUSY.get(), "the outer mark stays after the inner one ends");
        drop(outer);
        assert!(!BUSY.get());
    }

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

    /// Holds two frames back and brightens each by 0.25, failing on a chosen frame.
    struct Delay {
        held: VecDeque<f32>,
        ready: VecDeque<f32>,
        fail_at: Option<usize>,
        pushed: usize,
    }

    impl PostStage for Delay {
        fn push(&mut self, frame: &WorkFrame, _starts_shot: bool) -> Result<(), String> {
            self.pushed += 1;
            if Some(self.pushed) == self.fail_at {
                return Err("model exploded".into());
            }
            self.held.push_back(frame.luma.data[0]);
            if self.held.len() > 2 {
                self.ready.extend(self.held.pop_front());
            }
            Ok(())
        }
        fn pop(&mut self, out: &mut WorkFrame) -> bool {
            match self.ready.pop_front() {
                Some(v) => {
                    out.luma.data.fill(v + 0.25);
                    true
                }
                None => false,
            }
        }
        fn drain(&mut self) -> Result<(), String> {
            self.ready.extend(self.held.drain(..));
            Ok(())
        }
        fn reset(&mut self) {
            self.held.clear();
            self.ready.clear();
        }
        fn max_held(&self) -> usize {
            2
        }
    }

    /// Frames out as (tag, luma) and failures reported as (message, fatal).
    type PostRun = (Vec<(u32, f32)>, Vec<(String, bool)>);

    fn run_post(fail_at: Option<usize>, on_failure: OnPostFailure) -> PostRun {
        run_post_with(fail_at, on_failure, crate::compare::CompareMode::None)
    }

    fn run_post_with(
        fail_at: Option<usize>,
        on_failure: OnPostFailure,
        compare: crate::compare::CompareMode,
    ) -> PostRun {
        let post = Delay {
            held: VecDeque::new(),
            ready: VecDeque::new(),
            fail_at,
            pushed: 0,
        };
        let worker = Worker::spawn_with(geometry(), geometry(), 1, 1, Some(Box::new(post)), on_failure).unwrap();
        let params = RestoreParams {
            deflicker: false,
            clean: crate::clean::CleanParams {
                stabilise: None,
                regional: None,
                blotches: None,
                scratches: None,
                grain: None,
            },
            compare,
            ..RestoreParams::default()
        };
        let (mut frames, mut failures) = (Vec::new(), Vec::new());
        let mut on_done = |done: Done<u32>| match done {
            Done::Frame { output, restored, .. } => {
                let f = output.expect("restored into an output frame");
                frames.push((restored.tag, f.luma.data[0]));
                worker.recycle_output(f);
            }
            Done::PostFailed { message, fatal } => failures.push((message, fatal)),
            _ => {}
        };
        for i in 0..8u32 {
            let mut frame = worker.acquire_input(&mut on_done).unwrap();
            frame.luma.data.fill(i as f32 / 10.0);
            worker.submit(frame, i, false, params, &mut on_done).unwrap();
        }
        worker.drain(params, &mut on_done).unwrap();
        (frames, failures)
    }

    #[test]
    fn a_post_stage_that_holds_frames_back_keeps_order_and_drains() {
        let (frames, failures) = run_post(None, OnPostFailure::Error);
        assert!(failures.is_empty());
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        for (tag, v) in frames {
            assert!((v - (tag as f32 / 10.0 + 0.25)).abs() < 1e-6, "frame {tag} is {v}");
        }
    }

    #[test]
    fn compare_views_skip_the_post_stage() {
        let (frames, _) = run_post_with(None, OnPostFailure::Error, crate::compare::CompareMode::Split);
        assert_eq!(frames.len(), 8);
        // No frame went through the stage (it would have added 0.25).
        assert!(frames.iter().all(|(tag, v)| (v - *tag as f32 / 10.0).abs() < 1e-6));
    }

    #[test]
    fn a_failing_post_stage_reports_and_can_continue_with_the_classic_result() {
        let (frames, failures) = run_post(Some(4), OnPostFailure::Continue);
        assert_eq!(failures, vec![("model exploded".to_string(), false)]);
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        // Frames finished before the failure went through the stage; the rest are classic.
        assert!((frames[0].1 - 0.25).abs() < 1e-6);
        assert!((frames[7].1 - 0.7).abs() < 1e-6);
        let (_, failures) = run_post(Some(4), OnPostFailure::Error);
        assert!(failures[0].1, "fatal when asked to fail");
    }
}
