//! The `Guard` trait every detector implements (pattern core, ML backends) and its inputs and errors.

use serde::{Deserialize, Serialize};

use crate::verdict::Finding;

/// Where a text came from; guards may weigh evidence differently for untrusted content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A user's prompt (the default).
    #[default]
    User,
    /// The model's output.
    Model,
    /// Output of a tool call the model made.
    Tool,
    /// A retrieved document, web page or email placed in the context.
    Document,
}

/// One text to scan. `text` is any length; guards bound their own work (windows, limits).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub text: &'a str,
    pub source: Source,
}

impl<'a> Input<'a> {
    pub fn new(text: &'a str) -> Input<'a> {
        Input {
            text,
            source: Source::User,
        }
    }

    pub fn with_source(mut self, source: Source) -> Input<'a> {
        self.source = source;
        self
    }
}

/// Why a guard could not produce findings. The firewall applies its fail-open/fail-closed policy.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The guard's runtime library or model is missing or unusable; `fix` says what to run.
    #[error("{guard}: {what} is not available: {reason}; fix: {fix}")]
    Unavailable {
        guard: String,
        what: String,
        reason: String,
        fix: String,
    },
    /// The guard refused the input (too large, too many windows...).
    #[error("{guard}: input rejected: {reason}")]
    InputRejected { guard: String, reason: String },
    /// Anything else the guard's backend reported.
    #[error("{guard}: {message}")]
    Backend { guard: String, message: String },
}

/// A detector. Implementations are cheap to share across threads; heavy state loads lazily.
pub trait Guard: Send + Sync {
    /// Stable name, used in findings, stats and configuration.
    fn name(&self) -> &str;

    /// Scan one input.
    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError>;

    /// Scan many inputs; backends that batch (ML models) override this. Results are in input order.
    fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Result<Vec<Finding>, GuardError>> {
        inputs.iter().map(|i| self.scan(i)).collect()
    }
}
