//! `oldfilmrestore` with a diffusion engine bundle: the committed fixtures on ONNX Runtime's
//! CPU provider (onnxruntime from pip, found as `engines` documents), and the failure modes.

use gst::prelude::*;
use kernels::PixelFormat;
use oldfilm_tests::*;

fn fixture(name: &str) -> String {
    format!("{}/../engines/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

const CLASSIC_OFF: [(&str, &str); 4] = [
    ("deflicker", "false"),
    ("blotches", "false"),
    ("scratches", "false"),
    ("grain", "false"),
];

fn run(
    props: &[(&str, &str)],
    format: PixelFormat,
    w: usize,
    h: usize,
    n: u64,
) -> (Vec<gst::Buffer>, Result<Vec<gst::Buffer>, gst::FlowError>) {
    let mut harness = harness("oldfilmrestore", props);
    harness.set_src_caps(caps(format, w as u32, h as u32));
    let inputs: Vec<_> = (0..n).map(|i| timed_buffer(format, w, h, i)).collect();
    for b in &inputs {
        if let Err(e) = harness.push(b.clone()) {
            return (inputs, Err(e));
        }
    }
    assert!(harness.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut harness);
    (inputs, Ok(out))
}

#[test]
fn an_identity_engine_gives_the_frames_back_through_tiling_at_odd_sizes() {
    let engine = fixture("identity-image");
    for format in [PixelFormat::Gray8, PixelFormat::I420, PixelFormat::Rgb] {
        let mut props = CLASSIC_OFF.to_vec();
        // No noise, no skipping, no blending across frames: the engine must be exactly invertible.
        props.extend([
            ("engine", engine.as_str()),
            ("device", "cpu"),
            ("strength", "0"),
            ("ssf-max-skip", "0"),
            ("temporal-blend", "0"),
        ]);
        let (inputs, outputs) = run(&props, format, 37, 29, 4);
        let outputs = outputs.expect("identity engine runs");
        assert_eq!(outputs.len(), inputs.len(), "{format:?}: frames in != frames out");
        for (a, b) in inputs.iter().zip(&outputs) {
            assert_eq!(a.pts(), b.pts());
            let (fa, fb) = (
                frame_from_buffer(format, 37, 29, a),
                frame_from_buffer(format, 37, 29, b),
            );
            let worst = fa
                .luma
                .data
                .iter()
                .zip(&fb.luma.data)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1.5 / 255.0,
                "{format:?}: identity engine changed luma by {worst}"
            );
        }
    }
}

#[test]
fn the_tiny_turbo_engine_restores_every_frame_on_the_cpu() {
    let engine = fixture("tiny-turbo");
    let props = [("engine", engine.as_str()), ("device", "cpu")];
    let (inputs, outputs) = run(&props, PixelFormat::I420, 64, 48, 6);
    let outputs = outputs.expect("tiny turbo runs");
    assert_eq!(outputs.len(), inputs.len());
    assert!(inputs.iter().zip(&outputs).all(|(a, b)| a.pts() == b.pts()));
}

#[test]
fn a_missing_engine_is_an_error_unless_fallback_is_classic() {
    let (_, outputs) = run(&[("engine", "/nonexistent/bundle")], PixelFormat::Gray8, 16, 16, 3);
    assert!(outputs.is_err(), "a missing engine must stop the stream");
    let props = [("engine", "/nonexistent/bundle"), ("fallback", "classic")];
    let (inputs, outputs) = run(&props, PixelFormat::Gray8, 16, 16, 3);
    assert_eq!(outputs.expect("classic fallback runs").len(), inputs.len());
}

#[test]
fn stats_report_inferred_and_skipped_frames_and_the_provider() {
    let engine = fixture("tiny-lcm");
    let mut h = harness(
        "oldfilmrestore",
        &[
            ("engine", engine.as_str()),
            ("device", "cpu"),
            ("steps", "2"),
            ("ssf-threshold", "0.5"),
            ("ssf-max-skip", "3"),
        ],
    );
    let bus = gst::Bus::new();
    h.element().expect("element").set_bus(Some(&bus));
    h.set_src_caps(caps(PixelFormat::Gray8, 48, 40));
    // One still picture: the similarity filter skips most frames, never more than 3 in a row.
    let still = buffer_from_frame(PixelFormat::Gray8, &textured_frame(PixelFormat::Gray8, 48, 40, 7));
    for i in 0..12 {
        let mut b = still.copy();
        stamp(b.get_mut().unwrap(), i);
        h.push(b).expect("frame accepted");
    }
    assert!(h.push_event(gst::event::Eos::new()));
    assert_eq!(pull_all(&mut h).len(), 12, "N in = N out with the stream batch drained");
    let last = std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e.structure().map(|s| s.to_owned()),
            _ => None,
        })
        .filter(|s| s.name() == "oldfilmrestore-stats")
        .last()
        .expect("a stats message at EOS");
    let inferred = last.get::<u64>("frames-inferred").unwrap();
    let skipped = last.get::<u64>("frames-skipped").unwrap();
    assert_eq!(inferred + skipped, 12);
    assert!(skipped >= 6 && inferred >= 3, "{inferred} inferred, {skipped} skipped");
    assert_eq!(last.get::<&str>("provider").unwrap(), "CPUExecutionProvider");
    assert!(last.get::<f64>("inference-ms").unwrap() > 0.0);
    assert!(last.get::<u64>("unet-calls").unwrap() >= inferred);
}

/// Element messages of one kind (warnings, stats) that reached the bus so far.
fn bus_texts(bus: &gst::Bus) -> Vec<String> {
    std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(format!("warning: {}", w.error())),
            gst::MessageView::Error(e) => Some(format!("error: {}", e.error())),
            _ => None,
        })
        .collect()
}

#[test]
fn prior_parameters_change_while_playing() {
    let engine = fixture("tiny-lcm");
    let mut h = harness(
        "oldfilmrestore",
        &[
            ("engine", engine.as_str()),
            ("device", "cpu"),
            ("steps", "1"),
            ("ssf-max-skip", "0"),
            ("temporal-blend", "0"),
        ],
    );
    let bus = gst::Bus::new();
    let element = h.element().expect("element");
    element.set_bus(Some(&bus));
    h.set_src_caps(caps(PixelFormat::Gray8, 40, 32));
    // The same picture every frame: with no skipping and no cache, equal parameters give equal frames.
    let still = buffer_from_frame(PixelFormat::Gray8, &textured_frame(PixelFormat::Gray8, 40, 32, 3));
    let push = |h: &mut gst_check::Harness, i: u64| {
        let mut b = still.copy();
        stamp(b.get_mut().unwrap(), i);
        h.push(b).expect("frame accepted");
    };
    // Push until frame 0 has come out: it went through the prior with the first strength.
    let mut pushed = 0;
    let mut early = Vec::new();
    while early.is_empty() && pushed < 12 {
        push(&mut h, pushed);
        pushed += 1;
        early.extend(pull_all(&mut h));
    }
    assert!(
        !early.is_empty() && pushed < 12,
        "frames come out while the stream runs"
    );
    element.set_property("strength", 0.9f64);
    // More steps would hold more frames than the worker was sized for: refused with a warning.
    element.set_property("steps", 8u32);
    for i in pushed..pushed + 8 {
        push(&mut h, i);
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out: Vec<Vec<u8>> = early
        .into_iter()
        .chain(pull_all(&mut h))
        .map(|b| b.map_readable().unwrap().as_slice().to_vec())
        .collect();
    assert_eq!(out.len() as u64, pushed + 8);
    // The change reaches the prior with the next frame the worker hands it (the worker runs behind the streaming
    // thread): the output switches once, from one picture to another, and never back.
    let messages = bus_texts(&bus);
    let switches = out.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "one switch from the old strength to the new: {messages:?}");
    assert!(out[0] != out[out.len() - 1]);
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("warning: diffusion engine parameters not applied")),
        "{messages:?}"
    );
    assert!(!messages.iter().any(|m| m.starts_with("error")), "{messages:?}");
}

#[test]
fn flush_and_a_new_segment_reset_the_engine_and_lose_nothing_after_them() {
    let engine = fixture("tiny-lcm");
    // Two steps: frames wait in the stream batch and in the overlapped queues when the flush comes.
    let mut h = harness(
        "oldfilmrestore",
        &[("engine", engine.as_str()), ("device", "cpu"), ("steps", "2")],
    );
    h.set_src_caps(caps(PixelFormat::I420, 48, 40));
    for i in 0..4 {
        h.push(timed_buffer(PixelFormat::I420, 48, 40, i)).unwrap();
    }
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let before_flush = pull_all(&mut h).len();
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    let inputs: Vec<_> = (10..16).map(|i| timed_buffer(PixelFormat::I420, 48, 40, i)).collect();
    for b in &inputs {
        h.push(b.clone()).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    assert!(before_flush < 4, "a flush drops held frames");
    assert_eq!(out.len(), inputs.len(), "every frame after the flush comes out");
    for (a, b) in inputs.iter().zip(&out) {
        assert_eq!((a.pts(), a.duration(), a.offset()), (b.pts(), b.duration(), b.offset()));
    }
}

#[test]
fn a_caps_change_with_an_engine_drains_the_old_size_first() {
    let engine = fixture("tiny-turbo");
    let mut h = harness("oldfilmrestore", &[("engine", engine.as_str()), ("device", "cpu")]);
    h.set_src_caps(caps(PixelFormat::Gray8, 48, 40));
    for i in 0..3 {
        h.push(timed_buffer(PixelFormat::Gray8, 48, 40, i)).unwrap();
    }
    h.set_src_caps(caps(PixelFormat::Gray8, 70, 34));
    for i in 3..6 {
        h.push(timed_buffer(PixelFormat::Gray8, 70, 34, i)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    let sizes: Vec<usize> = out.iter().map(|b| b.size()).collect();
    assert_eq!(
        sizes,
        [vec![48 * 40; 3], vec![72 * 34; 3]].concat(),
        "old size drained, then the new one"
    );
    let pts: Vec<_> = out.iter().map(|b| b.pts()).collect();
    let want: Vec<_> = (0..6).map(|i| Some(gst::ClockTime::from_mseconds(40 * i))).collect();
    assert_eq!(pts, want);
}
