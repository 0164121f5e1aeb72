//! The models of a bundle, with the value conventions of diffusers: TAESD takes and gives images in `[-1, 1]`, the
//! UNet takes the prompt embeddings repeated over the batch.

use crate::bundle::{Bundle, Kind, PromptEmbeds, Tensors, TimestepType, ValueRange};
use crate::error::{EngineError, Result};
use crate::runtime::{Feed, FeedData, Model, Provider, RuntimeOptions};
use crate::tensor::Tensor;

/// TAESD encoder and decoder and the UNet of a `turbo` or `lcm` bundle.
pub struct DiffusionModels {
    pub encoder: Model,
    pub decoder: Model,
    pub unet: Model,
    tensors: Tensors,
    embeds: PromptEmbeds,
    latent_channels: usize,
    latent_size: (usize, usize),
    tile: (usize, usize),
}

/// The one model of an `image` bundle.
pub struct ImageModel {
    pub model: Model,
    input: String,
    output: String,
    range: ValueRange,
}

pub enum Models {
    Diffusion(Box<DiffusionModels>),
    Image(ImageModel),
}

impl Models {
    /// Loads the bundle's models on the best provider `options.device` allows. The UNet (or the image model) is
    /// loaded first; the others are not put on a better provider than it got. Returns the slowest provider used.
    pub fn load(bundle: &Bundle, options: &RuntimeOptions, notes: &mut Vec<String>) -> Result<(Models, Provider)> {
        let t = &bundle.manifest.tensors;
        match bundle.kind() {
            Kind::Image => {
                let model = Model::load(
                    bundle,
                    "model",
                    &[&t.image_input],
                    &t.image_output,
                    options,
                    Provider::TensorRt,
                    notes,
                )?;
                let provider = model.provider;
                let range = bundle.manifest.image.as_ref().expect("validated").range;
                Ok((
                    Models::Image(ImageModel {
                        model,
                        input: t.image_input.clone(),
                        output: t.image_output.clone(),
                        range,
                    }),
                    provider,
                ))
            }
            Kind::Turbo | Kind::Lcm => {
                let unet = Model::load(
                    bundle,
                    "unet",
                    &[&t.unet_sample, &t.unet_timestep, &t.unet_encoder_hidden_states],
                    &t.unet_output,
                    options,
                    Provider::TensorRt,
                    notes,
                )?;
                let encoder = Model::load(
                    bundle,
                    "vae_encoder",
                    &[&t.encoder_input],
                    &t.encoder_output,
                    options,
                    unet.provider,
                    notes,
                )?;
                let decoder = Model::load(
                    bundle,
                    "vae_decoder",
                    &[&t.decoder_input],
                    &t.decoder_output,
                    options,
                    unet.provider,
                    notes,
                )?;
                let provider = unet.provider.max(encoder.provider).max(decoder.provider);
                let m = &bundle.manifest.model;
                Ok((
                    Models::Diffusion(Box::new(DiffusionModels {
                        encoder,
                        decoder,
                        unet,
                        tensors: t.clone(),
                        embeds: bundle.prompt_embeds.clone().expect("loaded with the bundle"),
                        latent_channels: m.latent_channels,
                        latent_size: (m.width / m.vae_scale, m.height / m.vae_scale),
                        tile: (m.width, m.height),
                    })),
                    provider,
                ))
            }
        }
    }
}

fn check_shape(model: &Model, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(EngineError::Model {
            model: model.name.clone(),
            path: model.path.clone(),
            message: format!("gave shape {got:?}, the manifest implies {want:?}"),
        });
    }
    Ok(())
}

impl DiffusionModels {
    /// Latent shape of one tile, `(channels, width, height)`.
    pub fn latent_shape(&self) -> (usize, usize, usize) {
        (self.latent_channels, self.latent_size.0, self.latent_size.1)
    }

    /// Tiles `[n][3][H][W]` in `[0, 1]` to latents `[n][c][h][w]`.
    pub fn encode(&mut self, tiles: &Tensor) -> Result<Tensor> {
        let x: Vec<f32> = tiles.data.iter().map(|&v| v * 2.0 - 1.0).collect();
        let feeds = [Feed {
            name: &self.tensors.encoder_input,
            shape: tiles.shape.clone(),
            data: FeedData::Model(&x),
        }];
        let z = self.encoder.run(&feeds, &self.tensors.encoder_output)?;
        let (c, w, h) = self.latent_shape();
        check_shape(&self.encoder, &z.shape, &[tiles.len(), c, h, w])?;
        Ok(z)
    }

    /// The UNet's raw prediction for latents `[n][c][h][w]` at one timestep per item.
    pub fn predict(&mut self, latents: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let n = latents.len();
        let [_, tokens, dim] = self.embeds.shape;
        let ehs: Vec<f32> = (0..n).flat_map(|_| self.embeds.data.iter().copied()).collect();
        let tf: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let ti: Vec<i64> = timesteps.iter().map(|&t| t as i64).collect();
        let feeds = [
            Feed {
                name: &self.tensors.unet_sample,
                shape: latents.shape.clone(),
                data: FeedData::Model(&latents.data),
            },
            Feed {
                name: &self.tensors.unet_timestep,
                shape: vec![n],
                data: match self.tensors.timestep_dtype {
                    TimestepType::Float32 => FeedData::F32(&tf),
                    TimestepType::Int64 => FeedData::I64(&ti),
                },
            },
            Feed {
                name: &self.tensors.unet_encoder_hidden_states,
                shape: vec![n, tokens, dim],
                data: FeedData::Model(&ehs),
            },
        ];
        let out = self.unet.run(&feeds, &self.tensors.unet_output)?;
        check_shape(&self.unet, &out.shape, &latents.shape)?;
        Ok(out)
    }

    /// Latents to tiles in `[0, 1]` (not clamped).
    pub fn decode(&mut self, latents: &Tensor) -> Result<Tensor> {
        let feeds = [Feed {
            name: &self.tensors.decoder_input,
            shape: latents.shape.clone(),
            data: FeedData::Model(&latents.data),
        }];
        let mut y = self.decoder.run(&feeds, &self.tensors.decoder_output)?;
        check_shape(&self.decoder, &y.shape, &[latents.len(), 3, self.tile.1, self.tile.0])?;
        kernels::latent::schedule::unit_from_model(&mut y.data);
        Ok(y)
    }
}

impl ImageModel {
    /// Tiles `[n][3][H][W]` in `[0, 1]` through the model, back in `[0, 1]` (not clamped).
    pub fn run(&mut self, tiles: &Tensor) -> Result<Tensor> {
        let x: Vec<f32> = match self.range {
            ValueRange::ZeroOne => tiles.data.clone(),
            ValueRange::MinusOneOne => tiles.data.iter().map(|&v| v * 2.0 - 1.0).collect(),
        };
        let feeds = [Feed {
            name: &self.input,
            shape: tiles.shape.clone(),
            data: FeedData::Model(&x),
        }];
        let mut y = self.model.run(&feeds, &self.output)?;
        check_shape(&self.model, &y.shape, &tiles.shape)?;
        if self.range == ValueRange::MinusOneOne {
            for v in &mut y.data {
                *v = (*v + 1.0) * 0.5;
            }
        }
        Ok(y)
    }
}
