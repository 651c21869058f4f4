//! Errors of bank/head building, loading and training.

use std::path::PathBuf;

use featherguard_core::EmbedError;
use featherguard_loader::LoadError;

/// Why a bank, head or corpus could not be built, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum SemanticError {
    /// The file is not a featherguard bank/head, or its tensors disagree with its metadata.
    #[error("{}: {reason}; fix: rebuild it with `featherguard {rebuild}`", path.display())]
    Invalid {
        path: PathBuf,
        reason: String,
        rebuild: &'static str,
    },
    /// The bank/head was built with another embedding model than the one in use.
    #[error("{}: built with {built}, but the embedder is {current}; fix: rebuild it with `featherguard {rebuild}`", path.display())]
    ModelMismatch {
        path: PathBuf,
        built: String,
        current: String,
        rebuild: &'static str,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A corpus line is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    Corpus {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
    /// Not enough data of some kind (e.g. no benign examples to calibrate on).
    #[error("{0}")]
    Data(String),
}
