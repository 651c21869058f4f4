//! The `*.safetensors.index.json` file of a sharded checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::header::OrderedPairs;
use crate::LoadError;

/// Largest index file accepted, in bytes; real ones are well under 10 MB.
pub const MAX_INDEX_LEN: u64 = 100_000_000;

/// A validated shard index: which shard file holds each tensor.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    path: PathBuf,
    /// Tensor name -> shard file name (a plain name in the index's directory).
    weight_map: BTreeMap<String, String>,
    /// Shard file names in first-mention order, deduplicated.
    shards: Vec<String>,
    /// The index's `metadata` object, values rendered as JSON text unless they are strings.
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    metadata: Option<OrderedPairs<serde_json::Value>>,
    weight_map: OrderedPairs<String>,
}

impl ShardIndex {
    /// Reads and validates the index at `path` (shard existence is checked when opening).
    pub fn load(path: impl AsRef<Path>) -> Result<ShardIndex, LoadError> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)
            .map_err(|e| LoadError::io(path, "stat", e))?
            .len();
        if len > MAX_INDEX_LEN {
            return Err(LoadError::InvalidIndex {
                path: path.to_owned(),
                message: format!("{len} bytes exceeds the {MAX_INDEX_LEN}-byte limit"),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| LoadError::io(path, "read", e))?;
        Self::parse(path, &bytes)
    }

    /// Validates index JSON `bytes`; `path` is used in errors and to locate shards.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<ShardIndex, LoadError> {
        let raw: RawIndex = serde_json::from_slice(bytes).map_err(|e| LoadError::InvalidIndex {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut metadata = BTreeMap::new();
        for (k, v) in raw.metadata.map(|m| m.0).unwrap_or_default() {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            if metadata.insert(k.clone(), text).is_some() {
                return Err(LoadError::DuplicateMetadataKey {
                    path: path.to_owned(),
                    key: k,
                });
            }
        }
        let mut weight_map = BTreeMap::new();
        let mut shards = Vec::new();
        let mut seen = HashMap::new();
        for (tensor, shard) in raw.weight_map.0 {
            if !is_plain_file_name(&shard) {
                return Err(LoadError::UnsafeShardName {
                    path: path.to_owned(),
                    tensor,
                    shard,
                });
            }
            if weight_map.contains_key(&tensor) {
                return Err(LoadError::DuplicateTensor {
                    path: path.to_owned(),
                    tensor,
                });
            }
            if !seen.contains_key(&shard) {
                seen.insert(shard.clone(), shards.len());
                shards.push(shard.clone());
            }
            weight_map.insert(tensor, shard);
        }
        Ok(ShardIndex {
            path: path.to_owned(),
            weight_map,
            shards,
            metadata,
        })
    }

    /// Where the index was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor name -> shard file name.
    pub fn weight_map(&self) -> &BTreeMap<String, String> {
        &self.weight_map
    }

    /// Shard file names, deduplicated, in first-mention order.
    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    /// The index metadata (e.g. `total_size`), as text.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Absolute-or-relative path of `shard`, next to the index file.
    pub fn shard_path(&self, shard: &str) -> PathBuf {
        self.path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(shard)
    }
}

/// A single normal path component: no separators, not `.`/`..`, not empty, no NUL.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}
