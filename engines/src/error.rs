use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong in the engines crate. Messages name the file and say what is wrong, so the element
/// can post them as they are.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The bundle folder, its manifest, or one of its files is missing or unusable.
    #[error("engine bundle {}: {what}", path.display())]
    Bundle { path: PathBuf, what: String },

    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),

    /// An execution provider that was asked for explicitly cannot be used.
    #[error("device={device}: {message}")]
    Device { device: String, message: String },

    /// A model failed to load or to run.
    #[error("{model} ({}): {message}", path.display())]
    Model {
        model: String,
        path: PathBuf,
        message: String,
    },

    /// The configuration does not fit the bundle (or is out of range).
    #[error("configuration: {0}")]
    Config(String),

    /// A frame the prior cannot take.
    #[error("frame: {0}")]
    Frame(String),
}

impl EngineError {
    pub(crate) fn bundle(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        EngineError::Bundle {
            path: path.into(),
            what: what.into(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
