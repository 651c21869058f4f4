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

/// The variable ONNX Runtime reads, once, when its environment is created: `1` turns its usage
/// telemetry off entirely.
pub const TELEMETRY_OFF_ENV: &str = "ORT_DISABLE_TELEMETRY";

/// Turns ONNX Runtime's usage telemetry off for this process, unless the user set
/// [`TELEMETRY_OFF_ENV`] themselves. The official Linux and macOS builds (1.29 on) create a device
/// id and an event cache under `~/.cache/Microsoft/DeveloperTools/.onnxruntime` and try to upload
/// a process event when the environment is created, before `with_telemetry(false)` can act; only
/// the variable, set before that, stops all of it. A firewall must neither phone home nor write
/// outside its own folders. Call it before any thread starts (the CLI does, first thing):
/// [`init`] calls it too, for library users, but setting a variable while C code on another
/// thread reads the environment is a data race (see `std::env::set_var`).
pub fn disable_runtime_telemetry() {
    if std::env::var_os(TELEMETRY_OFF_ENV).is_none() {
        std::env::set_var(TELEMETRY_OFF_ENV, "1");
    }
}

/// Loads the runtime from `path` unless one is already loaded; returns the loaded library's path
/// and the process's runtime environment.
pub fn init(path: &Path) -> Result<(PathBuf, ort::environment::Environment), EmbedError> {
    let result = LOADED.get_or_init(|| {
        disable_runtime_telemetry();
        let before = crate::mem::mapped_libraries();
        let builder = ort::init_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // The environment registers itself as ort's current one; sessions use it.
        let env = builder
            .with_name("featherguard")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        warm_session_registries(&env).map_err(|e| format!("{}: {e}", path.display()))?;
        featherguard_core::release_free_heap();
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

/// Creates and drops a one-node session so that what ONNX Runtime builds once per process on the
/// first session (1.15 MB of heap that stays for the process, measured with heaptrack; kernel
/// registries by all appearances) is allocated here, next to the environment's own one-time
/// state, instead of in between the real session's short-lived graph-building allocations, where
/// it kept partly used heap pages resident after an unload (0.3-0.5 MiB, `diag memory`).
fn warm_session_registries(env: &ort::environment::Environment) -> Result<(), String> {
    use crate::proto::{model, node, value_info, Dim, Elem, Msg};
    let mut graph = Msg::new();
    graph.msg(1, &node("Identity", "", &["x"], &["y"], &[]));
    graph.str(2, "warm-up");
    graph.msg(11, &value_info("x", Elem::F32, &[Dim::Fixed(1)]));
    graph.msg(12, &value_info("y", Elem::F32, &[Dim::Fixed(1)]));
    let fail = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
    let session = ort::session::Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(1)
        .map_err(fail)?
        .with_inter_threads(1)
        .map_err(fail)?
        .with_intra_op_spinning(false)
        .map_err(fail)?
        .commit_from_memory(&model(&graph))
        .map_err(|e| e.to_string())?;
    drop(session);
    Ok(())
}

/// The shared objects the runtime's load mapped into this process (the runtime library itself and
/// dependencies nothing else had loaded, e.g. libstdc++), empty before the first successful
/// [`init`]: what an unload pages out (see [`crate::mem::page_out_libraries`]).
pub fn runtime_libraries() -> &'static [PathBuf] {
    LIBRARIES.get().map_or(&[], Vec::as_slice)
}
