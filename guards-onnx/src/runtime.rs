//! Finding and loading the ONNX Runtime shared library (once per process: the runtime's API table
//! is process-wide state inside `ort`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use featherguard_core::EmbedError;
use featherguard_setup::Layout;

/// File name of the pinned runtime library.
pub const LIBRARY_NAME: &str = "libonnxruntime.so.1.31.1";

/// Environment variable naming the library explicitly.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Where the library was looked for, first hit wins: explicit path, `ORT_DYLIB_PATH`, the setup
/// cache, next to the running binary.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, EmbedError> {
    let mut tried = Vec::new();
    let mut candidates: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(p) = explicit {
        candidates.push((p.to_owned(), "configured path"));
    } else if let Some(p) = std::env::var_os(DYLIB_ENV).filter(|v| !v.is_empty()) {
        candidates.push((PathBuf::from(p), DYLIB_ENV));
    } else {
        match Layout::discover().map(|l| l.find_onnxruntime()) {
            Ok(Ok(p)) => return Ok(p),
            Ok(Err(e)) => tried.push(e.to_string()),
            Err(e) => tried.push(e.to_string()),
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
        {
            candidates.push((dir.join(LIBRARY_NAME), "next to the binary"));
        }
    }
    for (p, from) in candidates {
        if p.is_file() {
            return Ok(p);
        }
        tried.push(format!("{} ({from})", p.display()));
    }
    Err(unavailable(&tried))
}

fn unavailable(tried: &[String]) -> EmbedError {
    EmbedError::Unavailable {
        what: "ONNX Runtime library".into(),
        reason: format!("not found; looked at: {}", tried.join("; ")),
        fix: "run `featherguard setup --only onnx` or set ORT_DYLIB_PATH".into(),
    }
}

/// The library this process loaded and the runtime environment kept alive for the process's
/// lifetime, or why loading failed (the first attempt decides).
static LOADED: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

/// Set with [`LOADED`]: see [`runtime_libraries`].
static LIBRARIES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Loads the runtime from `path` unless one is already loaded; returns the loaded library's path
/// and the process's runtime environment.
pub fn init(path: &Path) -> Result<(PathBuf, ort::environment::Environment), EmbedError> {
    let result = LOADED.get_or_init(|| {
        let before = crate::mem::mapped_libraries();
        let builder = ort::init_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // The environment registers itself as ort's current one; sessions use it.
        let env = builder
            .with_name("featherguard")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let brought = crate::mem::mapped_libraries()
            .difference(&before)
            .cloned()
            .collect();
        let _ = LIBRARIES.set(brought);
        Ok((path.to_owned(), env))
    });
    match result {
        Ok((loaded, env)) => Ok((loaded.clone(), env.clone())),
        Err(reason) => Err(EmbedError::Unavailable {
            what: "ONNX Runtime library".into(),
            reason: reason.clone(),
            fix: "run `featherguard setup --only onnx` (ONNX Runtime 1.31 is required) or set ORT_DYLIB_PATH".into(),
        }),
    }
}

/// The shared objects the runtime's load mapped into this process (the runtime library itself and
/// dependencies nothing else had loaded, e.g. libstdc++), empty before the first successful
/// [`init`]: what an unload pages out (see [`crate::mem::page_out_libraries`]).
pub fn runtime_libraries() -> &'static [PathBuf] {
    LIBRARIES.get().map_or(&[], Vec::as_slice)
}
