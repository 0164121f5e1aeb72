//! The elements on whole clips: `oldfilmdegrade` is deterministic and marks its damage, and
//! `oldfilmrestore` measurably repairs it while leaving clean footage nearly untouched.

use kernels::metrics::{psnr, ScoreAccumulator, ScoreReport};
use kernels::{PixelFormat, Plane, WorkFrame};
use oldfilm_tests::*;

const W: usize = 192;
const H: usize = 144;
const FRAMES: u64 = 24;

/// A clean synthetic shot: a textured background panning one pixel per frame, a bright disc
/// crossing it, and a cut to a different scene two thirds of the way through.
fn clean_clip(format: PixelFormat) -> Vec<gst::Buffer> {
    (0..FRAMES)
        .map(|t| {
            let mut f = WorkFrame::new(format.geometry(W, H));
            let cut = t >= 16;
            for y in 0..H {
                for x in 0..W {
                    let (xs, ys) = (x as f32 + t as f32, y as f32);
                    let v = if cut {
                        0.35 + 0.25 * (ys * 0.09).sin() * (xs * 0.05).cos()
                    } else {
                        0.45 + 0.2 * (xs * 0.13).sin() * (ys * 0.11).cos() + 0.1 * (xs * 0.031 + ys * 0.047).sin()
                    };
                    let (dx, dy) = (x as f32 - (20.0 + 5.0 * t as f32), y as f32 - 70.0);
                    f.luma.set(x, y, if dx * dx + dy * dy < 36.0 { 0.9 } else { v });
                }
            }
            let mut b = buffer_from_frame(format, &f);
            stamp(b.get_mut().unwrap(), t);
            b
        })
        .collect()
}

fn run(factory_props: &[(&str, &str)], factory: &str, inputs: &[gst::Buffer], format: PixelFormat) -> Vec<gst::Buffer> {
    let mut h = harness(factory, factory_props);
    h.set_src_caps(caps(format, W as u32, H as u32));
    for b in inputs {
        h.push(b.clone()).expect("push");
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    assert_eq!(out.len(), inputs.len(), "{factory}: frames in != frames out");
    out
}

fn luma(format: PixelFormat, b: &gst::Buffer) -> Plane {
    frame_from_buffer(format, W as u32, H as u32, b).luma
}

fn score(
    format: PixelFormat,
    out: &[gst::Buffer],
    reference: &[gst::Buffer],
    input: &[gst::Buffer],
    mask: Option<&[gst::Buffer]>,
) -> ScoreReport {
    let mut acc = ScoreAccumulator::new();
    for i in 0..out.len() {
        let m = mask.map(|m| luma(PixelFormat::Gray8, &m[i]));
        acc.push(
            &luma(format, &out[i]),
            Some(&luma(format, &reference[i])),
            Some(&luma(format, &input[i])),
            m.as_ref(),
        );
    }
    acc.report()
}

#[test]
fn degrade_is_bit_identical_for_a_seed_whatever_the_timestamps() {
    let clean = clean_clip(PixelFormat::I420);
    let first = run(&[("seed", "42")], "oldfilmdegrade", &clean, PixelFormat::I420);
    // Same frames with other timestamps and buffer flags.
    let retimed: Vec<_> = clean
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut b = b.copy();
            let r = b.get_mut().unwrap();
            r.set_pts(gst::ClockTime::from_seconds(100 + 7 * i as u64));
            r.set_duration(gst::ClockTime::from_mseconds(13));
            b
        })
        .collect();
    let second = run(&[("seed", "42")], "oldfilmdegrade", &retimed, PixelFormat::I420);
    let other = run(&[("seed", "43")], "oldfilmdegrade", &clean, PixelFormat::I420);
    for i in 0..first.len() {
        let (a, b, c) = (
            first[i].map_readable().unwrap(),
            second[i].map_readable().unwrap(),
            other[i].map_readable().unwrap(),
        );
        assert_eq!(a.as_slice(), b.as_slice(), "frame {i} differs between runs");
        assert_ne!(a.as_slice(), c.as_slice(), "frame {i} same for another seed");
    }
}

#[test]
fn degrade_mask_marks_blotches_and_scratches_only() {
    let clean = clean_clip(PixelFormat::Gray8);
    let mask = run(
        &[("seed", "5"), ("output", "mask")],
        "oldfilmdegrade",
        &clean,
        PixelFormat::Gray8,
    );
    let mut codes = std::collections::BTreeSet::new();
    for b in &mask {
        codes.extend(b.map_readable().unwrap().iter().copied());
    }
    assert!(
        codes.iter().all(|c| [0u8, 128, 255].contains(c)),
        "unexpected codes {codes:?}"
    );
    assert!(
        codes.contains(&255) && codes.contains(&128),
        "both kinds of damage present: {codes:?}"
    );
}

#[test]
fn deflicker_removes_most_flicker_and_keeps_a_clean_clip() {
    let clean = clean_clip(PixelFormat::Gray8);
    let only_flicker = [
        ("seed", "9"),
        ("blotches", "0"),
        ("scratches", "0"),
        ("grain", "0"),
        ("flicker", "1"),
    ];
    let flickering = run(&only_flicker, "oldfilmdegrade", &clean, PixelFormat::Gray8);
    let only_deflicker = [("blotches", "false"), ("scratches", "false"), ("grain", "false")];
    let restored = run(&only_deflicker, "oldfilmrestore", &flickering, PixelFormat::Gray8);
    let report = score(PixelFormat::Gray8, &restored, &clean, &flickering, None);
    let (out, input) = (
        report.flicker_vs_ref.unwrap(),
        score(PixelFormat::Gray8, &flickering, &clean, &flickering, None)
            .flicker_vs_ref
            .unwrap(),
    );
    assert!(out < 0.5 * input, "flicker vs reference {out:.2} (input {input:.2})");

    let untouched = run(&only_deflicker, "oldfilmrestore", &clean, PixelFormat::Gray8);
    let all: Vec<f64> = untouched
        .iter()
        .zip(&clean)
        .map(|(a, b)| psnr(&luma(PixelFormat::Gray8, a), &luma(PixelFormat::Gray8, b)))
        .collect();
    for p in all {
        assert!(p > 40.0, "clean clip changed: PSNR {p:.1} dB");
    }
}

#[test]
fn restoring_a_degraded_clip_improves_every_measure() {
    for format in [PixelFormat::Gray8, PixelFormat::I420] {
        let clean = clean_clip(format);
        let damage = [
            ("seed", "5"),
            ("blotches", "0.6"),
            ("scratches", "0.6"),
            ("flicker", "0.6"),
            ("grain", "0.4"),
        ];
        let degraded = run(&damage, "oldfilmdegrade", &clean, format);
        let mut mask_props = damage.to_vec();
        mask_props.push(("output", "mask"));
        let mask_native = run(&mask_props, "oldfilmdegrade", &clean, format);
        // The mask's luma as GRAY8 planes, whatever the format.
        let mask: Vec<gst::Buffer> = mask_native
            .iter()
            .map(|b| {
                let mut f = WorkFrame::new(PixelFormat::Gray8.geometry(W, H));
                f.luma = luma(format, b);
                buffer_from_frame(PixelFormat::Gray8, &f)
            })
            .collect();
        let restored = run(&[], "oldfilmrestore", &degraded, format);
        let r = score(format, &restored, &clean, &degraded, Some(&mask));
        let what = format!("{format:?}: {r:?}");
        assert!(
            r.psnr_y.unwrap() > r.psnr_input.unwrap() + 1.0,
            "PSNR did not improve: {what}"
        );
        assert!(r.ssim.unwrap() > r.ssim_input.unwrap(), "SSIM did not improve: {what}");
        assert!(r.blotch_error_ratio.unwrap() < 0.5, "blotches left: {what}");
        assert!(r.scratch_error_ratio.unwrap() < 0.9, "scratches left: {what}");
        assert!(
            r.flicker_vs_ref.unwrap()
                < 0.7
                    * score(format, &degraded, &clean, &degraded, None)
                        .flicker_vs_ref
                        .unwrap(),
            "flicker left: {what}"
        );
        assert!(r.sharpness_kept.unwrap() > 0.6, "picture smeared: {what}");
    }
}
