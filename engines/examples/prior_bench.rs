//! Runs frames through a bundle and prints where it ran and how long it took.
//!
//! cargo run --release -p oldfilm-engines --example prior_bench -- BUNDLE [device] [frames] [width] [height] [steps]

use engines::{Device, DiffusionPrior, PriorConfig, RgbImage, StreamParams};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(bundle) = args.first() else {
        eprintln!("usage: prior_bench BUNDLE [auto|cpu|cuda|tensorrt] [frames] [width] [height] [steps]");
        std::process::exit(2);
    };
    let arg = |i: usize, default: usize| args.get(i).map(|s| s.parse()).transpose().map(|v| v.unwrap_or(default));
    let device: Device = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or_default();
    let (frames, width, height, steps) = (arg(2, 10)?, arg(3, 512)?, arg(4, 512)?, arg(5, 1)?);
    let mut config = PriorConfig::new(bundle);
    config.device = device;
    config.params = StreamParams {
        steps,
        ssf_max_skip: 0,
        ..StreamParams::default()
    };
    let t0 = Instant::now();
    let mut prior = DiffusionPrior::new(config)?;
    println!(
        "loaded {bundle} in {:.2} s on {}",
        t0.elapsed().as_secs_f64(),
        prior.provider()
    );
    for n in prior.provider_notes() {
        println!("  note: {n}");
    }
    let mut times = Vec::new();
    let mut out = 0;
    for i in 0..frames {
        let data = (0..3 * width * height)
            .map(|j| 0.5 + 0.4 * ((j % width) as f32 * 0.05 + i as f32 * 0.1).sin())
            .collect();
        let t = Instant::now();
        prior.push_rgb(RgbImage::from_planar(width, height, data), i == 0)?;
        while prior.pop_rgb().is_some() {
            out += 1;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    prior.drain()?;
    while prior.pop_rgb().is_some() {
        out += 1;
    }
    let steady = &times[times.len().min(2)..];
    let mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    println!(
        "{frames} frames {width}x{height}, {} steps: first {:.1} ms, then mean {:.1} ms/frame ({:.2} fps); {} out; {:?}",
        prior.timesteps().len(),
        times[0],
        mean,
        1e3 / mean,
        out,
        prior.stats()
    );
    Ok(())
}
