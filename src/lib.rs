//! featherguard: a firewall for LLM applications.
//!
//! This facade re-exports the pattern core; ML backends are enabled with the
//! `onnx` and `torch` cargo features (`full` enables both).
pub use featherguard_core::*;
