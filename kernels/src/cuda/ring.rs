//! The device frame ring: a fixed pool of slots, each with a pinned host staging buffer and a device buffer on the
//! way in and on the way out, handed round by [`crate::ring::SlotRing`]. Upload, compute and download run on
//! three streams with events between them, so the upload of frame n+1, the compute of frame n and the download of
//! frame n-1 overlap. Bounded (a full ring blocks [`DeviceRing::submit`]), and nothing is allocated after
//! [`DeviceRing::new`].
//!
//! [`DeviceRing`] is `Sync`: one thread submits while another pops. Each slot's buffers sit behind a mutex that is
//! never contended (the ring gives a slot to one stage at a time); the mutex only makes that visible to Rust.

use super::{CudaError, Gpu};
use crate::ring::{SlotRing, Ticket};
use cudarc::driver::sys::{CUevent_flags, CU_MEMHOSTALLOC_WRITECOMBINED};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use std::sync::{Arc, Mutex, MutexGuard};

struct Slot {
    host_in: Mutex<PinnedHostSlice<u8>>,
    dev_in: Mutex<CudaSlice<u8>>,
    dev_out: Mutex<CudaSlice<u8>>,
    host_out: Mutex<PinnedHostSlice<u8>>,
    uploaded: CudaEvent,
    computed: CudaEvent,
    downloaded: CudaEvent,
}

pub struct DeviceRing {
    ring: SlotRing,
    slots: Vec<Slot>,
    upload: Arc<CudaStream>,
    download: Arc<CudaStream>,
    in_bytes: usize,
    out_bytes: usize,
}

// One thread submits while another pops: checked at compile time.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<DeviceRing>();
    shareable::<Gpu>();
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DeviceRing {
    /// `slots` slots of `in_bytes` in and `out_bytes` out. Compute runs on `gpu.stream`; upload and download get
    /// streams of their own.
    pub fn new(gpu: &Gpu, slots: usize, in_bytes: usize, out_bytes: usize) -> Result<DeviceRing, CudaError> {
        let ctx = &gpu.ctx;
        let mut v = Vec::with_capacity(slots);
        for _ in 0..slots {
            // SAFETY: u8 has no invalid bit patterns; the buffers are written before they are read.
            // Write-combined memory is fast for the device to read and slow for the host to read: in only.
            let host_in = unsafe { ctx.alloc_pinned_with_flags::<u8>(in_bytes, CU_MEMHOSTALLOC_WRITECOMBINED) }?;
            // SAFETY: as above; cached (flags 0), since the host reads it.
            let host_out = unsafe { ctx.alloc_pinned_with_flags::<u8>(out_bytes, 0) }?;
            v.push(Slot {
                host_in: Mutex::new(host_in),
                dev_in: Mutex::new(gpu.stream.alloc_zeros(in_bytes)?),
                dev_out: Mutex::new(gpu.stream.alloc_zeros(out_bytes)?),
                host_out: Mutex::new(host_out),
                uploaded: ctx.new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))?,
                computed: ctx.new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))?,
                downloaded: ctx.new_event(Some(CUevent_flags::CU_EVENT_BLOCKING_SYNC))?,
            });
        }
        Ok(DeviceRing {
            ring: SlotRing::new(slots),
            slots: v,
            upload: ctx.new_stream()?,
            download: ctx.new_stream()?,
            in_bytes,
            out_bytes,
        })
    }

    pub fn slots(&self) -> usize {
        self.ring.slots()
    }

    pub fn in_flight(&self) -> usize {
        self.ring.in_flight()
    }

    /// Queues one frame: waits for a free slot, stages `input` in pinned memory, and enqueues its upload, `compute`
    /// (which must launch on `gpu.stream`, reading the slot's device input and writing its device output) and the
    /// download. Returns as soon as the work is queued.
    pub fn submit(
        &self,
        gpu: &Gpu,
        input: &[u8],
        compute: impl FnOnce(&CudaSlice<u8>, &mut CudaSlice<u8>) -> Result<(), CudaError>,
    ) -> Result<Ticket, CudaError> {
        if input.len() > self.in_bytes {
            return Err(CudaError::Shape(format!(
                "{} bytes in, the ring holds {}",
                input.len(),
                self.in_bytes
            )));
        }
        let i = self.ring.acquire();
        match self.enqueue(gpu, i, input, compute) {
            Ok(()) => Ok(self.ring.submit(i)),
            Err(e) => {
                self.ring.release(i);
                Err(e)
            }
        }
    }

    fn enqueue(
        &self,
        gpu: &Gpu,
        i: usize,
        input: &[u8],
        compute: impl FnOnce(&CudaSlice<u8>, &mut CudaSlice<u8>) -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        let s = &self.slots[i];
        let (mut host_in, mut dev_in, mut dev_out) = (lock(&s.host_in), lock(&s.dev_in), lock(&s.dev_out));
        // Waits (host side) for this buffer's previous upload, long finished: the slot was free.
        host_in.as_mut_slice()?[..input.len()].copy_from_slice(input);
        self.upload.memcpy_htod(&*host_in, &mut *dev_in)?;
        s.uploaded.record(&self.upload)?;
        gpu.stream.wait(&s.uploaded)?;
        compute(&dev_in, &mut dev_out)?;
        s.computed.record(&gpu.stream)?;
        self.download.wait(&s.computed)?;
        self.download.memcpy_dtoh(&*dev_out, &mut *lock(&s.host_out))?;
        s.downloaded.record(&self.download)?;
        Ok(())
    }

    /// Waits for the oldest frame in flight, copies its output into `out` and frees its slot. Blocks until a frame
    /// is submitted if none is in flight.
    pub fn pop(&self, out: &mut [u8]) -> Result<u64, CudaError> {
        let t = self.ring.next_done();
        let r = self.finish(t, out);
        self.ring.release(t.slot);
        r.map(|()| t.seq)
    }

    /// Every frame still in flight, oldest first (end of stream), each handed to `each` with its sequence number.
    pub fn drain(&self, out: &mut [u8], mut each: impl FnMut(u64, &[u8])) -> Result<(), CudaError> {
        let mut result = Ok(());
        self.ring.drain(|t| {
            if result.is_ok() {
                result = self.finish(t, out).map(|()| each(t.seq, out));
            }
        });
        result
    }

    fn finish(&self, t: Ticket, out: &mut [u8]) -> Result<(), CudaError> {
        let s = &self.slots[t.slot];
        s.downloaded.synchronize()?;
        let host_out = lock(&s.host_out);
        let n = out.len().min(self.out_bytes);
        out[..n].copy_from_slice(&host_out.as_slice()?[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::test_util::gpu;

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn frames_come_back_in_order_through_upload_copy_and_download() {
        let gpu = gpu();
        let ring = DeviceRing::new(&gpu, 3, 4096, 4096).unwrap();
        let frames = 50u64;
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..frames {
                    let input = vec![(i % 251) as u8; 4096];
                    ring.submit(&gpu, &input, |din, dout| Ok(gpu.stream.memcpy_dtod(din, dout)?))
                        .unwrap();
                }
            });
            let consumer = s.spawn(|| {
                let mut out = vec![0u8; 4096];
                (0..frames)
                    .map(|_| {
                        let seq = ring.pop(&mut out).unwrap();
                        assert!(
                            out.iter().all(|&b| b == (seq % 251) as u8),
                            "frame {seq} came back wrong"
                        );
                        seq
                    })
                    .collect::<Vec<u64>>()
            });
            consumer.join().unwrap()
        });
        assert_eq!(got, (0..frames).collect::<Vec<u64>>());
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn drain_returns_what_is_in_flight() {
        let gpu = gpu();
        let ring = DeviceRing::new(&gpu, 4, 16, 16).unwrap();
        for i in 0..3u8 {
            ring.submit(&gpu, &[i; 16], |din, dout| Ok(gpu.stream.memcpy_dtod(din, dout)?))
                .unwrap();
        }
        let mut seen = Vec::new();
        ring.drain(&mut [0u8; 16], |seq, out| seen.push((seq, out[0]))).unwrap();
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 2)]);
    }
}
