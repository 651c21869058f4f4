//! sha256 of files and folder trees, and cheap stamps (size + mtime) that stand in for a hash once a
//! full check has passed.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 and byte count of one file.
pub fn file_sha256(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    // 1 MiB: large enough that syscalls do not dominate, small enough to stay out of the RSS budget.
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Regular files under `root` as (`/`-separated relative path, absolute path), sorted by path bytes.
///
/// Symbolic links and other special files are reported as errors: a pinned tree never has them.
pub fn tree_files(root: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("non-UTF-8 name in {}", dir.display()),
                )
            })?;
            let rel_child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push((rel_child, entry.path()));
            } else if ty.is_file() {
                out.push((rel_child, entry.path()));
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected special file {}", entry.path().display()),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// Digest of a folder tree: sha256 over `"{sha256}  {size}  {relative path}\n"` per file, sorted by
/// relative path bytes. Returns (digest, file count, total bytes).
pub fn tree_digest(root: &Path) -> io::Result<(String, u64, u64)> {
    let mut outer = Sha256::new();
    let mut files = 0u64;
    let mut bytes = 0u64;
    for (rel, path) in tree_files(root)? {
        let (sha, size) = file_sha256(&path)?;
        outer.update(format!("{sha}  {size}  {rel}\n").as_bytes());
        files += 1;
        bytes += size;
    }
    Ok((hex(&outer.finalize()), files, bytes))
}

/// A cheap fingerprint of a file or tree: total bytes, file count and newest mtime (ns since epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Total size in bytes.
    pub bytes: u64,
    /// Number of regular files (1 for a single file).
    pub files: u64,
    /// Newest modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
}

/// The stamp of one regular file.
pub fn file_stamp(path: &Path) -> io::Result<Stamp> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(Stamp {
        bytes: meta.len(),
        files: 1,
        mtime_ns: mtime_ns(&meta),
    })
}

/// The stamp of a folder tree (a walk and a stat per file; no reads).
pub fn tree_stamp(root: &Path) -> io::Result<Stamp> {
    let mut stamp = Stamp {
        bytes: 0,
        files: 0,
        mtime_ns: 0,
    };
    for (_, path) in tree_files(root)? {
        let meta = fs::metadata(&path)?;
        stamp.bytes += meta.len();
        stamp.files += 1;
        stamp.mtime_ns = stamp.mtime_ns.max(mtime_ns(&meta));
    }
    Ok(stamp)
}

fn mtime_ns(meta: &fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = TempDir::new("digest");
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        let (sha, n) = file_sha256(&p).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tree_digest_is_order_independent_and_content_sensitive() {
        let dir = TempDir::new("tree");
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/x.h"), b"x").unwrap();
        fs::write(dir.path().join("top.h"), b"top").unwrap();
        let (d1, files, bytes) = tree_digest(dir.path()).unwrap();
        assert_eq!((files, bytes), (2, 4));
        let expected = {
            let mut h = Sha256::new();
            h.update(format!(
                "{}  1  a/b/x.h\n",
                file_sha256(&dir.path().join("a/b/x.h")).unwrap().0
            ));
            h.update(format!(
                "{}  3  top.h\n",
                file_sha256(&dir.path().join("top.h")).unwrap().0
            ));
            hex(&h.finalize())
        };
        assert_eq!(d1, expected);
        fs::write(dir.path().join("top.h"), b"tOp").unwrap();
        assert_ne!(tree_digest(dir.path()).unwrap().0, d1);
        let stamp = tree_stamp(dir.path()).unwrap();
        assert_eq!((stamp.files, stamp.bytes), (2, 4));
    }
}
