//! Writing safetensors files (exemplar banks, trained heads) with metadata.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use crate::dtype::Element;
use crate::{Dtype, LoadError};

/// One tensor to write: little-endian, row-major bytes of `shape` elements of `dtype`.
#[derive(Debug, Clone, Copy)]
pub struct TensorData<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl<'a> TensorData<'a> {
    /// A tensor over typed host data (`dtype` must be one `T` represents, e.g. F32 for `f32`).
    /// The bytes are host order, which is the file order on little-endian hosts.
    pub fn from_slice<T: Element>(
        name: &'a str,
        dtype: Dtype,
        shape: &'a [usize],
        values: &'a [T],
    ) -> TensorData<'a> {
        // SAFETY: Element types are plain data without padding, so their bytes are initialized.
        let data = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        TensorData {
            name,
            dtype,
            shape,
            data,
        }
    }
}

/// Serializes tensors and metadata into a safetensors image. Tensors are laid out by
/// descending element size (stable), after a header padded to 8 bytes, so every tensor is
/// aligned to its element size in the file.
pub fn serialize(
    tensors: &[TensorData<'_>],
    metadata: &BTreeMap<String, String>,
    path_for_errors: &Path,
) -> Result<Vec<u8>, LoadError> {
    let invalid = |t: &TensorData<'_>, reason: String| LoadError::InvalidTensor {
        path: path_for_errors.to_owned(),
        tensor: t.name.to_owned(),
        reason,
    };
    let mut names = HashSet::new();
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(invalid(t, "the name `__metadata__` is reserved".into()));
        }
        if !names.insert(t.name) {
            return Err(invalid(t, "another tensor has the same name".into()));
        }
        let expected = t
            .shape
            .iter()
            .try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
        if expected != Some(t.data.len()) {
            return Err(invalid(
                t,
                format!(
                    "shape {:?} of {} needs {} bytes but {} were given",
                    t.shape,
                    t.dtype,
                    expected.map_or("more than usize::MAX".into(), |n| n.to_string()),
                    t.data.len()
                ),
            ));
        }
    }
    let mut order: Vec<&TensorData<'_>> = tensors.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.dtype.size()));

    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0usize;
    for t in &order {
        let end = offset + t.data.len();
        header.insert(
            t.name.to_owned(),
            serde_json::json!({
                "dtype": t.dtype.as_str(),
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| LoadError::InvalidHeader {
        path: path_for_errors.to_owned(),
        message: e.to_string(),
    })?;
    // Pad with spaces (valid trailing JSON whitespace) so the data section starts 8-aligned.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in &order {
        out.extend_from_slice(t.data);
    }
    Ok(out)
}

/// Writes a safetensors file atomically: a temporary file in the same directory, synced, then
/// renamed over `path` (existing readers keep their mapping of the old file).
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[TensorData<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(), LoadError> {
    let path = path.as_ref();
    let bytes = serialize(tensors, metadata, path)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| LoadError::io(path, "write", std::io::ErrorKind::InvalidInput.into()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| LoadError::io(&tmp, "create", e))?;
        f.write_all(&bytes)
            .map_err(|e| LoadError::io(&tmp, "write", e))?;
        f.sync_all().map_err(|e| LoadError::io(&tmp, "sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| LoadError::io(path, "rename into place", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
