//! Zero-copy model calls on CUDA memory: inputs are read where they lie on the device, outputs are written into
//! device buffers that ONNX Runtime allocated once and that the caller's kernels then read, so nothing goes through
//! the host between the VAE, the UNet and the pixel kernels.
//!
//! How, with `ort` 2.0.0-rc.15: an input is a tensor view over a raw device pointer (`TensorRefMut::from_raw` with
//! CUDA memory info) passed to `run`; binding device *inputs* through IoBinding hung in rc.15, so it is not used.
//! An output is preallocated through [`RunOptions`]'s output selector with a tensor from the session's CUDA
//! allocator; the same run options (and so the same buffer) serve every call.
//!
//! Only models on the CUDA or TensorRT provider can take device tensors; a CPU model gives a clear error.

use super::{Model, Provider};
use crate::bundle::DType;
use crate::error::{EngineError, Result};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions};
use ort::value::{DynTensor, DynTensorValueType, DynValue, Shape, TensorElementType, TensorRefMut};

/// Element type of a device tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    F32,
    F16,
    I64,
}

/// A tensor in CUDA memory that the caller owns (e.g. a `cudarc` buffer): a device pointer and a shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceTensor {
    /// `CUdeviceptr` of the first element.
    pub ptr: u64,
    pub shape: Vec<usize>,
    pub dtype: DeviceType,
}

/// An output buffer in CUDA memory, allocated by ONNX Runtime for one model output and reused by every call.
pub struct DeviceOutput {
    name: String,
    shape: Vec<usize>,
    device_id: i32,
    /// Hold the preallocated tensor: every run with them writes into it.
    options: RunOptions<HasSelectedOutputs>,
    ptr: u64,
}

impl DeviceOutput {
    /// Device pointer of the output's first element, for the kernels that read it.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The output as a device tensor, to feed the next model without leaving the device.
    pub fn as_input(&self, dtype: DeviceType) -> DeviceTensor {
        DeviceTensor {
            ptr: self.ptr,
            shape: self.shape.clone(),
            dtype,
        }
    }

    /// Copies the output to the host as f32 (for tests and checks; the data path never does this).
    pub fn to_host(&self, dtype: DeviceType) -> Result<Vec<f32>> {
        let err = |e: ort::Error| EngineError::Runtime(format!("cannot copy `{}` to the host: {e}", self.name));
        let memory = cuda_memory(self.device_id).map_err(err)?;
        let shape = Shape::new(self.shape.iter().map(|&d| d as i64));
        let ptr = self.ptr as usize as *mut ort::sys::c_void;
        // SAFETY: `ptr` is this output's own device buffer, alive as long as `self`, of this shape and dtype.
        unsafe {
            match dtype {
                DeviceType::F16 => {
                    let view = TensorRefMut::<half::f16>::from_raw(memory, ptr, shape).map_err(err)?;
                    let host = view.to(AllocationDevice::CPU, 0).map_err(err)?;
                    let (_, data) = host.try_extract_tensor::<half::f16>().map_err(err)?;
                    Ok(data.iter().map(|v| v.to_f32()).collect())
                }
                _ => {
                    let view = TensorRefMut::<f32>::from_raw(memory, ptr, shape).map_err(err)?;
                    let host = view.to(AllocationDevice::CPU, 0).map_err(err)?;
                    let (_, data) = host.try_extract_tensor::<f32>().map_err(err)?;
                    Ok(data.to_vec())
                }
            }
        }
    }
}

/// Host data copied to the device by ONNX Runtime (for tests and benchmarks; the data path uploads through the
/// frame ring). The memory lives as long as the buffer.
pub struct DeviceBuffer {
    _value: ort::value::Tensor<f32>,
    pub tensor: DeviceTensor,
}

impl DeviceBuffer {
    pub fn upload(data: &[f32], shape: &[usize], device_id: i32) -> Result<DeviceBuffer> {
        let err =
            |e: ort::Error| EngineError::Runtime(format!("cannot copy {shape:?} to CUDA device {device_id}: {e}"));
        let host = ort::value::Tensor::from_array((shape.to_vec(), data.to_vec())).map_err(err)?;
        let value = host.to(AllocationDevice::CUDA, device_id).map_err(err)?;
        let ptr = value.data_ptr() as u64;
        Ok(DeviceBuffer {
            _value: value,
            tensor: DeviceTensor {
                ptr,
                shape: shape.to_vec(),
                dtype: DeviceType::F32,
            },
        })
    }
}

/// Device pointer of a model output (0 if it is not a tensor).
fn tensor_ptr(value: &DynValue) -> u64 {
    value
        .view()
        .downcast::<DynTensorValueType>()
        .map(|t| t.data_ptr() as u64)
        .unwrap_or(0)
}

fn cuda_memory(device_id: i32) -> ort::Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CUDA,
        device_id,
        AllocatorType::Device,
        MemoryType::Default,
    )
}

impl Model {
    /// Whether this model runs on a provider that takes CUDA tensors.
    pub fn takes_device_tensors(&self) -> bool {
        matches!(self.provider, Provider::Cuda | Provider::TensorRt)
    }

    fn require_device(&self) -> Result<()> {
        if self.takes_device_tensors() {
            Ok(())
        } else {
            Err(self.err(format!(
                "runs on {}, which cannot take CUDA tensors (use device=cuda or tensorrt)",
                self.provider.name()
            )))
        }
    }

    /// Allocates (once) the device buffer that `output` will be written into, with the bundle's dtype.
    pub fn device_output(&self, output: &str, shape: &[usize], device_id: i32) -> Result<DeviceOutput> {
        self.require_device()?;
        let e = |what: &str, err: ort::Error| self.err(format!("cannot {what} for output `{output}`: {err}"));
        let memory = cuda_memory(device_id).map_err(|err| e("describe CUDA memory", err))?;
        let allocator = Allocator::new(&self.session, memory).map_err(|err| e("get the CUDA allocator", err))?;
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let element = match self.dtype {
            DType::Float16 => TensorElementType::Float16,
            DType::Float32 => TensorElementType::Float32,
        };
        let tensor = DynTensor::new(&allocator, element, dims).map_err(|err| e("allocate a device tensor", err))?;
        let ptr = tensor.data_ptr() as u64;
        let options = RunOptions::new()
            .map_err(|err| e("make run options", err))?
            .with_outputs(OutputSelector::no_default().with(output).preallocate(output, tensor));
        Ok(DeviceOutput {
            name: output.to_string(),
            shape: shape.to_vec(),
            device_id,
            options,
            ptr,
        })
    }

    /// Runs the model on device tensors, writing its output into `out`. The batch must be the model's static batch
    /// (if it has one): on the device there is no splitting or zero-padding.
    ///
    /// # Safety
    /// Every input pointer must be valid CUDA memory on the model's device for its shape and type, and must not be
    /// written while this call runs.
    pub unsafe fn run_device(&mut self, inputs: &[(&str, &DeviceTensor)], out: &DeviceOutput) -> Result<()> {
        self.require_device()?;
        if let Some((name, t)) = inputs
            .iter()
            .find(|(_, t)| self.batch != 0 && t.shape.first() != Some(&self.batch))
        {
            return Err(self.err(format!(
                "device input `{name}` has batch {:?}; this model takes a static batch of {}",
                t.shape.first(),
                self.batch
            )));
        }
        let memory = cuda_memory(out.device_id).map_err(|e| self.err(format!("cannot describe CUDA memory: {e}")))?;
        let mut values = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            // SAFETY: the caller guarantees the pointer and shape (see above).
            let view = unsafe { device_view(&memory, t) }
                .map_err(|e| self.err(format!("cannot view device input `{name}`: {e}")))?;
            values.push((name.to_string(), view));
        }
        let written = match self.session.run_with_options(values, &out.options) {
            Ok(outputs) => Ok(outputs.get(out.name.as_str()).map(tensor_ptr)),
            Err(e) => Err(e.to_string()),
        };
        let written = written.map_err(|e| self.err(format!("inference on device tensors failed: {e}")))?;
        match written {
            None => Err(self.err(format!("gave no output `{}`", out.name))),
            Some(ptr) if ptr != out.ptr => Err(self.err(format!(
                "output `{}` was not written into its preallocated device buffer",
                out.name
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// A tensor view over caller-owned device memory.
///
/// # Safety
/// As [`Model::run_device`].
unsafe fn device_view(memory: &MemoryInfo, t: &DeviceTensor) -> ort::Result<ort::session::SessionInputValue<'static>> {
    let shape = Shape::new(t.shape.iter().map(|&d| d as i64));
    let ptr = t.ptr as usize as *mut ort::sys::c_void;
    let view = unsafe {
        match t.dtype {
            DeviceType::F32 => TensorRefMut::<f32>::from_raw(memory.clone(), ptr, shape)?.into_dyn(),
            DeviceType::F16 => TensorRefMut::<half::f16>::from_raw(memory.clone(), ptr, shape)?.into_dyn(),
            DeviceType::I64 => TensorRefMut::<i64>::from_raw(memory.clone(), ptr, shape)?.into_dyn(),
        }
    };
    Ok(view.into())
}
