//! The GPU-resident prior (`engines::gpu`) against the CPU prior on the tiny bundle: the same frames, packed
//! formats in and out, the similarity filter and the cache across frames. Needs a GPU and onnxruntime-gpu; without
//! them only the error path runs here.

#![cfg(feature = "cuda")]

mod common;

use common::{bundle, require_onnxruntime};
use engines::gpu::GpuPrior;
use engines::{Device, DiffusionPrior, PriorConfig, StreamParams};
use kernels::cuda::format::concat_planes;
use kernels::formats::{pack, unpack, OwnedImage, PixelFormat};
use kernels::WorkFrame;

fn config(device: Device) -> PriorConfig {
    let mut c = PriorConfig::new(bundle("tiny-turbo"));
    c.device = device;
    c.params = StreamParams {
        tile_overlap: 16,
        ssf_threshold: 0.9,
        ssf_max_skip: 2,
        ..StreamParams::default()
    };
    c
}

#[test]
fn without_cuda_the_gpu_prior_is_a_clear_error_not_a_panic() {
    if kernels::cuda::available().is_ok() {
        eprintln!("CUDA is present: the GPU tests below cover this machine");
        return;
    }
    let err = GpuPrior::new(config(Device::Cuda), 0).err().expect("no CUDA here");
    let message = err.to_string();
    assert!(message.contains("CUDA is not available"), "{message}");
}

/// A frame of `format`: a pattern that moves from frame 3 on (frames 0-2 are the same picture, for the filter).
fn frame(format: PixelFormat, w: usize, h: usize, index: usize) -> OwnedImage {
    let phase = index.saturating_sub(2) * 3;
    let mut work = WorkFrame::new(format.geometry(w, h));
    for (i, v) in work.luma.data.iter_mut().enumerate() {
        let (x, y) = (i % w, i / w);
        *v = 0.5 + 0.35 * (((x + phase) as f32) * 0.11).sin() * ((y as f32) * 0.07).cos();
    }
    for (c, plane) in work.chroma.iter_mut().enumerate() {
        for (i, v) in plane.data.iter_mut().enumerate() {
            *v = 0.5 + 0.08 * (((i + 5 * c + phase) as f32) * 0.05).sin();
        }
    }
    let mut img = OwnedImage::new(format, w, h, 0);
    pack(format, &work, &mut img.plane_muts()).unwrap();
    img
}

#[test]
#[ignore = "needs a CUDA GPU and onnxruntime-gpu"]
fn the_gpu_prior_gives_the_cpu_priors_frames() {
    require_onnxruntime();
    for format in [PixelFormat::I420, PixelFormat::Rgba, PixelFormat::Gray8] {
        let (w, h) = (100, 72);
        let mut gpu = GpuPrior::new(config(Device::Cuda), 0).unwrap();
        let mut cpu = DiffusionPrior::new(config(Device::Cpu)).unwrap();
        let mut gpu_out = Vec::new();
        let mut cpu_out = Vec::new();
        for i in 0..7 {
            let img = frame(format, w, h, i);
            let (bytes, layout) = concat_planes(&img);
            let mut out = vec![0u8; bytes.len()];
            if let Some(seq) = gpu.process(&layout, &bytes, i == 0, &mut out).unwrap() {
                gpu_out.push((seq, out.clone()));
            }
            let mut work = WorkFrame::new(format.geometry(w, h));
            unpack(format, w, h, &img.plane_refs(), &mut work).unwrap();
            let mut restored = work.clone();
            cpu.process(&work, &mut restored, i == 0).unwrap().unwrap();
            let mut packed = img.clone();
            pack(format, &restored, &mut packed.plane_muts()).unwrap();
            cpu_out.push(concat_planes(&packed).0);
        }
        let mut out = vec![0u8; cpu_out[0].len()];
        gpu.drain(&mut out, |seq, bytes| gpu_out.push((seq, bytes.to_vec())))
            .unwrap();
        assert_eq!(gpu_out.len(), 7, "{format:?}: N in = N out");
        assert_eq!(
            gpu.stats().frames_skipped,
            cpu.stats().frames_skipped,
            "{format:?}: the same skips"
        );
        assert!(
            gpu.stats().frames_skipped > 0,
            "the still frames must exercise the filter"
        );
        for ((seq, g), c) in gpu_out.iter().zip(&cpu_out) {
            let worst = g.iter().zip(c).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(
                worst <= 2,
                "{format:?} frame {seq}: GPU and CPU differ by {worst} codes"
            );
        }
    }
}
