//! Zero-copy model calls on CUDA memory (`runtime::device`): device inputs, outputs written into preallocated device
//! buffers, models chained without leaving the device — compared with the host path. The GPU tests are ignored
//! without a GPU; run them on one with `cargo test -p oldfilm-engines --test device -- --ignored`.

mod common;

use common::{bundle, require_onnxruntime};
use engines::models::Models;
use engines::runtime::{DeviceBuffer, DeviceType, RuntimeOptions};
use engines::{Bundle, Device, Tensor};

fn load(device: Device) -> (Bundle, Models) {
    require_onnxruntime();
    let b = Bundle::open(bundle("tiny-turbo")).unwrap();
    let options = RuntimeOptions {
        device,
        ort_library: None,
        intra_threads: 1,
        trt_fp16: false,
    };
    let (models, _) = Models::load(&b, &options, &mut Vec::new()).unwrap();
    (b, models)
}

fn tiles(n: usize, size: usize) -> Tensor {
    let len = n * 3 * size * size;
    Tensor {
        shape: vec![n, 3, size, size],
        data: (0..len).map(|i| 0.5 + 0.4 * ((i % 97) as f32 * 0.13).sin()).collect(),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_cpu_model_refuses_device_tensors_with_a_clear_error() {
    let (b, models) = load(Device::Cpu);
    let Models::Diffusion(d) = models else {
        panic!("tiny-turbo is a diffusion bundle")
    };
    assert!(!d.encoder.takes_device_tensors());
    let err = d
        .encoder
        .device_output(&b.manifest.tensors.encoder_output, &[1, 4, 8, 8], 0)
        .err()
        .expect("a CPU model cannot write device buffers");
    let message = err.to_string();
    assert!(
        message.contains("CPUExecutionProvider") && message.contains("cannot take CUDA tensors"),
        "{message}"
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn encode_then_decode_on_device_matches_the_host_path() {
    let (b, host_models) = load(Device::Cpu);
    let (_, gpu_models) = load(Device::Cuda);
    let (Models::Diffusion(mut host), Models::Diffusion(mut gpu)) = (host_models, gpu_models) else {
        panic!("diffusion bundle")
    };
    assert!(gpu.encoder.takes_device_tensors() && gpu.decoder.takes_device_tensors());
    let t = &b.manifest.tensors;
    let m = &b.manifest.model;
    let x = tiles(2, m.width);
    let z_host = host.encode(&x).unwrap();
    let y_host = host.decode(&z_host).unwrap();

    // The models take [-1, 1]: the same scaling `encode` does on the host.
    let scaled: Vec<f32> = x.data.iter().map(|v| v * 2.0 - 1.0).collect();
    let input = DeviceBuffer::upload(&scaled, &x.shape, 0).unwrap();
    let z_out = gpu.encoder.device_output(&t.encoder_output, &z_host.shape, 0).unwrap();
    let y_out = gpu.decoder.device_output(&t.decoder_output, &x.shape, 0).unwrap();
    unsafe {
        gpu.encoder
            .run_device(&[(&t.encoder_input, &input.tensor)], &z_out)
            .unwrap();
        // Straight from the encoder's output buffer into the decoder: nothing goes through the host.
        let z = z_out.as_input(DeviceType::F32);
        gpu.decoder.run_device(&[(&t.decoder_input, &z)], &y_out).unwrap();
    }
    let z_dev = z_out.to_host(DeviceType::F32).unwrap();
    let y_dev: Vec<f32> = y_out
        .to_host(DeviceType::F32)
        .unwrap()
        .iter()
        .map(|v| (v + 1.0) * 0.5)
        .collect();
    assert!(max_diff(&z_dev, &z_host.data) < 1e-3, "latents differ");
    assert!(max_diff(&y_dev, &y_host.data) < 1e-3, "decoded tiles differ");
}
