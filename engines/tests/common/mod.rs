//! Shared by the integration tests: fixture paths, reading reference tensors, temporary bundle copies.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn bundle(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Fails the test, with what to do, when the ONNX Runtime library cannot be loaded: these tests must not pass
/// silently without it.
pub fn require_onnxruntime() {
    if let Err(e) = engines::runtime::environment(None) {
        panic!(
            "this test needs the ONNX Runtime library: {e}\n\
             install it with `pip install onnxruntime=={}` or set ORT_DYLIB_PATH=/path/to/libonnxruntime.so",
            engines::runtime::RECOMMENDED_ONNXRUNTIME
        );
    }
}

pub struct Reference {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

impl Reference {
    pub fn load(name: &str) -> Reference {
        let path = fixtures().join("reference").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = if view.dtype() == safetensors::Dtype::F64 {
                    view.data()
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect()
                } else {
                    engines::bundle::tensor_to_f32(&view).unwrap()
                };
                (name, (view.shape().to_vec(), data))
            })
            .collect();
        Reference {
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        }
    }

    pub fn get(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("reference has no `{name}`"))
    }

    pub fn tensor(&self, name: &str) -> engines::Tensor {
        let (shape, data) = self.get(name).clone();
        engines::Tensor { shape, data }
    }

    pub fn param<T: std::str::FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.metadata
            .get(key)
            .unwrap_or_else(|| panic!("reference has no parameter `{key}`"))
            .parse()
            .unwrap()
    }

    /// Frame `i` of a `[frames][3][h][w]` tensor.
    pub fn frame(&self, name: &str, i: usize) -> engines::RgbImage {
        let (shape, data) = self.get(name);
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let n = 3 * w * h;
        engines::RgbImage::from_planar(w, h, data[i * n..(i + 1) * n].to_vec())
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_abs_diff(got, want);
    assert!(d <= tol, "{what}: max |diff| {d:e} > {tol:e}");
    eprintln!("{what}: max |diff| {d:e}");
}

/// A fresh copy of a fixture bundle in a temporary folder, to break on purpose.
pub fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("oldfilm-engines-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(bundle(name)).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}
