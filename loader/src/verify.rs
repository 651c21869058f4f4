//! sha256 verification of checkpoint files against a `sha256sum`-style manifest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::LoadError;

/// Expected sha256 digests of files, keyed by path relative to the manifest's base directory.
/// Text form: one `<64 hex digits>  <relative path>` per line (what `sha256sum` prints);
/// blank lines and lines starting with `#` are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    base: PathBuf,
    /// Relative path (with `/` separators) -> lowercase hex digest.
    entries: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads a manifest file; entries are relative to the directory holding it.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, "read", e))?;
        let base = path.parent().unwrap_or_else(|| Path::new(".")).to_owned();
        Self::parse(path, &text, base)
    }

    /// Parses manifest `text` (`path` names it in errors); entries are relative to `base`.
    pub fn parse(path: &Path, text: &str, base: PathBuf) -> Result<Manifest, LoadError> {
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| LoadError::InvalidManifest {
                path: path.to_owned(),
                line: i + 1,
                message: message.to_owned(),
            };
            let (digest, name) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected a digest and a file name"))?;
            // sha256sum marks binary mode with a leading `*` on the name.
            let name = name.trim_start().trim_start_matches('*');
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("the digest is not 64 hex digits"));
            }
            if name.is_empty()
                || name.starts_with('/')
                || name
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad("file names must be relative paths without `.` or `..`"));
            }
            if entries
                .insert(name.to_owned(), digest.to_ascii_lowercase())
                .is_some()
            {
                return Err(bad("file listed twice"));
            }
        }
        Ok(Manifest { base, entries })
    }

    /// A manifest from `(relative path, hex digest)` pairs.
    pub fn from_entries(
        base: PathBuf,
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Manifest {
        Manifest {
            base,
            entries: entries
                .into_iter()
                .map(|(k, v)| (k, v.to_ascii_lowercase()))
                .collect(),
        }
    }

    /// Entries as (relative path, lowercase hex digest).
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }

    /// The directory entries are relative to.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Renders the manifest in `sha256sum` format.
    pub fn to_text(&self) -> String {
        self.entries
            .iter()
            .map(|(name, digest)| format!("{digest}  {name}\n"))
            .collect()
    }

    /// Hashes every listed file (on up to `threads` threads) and checks the digests.
    pub fn verify_all(&self, threads: usize) -> Result<(), LoadError> {
        let paths: Vec<PathBuf> = self.entries.keys().map(|k| self.base.join(k)).collect();
        self.verify_files(&paths, threads).map(|_| ())
    }

    /// Checks `paths`, each of which must be listed. Returns their digests in order.
    pub fn verify_files(
        &self,
        paths: &[PathBuf],
        threads: usize,
    ) -> Result<Vec<String>, LoadError> {
        let expected: Vec<&String> = paths
            .iter()
            .map(|p| {
                self.key_for(p)
                    .and_then(|k| self.entries.get(&k))
                    .ok_or_else(|| LoadError::NotInManifest { path: p.clone() })
            })
            .collect::<Result<_, _>>()?;
        let actual = hash_files(paths, threads)?;
        for ((path, want), got) in paths.iter().zip(expected).zip(&actual) {
            if want != got {
                return Err(LoadError::HashMismatch {
                    path: path.clone(),
                    expected: want.clone(),
                    actual: got.clone(),
                });
            }
        }
        Ok(actual)
    }

    /// The manifest key of `path`: its path relative to the base, compared lexically first and
    /// then through the canonical parent directories (so a symlinked base still matches, while
    /// the file itself may be a symlink into a blob store, as in the HF cache).
    fn key_for(&self, path: &Path) -> Option<String> {
        if let Ok(rel) = path.strip_prefix(&self.base) {
            return Some(rel_key(rel));
        }
        let parent = path.parent()?.canonicalize().ok()?;
        let base = self.base.canonicalize().ok()?;
        let rel = parent.strip_prefix(base).ok()?.join(path.file_name()?);
        Some(rel_key(&rel))
    }
}

fn rel_key(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Lowercase hex sha256 of each file, hashed on up to `threads` threads.
pub fn hash_files(paths: &[PathBuf], threads: usize) -> Result<Vec<String>, LoadError> {
    let workers = crate::checkpoint::effective_threads(threads)
        .min(paths.len())
        .max(1);
    let per = paths.len().div_ceil(workers).max(1);
    let results: Vec<Result<Vec<String>, LoadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(per)
            .map(|group| s.spawn(move || group.iter().map(|p| sha256_file(p)).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::with_capacity(paths.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Lowercase hex sha256 of one file, read with plain reads (never mapped, so a file shrinking
/// underneath cannot fault).
pub fn sha256_file(path: &Path) -> Result<String, LoadError> {
    let mut file = File::open(path).map_err(|e| LoadError::io(path, "open", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| LoadError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
