//! `featherguard setup`: fetch and verify the runtimes and models the ML guards use.
//!
//! Flags map one to one onto `featherguard_setup::Request`; `cargo xtask setup` runs the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use featherguard_setup::{Component, Outcome, Request};

/// Fetch (or with --check, report) the pinned ONNX Runtime, libtorch and models.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// Only these components (comma separated): onnx, torch, models. Default: all.
    #[arg(long, value_delimiter = ',', value_name = "COMPONENT")]
    pub only: Vec<Component>,
    /// Install folder [default: $FEATHERGUARD_HOME, else ~/.cache/featherguard].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Report what is present and valid; no network, no writes. Exit code 2 when incomplete.
    #[arg(long)]
    pub check: bool,
    /// Recompute every sha256 instead of trusting the manifest's size+mtime stamps.
    #[arg(long)]
    pub verify: bool,
    /// Python interpreter that runs `pip download` [default: $FEATHERGUARD_PYTHON, else python3].
    #[arg(long, value_name = "EXE")]
    pub python: Option<PathBuf>,
}

/// Runs `featherguard setup`; exit code 2 means `--check` found something missing.
pub fn run(args: &SetupArgs) -> anyhow::Result<ExitCode> {
    let request = Request {
        dir: args.dir.clone(),
        only: args.only.clone(),
        check: args.check,
        verify: args.verify,
        python: args.python.clone(),
    };
    let outcome = featherguard_setup::execute(&request, &mut std::io::stdout())?;
    #[cfg(any(feature = "onnx", feature = "torch"))]
    if !args.check && request.components().contains(&Component::Models) {
        install_defaults(args)?;
    }
    Ok(match outcome {
        Outcome::Ready => ExitCode::SUCCESS,
        Outcome::Incomplete => ExitCode::from(2),
    })
}

/// The default bank and head go next to the model they were built with, so an installed binary
/// keeps finding them after its build folder or cargo cache is gone.
#[cfg(any(feature = "onnx", feature = "torch"))]
fn install_defaults(args: &SetupArgs) -> anyhow::Result<()> {
    let layout = match &args.dir {
        Some(dir) => featherguard_setup::Layout::at(dir),
        None => featherguard_setup::Layout::discover()?,
    };
    for line in crate::defaults::install(layout.home())? {
        println!("{line}");
    }
    Ok(())
}
