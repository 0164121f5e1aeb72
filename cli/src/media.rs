//! File-to-file pipelines with progress, and the checks that turn bad input into one clear line.

use crate::progress::Progress;
use crate::props::{self, Property};
use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One file-to-file run of an element.
pub struct Job<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    /// Factory name of the processing element.
    pub element: &'static str,
    /// Properties to set on it.
    pub properties: &'a [Property],
    /// gst-launch fragment placed right after the element (may be empty).
    pub after: &'a str,
    /// Convert to GRAY8 before the element.
    pub to_gray: bool,
    /// Word used in progress lines.
    pub label: &'a str,
}

/// What a finished run reports.
pub struct Summary {
    /// The element's final `oldfilmrestore-stats` message, formatted, when it posts one.
    pub stats: Option<String>,
}

/// An output container and the encoder that fills it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoder {
    /// gst-launch fragment: encoder ! muxer.
    pub launch: &'static str,
    /// Elements that must be installed, with the Debian package that has them.
    pub needs: &'static [(&'static str, &'static str)],
    pub what: &'static str,
}

pub const FFV1_MKV: Encoder = Encoder {
    launch: "avenc_ffv1 ! matroskamux",
    needs: &[
        ("avenc_ffv1", "gstreamer1.0-libav"),
        ("matroskamux", "gstreamer1.0-plugins-good"),
    ],
    what: "lossless FFV1 in Matroska",
};

pub const H264_MP4: Encoder = Encoder {
    launch: "x264enc speed-preset=medium pass=quant quantizer=18 ! mp4mux",
    needs: &[
        ("x264enc", "gstreamer1.0-plugins-ugly"),
        ("mp4mux", "gstreamer1.0-plugins-good"),
    ],
    what: "H.264 (quantizer 18) in MP4",
};

/// Extensions `encoder_for` knows, for messages.
pub const SUPPORTED: &str = ".mkv (lossless FFV1) or .mp4 (H.264)";

/// The encoder and muxer for an output file, chosen by its extension.
pub fn encoder_for(path: &Path) -> Result<Encoder> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("mkv") => Ok(FFV1_MKV),
        Some("mp4") => Ok(H264_MP4),
        _ => bail!("cannot write '{}': the output must end in {SUPPORTED}", path.display()),
    }
}

/// The input exists and can be read.
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

/// The output can be written (without touching an existing file), its extension is known, its
/// encoder is installed, and it is none of `inputs` (which would be destroyed before being read).
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<Encoder> {
    let encoder = encoder_for(path)?;
    check_writable(path, inputs)?;
    for (element, package) in encoder.needs {
        if gst::ElementFactory::find(element).is_none() {
            bail!(
                "cannot write '{}': GStreamer element {element} is missing (install {package})",
                path.display()
            );
        }
    }
    Ok(encoder)
}

/// A file can be created or overwritten at `path` (checked without changing anything there),
/// and it is none of `inputs`.
pub fn check_writable(path: &Path, inputs: &[&Path]) -> Result<()> {
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
    for input in inputs {
        if same_path(path, input) {
            bail!(
                "cannot write '{}': it is also an input (choose another output name)",
                path.display()
            );
        }
    }
    if path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Whether two paths name the same file (also through links and `..`), existing or not.
pub fn same_path(a: &Path, b: &Path) -> bool {
    match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

fn resolve(p: &Path) -> Option<std::path::PathBuf> {
    p.canonicalize().ok().or_else(|| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(dir.canonicalize().ok()?.join(p.file_name()?))
    })
}

/// gst-launch syntax: double quotes, with embedded quotes and backslashes escaped.
pub fn quote(path: &Path) -> String {
    let s = path.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{s}\"")
}

fn describe(job: &Job, encoder: Encoder) -> String {
    let gray = if job.to_gray { "video/x-raw,format=GRAY8 ! " } else { "" };
    let after = if job.after.is_empty() {
        String::new()
    } else {
        format!("{} ! ", job.after)
    };
    format!(
        "filesrc name=source location={} ! decodebin name=decode ! videoconvert name=prepare ! {gray}{} name=work ! \
         {after}videoconvert name=finish ! {} ! filesink name=sink location={}",
        quote(job.input),
        job.element,
        encoder.launch,
        quote(job.output)
    )
}

/// Runs the job to the end, with a progress bar on a terminal and plain lines otherwise.
pub fn run(job: &Job) -> Result<Summary> {
    check_input(job.input)?;
    let encoder = check_output(job.output, &[job.input])?;
    execute(&describe(job, encoder), job)
}

/// Runs a pipeline built from `description` (elements named as `describe` names them).
fn execute(description: &str, job: &Job) -> Result<Summary> {
    let pipeline = gst::parse::launch(description)
        .context("cannot build the pipeline (are the GStreamer plugins installed? `oldfilm info` checks)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("the pipeline description did not make a pipeline"))?;
    let work = pipeline
        .by_name("work")
        .ok_or_else(|| anyhow!("pipeline has no element named work"))?;
    props::apply(&work, job.properties)?;
    let frames = Frames::default();
    for (pad, counter) in [("sink", &frames.read), ("src", &frames.written)] {
        let counter = counter.clone();
        work.static_pad(pad)
            .ok_or_else(|| anyhow!("{} has no {pad} pad", job.element))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
    }
    let result = match pipeline.set_state(gst::State::Playing) {
        Ok(_) => watch(&pipeline, job, &frames),
        // The bus holds the reason.
        Err(_) => watch(&pipeline, job, &frames).and_then(|_| bail!("cannot start the pipeline")),
    };
    let _ = pipeline.set_state(gst::State::Null);
    if result.is_err() && frames.written() == 0 {
        // Nothing was written but an empty or header-only file: do not leave it behind.
        let _ = std::fs::remove_file(job.output);
    }
    result
}

fn explain_warning(w: &gst::message::Warning) -> String {
    with_reason(w.error().to_string(), w.debug().as_deref())
}

/// The error text, with the specific reason GStreamer gives on the line after the source
/// location in its debug string ("Caps changes are not supported by Matroska"), if any.
fn explain(e: &gst::message::Error) -> String {
    with_reason(e.error().to_string(), e.debug().as_deref())
}

fn with_reason(error: String, debug: Option<&str>) -> String {
    let reason = debug
        .and_then(|d| {
            d.split_once('\n')
                .and_then(|(_, rest)| rest.lines().next())
                .map(|r| r.trim().to_string())
        })
        .filter(|r| !r.is_empty() && r.len() < 160);
    match reason {
        Some(r) if !error.contains(&r) => format!("{error} ({r})"),
        _ => error,
    }
}

/// Where in the pipeline an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Reading or decoding the input.
    Input,
    /// The processing element.
    Work,
    /// Encoding, muxing or writing the output.
    Output,
}

fn origin(pipeline: &gst::Pipeline, msg: &gst::Message) -> Origin {
    let Some(src) = msg.src() else { return Origin::Input };
    let is = |name: &str| {
        pipeline
            .by_name(name)
            .is_some_and(|e| src == e.upcast_ref::<gst::Object>() || src.has_as_ancestor(&e))
    };
    if ["source", "decode", "prepare"].iter().any(|n| is(n)) {
        Origin::Input
    } else if is("work") {
        Origin::Work
    } else if src.downcast_ref::<gst::Element>().is_some_and(is_output_side) {
        Origin::Output
    } else {
        Origin::Input
    }
}

fn is_output_side(e: &gst::Element) -> bool {
    e.name() == "finish" || e.name() == "sink" || {
        let klass = e.factory().map(|f| f.klass().to_string()).unwrap_or_default();
        klass.contains("Encoder") || klass.contains("Muxer")
    }
}

/// Frames into and out of the element, counted by pad probes.
#[derive(Default)]
struct Frames {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl Frames {
    fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

fn watch(pipeline: &gst::Pipeline, job: &Job, frames: &Frames) -> Result<Summary> {
    let bus = pipeline.bus().ok_or_else(|| anyhow!("pipeline has no bus"))?;
    let progress = Progress::new(job.label);
    let mut stats = None;
    let mut total = None;
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
        let done = frames.written();
        total = estimated_frames(pipeline).or(total);
        progress.update(done, total);
        let Some(msg) = msg else { continue };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                progress.finish(done);
                if let Some(total) = total.filter(|&t| ends_early(done, t)) {
                    eprintln!(
                        "warning: '{}' ended after {done} of the ~{total} frames its header announces: \
                         it may be truncated or damaged",
                        job.input.display()
                    );
                }
                return Ok(Summary { stats });
            }
            gst::MessageView::Error(e) => {
                let detail = explain(e);
                let (input, output) = (job.input.display(), job.output.display());
                let from = origin(pipeline, &msg);
                if from == Origin::Output {
                    progress.abandon();
                    match frames.written() {
                        0 => bail!("cannot write '{output}': {detail}"),
                        n => bail!("cannot write '{output}' after {n} frames: {detail}"),
                    }
                }
                let read = frames.read();
                if read == 0 && from == Origin::Input {
                    progress.abandon();
                    let detail = if e.debug().is_some_and(|d| d.contains("not-linked")) {
                        "it has no video stream".to_string()
                    } else {
                        detail
                    };
                    bail!("'{input}' is not a video GStreamer can decode: {detail}");
                }
                if frames.written() == 0 {
                    // Nothing reached the encoder (e.g. the engine could not be loaded at the
                    // first caps): there is no file to save, and no preroll to finish.
                    progress.abandon();
                    bail!("cannot process '{input}': {detail}");
                }
                // Finish what was written so the output stays a valid file, then report.
                finalise(pipeline, &bus, from);
                let written = frames.written();
                progress.finish(written);
                let what = match from {
                    Origin::Work => format!("{} failed on '{input}' at frame {}", job.element, read),
                    _ => format!("'{input}' is damaged or truncated: decoding stopped after {read} frames"),
                };
                bail!("{what}: {detail} ('{output}' was closed properly with the {written} frames done)");
            }
            gst::MessageView::Warning(w) => {
                // decodebin warns about every stream it cannot link (audio, subtitles): we only
                // want the video.
                let unlinked = w.debug().is_some_and(|d| d.contains("no suitable pads"))
                    || w.error().to_string().contains("Delayed linking failed");
                if !unlinked {
                    let src = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                    progress.println(&format!("warning: {src}: {}", explain_warning(w)));
                }
            }
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

/// Whether `done` frames fall clearly short of the `total` the container announced.
fn ends_early(done: u64, total: u64) -> bool {
    done + 2 < total - total / 10
}

/// Sends EOS after the failing part so the muxer writes its index, and waits for it.
fn finalise(pipeline: &gst::Pipeline, bus: &gst::Bus, from: Origin) {
    // An input error: EOS into the element, so it also drains the frames it holds back. An
    // element error: EOS straight into the encoder branch.
    let pad = match from {
        Origin::Input => pipeline.by_name("work").and_then(|w| w.static_pad("sink")),
        _ => pipeline.by_name("finish").and_then(|f| f.static_pad("sink")),
    };
    if let Some(pad) = pad {
        // From another thread: a sink still waiting to preroll would block this one for good;
        // setting the pipeline to NULL afterwards releases it.
        std::thread::spawn(move || pad.send_event(gst::event::Eos::new()));
        let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos]);
    }
}

/// One short line of the element's final statistics. Fields it adds later (a new stage's
/// `<stage>-ms`) show up without a change here.
pub fn format_stats(s: &gst::StructureRef) -> String {
    const OVERALL: [&str; 6] = [
        "latency-ms",
        "wall-latency-ms",
        "processing-ms",
        "unpack-ms",
        "pack-ms",
        "inference-ms",
    ];
    let ms = |k: &str| s.get::<f64>(k).unwrap_or(0.0);
    let count = |k: &str| s.get::<u64>(k).unwrap_or(0);
    let stages: Vec<String> = s
        .iter()
        .filter(|(name, _)| name.ends_with("-ms") && !OVERALL.contains(&name.as_str()))
        .map(|(name, value)| {
            let v = value.get::<f64>().unwrap_or(0.0);
            format!("{} {v:.1}", name.trim_end_matches("-ms"))
        })
        .collect();
    let engine = match s.get::<&str>("provider") {
        Ok(provider) if provider != "none" => format!(
            "; engine on {provider}: {} frames inferred, {} skipped, {:.1} ms per inferred frame",
            count("frames-inferred"),
            count("frames-skipped"),
            ms("inference-ms")
        ),
        _ => String::new(),
    };
    format!(
        "oldfilmrestore: {} frames in, {} out, {} shots, latency {:.0} ms, {:.1} ms/frame ({} ms){engine}",
        count("frames-in"),
        count("frames-out"),
        count("shots"),
        ms("latency-ms"),
        ms("processing-ms"),
        stages.join(", ")
    )
}

/// Duration times frame rate, once both are known.
fn estimated_frames(pipeline: &gst::Pipeline) -> Option<u64> {
    let duration = pipeline.query_duration::<gst::ClockTime>()?;
    let caps = pipeline.by_name("work")?.static_pad("sink")?.current_caps()?;
    frames_in(duration, &caps)
}

/// Frames in `duration` at the frame rate in `caps`.
pub fn frames_in(duration: gst::ClockTime, caps: &gst::CapsRef) -> Option<u64> {
    let fps = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
    if fps.numer() <= 0 || fps.denom() <= 0 {
        return None;
    }
    let frames = duration.nseconds() as u128 * fps.numer() as u128 / fps.denom() as u128 / 1_000_000_000;
    Some(((frames as f64) + 0.5) as u64).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_follows_the_extension() {
        assert_eq!(encoder_for(Path::new("a/b.mkv")).unwrap(), FFV1_MKV);
        assert_eq!(encoder_for(Path::new("b.MP4")).unwrap(), H264_MP4);
        assert!(FFV1_MKV.launch.starts_with("avenc_ffv1"));
        assert!(H264_MP4.launch.starts_with("x264enc") && H264_MP4.launch.contains("pass=quant"));
        for bad in ["b.avi", "b", "b.mkv.txt"] {
            let err = encoder_for(Path::new(bad)).unwrap_err().to_string();
            assert!(
                err.contains(".mkv") && err.contains(".mp4") && err.contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn paths_are_quoted_for_gst_launch() {
        assert_eq!(quote(Path::new("my \"clip\".mkv")), "\"my \\\"clip\\\".mkv\"");
    }

    #[test]
    fn missing_input_and_unwritable_output_are_named() {
        crate::init_for_tests();
        let err = check_input(Path::new("/nonexistent/x.mkv")).unwrap_err().to_string();
        assert_eq!(err, "input file '/nonexistent/x.mkv' does not exist");
        let err = check_output(Path::new("/nonexistent/dir/y.mkv"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot write '/nonexistent/dir/y.mkv'") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn output_checks_leave_files_alone_and_refuse_the_input() {
        crate::init_for_tests();
        let dir = std::env::temp_dir().join(format!("oldfilm-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let existing = dir.join("existing.mkv");
        std::fs::write(&existing, b"keep me").unwrap();
        check_output(&existing, &[]).unwrap();
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
        let fresh = dir.join("fresh.mkv");
        check_output(&fresh, &[]).unwrap();
        assert!(!fresh.exists(), "the check must not leave a file behind");
        let err = check_output(
            &existing,
            &[&dir.join("../").join(dir.file_name().unwrap()).join("existing.mkv")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("it is also an input"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Frames in a lossless file, decoded to the end (panics if it is not a valid file).
    fn count_frames(path: &Path) -> usize {
        let pipeline = gst::parse::launch(&format!(
            "filesrc location={} ! matroskademux ! avdec_ffv1 ! fakesink name=sink",
            quote(path)
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let c = n.clone();
        let pad = pipeline.by_name("sink").unwrap().static_pad("sink").unwrap();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            c.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(
            matches!(msg.view(), gst::MessageView::Eos(_)),
            "{} is not a valid file: {msg:?}",
            path.display()
        );
        n.load(Ordering::Relaxed) as usize
    }

    #[test]
    fn an_input_error_mid_stream_keeps_a_valid_output_with_the_frames_so_far() {
        crate::init_for_tests();
        let dir = std::env::temp_dir().join(format!("oldfilm-midstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("out.mkv");
        let job = Job {
            input: Path::new("film.mkv"),
            output: &output,
            element: "oldfilmrestore",
            properties: &[Property::new("temporal-radius", 2)],
            after: "",
            to_gray: false,
            label: "restore",
        };
        // `identity error-after=20` stands in for a decoder that fails on frame 20.
        let description = format!(
            "videotestsrc name=source num-buffers=60 pattern=ball ! video/x-raw,format=I420,width=64,height=48,framerate=25/1 ! \
             identity name=decode error-after=20 ! videoconvert name=prepare ! oldfilmrestore name=work ! \
             videoconvert name=finish ! {} ! filesink name=sink location={}",
            FFV1_MKV.launch,
            quote(&output)
        );
        let err = format!("{:#}", execute(&description, &job).err().expect("the run fails"));
        eprintln!("{err}");
        assert!(
            err.contains("'film.mkv' is damaged or truncated: decoding stopped after 19 frames"),
            "{err}"
        );
        assert!(err.contains("out.mkv"), "{err}");
        // All 19 good frames, including those the element held back in its window (radius 2),
        // were drained into the file.
        assert_eq!(count_frames(&output), 19);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn frame_count_from_duration_and_rate() {
        crate::init_for_tests();
        let caps = gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(30000, 1001))
            .build();
        assert_eq!(frames_in(gst::ClockTime::from_mseconds(1001), &caps), Some(30));
        let still = gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(0, 1))
            .build();
        assert_eq!(frames_in(gst::ClockTime::from_seconds(1), &still), None);
    }
}
