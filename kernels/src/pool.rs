//! A fixed pool of working frames, handed round through a bounded channel.
//!
//! Frames are allocated once per geometry; in steady state a frame goes from the pool to the
//! window, to the output, and back, so nothing is allocated per frame. An empty pool is
//! back-pressure: the caller waits for a frame to come back instead of growing the pool.

use crate::frame::{Geometry, WorkFrame};
use crossbeam_channel::{bounded, Receiver, Sender};

pub struct FramePool {
    geometry: Geometry,
    capacity: usize,
    free_tx: Sender<Box<WorkFrame>>,
    free_rx: Receiver<Box<WorkFrame>>,
}

impl FramePool {
    pub fn new(geometry: Geometry, capacity: usize) -> Self {
        let (free_tx, free_rx) = bounded(capacity);
        for _ in 0..capacity {
            // Cannot fail: the channel holds exactly `capacity` frames.
            let _ = free_tx.send(Box::new(WorkFrame::new(geometry)));
        }
        FramePool {
            geometry,
            capacity,
            free_tx,
            free_rx,
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames currently free.
    pub fn available(&self) -> usize {
        self.free_rx.len()
    }

    /// The receiving end, for callers that wait on the pool and other channels at once.
    pub fn receiver(&self) -> &Receiver<Box<WorkFrame>> {
        &self.free_rx
    }

    /// A handle that returns frames to this pool from another thread.
    pub fn returner(&self) -> FrameReturner {
        FrameReturner {
            geometry: self.geometry,
            tx: self.free_tx.clone(),
        }
    }

    pub fn try_get(&self) -> Option<Box<WorkFrame>> {
        self.free_rx.try_recv().ok()
    }

    /// Waits for a free frame.
    pub fn get(&self) -> Box<WorkFrame> {
        // The pool keeps a sender itself, so the channel cannot disconnect while `self` lives.
        self.free_rx.recv().expect("pool holds its own sender")
    }

    pub fn put(&self, frame: Box<WorkFrame>) {
        self.returner().put(frame)
    }
}

/// Returns frames to their pool; frames of another geometry (left over from before a caps
/// change) are dropped instead.
#[derive(Clone)]
pub struct FrameReturner {
    geometry: Geometry,
    tx: Sender<Box<WorkFrame>>,
}

impl FrameReturner {
    pub fn put(&self, frame: Box<WorkFrame>) {
        if frame.geometry == self.geometry {
            // A full pool means the frame is surplus: dropping it is right.
            let _ = self.tx.try_send(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Chroma;

    #[test]
    fn frames_are_reused_not_reallocated() {
        let g = Geometry {
            width: 8,
            height: 4,
            chroma: Chroma::None,
        };
        let pool = FramePool::new(g, 2);
        let a = pool.get();
        let addr = &*a as *const WorkFrame;
        let b = pool.get();
        assert!(pool.try_get().is_none(), "pool must not grow");
        pool.put(a);
        let c = pool.get();
        assert_eq!(&*c as *const WorkFrame, addr);
        pool.put(b);
        pool.put(c);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn foreign_geometry_is_not_pooled() {
        let g = Geometry {
            width: 8,
            height: 4,
            chroma: Chroma::None,
        };
        let pool = FramePool::new(g, 1);
        let _taken = pool.get();
        pool.put(Box::new(WorkFrame::new(Geometry { width: 2, ..g })));
        assert_eq!(pool.available(), 0);
    }
}
