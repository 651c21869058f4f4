//! The `setup` command itself (flags in, report out), shared verbatim by `featherguard setup` and
//! `cargo xtask setup` so both behave and print the same.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::catalog::{self, Component};
use crate::error::SetupError;
use crate::install::{Event, Setup};
use crate::layout::Layout;
use crate::python::Python;

/// What the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `--dir`: the home folder; `None` = discover from the environment.
    pub dir: Option<PathBuf>,
    /// `--only`: the components; empty = all.
    pub only: Vec<Component>,
    /// `--check`: report only, no network, no writes.
    pub check: bool,
    /// `--verify`: recompute every sha256 instead of trusting manifest stamps.
    pub verify: bool,
    /// `--python`: the interpreter running pip; `None` = `$FEATHERGUARD_PYTHON` or `python3`.
    pub python: Option<PathBuf>,
}

/// How the command ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for is present and valid.
    Ready,
    /// `--check` found something missing or invalid.
    Incomplete,
}

impl Request {
    /// The components, all of them when none were named.
    pub fn components(&self) -> Vec<Component> {
        if self.only.is_empty() {
            Component::ALL.to_vec()
        } else {
            self.only.clone()
        }
    }

    fn setup(&self) -> Result<Setup<'static>, SetupError> {
        let layout = match &self.dir {
            Some(dir) => Layout::at(dir),
            None => Layout::discover()?,
        };
        let python = self
            .python
            .as_ref()
            .map_or_else(Python::default, Python::at);
        Ok(Setup::new(layout)
            .with_python(python)
            .with_rehash(self.verify))
    }
}

/// Runs the request, writing a human report to `out` (write errors on `out` are ignored: the
/// report is advisory, the result is the return value).
pub fn execute(request: &Request, out: &mut dyn Write) -> Result<Outcome, SetupError> {
    let setup = request.setup()?;
    let components = request.components();
    let home = setup.layout().home().display().to_string();
    if request.check {
        let statuses = setup.check(&components)?;
        for s in &statuses {
            let _ = writeln!(out, "{s}");
        }
        let mut bad: Vec<Component> = statuses
            .iter()
            .filter(|s| !s.is_valid())
            .map(|s| s.component)
            .collect();
        bad.dedup();
        if bad.is_empty() {
            let _ = writeln!(out, "featherguard setup: all present and valid in {home}");
            return Ok(Outcome::Ready);
        }
        let names: Vec<&str> = bad.iter().map(|c| c.name()).collect();
        let _ = writeln!(
            out,
            "featherguard setup: incomplete; run `featherguard setup --only {}`",
            names.join(",")
        );
        return Ok(Outcome::Incomplete);
    }

    let started = Instant::now();
    let outcomes = setup.install(&components, &mut |e: &Event| {
        let _ = writeln!(out, "{e}");
    })?;
    let downloaded: u64 = outcomes.iter().map(|o| o.downloaded_bytes).sum();
    let _ = writeln!(
        out,
        "featherguard setup: ready in {home} ({:.1} MB downloaded, {:.2} s)",
        downloaded as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let hints = setup.env_hints(&components);
    if !hints.is_empty() {
        let _ = writeln!(out, "to build and run with the torch feature:");
        for (k, v) in hints {
            let _ = writeln!(out, "  export {k}={v}");
        }
    }
    Ok(Outcome::Ready)
}

/// Installed size of the components in bytes (for messages and docs).
pub fn installed_bytes(components: &[Component]) -> u64 {
    components
        .iter()
        .map(|c| catalog::spec(*c).installed_bytes())
        .sum()
}
