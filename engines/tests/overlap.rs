//! The overlapped prior (pre-processing, inference and post-processing on three threads) gives the same frames as the
//! in-line one, in the same order, through similarity-filter skips, cuts, live parameter changes, reset and drain.

mod common;

use common::{bundle, require_onnxruntime};
use engines::{Device, DiffusionPrior, PriorConfig, RgbImage, StreamParams};
use kernels::{Chroma, Geometry, WorkFrame};

fn prior(name: &str, params: &StreamParams, overlap: bool) -> DiffusionPrior {
    require_onnxruntime();
    let mut config = PriorConfig::new(bundle(name));
    config.device = Device::Cpu;
    config.params = params.clone();
    config.overlap = overlap;
    config.intra_threads = 1;
    DiffusionPrior::new(config).unwrap()
}

/// A scene that holds still for a few frames (so the filter skips), moves, and cuts to another one.
fn scene(w: usize, h: usize, index: usize) -> RgbImage {
    let phase = if index < 4 { 0 } else { index };
    let cut = if index >= 9 { 1.7 } else { 0.0 };
    let data = (0..3 * w * h)
        .map(|i| {
            let (c, x, y) = (i / (w * h), i % w, (i / w) % h);
            0.5 + 0.3 * (((x + phase) as f32 * 0.3 + y as f32 * 0.2 + c as f32 + cut).sin())
        })
        .collect();
    RgbImage::from_planar(w, h, data)
}

/// Everything that comes out, in order: (seq, skipped, pixels).
type Outputs = Vec<(u64, bool, Vec<f32>)>;

fn collect(p: &mut DiffusionPrior, out: &mut Outputs) {
    while let Some((r, image)) = p.pop_rgb() {
        out.push((r.seq, r.skipped, image.data));
    }
}

/// Pushes 14 frames with a parameter change after frame 6 and a reset after frame 10, then drains.
fn script(name: &str, params: &StreamParams, changed: &StreamParams, overlap: bool) -> Outputs {
    let mut p = prior(name, params, overlap);
    assert_eq!(p.is_overlapped(), overlap);
    let mut out = Vec::new();
    for i in 0..14 {
        p.push_rgb(scene(72, 40, i), i == 9).unwrap();
        collect(&mut p, &mut out);
        if i == 6 {
            p.update(changed.clone()).unwrap();
        }
        if i == 10 {
            // What was dropped depends on timing with overlap; what comes after must not.
            p.reset();
            out.push((u64::MAX, false, Vec::new()));
        }
    }
    p.drain().unwrap();
    collect(&mut p, &mut out);
    assert_eq!(p.pending(), 0);
    out
}

/// The frames after the reset marker, and those before it that both runs let out before the reset.
fn compare(inline: &Outputs, overlapped: &Outputs) {
    let split = |o: &Outputs| {
        let at = o.iter().position(|(s, _, _)| *s == u64::MAX).expect("reset marker");
        (o[..at].to_vec(), o[at + 1..].to_vec())
    };
    let (before_a, after_a) = split(inline);
    let (before_b, after_b) = split(overlapped);
    assert!(!after_a.is_empty());
    assert_eq!(after_a, after_b, "frames after the reset differ");
    // Overlap only delays frames: what it let out before the reset is a prefix of what in-line let out.
    assert!(before_b.len() <= before_a.len());
    assert_eq!(before_a[..before_b.len()], before_b[..]);
    assert!(
        inline.iter().any(|(_, skipped, _)| *skipped),
        "the script must exercise the filter"
    );
}

#[test]
fn overlapped_turbo_matches_in_line() {
    let params = StreamParams {
        tile_overlap: 16,
        ssf_threshold: 0.9,
        ssf_max_skip: 2,
        ..Default::default()
    };
    let changed = StreamParams {
        strength: 0.7,
        colour_fix_sigma: 3.0,
        ..params.clone()
    };
    compare(
        &script("tiny-turbo", &params, &changed, false),
        &script("tiny-turbo", &params, &changed, true),
    );
}

#[test]
fn overlapped_lcm_stream_batch_matches_in_line() {
    let params = StreamParams {
        steps: 3,
        tile_overlap: 16,
        ssf_threshold: 0.9,
        ssf_max_skip: 2,
        ..Default::default()
    };
    let changed = StreamParams {
        steps: 2,
        ..params.clone()
    };
    compare(
        &script("tiny-lcm", &params, &changed, false),
        &script("tiny-lcm", &params, &changed, true),
    );
}

#[test]
fn overlapped_process_waits_for_its_frame_and_keeps_geometry() {
    let params = StreamParams {
        tile_overlap: 16,
        ..Default::default()
    };
    let mut p = prior("tiny-turbo", &params, true);
    let g = Geometry {
        width: 37,
        height: 23,
        chroma: Chroma::Subsampled { sx: 2, sy: 2 },
    };
    let mut frame = WorkFrame::new(g);
    for (i, v) in frame.luma.data.iter_mut().enumerate() {
        *v = (i % 17) as f32 / 17.0;
    }
    frame.chroma[0].data.fill(0.45);
    frame.chroma[1].data.fill(0.55);
    let mut out = WorkFrame::new(g);
    for i in 0..5 {
        let restored = p
            .process(&frame, &mut out, i == 0)
            .unwrap()
            .expect("no latency: the frame is ready");
        assert_eq!(restored.seq, i);
        assert_eq!(out.geometry, g);
    }
    assert!(p.pop(&mut out).is_none());
    assert_eq!(p.stats().frames_inferred + p.stats().frames_skipped, 5);
}

#[test]
fn overlapped_push_is_bounded() {
    let params = StreamParams {
        tile_overlap: 16,
        ssf_max_skip: 0,
        ..Default::default()
    };
    let mut p = prior("tiny-turbo", &params, true);
    let cap = p.max_in_flight();
    // Nothing is popped: push must wait for the threads rather than let frames pile up.
    for i in 0..3 * cap {
        p.push_rgb(scene(64, 64, i), i == 0).unwrap();
        // At most `cap` frames are inside: the others have been through the UNet (one call each for turbo).
        assert!(
            p.stats().unet_calls as usize + cap > i,
            "frame {i}: more than {cap} in flight"
        );
    }
    p.drain().unwrap();
    let mut out = Vec::new();
    collect(&mut p, &mut out);
    assert_eq!(out.len(), 3 * cap);
    assert!(out.iter().enumerate().all(|(i, (seq, _, _))| *seq == i as u64));
}
