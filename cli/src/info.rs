//! `oldfilm info`: version, the elements' properties with ranges and defaults, encoders.

use crate::media::{FFV1_MKV, H264_MP4};
use crate::props::{describe_type, show_value};
use anyhow::{Context, Result};
use gst::prelude::*;

const ELEMENTS: [&str; 2] = ["oldfilmrestore", "oldfilmdegrade"];
const WRAP: usize = 92;

pub fn info() -> Result<()> {
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
