//! With the `torch` feature the binary links libtorch dynamically (torch-sys has no other mode
//! that builds offline). So that `featherguard` starts without `LD_LIBRARY_PATH`, record run paths:
//!
//! 1. `$LIBTORCH/lib` as it was at build time (normally `<featherguard home>/libtorch/lib`, which
//!    `featherguard setup --only torch` / `cargo xtask setup` creates);
//! 2. `$ORIGIN/libtorch/lib`, for a binary shipped with a libtorch folder next to it.
//!
//! If neither holds the libraries at run time, the dynamic loader refuses to start the program
//! ("libtorch_cpu.so: cannot open shared object file") before any of our code runs; docs/torch.md
//! says how to fix that. `LD_LIBRARY_PATH` still overrides both paths.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    // Without LIBTORCH torch-sys has already failed the build with its own instructions.
    if let Some(root) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&root).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
        // See guards-torch/build.rs: without this, `--as-needed` drops libtorch_cuda.so and a
        // CUDA libtorch reports no GPU.
        if lib.join("libtorch_cuda.so").exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state"
            );
        }
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/libtorch/lib");
}
