//! Where the default bank and head are found: the setup home (`<home>/semantic/`), else the copies
//! in the source tree this binary was built from (`semantic/data/`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use featherguard_setup::Layout;

pub const BANK_FILE: &str = "default-bank.safetensors";
pub const HEAD_FILE: &str = "default-head.safetensors";

fn source_tree(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../semantic/data")
        .join(file)
}

fn find(explicit: Option<&Path>, file: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let mut tried = Vec::new();
    if let Ok(layout) = Layout::discover() {
        let p = layout.path("semantic").join(file);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    let p = source_tree(file);
    if p.is_file() {
        return Ok(p);
    }
    tried.push(p);
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "default {file} not found (looked at {}); build it with `scripts/onnx/build_default.sh` or pass the path explicitly",
        tried.join(", ")
    )
}

/// The bank to use: `explicit`, else the default one.
pub fn bank(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    find(explicit, BANK_FILE)
}

/// The head to use: `explicit`, else the default one.
pub fn head(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    find(explicit, HEAD_FILE)
}
