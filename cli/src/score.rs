//! `oldfilm score`: decode the videos frame by frame in lockstep, score them, draw the sheet.

use crate::media::{check_input, check_writable, frames_in, quote};
use crate::progress::Progress;
use crate::sheet::ContactSheet;
use crate::ScoreArgs;
use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use gst_video::prelude::*;
use kernels::metrics::ScoreAccumulator;
use kernels::Plane;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a decoder may go without producing a frame before we give up on it.
const STALL: Duration = Duration::from_secs(120);

/// Decodes a file to grey frames (luma only) through an appsink.
struct Reader {
    path: PathBuf,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    frames: usize,
}

impl Reader {
    fn open(path: &Path) -> Result<Self> {
        check_input(path)?;
        let pipeline = gst::parse::launch(&format!(
            "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false max-buffers=4",
            quote(path)
        ))
        .context("cannot build the decoding pipeline (are the GStreamer plugins installed?)")?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("the decoding pipeline is not a pipeline"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("the decoding pipeline has no appsink"))?;
        let reader = Reader {
            path: path.to_path_buf(),
            pipeline,
            sink,
            frames: 0,
        };
        if reader.pipeline.set_state(gst::State::Playing).is_err() {
            return Err(reader.failure("cannot start decoding"));
        }
        Ok(reader)
    }

    /// The next frame's luma, `None` at the end of the stream.
    fn next(&mut self) -> Result<Option<Plane>> {
        let start = Instant::now();
        loop {
            if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                self.frames += 1;
                return plane_from_sample(&sample)
                    .with_context(|| format!("cannot read frame {} of '{}'", self.frames, self.path.display()))
                    .map(Some);
            }
            if let Some(error) = self.error() {
                return Err(self.explain(&error));
            }
            if self.sink.is_eos() {
                return Ok(None);
            }
            if start.elapsed() > STALL {
                bail!(
                    "'{}' stopped producing frames after {} frames",
                    self.path.display(),
                    self.frames
                );
            }
        }
    }

    fn error(&self) -> Option<(String, bool)> {
        let msg = self.pipeline.bus()?.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(e) => {
                let not_linked = e.debug().is_some_and(|d| d.contains("not-linked"));
                Some((e.error().to_string(), not_linked))
            }
            _ => None,
        }
    }

    fn explain(&self, (error, not_linked): &(String, bool)) -> anyhow::Error {
        let path = self.path.display();
        if self.frames == 0 {
            let detail = if *not_linked {
                "it has no video stream".to_string()
            } else {
                error.clone()
            };
            anyhow!("'{path}' is not a video GStreamer can decode: {detail}")
        } else {
            anyhow!(
                "'{path}' is damaged or truncated: decoding failed after {} frames: {error}",
                self.frames
            )
        }
    }

    fn failure(&self, what: &str) -> anyhow::Error {
        // The reason is on the bus, usually at once; wait a moment for it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(error) = self.error() {
                return self.explain(&error);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow!("{what} '{}'", self.path.display())
    }

    /// Frame count from duration and rate, once the stream is running.
    fn estimated_frames(&self) -> Option<u64> {
        let duration = self.pipeline.query_duration::<gst::ClockTime>()?;
        let caps = self.sink.static_pad("sink")?.current_caps()?;
        frames_in(duration, &caps)
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

/// The role of each file, in the order frames are pulled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Output,
    Reference,
    Input,
    Mask,
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let mut files: Vec<(Role, &Path)> = vec![(Role::Output, &args.output), (Role::Reference, &args.reference)];
    if let Some(p) = &args.input {
        files.push((Role::Input, p));
    }
    if let Some(p) = &args.mask {
        files.push((Role::Mask, p));
    }
    for (_, path) in &files {
        check_input(path)?;
    }
    if let Some(sheet) = &args.sheet {
        let inputs: Vec<&Path> = files.iter().map(|(_, p)| *p).collect();
        check_writable(sheet, &inputs)?;
    }
    let mut readers = files.iter().map(|(_, p)| Reader::open(p)).collect::<Result<Vec<_>>>()?;
    let mut acc = ScoreAccumulator::new();
    let mut sheet: Option<ContactSheet> = None;
    let progress = Progress::new("score");
    let mut n = 0usize;
    let mut ended: Vec<usize> = Vec::new();
    while !matches!(args.max_frames, Some(m) if n as u64 >= m) {
        let mut planes: Vec<Option<Plane>> = Vec::with_capacity(readers.len());
        for reader in readers.iter_mut() {
            planes.push(reader.next()?);
        }
        ended = (0..planes.len()).filter(|&i| planes[i].is_none()).collect();
        if !ended.is_empty() {
            break;
        }
        let planes: Vec<Plane> = planes.into_iter().flatten().collect();
        let out = &planes[0];
        for (i, plane) in planes.iter().enumerate().skip(1) {
            check_size(files[0].1, out, files[i].1, plane)?;
        }
        let get = |role: Role| files.iter().position(|(r, _)| *r == role).map(|i| &planes[i]);
        let (reference, input, mask) = (get(Role::Reference), get(Role::Input), get(Role::Mask));
        let sheet = sheet.get_or_insert_with(|| {
            let labels = if input.is_some() {
                vec!["INPUT", "RESTORED", "REFERENCE"]
            } else {
                vec!["RESTORED", "REFERENCE"]
            };
            ContactSheet::new(labels, out.width, out.height)
        });
        if args.sheet.is_some() && sheet.wants(n) {
            let mut columns: Vec<&Plane> = input.into_iter().collect();
            columns.push(out);
            columns.extend(reference);
            sheet.add(n, &columns);
        }
        acc.push(out, reference, input, mask);
        n += 1;
        let total = readers.iter().filter_map(Reader::estimated_frames).min();
        progress.update(n as u64, total.map(|t| args.max_frames.map_or(t, |m| t.min(m))));
    }
    progress.finish(n as u64);
    if n == 0 {
        let empty: Vec<String> = ended.iter().map(|&i| format!("'{}'", files[i].1.display())).collect();
        let verb = if empty.len() == 1 { "has" } else { "have" };
        bail!("no frames to score: {} {verb} no frames", join(&empty));
    }
    if !ended.is_empty() && ended.len() < files.len() {
        let name = |i: &usize| format!("'{}'", files[*i].1.display());
        let short: Vec<String> = ended.iter().map(name).collect();
        let longer: Vec<String> = (0..files.len())
            .filter(|i| !ended.contains(i))
            .map(|i| name(&i))
            .collect();
        eprintln!(
            "warning: the files differ in length: {} {} after {n} frames, {} {} more; scored the first {n}",
            join(&short),
            if short.len() == 1 { "ends" } else { "end" },
            join(&longer),
            if longer.len() == 1 { "has" } else { "have" },
        );
    }
    drop(readers);
    let report = acc.report();
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if let (Some(path), Some(sheet)) = (&args.sheet, sheet) {
        sheet.write(path, n)?;
        eprintln!("contact sheet: {}", path.display());
    }
    Ok(())
}

/// "a", "a and b", "a, b and c".
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn check_size(a: &Path, pa: &Plane, b: &Path, pb: &Plane) -> Result<()> {
    if (pa.width, pa.height) != (pb.width, pb.height) {
        bail!(
            "'{}' is {}x{} but '{}' is {}x{}: the frames must have the same size",
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

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn names_join_like_prose() {
        let s = |v: &[&str]| join(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["a"]), "a");
        assert_eq!(s(&["a", "b"]), "a and b");
        assert_eq!(s(&["a", "b", "c"]), "a, b and c");
    }
}
