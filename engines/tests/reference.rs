//! The Rust prior against the Python reference (engines/export/reference.py) on the tiny fixtures: every step of
//! one frame, then whole sequences (similarity filter, latent cache, stream batch).

mod common;

use common::{assert_close, bundle, require_onnxruntime, Reference};
use engines::models::Models;
use engines::noise::{gaussian, noise_stream, uniform, SSF_STREAM};
use engines::runtime::RuntimeOptions;
use engines::schedule::{add_noise, coeffs, denoise};
use engines::tiling::Grid;
use engines::{Bundle, Device, DiffusionPrior, PriorConfig, StreamParams, Tensor};

fn cpu_options() -> RuntimeOptions {
    RuntimeOptions {
        device: Device::Cpu,
        ..Default::default()
    }
}

#[test]
fn seeded_noise_matches_the_reference_generator() {
    let r = Reference::load("noise.safetensors");
    assert_eq!(gaussian(7, noise_stream(0, 0), 1000), r.get("gaussian_s7_t0").1);
    assert_eq!(gaussian(123, noise_stream(3, 2), 1000), r.get("gaussian_s123_t3_2").1);
    let u: Vec<f32> = (0..64).map(|i| uniform(7, SSF_STREAM, i) as f32).collect();
    assert_eq!(u, r.get("uniform_s7_ssf").1);
}

#[test]
fn turbo_frame_every_step_matches_the_reference() {
    require_onnxruntime();
    let r = Reference::load("turbo_frame.safetensors");
    let b = Bundle::open(bundle("tiny-turbo")).unwrap();
    let s = b.scheduler().unwrap().clone();
    let (mut models, provider) = Models::load(&b, &cpu_options(), &mut Vec::new()).unwrap();
    assert_eq!(provider.name(), "CPUExecutionProvider");
    let Models::Diffusion(d) = &mut models else {
        panic!("diffusion bundle")
    };
    let frame = r.frame("frame_in", 0);
    let overlap: usize = r.param("overlap");
    let seed: u64 = r.param("seed");
    let sigma: f32 = r.param("sigma");
    let t: usize = r.param("timesteps");

    // Tiling and encode.
    let grid = Grid::new(frame.width, frame.height, 64, 64, overlap);
    assert_eq!(grid.len(), 4);
    let tiles = Tensor {
        shape: vec![4, 3, 64, 64],
        data: grid.extract_all(&frame),
    };
    let z0 = d.encode(&tiles).unwrap();
    assert_close("encode", &z0.data, &r.get("z0").1, 1e-5);

    // Fixed noise and noising, from the reference's own latents so each step is checked alone.
    let z0r = r.tensor("z0");
    let (a, bb) = coeffs(&s, t);
    let mut zt = z0r.clone();
    let mut noise = Vec::new();
    for i in 0..4 {
        let eps = gaussian(seed, noise_stream(i, 0), z0r.item_len());
        add_noise(z0r.item(i), &eps, a, bb, zt.item_mut(i));
        noise.extend(eps);
    }
    assert_eq!(noise, r.get("noise").1);
    assert_close("add noise", &zt.data, &r.get("zt").1, 1e-6);

    // UNet, scheduler step, decode, colour fix, blend.
    let ztr = r.tensor("zt");
    let pred = d.predict(&ztr, &[t; 4]).unwrap();
    assert_close("unet", &pred.data, &r.get("unet_out").1, 1e-5);
    let mut den = r.tensor("unet_out");
    for i in 0..4 {
        denoise(&s, t, ztr.item(i), den.item_mut(i));
    }
    assert_close("denoise", &den.data, &r.get("den").1, 1e-5);
    let decoded = d.decode(&r.tensor("den")).unwrap();
    assert_close("decode", &decoded.data, &r.get("decoded").1, 1e-5);
    let mut fixed = r.tensor("decoded");
    for i in 0..4 {
        engines::image::colour_fix(fixed.item_mut(i), tiles.item(i), 3, 64, 64, sigma);
    }
    assert_close("colour fix", &fixed.data, &r.get("fixed").1, 1e-5);
    let out = grid.blend(&r.get("fixed").1);
    assert_close("blend", &out.data, &r.get("frame_out").1, 1e-6);

    // And the whole thing through the public API.
    let mut config = PriorConfig::new(bundle("tiny-turbo"));
    config.device = Device::Cpu;
    config.params = StreamParams {
        strength: r.param("strength"),
        seed,
        tile_overlap: overlap,
        colour_fix_sigma: sigma,
        ssf_max_skip: 0,
        temporal_blend: 0.0,
        ..StreamParams::default()
    };
    let mut prior = DiffusionPrior::new(config).unwrap();
    assert_eq!(prior.timesteps(), &[t]);
    prior.push_rgb(frame, true).unwrap();
    let (restored, image) = prior.pop_rgb().expect("turbo has no latency");
    assert_eq!((restored.seq, restored.skipped), (0, false));
    assert_close("prior", &image.data, &r.get("frame_out").1, 1e-4);
}

fn run_sequence(
    bundle_name: &str,
    r: &Reference,
    params: StreamParams,
    frames_from: &Reference,
) -> (Vec<usize>, DiffusionPrior, Vec<(engines::Restored, engines::RgbImage)>) {
    let mut config = PriorConfig::new(bundle(bundle_name));
    config.device = Device::Cpu;
    config.params = params;
    let mut prior = DiffusionPrior::new(config).unwrap();
    let starts = &frames_from.get("starts_shot").1;
    let mut out = Vec::new();
    let mut counts = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let seq = prior.push_rgb(frames_from.frame("frames_in", i), s > 0.5).unwrap();
        assert_eq!(seq, i as u64);
        while let Some(o) = prior.pop_rgb() {
            out.push(o);
        }
        counts.push(out.len());
    }
    prior.drain().unwrap();
    while let Some(o) = prior.pop_rgb() {
        out.push(o);
    }
    let _ = r;
    (counts, prior, out)
}

#[test]
fn turbo_sequence_with_filter_and_cache_matches_the_reference() {
    require_onnxruntime();
    let r = Reference::load("turbo_sequence.safetensors");
    let params = StreamParams {
        strength: r.param("strength"),
        seed: r.param("seed"),
        tile_overlap: r.param("overlap"),
        colour_fix_sigma: r.param("sigma"),
        ssf_threshold: r.param("ssf_threshold"),
        ssf_max_skip: r.param("ssf_max_skip"),
        temporal_blend: r.param("temporal_blend"),
        cache_tolerance: r.param("cache_tolerance"),
        ..StreamParams::default()
    };
    let (_, prior, out) = run_sequence("tiny-turbo", &r, params, &r);
    let skipped: Vec<f32> = out.iter().map(|(o, _)| o.skipped as u8 as f32).collect();
    assert_eq!(skipped, r.get("skipped").1, "similarity filter decisions");
    assert!(skipped.contains(&1.0), "the fixture must exercise a skip");
    assert_eq!(
        prior.stats().frames_skipped as usize,
        skipped.iter().filter(|&&s| s > 0.5).count()
    );
    for (i, (o, img)) in out.iter().enumerate() {
        assert_eq!(o.seq, i as u64);
        assert_close(&format!("frame {i}"), &img.data, &r.frame("frames_out", i).data, 1e-4);
    }
}

#[test]
fn lcm_stream_batch_matches_the_reference() {
    require_onnxruntime();
    let r = Reference::load("lcm_stream.safetensors");
    let input = Reference::load("turbo_sequence.safetensors");
    let params = StreamParams {
        strength: r.param("strength"),
        steps: r.param("steps"),
        seed: r.param("seed"),
        tile_overlap: r.param("overlap"),
        colour_fix_sigma: r.param("sigma"),
        ssf_max_skip: 0,
        temporal_blend: r.param("temporal_blend"),
        cache_tolerance: r.param("cache_tolerance"),
        ..StreamParams::default()
    };
    let (counts, prior, out) = run_sequence("tiny-lcm", &r, params, &input);
    let ts: Vec<usize> = r.metadata["timesteps"].split(',').map(|t| t.parse().unwrap()).collect();
    assert_eq!(prior.timesteps(), &ts[..]);
    assert_eq!(prior.latency_frames(), 2);
    let want: Vec<usize> = r.get("outputs_after_push").1.iter().map(|&c| c as usize).collect();
    assert_eq!(counts, want, "outputs after each push (stream-batch latency)");
    assert_eq!(out.len(), 6, "N in = N out after the drain");
    for (i, (o, img)) in out.iter().enumerate() {
        assert_eq!(o.seq, i as u64, "order");
        assert_close(&format!("frame {i}"), &img.data, &r.frame("frames_out", i).data, 1e-4);
    }
}
