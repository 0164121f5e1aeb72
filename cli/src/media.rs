//! File-to-file pipelines with progress, and the checks that turn bad input into one clear line.

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One file-to-file run of an element.
pub struct Job<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    /// gst-launch fragment of the processing element(s); the first must be named `work`.
    pub element: String,
    /// Convert to GRAY8 before the element.
    pub to_gray: bool,
    /// Word used in progress lines.
    pub label: &'a str,
}

pub struct Summary {
    /// The element's final `oldfilmrestore-stats` message, formatted, when it posts one.
    pub stats: Option<String>,
}

/// The encoder and muxer for an output file, chosen by its extension.
pub fn encoder_for(path: &Path) -> Result<&'static str> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("mkv") => Ok("avenc_ffv1 ! matroskamux"),
        Some("mp4") => Ok("x264enc speed-preset=medium pass=quant quantizer=18 ! mp4mux"),
        _ => bail!(
            "cannot write '{}': the output must end in .mkv (lossless FFV1) or .mp4 (H.264)",
            path.display()
        ),
    }
}

/// `NAME=VALUE` for an element property, checked for shape.
pub fn parse_property(kv: &str) -> Result<String> {
    let (name, value) = kv
        .split_once('=')
        .ok_or_else(|| anyhow!("--set '{kv}' must be NAME=VALUE"))?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid || value.is_empty() || value.contains(char::is_whitespace) || value.contains('!') {
        bail!("--set '{kv}' must be NAME=VALUE with a property name and a value without spaces");
    }
    Ok(format!("{name}={value}"))
}

pub fn check_input(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!("input file '{}' does not exist", path.display());
    }
    if !path.is_file() {
        bail!("input '{}' is not a file", path.display());
    }
    std::fs::File::open(path).with_context(|| format!("cannot read input file '{}'", path.display()))?;
    Ok(())
}

pub fn check_output(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write '{}': folder '{}' does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("cannot write '{}': it is a folder", path.display());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot write '{}'", path.display()))?;
    Ok(())
}

fn quote(path: &Path) -> String {
    // gst-launch syntax: double quotes, with embedded quotes and backslashes escaped.
    let s = path.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{s}\"")
}

fn describe(job: &Job) -> Result<String> {
    let encoder = encoder_for(job.output)?;
    let gray = if job.to_gray { "video/x-raw,format=GRAY8 ! " } else { "" };
    Ok(format!(
        "filesrc location={} ! decodebin ! videoconvert ! {gray}{} ! videoconvert name=finish ! {encoder} ! filesink location={}",
        quote(job.input),
        job.element,
        quote(job.output)
    ))
}

/// Runs the job to the end, with a progress bar on a terminal and plain lines otherwise.
pub fn run(job: &Job) -> Result<Summary> {
    check_input(job.input)?;
    check_output(job.output)?;
    let pipeline = gst::parse::launch(&describe(job)?)
        .context("cannot build the pipeline (are the GStreamer plugins installed? run scripts/setup-debian.sh)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("the pipeline description did not make a pipeline"))?;
    let work = pipeline
        .by_name("work")
        .ok_or_else(|| anyhow!("pipeline has no element named work"))?;
    let frames = Arc::new(AtomicU64::new(0));
    let counter = frames.clone();
    work.static_pad("src")
        .ok_or_else(|| anyhow!("element has no src pad"))?
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    pipeline
        .set_state(gst::State::Playing)
        .context("cannot start the pipeline")?;
    let result = watch(&pipeline, job, &frames);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn watch(pipeline: &gst::Pipeline, job: &Job, frames: &AtomicU64) -> Result<Summary> {
    let bus = pipeline.bus().ok_or_else(|| anyhow!("pipeline has no bus"))?;
    let progress = Progress::new(job.label);
    let mut stats = None;
    loop {
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(200),
            &[
                gst::MessageType::Eos,
                gst::MessageType::Error,
                gst::MessageType::Element,
                gst::MessageType::Warning,
            ],
        );
        let done = frames.load(Ordering::Relaxed);
        progress.update(pipeline, done);
        let Some(msg) = msg else { continue };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                progress.finish(done);
                return Ok(Summary { stats });
            }
            gst::MessageView::Error(e) => {
                let detail = e.error().to_string();
                if done == 0 {
                    bail!(
                        "'{}' is not a video GStreamer can decode: {detail}",
                        job.input.display()
                    );
                }
                // Finish what was written so the output stays a valid file, then report.
                finalise(pipeline, &bus);
                progress.finish(done);
                bail!(
                    "'{}' failed after {done} frames: {detail} ('{}' holds the frames written so far)",
                    job.input.display(),
                    job.output.display()
                );
            }
            gst::MessageView::Warning(w) => eprintln!("warning: {}", w.error()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "oldfilmrestore-stats") {
                    if s.get::<bool>("eos").unwrap_or(false) {
                        stats = Some(format_stats(s));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sends EOS into the encoder branch so the muxer writes its index, and waits briefly for it.
fn finalise(pipeline: &gst::Pipeline, bus: &gst::Bus) {
    if let Some(pad) = pipeline.by_name("finish").and_then(|f| f.static_pad("sink")) {
        pad.send_event(gst::event::Eos::new());
        let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Eos]);
    }
}

fn format_stats(s: &gst::StructureRef) -> String {
    let ms = |k: &str| s.get::<f64>(k).unwrap_or(0.0);
    let stages: Vec<String> = ["analyse", "motion", "deflicker", "blotches", "scratches", "grain"]
        .iter()
        .map(|st| format!("{st} {:.1}", ms(&format!("{st}-ms"))))
        .collect();
    format!(
        "oldfilmrestore: {} frames in, {} out, {} shots, latency {:.0} ms, {:.1} ms/frame ({} ms)",
        s.get::<u64>("frames-in").unwrap_or(0),
        s.get::<u64>("frames-out").unwrap_or(0),
        s.get::<u64>("shots").unwrap_or(0),
        ms("latency-ms"),
        ms("processing-ms"),
        stages.join(", ")
    )
}

/// A progress bar on a terminal, a plain line every two seconds otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} frames, {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            start: Instant::now(),
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(&self, pipeline: &gst::Pipeline, frames: u64) {
        let total = estimated_frames(pipeline);
        if let Some(bar) = &self.bar {
            if let Some(total) = total {
                bar.set_length(total.max(frames));
            }
            bar.set_position(frames);
        } else if self.last_line.get().elapsed() >= Duration::from_secs(2) {
            self.last_line.set(Instant::now());
            let of = total.map(|t| format!(" of ~{t}")).unwrap_or_default();
            eprintln!("{}: {frames}{of} frames, {:.1} fps", self.label, self.fps(frames));
        }
    }

    fn fps(&self, frames: u64) -> f64 {
        frames as f64 / self.start.elapsed().as_secs_f64().max(1e-3)
    }

    fn finish(&self, frames: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: {frames} frames in {:.1} s ({:.1} fps)",
            self.label,
            self.start.elapsed().as_secs_f64(),
            self.fps(frames)
        );
    }
}

/// Duration times frame rate, once both are known.
fn estimated_frames(pipeline: &gst::Pipeline) -> Option<u64> {
    let duration = pipeline.query_duration::<gst::ClockTime>()?;
    let caps = pipeline.by_name("work")?.static_pad("sink")?.current_caps()?;
    let fps = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
    if fps.numer() <= 0 {
        return None;
    }
    Some(duration.nseconds() * fps.numer() as u64 / fps.denom() as u64 / 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_follows_the_extension() {
        assert!(encoder_for(Path::new("a/b.mkv")).unwrap().starts_with("avenc_ffv1"));
        assert!(encoder_for(Path::new("b.MP4")).unwrap().starts_with("x264enc"));
        let err = encoder_for(Path::new("b.avi")).unwrap_err().to_string();
        assert!(err.contains(".mkv") && err.contains("b.avi"), "{err}");
    }

    #[test]
    fn set_takes_name_value_only() {
        assert_eq!(parse_property("grain-strength=0.2").unwrap(), "grain-strength=0.2");
        for bad in ["grain", "=1", "a b=1", "x=1 ! fakesink", "x="] {
            assert!(parse_property(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn paths_are_quoted_for_gst_launch() {
        assert_eq!(quote(Path::new("my \"clip\".mkv")), "\"my \\\"clip\\\".mkv\"");
    }

    #[test]
    fn missing_input_and_unwritable_output_are_named() {
        let err = check_input(Path::new("/nonexistent/x.mkv")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x.mkv") && err.contains("does not exist"));
        let err = check_output(Path::new("/nonexistent/dir/y.mkv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
