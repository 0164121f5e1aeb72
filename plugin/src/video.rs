//! The one place where GStreamer video frames meet the kernels' working frames: caps, format
//! mapping, and unpack/pack through mapped `VideoFrameRef`s (always with their own strides).

use gst_video::prelude::*;
use kernels::{PixelFormat, PlaneMut, PlaneRef, WorkFrame};

/// Every format the elements accept, in caps order of preference.
pub const FORMATS: [gst_video::VideoFormat; 18] = [
    gst_video::VideoFormat::Gray8,
    gst_video::VideoFormat::Gray16Le,
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Yv12,
    gst_video::VideoFormat::Nv12,
    gst_video::VideoFormat::Y42b,
    gst_video::VideoFormat::Y444,
    gst_video::VideoFormat::Uyvy,
    gst_video::VideoFormat::Yuy2,
    gst_video::VideoFormat::I42010le,
    gst_video::VideoFormat::I42210le,
    gst_video::VideoFormat::P01010le,
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
];

/// Raw video caps of every supported format, any size and rate.
pub fn supported_caps() -> gst::Caps {
    gst_video::VideoCapsBuilder::new().format_list(FORMATS).build()
}

/// Always-present `sink` and `src` templates with [`supported_caps`] (same caps in and out).
pub fn filter_pad_templates() -> Vec<gst::PadTemplate> {
    let caps = supported_caps();
    [("src", gst::PadDirection::Src), ("sink", gst::PadDirection::Sink)]
        .into_iter()
        .map(|(name, direction)| {
            gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps).expect("static template")
        })
        .collect()
}

/// Locks settings or state; a panic elsewhere must not take the element down with a poisoned
/// lock.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn pixel_format(format: gst_video::VideoFormat) -> Option<PixelFormat> {
    PixelFormat::from_caps_name(format.to_str())
}

/// Checks negotiated caps and returns the info and kernel format, with a message for the user
/// when they cannot be handled.
pub fn parse_caps(caps: &gst::Caps) -> Result<(gst_video::VideoInfo, PixelFormat), String> {
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| format!("caps {caps} are not raw video"))?;
    let format = pixel_format(info.format()).ok_or_else(|| {
        format!(
            "pixel format {} is not supported; use one of {}",
            info.format().to_str(),
            FORMATS
                .iter()
                .map(|f| f.to_str().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if info.width() == 0 || info.height() == 0 {
        return Err(format!("frame size {}x{} is empty", info.width(), info.height()));
    }
    if info.is_interlaced() {
        return Err("interlaced video is not supported: deinterlace first (e.g. with deinterlace)".into());
    }
    Ok((info, format))
}

/// Unpacks a mapped frame into the working frame.
pub fn unpack_frame(
    format: PixelFormat,
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    dst: &mut WorkFrame,
) -> Result<(), kernels::FormatError> {
    let strides = frame.plane_stride();
    let data = frame.planes_data();
    let planes: Vec<PlaneRef> = (0..frame.n_planes() as usize)
        .map(|p| PlaneRef {
            data: data[p],
            stride: strides[p] as usize,
        })
        .collect();
    kernels::unpack(format, frame.width() as usize, frame.height() as usize, &planes, dst)
}

/// Packs the working frame into a mapped, writable frame. Alpha bytes are left as they are.
pub fn pack_frame(
    format: PixelFormat,
    src: &WorkFrame,
    frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<(), kernels::FormatError> {
    let strides: Vec<usize> = frame.plane_stride().iter().map(|&s| s as usize).collect();
    let n_planes = frame.n_planes() as usize;
    let mut planes: Vec<PlaneMut> = frame
        .planes_data_mut()
        .into_iter()
        .take(n_planes)
        .zip(strides)
        .map(|(data, stride)| PlaneMut { data, stride })
        .collect();
    kernels::pack(format, src, &mut planes)
}

/// Copies the visible rows of packed single-plane `src` into `dst` at byte column `x_bytes`
/// (used to carry alpha through: the colour bytes are overwritten by [`pack_frame`] afterwards).
pub fn copy_packed_rows(
    src: &gst_video::VideoFrameRef<&gst::BufferRef>,
    dst: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    x_bytes: usize,
) {
    let row_bytes = src.width() as usize * src.format_info().pixel_stride()[0] as usize;
    let (src_stride, dst_stride) = (src.plane_stride()[0] as usize, dst.plane_stride()[0] as usize);
    let height = src.height().min(dst.height()) as usize;
    let src_data = src.planes_data()[0];
    let dst_data = &mut dst.planes_data_mut()[0];
    for y in 0..height {
        let from = &src_data[y * src_stride..][..row_bytes];
        let to = &mut dst_data[y * dst_stride + x_bytes..];
        let n = row_bytes.min(to.len());
        to[..n].copy_from_slice(&from[..n]);
    }
}
