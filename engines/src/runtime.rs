//! ONNX Runtime: finding the shared library, the process-wide environment, sessions on the requested execution
//! provider, and running models with plain `f32` tensors.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`), from `ORT_DYLIB_PATH` or from the `onnxruntime`
//! (or `onnxruntime-gpu`) pip wheel that Python can import. Nothing is linked or downloaded at build time.

mod device;

pub use device::{DeviceBuffer, DeviceOutput, DeviceTensor, DeviceType};

use crate::bundle::{Bundle, DType};
use crate::error::{EngineError, Result};
use crate::tensor::Tensor;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;

/// The onnxruntime pip version the tests and the README name. Any 1.17 or newer loads.
pub const RECOMMENDED_ONNXRUNTIME: &str = "1.32.0";

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// TensorRT, else CUDA, else CPU; each fallback is logged.
    #[default]
    Auto,
    Cpu,
    Cuda,
    TensorRt,
}

impl FromStr for Device {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "tensorrt" | "trt" => Ok(Device::TensorRt),
            _ => Err(EngineError::Config(format!(
                "unknown device `{s}`: use auto, cpu, cuda or tensorrt"
            ))),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
        })
    }
}

/// An execution provider a session was really created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Provider {
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    /// ONNX Runtime's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }

    fn available(self) -> bool {
        match self {
            Provider::TensorRt => ep::TensorRT::is_available().unwrap_or(false),
            Provider::Cuda => ep::CUDA::is_available().unwrap_or(false),
            Provider::Cpu => true,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sessions are created.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    pub device: Device,
    /// The ONNX Runtime library; `None` = `ORT_DYLIB_PATH`, then the pip wheel.
    pub ort_library: Option<PathBuf>,
    /// Threads inside one operator on the CPU; 0 = ONNX Runtime's default (one per core).
    pub intra_threads: usize,
    /// TensorRT builds fp16 engines (the bundle's own dtype is what the models take and give).
    pub trt_fp16: bool,
}

/// Finds the ONNX Runtime shared library: `explicit`, else `ORT_DYLIB_PATH`, else the `onnxruntime` package that
/// `python3` (or `python`) imports.
pub fn find_onnxruntime(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(EngineError::Runtime(format!(
                "the configured ONNX Runtime library {} does not exist",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(EngineError::Runtime(format!(
                "ORT_DYLIB_PATH={} does not exist",
                p.display()
            )))
        };
    }
    let mut looked = Vec::new();
    for dir in python_onnxruntime_dirs() {
        let capi = dir.join("capi");
        if let Some(lib) = library_in(&capi) {
            return Ok(lib);
        }
        looked.push(capi.display().to_string());
    }
    Err(EngineError::Runtime(format!(
        "cannot find the ONNX Runtime library (libonnxruntime). Install it with \
         `pip install onnxruntime=={RECOMMENDED_ONNXRUNTIME}` (CPU) or `pip install onnxruntime-gpu` (CUDA, TensorRT), \
         or set ORT_DYLIB_PATH to the library file{}",
        if looked.is_empty() {
            String::from("; no Python with an onnxruntime package was found")
        } else {
            format!("; looked in {}", looked.join(", "))
        }
    )))
}

/// Folders of the `onnxruntime` package for each Python on the PATH (found without importing it).
fn python_onnxruntime_dirs() -> Vec<PathBuf> {
    const SCRIPT: &str = "import importlib.util as u\ns = u.find_spec('onnxruntime')\n\
                          print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let mut dirs = Vec::new();
    for exe in ["python3", "python"] {
        let Ok(out) = Command::new(exe).args(["-c", SCRIPT]).output() else {
            continue;
        };
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            let p = PathBuf::from(s);
            if !dirs.contains(&p) {
                dirs.push(p);
            }
        }
    }
    dirs
}

/// `libonnxruntime.so`, or the highest `libonnxruntime.so.X.Y.Z`, in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let plain = dir.join(format!("{prefix}onnxruntime{suffix}"));
    if plain.is_file() {
        return Some(plain);
    }
    let stem = format!("{prefix}onnxruntime{suffix}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&stem))
        })
        .collect();
    found.sort();
    found.pop()
}

struct Env {
    env: ort::environment::Environment,
    library: PathBuf,
}

static ENV: OnceLock<std::result::Result<Env, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one), loading the library on first use. Returns
/// it with the library path it was loaded from.
pub fn environment(explicit: Option<&Path>) -> Result<(ort::environment::Environment, PathBuf)> {
    let env = ENV.get_or_init(|| {
        let library = find_onnxruntime(explicit).map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&library).map_err(|e| format!("ONNX Runtime: cannot load {}: {e}", library.display()))?;
        let env = builder
            .with_name("oldfilm")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("ONNX Runtime: cannot create the environment: {e}"))?;
        tracing::info!("ONNX Runtime loaded from {}", library.display());
        Ok(Env { env, library })
    });
    match env {
        Ok(e) => {
            if let Some(p) = explicit {
                if p != e.library {
                    tracing::warn!(
                        "ONNX Runtime is already loaded from {}; ignoring {}",
                        e.library.display(),
                        p.display()
                    );
                }
            }
            Ok((e.env.clone(), e.library.clone()))
        }
        Err(msg) => Err(EngineError::Runtime(
            msg.strip_prefix("ONNX Runtime: ").unwrap_or(msg).to_string(),
        )),
    }
}

/// The providers `device` tries, best first.
fn candidates(device: Device) -> &'static [Provider] {
    match device {
        Device::Auto => &[Provider::TensorRt, Provider::Cuda, Provider::Cpu],
        Device::Cpu => &[Provider::Cpu],
        Device::Cuda => &[Provider::Cuda],
        Device::TensorRt => &[Provider::TensorRt],
    }
}

/// Creates a session for `path` on the best provider `device` allows, not better than `floor` (so that the models of
/// one bundle do not end up split across devices). Fallbacks under `auto` are logged and added to `notes`; under
/// an explicit device a provider that cannot be registered is an error.
pub fn open_session(
    path: &Path,
    model: &str,
    options: &RuntimeOptions,
    trt_cache: Option<&Path>,
    floor: Provider,
    notes: &mut Vec<String>,
) -> Result<(Session, Provider)> {
    let (env, library) = environment(options.ort_library.as_deref())?;
    let explicit = options.device != Device::Auto;
    for &provider in candidates(options.device).iter().filter(|&&p| p >= floor) {
        if !explicit && provider != Provider::Cpu && !provider.available() {
            let note = format!(
                "{model}: {} is not in the ONNX Runtime at {} (install onnxruntime-gpu for it); trying the next provider",
                provider.name(),
                library.display()
            );
            tracing::info!("{note}");
            notes.push(note);
            continue;
        }
        match build_session(&env, path, provider, options, trt_cache) {
            Ok(session) => {
                tracing::info!("{model}: running on {}", provider.name());
                return Ok((session, provider));
            }
            Err(message) if explicit => {
                return Err(EngineError::Device {
                    device: options.device.to_string(),
                    message: format!(
                        "cannot run {model} on {} with the ONNX Runtime at {}: {message}",
                        provider.name(),
                        library.display()
                    ),
                })
            }
            Err(message) => {
                let note = format!("{model}: {} failed ({message}); falling back", provider.name());
                tracing::warn!("{note}");
                notes.push(note);
            }
        }
    }
    Err(EngineError::Model {
        model: model.into(),
        path: path.into(),
        message: format!("no execution provider could load it (tried from {floor} down)"),
    })
}

fn build_session(
    env: &ort::environment::Environment,
    path: &Path,
    provider: Provider,
    options: &RuntimeOptions,
    trt_cache: Option<&Path>,
) -> std::result::Result<Session, String> {
    let s = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
    let mut b = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_no_environment_execution_providers()
        .map_err(s)?;
    if options.intra_threads > 0 {
        b = b.with_intra_threads(options.intra_threads).map_err(s)?;
    }
    b = match provider {
        Provider::Cpu => b,
        Provider::Cuda => b
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(s)?,
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default().with_fp16(options.trt_fp16);
            if let Some(dir) = trt_cache {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create the TensorRT cache {}: {e}", dir.display()))?;
                let d = dir.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&d)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&d);
            }
            // CUDA takes whatever TensorRT cannot; TensorRT itself must register.
            b.with_execution_providers([trt.build().error_on_failure(), ep::CUDA::default().build()])
                .map_err(s)?
        }
    };
    b.commit_from_file(path).map_err(|e| e.to_string())
}

/// Element data of one model input.
pub enum FeedData<'a> {
    /// Converted to the bundle's dtype (f32 or f16).
    Model(&'a [f32]),
    /// Always f32 (e.g. a float timestep).
    F32(&'a [f32]),
    /// Always i64 (e.g. an integer timestep).
    I64(&'a [i64]),
}

/// One model input: a batch along axis 0.
pub struct Feed<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: FeedData<'a>,
}

/// A loaded model with its I/O checked against the manifest.
pub struct Model {
    pub name: String,
    pub path: PathBuf,
    session: Session,
    dtype: DType,
    /// Static batch (calls are split and padded to it); 0 = dynamic.
    batch: usize,
    pub provider: Provider,
}

impl Model {
    /// Loads `bundle`'s `file_key` model and checks that it has `inputs` and `output`.
    pub fn load(
        bundle: &Bundle,
        file_key: &str,
        inputs: &[&str],
        output: &str,
        options: &RuntimeOptions,
        floor: Provider,
        notes: &mut Vec<String>,
    ) -> Result<Model> {
        let path = bundle.file(file_key)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file_key.to_string());
        let trt_cache = bundle.trt_cache_dir();
        let (session, provider) = open_session(&path, &name, options, Some(&trt_cache), floor, notes)?;
        let model_err = |message: String| EngineError::Model {
            model: name.clone(),
            path: path.clone(),
            message,
        };
        let have: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        for want in inputs {
            if !have.contains(want) {
                return Err(model_err(format!(
                    "has no input `{want}` (it has: {}); check [tensors] in manifest.toml",
                    have.join(", ")
                )));
            }
        }
        let outs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !outs.contains(&output) {
            return Err(model_err(format!(
                "has no output `{output}` (it has: {}); check [tensors] in manifest.toml",
                outs.join(", ")
            )));
        }
        let declared = session
            .inputs()
            .iter()
            .find(|o| o.name() == inputs[0])
            .and_then(|o| o.dtype().tensor_shape())
            .and_then(|s| s.first().copied())
            .unwrap_or(-1);
        let manifest_batch = bundle.manifest.model.batch;
        let batch = if declared > 0 { declared as usize } else { 0 };
        if manifest_batch != 0 && batch != 0 && manifest_batch != batch {
            return Err(model_err(format!(
                "has a static batch of {batch}, the manifest says {manifest_batch}"
            )));
        }
        Ok(Model {
            name,
            path,
            session,
            dtype: bundle.manifest.dtype,
            batch,
            provider,
        })
    }

    /// The static batch size, or 0 when the model takes any.
    pub fn static_batch(&self) -> usize {
        self.batch
    }

    /// Runs the model on batches that may be larger (split) or smaller (zero-padded) than a static batch. All feeds
    /// share the batch size `feeds[0].shape[0]`.
    pub fn run(&mut self, feeds: &[Feed], output: &str) -> Result<Tensor> {
        let n = feeds.first().map(|f| f.shape[0]).unwrap_or(0);
        if n == 0 {
            return Err(self.err("called with an empty batch".into()));
        }
        for f in feeds {
            let len = match f.data {
                FeedData::Model(d) | FeedData::F32(d) => d.len(),
                FeedData::I64(d) => d.len(),
            };
            if f.shape[0] != n || len != f.shape.iter().product::<usize>() {
                return Err(self.err(format!(
                    "input `{}` has shape {:?} and {len} values (batch {n} expected)",
                    f.name, f.shape
                )));
            }
        }
        let chunk = if self.batch == 0 { n } else { self.batch };
        let mut out: Option<Tensor> = None;
        let mut start = 0;
        while start < n {
            let take = chunk.min(n - start);
            let values = feeds
                .iter()
                .map(|f| Ok((f.name.to_string(), self.value(f, start, take, chunk)?)))
                .collect::<Result<Vec<(String, DynValue)>>>()?;
            let (name, path) = (&self.name, &self.path);
            let model_err = |message: String| EngineError::Model {
                model: name.clone(),
                path: path.clone(),
                message,
            };
            let (shape, data) = {
                let outputs = self
                    .session
                    .run(values)
                    .map_err(|e| model_err(format!("inference failed: {e}")))?;
                let value = outputs
                    .get(output)
                    .ok_or_else(|| model_err(format!("gave no output `{output}`")))?;
                extract(value).map_err(model_err)?
            };
            let item: usize = shape[1..].iter().product();
            let acc = out.get_or_insert_with(|| {
                let mut s = shape.clone();
                s[0] = n;
                Tensor {
                    shape: s,
                    data: Vec::with_capacity(n * item),
                }
            });
            if shape[1..] != acc.shape[1..] {
                return Err(model_err(format!("output shape changed between chunks: {shape:?}")));
            }
            acc.data.extend_from_slice(&data[..take * item]);
            start += take;
        }
        Ok(out.expect("n > 0"))
    }

    fn err(&self, message: String) -> EngineError {
        EngineError::Model {
            model: self.name.clone(),
            path: self.path.clone(),
            message,
        }
    }

    /// Items `start..start + take` of a feed, zero-padded to `chunk` items.
    fn value(&self, f: &Feed, start: usize, take: usize, chunk: usize) -> Result<DynValue> {
        let item: usize = f.shape[1..].iter().product();
        let mut shape = f.shape.clone();
        shape[0] = chunk;
        let ort_err = |e: ort::Error| self.err(format!("cannot make input `{}`: {e}", f.name));
        let range = start * item..(start + take) * item;
        Ok(match f.data {
            FeedData::Model(d) if self.dtype == DType::Float16 => {
                let mut v: Vec<half::f16> = d[range].iter().map(|&x| half::f16::from_f32(x)).collect();
                v.resize(chunk * item, half::f16::ZERO);
                OrtTensor::from_array((shape, v)).map_err(ort_err)?.into_dyn()
            }
            FeedData::Model(d) | FeedData::F32(d) => {
                let mut v = d[range].to_vec();
                v.resize(chunk * item, 0.0);
                OrtTensor::from_array((shape, v)).map_err(ort_err)?.into_dyn()
            }
            FeedData::I64(d) => {
                let mut v = d[range].to_vec();
                v.resize(chunk * item, 0);
                OrtTensor::from_array((shape, v)).map_err(ort_err)?.into_dyn()
            }
        })
    }
}

fn extract(value: &DynValue) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
        return Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()));
    }
    if let Ok((shape, data)) = value.try_extract_tensor::<half::f16>() {
        return Ok((
            shape.iter().map(|&d| d as usize).collect(),
            data.iter().map(|x| x.to_f32()).collect(),
        ));
    }
    Err(format!("output is not a float32/float16 tensor: {:?}", value.dtype()))
}
