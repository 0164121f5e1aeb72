//! Clear errors for missing or corrupt bundles, bad settings and unavailable devices.

mod common;

use common::{bundle, require_onnxruntime, scratch_copy};
use engines::{Device, DiffusionPrior, EngineError, PriorConfig, StreamParams};

fn open(dir: std::path::PathBuf, device: Device) -> Result<DiffusionPrior, EngineError> {
    let mut config = PriorConfig::new(dir);
    config.device = device;
    DiffusionPrior::new(config)
}

fn message(r: Result<DiffusionPrior, EngineError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_bundle_folder_or_manifest() {
    let m = message(open("/nonexistent/bundle".into(), Device::Cpu));
    assert!(m.contains("/nonexistent/bundle") && m.contains("no such folder"), "{m}");
    let dir = scratch_copy("tiny-turbo", "nomanifest");
    std::fs::remove_file(dir.join("manifest.toml")).unwrap();
    let m = message(open(dir, Device::Cpu));
    assert!(m.contains("manifest.toml") && m.contains("engine bundle"), "{m}");
}

#[test]
fn corrupt_manifest_names_the_problem() {
    let dir = scratch_copy("tiny-turbo", "badtoml");
    std::fs::write(dir.join("manifest.toml"), "format = 1\nkind = \"warp\"\n").unwrap();
    let m = message(open(dir.clone(), Device::Cpu));
    assert!(m.contains("invalid manifest") && m.contains("warp"), "{m}");

    let text = std::fs::read_to_string(bundle("tiny-turbo").join("manifest.toml")).unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        text.replace("num_train_timesteps = 1000", "num_train_timesteps = 999"),
    )
    .unwrap();
    let m = message(open(dir, Device::Cpu));
    assert!(m.contains("alphas_cumprod has 1000 values"), "{m}");
}

#[test]
fn missing_or_corrupt_model_file() {
    let dir = scratch_copy("tiny-turbo", "nounet");
    std::fs::remove_file(dir.join("unet.onnx")).unwrap();
    let m = message(open(dir, Device::Cpu));
    assert!(m.contains("unet.onnx") && m.contains("missing"), "{m}");

    require_onnxruntime();
    let dir = scratch_copy("tiny-turbo", "badunet");
    std::fs::write(dir.join("unet.onnx"), b"this is not an onnx model").unwrap();
    let m = message(open(dir, Device::Cpu));
    assert!(m.contains("unet.onnx"), "{m}");

    let dir = scratch_copy("tiny-turbo", "badembeds");
    std::fs::write(dir.join("prompt_embeds.safetensors"), [1u8, 2, 3]).unwrap();
    let m = message(open(dir, Device::Cpu));
    assert!(
        m.contains("prompt_embeds.safetensors") && m.contains("safetensors"),
        "{m}"
    );
}

#[test]
fn wrong_tensor_name_lists_what_the_model_has() {
    require_onnxruntime();
    let dir = scratch_copy("tiny-turbo", "badname");
    let text = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        text.replace("unet_sample = \"sample\"", "unet_sample = \"latents\""),
    )
    .unwrap();
    let m = message(open(dir, Device::Cpu));
    assert!(m.contains("no input `latents`") && m.contains("sample"), "{m}");
}

#[test]
fn settings_that_do_not_fit_the_bundle() {
    require_onnxruntime();
    let mut config = PriorConfig::new(bundle("tiny-turbo"));
    config.device = Device::Cpu;
    config.params = StreamParams {
        tile_size: 512,
        ..StreamParams::default()
    };
    let m = message(DiffusionPrior::new(config.clone()));
    assert!(m.contains("tile-size 512") && m.contains("64x64"), "{m}");
    config.params = StreamParams {
        strength: 1.5,
        ..StreamParams::default()
    };
    assert!(message(DiffusionPrior::new(config)).contains("strength"));
    assert!("gpu".parse::<Device>().is_err());
}

#[test]
fn explicit_cuda_or_tensorrt_without_them_is_an_error() {
    require_onnxruntime();
    for device in [Device::Cuda, Device::TensorRt] {
        match open(bundle("tiny-turbo"), device) {
            // A machine with onnxruntime-gpu and a GPU really runs there: then the provider says so.
            Ok(p) => assert_ne!(
                p.provider(),
                "CPUExecutionProvider",
                "{device} must not fall back silently"
            ),
            Err(e) => {
                let m = e.to_string();
                assert!(matches!(e, EngineError::Device { .. }), "{m}");
                assert!(
                    m.starts_with(&format!("device={device}")) && m.contains("unet.onnx"),
                    "{m}"
                );
                eprintln!("{m}");
            }
        }
    }
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_so() {
    require_onnxruntime();
    let p = open(bundle("tiny-turbo"), Device::Auto).unwrap();
    if p.provider() == "CPUExecutionProvider" {
        assert!(!p.provider_notes().is_empty(), "the fallback is reported");
        for n in p.provider_notes() {
            eprintln!("{n}");
        }
    }
}
