//! `oldfilm`: restore, degrade and score old film from the command line.
//!
//! Each command builds a GStreamer pipeline around the project's elements (linked in
//! statically, so no GST_PLUGIN_PATH is needed) and reports errors as one line naming the file
//! and what is wrong.

mod media;
mod score;
mod sheet;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "oldfilm", version, about = "Restore old film, synthesise its damage, and measure the result", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Restore a video file with oldfilmrestore (classic clean-up: deflicker, dust and dirt,
    /// line scratches, grain). OUT ending in .mkv is lossless FFV1, .mp4 is H.264.
    Restore(RestoreArgs),
    /// Add seeded, reproducible old-film damage to a clean video (oldfilmdegrade).
    Degrade(DegradeArgs),
    /// Score a restored video against a clean reference: PSNR-Y, SSIM, flicker, sharpness,
    /// and the error left on damaged pixels when a mask is given.
    Score(ScoreArgs),
    /// Show the version, the elements with their properties, and the encoders available.
    Info,
}

#[derive(Clone, Copy, ValueEnum)]
enum Compare {
    None,
    Split,
    SideBySide,
}

#[derive(Args)]
struct RestoreArgs {
    /// Video to restore (anything GStreamer decodes).
    input: PathBuf,
    /// Where to write the restored video (.mkv: lossless FFV1, .mp4: H.264).
    output: PathBuf,
    /// Past and future frames each frame is restored with (0-8).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=8))]
    temporal_radius: u32,
    /// Leave brightness flicker as it is.
    #[arg(long)]
    no_deflicker: bool,
    /// 0 keeps the brightness as it is, 1 removes all measured flicker.
    #[arg(long, default_value_t = 1.0)]
    deflicker_strength: f64,
    /// Leave dust and dirt.
    #[arg(long)]
    no_blotches: bool,
    /// Leave line scratches.
    #[arg(long)]
    no_scratches: bool,
    /// Leave the grain.
    #[arg(long)]
    no_grain: bool,
    /// 0 keeps the grain, 1 removes as much as possible.
    #[arg(long, default_value_t = 0.5)]
    grain_strength: f64,
    /// Before/after view in the output.
    #[arg(long, value_enum, default_value_t = Compare::None)]
    compare: Compare,
    /// Any other oldfilmrestore property, as NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct DegradeArgs {
    /// Clean video to damage.
    input: PathBuf,
    /// Where to write the damaged video (.mkv or .mp4).
    output: PathBuf,
    /// Seed of all damage: the same seed and input give the same output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Dust and dirt strength, 0-1.
    #[arg(long, default_value_t = 0.5)]
    blotches: f64,
    /// Line scratch strength, 0-1.
    #[arg(long, default_value_t = 0.5)]
    scratches: f64,
    /// Flicker strength, 0-1.
    #[arg(long, default_value_t = 0.5)]
    flicker: f64,
    /// Grain strength, 0-1.
    #[arg(long, default_value_t = 0.5)]
    grain: f64,
    /// Blur strength, 0-1.
    #[arg(long, default_value_t = 0.0)]
    blur: f64,
    /// Gate weave strength, 0-1.
    #[arg(long, default_value_t = 0.0)]
    gate_weave: f64,
    /// Also write where blotches (255) and scratches (128) were put, as a lossless grey video.
    #[arg(long, value_name = "MASK.mkv")]
    mask: Option<PathBuf>,
    /// Convert to grey before damaging (black-and-white film).
    #[arg(long)]
    gray: bool,
}

#[derive(Args)]
struct ScoreArgs {
    /// The video to score (usually the restored one).
    output: PathBuf,
    /// The clean reference.
    #[arg(long = "ref", value_name = "REF")]
    reference: PathBuf,
    /// The damaged input, to report its scores too and the error ratios on damaged pixels.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The damage mask written by `oldfilm degrade --mask`.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a contact sheet (input / restored / reference frames) to this PNG.
    #[arg(long, value_name = "PNG")]
    sheet: Option<PathBuf>,
    /// Score at most this many frames.
    #[arg(long)]
    max_frames: Option<usize>,
}

fn restore(args: RestoreArgs) -> Result<()> {
    let compare = match args.compare {
        Compare::None => "none",
        Compare::Split => "split",
        Compare::SideBySide => "side-by-side",
    };
    let mut props = vec![
        format!("temporal-radius={}", args.temporal_radius),
        format!("deflicker={}", !args.no_deflicker),
        format!("deflicker-strength={}", args.deflicker_strength),
        format!("blotches={}", !args.no_blotches),
        format!("scratches={}", !args.no_scratches),
        format!("grain={}", !args.no_grain),
        format!("grain-strength={}", args.grain_strength),
        format!("compare={compare}"),
    ];
    for kv in &args.set {
        props.push(media::parse_property(kv)?);
    }
    let job = media::Job {
        input: &args.input,
        output: &args.output,
        element: format!("oldfilmrestore name=work {}", props.join(" ")),
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
    let props = format!(
        "seed={} blotches={} scratches={} flicker={} grain={} blur={} gate-weave={}",
        args.seed, args.blotches, args.scratches, args.flicker, args.grain, args.blur, args.gate_weave
    );
    let job = media::Job {
        input: &args.input,
        output: &args.output,
        element: format!("oldfilmdegrade name=work {props}"),
        to_gray: args.gray,
        label: "degrade",
    };
    media::run(&job)?;
    if let Some(mask) = &args.mask {
        if mask.extension().and_then(|e| e.to_str()) != Some("mkv") {
            bail!(
                "mask '{}' must be a .mkv file (it is written losslessly)",
                mask.display()
            );
        }
        // The damage depends only on the seed and the frame index: a second pass with the same
        // settings marks exactly the damage of the first.
        let job = media::Job {
            input: &args.input,
            output: mask,
            element: format!("oldfilmdegrade name=work {props} output=mask ! videoconvert ! video/x-raw,format=GRAY8"),
            to_gray: args.gray,
            label: "mask",
        };
        media::run(&job)?;
    }
    Ok(())
}

fn info() -> Result<()> {
    println!("oldfilm {}", env!("CARGO_PKG_VERSION"));
    for name in ["oldfilmrestore", "oldfilmdegrade"] {
        let element = gst::ElementFactory::make(name)
            .build()
            .with_context(|| format!("element {name} is missing"))?;
        println!("\n{name}:");
        for pspec in gst::prelude::ObjectExt::list_properties(&element).iter() {
            if pspec.owner_type() == gst::Object::static_type() || pspec.name() == "qos" {
                continue;
            }
            let default = pspec.default_value();
            let shown = gst::glib::value::ToValue::to_value(default)
                .transform::<String>()
                .ok()
                .and_then(|v| v.get::<String>().ok())
                .unwrap_or_else(|| format!("{default:?}"));
            println!(
                "  {:<20} default {:<8} {}",
                pspec.name(),
                shown,
                pspec.blurb().unwrap_or("")
            );
        }
    }
    println!();
    for (encoder, what) in [("avenc_ffv1", ".mkv (FFV1, lossless)"), ("x264enc", ".mp4 (H.264)")] {
        let present = gst::ElementFactory::find(encoder).is_some();
        println!(
            "{what}: {}",
            if present {
                "available"
            } else {
                "missing (install gstreamer1.0-libav / -plugins-ugly)"
            }
        );
    }
    Ok(())
}

use gst::prelude::StaticType;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = gst::init()
        .context("cannot initialise GStreamer")
        .and_then(|_| gstoldfilm::register_static().context("cannot register the oldfilm elements"))
        .and_then(|_| match cli.command {
            Command::Restore(args) => restore(args),
            Command::Degrade(args) => degrade(args),
            Command::Score(args) => score::score(args),
            Command::Info => info(),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
