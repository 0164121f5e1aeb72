//! A bounded ring of slot indices handed round through channels: the host-side logic of the device frame ring
//! (`cuda::ring`), kept free of CUDA so it is tested everywhere.
//!
//! `slots` indices start on the free list. A producer [`SlotRing::acquire`]s one (blocking while every slot is in
//! flight: back-pressure instead of growth), fills it and [`SlotRing::submit`]s it, which gives it the next
//! sequence number; a consumer takes [`Ticket`]s back in submission order with [`SlotRing::next_done`] and
//! [`SlotRing::release`]s the slot. The channels hold at most `slots` indices, so no send ever blocks and nothing
//! is allocated after construction.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::Mutex;

/// A slot in flight and its place in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub slot: usize,
    pub seq: u64,
}

pub struct SlotRing {
    slots: usize,
    free: (Sender<usize>, Receiver<usize>),
    busy: (Sender<Ticket>, Receiver<Ticket>),
    /// Next sequence number; held while sending so sequence order is queue order with several producers.
    next_seq: Mutex<u64>,
}

impl SlotRing {
    pub fn new(slots: usize) -> SlotRing {
        assert!(slots > 0, "a ring needs at least one slot");
        let free = bounded(slots);
        for i in 0..slots {
            free.0.send(i).expect("room for every slot");
        }
        SlotRing {
            slots,
            free,
            busy: bounded(slots),
            next_seq: Mutex::new(0),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// A free slot, waiting while all are in flight.
    pub fn acquire(&self) -> usize {
        self.free.1.recv().expect("the ring owns a sender")
    }

    /// A free slot, or `None` when all are in flight.
    pub fn try_acquire(&self) -> Option<usize> {
        self.free.1.try_recv().ok()
    }

    /// Puts an acquired slot in flight with the next sequence number.
    pub fn submit(&self, slot: usize) -> Ticket {
        let mut seq = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = Ticket { slot, seq: *seq };
        *seq += 1;
        self.busy.0.send(ticket).expect("at most `slots` tickets in flight");
        ticket
    }

    /// The oldest slot in flight, waiting for one to be submitted.
    pub fn next_done(&self) -> Ticket {
        self.busy.1.recv().expect("the ring owns a sender")
    }

    /// The oldest slot in flight, or `None` when nothing is.
    pub fn try_next_done(&self) -> Option<Ticket> {
        self.busy.1.try_recv().ok()
    }

    /// Hands a slot back to the free list.
    pub fn release(&self, slot: usize) {
        debug_assert!(slot < self.slots);
        self.free.0.send(slot).expect("a slot is released once");
    }

    /// Slots submitted and not yet taken back.
    pub fn in_flight(&self) -> usize {
        self.busy.1.len()
    }

    /// Slots on the free list.
    pub fn free(&self) -> usize {
        self.free.1.len()
    }

    /// Takes back every slot in flight, oldest first (end of stream), calling `each` before releasing it.
    pub fn drain(&self, mut each: impl FnMut(Ticket)) {
        while let Some(t) = self.try_next_done() {
            each(t);
            self.release(t.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn tickets_come_back_in_submission_order() {
        let ring = SlotRing::new(3);
        let mut seen = Vec::new();
        for _ in 0..10 {
            if ring.free() == 0 {
                let t = ring.next_done();
                seen.push(t.seq);
                ring.release(t.slot);
            }
            let s = ring.acquire();
            ring.submit(s);
        }
        ring.drain(|t| seen.push(t.seq));
        assert_eq!(seen, (0..10).collect::<Vec<u64>>());
    }

    #[test]
    fn the_ring_is_bounded() {
        let ring = SlotRing::new(2);
        let a = ring.try_acquire().unwrap();
        let b = ring.try_acquire().unwrap();
        assert_ne!(a, b);
        assert_eq!(ring.try_acquire(), None);
        ring.submit(a);
        assert_eq!(ring.try_acquire(), None, "a slot in flight is not free");
        assert_eq!(ring.in_flight(), 1);
        ring.release(ring.next_done().slot);
        assert_eq!(ring.try_acquire(), Some(a));
    }

    #[test]
    fn acquire_blocks_until_a_slot_is_released() {
        let ring = Arc::new(SlotRing::new(1));
        let slot = ring.acquire();
        let got = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (ring, got) = (ring.clone(), got.clone());
            std::thread::spawn(move || {
                let s = ring.acquire();
                got.store(true, Ordering::SeqCst);
                s
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !got.load(Ordering::SeqCst),
            "acquire must wait while the only slot is taken"
        );
        ring.release(slot);
        assert_eq!(waiter.join().unwrap(), slot);
        assert!(got.load(Ordering::SeqCst));
    }

    #[test]
    fn n_frames_in_n_frames_out_in_order_across_threads_without_reusing_a_busy_slot() {
        const N: u64 = 2000;
        let ring = SlotRing::new(3);
        // What the producer wrote into each slot; the consumer must find its ticket's frame there.
        let payload: Vec<Mutex<u64>> = (0..3).map(|_| Mutex::new(u64::MAX)).collect();
        let received = std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..N {
                    let slot = ring.acquire();
                    *payload[slot].lock().unwrap() = i;
                    assert_eq!(ring.submit(slot).seq, i);
                }
            });
            let consumer = s.spawn(|| {
                let mut out = Vec::with_capacity(N as usize);
                for _ in 0..N {
                    let t = ring.next_done();
                    assert_eq!(
                        *payload[t.slot].lock().unwrap(),
                        t.seq,
                        "slot overwritten while in flight"
                    );
                    out.push(t.seq);
                    ring.release(t.slot);
                }
                out
            });
            consumer.join().unwrap()
        });
        assert_eq!(received, (0..N).collect::<Vec<u64>>());
        assert_eq!((ring.free(), ring.in_flight()), (3, 0));
    }

    #[test]
    fn drain_returns_everything_in_flight_and_frees_it() {
        let ring = SlotRing::new(4);
        for _ in 0..3 {
            let s = ring.acquire();
            ring.submit(s);
        }
        let mut seqs = Vec::new();
        ring.drain(|t| seqs.push(t.seq));
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!((ring.free(), ring.in_flight()), (4, 0));
    }
}
