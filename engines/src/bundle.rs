//! Engine bundles: a folder with `manifest.toml`, the ONNX models, the prompt embeddings and a `trt-cache/`.
//!
//! [`Bundle::open`] reads and checks everything up front, so that a missing or corrupt bundle is one clear error
//! when the element starts, not a failure in the middle of a stream.

use crate::error::{EngineError, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The manifest version this crate reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One-step model (SD-Turbo): one UNet call per frame.
    Turbo,
    /// Latent consistency model: `steps` UNet calls per frame, run as a stream batch.
    Lcm,
    /// Any RGB-to-RGB ONNX model, without diffusion steps.
    Image,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How the denoised latent is formed from the model's x0 estimate.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Boundary {
    /// x0 as predicted (SD-Turbo).
    None,
    /// LCM's consistency boundary condition: `c_out * x0 + c_skip * x_t`.
    Lcm,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueRange {
    ZeroOne,
    MinusOneOne,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimestepType {
    #[default]
    Float32,
    Int64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ModelSection {
    /// Model input size in pixels (the tile size).
    pub width: usize,
    pub height: usize,
    #[serde(default)]
    pub latent_channels: usize,
    #[serde(default)]
    pub vae_scale: usize,
    /// Static batch size the models were exported with; 0 = dynamic.
    #[serde(default)]
    pub batch: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerSection {
    pub num_train_timesteps: usize,
    pub prediction_type: PredictionType,
    pub boundary: Boundary,
    #[serde(default = "default_timestep_scaling")]
    pub timestep_scaling: f64,
    #[serde(default = "default_sigma_data")]
    pub sigma_data: f64,
    /// Timesteps the model may be run at, descending; empty = any of `0..num_train_timesteps`.
    #[serde(default)]
    pub timesteps: Vec<usize>,
    pub alphas_cumprod: Vec<f64>,
}

fn default_timestep_scaling() -> f64 {
    10.0
}

fn default_sigma_data() -> f64 {
    0.5
}

#[derive(Clone, Debug, Deserialize, Default)]
pub struct Files {
    pub vae_encoder: Option<String>,
    pub vae_decoder: Option<String>,
    pub unet: Option<String>,
    pub prompt_embeds: Option<String>,
    /// Kind `image`.
    pub model: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Tensors {
    pub encoder_input: String,
    pub encoder_output: String,
    pub decoder_input: String,
    pub decoder_output: String,
    pub unet_sample: String,
    pub unet_timestep: String,
    pub unet_encoder_hidden_states: String,
    pub unet_output: String,
    pub timestep_dtype: TimestepType,
    pub prompt_embeds: String,
    pub image_input: String,
    pub image_output: String,
}

impl Default for Tensors {
    fn default() -> Self {
        Tensors {
            encoder_input: "image".into(),
            encoder_output: "latent".into(),
            decoder_input: "latent".into(),
            decoder_output: "image".into(),
            unet_sample: "sample".into(),
            unet_timestep: "timestep".into(),
            unet_encoder_hidden_states: "encoder_hidden_states".into(),
            unet_output: "out_sample".into(),
            timestep_dtype: TimestepType::Float32,
            prompt_embeds: "prompt_embeds".into(),
            image_input: "input".into(),
            image_output: "output".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ImageSection {
    pub range: ValueRange,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kind: Kind,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub source: String,
    pub dtype: DType,
    pub model: ModelSection,
    pub scheduler: Option<SchedulerSection>,
    #[serde(default)]
    pub files: Files,
    #[serde(default)]
    pub tensors: Tensors,
    pub image: Option<ImageSection>,
}

/// Prompt embeddings `[1, tokens, dim]`, as f32.
#[derive(Clone, Debug)]
pub struct PromptEmbeds {
    pub shape: [usize; 3],
    pub data: Vec<f32>,
}

/// An opened, checked bundle.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub prompt_embeds: Option<PromptEmbeds>,
}

impl Bundle {
    /// Reads `dir/manifest.toml`, checks it against the files in `dir`, and loads the prompt embeddings.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(EngineError::bundle(
                &dir,
                "no such folder (export a bundle with engines/export/export.py)",
            ));
        }
        let manifest_path = dir.join("manifest.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            EngineError::bundle(
                &manifest_path,
                format!("cannot read the manifest ({e}); is this an engine bundle folder?"),
            )
        })?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| EngineError::bundle(&manifest_path, format!("invalid manifest: {e}")))?;
        let mut bundle = Bundle {
            dir,
            manifest,
            prompt_embeds: None,
        };
        bundle.validate()?;
        if bundle.manifest.kind != Kind::Image {
            bundle.prompt_embeds = Some(bundle.load_prompt_embeds()?);
        }
        Ok(bundle)
    }

    pub fn kind(&self) -> Kind {
        self.manifest.kind
    }

    /// Where TensorRT keeps its engine and timing caches (created on first use).
    pub fn trt_cache_dir(&self) -> PathBuf {
        self.dir.join("trt-cache")
    }

    /// Path of a file named in `[files]`; an error if the manifest does not name it.
    pub fn file(&self, key: &str) -> Result<PathBuf> {
        let f = &self.manifest.files;
        let name = match key {
            "vae_encoder" => &f.vae_encoder,
            "vae_decoder" => &f.vae_decoder,
            "unet" => &f.unet,
            "prompt_embeds" => &f.prompt_embeds,
            "model" => &f.model,
            _ => &None,
        };
        name.as_ref().map(|n| self.dir.join(n)).ok_or_else(|| {
            EngineError::bundle(
                self.dir.join("manifest.toml"),
                format!(
                    "[files] has no `{key}`, which a `{:?}` bundle needs",
                    self.manifest.kind
                )
                .to_lowercase(),
            )
        })
    }

    pub fn scheduler(&self) -> Option<&SchedulerSection> {
        self.manifest.scheduler.as_ref()
    }

    fn validate(&self) -> Result<()> {
        let mpath = self.dir.join("manifest.toml");
        let bad = |what: String| Err(EngineError::bundle(&mpath, what));
        let m = &self.manifest;
        if m.format != FORMAT_VERSION {
            return bad(format!(
                "format {} is not supported (this build reads format {FORMAT_VERSION}); re-export the bundle",
                m.format
            ));
        }
        if m.model.width == 0 || m.model.height == 0 {
            return bad(format!("model size {}x{} is empty", m.model.width, m.model.height));
        }
        let needed: &[&str] = match m.kind {
            Kind::Image => &["model"],
            _ => &["vae_encoder", "vae_decoder", "unet", "prompt_embeds"],
        };
        for key in needed {
            let path = self.file(key)?;
            match std::fs::metadata(&path) {
                Ok(md) if md.is_file() && md.len() > 0 => {}
                Ok(_) => return Err(EngineError::bundle(&path, "is empty or not a file")),
                Err(e) => {
                    return Err(EngineError::bundle(
                        &path,
                        format!("missing ({e}); the manifest names it as `{key}`"),
                    ))
                }
            }
        }
        if m.kind == Kind::Image {
            if m.image.is_none() {
                return bad("kind = \"image\" needs an [image] table with `range`".into());
            }
            return Ok(());
        }
        let (lc, scale) = (m.model.latent_channels, m.model.vae_scale);
        if lc == 0 || scale == 0 {
            return bad("[model] needs latent_channels and vae_scale for a diffusion bundle".into());
        }
        if !m.model.width.is_multiple_of(scale) || !m.model.height.is_multiple_of(scale) {
            return bad(format!(
                "model size {}x{} is not a multiple of vae_scale {scale}",
                m.model.width, m.model.height
            ));
        }
        let Some(s) = &m.scheduler else {
            return bad("a diffusion bundle needs a [scheduler] table".into());
        };
        if s.alphas_cumprod.len() != s.num_train_timesteps || s.num_train_timesteps == 0 {
            return bad(format!(
                "[scheduler] alphas_cumprod has {} values, num_train_timesteps is {}",
                s.alphas_cumprod.len(),
                s.num_train_timesteps
            ));
        }
        if let Some(i) = s
            .alphas_cumprod
            .iter()
            .position(|&a| !(a > 0.0 && a <= 1.0 && a.is_finite()))
        {
            return bad(format!(
                "[scheduler] alphas_cumprod[{i}] = {} is outside (0, 1]",
                s.alphas_cumprod[i]
            ));
        }
        if let Some(&t) = s.timesteps.iter().find(|&&t| t >= s.num_train_timesteps) {
            return bad(format!(
                "[scheduler] timestep {t} is not below num_train_timesteps {}",
                s.num_train_timesteps
            ));
        }
        if s.timesteps.windows(2).any(|w| w[0] <= w[1]) {
            return bad("[scheduler] timesteps must be strictly descending".into());
        }
        if !(s.timestep_scaling.is_finite() && s.sigma_data > 0.0) {
            return bad("[scheduler] timestep_scaling and sigma_data must be finite, sigma_data > 0".into());
        }
        Ok(())
    }

    fn load_prompt_embeds(&self) -> Result<PromptEmbeds> {
        let path = self.file("prompt_embeds")?;
        let bytes = std::fs::read(&path).map_err(|e| EngineError::bundle(&path, format!("cannot read: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| EngineError::bundle(&path, format!("not a valid safetensors file: {e}")))?;
        let name = &self.manifest.tensors.prompt_embeds;
        let t = st.tensor(name).map_err(|_| {
            EngineError::bundle(
                &path,
                format!(
                    "has no tensor `{name}` (it has: {})",
                    st.names().into_iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let shape = t.shape();
        if shape.len() != 3 || shape[0] != 1 || shape[1] == 0 || shape[2] == 0 {
            return Err(EngineError::bundle(
                &path,
                format!("`{name}` has shape {shape:?}, expected [1, tokens, dim]"),
            ));
        }
        let data = tensor_to_f32(&t).map_err(|what| EngineError::bundle(&path, format!("`{name}`: {what}")))?;
        Ok(PromptEmbeds {
            shape: [shape[0], shape[1], shape[2]],
            data,
        })
    }
}

/// Reads an f32, f16 or bf16 safetensors tensor as f32.
pub fn tensor_to_f32(t: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>, String> {
    use safetensors::Dtype;
    let b = t.data();
    Ok(match t.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => return Err(format!("dtype {other:?} is not a float type")),
    })
}
