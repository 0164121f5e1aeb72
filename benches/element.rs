//! Element throughput against `identity` in the same run: the same pre-made frames are pushed
//! through `appsrc ! ELEMENT ! fakesink` as fast as the element takes them.
//! `cargo bench -p oldfilm-benches --bench element [-- FRAMES]` prints a Markdown table.

use gst::prelude::*;
use kernels::PixelFormat;
use oldfilm_benches::{packed, SIZES};
use std::time::Instant;

/// Seconds to push `frames` frames through `element` (a gst-launch fragment).
fn run(element: &str, format: PixelFormat, w: usize, h: usize, frames: u64) -> f64 {
    let caps = gst_video::VideoInfo::builder(
        gst_video::VideoFormat::from_string(format.caps_name()),
        w as u32,
        h as u32,
    )
    .fps(gst::Fraction::new(25, 1))
    .build()
    .expect("info")
    .to_caps()
    .expect("caps");
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time max-bytes=0 ! {element} ! fakesink sync=false"
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let src = pipeline
        .by_name("src")
        .expect("appsrc")
        .downcast::<gst_app::AppSrc>()
        .expect("appsrc");
    src.set_caps(Some(&caps));
    let info = gst_video::VideoInfo::from_caps(&caps).expect("info");
    let inputs: Vec<gst::Buffer> = (0..8)
        .map(|seed| {
            let image = packed(format, w, h, seed);
            let mut buffer = gst::Buffer::with_size(info.size()).expect("alloc");
            {
                let buf = buffer.get_mut().expect("writable");
                let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &info).expect("map");
                let work = {
                    let mut f = kernels::WorkFrame::new(format.geometry(w, h));
                    kernels::unpack(format, w, h, &image.plane_refs(), &mut f).expect("unpack");
                    f
                };
                gstoldfilm::video::pack_frame(format, &work, &mut frame).expect("pack");
            }
            buffer
        })
        .collect();
    pipeline.set_state(gst::State::Playing).expect("playing");
    let start = Instant::now();
    let bus = pipeline.bus().expect("bus");
    for i in 0..frames {
        // Keep a few frames queued without blocking, so a failing pipeline cannot hang the push.
        while src.current_level_buffers() >= 4 {
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                panic!("{element}: {msg:?}");
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let mut buffer = inputs[(i % 8) as usize].copy();
        buffer
            .get_mut()
            .expect("writable")
            .set_pts(gst::ClockTime::from_mseconds(40 * i));
        src.push_buffer(buffer).expect("push");
    }
    src.end_of_stream().expect("eos");
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(600),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let seconds = start.elapsed().as_secs_f64();
    if let Some(msg) = msg {
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("{element}: {}", e.error());
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
    seconds
}

fn main() {
    gst::init().expect("gst");
    gstoldfilm::register_static().expect("plugin");
    // `cargo bench` passes `--bench`; a number is the frame count.
    let frames = std::env::args()
        .filter_map(|a| a.parse::<u64>().ok())
        .next()
        .unwrap_or(150);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("{frames} frames per run, {cores} cores\n");
    println!("| format | size | identity fps | oldfilmrestore fps (default stages) | oldfilmrestore fps (bypass) | restore / identity time |");
    println!("|---|---|---|---|---|---|");
    for format in [PixelFormat::Gray8, PixelFormat::I420] {
        for (label, w, h) in SIZES {
            // identity passes buffers by reference: the ratio is the element's whole cost.
            let identity = run("identity", format, w, h, frames);
            let restore = run("oldfilmrestore", format, w, h, frames);
            let bypass = run("oldfilmrestore bypass=true", format, w, h, frames);
            let fps = |s: f64| frames as f64 / s;
            println!(
                "| {} | {label} | {:.0} | {:.1} | {:.0} | {:.0}x |",
                format.caps_name(),
                fps(identity),
                fps(restore),
                fps(bypass),
                restore / identity
            );
        }
    }
}
