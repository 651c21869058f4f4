//! The one error type of this crate. Every variant names the file (and the tensor where there is
//! one) and says what to do about it.

use std::path::PathBuf;

use crate::Dtype;

/// Everything that can go wrong opening, validating, materializing, writing or verifying a
/// checkpoint. Malformed input always ends here, never in a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    // The cause is part of the message (not `#[source]`), so error chains do not print it twice.
    #[error("{path}: cannot {action}: {cause}")]
    Io {
        path: PathBuf,
        action: &'static str,
        cause: std::io::Error,
    },
    #[error("{path}: {len} bytes is too short for a safetensors file (needs an 8-byte header length); check that this is a .safetensors file")]
    TooShort { path: PathBuf, len: u64 },
    #[error("{path}: header length {header_len} runs past the end of the file ({available} bytes follow the length prefix); the file is truncated or not safetensors, re-download it")]
    HeaderPastEof {
        path: PathBuf,
        header_len: u64,
        available: u64,
    },
    #[error("{path}: header length {header_len} exceeds the {limit}-byte limit; refusing to parse it (the file is corrupt or hostile)")]
    HeaderTooLarge {
        path: PathBuf,
        header_len: u64,
        limit: u64,
    },
    #[error(
        "{path}: header is not a valid safetensors JSON header: {message}; re-export the file"
    )]
    InvalidHeader { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}` has unknown dtype `{dtype}`; supported: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64")]
    UnknownDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: tensor `{tensor}` is listed more than once; names must be unique, re-export the file")]
    DuplicateTensor { path: PathBuf, tensor: String },
    #[error("{path}: metadata key `{key}` is listed more than once; keys must be unique")]
    DuplicateMetadataKey { path: PathBuf, key: String },
    #[error("{path}: tensor `{tensor}` has data offsets [{begin}, {end}) outside the {data_len}-byte data section; the file is truncated or corrupt")]
    OffsetsOutOfBounds {
        path: PathBuf,
        tensor: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("{path}: tensor `{tensor}` has shape {shape:?} of {dtype} = {expected} bytes but its data offsets span {actual} bytes; the header is corrupt")]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        shape: Vec<u64>,
        dtype: Dtype,
        /// `None` when the element count overflows 64 bits.
        expected: ExpectedBytes,
        actual: u64,
    },
    #[error("{path}: tensor `{tensor}` data [{begin}, ..) overlaps tensor `{previous}` which ends at {previous_end}; the header is corrupt")]
    OverlappingData {
        path: PathBuf,
        tensor: String,
        begin: u64,
        previous: String,
        previous_end: u64,
    },
    #[error("{path}: tensor `{tensor}` starts at {begin} but the previous tensor ends at {expected}; data must be contiguous, re-export the file")]
    NonContiguousData {
        path: PathBuf,
        tensor: String,
        begin: u64,
        expected: u64,
    },
    #[error("{path}: tensors cover {covered} bytes but the data section holds {data_len}; the file has trailing bytes or is corrupt")]
    DataLengthMismatch {
        path: PathBuf,
        covered: u64,
        data_len: u64,
    },
    #[error("{path}: file shrank from {expected} to {actual} bytes while mapped{}; reopen it after whoever is rewriting it has finished", tensor_suffix(.tensor))]
    Truncated {
        path: PathBuf,
        tensor: Option<String>,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: no tensor named `{tensor}`; `featherguard inspect {path}` lists the names")]
    TensorNotFound { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}` is {dtype}, which cannot be viewed as {requested}; materialize with a conversion or pick the matching element type")]
    DtypeMismatch {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
        requested: &'static str,
    },
    #[error("{path}: tensor `{tensor}` ({dtype}) is not aligned for a typed view in place; use the byte view or materialize it (materialized tensors are 64-byte aligned)")]
    Misaligned {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
    },
    #[error("{path}: tensor `{tensor}` cannot be viewed as typed elements on a big-endian host; materialize it instead")]
    BigEndianHost { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}`: no conversion from {from} to {to}; only F16, BF16 and F32 convert")]
    UnsupportedConversion {
        path: PathBuf,
        tensor: String,
        from: Dtype,
        to: Dtype,
    },
    #[error(
        "{path}: cannot convert tensors to {to}; the conversion target must be F16, BF16 or F32"
    )]
    InvalidConversionTarget { path: PathBuf, to: Dtype },
    #[error("{path}: sharded index is invalid: {message}; re-download the index file")]
    InvalidIndex { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}` maps to shard `{shard}`, which is not a plain file name next to the index; refusing to follow it")]
    UnsafeShardName {
        path: PathBuf,
        tensor: String,
        shard: String,
    },
    #[error("{path}: tensor `{tensor}` is in shard `{shard}`, which does not exist next to the index; download the missing shard")]
    MissingShard {
        path: PathBuf,
        tensor: String,
        shard: String,
    },
    #[error("{path}: index maps tensor `{tensor}` to shard `{index_shard}` but it is not there{}; the index and shards are from different exports", found_suffix(.found_in))]
    WrongShard {
        path: PathBuf,
        tensor: String,
        index_shard: String,
        found_in: Option<String>,
    },
    #[error("{path}: shard `{shard}` holds tensor `{tensor}`, which the index does not list; the index and shards are from different exports")]
    UnindexedTensor {
        path: PathBuf,
        tensor: String,
        shard: String,
    },
    #[error("{path}: no safetensors checkpoint here (expected a .safetensors file, a *.safetensors.index.json, or a directory holding them)")]
    NoCheckpoint { path: PathBuf },
    #[error("{path}: several checkpoints and no index to choose between them ({candidates}); pass the file you mean")]
    AmbiguousCheckpoint { path: PathBuf, candidates: String },
    #[error("{path}: invalid model id or revision `{value}`: {reason}")]
    InvalidModelId {
        path: PathBuf,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: model `{model}` is not in the Hugging Face cache; download it first (this crate never downloads)")]
    ModelNotCached { path: PathBuf, model: String },
    #[error("{path}: model `{model}` has no cached revision `{revision}`; cached snapshots are under {path}/snapshots")]
    RevisionNotCached {
        path: PathBuf,
        model: String,
        revision: String,
    },
    #[error("{path}: cannot reserve {bytes} bytes of memory for materialized tensors: {cause}; select fewer tensors")]
    Allocation {
        path: PathBuf,
        bytes: u64,
        cause: std::io::Error,
    },
    #[error("{path}: tensor `{tensor}` cannot be written: {reason}")]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(
        "{path}: line {line}: {message}; manifest lines are `<sha256 hex>  <relative file name>`"
    )]
    InvalidManifest {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: not listed in the sha256 manifest; add it or verify without a manifest")]
    NotInManifest { path: PathBuf },
    #[error("{path}: sha256 is {actual} but the manifest expects {expected}; the file is corrupt or was replaced, re-download it")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// The byte size a shape and dtype imply, or the fact that it does not fit in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedBytes {
    Bytes(u64),
    Overflow,
}

impl std::fmt::Display for ExpectedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedBytes::Bytes(n) => write!(f, "{n}"),
            ExpectedBytes::Overflow => f.write_str("more than 2^64"),
        }
    }
}

fn tensor_suffix(tensor: &Option<String>) -> String {
    tensor
        .as_ref()
        .map(|t| format!(" (reading tensor `{t}`)"))
        .unwrap_or_default()
}

fn found_suffix(found: &Option<String>) -> String {
    found
        .as_ref()
        .map(|s| format!(" (it is in `{s}`)"))
        .unwrap_or_default()
}

impl LoadError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        cause: std::io::Error,
    ) -> Self {
        LoadError::Io {
            path: path.into(),
            action,
            cause,
        }
    }
}
