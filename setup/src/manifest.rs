//! `<home>/manifest.txt`: what setup installed and fully verified, with a stamp (size, file count,
//! newest mtime) taken right after the sha256 check.
//!
//! A later run trusts a file whose stamp still matches instead of hashing it again: that is what
//! makes a second `setup` finish in milliseconds. A damaged or unknown line is ignored, which only
//! costs a re-hash. `--verify` ignores the stamps.
//!
//! Line format (whitespace separated, path last):
//! `file|tree <sha256> <bytes> <files> <mtime_ns> <relative path>`

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::Stamp;

/// File name of the manifest inside the setup home.
pub const MANIFEST_FILE: &str = "manifest.txt";
const HEADER: &str = "# featherguard setup manifest v1\n\
# kind sha256 bytes files mtime_ns path: written after a full sha256 check\n";

/// One verified entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Whether the entry is a folder tree (digest of its files) rather than a file.
    pub tree: bool,
    /// Lowercase hex sha256 (file) or tree digest.
    pub sha256: String,
    /// The stamp taken right after the hash check.
    pub stamp: Stamp,
}

/// The manifest, keyed by `/`-separated path relative to the home.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<String, Entry>,
}

impl Manifest {
    /// Reads the manifest of `home`; a missing or unreadable manifest is an empty one.
    pub fn load(home: &Path) -> Manifest {
        match fs::read_to_string(home.join(MANIFEST_FILE)) {
            Ok(text) => Manifest::parse(&text),
            Err(_) => Manifest::default(),
        }
    }

    /// Parses manifest text, skipping lines it does not understand.
    pub fn parse(text: &str) -> Manifest {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((path, entry)) = parse_line(line) {
                entries.insert(path, entry);
            }
        }
        Manifest { entries }
    }

    /// The entry for a relative path.
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(rel)
    }

    /// Records (or replaces) an entry.
    pub fn insert(&mut self, rel: &str, entry: Entry) {
        self.entries.insert(rel.to_string(), entry);
    }

    /// Forgets an entry.
    pub fn remove(&mut self, rel: &str) {
        self.entries.remove(rel);
    }

    /// The manifest as text.
    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        for (path, e) in &self.entries {
            let kind = if e.tree { "tree" } else { "file" };
            let Stamp {
                bytes,
                files,
                mtime_ns,
            } = e.stamp;
            out.push_str(&format!(
                "{kind} {} {bytes} {files} {mtime_ns} {path}\n",
                e.sha256
            ));
        }
        out
    }

    /// Writes the manifest atomically (temp file + rename), so an interrupted write leaves the old one.
    pub fn save(&self, home: &Path) -> io::Result<PathBuf> {
        let path = home.join(MANIFEST_FILE);
        let tmp = home.join(format!(".{MANIFEST_FILE}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }
}

fn parse_line(line: &str) -> Option<(String, Entry)> {
    let mut it = line.splitn(6, ' ');
    let tree = match it.next()? {
        "file" => false,
        "tree" => true,
        _ => return None,
    };
    let sha256 = it.next()?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = it.next()?.parse().ok()?;
    let files = it.next()?.parse().ok()?;
    let mtime_ns = it.next()?.parse().ok()?;
    let path = it.next()?.trim_end();
    if path.is_empty() {
        return None;
    }
    let entry = Entry {
        tree,
        sha256: sha256.to_ascii_lowercase(),
        stamp: Stamp {
            bytes,
            files,
            mtime_ns,
        },
    };
    Some((path.to_string(), entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn entry(tree: bool) -> Entry {
        Entry {
            tree,
            sha256: "ab".repeat(32),
            stamp: Stamp {
                bytes: 10,
                files: if tree { 3 } else { 1 },
                mtime_ns: 1_700_000_000_123_456_789,
            },
        }
    }

    #[test]
    fn round_trips_through_disk() {
        let dir = TempDir::new("manifest");
        let mut m = Manifest::default();
        m.insert("ort/libonnxruntime.so.1.31.1", entry(false));
        m.insert("libtorch/include", entry(true));
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()), m);
    }

    #[test]
    fn garbage_lines_are_skipped_not_fatal() {
        let text = format!(
            "file nothex 1 1 1 a\nfile {} x 1 1 b\nweird\n\nfile {} 5 1 7 good/path\n",
            "a".repeat(64),
            "c".repeat(64)
        );
        let m = Manifest::parse(&text);
        assert!(m.get("a").is_none() && m.get("b").is_none());
        assert_eq!(m.get("good/path").unwrap().stamp.bytes, 5);
    }

    #[test]
    fn missing_manifest_is_empty() {
        let dir = TempDir::new("manifest-missing");
        assert_eq!(Manifest::load(dir.path()), Manifest::default());
    }
}
