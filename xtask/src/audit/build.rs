//! Building a feature set and reading its static facts: size, crate count, shared libraries.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::sets::FeatureSet;

const CLI_PACKAGE: &str = "featherguard-cli";
const BIN: &str = "featherguard";
const PROFILE: &str = "dist";

/// The workspace root and cargo's target folder.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Folder of the root Cargo.toml.
    pub root: PathBuf,
    /// `$CARGO_TARGET_DIR`, else `<root>/target`.
    pub target: PathBuf,
}

impl Workspace {
    /// The workspace this xtask belongs to.
    pub fn locate() -> Workspace {
        // `cargo xtask` (cargo run) sets CARGO_MANIFEST_DIR for this run; the compile-time value
        // would name whichever checkout built a binary that another checkout sharing the
        // target dir reuses.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let root = manifest_dir
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| root.join("target"), |t| root.join(t));
        Workspace { root, target }
    }

    /// A `cargo` command run from the workspace root.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(&self.root);
        cmd
    }

    /// The facade package's `[features]` table, from `cargo metadata`.
    pub fn facade_features(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let out = self
            .cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .output()
            .context("run cargo metadata")?;
        if !out.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parse cargo metadata")?;
        meta["packages"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "featherguard"))
            .and_then(|p| p["features"].as_object())
            .cloned()
            .context("cargo metadata has no `featherguard` package with features")
    }

    fn feature_args(set: &FeatureSet) -> Vec<String> {
        let mut args = vec![
            "-p".to_string(),
            CLI_PACKAGE.to_string(),
            "--no-default-features".to_string(),
        ];
        if !set.features.is_empty() {
            args.push("--features".into());
            args.push(set.features.join(","));
        }
        args
    }

    /// Builds the stripped `dist` binary of a set and copies it to `target/audit/featherguard-<set>`.
    pub fn build(&self, set: &FeatureSet, env: &[(String, String)]) -> Result<PathBuf> {
        let status = self
            .cargo()
            .args(["build", "--profile", PROFILE, "--bin", BIN])
            .args(Self::feature_args(set))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()
            .context("run cargo build")?;
        if !status.success() {
            bail!(
                "cargo build of feature set `{}` failed ({status})",
                set.name
            );
        }
        let built = self.target.join(PROFILE).join(BIN);
        let dir = self.target.join("audit");
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let copy = dir.join(format!("{BIN}-{}", set.name));
        fs::copy(&built, &copy)
            .with_context(|| format!("copy {} to {}", built.display(), copy.display()))?;
        Ok(copy)
    }

    /// Unique crates in the normal dependency graph: (all, without proc-macros = linked in).
    pub fn crate_counts(&self, set: &FeatureSet) -> Result<(usize, usize)> {
        let count = |edges: &str| -> Result<usize> {
            let out = self
                .cargo()
                .args(["tree", "--prefix", "none", "-e", edges])
                .args(Self::feature_args(set))
                .output()
                .context("run cargo tree")?;
            if !out.status.success() {
                bail!(
                    "cargo tree failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(unique_crates(&String::from_utf8_lossy(&out.stdout)))
        };
        Ok((count("normal")?, count("normal,no-proc-macro")?))
    }
}

/// Counts distinct `name version` pairs in `cargo tree --prefix none` output.
pub fn unique_crates(tree: &str) -> usize {
    tree.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?))
        })
        .collect::<BTreeSet<_>>()
        .len()
}

/// A shared library the binary needs at run time.
#[derive(Debug, Clone)]
pub struct SharedLib {
    /// Soname or file name.
    pub name: String,
    /// Resolved path (empty when not found).
    pub path: PathBuf,
    /// Size of the resolved file in bytes.
    pub bytes: u64,
    /// Whether it is loaded with `dlopen` (not visible to `ldd`).
    pub dlopen: bool,
}

/// Libraries `ldd` resolves for `binary`, plus the set's `dlopen`ed ones.
pub fn shared_libs(
    binary: &Path,
    dlopen: &[PathBuf],
    env: &[(String, String)],
) -> Result<Vec<SharedLib>> {
    let out = Command::new("ldd")
        .arg(binary)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs: Vec<SharedLib> = parse_ldd(&text)
        .into_iter()
        .map(|(name, path)| {
            let bytes = path
                .as_ref()
                .and_then(|p| fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            SharedLib {
                name,
                path: path.unwrap_or_default(),
                bytes,
                dlopen: false,
            }
        })
        .collect();
    for path in dlopen {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bytes = fs::metadata(path).map_or(0, |m| m.len());
        libs.push(SharedLib {
            name,
            path: path.clone(),
            bytes,
            dlopen: true,
        });
    }
    Ok(libs)
}

/// (name, resolved path) per `ldd` line; the vDSO has no file and is skipped.
fn parse_ldd(text: &str) -> Vec<(String, Option<PathBuf>)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty()
                || line.starts_with("linux-vdso")
                || line.starts_with("statically linked")
            {
                return None;
            }
            let strip_addr = |s: &str| s.split(" (0x").next().unwrap_or(s).trim().to_string();
            match line.split_once(" => ") {
                Some((name, rest)) if rest.starts_with("not found") => {
                    Some((name.to_string(), None))
                }
                Some((name, rest)) => {
                    Some((name.to_string(), Some(PathBuf::from(strip_addr(rest)))))
                }
                None => {
                    let path = strip_addr(line);
                    let name = Path::new(&path).file_name()?.to_string_lossy().into_owned();
                    Some((name, Some(PathBuf::from(path))))
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibtorch.so => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f2)\n";
        let libs = parse_ldd(text);
        assert_eq!(libs.len(), 3);
        assert_eq!(
            libs[0],
            (
                "libgcc_s.so.1".into(),
                Some("/lib/x86_64-linux-gnu/libgcc_s.so.1".into())
            )
        );
        assert_eq!(libs[1], ("libtorch.so".into(), None));
        assert_eq!(libs[2].0, "ld-linux-x86-64.so.2");
    }

    #[test]
    fn crates_are_deduplicated() {
        let tree =
            "featherguard-cli v0.1.0 (/w/cli)\nserde v1.0.1\nserde v1.0.1 (*)\nregex v1.0.0\n\n";
        assert_eq!(unique_crates(tree), 3);
    }
}
