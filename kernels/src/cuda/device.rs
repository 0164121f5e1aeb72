//! Finding CUDA, opening a context and compiling the kernels.

use crate::formats::{KB, KR};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::sync::Arc;
use thiserror::Error;

/// Why the CUDA path cannot run here.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("CUDA is not available: {reason}")]
pub struct CudaUnavailable {
    pub reason: String,
}

#[derive(Debug, Error)]
pub enum CudaError {
    #[error(transparent)]
    Unavailable(#[from] CudaUnavailable),
    #[error("CUDA driver call failed: {0}")]
    Driver(#[from] DriverError),
    #[error("NVRTC could not compile the oldfilmrestore kernels: {0}")]
    Compile(String),
    #[error("{0}")]
    Shape(String),
}

/// Whether the CUDA driver and NVRTC libraries load and at least one device is present. Checked before any other
/// CUDA call, because cudarc panics when a library it needs is missing.
pub fn available() -> Result<(), CudaUnavailable> {
    let unavailable = |reason: &str| CudaUnavailable {
        reason: reason.to_string(),
    };
    // SAFETY: only tries to open the libraries (dlopen); nothing is called through them.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(unavailable(
            "the CUDA driver library (libcuda.so) was not found; install the NVIDIA driver or put it on \
             LD_LIBRARY_PATH",
        ));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(unavailable(
            "NVRTC (libnvrtc.so) was not found; install the CUDA toolkit's nvrtc package (pip: nvidia-cuda-nvrtc) \
             or put it on LD_LIBRARY_PATH",
        ));
    }
    // A driver older than the CUDA version cudarc was built for may lack a symbol, which cudarc reports by
    // panicking: keep that a value too.
    let count = std::panic::catch_unwind(|| {
        cudarc::driver::result::init()?;
        CudaContext::device_count()
    });
    match count {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err(unavailable("the CUDA driver loaded but reports no device")),
        Ok(Err(e)) => Err(unavailable(&format!("the CUDA driver did not initialise: {e}"))),
        Err(_) => Err(unavailable(
            "the CUDA driver library is too old for this build (see README, CUDA path, for building against CUDA 12)",
        )),
    }
}

/// The kernels of `kernels.cu`, loaded into one context.
pub(crate) struct Functions {
    pub unpack_f32: CudaFunction,
    pub unpack_f16: CudaFunction,
    pub pack_luma: CudaFunction,
    pub pack_chroma: CudaFunction,
    pub thumbnail: CudaFunction,
    pub cosine_sums: CudaFunction,
    pub latent_change: CudaFunction,
    pub latent_blend: CudaFunction,
    pub blend_tiles: CudaFunction,
    pub blur_rows: CudaFunction,
    pub blur_cols: CudaFunction,
    pub colour_fix_combine: CudaFunction,
    pub add_noise: CudaFunction,
    pub denoise: CudaFunction,
    pub unit_from_model: CudaFunction,
}

impl Functions {
    fn load(module: &Arc<CudaModule>) -> Result<Self, DriverError> {
        let f = |name: &str| module.load_function(name);
        Ok(Functions {
            unpack_f32: f("unpack_tiles_f32")?,
            unpack_f16: f("unpack_tiles_f16")?,
            pack_luma: f("pack_luma")?,
            pack_chroma: f("pack_chroma")?,
            thumbnail: f("thumbnail")?,
            cosine_sums: f("cosine_sums")?,
            latent_change: f("latent_change")?,
            latent_blend: f("latent_blend")?,
            blend_tiles: f("blend_tiles")?,
            blur_rows: f("blur_rows")?,
            blur_cols: f("blur_cols")?,
            colour_fix_combine: f("colour_fix_combine")?,
            add_noise: f("add_noise")?,
            denoise: f("denoise")?,
            unit_from_model: f("unit_from_model")?,
        })
    }
}

/// One CUDA context with its compute stream and the compiled kernels. Open it once per device and share it.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    /// The stream every kernel function here launches on unless given another.
    pub stream: Arc<CudaStream>,
    pub(crate) k: Functions,
}

impl Gpu {
    /// Checks [`available`], opens device `ordinal` and compiles the kernels for its architecture.
    pub fn new(ordinal: usize) -> Result<Gpu, CudaError> {
        available()?;
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let ptx = compile_ptx_with_opts(source(), compile_options(major, minor))
            .map_err(|e| CudaError::Compile(format!("{e:?}")))?;
        let module = ctx.load_module(ptx)?;
        let k = Functions::load(&module)?;
        let stream = ctx.new_stream()?;
        Ok(Gpu { ctx, stream, k })
    }

    /// The device's name, for benchmark records.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|e| format!("unknown ({e})"))
    }
}

/// The kernel source with the colour constants defined as the exact bits of the CPU's `KR` / `KB`.
pub fn source() -> String {
    format!(
        "#define KR __int_as_float(0x{:08x})\n#define KB __int_as_float(0x{:08x})\n{}",
        KR.to_bits(),
        KB.to_bits(),
        include_str!("kernels.cu")
    )
}

fn compile_options(major: i32, minor: i32) -> CompileOptions {
    CompileOptions {
        // The twins round every product and sum separately; a fused multiply-add would not.
        fmad: Some(false),
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        name: Some("oldfilm_kernels.cu".into()),
        ..Default::default()
    }
}

/// 256 threads a block over `n` items, `tiles` blocks deep.
pub(crate) fn grid(n: usize, tiles: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n.div_ceil(256)).max(1) as u32, tiles.max(1) as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_cuda_available_is_an_error_that_says_what_is_missing() {
        match available() {
            // A CUDA machine: nothing to check here (the GPU tests cover it).
            Ok(()) => {}
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("CUDA is not available: "), "{msg}");
                assert!(
                    msg.contains("libcuda") || msg.contains("libnvrtc") || msg.contains("device"),
                    "the message should name what is missing: {msg}"
                );
            }
        }
    }

    #[test]
    fn opening_a_gpu_without_cuda_is_an_error_not_a_panic() {
        if available().is_err() {
            let err = Gpu::new(0).err().expect("no CUDA, so no GPU");
            assert!(matches!(err, CudaError::Unavailable(_)), "{err}");
        }
    }

    #[test]
    fn the_source_defines_the_cpu_colour_constants_bit_for_bit() {
        let src = source();
        assert!(src.contains(&format!("0x{:08x}", KR.to_bits())));
        assert!(src.contains(&format!("0x{:08x}", KB.to_bits())));
        assert!(src.contains("extern \"C\" __global__ void unpack_tiles_f32"));
    }

    /// NVRTC alone needs no GPU: `pip install nvidia-cuda-nvrtc` and put its `lib` folder on `LD_LIBRARY_PATH`.
    #[test]
    #[ignore = "needs NVRTC (libnvrtc.so.13)"]
    fn the_kernels_compile_with_nvrtc_for_every_architecture_we_target() {
        // SAFETY: only opens the library.
        assert!(unsafe { cudarc::nvrtc::sys::is_culib_present() }, "libnvrtc not found");
        for (major, minor) in [(7, 5), (8, 0), (8, 9), (9, 0)] {
            let ptx = compile_ptx_with_opts(source(), compile_options(major, minor));
            let ptx = ptx.unwrap_or_else(|e| panic!("sm_{major}{minor}: {e:?}"));
            let text = ptx.to_src();
            for name in [
                "unpack_tiles_f32",
                "pack_chroma",
                "cosine_sums",
                "blend_tiles",
                "colour_fix_combine",
                "add_noise",
                "denoise",
                "unit_from_model",
            ] {
                assert!(text.contains(&format!(".entry {name}")), "sm_{major}{minor}: no {name}");
            }
            // The twins round products and sums separately: no f32 multiply-add may be fused.
            assert!(
                !text.contains("fma.rn.f32"),
                "sm_{major}{minor}: fused f32 multiply-add in the PTX"
            );
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn the_kernels_compile_and_load() {
        let gpu = crate::cuda::test_util::gpu();
        assert!(!gpu.name().is_empty());
    }
}
