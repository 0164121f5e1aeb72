//! `oldfilm info`: version, the elements' properties with ranges and defaults, encoders.

use crate::media::{FFV1_MKV, H264_MP4};
use crate::props::{describe_type, show_value};
use anyhow::{Context, Result};
use clap::Args;
use gst::prelude::*;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Also open this engine bundle and say how it would run here: kind, tile size, dtype, timesteps, the
    /// execution provider ONNX Runtime gives it (and each fallback), and whether the GPU-resident path applies.
    #[arg(long, value_name = "DIR")]
    engine: Option<PathBuf>,
    /// Device to try the engine on: auto, cpu, cuda or tensorrt.
    #[arg(long, value_name = "DEVICE", default_value = "auto", requires = "engine")]
    device: String,
}

const ELEMENTS: [&str; 2] = ["oldfilmrestore", "oldfilmdegrade"];
const WRAP: usize = 92;

pub fn info(args: InfoArgs) -> Result<()> {
    match &args.engine {
        Some(bundle) => engine_info(bundle, &args.device),
        None => elements_info(),
    }
}

/// How an engine bundle would run on this machine.
fn engine_info(bundle: &std::path::Path, device: &str) -> Result<()> {
    let opened = engines::Bundle::open(bundle)?;
    let m = &opened.manifest;
    println!("engine bundle {}", bundle.display());
    println!(
        "  kind {:?}, {}x{} tiles, {:?}, batch {}",
        opened.kind(),
        m.model.width,
        m.model.height,
        m.dtype,
        if m.model.batch == 0 {
            "dynamic".to_string()
        } else {
            m.model.batch.to_string()
        }
    );
    let mut config = engines::PriorConfig::new(bundle);
    config.device = device
        .parse()
        .map_err(|e: engines::EngineError| anyhow::anyhow!("{e}"))?;
    let started = std::time::Instant::now();
    let prior = engines::DiffusionPrior::new(config)?;
    println!(
        "  runs on {} (device={device}, loaded in {:.2} s); timesteps {:?}",
        prior.provider(),
        started.elapsed().as_secs_f64(),
        prior.timesteps()
    );
    for note in prior.provider_notes() {
        println!("  note: {note}");
    }
    let gpu = match kernels::cuda::available() {
        Ok(()) => "CUDA present: with device auto, cuda or tensorrt the element runs the GPU-resident path for turbo and one-step LCM float32 bundles".to_string(),
        Err(e) => format!("GPU-resident path unavailable: {e}"),
    };
    for line in wrap(&gpu, WRAP - 2) {
        println!("  {line}");
    }
    Ok(())
}

fn elements_info() -> Result<()> {
    let plugin = gst::Registry::get()
        .find_plugin("oldfilm")
        .map(|p| p.version().to_string())
        .unwrap_or_else(|| "?".into());
    println!(
        "oldfilm {} (plugin {plugin}, {})",
        env!("CARGO_PKG_VERSION"),
        gst::version_string()
    );
    for name in ELEMENTS {
        let factory = gst::ElementFactory::find(name).with_context(|| format!("element {name} is missing"))?;
        let element = factory
            .create()
            .build()
            .with_context(|| format!("cannot create {name}"))?;
        println!();
        println!("{name}: {}", factory.longname());
        for line in wrap(factory.description(), WRAP - 2) {
            println!("  {line}");
        }
        println!();
        println!("  {:<20} {:<14} TAKES", "PROPERTY", "DEFAULT");
        for pspec in element.list_properties().iter() {
            // Inherited GstObject / GstBaseTransform plumbing is not about film.
            if pspec.owner_type() != element.type_() {
                continue;
            }
            let default = show_value(pspec.default_value());
            println!("  {:<20} {:<14} {}", pspec.name(), default, describe_type(pspec));
            for line in wrap(pspec.blurb().unwrap_or(""), WRAP - 6) {
                println!("      {line}");
            }
        }
    }
    println!();
    println!("Output formats (by extension):");
    for (ext, encoder) in [(".mkv", FFV1_MKV), (".mp4", H264_MP4)] {
        let missing: Vec<String> = encoder
            .needs
            .iter()
            .filter(|(e, _)| gst::ElementFactory::find(e).is_none())
            .map(|(e, package)| format!("{e} (install {package})"))
            .collect();
        let state = if missing.is_empty() {
            "available".to_string()
        } else {
            format!("MISSING {}", missing.join(", "))
        };
        println!("  {ext:<5} {:<28} {state}", encoder.what);
    }
    Ok(())
}

/// Greedy word wrap at `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_words_and_width() {
        let lines = wrap("aa bb cc dd ee", 5);
        assert_eq!(lines, vec!["aa bb", "cc dd", "ee"]);
        assert!(wrap("", 10).is_empty());
        assert_eq!(wrap("averyveryverylongword x", 5), vec!["averyveryverylongword", "x"]);
    }
}
