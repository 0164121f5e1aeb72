//! `oldfilmrestore` in the gstreamer-check Harness and in real pipelines: frame counts,
//! timestamps, formats and sizes, draining, flushing, renegotiation, latency, compare views,
//! bypass, bad input, and properties changed while playing.

use gst::prelude::*;
use kernels::PixelFormat;
use oldfilm_tests::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SIZES: [(usize, usize); 3] = [(1, 1), (2, 2), (321, 241)];

/// Every restoration stage switched off: the element must then be an exact round trip.
const STAGES_OFF: &[(&str, &str)] = &[
    ("deflicker", "false"),
    ("blotches", "false"),
    ("scratches", "false"),
    ("grain", "false"),
];

/// Pushes `n` frames and EOS, returns every output buffer.
fn run_frames(
    h: &mut gst_check::Harness,
    format: PixelFormat,
    w: usize,
    h_: usize,
    n: u64,
) -> (Vec<gst::Buffer>, Vec<gst::Buffer>) {
    h.set_src_caps(caps(format, w as u32, h_ as u32));
    let inputs: Vec<gst::Buffer> = (0..n).map(|i| timed_buffer(format, w, h_, i)).collect();
    for buffer in &inputs {
        h.push(buffer.clone()).expect("push accepted");
    }
    assert!(h.push_event(gst::event::Eos::new()));
    (inputs, pull_all(h))
}

fn assert_same_timing(inputs: &[gst::Buffer], outputs: &[gst::Buffer], what: &str) {
    assert_eq!(inputs.len(), outputs.len(), "{what}: frames in != frames out");
    for (i, (a, b)) in inputs.iter().zip(outputs).enumerate() {
        assert_eq!(a.pts(), b.pts(), "{what}: pts of frame {i}");
        assert_eq!(a.dts(), b.dts(), "{what}: dts of frame {i}");
        assert_eq!(a.duration(), b.duration(), "{what}: duration of frame {i}");
        assert_eq!(a.offset(), b.offset(), "{what}: offset of frame {i}");
        assert_eq!(a.offset_end(), b.offset_end(), "{what}: offset_end of frame {i}");
        assert_eq!(a.flags(), b.flags(), "{what}: flags of frame {i}");
    }
}

#[test]
fn every_format_and_size_keeps_frame_count_and_timestamps() {
    for format in PixelFormat::ALL {
        for &(w, h_) in &SIZES {
            let mut h = harness("oldfilmrestore", &[]);
            let (inputs, outputs) = run_frames(&mut h, format, w, h_, 6);
            let what = format!("{format:?} {w}x{h_}");
            assert_same_timing(&inputs, &outputs, &what);
            let size = info(format, w as u32, h_ as u32).size();
            assert!(outputs.iter().all(|b| b.size() >= size), "{what}: short output buffer");
        }
    }
}

#[test]
fn full_hd_frames_go_through_in_every_format() {
    for format in PixelFormat::ALL {
        let mut h = harness("oldfilmrestore", &[]);
        let (inputs, outputs) = run_frames(&mut h, format, 1920, 1080, 3);
        assert_same_timing(&inputs, &outputs, &format!("{format:?} 1920x1080"));
    }
}

#[test]
fn with_stages_off_every_format_round_trips_exactly_and_keeps_alpha() {
    for format in PixelFormat::ALL {
        let (w, h_) = (33usize, 17usize);
        let mut h = harness("oldfilmrestore", STAGES_OFF);
        let (inputs, outputs) = run_frames(&mut h, format, w, h_, 3);
        for (a, b) in inputs.iter().zip(&outputs) {
            let fa = frame_from_buffer(format, w as u32, h_ as u32, a);
            let fb = frame_from_buffer(format, w as u32, h_ as u32, b);
            assert_eq!(fa, fb, "{format:?}: pixels changed with every stage off");
            if format.has_alpha() {
                let map = b.map_readable().unwrap();
                let alpha_offset = if format == PixelFormat::Rgba || format == PixelFormat::Bgra {
                    3
                } else {
                    0
                };
                assert!(
                    map.chunks(4).take(w).all(|px| px[alpha_offset] == 0x5A),
                    "{format:?}: alpha changed"
                );
            }
        }
    }
}

#[test]
fn eos_drains_frames_held_for_the_window() {
    let mut h = harness("oldfilmrestore", &[("temporal-radius", "4")]);
    h.set_src_caps(caps(PixelFormat::Gray8, 16, 16));
    for i in 0..3 {
        h.push(timed_buffer(PixelFormat::Gray8, 16, 16, i)).unwrap();
    }
    // Nothing can leave yet: every frame still waits for four future neighbours.
    assert_eq!(h.buffers_in_queue(), 0);
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    assert_eq!(out.iter().map(|b| b.offset()).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn flush_drops_held_frames_and_restarts_cleanly() {
    let mut h = harness("oldfilmrestore", &[("temporal-radius", "2")]);
    h.set_src_caps(caps(PixelFormat::I420, 32, 24));
    for i in 0..2 {
        h.push(timed_buffer(PixelFormat::I420, 32, 24, i)).unwrap();
    }
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    let inputs: Vec<_> = (10..13).map(|i| timed_buffer(PixelFormat::I420, 32, 24, i)).collect();
    for b in &inputs {
        h.push(b.clone()).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    assert_same_timing(&inputs, &out, "after flush");
}

#[test]
fn a_new_segment_drains_the_old_one_first() {
    let mut h = harness("oldfilmrestore", &[("temporal-radius", "3")]);
    h.set_src_caps(caps(PixelFormat::Gray8, 8, 8));
    let first: Vec<_> = (0..2).map(|i| timed_buffer(PixelFormat::Gray8, 8, 8, i)).collect();
    for b in &first {
        h.push(b.clone()).unwrap();
    }
    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    // The held frames were pushed before the new segment went downstream.
    assert_eq!(h.buffers_in_queue(), 2);
    let second: Vec<_> = (5..7).map(|i| timed_buffer(PixelFormat::Gray8, 8, 8, i)).collect();
    for b in &second {
        h.push(b.clone()).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    let all: Vec<_> = first.into_iter().chain(second).collect();
    assert_same_timing(&all, &out, "two segments");
}

#[test]
fn caps_change_mid_stream_drains_then_continues_in_the_new_format() {
    let mut h = harness("oldfilmrestore", &[]);
    let bus = gst::Bus::new();
    h.element().expect("element").set_bus(Some(&bus));
    h.set_src_caps(caps(PixelFormat::Gray8, 64, 48));
    for i in 0..3 {
        h.push(timed_buffer(PixelFormat::Gray8, 64, 48, i)).unwrap();
    }
    h.set_src_caps(caps(PixelFormat::I420, 31, 23));
    for i in 3..6 {
        h.push(timed_buffer(PixelFormat::I420, 31, 23, i)).unwrap();
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 6);
    let gray = info(PixelFormat::Gray8, 64, 48).size();
    let i420 = info(PixelFormat::I420, 31, 23).size();
    assert!(
        out[..3].iter().all(|b| b.size() == gray),
        "old frames keep the old size"
    );
    assert!(
        out[3..].iter().all(|b| b.size() == i420),
        "new frames have the new size"
    );
    assert_eq!(
        out.iter().map(|b| b.offset()).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
}

#[test]
fn latency_is_the_future_window() {
    let mut h = harness("oldfilmrestore", &[("temporal-radius", "3")]);
    h.set_src_caps(caps(PixelFormat::Gray8, 8, 8));
    h.push(timed_buffer(PixelFormat::Gray8, 8, 8, 0)).unwrap();
    assert_eq!(h.query_latency(), Some(gst::ClockTime::from_mseconds(120)));
}

#[test]
fn side_by_side_doubles_the_width_with_original_left() {
    let (w, h_) = (33usize, 17usize);
    let mut props = STAGES_OFF.to_vec();
    props.push(("compare", "side-by-side"));
    let mut h = harness("oldfilmrestore", &props);
    let (inputs, outputs) = run_frames(&mut h, PixelFormat::I420, w, h_, 3);
    assert_same_timing(&inputs, &outputs, "side by side");
    let input = frame_from_buffer(PixelFormat::I420, w as u32, h_ as u32, &inputs[1]);
    let output = frame_from_buffer(PixelFormat::I420, 2 * w as u32, h_ as u32, &outputs[1]);
    for y in 0..h_ {
        for x in 0..w {
            assert_eq!(output.luma.get(x, y), input.luma.get(x, y), "left half at {x},{y}");
            assert_eq!(output.luma.get(x + w, y), input.luma.get(x, y), "right half at {x},{y}");
        }
    }
}

#[test]
fn split_view_draws_a_divider() {
    let mut h = harness("oldfilmrestore", &[("compare", "split")]);
    let (_, outputs) = run_frames(&mut h, PixelFormat::Gray8, 40, 10, 2);
    let map = outputs[0].map_readable().unwrap();
    let stride = info(PixelFormat::Gray8, 40, 10).stride()[0] as usize;
    assert!(
        (0..10).all(|y| map[y * stride + 20] == 255),
        "white divider in the middle"
    );
}

#[test]
fn bypass_outputs_the_input_buffers_themselves() {
    let mut h = harness("oldfilmrestore", &[("bypass", "true")]);
    let (inputs, outputs) = run_frames(&mut h, PixelFormat::Nv12, 20, 10, 4);
    for (a, b) in inputs.iter().zip(&outputs) {
        assert_eq!(a.as_ptr(), b.as_ptr(), "bypass must not copy");
    }
}

#[test]
fn unsupported_caps_are_refused() {
    let mut h = harness("oldfilmrestore", &[]);
    h.set_src_caps_str("video/x-raw,format=AYUV,width=16,height=16,framerate=25/1");
    let result = h.push(gst::Buffer::with_size(16 * 16 * 4).unwrap());
    assert_eq!(result, Err(gst::FlowError::NotNegotiated));
}

#[test]
fn a_truncated_buffer_is_an_error_not_a_panic() {
    let mut h = harness("oldfilmrestore", &[]);
    h.set_src_caps(caps(PixelFormat::I420, 64, 48));
    let result = h.push(gst::Buffer::with_size(10).unwrap());
    assert_eq!(result, Err(gst::FlowError::Error));
    let empty = h.push(gst::Buffer::new());
    assert!(empty.is_err(), "an empty buffer must be refused too");
}

/// Runs `videotestsrc num-buffers=n ! … ! oldfilmrestore ! fakesink`, calling `during` on the
/// element from another thread while it plays; returns frames counted and the bus messages.
fn run_pipeline(
    n: u32,
    caps: &str,
    props: &str,
    during: impl Fn(&gst::Element) + Send + 'static,
) -> (usize, Vec<gst::Message>) {
    init();
    let description = format!(
        "videotestsrc num-buffers={n} pattern=ball ! {caps} ! oldfilmrestore name=r {props} ! fakesink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let restore = pipeline.by_name("r").unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    restore
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let element = restore.clone();
    let toggler = std::thread::spawn(move || during(&element));
    let mut messages = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        let done = matches!(msg.view(), gst::MessageView::Eos(_) | gst::MessageView::Error(_));
        messages.push(msg);
        if done {
            break;
        }
    }
    toggler.join().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    (count.load(Ordering::SeqCst), messages)
}

fn errors(messages: &[gst::Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn properties_change_safely_while_playing() {
    let (count, messages) = run_pipeline(200, "video/x-raw,format=I420,width=160,height=120", "", |e| {
        for i in 0..200 {
            e.set_property("bypass", i % 7 == 3);
            e.set_property("deflicker", i % 5 != 0);
            e.set_property("deflicker-strength", (i % 10) as f64 / 10.0);
            e.set_property("deflicker-span", 1 + (i % 20) as u32);
            // Bypass and grain switching on and off leave frames in the window without their
            // motion: the stages estimate what they miss.
            e.set_property("grain", i % 3 != 0);
            e.set_property("grain-radius", 1 + (i % 2) as u32);
            e.set_property_from_str("compare", if i % 2 == 0 { "split" } else { "none" });
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    });
    assert_eq!(errors(&messages), Vec::<String>::new());
    assert_eq!(count, 200);
}

#[test]
fn switching_to_side_by_side_while_playing_renegotiates_without_losing_frames() {
    let (count, messages) = run_pipeline(120, "video/x-raw,format=GRAY8,width=64,height=48", "", |e| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        e.set_property_from_str("compare", "side-by-side");
        std::thread::sleep(std::time::Duration::from_millis(20));
        e.set_property_from_str("compare", "none");
    });
    assert_eq!(errors(&messages), Vec::<String>::new());
    assert_eq!(count, 120);
}

#[test]
fn stats_messages_come_every_interval_and_at_eos() {
    let (count, messages) = run_pipeline(
        30,
        "video/x-raw,format=GRAY8,width=32,height=32",
        "stats-interval=10",
        |_| {},
    );
    assert_eq!(count, 30);
    let stats: Vec<_> = messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => e
                .structure()
                .filter(|s| s.name() == "oldfilmrestore-stats")
                .map(|s| s.to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(stats.len(), 4, "three periodic and one final");
    let last = stats.last().unwrap();
    assert!(last.get::<bool>("eos").unwrap());
    assert_eq!(last.get::<u64>("frames-in").unwrap(), 30);
    assert_eq!(last.get::<u64>("frames-out").unwrap(), 30);
    assert!(last.get::<f64>("latency-ms").unwrap() > 0.0);
    assert!(last.get::<f64>("deflicker-ms").unwrap() >= 0.0);
}
