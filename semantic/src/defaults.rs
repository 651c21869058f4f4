//! The default bank and head, shipped in this crate's `data/` folder. Cargo packages that folder
//! with the crate, so a binary installed from the registry finds them in its unpacked source too;
//! `featherguard setup` copies them into the setup home, which outlives a cleaned cargo cache.

use std::path::PathBuf;

/// File name of the default exemplar bank (all-MiniLM-L6-v2 vectors, safetensors).
pub const BANK_FILE: &str = "default-bank.safetensors";
/// File name of the default classifier head (safetensors).
pub const HEAD_FILE: &str = "default-head.safetensors";
/// Folder of the setup home that holds installed copies of the defaults.
pub const HOME_SUBDIR: &str = "semantic";

/// The folder the defaults were shipped in: this crate's `data/` as it was at build time.
pub fn shipped_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bank, Head};

    #[test]
    fn shipped_defaults_open() {
        let bank = Bank::open(&shipped_dir().join(BANK_FILE)).expect("default bank");
        assert!(bank.len() > 1000);
        Head::open(&shipped_dir().join(HEAD_FILE)).expect("default head");
    }
}
