//! The prior's stages on three threads with bounded queues between them, so that pre-processing of frame n+1 and
//! post-processing of frame n−1 run while frame n is in the models (the I/O queues of StreamDiffusion):
//!
//! ```text
//! caller ─▶ [pre: RGB, similarity filter, tiles] ─▶ [infer: encode, UNet, cache, decode] ─▶ [post: colour fix,
//!        blend] ─▶ caller
//! ```
//!
//! Control messages (new parameters, drain, reset) travel in band, so every stage applies them between the same two
//! frames as the in-line path does, and the results are the same frame for frame.

use crate::error::EngineError;
use crate::image::RgbImage;
use crate::prior::StreamParams;
use crate::stages::{Back, Core, Front, Inferred, Prepared, Ready};
use crossbeam_channel::{bounded, Receiver, Sender};
use kernels::{Geometry, WorkFrame};
use std::thread::JoinHandle;

/// A frame as the caller hands it in: converting a working frame to RGB is part of the pre-processing thread's work.
pub(crate) enum Input {
    Work(Box<WorkFrame>),
    Rgb(RgbImage),
}

enum ToFront {
    Frame { input: Input, starts_shot: bool },
    Update(StreamParams),
    Drain,
    Reset,
}

enum ToCore {
    Frame(Prepared),
    Update(StreamParams),
    Drain,
    Reset,
}

enum ToBack {
    Frame(Inferred),
    Update(StreamParams),
    Drained,
    Reset,
    Failed(EngineError),
}

/// What comes back to the caller.
pub(crate) enum Out {
    Frame(Ready),
    Drained,
    ResetDone,
    Failed(EngineError),
}

pub(crate) struct Overlap {
    to_front: Option<Sender<ToFront>>,
    from_back: Receiver<Out>,
    /// Working frames the pre-processing thread is done with, to copy the next input into.
    spare: Receiver<Box<WorkFrame>>,
    threads: Vec<JoinHandle<()>>,
}

impl Overlap {
    /// Starts the three threads. `depth` bounds every queue; the caller bounds the frames in flight.
    pub fn spawn(front: Front, core: Core, back: Back, depth: usize) -> std::io::Result<Overlap> {
        let (to_front, front_rx) = bounded(depth);
        let (to_core, core_rx) = bounded(depth);
        let (to_back, back_rx) = bounded(depth);
        let (to_caller, from_back) = bounded(depth);
        let (spare_tx, spare) = bounded(depth + 1);
        let threads = vec![
            std::thread::Builder::new()
                .name("oldfilm-prior-pre".into())
                .spawn(move || run_front(front, front_rx, to_core, spare_tx))?,
            std::thread::Builder::new()
                .name("oldfilm-prior-infer".into())
                .spawn(move || run_core(core, core_rx, to_back))?,
            std::thread::Builder::new()
                .name("oldfilm-prior-post".into())
                .spawn(move || run_back(back, back_rx, to_caller))?,
        ];
        Ok(Overlap {
            to_front: Some(to_front),
            from_back,
            spare,
            threads,
        })
    }

    /// Sends a working frame in (copied into a recycled frame, so the caller keeps its own).
    pub fn send_work(&self, frame: &WorkFrame, starts_shot: bool) -> bool {
        // Pixels only: the prior does not use the motion pyramid.
        let mut copy = self
            .spare
            .try_recv()
            .ok()
            .filter(|spare| spare.geometry == frame.geometry)
            .unwrap_or_else(|| Box::new(WorkFrame::new(frame.geometry)));
        copy.copy_from(frame);
        self.send(ToFront::Frame {
            input: Input::Work(copy),
            starts_shot,
        })
    }

    pub fn send_rgb(&self, frame: RgbImage, starts_shot: bool) -> bool {
        self.send(ToFront::Frame {
            input: Input::Rgb(frame),
            starts_shot,
        })
    }

    pub fn send_update(&self, params: StreamParams) -> bool {
        self.send(ToFront::Update(params))
    }

    pub fn send_drain(&self) -> bool {
        self.send(ToFront::Drain)
    }

    pub fn send_reset(&self) -> bool {
        self.send(ToFront::Reset)
    }

    /// The next message from the post-processing thread; `None` once the threads are gone.
    pub fn recv(&self) -> Option<Out> {
        self.from_back.recv().ok()
    }

    pub fn try_recv(&self) -> Option<Out> {
        self.from_back.try_recv().ok()
    }

    fn send(&self, message: ToFront) -> bool {
        self.to_front.as_ref().is_some_and(|tx| tx.send(message).is_ok())
    }
}

impl Drop for Overlap {
    fn drop(&mut self) {
        // Closing the first queue ends each thread in turn; the caller's queue is emptied so none blocks on it.
        self.to_front = None;
        while self.from_back.recv().is_ok() {}
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn run_front(mut front: Front, jobs: Receiver<ToFront>, next: Sender<ToCore>, spare: Sender<Box<WorkFrame>>) {
    for job in jobs.iter() {
        let message = match job {
            ToFront::Frame { input, starts_shot } => {
                let (rgb, geometry) = to_rgb(input, &spare);
                ToCore::Frame(front.prepare(rgb, geometry, starts_shot))
            }
            ToFront::Update(params) => {
                front.update(&params);
                ToCore::Update(params)
            }
            ToFront::Drain => ToCore::Drain,
            ToFront::Reset => {
                front.reset();
                ToCore::Reset
            }
        };
        if next.send(message).is_err() {
            return;
        }
    }
}

fn to_rgb(input: Input, spare: &Sender<Box<WorkFrame>>) -> (RgbImage, Option<Geometry>) {
    match input {
        Input::Work(frame) => {
            let rgb = RgbImage::from_work_frame(&frame);
            let geometry = frame.geometry;
            let _ = spare.try_send(frame);
            (rgb, Some(geometry))
        }
        Input::Rgb(rgb) => (rgb, None),
    }
}

fn run_core(mut core: Core, jobs: Receiver<ToCore>, next: Sender<ToBack>) {
    // After a failure frames are dropped, but drains and resets still go through so that the caller never waits
    // for ever.
    let mut failed = false;
    for job in jobs.iter() {
        let result = match job {
            ToCore::Frame(_) if failed => Ok(()),
            ToCore::Frame(frame) => core.accept(frame),
            ToCore::Update(_) if failed => Ok(()),
            // Frames a new schedule drains leave before the parameters reach post-processing, as in line.
            ToCore::Update(params) => core.update(&params).and_then(|_| {
                forward_done(&mut core, &next);
                send_or(&next, ToBack::Update(params))
            }),
            ToCore::Drain => {
                let drained = if failed { Ok(()) } else { core.drain() };
                drained.and_then(|_| forward_all_then(&mut core, &next, ToBack::Drained))
            }
            ToCore::Reset => {
                core.reset();
                failed = false;
                send_or(&next, ToBack::Reset)
            }
        };
        match result {
            Err(error) if !failed => {
                failed = true;
                if next.send(ToBack::Failed(error)).is_err() {
                    return;
                }
            }
            _ => {}
        }
        if !forward_done(&mut core, &next) {
            return;
        }
    }
}

/// Sends every frame the core has finished, in order. False when the next thread is gone.
fn forward_done(core: &mut Core, next: &Sender<ToBack>) -> bool {
    while let Some(item) = core.pop_done() {
        if next.send(ToBack::Frame(item)).is_err() {
            return false;
        }
    }
    true
}

fn forward_all_then(core: &mut Core, next: &Sender<ToBack>, marker: ToBack) -> Result<(), EngineError> {
    forward_done(core, next);
    send_or(next, marker)
}

/// A closed queue means the caller is going away: nothing to report.
fn send_or(next: &Sender<ToBack>, message: ToBack) -> Result<(), EngineError> {
    let _ = next.send(message);
    Ok(())
}

fn run_back(mut back: Back, jobs: Receiver<ToBack>, caller: Sender<Out>) {
    for job in jobs.iter() {
        let message = match job {
            ToBack::Frame(item) => Out::Frame(back.finish(item)),
            ToBack::Update(params) => {
                back.update(&params);
                continue;
            }
            ToBack::Drained => Out::Drained,
            ToBack::Reset => {
                back.reset();
                Out::ResetDone
            }
            ToBack::Failed(error) => Out::Failed(error),
        };
        if caller.send(message).is_err() {
            return;
        }
    }
}
