//! A post stage on a thread of its own: [`Threaded`] runs any [`PostStage`] behind bounded queues, so that the
//! worker's classic stages work on frame n+1 while the post stage (the GPU-resident prior, whose calls block for
//! the device) works on frame n. Frames, drains and resets travel in order through the same queue; frames are
//! copied into a fixed set of spare frames, so nothing is allocated in steady state.

use crate::frame::WorkFrame;
use crate::worker::PostStage;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::VecDeque;
use std::thread::JoinHandle;

enum Job {
    /// A frame to restore, whether it starts a shot, and a spare frame to restore into.
    Frame(Box<WorkFrame>, bool, Option<Box<WorkFrame>>),
    Drain,
    Reset,
}

enum Reply {
    /// A restored frame, and the input frame to reuse.
    Frame(Box<WorkFrame>, Option<Box<WorkFrame>>),
    /// An input frame taken in without a frame coming out.
    Spare(Box<WorkFrame>),
    Drained(Result<(), String>),
    ResetDone,
    Failed(String),
}

pub struct Threaded {
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
    ready: VecDeque<Box<WorkFrame>>,
    spare: Vec<Box<WorkFrame>>,
    /// Frames sent and not yet back.
    in_flight: usize,
    /// Most frames in flight: what the inner stage holds plus the queue.
    capacity: usize,
    inner_max_held: usize,
    failed: Option<String>,
}

impl Threaded {
    /// Starts `inner` on a thread named `name`, with `queue` frames of room between the two threads.
    pub fn spawn(inner: Box<dyn PostStage>, queue: usize, name: &str) -> std::io::Result<Threaded> {
        let inner_max_held = inner.max_held();
        let queue = queue.max(1);
        let (jobs, job_rx) = bounded(queue);
        let (reply_tx, replies) = bounded(inner_max_held + queue + 2);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(inner, job_rx, reply_tx))?;
        Ok(Threaded {
            jobs: Some(jobs),
            replies,
            thread: Some(thread),
            ready: VecDeque::new(),
            spare: Vec::new(),
            in_flight: 0,
            capacity: inner_max_held + queue,
            inner_max_held,
            failed: None,
        })
    }

    fn send(&mut self, job: Job) -> Result<(), String> {
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent {
            Ok(())
        } else {
            Err("the post stage's thread has stopped".into())
        }
    }

    /// Takes one reply; true when it is the marker a caller waits for.
    fn take(&mut self, reply: Reply) -> Option<Result<(), String>> {
        match reply {
            Reply::Frame(frame, input) => {
                self.ready.push_back(frame);
                self.spare.extend(input);
                self.in_flight = self.in_flight.saturating_sub(1);
                None
            }
            Reply::Spare(input) => {
                self.spare.push(input);
                None
            }
            Reply::Failed(message) => {
                self.failed.get_or_insert(message);
                None
            }
            Reply::Drained(result) => Some(result),
            Reply::ResetDone => Some(Ok(())),
        }
    }

    fn poll(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            self.take(reply);
        }
    }

    fn wait_marker(&mut self) -> Result<(), String> {
        loop {
            let reply = self
                .replies
                .recv()
                .map_err(|_| "the post stage's thread has stopped".to_string())?;
            if let Some(result) = self.take(reply) {
                return result;
            }
        }
    }

    fn spare_for(&mut self, frame: &WorkFrame) -> Box<WorkFrame> {
        match self.spare.pop() {
            Some(spare) if spare.geometry == frame.geometry => spare,
            _ => Box::new(WorkFrame::new(frame.geometry)),
        }
    }

    fn check(&self) -> Result<(), String> {
        match &self.failed {
            Some(message) => Err(message.clone()),
            None => Ok(()),
        }
    }
}

impl PostStage for Threaded {
    fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<(), String> {
        self.poll();
        self.check()?;
        while self.in_flight >= self.capacity {
            let reply = self
                .replies
                .recv()
                .map_err(|_| "the post stage's thread has stopped".to_string())?;
            self.take(reply);
            self.check()?;
        }
        let mut copy = self.spare_for(frame);
        copy.copy_from(frame);
        // Frames go round: the caller's spares become the thread's outputs and come back as ready frames.
        let output = self.spare.pop();
        self.send(Job::Frame(copy, starts_shot, output))?;
        self.in_flight += 1;
        Ok(())
    }

    fn pop(&mut self, out: &mut WorkFrame) -> bool {
        self.poll();
        let Some(frame) = self.ready.pop_front() else {
            return false;
        };
        if out.geometry == frame.geometry {
            out.copy_from(&frame);
        } else {
            *out = (*frame).clone();
        }
        self.spare.push(frame);
        true
    }

    fn drain(&mut self) -> Result<(), String> {
        self.check()?;
        self.send(Job::Drain)?;
        let drained = self.wait_marker();
        self.check()?;
        drained?;
        // Everything sent has come back.
        self.in_flight = 0;
        Ok(())
    }

    fn reset(&mut self) {
        if self.send(Job::Reset).is_ok() {
            let _ = self.wait_marker();
        }
        self.spare.extend(self.ready.drain(..));
        self.in_flight = 0;
        self.failed = None;
    }

    fn max_held(&self) -> usize {
        // The frames inside, those waiting to be popped, and the one being handed over.
        self.inner_max_held + self.capacity + 1
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        self.jobs = None;
        while self.replies.recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(mut inner: Box<dyn PostStage>, jobs: Receiver<Job>, replies: Sender<Reply>) {
    let mut failed = false;
    // Restored frames are written into these; the caller sends them back with later frames.
    let mut outputs: Vec<Box<WorkFrame>> = Vec::new();
    for job in jobs.iter() {
        let sent = match job {
            Job::Frame(frame, starts_shot, output) => {
                outputs.extend(output);
                restore(&mut *inner, &mut outputs, frame, starts_shot, &mut failed, &replies)
            }
            Job::Drain => {
                let result = if failed { Ok(()) } else { inner.drain() };
                let geometry = outputs.last().map(|f| f.geometry);
                let flushed = geometry.is_none_or(|g| send_ready(&mut *inner, &mut outputs, g, None, &replies));
                flushed && replies.send(Reply::Drained(result)).is_ok()
            }
            Job::Reset => {
                inner.reset();
                failed = false;
                replies.send(Reply::ResetDone).is_ok()
            }
        };
        if !sent {
            return;
        }
    }
}

/// One frame through `inner`; after a failure frames only go back (the caller reports the error).
fn restore(
    inner: &mut dyn PostStage,
    outputs: &mut Vec<Box<WorkFrame>>,
    frame: Box<WorkFrame>,
    starts_shot: bool,
    failed: &mut bool,
    replies: &Sender<Reply>,
) -> bool {
    if *failed {
        return replies.send(Reply::Spare(frame)).is_ok();
    }
    match inner.push(&frame, starts_shot) {
        Ok(()) => send_ready(inner, outputs, frame.geometry, Some(frame), replies),
        Err(message) => {
            *failed = true;
            replies.send(Reply::Failed(message)).is_ok() && replies.send(Reply::Spare(frame)).is_ok()
        }
    }
}

/// Sends every frame `inner` has ready; the first carries `input` back for reuse (else it goes back alone).
fn send_ready(
    inner: &mut dyn PostStage,
    outputs: &mut Vec<Box<WorkFrame>>,
    geometry: crate::frame::Geometry,
    mut input: Option<Box<WorkFrame>>,
    replies: &Sender<Reply>,
) -> bool {
    loop {
        let mut out = outputs
            .pop()
            .filter(|f| f.geometry == geometry)
            .unwrap_or_else(|| Box::new(WorkFrame::new(geometry)));
        if !inner.pop(&mut out) {
            outputs.push(out);
            return match input {
                Some(frame) => replies.send(Reply::Spare(frame)).is_ok(),
                None => true,
            };
        }
        if replies.send(Reply::Frame(out, input.take())).is_err() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Chroma, Geometry};

    /// Holds `delay` frames back and adds 0.25 to each, failing on frame `fail_at` (1-based).
    struct Delay {
        delay: usize,
        held: VecDeque<f32>,
        ready: VecDeque<f32>,
        pushed: usize,
        fail_at: Option<usize>,
    }

    impl PostStage for Delay {
        fn push(&mut self, frame: &WorkFrame, _starts_shot: bool) -> Result<(), String> {
            self.pushed += 1;
            if Some(self.pushed) == self.fail_at {
                return Err("device lost".into());
            }
            self.held.push_back(frame.luma.data[0]);
            while self.held.len() > self.delay {
                self.ready.extend(self.held.pop_front());
            }
            Ok(())
        }
        fn pop(&mut self, out: &mut WorkFrame) -> bool {
            self.ready.pop_front().map(|v| out.luma.data.fill(v + 0.25)).is_some()
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
            self.delay
        }
    }

    fn threaded(delay: usize, fail_at: Option<usize>) -> Threaded {
        let inner = Delay {
            delay,
            held: VecDeque::new(),
            ready: VecDeque::new(),
            pushed: 0,
            fail_at,
        };
        Threaded::spawn(Box::new(inner), 2, "test-post").unwrap()
    }

    fn frame(v: f32) -> WorkFrame {
        let mut f = WorkFrame::new(Geometry {
            width: 4,
            height: 2,
            chroma: Chroma::None,
        });
        f.luma.data.fill(v);
        f
    }

    fn pop_all(t: &mut Threaded, out: &mut Vec<f32>) {
        let mut f = frame(0.0);
        while t.pop(&mut f) {
            out.push(f.luma.data[0]);
        }
    }

    #[test]
    fn frames_come_back_in_order_and_all_of_them_after_a_drain() {
        let mut t = threaded(2, None);
        let mut out = Vec::new();
        for i in 0..200 {
            t.push(&frame(i as f32), i == 0).unwrap();
            pop_all(&mut t, &mut out);
            assert!(t.in_flight <= t.capacity, "bounded");
        }
        t.drain().unwrap();
        pop_all(&mut t, &mut out);
        let want: Vec<f32> = (0..200).map(|i| i as f32 + 0.25).collect();
        assert_eq!(out, want);
        // Frames go round instead of piling up.
        assert!(t.spare.len() <= 2 * t.max_held(), "{} spare frames", t.spare.len());
    }

    #[test]
    fn reset_drops_what_is_inside_and_the_stream_goes_on() {
        let mut t = threaded(3, None);
        let mut out = Vec::new();
        for i in 0..5 {
            t.push(&frame(i as f32), false).unwrap();
        }
        t.reset();
        for i in 10..13 {
            t.push(&frame(i as f32), false).unwrap();
        }
        t.drain().unwrap();
        pop_all(&mut t, &mut out);
        assert_eq!(out, [10.25, 11.25, 12.25]);
    }

    #[test]
    fn a_failure_inside_is_reported_to_the_caller() {
        let mut t = threaded(1, Some(4));
        let mut result = Ok(());
        for i in 0..50 {
            result = t.push(&frame(i as f32), false);
            if result.is_err() {
                break;
            }
        }
        let error = result
            .err()
            .or_else(|| t.drain().err())
            .expect("the failure comes back");
        assert_eq!(error, "device lost");
    }

    #[test]
    fn the_worker_runs_a_threaded_post_stage_without_stalling_and_in_order() {
        use crate::restorer::RestoreParams;
        use crate::worker::{Done, OnPostFailure, Worker};
        let g = Geometry {
            width: 16,
            height: 8,
            chroma: Chroma::None,
        };
        let worker = Worker::spawn_with(g, g, 1, 1, Some(Box::new(threaded(3, None))), OnPostFailure::Error).unwrap();
        let params = RestoreParams {
            deflicker: false,
            clean: crate::clean::CleanParams {
                blotches: None,
                scratches: None,
                grain: None,
                stabilise: None,
                regional: None,
            },
            ..RestoreParams::default()
        };
        let mut frames = Vec::new();
        let mut on_done = |done: Done<u32>| {
            if let Done::Frame { output, restored, .. } = done {
                let f = output.expect("an output frame");
                frames.push((restored.tag, f.luma.data[0]));
                worker.recycle_output(f);
            }
        };
        // Many more frames than any pool holds: a stall would hang here.
        for i in 0..300u32 {
            let mut frame = worker.acquire_input(&mut on_done).unwrap();
            frame.luma.data.fill(i as f32 / 1000.0);
            worker.submit(frame, i, false, params, &mut on_done).unwrap();
        }
        worker.drain(params, &mut on_done).unwrap();
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            (0..300).collect::<Vec<_>>()
        );
        assert!(frames
            .iter()
            .all(|(tag, v)| (v - (*tag as f32 / 1000.0 + 0.25)).abs() < 1e-5));
    }
}
