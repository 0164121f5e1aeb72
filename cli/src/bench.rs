//! `oldfilm bench`: how fast `oldfilmrestore` runs here, with these settings, on this footage, against a
//! pass-through baseline (`identity`) timed in the same run. Frames are decoded (or synthesised) into memory
//! first, then pushed through `appsrc ! ELEMENT ! fakesink` as fast as the element takes them, so neither the
//! decoder nor the disk is measured.

use crate::props::{self, Property};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gst::prelude::*;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Footage to time with (anything GStreamer decodes); without it, a moving test pattern damaged by
    /// oldfilmdegrade is made.
    #[arg(value_name = "INPUT")]
    input: Option<PathBuf>,
    /// Frames to time (they are held in memory).
    #[arg(long, value_name = "N", default_value_t = 100)]
    frames: u32,
    /// Size of the test pattern (ignored with INPUT).
    #[arg(long, value_name = "WxH", default_value = "1280x720")]
    size: String,
    /// Pixel format the frames are given in (GStreamer name, e.g. GRAY8, I420, NV12, RGBA).
    #[arg(long, value_name = "FORMAT", default_value = "I420")]
    format: String,
    /// Run the diffusion prior from this engine bundle after the classic stages.
    #[arg(long, value_name = "DIR")]
    engine: Option<PathBuf>,
    /// Where the engine runs: auto, cpu, cuda or tensorrt.
    #[arg(long, value_name = "DEVICE", requires = "engine")]
    device: Option<String>,
    /// Set any oldfilmrestore property (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Also time this FFmpeg filter chain on the same frames in the same run, for a ratio
    /// (repeatable; e.g. 'tmedian,deflicker,hqdn3d'). Needs `ffmpeg` on the PATH.
    #[arg(long = "ffmpeg", value_name = "CHAIN")]
    ffmpeg: Vec<String>,
}

/// One element's timing.
struct Timing {
    seconds: f64,
    frames: u32,
    stats: Option<gst::Structure>,
}

impl Timing {
    fn fps(&self) -> f64 {
        self.frames as f64 / self.seconds.max(1e-9)
    }
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let (caps, buffers) = load_frames(&args)?;
    let info = gst_video::VideoInfo::from_caps(&caps).context("the frames' caps are not raw video")?;
    let rate = info.fps();
    let mut properties = Vec::new();
    if let Some(engine) = &args.engine {
        if !engine.is_dir() {
            bail!("engine bundle '{}' is not a folder", engine.display());
        }
        properties.push(Property::new("engine", engine.to_string_lossy().as_ref()));
    }
    if let Some(device) = &args.device {
        properties.push(Property::new("device", device.as_str()));
    }
    for kv in &args.set {
        properties.push(props::parse_set(kv)?);
    }
    eprintln!(
        "timing {} frames of {}x{} {} on {}",
        buffers.len(),
        info.width(),
        info.height(),
        info.format().to_str(),
        machine()
    );
    // A short first run warms caches (and lets TensorRT build its engines), outside the clock.
    let warm = buffers.len().min(8);
    let started = Instant::now();
    time_element("oldfilmrestore", &properties, &caps, &buffers[..warm])?;
    eprintln!(
        "warm-up (engine load, TensorRT builds): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let baseline = time_element("identity", &[], &caps, &buffers)?;
    let restore = time_element("oldfilmrestore", &properties, &caps, &buffers)?;
    print_report(&baseline, &restore, rate);
    if !args.ffmpeg.is_empty() {
        let raw = RawFrames::write(&info, &buffers)?;
        for chain in &args.ffmpeg {
            let chain_fps = raw.time_ffmpeg(chain)?;
            println!(
                "ffmpeg -vf '{chain}': {chain_fps:>9.1} fps  (oldfilmrestore runs at {:.2} x its rate)",
                restore.fps() / chain_fps.max(1e-9)
            );
        }
    }
    Ok(())
}

/// The frames as one tightly packed raw file, for FFmpeg to read them as fast as it can (from
/// the page cache), so that only its filters are timed, like the element's.
struct RawFrames {
    file: tempfile_path::TempPath,
    pix_fmt: &'static str,
    width: u32,
    height: u32,
    frames: usize,
}

mod tempfile_path {
    /// A file under the system temporary folder, removed when dropped.
    pub struct TempPath(pub std::path::PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl RawFrames {
    fn write(info: &gst_video::VideoInfo, buffers: &[gst::Buffer]) -> Result<Self> {
        use gst_video::prelude::*;
        use gst_video::VideoFormat as F;
        let pix_fmt = match info.format() {
            F::Gray8 => "gray",
            F::Gray16Le => "gray16le",
            F::I420 => "yuv420p",
            F::Y42b => "yuv422p",
            F::Y444 => "yuv444p",
            F::Nv12 => "nv12",
            F::Yuy2 => "yuyv422",
            F::Uyvy => "uyvy422",
            F::Rgb => "rgb24",
            F::Bgr => "bgr24",
            F::Rgba => "rgba",
            F::Bgra => "bgra",
            other => bail!("--ffmpeg: no FFmpeg pixel format is mapped for {}", other.to_str()),
        };
        let path = std::env::temp_dir().join(format!("oldfilm-bench-{}.raw", std::process::id()));
        let file = tempfile_path::TempPath(path);
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&file.0).with_context(|| format!("cannot write {}", file.0.display()))?,
        );
        for buffer in buffers {
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
                .map_err(|_| anyhow!("cannot map a frame"))?;
            for plane in 0..frame.n_planes() {
                let stride = frame.plane_stride()[plane as usize] as usize;
                let data = frame.plane_data(plane).map_err(|_| anyhow!("cannot read a plane"))?;
                let (row_bytes, rows) = plane_extent(info, plane);
                for row in 0..rows {
                    std::io::Write::write_all(&mut out, &data[row * stride..row * stride + row_bytes])?;
                }
            }
        }
        std::io::Write::flush(&mut out)?;
        Ok(RawFrames {
            file,
            pix_fmt,
            width: info.width(),
            height: info.height(),
            frames: buffers.len(),
        })
    }

    /// Frames per second of `ffmpeg -vf CHAIN` over the frames, output discarded (`-f null`).
    fn time_ffmpeg(&self, chain: &str) -> Result<f64> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
        let size = format!("{}x{}", self.width, self.height);
        let start = Instant::now();
        let output = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-threads", &threads, "-f", "rawvideo"])
            .args(["-pix_fmt", self.pix_fmt, "-s", &size, "-r", "25", "-i"])
            .arg(&self.file.0)
            .args(["-vf", chain, "-f", "null", "-"])
            .output()
            .context("cannot run ffmpeg (is it installed?)")?;
        let seconds = start.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "ffmpeg -vf '{chain}' failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(self.frames as f64 / seconds.max(1e-9))
    }
}

/// Bytes per row and rows of a plane without padding.
fn plane_extent(info: &gst_video::VideoInfo, plane: u32) -> (usize, usize) {
    let finfo = info.format_info();
    let comp = (0..finfo.n_components())
        .find(|&c| finfo.plane()[c as usize] == plane)
        .unwrap_or(0);
    let width = finfo.scale_width(comp as u8, info.width()) as usize;
    let height = finfo.scale_height(comp as u8, info.height()) as usize;
    let pixel_bytes = match info.format() {
        gst_video::VideoFormat::Nv12 if plane == 1 => 2,
        gst_video::VideoFormat::Yuy2 | gst_video::VideoFormat::Uyvy => 2,
        _ => finfo.pixel_stride()[comp as usize] as usize,
    };
    (width * pixel_bytes, height)
}

fn print_report(baseline: &Timing, restore: &Timing, rate: gst::Fraction) {
    println!("identity (baseline):  {:>9.1} fps", baseline.fps());
    println!(
        "oldfilmrestore:       {:>9.1} fps  ({:.3} x the baseline's time per frame, {:.1} ms/frame)",
        restore.fps(),
        baseline.fps() / restore.fps().max(1e-9),
        1e3 / restore.fps().max(1e-9)
    );
    if rate.numer() > 0 {
        let realtime = rate.numer() as f64 / rate.denom() as f64;
        println!(
            "real time at {realtime:.3} fps: {:.2} x ({})",
            restore.fps() / realtime,
            if restore.fps() >= realtime {
                "keeps up"
            } else {
                "too slow for live"
            }
        );
    }
    if let Some(stats) = &restore.stats {
        println!("{}", crate::media::format_stats(stats));
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({model})")
}

/// The frames to time and their caps: decoded from INPUT, or a test pattern damaged by `oldfilmdegrade`.
fn load_frames(args: &BenchArgs) -> Result<(gst::Caps, Vec<gst::Buffer>)> {
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    let format = gst_video::VideoFormat::from_string(&args.format.to_uppercase());
    if format == gst_video::VideoFormat::Unknown {
        bail!(
            "--format '{}' is not a GStreamer video format (e.g. I420, GRAY8, NV12)",
            args.format
        );
    }
    let source = match &args.input {
        Some(path) => {
            crate::media::check_input(path)?;
            format!("filesrc location={} ! decodebin", crate::media::quote(path))
        }
        None => {
            let (w, h) = parse_size(&args.size)?;
            format!("videotestsrc pattern=smpte horizontal-speed=3 ! video/x-raw,width={w},height={h},framerate=25/1 ! oldfilmdegrade seed=1")
        }
    };
    let description = format!(
        "{source} ! videoconvert ! video/x-raw,format={} ! appsink name=sink sync=false",
        format.to_str()
    );
    let pipeline = gst::parse::launch(&description)
        .context("cannot build the decoding pipeline")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("no appsink"))?;
    pipeline
        .set_state(gst::State::Playing)
        .context("cannot start decoding")?;
    let mut buffers = Vec::new();
    let mut caps = None;
    while buffers.len() < args.frames as usize {
        let Ok(sample) = sink.pull_sample() else { break };
        caps = caps.or_else(|| sample.caps_owned());
        if let Some(b) = sample.buffer_owned() {
            buffers.push(b);
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    let caps = caps.ok_or_else(|| anyhow!("no frames could be decoded"))?;
    Ok((caps, buffers))
}

fn parse_size(size: &str) -> Result<(u32, u32)> {
    let parsed = size
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!("--size '{size}' must be WIDTHxHEIGHT, e.g. 1920x1080"),
    }
}

/// Pushes `buffers` (restamped as a continuous stream) through `element` into a fakesink.
fn time_element(element: &str, properties: &[Property], caps: &gst::Caps, buffers: &[gst::Buffer]) -> Result<Timing> {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time max-bytes=0 block=true ! {element} name=work ! fakesink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow!("not a pipeline"))?;
    let work = pipeline.by_name("work").ok_or_else(|| anyhow!("no {element}"))?;
    props::apply(&work, properties)?;
    let src = pipeline
        .by_name("src")
        .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| anyhow!("no appsrc"))?;
    src.set_caps(Some(caps));
    src.set_max_buffers(4);
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or_else(|| anyhow!("no bus"))?;
    let start = Instant::now();
    let duration = gst::ClockTime::from_mseconds(40);
    let pushed = std::thread::scope(|s| {
        let pusher = s.spawn(|| {
            for (i, b) in buffers.iter().enumerate() {
                let mut b = b.copy();
                let buf = b.make_mut();
                buf.set_pts(duration * i as u64);
                buf.set_duration(duration);
                if src.push_buffer(b).is_err() {
                    return false;
                }
            }
            src.end_of_stream().is_ok()
        });
        pusher.join().unwrap_or(false)
    });
    let mut stats = None;
    let outcome = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(3600)) else {
            break Err(anyhow!("{element} did not finish within an hour"));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(anyhow!("{element}: {}", e.error())),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "oldfilmrestore-stats") {
                    stats = Some(s.to_owned());
                }
            }
            _ => {}
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let _ = pipeline.set_state(gst::State::Null);
    outcome?;
    if !pushed {
        bail!("{element} stopped taking frames");
    }
    Ok(Timing {
        seconds,
        frames: buffers.len() as u32,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments timing `frames` frames of the damaged test pattern.
    fn pattern(frames: u32, size: &str, format: &str) -> BenchArgs {
        BenchArgs {
            input: None,
            frames,
            size: size.into(),
            format: format.into(),
            engine: None,
            device: None,
            set: vec![],
            ffmpeg: vec![],
        }
    }

    #[test]
    fn sizes_parse_and_bad_ones_say_how() {
        assert_eq!(parse_size("1920x1080").unwrap(), (1920, 1080));
        assert_eq!(parse_size(" 64 X 48 ").unwrap(), (64, 48));
        for bad in ["1920", "0x10", "axb", ""] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains("WIDTHxHEIGHT"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_test_pattern_is_timed_against_identity() {
        crate::init_for_tests();
        let args = pattern(6, "64x48", "GRAY8");
        let (caps, buffers) = load_frames(&args).unwrap();
        assert_eq!(buffers.len(), 6);
        let t = time_element("oldfilmrestore", &[], &caps, &buffers).unwrap();
        assert_eq!(t.frames, 6);
        assert!(t.seconds > 0.0);
        let stats = t.stats.expect("the element reports at EOS");
        assert_eq!(stats.get::<u64>("frames-out").unwrap(), 6, "N in = N out");
        let bad = BenchArgs {
            format: "NOPE".into(),
            ..args
        };
        assert!(load_frames(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a GStreamer video format"));
    }

    #[test]
    fn ffmpeg_reads_the_frames_without_padding() {
        crate::init_for_tests();
        // An odd size: GStreamer pads the rows (and the chroma planes), the raw file must not.
        for (format, bytes_per_frame) in [("GRAY8", 37 * 21), ("I420", 37 * 21 + 2 * 19 * 11)] {
            let args = pattern(3, "37x21", format);
            let (caps, buffers) = load_frames(&args).unwrap();
            let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
            let raw = RawFrames::write(&info, &buffers).unwrap();
            assert_eq!(std::fs::metadata(&raw.file.0).unwrap().len(), 3 * bytes_per_frame);
            // FFmpeg must accept exactly that layout (it fails on a short or long last frame).
            assert!(raw.time_ffmpeg("null").unwrap() > 0.0, "{format}");
            let e = raw.time_ffmpeg("no_such_filter").unwrap_err().to_string();
            assert!(e.contains("no_such_filter"), "{e}");
            let path = raw.file.0.clone();
            drop(raw);
            assert!(!path.exists(), "the raw file is removed");
        }
    }

    #[test]
    fn unmapped_formats_are_refused_for_ffmpeg() {
        crate::init_for_tests();
        let args = pattern(1, "16x16", "AYUV");
        let (caps, buffers) = load_frames(&args).unwrap();
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        let e = RawFrames::write(&info, &buffers)
            .err()
            .expect("AYUV has no mapping")
            .to_string();
        assert!(e.contains("AYUV"), "{e}");
    }
}
