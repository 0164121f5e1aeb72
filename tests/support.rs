//! Shared helpers for the integration tests: plugin registration, frames of any format with
//! valid sample codes, and running buffers through the element in a gstreamer-check Harness.

use gst::prelude::*;
use gst_check::Harness;
use kernels::{PixelFormat, WorkFrame};
use std::sync::Once;

/// Initialises GStreamer and registers the plugin statically, once per test binary.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("GStreamer initialises");
        gstoldfilm::register_static().expect("plugin registers");
    });
}

pub fn video_format(format: PixelFormat) -> gst_video::VideoFormat {
    init();
    gst_video::VideoFormat::from_string(format.caps_name())
}

pub fn caps(format: PixelFormat, width: u32, height: u32) -> gst::Caps {
    gst_video::VideoInfo::builder(video_format(format), width, height)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .expect("valid video info")
        .to_caps()
        .expect("caps from info")
}

pub fn info(format: PixelFormat, width: u32, height: u32) -> gst_video::VideoInfo {
    gst_video::VideoInfo::from_caps(&caps(format, width, height)).expect("info from caps")
}

/// A seeded textured picture (luma pattern + gentle chroma) in the working representation.
pub fn textured_frame(format: PixelFormat, width: usize, height: usize, seed: u64) -> WorkFrame {
    let mut frame = WorkFrame::new(format.geometry(width, height));
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for y in 0..height {
        for x in 0..width {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32;
            let v = 0.2 + 0.4 * (((x / 8 + y / 8) % 2) as f32) + 0.2 * noise;
            frame.luma.set(x, y, v);
        }
    }
    for (i, plane) in frame.chroma.iter_mut().enumerate() {
        for (k, v) in plane.data.iter_mut().enumerate() {
            *v = 0.5 + 0.1 * (((k + i * 3) % 5) as f32 / 5.0 - 0.4);
        }
    }
    frame
}

/// Packs a working frame into a new buffer of `format`.
pub fn buffer_from_frame(format: PixelFormat, frame: &WorkFrame) -> gst::Buffer {
    let info = info(format, frame.width() as u32, frame.height() as u32);
    let mut buffer = gst::Buffer::with_size(info.size()).expect("allocate");
    {
        let buf = buffer.get_mut().expect("new buffer is writable");
        // Alpha (where the format has it) gets a recognisable value.
        buf.map_writable().expect("map").as_mut_slice().fill(0x5A);
        let mut mapped = gst_video::VideoFrameRef::from_buffer_ref_writable(buf, &info).expect("map frame");
        gstoldfilm::video::pack_frame(format, frame, &mut mapped).expect("pack");
    }
    buffer
}

/// Unpacks a buffer of `format` into a working frame.
pub fn frame_from_buffer(format: PixelFormat, width: u32, height: u32, buffer: &gst::Buffer) -> WorkFrame {
    let info = info(format, width, height);
    let mapped = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &info).expect("map frame");
    let mut frame = WorkFrame::new(format.geometry(width as usize, height as usize));
    gstoldfilm::video::unpack_frame(format, &mapped, &mut frame).expect("unpack");
    frame
}

/// A buffer for frame `index` of a 25 fps stream, with every timestamp field set.
pub fn timed_buffer(format: PixelFormat, width: usize, height: usize, index: u64) -> gst::Buffer {
    let mut buffer = buffer_from_frame(format, &textured_frame(format, width, height, index + 1));
    stamp(buffer.get_mut().expect("writable"), index);
    buffer
}

pub fn stamp(buf: &mut gst::BufferRef, index: u64) {
    let frame = gst::ClockTime::from_mseconds(40);
    buf.set_pts(frame * index);
    buf.set_dts(frame * index);
    buf.set_duration(frame);
    buf.set_offset(index);
    buf.set_offset_end(index + 1);
    if index == 0 {
        buf.set_flags(gst::BufferFlags::DISCONT);
    }
}

/// A harness around a fresh `oldfilmrestore` (or another factory) with properties set from
/// strings, as on a gst-launch line.
pub fn harness(factory: &str, properties: &[(&str, &str)]) -> Harness {
    init();
    let element = gst::ElementFactory::make(factory).build().expect("element exists");
    for (name, value) in properties {
        element.set_property_from_str(name, value);
    }
    Harness::with_element(&element, Some("sink"), Some("src"))
}

/// Every buffer the harness has output so far, without waiting.
pub fn pull_all(h: &mut Harness) -> Vec<gst::Buffer> {
    std::iter::from_fn(|| h.try_pull()).collect()
}
