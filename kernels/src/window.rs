//! The temporal window: past and future neighbours of the frame being restored.
//!
//! The window owns frame lifetimes. A frame is output once `future` newer frames have arrived
//! (or when the stream drains), and leaves the window once it is more than `past` frames old,
//! when no stage can need it as a neighbour any more. Neighbours on the other side of a shot cut
//! or a discontinuity are hidden, so no stage can blend across one.

use crate::frame::WorkFrame;
use crate::stats::FrameStats;
use std::collections::VecDeque;

/// One frame held in the window, with what was computed about it on the way in.
pub struct Slot<T> {
    pub frame: Box<WorkFrame>,
    pub stats: FrameStats,
    /// Frame number since the last reset.
    pub seq: u64,
    /// This frame starts a new shot (cut, discontinuity or first frame).
    pub starts_shot: bool,
    /// How different this frame is from the previous one (see `cut::cut_score`).
    pub cut_score: f32,
    tag: Option<T>,
}

pub struct TemporalWindow<T> {
    past: usize,
    future: usize,
    slots: VecDeque<Slot<T>>,
    /// Index in `slots` of the next frame to output.
    centre: usize,
    next_seq: u64,
}

impl<T> TemporalWindow<T> {
    pub fn new(past: usize, future: usize) -> Self {
        TemporalWindow {
            past,
            future,
            slots: VecDeque::with_capacity(past + future + 2),
            centre: 0,
            next_seq: 0,
        }
    }

    pub fn past(&self) -> usize {
        self.past
    }

    pub fn future(&self) -> usize {
        self.future
    }

    /// Most frames the window holds at once (the size a frame pool must cover).
    pub fn capacity(&self) -> usize {
        self.past + self.future + 1
    }

    /// Frames held, output or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Frames waiting to be output.
    pub fn pending(&self) -> usize {
        self.slots.len() - self.centre
    }

    pub fn push(&mut self, mut frame: Box<WorkFrame>, stats: FrameStats, starts_shot: bool, cut_score: f32, tag: T) {
        // A pooled frame may still carry the motion of its last trip through the window.
        frame.motion.clear();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            frame,
            stats,
            seq,
            starts_shot: starts_shot || seq == 0,
            cut_score,
            tag: Some(tag),
        });
    }

    /// The last two frames pushed, older first, when they are in the same shot: the pair whose
    /// motion is estimated as the newer one arrives.
    pub fn newest_pair_mut(&mut self) -> Option<(&mut Slot<T>, &mut Slot<T>)> {
        let n = self.slots.len();
        if n < 2 || self.slots[n - 1].starts_shot {
            return None;
        }
        let (front, back) = self.slots.as_mut_slices();
        match back.len() {
            0 => match front {
                [.., older, newer] => Some((older, newer)),
                _ => None,
            },
            1 => Some((front.last_mut()?, &mut back[0])),
            _ => match back {
                [.., older, newer] => Some((older, newer)),
                _ => None,
            },
        }
    }

    /// Whether the next frame has all its future neighbours (or `draining` and there is one).
    pub fn is_ready(&self, draining: bool) -> bool {
        self.ready_with(self.pending(), draining)
    }

    /// Whether [`Self::is_ready`] (not draining) will hold right after the next
    /// [`Self::push`]: a push adds one pending frame and takes none.
    pub fn ready_after_push(&self) -> bool {
        self.ready_with(self.pending() + 1, false)
    }

    fn ready_with(&self, pending: usize, draining: bool) -> bool {
        if draining {
            pending > 0
        } else {
            pending > self.future
        }
    }

    /// The frame to output next. Panics if nothing is pending: check [`Self::is_ready`].
    pub fn centre(&self) -> &Slot<T> {
        &self.slots[self.centre]
    }

    /// The neighbour `offset` frames from the centre, if it is in the window and in the same shot.
    pub fn neighbour(&self, offset: isize) -> Option<&Slot<T>> {
        let index = self.centre as isize + offset;
        if index < 0 || index as usize >= self.slots.len() {
            return None;
        }
        let index = index as usize;
        let (lo, hi) = if index < self.centre {
            (index + 1, self.centre)
        } else {
            (self.centre + 1, index)
        };
        // A shot boundary strictly after the older frame and up to the newer one separates them.
        if (lo..=hi).any(|i| self.slots[i].starts_shot) {
            return None;
        }
        Some(&self.slots[index])
    }

    /// Marks the centre frame as output and returns its tag. Frames no longer needed as past
    /// neighbours are moved into `evicted`, for their pool.
    pub fn advance(&mut self, evicted: &mut Vec<Box<WorkFrame>>) -> Option<T> {
        let tag = self.slots.get_mut(self.centre)?.tag.take();
        self.centre += 1;
        while self.centre > self.past {
            if let Some(slot) = self.slots.pop_front() {
                evicted.push(slot.frame);
            }
            self.centre -= 1;
        }
        tag
    }

    /// Forgets everything (flush, seek, caps change). Pending tags are dropped; all frames go to
    /// `evicted`.
    pub fn clear(&mut self, evicted: &mut Vec<Box<WorkFrame>>) {
        evicted.extend(self.slots.drain(..).map(|s| s.frame));
        self.centre = 0;
        self.next_seq = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Chroma, Geometry};

    fn frame() -> Box<WorkFrame> {
        Box::new(WorkFrame::new(Geometry {
            width: 1,
            height: 1,
            chroma: Chroma::None,
        }))
    }

    #[test]
    fn outputs_after_future_frames_and_evicts_after_past() {
        let mut w = TemporalWindow::new(2, 1);
        let mut evicted = Vec::new();
        w.push(frame(), FrameStats::default(), false, 0.0, 0);
        assert!(!w.is_ready(false));
        w.push(frame(), FrameStats::default(), false, 0.0, 1);
        assert!(w.is_ready(false));
        assert_eq!(w.advance(&mut evicted), Some(0));
        for i in 2..6 {
            w.push(frame(), FrameStats::default(), false, 0.0, i);
            assert_eq!(w.advance(&mut evicted), Some(i - 1));
        }
        assert_eq!(w.len(), 3, "past 2 + pending 1");
        assert_eq!(evicted.len(), 3);
        assert!(w.is_ready(true));
        assert_eq!(w.advance(&mut evicted), Some(5));
        assert!(!w.is_ready(true));
    }

    #[test]
    fn neighbours_stop_at_shot_boundaries() {
        let mut w = TemporalWindow::new(2, 2);
        for i in 0..5 {
            w.push(frame(), FrameStats::default(), i == 3, 0.0, i);
        }
        let mut evicted = Vec::new();
        w.advance(&mut evicted);
        w.advance(&mut evicted);
        // Centre is frame 2: frame 3 starts a new shot.
        assert_eq!(w.centre().seq, 2);
        assert!(w.neighbour(-1).is_some());
        assert!(w.neighbour(-2).is_some());
        assert!(w.neighbour(1).is_none());
        assert!(w.neighbour(2).is_none());
        w.advance(&mut evicted);
        // Centre is frame 3, the first of its shot.
        assert!(w.neighbour(-1).is_none());
        assert!(w.neighbour(1).is_some());
    }

    #[test]
    fn the_newest_pair_is_the_last_two_frames_of_one_shot() {
        let mut w = TemporalWindow::new(1, 1);
        assert!(w.newest_pair_mut().is_none());
        w.push(frame(), FrameStats::default(), false, 0.0, 0);
        assert!(w.newest_pair_mut().is_none(), "one frame is no pair");
        let mut evicted = Vec::new();
        // Enough frames that the ring wraps round, so both halves of its storage are exercised.
        for i in 1..9 {
            w.push(frame(), FrameStats::default(), i == 5, 0.0, i);
            match w.newest_pair_mut() {
                Some((older, newer)) => {
                    assert_ne!(i, 5, "a cut starts no pair");
                    assert_eq!((older.seq, newer.seq), (i - 1, i));
                }
                None => assert_eq!(i, 5),
            }
            w.advance(&mut evicted);
        }
    }

    #[test]
    fn clear_returns_every_frame() {
        let mut w = TemporalWindow::new(1, 1);
        for i in 0..3 {
            w.push(frame(), FrameStats::default(), false, 0.0, i);
        }
        let mut evicted = Vec::new();
        w.clear(&mut evicted);
        assert_eq!(evicted.len(), 3);
        assert!(w.is_empty());
    }
}
