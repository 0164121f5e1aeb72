//! `oldfilm`: restore, degrade and score old film from the command line.
//!
//! Each command builds a GStreamer pipeline around the project's elements (linked in
//! statically, so no GST_PLUGIN_PATH is needed) and reports errors as one line naming the file
//! and what is wrong.

mod bench;
mod export;
mod info;
mod media;
mod progress;
mod props;
mod score;
mod sheet;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use props::Property;
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str = "Restore old film, synthesise its damage, and measure the result";

const LONG_ABOUT: &str = "\
Restore old film, synthesise its damage, and measure the result.

oldfilm runs the oldfilmrestore and oldfilmdegrade GStreamer elements on video files. It reads
anything GStreamer can decode and writes .mkv (lossless FFV1, grey stays grey) or .mp4 (H.264).
Progress goes to stderr: a bar on a terminal, a line every two seconds otherwise. Errors are one
line starting with 'error:' and a non-zero exit status.";

const EXAMPLES: &str = "\
Examples:
  oldfilm restore reel1.mkv reel1-restored.mkv
  oldfilm restore reel1.mkv preview.mp4 --compare split --set grain-strength=0.3
  oldfilm degrade clean.mkv damaged.mkv --seed 7 --mask mask.mkv
  oldfilm score --ref clean.mkv --input damaged.mkv --mask mask.mkv --sheet sheet.png restored.mkv
  oldfilm info";

const RESTORE_ABOUT: &str = "\
Restore a video file with the oldfilmrestore element: remove brightness flicker, dust and\n\
dirt (blotches), vertical line scratches, and reduce grain, using neighbouring frames\n\
aligned by motion.\n\
\n\
Pipeline: filesrc ! decodebin ! videoconvert ! oldfilmrestore ! videoconvert ! encoder !\n\
filesink. The encoder follows OUTPUT's extension: .mkv is lossless FFV1 (grey input stays\n\
grey), .mp4 is H.264 (x264, quantizer 18). Options not given keep the element's defaults\n\
(`oldfilm info` lists them). At the end it prints the element's statistics in one line.";

const DEGRADE_ABOUT: &str = "\
Add old-film damage to a clean video with the oldfilmdegrade element: blotches, line\n\
scratches, flicker, grain, blur and gate weave, each with a strength from 0 (off) to 1\n\
(heavy). The damage depends only on the seed and the frame number, so the same seed and\n\
input always give the same output.\n\
\n\
With --mask, a second pass with the same seed writes where the damage is, as a lossless grey\n\
video: 0 clean, 128 line scratch, 255 blotch. `oldfilm score --mask` uses it to measure how\n\
much of the damage a restoration removed.";

const SCORE_ABOUT: &str = "\
Score a restored video against the clean reference, frame by frame on luma: PSNR-Y, SSIM,\n\
flicker (frame-to-frame brightness jumps), sharpness kept, temporal spikes, and with --input\n\
the same scores of the damaged input for comparison. With --mask (from `oldfilm degrade\n\
--mask`) it also reports the error left on blotch and scratch pixels relative to the\n\
input's.\n\
\n\
All files must have the same frame size. When they differ in length, the common first frames\n\
are scored and a warning says so. The report goes to stdout (a table, or JSON with --json).\n\
--sheet writes a PNG of four frames spread over the clip, input | restored | reference, to\n\
look at.";

const BENCH_ABOUT: &str = "\
Time oldfilmrestore with your settings on your footage: frames are decoded into memory first (or
a test pattern damaged by oldfilmdegrade is made), then pushed through the element as fast as it
takes them, and through identity in the same run as the baseline. Prints frames per second, the
time per frame against the baseline, whether it keeps up with the footage's frame rate, the
machine, and the element's statistics (per-stage times, the engine's provider). A short warm-up
run first keeps engine loading and TensorRT engine builds off the clock.";

const EXPORT_ABOUT: &str = "\
Export an engine bundle for oldfilmrestore's diffusion prior: TAESD encoder and decoder, the UNet
and the prompt embeddings as ONNX + safetensors, with a manifest. It runs the project's Python
exporter (built into this binary) in your Python, which needs the exporter's packages (torch,
diffusers, transformers, onnx: write requirements.txt out with --write-script DIR). Real weights
must already be on disk or in the Hugging Face cache: nothing is downloaded. The bundle written
is then opened with the element's own checks.";

const INFO_ABOUT: &str = "\
Show the version, every property of oldfilmrestore and oldfilmdegrade with its range and\n\
default (any of them can be set with `--set NAME=VALUE`), and whether the encoders for .mkv\n\
and .mp4 output are installed.";

#[derive(Parser)]
#[command(name = "oldfilm", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Restore a video file: deflicker, dust and dirt, line scratches, grain.
    #[command(
        long_about = RESTORE_ABOUT,
        after_help = "Examples:\n  oldfilm restore reel1.mkv restored.mkv\n  \
oldfilm restore reel1.mkv restored.mkv --temporal-radius 3 --no-grain\n  \
oldfilm restore reel1.mkv preview.mp4 --compare side-by-side --set cut-threshold=0.4"
    )]
    Restore(RestoreArgs),
    /// Add seeded, reproducible old-film damage to a clean video.
    #[command(
        long_about = DEGRADE_ABOUT,
        after_help = "Examples:\n  oldfilm degrade clean.mkv damaged.mkv --seed 7 --mask mask.mkv\n  \
oldfilm degrade colour.mp4 old.mkv --seed 1 --gray --blotches 0.8 --gate-weave 0.3"
    )]
    Degrade(DegradeArgs),
    /// Score a restored video against the clean reference (PSNR, SSIM, flicker, ...).
    #[command(
        long_about = SCORE_ABOUT,
        after_help = "Examples:\n  oldfilm score --ref clean.mkv restored.mkv\n  \
oldfilm score --ref clean.mkv --input damaged.mkv --mask mask.mkv --json restored.mkv\n  \
oldfilm score --ref clean.mkv --input damaged.mkv --sheet sheet.png restored.mkv"
    )]
    Score(ScoreArgs),
    /// Export an engine bundle for the diffusion prior (runs the Python exporter).
    #[command(
        long_about = EXPORT_ABOUT,
        after_help = "Examples:\n  oldfilm export bundles/sd-turbo --from-pretrained stabilityai/sd-turbo --batch 1 --fp16\n  \
oldfilm export bundles/lcm --from-pretrained runwayml/stable-diffusion-v1-5 --lcm-lora latent-consistency/lcm-lora-sdv1-5 --kind lcm\n  \
oldfilm export bundles/random --random-weights\n  \
oldfilm export bundles/mycnn --image-model restore.onnx --range minus-one-one --size 256"
    )]
    Export(export::ExportArgs),
    /// Time oldfilmrestore on your footage (or a test pattern) against a pass-through, in one run.
    #[command(
        long_about = BENCH_ABOUT,
        after_help = "Examples:\n  oldfilm bench --size 1920x1080 --format I420\n  \
oldfilm bench reel1.mkv --frames 200 --set grain-strength=0.3\n  \
oldfilm bench --size 1920x1080 --engine bundles/sd-turbo --device tensorrt"
    )]
    Bench(bench::BenchArgs),
    /// Show the version, the elements and their properties, and the encoders available.
    #[command(
        long_about = INFO_ABOUT,
        after_help = "Examples:\n  oldfilm info\n  oldfilm info --engine bundles/sd-turbo --device tensorrt"
    )]
    Info(info::InfoArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Compare {
    /// The restored picture only.
    None,
    /// Left half original, right half restored.
    Split,
    /// Original and restored next to each other (double width).
    SideBySide,
}

#[derive(Args)]
struct RestoreArgs {
    /// Video to restore (anything GStreamer decodes).
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Restored video to write: .mkv (lossless FFV1) or .mp4 (H.264).
    #[arg(value_name = "OUTPUT")]
    output: PathBuf,
    /// Past and future frames each frame is restored with, 0-8 (element default 2).
    #[arg(long, value_name = "N")]
    temporal_radius: Option<u32>,
    /// Leave brightness flicker as it is.
    #[arg(long)]
    no_deflicker: bool,
    /// How much of the measured flicker to remove, 0-1 (element default 1).
    #[arg(long, value_name = "F")]
    deflicker_strength: Option<f64>,
    /// Leave dust and dirt (blotches).
    #[arg(long)]
    no_blotches: bool,
    /// Leave line scratches.
    #[arg(long)]
    no_scratches: bool,
    /// Leave the grain.
    #[arg(long)]
    no_grain: bool,
    /// How much grain to remove, 0 (keep) to 1 (element default 1).
    #[arg(long, value_name = "F")]
    grain_strength: Option<f64>,
    /// Frames either side the grain filter averages, 1 or 2 (element default 1; 2 removes more
    /// heavy grain, about an eighth slower).
    #[arg(long, value_name = "N")]
    grain_radius: Option<u32>,
    /// Before/after view in the output, for previews.
    #[arg(long, value_enum, value_name = "MODE")]
    compare: Option<Compare>,
    /// Run the diffusion prior from this engine bundle after the classic stages
    /// (see engines/README.md for exporting one).
    #[arg(long, value_name = "DIR")]
    engine: Option<PathBuf>,
    /// Where the engine runs: auto, cpu, cuda or tensorrt (element default auto).
    #[arg(long, value_name = "DEVICE", requires = "engine")]
    device: Option<String>,
    /// Set any oldfilmrestore property (repeatable; `oldfilm info` lists them).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct DegradeArgs {
    /// Clean video to damage.
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Damaged video to write: .mkv (lossless FFV1) or .mp4 (H.264).
    #[arg(value_name = "OUTPUT")]
    output: PathBuf,
    /// Seed of all damage: the same seed and input give the same output.
    #[arg(long, value_name = "N")]
    seed: u64,
    /// Dust and dirt, 0-1 (element default 0.5).
    #[arg(long, value_name = "F")]
    blotches: Option<f64>,
    /// Vertical line scratches, 0-1 (element default 0.5).
    #[arg(long, value_name = "F")]
    scratches: Option<f64>,
    /// Brightness flicker, 0-1 (element default 0.5).
    #[arg(long, value_name = "F")]
    flicker: Option<f64>,
    /// Film grain, 0-1 (element default 0.5).
    #[arg(long, value_name = "F")]
    grain: Option<f64>,
    /// Soft focus, 0-1 (element default 0).
    #[arg(long, value_name = "F")]
    blur: Option<f64>,
    /// Frame-to-frame picture shake, 0-1 (element default 0).
    #[arg(long, value_name = "F")]
    gate_weave: Option<f64>,
    /// Also write the damage mask here (.mkv, lossless grey: 0 clean, 128 scratch, 255 blotch).
    #[arg(long, value_name = "MASK.mkv")]
    mask: Option<PathBuf>,
    /// Convert to grey before damaging (black-and-white film).
    #[arg(long)]
    gray: bool,
    /// Set any other oldfilmdegrade property (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct ScoreArgs {
    /// The video to score (usually the restored one).
    #[arg(value_name = "OUTPUT")]
    output: PathBuf,
    /// The clean reference.
    #[arg(long = "ref", value_name = "REF")]
    reference: PathBuf,
    /// The damaged input, to score it too (the "before" numbers).
    #[arg(long, value_name = "IN")]
    input: Option<PathBuf>,
    /// The damage mask from `oldfilm degrade --mask`, to measure what is left of the damage.
    #[arg(long, value_name = "MASK")]
    mask: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write a contact sheet: 4 frames, input / restored / reference side by side.
    #[arg(long, value_name = "PNG")]
    sheet: Option<PathBuf>,
    /// Score at most the first N frames.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    max_frames: Option<u64>,
}

fn at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number, 1 or more".to_string()),
    }
}

/// The oldfilmrestore properties a `restore` command line sets, in order (`--set` last).
fn restore_properties(args: &RestoreArgs) -> Result<Vec<Property>> {
    let mut props = Vec::new();
    if let Some(r) = args.temporal_radius {
        props.push(Property::new("temporal-radius", r));
    }
    for (off, name) in [
        (args.no_deflicker, "deflicker"),
        (args.no_blotches, "blotches"),
        (args.no_scratches, "scratches"),
        (args.no_grain, "grain"),
    ] {
        if off {
            props.push(Property::new(name, false));
        }
    }
    if let Some(s) = args.deflicker_strength {
        props.push(Property::new("deflicker-strength", s));
    }
    if let Some(s) = args.grain_strength {
        props.push(Property::new("grain-strength", s));
    }
    if let Some(r) = args.grain_radius {
        props.push(Property::new("grain-radius", r));
    }
    if let Some(c) = args.compare {
        let nick = match c {
            Compare::None => "none",
            Compare::Split => "split",
            Compare::SideBySide => "side-by-side",
        };
        props.push(Property::new("compare", nick));
    }
    if let Some(engine) = &args.engine {
        if !engine.is_dir() {
            anyhow::bail!("engine bundle '{}' is not a folder", engine.display());
        }
        props.push(Property::new("engine", engine.to_string_lossy().as_ref()));
    }
    if let Some(device) = &args.device {
        props.push(Property::new("device", device.as_str()));
    }
    for kv in &args.set {
        props.push(props::parse_set(kv)?);
    }
    Ok(props)
}

/// The oldfilmdegrade properties a `degrade` command line sets.
fn degrade_properties(args: &DegradeArgs) -> Result<Vec<Property>> {
    let mut props = vec![Property::new("seed", args.seed)];
    for (value, name) in [
        (args.blotches, "blotches"),
        (args.scratches, "scratches"),
        (args.flicker, "flicker"),
        (args.grain, "grain"),
        (args.blur, "blur"),
        (args.gate_weave, "gate-weave"),
    ] {
        if let Some(v) = value {
            props.push(Property::new(name, v));
        }
    }
    for kv in &args.set {
        let p = props::parse_set(kv)?;
        if p.name == "output" {
            bail!("--set output=... is not for the command line: use --mask to write the mask");
        }
        props.push(p);
    }
    Ok(props)
}

fn restore(args: RestoreArgs) -> Result<()> {
    let properties = restore_properties(&args)?;
    let job = media::Job {
        input: &args.input,
        output: &args.output,
        element: "oldfilmrestore",
        properties: &properties,
        after: "",
        to_gray: false,
        label: "restore",
    };
    let summary = media::run(&job)?;
    if let Some(stats) = summary.stats {
        eprintln!("{stats}");
    }
    Ok(())
}

fn degrade(args: DegradeArgs) -> Result<()> {
    let properties = degrade_properties(&args)?;
    // Check everything before the first pass, so a bad mask path does not cost a whole run.
    media::check_input(&args.input)?;
    media::check_output(&args.output, &[&args.input])?;
    if let Some(mask) = &args.mask {
        if !mask
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("mkv"))
        {
            bail!(
                "cannot write mask '{}': a mask must be .mkv (it is written losslessly)",
                mask.display()
            );
        }
        media::check_output(mask, &[&args.input])?;
        if media::same_path(mask, &args.output) {
            bail!("cannot write mask '{}': it is also the output", mask.display());
        }
    }
    let job = media::Job {
        input: &args.input,
        output: &args.output,
        element: "oldfilmdegrade",
        properties: &properties,
        after: "",
        to_gray: args.gray,
        label: "degrade",
    };
    media::run(&job)?;
    if let Some(mask) = &args.mask {
        // The damage depends only on the seed and the frame index: a second pass with the same
        // settings marks exactly the damage of the first.
        let mut properties = properties.clone();
        properties.push(Property::new("output", "mask"));
        let job = media::Job {
            input: &args.input,
            output: mask,
            element: "oldfilmdegrade",
            properties: &properties,
            after: "videoconvert ! video/x-raw,format=GRAY8",
            to_gray: args.gray,
            label: "mask",
        };
        media::run(&job)?;
    }
    Ok(())
}

fn run(command: Command) -> Result<()> {
    match command {
        // The exporter needs Python, not GStreamer.
        Command::Export(args) => export::export(args),
        other => run_with_gstreamer(other),
    }
}

fn run_with_gstreamer(command: Command) -> Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    gstoldfilm::register_static().context("cannot register the oldfilm elements")?;
    match command {
        Command::Restore(args) => restore(args),
        Command::Degrade(args) => degrade(args),
        Command::Score(args) => score::score(args),
        Command::Info(args) => info::info(args),
        Command::Bench(args) => bench::bench(args),
        Command::Export(args) => export::export(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error chain holds.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// GStreamer and the elements, once per test binary (registering from several test threads
/// at once races).
#[cfg(test)]
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().unwrap();
        gstoldfilm::register_static().unwrap();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("oldfilm").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn restore_sets_only_what_was_given() {
        let Command::Restore(args) = parse(&["restore", "a.mkv", "b.mkv"]).command else {
            panic!()
        };
        assert!(restore_properties(&args).unwrap().is_empty());
        let Command::Restore(args) = parse(&[
            "restore",
            "a.mkv",
            "b.mkv",
            "--temporal-radius",
            "3",
            "--no-deflicker",
            "--compare",
            "side-by-side",
            "--set",
            "cut-threshold=0.4",
        ])
        .command
        else {
            panic!()
        };
        let props = restore_properties(&args).unwrap();
        assert_eq!(
            props,
            vec![
                Property::new("temporal-radius", 3),
                Property::new("deflicker", false),
                Property::new("compare", "side-by-side"),
                Property::new("cut-threshold", "0.4"),
            ]
        );
    }

    #[test]
    fn degrade_needs_a_seed() {
        let r = Cli::try_parse_from(["oldfilm", "degrade", "a.mkv", "b.mkv"]);
        assert!(r.is_err());
        let Command::Degrade(args) =
            parse(&["degrade", "a.mkv", "b.mkv", "--seed", "4", "--gate-weave", "0.2"]).command
        else {
            panic!()
        };
        let props = degrade_properties(&args).unwrap();
        assert_eq!(props, vec![Property::new("seed", 4), Property::new("gate-weave", 0.2)]);
    }

    /// Every property name the typed options set exists on the element with a value it takes,
    /// so renaming one in the plugin breaks this test rather than the command line.
    #[test]
    fn typed_options_match_the_elements() {
        crate::init_for_tests();
        let Command::Restore(args) = parse(&[
            "restore",
            "a.mkv",
            "b.mkv",
            "--temporal-radius",
            "3",
            "--no-deflicker",
            "--no-blotches",
            "--no-scratches",
            "--no-grain",
            "--deflicker-strength",
            "0.5",
            "--grain-strength",
            "0.5",
            "--grain-radius",
            "2",
            "--compare",
            "split",
        ])
        .command
        else {
            panic!()
        };
        let restore = gst::ElementFactory::make("oldfilmrestore").build().unwrap();
        props::apply(&restore, &restore_properties(&args).unwrap()).unwrap();
        let Command::Degrade(args) = parse(&[
            "degrade",
            "a.mkv",
            "b.mkv",
            "--seed",
            "1",
            "--blotches",
            "0.1",
            "--scratches",
            "0.1",
            "--flicker",
            "0.1",
            "--grain",
            "0.1",
            "--blur",
            "0.1",
            "--gate-weave",
            "0.1",
        ])
        .command
        else {
            panic!()
        };
        let degrade = gst::ElementFactory::make("oldfilmdegrade").build().unwrap();
        let mut props = degrade_properties(&args).unwrap();
        props.push(Property::new("output", "mask"));
        props::apply(&degrade, &props).unwrap();
    }
}
