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
    Ok(())
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
        let args = BenchArgs {
            input: None,
            frames: 6,
            size: "64x48".into(),
            format: "GRAY8".into(),
            engine: None,
            device: None,
            set: vec![],
        };
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
}
