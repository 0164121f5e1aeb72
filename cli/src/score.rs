//! `oldfilm score`: decode the videos frame by frame in lockstep, score them, draw the sheet.

use crate::media::check_input;
use crate::sheet::ContactSheet;
use crate::ScoreArgs;
use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use gst_video::prelude::*;
use kernels::metrics::ScoreAccumulator;
use kernels::Plane;
use std::path::{Path, PathBuf};

/// Frames shown on the contact sheet.
const SHEET_ROWS: usize = 4;

/// Decodes a file to grey frames through an appsink.
struct Reader {
    path: PathBuf,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Reader {
    fn open(path: &Path) -> Result<Self> {
        check_input(path)?;
        let location = path.to_string_lossy().replace('\\', "\\\\").replace('"', "\\\"");
        let pipeline = gst::parse::launch(&format!(
            "filesrc location=\"{location}\" ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false max-buffers=8"
        ))
        .context("cannot build the decoding pipeline")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("no appsink"))?;
        pipeline
            .set_state(gst::State::Playing)
            .with_context(|| format!("cannot start decoding '{}'", path.display()))?;
        Ok(Reader {
            path: path.to_path_buf(),
            pipeline,
            sink,
        })
    }

    /// The next frame's luma, `None` at the end.
    fn next(&mut self, frames_read: usize) -> Result<Option<Plane>> {
        match self.sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
            Some(sample) => plane_from_sample(&sample)
                .with_context(|| format!("cannot read a frame of '{}'", self.path.display()))
                .map(Some),
            None => {
                if let Some(err) = self.error() {
                    if frames_read == 0 {
                        bail!("'{}' is not a video GStreamer can decode: {err}", self.path.display());
                    }
                    bail!("'{}' failed after {frames_read} frames: {err}", self.path.display());
                }
                Ok(None)
            }
        }
    }

    fn error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        bus.pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                _ => None,
            })
    }

    /// Frame count from duration and rate, once the stream is running.
    fn estimated_frames(&self) -> Option<usize> {
        let duration = self.pipeline.query_duration::<gst::ClockTime>()?;
        let caps = self.sink.static_pad("sink")?.current_caps()?;
        let fps = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
        (fps.numer() > 0)
            .then(|| (duration.nseconds() * fps.numer() as u64 / fps.denom() as u64 / 1_000_000_000) as usize)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn plane_from_sample(sample: &gst::Sample) -> Result<Plane> {
    let caps = sample.caps().ok_or_else(|| anyhow!("frame without caps"))?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| anyhow!("frame caps are not raw video"))?;
    let buffer = sample.buffer().ok_or_else(|| anyhow!("sample without buffer"))?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|_| anyhow!("cannot map the frame"))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).map_err(|_| anyhow!("frame has no plane"))?;
    let mut plane = Plane::new(w, h);
    for y in 0..h {
        for (v, &b) in plane.row_mut(y).iter_mut().zip(&data[y * stride..y * stride + w]) {
            *v = b as f32 / 255.0;
        }
    }
    Ok(plane)
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let mut output = Reader::open(&args.output)?;
    let mut reference = Reader::open(&args.reference)?;
    let mut input = args.input.as_deref().map(Reader::open).transpose()?;
    let mut mask = args.mask.as_deref().map(Reader::open).transpose()?;
    let mut acc = ScoreAccumulator::new();
    let mut sheet = args.sheet.as_ref().map(|_| ContactSheet::new(input.is_some()));
    let mut rows_at: Vec<usize> = Vec::new();
    let mut n = 0usize;
    loop {
        if args.max_frames.is_some_and(|m| n >= m) {
            break;
        }
        let (o, r) = (output.next(n)?, reference.next(n)?);
        let i = input.as_mut().map(|x| x.next(n)).transpose()?;
        let m = mask.as_mut().map(|x| x.next(n)).transpose()?;
        let (Some(o), Some(r)) = (o, r) else {
            break;
        };
        if i.as_ref().is_some_and(|i| i.is_none()) || m.as_ref().is_some_and(|m| m.is_none()) {
            eprintln!("warning: the input or mask ended after {n} frames; scoring those");
            break;
        }
        let (i, m) = (i.flatten(), m.flatten());
        check_size(&args.output, &o, &args.reference, &r)?;
        if let (Some(path), Some(plane)) = (&args.input, &i) {
            check_size(&args.output, &o, path, plane)?;
        }
        if let (Some(path), Some(plane)) = (&args.mask, &m) {
            check_size(&args.output, &o, path, plane)?;
        }
        if n == 0 {
            let total = reference.estimated_frames().unwrap_or(SHEET_ROWS * 10);
            let total = args.max_frames.map_or(total, |m| total.min(m));
            rows_at = (0..SHEET_ROWS)
                .map(|k| (total * (2 * k + 1)) / (2 * SHEET_ROWS))
                .collect();
        }
        if let Some(sheet) = sheet.as_mut() {
            if rows_at.contains(&n) {
                sheet.add_row(i.as_ref(), &o, &r);
            }
        }
        acc.push(&o, Some(&r), i.as_ref(), m.as_ref());
        n += 1;
    }
    if n == 0 {
        bail!("no frames to score in '{}'", args.output.display());
    }
    let ended_early = |reader: &mut Reader| reader.next(n).ok().flatten().is_some();
    if args.max_frames.is_none() && (ended_early(&mut output) || ended_early(&mut reference)) {
        eprintln!(
            "warning: '{}' and '{}' have different frame counts; scored the first {n}",
            args.output.display(),
            args.reference.display()
        );
    }
    let report = acc.report();
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if let (Some(path), Some(sheet)) = (&args.sheet, sheet) {
        sheet.write(path)?;
        eprintln!("contact sheet: {}", path.display());
    }
    Ok(())
}

fn check_size(a: &Path, pa: &Plane, b: &Path, pb: &Plane) -> Result<()> {
    if (pa.width, pa.height) != (pb.width, pb.height) {
        bail!(
            "'{}' is {}x{} but '{}' is {}x{}: frames must have the same size",
            a.display(),
            pa.width,
            pa.height,
            b.display(),
            pb.width,
            pb.height
        );
    }
    Ok(())
}
