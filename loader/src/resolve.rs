//! Turning what a user typed (file, index, directory, cached model id) into files to open.
//! Everything here is offline: nothing is ever downloaded.

use std::path::{Path, PathBuf};

use crate::index::is_plain_file_name;
use crate::LoadError;

/// What a checkpoint path resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSource {
    /// One `.safetensors` file.
    Single(PathBuf),
    /// A `*.safetensors.index.json` and the shards it names.
    Sharded(PathBuf),
}

impl CheckpointSource {
    /// Resolves a file, an index or a model directory. A directory resolves to
    /// `model.safetensors.index.json`, else `model.safetensors`, else its only index, else its
    /// only `.safetensors` file; several candidates without an index is an error.
    pub fn resolve(path: impl AsRef<Path>) -> Result<CheckpointSource, LoadError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, "stat", e))?;
        if meta.is_file() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            return Ok(if name.ends_with(".index.json") {
                CheckpointSource::Sharded(path.to_owned())
            } else {
                CheckpointSource::Single(path.to_owned())
            });
        }
        if !meta.is_dir() {
            return Err(LoadError::NoCheckpoint {
                path: path.to_owned(),
            });
        }
        for (name, sharded) in [
            ("model.safetensors.index.json", true),
            ("model.safetensors", false),
        ] {
            let candidate = path.join(name);
            if candidate.is_file() {
                return Ok(if sharded {
                    CheckpointSource::Sharded(candidate)
                } else {
                    CheckpointSource::Single(candidate)
                });
            }
        }
        let mut indexes = Vec::new();
        let mut singles = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| LoadError::io(path, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LoadError::io(path, "list", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_file() {
                continue;
            }
            if name.ends_with(".safetensors.index.json") {
                indexes.push(entry.path());
            } else if name.ends_with(".safetensors") {
                singles.push(entry.path());
            }
        }
        indexes.sort();
        singles.sort();
        match (indexes.len(), singles.len()) {
            (1, _) => Ok(CheckpointSource::Sharded(indexes.remove(0))),
            (0, 1) => Ok(CheckpointSource::Single(singles.remove(0))),
            (0, 0) => Err(LoadError::NoCheckpoint {
                path: path.to_owned(),
            }),
            _ => Err(LoadError::AmbiguousCheckpoint {
                path: path.to_owned(),
                candidates: indexes
                    .iter()
                    .chain(&singles)
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// A Hugging Face hub cache directory (`<root>/models--org--name/snapshots/<commit>/...`),
/// read offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfCache {
    root: PathBuf,
}

impl HfCache {
    /// A cache rooted at `root` (the directory holding `models--*` folders).
    pub fn new(root: impl Into<PathBuf>) -> HfCache {
        HfCache { root: root.into() }
    }

    /// The cache the hub tools use: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`. `None` when none of these can be formed.
    pub fn from_env() -> Option<HfCache> {
        if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            return Some(HfCache::new(dir));
        }
        if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
            return Some(HfCache::new(PathBuf::from(home).join("hub")));
        }
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| HfCache::new(PathBuf::from(home).join(".cache/huggingface/hub")))
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshot directory of `model_id` (`org/name` or `name`) at `revision` (a ref name
    /// such as `main`, read from `refs/<revision>`, or a commit hash).
    pub fn snapshot_dir(&self, model_id: &str, revision: &str) -> Result<PathBuf, LoadError> {
        let parts: Vec<&str> = model_id.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|p| !is_plain_file_name(p)) {
            return Err(LoadError::InvalidModelId {
                path: self.root.clone(),
                value: model_id.to_owned(),
                reason: "expected `org/name` or `name`",
            });
        }
        if revision.split('/').any(|p| !is_plain_file_name(p)) {
            return Err(LoadError::InvalidModelId {
                path: self.root.clone(),
                value: revision.to_owned(),
                reason: "a revision is a ref name or a commit hash",
            });
        }
        let model_dir = self.root.join(format!("models--{}", parts.join("--")));
        if !model_dir.is_dir() {
            return Err(LoadError::ModelNotCached {
                path: self.root.clone(),
                model: model_id.to_owned(),
            });
        }
        let ref_file = model_dir.join("refs").join(revision);
        let commit = if ref_file.is_file() {
            let text = std::fs::read_to_string(&ref_file)
                .map_err(|e| LoadError::io(&ref_file, "read", e))?;
            let commit = text.trim().to_owned();
            if !is_plain_file_name(&commit) {
                return Err(LoadError::InvalidModelId {
                    path: ref_file,
                    value: commit,
                    reason: "a ref file must hold a commit hash",
                });
            }
            commit
        } else {
            revision.to_owned()
        };
        let snapshot = model_dir.join("snapshots").join(&commit);
        if !snapshot.is_dir() {
            return Err(LoadError::RevisionNotCached {
                path: model_dir,
                model: model_id.to_owned(),
                revision: revision.to_owned(),
            });
        }
        Ok(snapshot)
    }
}
