//! Behaviour of the prior on the tiny bundles: determinism, the similarity filter, the stream batch, reset.

mod common;

use common::{bundle, require_onnxruntime};
use engines::{Device, DiffusionPrior, PriorConfig, RgbImage, StreamParams};

fn prior(name: &str, params: StreamParams) -> DiffusionPrior {
    require_onnxruntime();
    let mut config = PriorConfig::new(bundle(name));
    config.device = Device::Cpu;
    config.params = params;
    DiffusionPrior::new(config).unwrap()
}

fn pattern(w: usize, h: usize, phase: usize) -> RgbImage {
    let data = (0..3 * w * h)
        .map(|i| {
            let (c, x, y) = (i / (w * h), i % w, (i / w) % h);
            0.5 + 0.3 * (((x + phase) as f32 * 0.3 + y as f32 * 0.2 + c as f32).sin())
        })
        .collect();
    RgbImage::from_planar(w, h, data)
}

fn noise_frame(w: usize, h: usize, seed: u64) -> RgbImage {
    let data = engines::noise::gaussian(seed, 99, 3 * w * h)
        .into_iter()
        .map(|v| (0.5 + 0.25 * v).clamp(0.0, 1.0))
        .collect();
    RgbImage::from_planar(w, h, data)
}

fn run(p: &mut DiffusionPrior, frames: &[RgbImage]) -> Vec<(engines::Restored, RgbImage)> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        p.push_rgb(f.clone(), i == 0).unwrap();
        while let Some(o) = p.pop_rgb() {
            out.push(o);
        }
    }
    p.drain().unwrap();
    while let Some(o) = p.pop_rgb() {
        out.push(o);
    }
    out
}

#[test]
fn same_seed_same_output_other_seed_other_output() {
    let params = StreamParams {
        tile_overlap: 16,
        ..StreamParams::default()
    };
    let frames: Vec<RgbImage> = (0..3).map(|i| pattern(70, 50, i * 5)).collect();
    let a = run(&mut prior("tiny-turbo", params.clone()), &frames);
    let b = run(&mut prior("tiny-turbo", params.clone()), &frames);
    assert_eq!(a.len(), 3);
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x.data, y.data, "bit-identical with the same seed");
    }
    let c = run(&mut prior("tiny-turbo", StreamParams { seed: 1, ..params }), &frames);
    assert!(
        common::max_abs_diff(&a[0].1.data, &c[0].1.data) > 1e-3,
        "another seed, other noise"
    );
}

#[test]
fn similarity_filter_skips_a_static_scene_and_not_noise() {
    let params = StreamParams {
        ssf_threshold: 0.9,
        ssf_max_skip: 3,
        tile_overlap: 16,
        ..StreamParams::default()
    };
    let still = vec![pattern(64, 48, 0); 12];
    let mut p = prior("tiny-turbo", params.clone());
    let out = run(&mut p, &still);
    let skipped = out.iter().filter(|(r, _)| r.skipped).count();
    assert_eq!(out.len(), 12);
    assert_eq!(
        skipped, 9,
        "identical frames: skipped up to ssf-max-skip in a row (3 of every 4)"
    );
    assert_eq!((p.stats().frames_inferred, p.stats().frames_skipped), (3, 9));
    // A skipped frame reuses the restored detail: with the same input it is the same picture.
    let mean_diff: f32 = out[0]
        .1
        .data
        .iter()
        .zip(&out[1].1.data)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / out[0].1.data.len() as f32;
    assert!(mean_diff < 1e-6, "mean |diff| {mean_diff}");

    let noisy: Vec<RgbImage> = (0..12).map(|i| noise_frame(64, 48, i)).collect();
    let mut p = prior("tiny-turbo", params);
    let out = run(&mut p, &noisy);
    assert_eq!(
        out.iter().filter(|(r, _)| r.skipped).count(),
        0,
        "independent noise frames are never similar"
    );
}

#[test]
fn a_skipped_frame_follows_a_fade() {
    let params = StreamParams {
        ssf_threshold: 0.5,
        ssf_max_skip: 5,
        tile_overlap: 16,
        temporal_blend: 0.0,
        colour_fix_sigma: 4.0,
        ..StreamParams::default()
    };
    let base = pattern(64, 48, 0);
    let mut darker = base.clone();
    for v in &mut darker.data {
        *v *= 0.9;
    }
    let mut p = prior("tiny-turbo", params);
    let out = run(&mut p, &[base.clone(), darker.clone()]);
    assert!(out[1].0.skipped, "a fade is similar enough to skip at threshold 0.5");
    let mean = |img: &RgbImage| img.data.iter().sum::<f32>() / img.data.len() as f32;
    // The skipped frame took this frame's low frequencies: it is darker like its input, not frozen.
    assert!((mean(&out[1].1) - mean(&darker)).abs() < 0.02);
    assert!(mean(&out[0].1) - mean(&out[1].1) > 0.03);
}

#[test]
fn stream_batch_keeps_order_latency_and_count() {
    let params = StreamParams {
        steps: 4,
        strength: 1.0,
        tile_overlap: 16,
        ssf_max_skip: 0,
        ..StreamParams::default()
    };
    let mut p = prior("tiny-lcm", params);
    assert_eq!(p.timesteps(), &[999, 759, 499, 259]);
    assert_eq!(p.latency_frames(), 3);
    let frames: Vec<RgbImage> = (0..9).map(|i| pattern(50, 40, i)).collect();
    let mut seqs = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        p.push_rgb(f.clone(), i == 0).unwrap();
        while let Some((r, _)) = p.pop_rgb() {
            seqs.push(r.seq);
        }
        assert_eq!(seqs.len(), (i + 1).saturating_sub(3));
    }
    p.drain().unwrap();
    while let Some((r, _)) = p.pop_rgb() {
        seqs.push(r.seq);
    }
    assert_eq!(seqs, (0..9).collect::<Vec<u64>>());
}

#[test]
fn reset_drops_frames_in_flight_and_changing_steps_drains_first() {
    let params = StreamParams {
        steps: 3,
        tile_overlap: 16,
        ssf_max_skip: 0,
        ..StreamParams::default()
    };
    let mut p = prior("tiny-lcm", params.clone());
    for i in 0..2 {
        p.push_rgb(pattern(40, 40, i), i == 0).unwrap();
    }
    assert!(p.pop_rgb().is_none());
    assert_eq!(p.reset(), 2);
    assert_eq!(p.pending(), 0);
    p.push_rgb(pattern(40, 40, 0), true).unwrap();
    p.update(StreamParams { steps: 1, ..params }).unwrap();
    assert_eq!(p.latency_frames(), 0);
    assert!(p.pop_rgb().is_some(), "the frame in flight was drained by the change");
    p.push_rgb(pattern(40, 40, 1), false).unwrap();
    assert!(p.pop_rgb().is_some());
}

#[test]
fn a_float16_bundle_runs_and_stays_within_half_precision_of_float32() {
    // tiny-turbo-fp16 is tiny-turbo (same seed) exported with --fp16: the same models in half precision.
    let params = StreamParams {
        tile_overlap: 16,
        ssf_max_skip: 0,
        ..StreamParams::default()
    };
    let frames: Vec<RgbImage> = (0..3).map(|i| pattern(80, 48, 3 * i)).collect();
    let full = run(&mut prior("tiny-turbo", params.clone()), &frames);
    let half = run(&mut prior("tiny-turbo-fp16", params), &frames);
    assert_eq!(full.len(), half.len());
    for ((_, a), (_, b)) in full.iter().zip(&half) {
        let worst = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.03, "float16 differs from float32 by {worst}");
        assert!(a.data != b.data, "the float16 bundle must really run in half precision");
    }
}
