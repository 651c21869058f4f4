//! `cargo xtask <command>`: developer tasks that drive cargo and the built binaries as processes.
//!
//! - `setup`: fetch and verify runtimes and models (the same code as `featherguard setup`).
//! - `audit`: size, dependency count, shared libraries, RSS and wall time per feature set.

mod args;
mod audit;
mod ci;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use featherguard_setup::{Component, Outcome, Request};

use crate::args::Args;

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  test  set up runtimes and models (idempotent), run every test step and the core audit check
  clippy
        cargo clippy --workspace --all-targets -D warnings, with the backends' build environment
  setup [--only onnx,torch,models] [--dir DIR] [--check] [--verify] [--python EXE]
        fetch (or with --check: report) the pinned runtimes and models
  audit [--only core,onnx,torch,full] [--runs N] [--check] [--budgets FILE] [--docs]
        measure binary size, crates, shared libraries, RSS and wall time per feature set;
        --check fails on any budget in xtask/budgets.toml exceeded; --docs rewrites docs/audit.md's table";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = Args::from_env();
    match args.command().as_deref() {
        Some("setup") => setup(args),
        Some("audit") => audit::run(args),
        Some("test") => ci::test(),
        Some("clippy") => ci::clippy(),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

fn setup(mut args: Args) -> Result<ExitCode> {
    let request = Request {
        dir: args.value("--dir")?.map(Into::into),
        only: args
            .list("--only")?
            .iter()
            .map(|s| s.parse::<Component>())
            .collect::<Result<_, _>>()?,
        check: args.flag("--check"),
        verify: args.flag("--verify"),
        python: args.value("--python")?.map(Into::into),
    };
    args.finish().context(USAGE)?;
    let outcome = featherguard_setup::execute(&request, &mut std::io::stdout())?;
    Ok(match outcome {
        Outcome::Ready => ExitCode::SUCCESS,
        Outcome::Incomplete => ExitCode::from(2),
    })
}
