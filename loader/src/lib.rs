//! Zero-copy, memory-mapped safetensors loading shared by the ML backends.
//!
//! - [`Checkpoint::open`] takes a `.safetensors` file, a `*.safetensors.index.json`, or a model
//!   directory ([`Checkpoint::open_cached`] resolves a Hugging Face cache entry offline); shards
//!   are opened in parallel and cross-checked against the index.
//! - [`Checkpoint::tensor`] returns a [`TensorView`] borrowed from the mapping: O(header) to the
//!   first view, no data read.
//! - [`Checkpoint::materialize`] (and `_all` / `_names` / `_prefix`) makes owned, 64-byte
//!   aligned copies in parallel, optionally converting F16/BF16/F32, into huge-page-backed
//!   memory while releasing consumed source pages.
//! - [`write_safetensors`] writes files with metadata; [`Manifest`] verifies sha256 digests.
//!
//! Every file is untrusted: malformed input is a [`LoadError`] naming the file and tensor.

mod checkpoint;
mod convert;
mod dtype;
mod error;
mod file;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod index;
mod materialize;
mod report;
mod resolve;
mod sys;
mod verify;
mod write;

pub use checkpoint::{Checkpoint, OpenOptions};
pub use dtype::{Dtype, Element, UnknownDtype};
pub use error::{ExpectedBytes, LoadError};
pub use file::{SafeTensorsFile, TensorView};
pub use header::{Header, TensorInfo, MAX_HEADER_LEN};
pub use index::{ShardIndex, MAX_INDEX_LEN};
pub use materialize::{
    MaterializeOptions, Materialized, OwnedTensor, OwnedTensorMut, PageFill, Prefault, SourceRead,
    TENSOR_ALIGN,
};
pub use report::{LoadMethod, LoadReport};
pub use resolve::{CheckpointSource, HfCache};
pub use verify::{hash_files, sha256_file, Manifest};
pub use write::{serialize, write_safetensors, TensorData};
