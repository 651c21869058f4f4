//! `cargo xtask test` (the README's one test command) and `cargo xtask clippy`: set up what the
//! feature sets need, then run cargo with the environment the ML backends build and run with.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use featherguard_setup::{Layout, Outcome, Request};

/// One `cargo` invocation of the test plan.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
}

/// The test plan. The ML backends add their feature sets here when they land.
const TEST_STEPS: &[Step] = &[
    Step {
        name: "workspace tests (core build)",
        args: &["test", "--workspace", "--all-targets"],
    },
    Step {
        name: "doc tests",
        args: &["test", "--workspace", "--doc"],
    },
    Step {
        name: "CLI with both ML backends (ONNX Runtime, libtorch) and the server",
        args: &[
            "test",
            "-p",
            "featherguard-cli",
            "--features",
            "onnx,torch,server",
        ],
    },
];

/// Environment for building and running the backends: libtorch and ONNX Runtime from the setup
/// cache, when present.
fn backend_env(cmd: &mut Command) {
    let Ok(layout) = Layout::discover() else {
        return;
    };
    if let Ok(ort) = layout.find_onnxruntime() {
        cmd.env("ORT_DYLIB_PATH", ort);
    }
    if let Ok(torch) = layout.find_libtorch() {
        cmd.env("LIBTORCH", &torch.root);
        let path = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
        let mut paths = vec![torch.lib.clone()];
        paths.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("LD_LIBRARY_PATH", joined);
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args);
    backend_env(&mut cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Set up everything (idempotent: a second run touches no network), then run every test step.
pub fn test() -> Result<ExitCode> {
    eprintln!("== setup (runtimes and models; cached after the first run)");
    let request = Request {
        dir: None,
        only: Vec::new(),
        check: false,
        verify: false,
        python: None,
    };
    if featherguard_setup::execute(&request, &mut std::io::stderr())? != Outcome::Ready {
        bail!("setup did not complete; see the messages above");
    }
    for step in TEST_STEPS {
        eprintln!("== {}: cargo {}", step.name, step.args.join(" "));
        cargo(step.args)?;
    }
    eprintln!("== audit of the core build against xtask/budgets.toml");
    cargo(&["xtask", "audit", "--only", "core", "--check"])?;
    eprintln!("== all tests passed");
    Ok(ExitCode::SUCCESS)
}

/// `cargo clippy` over the workspace and all targets with warnings denied, in the backend environment;
/// then the CLI again with its feature-gated commands (ML guards, server) compiled in: both backends,
/// and libtorch alone (the code paths where ONNX Runtime is absent).
pub fn clippy() -> Result<ExitCode> {
    let deny = ["--", "-D", "warnings"];
    cargo(&[&["clippy", "--workspace", "--all-targets"][..], &deny].concat())?;
    for features in ["onnx,torch,server", "torch"] {
        cargo(
            &[
                &[
                    "clippy",
                    "-p",
                    "featherguard-cli",
                    "--all-targets",
                    "--features",
                    features,
                ][..],
                &deny,
            ]
            .concat(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
