//! The GPU-resident prior (feature `cuda`): a packed frame goes to the device once, stays there through unpacking,
//! the similarity filter, TAESD encode, the fixed noise, the UNet step, the latent cache, decode, the colour fix,
//! the tile blend and packing, and comes back once; the device frame ring overlaps the upload of frame n+1 and the
//! download of frame n−1 with the work on frame n.
//!
//! Per frame, all on the [`Gpu`]'s stream: unpack the whole frame to RGB (`[0, 1]`, for the filter and for skipped
//! frames) → thumbnail + cosine against the last inferred frame, reduced on the device; the decision is the
//! CPU path's [`SimilarityFilter`] → for an inferred frame: unpack the tiles twice (`[-1, 1]` for the encoder,
//! `[0, 1]` for the colour fix) → encode → add the fixed noise → UNet → denoise → latent cache → decode → colour fix
//! per tile → feathered blend; for a skipped frame: the last output moved by the change of the input's low
//! frequencies → pack into the output (which starts as a copy of the input, so alpha and padding are kept).
//!
//! The models read our buffers where they lie (device tensors passed to `run`); their outputs land in buffers
//! ONNX Runtime preallocated on the device, copied device-to-device into ours (ort rc.15 cannot preallocate an
//! output over foreign memory). The stream is synchronised before each model call, which ONNX Runtime runs on its
//! own stream and finishes before it returns.
//!
//! Scope: `turbo` bundles and `lcm` bundles at one step, float32 (TensorRT builds its fp16 engines from them with
//! `trt_fp16`); a model with a static batch must take exactly the frame's tiles. Everything else is the CPU path's
//! ([`crate::DiffusionPrior`]), which the GPU tests compare this with. The element does not use this path yet.

use crate::bundle::{Bundle, DType, Kind, TimestepType};
use crate::error::{EngineError, Result};
use crate::models::{DiffusionModels, Models};
use crate::noise::{gaussian, noise_stream};
use crate::prior::{PriorConfig, PriorStats, StreamParams};
use crate::runtime::{DeviceOutput, DeviceTensor, DeviceType, Provider, RuntimeOptions};
use crate::schedule::{boundary, coeffs, prediction, select_timesteps};
use crate::ssf::SimilarityFilter;
use kernels::cuda::cache::DeviceLatentCache;
use kernels::cuda::colour::DeviceColourFix;
use kernels::cuda::format::{concat_planes, split_planes, DeviceFormat, FrameLayout};
use kernels::cuda::ring::DeviceRing;
use kernels::cuda::schedule as ksched;
use kernels::cuda::similarity::{cosine, thumbnail};
use kernels::cuda::tiles::DeviceGrid;
use kernels::cuda::unpack::{unpack_tiles, upload_origins};
use kernels::cuda::{pack::pack_rgb, CudaError, Gpu};
use kernels::formats::{pack, unpack, OwnedImage, PixelFormat};
use kernels::latent::rgb::ModelRange;
use kernels::latent::schedule::Prediction;
use kernels::latent::similarity::thumbnail_size;
use kernels::latent::tiles::Grid;
use kernels::{Chroma, Geometry, WorkFrame};
use std::collections::VecDeque;
use std::time::Instant;

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

/// Frames the ring holds: one uploading, one in the models, one downloading.
const RING_SLOTS: usize = 3;

fn cuda(e: CudaError) -> EngineError {
    EngineError::Runtime(format!("CUDA: {e}"))
}

fn driver(e: cudarc::driver::DriverError) -> EngineError {
    cuda(CudaError::Driver(e))
}

/// The schedule of the one step.
#[derive(Clone, Copy)]
struct Step {
    timestep: usize,
    coeffs: (f32, f32),
    boundary: (f32, f32),
    kind: Prediction,
}

pub struct GpuPrior {
    gpu: Gpu,
    bundle: Bundle,
    models: Box<DiffusionModels>,
    provider: Provider,
    params: StreamParams,
    step: Step,
    ssf: SimilarityFilter,
    stats: PriorStats,
    frame: Option<FrameState>,
    next_seq: u64,
}

/// Everything sized for one frame layout.
struct FrameState {
    layout: FrameLayout,
    ring: DeviceRing,
    work: Work,
}

/// The per-frame device buffers, allocated once per layout.
struct Work {
    fmt: DeviceFormat,
    grid: DeviceGrid,
    /// `(0, 0)`: the whole frame unpacked as one tile.
    whole: CudaSlice<i32>,
    rgb_in: CudaSlice<f32>,
    rgb_out: CudaSlice<f32>,
    last_in: CudaSlice<f32>,
    last_out: CudaSlice<f32>,
    have_last: bool,
    thumb: CudaSlice<f32>,
    thumb_ref: CudaSlice<f32>,
    have_ref: bool,
    sums: CudaSlice<f64>,
    tiles_model: CudaSlice<f32>,
    tiles_unit: CudaSlice<f32>,
    z0: CudaSlice<f32>,
    zt: CudaSlice<f32>,
    noise: CudaSlice<f32>,
    pred: CudaSlice<f32>,
    decoded: CudaSlice<f32>,
    timesteps: Timesteps,
    embeds: CudaSlice<f32>,
    enc_out: DeviceOutput,
    unet_out: DeviceOutput,
    dec_out: DeviceOutput,
    cache: DeviceLatentCache,
    tile_fix: DeviceColourFix,
    frame_fix: DeviceColourFix,
    /// `(tiles, channels, height, width)` of the latents, and as a model shape.
    latent_shape: (usize, usize, usize, usize),
    latent_dims: Vec<usize>,
    /// `[tiles][3][tile_h][tile_w]`.
    image_shape: Vec<usize>,
    /// `[tiles][tokens][dim]`.
    embeds_shape: Vec<usize>,
}

enum Timesteps {
    F32(CudaSlice<f32>),
    I64(CudaSlice<i64>),
}

impl GpuPrior {
    /// Opens the bundle on the CUDA or TensorRT provider and GPU `ordinal`. `config.device` must allow a GPU
    /// provider (`auto`, `cuda`, `tensorrt`); landing on the CPU is an error, not a fallback.
    pub fn new(config: PriorConfig, ordinal: usize) -> Result<GpuPrior> {
        let gpu = Gpu::new(ordinal).map_err(cuda)?;
        let bundle = Bundle::open(&config.bundle)?;
        check_scope(&bundle, &config.params)?;
        let options = RuntimeOptions {
            device: config.device,
            ort_library: config.ort_library.clone(),
            intra_threads: config.intra_threads,
            trt_fp16: config.trt_fp16,
        };
        let (models, provider) = Models::load(&bundle, &options, &mut Vec::new())?;
        let Models::Diffusion(models) = models else {
            unreachable!("checked: turbo or lcm")
        };
        if !models.unet.takes_device_tensors() || !models.encoder.takes_device_tensors() {
            return Err(EngineError::Device {
                device: config.device.to_string(),
                message: format!(
                    "the GPU path needs the CUDA or TensorRT provider, the models landed on {}",
                    provider.name()
                ),
            });
        }
        let sched = bundle.scheduler().expect("diffusion bundles have one");
        let timestep = select_timesteps(sched, config.params.strength, 1)[0];
        let step = Step {
            timestep,
            coeffs: coeffs(sched, timestep),
            boundary: boundary(sched, timestep),
            kind: prediction(sched),
        };
        let p = &config.params;
        tracing::info!(
            "GPU prior {} on {} ({})",
            bundle.dir.display(),
            provider.name(),
            gpu.name()
        );
        Ok(GpuPrior {
            ssf: SimilarityFilter::new(p.ssf_threshold, p.ssf_max_skip, p.seed),
            params: config.params,
            gpu,
            bundle,
            models,
            provider,
            step,
            stats: PriorStats::default(),
            frame: None,
            next_seq: 0,
        })
    }

    pub fn provider(&self) -> &str {
        self.provider.name()
    }

    pub fn device_name(&self) -> String {
        self.gpu.name()
    }

    pub fn stats(&self) -> &PriorStats {
        &self.stats
    }

    /// Takes one packed frame laid out as `layout` (planes at their offsets in `input`). Once the ring is full the
    /// oldest frame is written into `out` (the output has the input's layout) and its number returned.
    pub fn process(
        &mut self,
        layout: &FrameLayout,
        input: &[u8],
        starts_shot: bool,
        out: &mut [u8],
    ) -> Result<Option<u64>> {
        let resized = self.frame.as_ref().is_none_or(|f| f.layout != *layout);
        if resized {
            if self.frame.as_ref().is_some_and(|f| f.ring.in_flight() > 0) {
                return Err(EngineError::Frame(
                    "the frame layout changed with frames still on the device: drain first".into(),
                ));
            }
            self.frame = Some(self.frame_state(*layout, input.len())?);
        }
        let starts_shot = starts_shot || resized;
        let seq = self.next_seq;
        self.next_seq += 1;
        let t0 = Instant::now();
        let state = self.frame.as_mut().expect("made above");
        let mut ctx = Ctx {
            gpu: &self.gpu,
            models: &mut self.models,
            bundle: &self.bundle,
            params: &self.params,
            step: self.step,
            ssf: &mut self.ssf,
            stats: &mut self.stats,
        };
        let FrameState { ring, work, .. } = state;
        let mut failure = None;
        ring.submit(&self.gpu, input, |din, dout| {
            ctx.run(work, seq, starts_shot, din, dout).map_err(|e| {
                let message = e.to_string();
                failure = Some(e);
                CudaError::Shape(message)
            })
        })
        .map_err(|e| failure.take().unwrap_or_else(|| cuda(e)))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.stats.last_inference_ms = ms;
        self.stats.inference_ms_total += ms;
        if ring.in_flight() < RING_SLOTS {
            return Ok(None);
        }
        ring.pop(out).map(Some).map_err(cuda)
    }

    /// Every frame still in the ring, oldest first (end of stream).
    pub fn drain(&mut self, out: &mut [u8], each: impl FnMut(u64, &[u8])) -> Result<()> {
        match &self.frame {
            Some(f) => f.ring.drain(out, each).map_err(cuda),
            None => Ok(()),
        }
    }

    /// Forgets the temporal state (flush, seek); frames in flight still come out of [`GpuPrior::drain`].
    pub fn reset(&mut self) {
        self.ssf.reset();
        if let Some(f) = &mut self.frame {
            f.work.cache.reset();
            f.work.have_last = false;
            f.work.have_ref = false;
        }
    }

    fn frame_state(&mut self, layout: FrameLayout, bytes: usize) -> Result<FrameState> {
        let fmt = layout.device_format(bytes).map_err(cuda)?;
        let m = &self.bundle.manifest.model;
        let grid = Grid::new(layout.width, layout.height, m.width, m.height, self.params.tile_overlap);
        let n = grid.len();
        for model in [&self.models.encoder, &self.models.unet, &self.models.decoder] {
            if model.static_batch() != 0 && model.static_batch() != n {
                return Err(EngineError::Config(format!(
                    "{} takes a static batch of {}, this frame has {n} tiles: export with --batch {n} (or 0) for the GPU \
                     path",
                    model.name,
                    model.static_batch()
                )));
            }
        }
        let ring = DeviceRing::new(&self.gpu, RING_SLOTS, bytes, bytes).map_err(cuda)?;
        let work = Work::new(
            &self.gpu,
            &self.bundle,
            &self.models,
            &self.params,
            self.step,
            fmt,
            grid,
        )?;
        Ok(FrameState { layout, ring, work })
    }
}

/// What one frame's work borrows from the prior.
struct Ctx<'a> {
    gpu: &'a Gpu,
    models: &'a mut DiffusionModels,
    bundle: &'a Bundle,
    params: &'a StreamParams,
    step: Step,
    ssf: &'a mut SimilarityFilter,
    stats: &'a mut PriorStats,
}

impl Ctx<'_> {
    fn run(
        &mut self,
        w: &mut Work,
        seq: u64,
        starts_shot: bool,
        input: &CudaSlice<u8>,
        output: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let g = self.gpu;
        let (width, height) = (w.grid.grid.width, w.grid.grid.height);
        unpack_tiles(
            g,
            input,
            &w.fmt,
            &w.whole,
            (width, height),
            ModelRange::ZERO_ONE,
            &mut w.rgb_in,
        )
        .map_err(cuda)?;
        if starts_shot {
            w.have_ref = false;
            w.cache.reset();
        }
        let skipped = self.decide(w, seq, starts_shot)?;
        if skipped {
            self.stats.frames_skipped += 1;
            self.reuse(w)?;
        } else {
            self.stats.frames_inferred += 1;
            self.infer(w, input)?;
        }
        // The last output and its input, for the next skipped frame.
        g.stream.memcpy_dtod(&w.rgb_out, &mut w.last_out).map_err(driver)?;
        g.stream.memcpy_dtod(&w.rgb_in, &mut w.last_in).map_err(driver)?;
        w.have_last = true;
        g.stream.memcpy_dtod(input, output).map_err(driver)?;
        pack_rgb(g, &w.rgb_out, &w.fmt, output).map_err(cuda)
    }

    /// The similarity filter on the device; an inferred frame's thumbnail becomes the reference.
    fn decide(&mut self, w: &mut Work, seq: u64, starts_shot: bool) -> Result<bool> {
        let g = self.gpu;
        let (width, height) = (w.grid.grid.width, w.grid.grid.height);
        thumbnail(g, &w.rgb_in, width, height, &mut w.thumb).map_err(cuda)?;
        let n = w.thumb.len();
        let mut failed = None;
        let skip = self.ssf.decide_by(seq, starts_shot, w.have_ref, || {
            cosine(g, &w.thumb, &w.thumb_ref, n, &mut w.sums).unwrap_or_else(|e| {
                failed = Some(e);
                0.0
            })
        });
        if let Some(e) = failed {
            return Err(cuda(e));
        }
        if !skip {
            g.stream.memcpy_dtod(&w.thumb, &mut w.thumb_ref).map_err(driver)?;
            w.have_ref = true;
        }
        Ok(skip)
    }

    /// A skipped frame: the last output moved by the change of the input's low frequencies since it.
    fn reuse(&mut self, w: &mut Work) -> Result<()> {
        let g = self.gpu;
        if !w.have_last {
            return g.stream.memcpy_dtod(&w.rgb_in, &mut w.rgb_out).map_err(driver);
        }
        g.stream.memcpy_dtod(&w.last_out, &mut w.rgb_out).map_err(driver)?;
        let (width, height) = (w.grid.grid.width, w.grid.grid.height);
        w.frame_fix
            .shift_low(g, &mut w.rgb_out, &w.last_in, &w.rgb_in, 3, (width, height))
            .map_err(cuda)
    }

    /// Encode → noise → UNet → denoise → cache → decode → colour fix → blend, into `w.rgb_out`.
    fn infer(&mut self, w: &mut Work, input: &CudaSlice<u8>) -> Result<()> {
        let g = self.gpu;
        let t = &self.bundle.manifest.tensors;
        let (tile_w, tile_h) = (w.grid.grid.tile_w, w.grid.grid.tile_h);
        let n_tiles = w.grid.grid.len();
        let model_range = ModelRange::MINUS_ONE_ONE;
        w.grid
            .unpack(g, input, &w.fmt, model_range, &mut w.tiles_model)
            .map_err(cuda)?;
        w.grid
            .unpack(g, input, &w.fmt, ModelRange::ZERO_ONE, &mut w.tiles_unit)
            .map_err(cuda)?;

        let f32s = |slice: &CudaSlice<f32>, shape: &[usize]| device_tensor(g, slice, shape.to_vec(), DeviceType::F32);
        let encoder_in = [(t.encoder_input.as_str(), f32s(&w.tiles_model, &w.image_shape))];
        run_model(g, &mut self.models.encoder, &encoder_in, &w.enc_out, &mut w.z0)?;
        let latents = w.z0.len();
        ksched::add_noise(g, &w.z0, &w.noise, self.step.coeffs, &mut w.zt, latents).map_err(cuda)?;

        let timesteps = match &w.timesteps {
            Timesteps::F32(s) => device_tensor(g, s, vec![n_tiles], DeviceType::F32),
            Timesteps::I64(s) => device_tensor(g, s, vec![n_tiles], DeviceType::I64),
        };
        let unet_in = [
            (t.unet_sample.as_str(), f32s(&w.zt, &w.latent_dims)),
            (t.unet_timestep.as_str(), timesteps),
            (t.unet_encoder_hidden_states.as_str(), f32s(&w.embeds, &w.embeds_shape)),
        ];
        run_model(g, &mut self.models.unet, &unet_in, &w.unet_out, &mut w.pred)?;
        self.stats.unet_calls += 1;
        let s = self.step;
        ksched::denoise(g, &w.zt, &mut w.pred, s.kind, s.coeffs, s.boundary, latents).map_err(cuda)?;
        let p = self.params;
        w.cache
            .apply(
                g,
                &w.z0,
                &mut w.pred,
                w.latent_shape,
                p.temporal_blend,
                p.cache_tolerance,
            )
            .map_err(cuda)?;

        let decoder_in = [(t.decoder_input.as_str(), f32s(&w.pred, &w.latent_dims))];
        run_model(g, &mut self.models.decoder, &decoder_in, &w.dec_out, &mut w.decoded)?;
        let pixels = w.decoded.len();
        ksched::unit_from_model(g, &mut w.decoded, pixels).map_err(cuda)?;
        w.tile_fix
            .apply(g, &mut w.decoded, &w.tiles_unit, n_tiles * 3, (tile_w, tile_h))
            .map_err(cuda)?;
        w.grid.blend(g, &w.decoded, &mut w.rgb_out).map_err(cuda)
    }
}

/// A device tensor over one of our buffers. The pointer stays valid while the buffer lives; the stream is
/// synchronised before every model call, so the guard's event is not needed.
fn device_tensor<T>(gpu: &Gpu, slice: &CudaSlice<T>, shape: Vec<usize>, dtype: DeviceType) -> DeviceTensor {
    let (ptr, _sync) = slice.device_ptr(&gpu.stream);
    DeviceTensor { ptr, shape, dtype }
}

/// Runs `model` on device tensors over our buffers and copies its output into `dst`.
fn run_model(
    gpu: &Gpu,
    model: &mut crate::runtime::Model,
    inputs: &[(&str, DeviceTensor)],
    out: &DeviceOutput,
    dst: &mut CudaSlice<f32>,
) -> Result<()> {
    let inputs: Vec<(&str, &DeviceTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
    // The model reads our buffers on its own stream: everything queued on ours must be done.
    gpu.stream.synchronize().map_err(driver)?;
    // SAFETY: every input is one of our live buffers, sized for its shape (checked when the buffers were made).
    unsafe { model.run_device(&inputs, out) }?;
    let bytes = dst.len() * std::mem::size_of::<f32>();
    let (dst_ptr, _sync) = dst.device_ptr_mut(&gpu.stream);
    // SAFETY: `out` holds the model's output of `dst.len()` f32 values (same shape), `dst` is ours.
    unsafe { cudarc::driver::result::memcpy_dtod_async(dst_ptr, out.ptr(), bytes, gpu.stream.cu_stream()) }
        .map_err(driver)
}

impl Work {
    fn new(
        gpu: &Gpu,
        bundle: &Bundle,
        models: &DiffusionModels,
        params: &StreamParams,
        step: Step,
        fmt: DeviceFormat,
        grid: Grid,
    ) -> Result<Work> {
        let s = &gpu.stream;
        let (width, height) = (grid.width, grid.height);
        let n = grid.len();
        let (c, lw, lh) = models.latent_shape();
        let tile_len = 3 * grid.tile_w * grid.tile_h;
        let latent_item = c * lw * lh;
        let t = &bundle.manifest.tensors;
        let (_, tw, th) = thumbnail_size(width, height);
        let zeros = |len: usize| s.alloc_zeros::<f32>(len.max(1)).map_err(driver);
        let noise: Vec<f32> = (0..n)
            .flat_map(|i| gaussian(params.seed, noise_stream(i, 0), latent_item))
            .collect();
        let embeds = bundle
            .prompt_embeds
            .as_ref()
            .ok_or_else(|| EngineError::bundle(&bundle.dir, "has no prompt embeddings, which the UNet needs"))?;
        let repeated: Vec<f32> = (0..n).flat_map(|_| embeds.data.iter().copied()).collect();
        let timesteps = match t.timestep_dtype {
            TimestepType::Float32 => Timesteps::F32(s.clone_htod(&vec![step.timestep as f32; n]).map_err(driver)?),
            TimestepType::Int64 => Timesteps::I64(s.clone_htod(&vec![step.timestep as i64; n]).map_err(driver)?),
        };
        let latent_shape = vec![n, c, lh, lw];
        let image_shape = vec![n, 3, grid.tile_h, grid.tile_w];
        Ok(Work {
            fmt,
            whole: upload_origins(gpu, &[(0, 0)]).map_err(cuda)?,
            rgb_in: zeros(3 * width * height)?,
            rgb_out: zeros(3 * width * height)?,
            last_in: zeros(3 * width * height)?,
            last_out: zeros(3 * width * height)?,
            have_last: false,
            thumb: zeros(3 * tw * th)?,
            thumb_ref: zeros(3 * tw * th)?,
            have_ref: false,
            sums: s.alloc_zeros::<f64>(3).map_err(driver)?,
            tiles_model: zeros(n * tile_len)?,
            tiles_unit: zeros(n * tile_len)?,
            z0: zeros(n * latent_item)?,
            zt: zeros(n * latent_item)?,
            noise: s.clone_htod(&noise).map_err(driver)?,
            pred: zeros(n * latent_item)?,
            decoded: zeros(n * tile_len)?,
            timesteps,
            embeds: s.clone_htod(&repeated).map_err(driver)?,
            enc_out: models.encoder.device_output(&t.encoder_output, &latent_shape, 0)?,
            unet_out: models.unet.device_output(&t.unet_output, &latent_shape, 0)?,
            dec_out: models.decoder.device_output(&t.decoder_output, &image_shape, 0)?,
            cache: DeviceLatentCache::default(),
            tile_fix: DeviceColourFix::new(gpu, params.colour_fix_sigma, n * tile_len).map_err(cuda)?,
            frame_fix: DeviceColourFix::new(gpu, params.colour_fix_sigma, 3 * width * height).map_err(cuda)?,
            latent_shape: (n, c, lh, lw),
            embeds_shape: vec![n, embeds.shape[1], embeds.shape[2]],
            latent_dims: latent_shape,
            image_shape,
            grid: DeviceGrid::new(gpu, grid).map_err(cuda)?,
        })
    }
}

/// What the GPU path runs; the rest goes through [`crate::DiffusionPrior`].
fn check_scope(bundle: &Bundle, params: &StreamParams) -> Result<()> {
    let unsupported = |what: String| Err(EngineError::Config(format!("the GPU path {what}; use the CPU path")));
    match bundle.kind() {
        Kind::Image => return unsupported("runs turbo and lcm bundles, not image models".into()),
        Kind::Lcm if params.steps > 1 => {
            return unsupported(format!("runs one step; steps {} needs the stream batch", params.steps))
        }
        _ => {}
    }
    if bundle.manifest.dtype != DType::Float32 {
        return unsupported("takes float32 bundles (TensorRT builds fp16 engines from them with trt_fp16)".to_string());
    }
    Ok(())
}

/// The format a working frame travels to the device in: 10 or 16 bits where the formats allow, with the working
/// frame's chroma layout, so the hand-over adds less rounding than the final 8-bit output does (4:4:4 has only
/// an 8-bit format here).
pub fn staging_format(chroma: Chroma) -> PixelFormat {
    match chroma {
        Chroma::None => PixelFormat::Gray16Le,
        Chroma::Subsampled { sx: 2, sy: 2 } => PixelFormat::I420_10Le,
        Chroma::Subsampled { sx: 2, sy: 1 } => PixelFormat::I422_10Le,
        Chroma::Subsampled { .. } => PixelFormat::Y444,
    }
}

/// [`GpuPrior`] on working frames, for the element's worker: each frame is packed into its
/// [`staging_format`] in one buffer, restored on the device, and unpacked again; frames come out in order,
/// [`GpuPrior`]'s ring (two frames) behind.
pub struct GpuFrames {
    prior: GpuPrior,
    staging: Option<Staging>,
    ready: VecDeque<WorkFrame>,
    spare: Vec<WorkFrame>,
}

/// One layout's host buffers, reused every frame.
struct Staging {
    geometry: Geometry,
    format: PixelFormat,
    image: OwnedImage,
    layout: FrameLayout,
    bytes: Vec<u8>,
    out: Vec<u8>,
}

impl Staging {
    fn new(geometry: Geometry) -> Staging {
        let format = staging_format(geometry.chroma);
        let image = OwnedImage::new(format, geometry.width, geometry.height, 0);
        let (bytes, layout) = concat_planes(&image);
        Staging {
            geometry,
            format,
            out: vec![0; bytes.len()],
            image,
            layout,
            bytes,
        }
    }

    /// Packs `frame` into the contiguous staging buffer.
    fn load(&mut self, frame: &WorkFrame) -> Result<()> {
        pack(self.format, frame, &mut self.image.plane_muts()).map_err(|e| EngineError::Frame(e.to_string()))?;
        for (p, plane) in self.image.planes.iter().enumerate() {
            let start = self.layout.offsets[p];
            self.bytes[start..start + plane.len()].copy_from_slice(plane);
        }
        Ok(())
    }

    /// Unpacks a restored buffer into `dst`.
    fn unload(&mut self, bytes: &[u8], dst: &mut WorkFrame) -> Result<()> {
        split_planes(bytes, &self.layout, &mut self.image);
        let (w, h) = (self.geometry.width, self.geometry.height);
        unpack(self.format, w, h, &self.image.plane_refs(), dst).map_err(|e| EngineError::Frame(e.to_string()))
    }
}

impl GpuFrames {
    pub fn new(prior: GpuPrior) -> Self {
        GpuFrames {
            prior,
            staging: None,
            ready: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    pub fn prior(&self) -> &GpuPrior {
        &self.prior
    }

    /// Most frames held at once: the ring's slots.
    pub fn max_held(&self) -> usize {
        RING_SLOTS + 1
    }

    pub fn push(&mut self, frame: &WorkFrame, starts_shot: bool) -> Result<()> {
        if self.staging.as_ref().is_none_or(|s| s.geometry != frame.geometry) {
            self.drain()?;
            self.staging = Some(Staging::new(frame.geometry));
        }
        let staging = self.staging.as_mut().expect("made above");
        staging.load(frame)?;
        let done = self
            .prior
            .process(&staging.layout, &staging.bytes, starts_shot, &mut staging.out)?;
        if done.is_some() {
            let mut restored = self.spare.pop().unwrap_or_else(|| WorkFrame::new(frame.geometry));
            let out = std::mem::take(&mut staging.out);
            let unloaded = staging.unload(&out, &mut restored);
            staging.out = out;
            unloaded?;
            self.ready.push_back(restored);
        }
        Ok(())
    }

    /// The oldest restored frame, written into `out`; false when none is ready.
    pub fn pop(&mut self, out: &mut WorkFrame) -> bool {
        let Some(frame) = self.ready.pop_front() else {
            return false;
        };
        if out.geometry == frame.geometry {
            out.copy_from(&frame);
        } else {
            *out = frame.clone();
        }
        self.spare.push(frame);
        true
    }

    /// Every frame still on the device comes out (end of stream).
    pub fn drain(&mut self) -> Result<()> {
        let Some(staging) = self.staging.as_mut() else {
            return Ok(());
        };
        let (ready, spare) = (&mut self.ready, &mut self.spare);
        let mut failure = None;
        let mut out = vec![0u8; staging.bytes.len()];
        self.prior.drain(&mut out, |_, bytes| {
            let mut restored = spare.pop().unwrap_or_else(|| WorkFrame::new(staging.geometry));
            match staging.unload(bytes, &mut restored) {
                Ok(()) => ready.push_back(restored),
                Err(e) => failure = Some(e),
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Drops every frame held (flush, seek) and the temporal state.
    pub fn reset(&mut self) {
        let _ = self.drain();
        self.spare.extend(self.ready.drain(..));
        self.prior.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(geometry: Geometry) -> WorkFrame {
        let mut f = WorkFrame::new(geometry);
        for (i, v) in f.luma.data.iter_mut().enumerate() {
            *v = 0.5 + 0.45 * ((i as f32) * 0.37).sin();
        }
        for (c, plane) in f.chroma.iter_mut().enumerate() {
            for (i, v) in plane.data.iter_mut().enumerate() {
                *v = 0.5 + 0.3 * ((i + 11 * c) as f32 * 0.23).cos();
            }
        }
        f
    }

    #[test]
    fn staging_keeps_a_working_frame_to_within_its_format_and_needs_no_gpu() {
        for (chroma, step) in [
            (Chroma::None, 1.0 / 65535.0),
            (Chroma::Subsampled { sx: 2, sy: 2 }, 1.0 / 1023.0),
            (Chroma::Subsampled { sx: 2, sy: 1 }, 1.0 / 1023.0),
            (Chroma::Subsampled { sx: 1, sy: 1 }, 1.0 / 255.0),
        ] {
            let geometry = Geometry {
                width: 37,
                height: 21,
                chroma,
            };
            let frame = textured(geometry);
            let mut staging = Staging::new(geometry);
            staging.load(&frame).unwrap();
            assert!(staging.layout.needed_len() <= staging.bytes.len());
            let bytes = staging.bytes.clone();
            let mut back = WorkFrame::new(geometry);
            staging.unload(&bytes, &mut back).unwrap();
            let planes = std::iter::once((&frame.luma, &back.luma)).chain(frame.chroma.iter().zip(&back.chroma));
            for (a, b) in planes {
                let worst = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst <= step * 0.5 + 1e-6, "{chroma:?}: {worst} over half a code");
            }
        }
    }
}
