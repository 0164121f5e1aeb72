//! Progress on stderr: a bar (frames done / total, fps, ETA) on a terminal, a plain line every
//! two seconds otherwise (logs, CI), and a summary line at the end either way.

use indicatif::{ProgressBar, ProgressStyle};
use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
    last_line: Cell<Instant>,
    bounded: Cell<bool>,
}

const LINE_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    pub fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            start: Instant::now(),
            last_line: Cell::new(Instant::now()),
            bounded: Cell::new(false),
        }
    }

    /// `frames` done so far, of `total` when the length of the input is known.
    pub fn update(&self, frames: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            if let Some(total) = total {
                if !self.bounded.replace(true) {
                    bar.set_style(bar_style());
                }
                bar.set_length(total.max(frames));
            }
            bar.set_position(frames);
        } else if self.last_line.get().elapsed() >= LINE_EVERY {
            self.last_line.set(Instant::now());
            let of = total.map(|t| format!(" of ~{t}")).unwrap_or_default();
            eprintln!("{}: {frames}{of} frames, {:.1} fps", self.label, self.fps(frames));
        }
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn fps(&self, frames: u64) -> f64 {
        frames as f64 / self.start.elapsed().as_secs_f64().max(1e-3)
    }

    /// Clears the bar and prints the summary line.
    pub fn finish(&self, frames: u64) {
        self.abandon();
        eprintln!(
            "{}: {frames} frames in {:.1} s ({:.1} fps)",
            self.label,
            self.start.elapsed().as_secs_f64(),
            self.fps(frames)
        );
    }

    /// Clears the bar without a summary (the run failed before doing anything).
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.abandon();
    }
}

fn with_fps(style: ProgressStyle) -> ProgressStyle {
    style.with_key(
        "fps",
        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1} fps", state.per_sec());
        },
    )
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} frames, {fps}, ETA {eta}")
        .map(|s| with_fps(s).progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {spinner} {pos} frames, {fps}, {elapsed}")
        .map(with_fps)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}
