//! featherguard: a firewall for LLM applications.
//!
//! This facade re-exports the pattern core; ML backends are enabled with the
//! `onnx` and `torch` cargo features (`full` enables both).
pub use featherguard_core::*;

/// ONNX Runtime embedder (all-MiniLM-L6-v2 over the shared safetensors weights).
#[cfg(feature = "onnx")]
pub use featherguard_onnx as onnx;
/// Embedding guards over any `Embedder`: similarity bank, classifier head, topic fence.
#[cfg(any(feature = "onnx", feature = "torch"))]
pub use featherguard_semantic as semantic;
/// libtorch embedder (the same model and vectors, weights used in place from the mapping).
#[cfg(feature = "torch")]
pub use featherguard_torch as torch;
