//! Two things the dynamic linking of libtorch needs at build time:
//!
//! - A libtorch of the version tch 0.26 is written against (2.13): a different one compiles or
//!   links against the wrong C++ API and fails later with a far less clear message, so its
//!   `version.h` is checked here first (`LIBTORCH_BYPASS_VERSION_CHECK` skips it, as in torch-sys).
//! - A run path to `$LIBTORCH/lib` for this crate's own tests, examples and benches, so they start
//!   without `LD_LIBRARY_PATH`; with a CUDA libtorch, `libtorch_cuda.so` linked with
//!   `--no-as-needed` (see below). (A build script's link arguments apply only to its own package's
//!   targets; the `featherguard` binary gets the same from `cli/build.rs`.)

use std::env;
use std::path::{Path, PathBuf};

const EXPECTED: (u32, u32) = (2, 13);

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_BYPASS_VERSION_CHECK");
    println!("cargo:rerun-if-changed=build.rs");
    // Without LIBTORCH, torch-sys has already failed with its own instructions.
    let Some(root) = env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    if env::var_os("LIBTORCH_BYPASS_VERSION_CHECK").is_none() {
        check_version(&root);
    }
    let lib = root.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // A CUDA libtorch: torch-sys passes `-ltorch_cuda`, but rustc links with `--as-needed` and
    // nothing references a symbol of libtorch_cuda.so directly, so the linker drops it, its
    // static initializers never run, and libtorch reports no CUDA device on a GPU machine
    // (`tch::Cuda::is_available()` false; seen on an H100). Link it again with `--no-as-needed`.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state");
        // Lets the CUDA test tell "no GPU" from "GPU present, CUDA not registered".
        println!("cargo:rustc-env=FEATHERGUARD_TORCH_CUDA_LINKED=1");
    }
}

fn check_version(root: &Path) {
    let header = root.join("include/torch/headeronly/version.h");
    let Ok(text) = std::fs::read_to_string(&header) else {
        // Older layouts keep the version elsewhere; torch-sys's own check covers them.
        return;
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("#define {name} ")))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let (Some(major), Some(minor)) = (field("TORCH_VERSION_MAJOR"), field("TORCH_VERSION_MINOR"))
    else {
        return;
    };
    if (major, minor) != EXPECTED {
        panic!(
            "libtorch at {} is version {major}.{minor}, but featherguard-torch (tch 0.26) needs {}.{}: \
             run `featherguard setup --only torch` (or `cargo xtask setup --only torch`) and build with \
             LIBTORCH=<featherguard home>/libtorch",
            root.display(),
            EXPECTED.0,
            EXPECTED.1
        );
    }
}
