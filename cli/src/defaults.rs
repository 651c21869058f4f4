//! Where the default bank and head are found: the setup home (`<home>/semantic/`, where
//! `featherguard setup` installs them), else the folder the semantic crate shipped them in.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use featherguard::semantic::defaults::{shipped_dir, BANK_FILE, HEAD_FILE, HOME_SUBDIR};
use featherguard_setup::digest::file_sha256;
use featherguard_setup::Layout;

fn find(explicit: Option<&Path>, file: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let mut tried = Vec::new();
    if let Ok(layout) = Layout::discover() {
        let p = layout.path(HOME_SUBDIR).join(file);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    let p = shipped_dir().join(file);
    if p.is_file() {
        return Ok(p);
    }
    tried.push(p);
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "default {file} not found (looked at {}); fix: run `featherguard setup --only models` from a \
         build whose source still has it, or pass the path explicitly",
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

/// Copies the shipped defaults into `<home>/semantic/` where they are missing or differ, through a
/// temporary name so an interrupted copy is never taken for a complete one. Returns a line per file.
pub fn install(home: &Path) -> anyhow::Result<Vec<String>> {
    let dir = home.join(HOME_SUBDIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut report = Vec::new();
    for file in [BANK_FILE, HEAD_FILE] {
        let src = shipped_dir().join(file);
        let dest = dir.join(file);
        let (want, bytes) = file_sha256(&src).with_context(|| {
            format!(
                "{}: the default {file} this binary was built with is gone; pass --bank/--head \
                 or rebuild featherguard",
                src.display()
            )
        })?;
        if file_sha256(&dest).is_ok_and(|(have, _)| have == want) {
            report.push(format!("{file}: present ({})", dest.display()));
            continue;
        }
        let tmp = dir.join(format!(".{file}.partial"));
        std::fs::copy(&src, &tmp)
            .and_then(|_| std::fs::rename(&tmp, &dest))
            .with_context(|| format!("{}: cannot install {file}", dest.display()))?;
        report.push(format!(
            "{file}: installed ({:.0} KB, sha256 {}…)",
            bytes as f64 / 1e3,
            &want[..12]
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_copies_then_leaves_identical_files_alone() {
        let home = std::env::temp_dir().join(format!("fg-defaults-{}", std::process::id()));
        let first = install(&home).unwrap();
        assert!(first.iter().all(|l| l.contains("installed")), "{first:?}");
        let dest = home.join(HOME_SUBDIR).join(HEAD_FILE);
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(shipped_dir().join(HEAD_FILE)).unwrap()
        );
        let second = install(&home).unwrap();
        assert!(second.iter().all(|l| l.contains("present")), "{second:?}");
        // A corrupted copy is replaced, not trusted.
        std::fs::write(&dest, b"truncated").unwrap();
        let third = install(&home).unwrap();
        assert!(third[1].contains("installed"), "{third:?}");
        std::fs::remove_dir_all(&home).unwrap();
    }
}
