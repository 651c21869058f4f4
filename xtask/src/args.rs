//! A minimal flag parser: xtask stays free of a CLI framework so `cargo xtask` builds fast.

use anyhow::{bail, Result};

/// Remaining command-line arguments, consumed flag by flag.
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    /// The process arguments after the program name.
    pub fn from_env() -> Args {
        Args {
            rest: std::env::args().skip(1).collect(),
        }
    }

    /// Takes the leading command word, if any.
    pub fn command(&mut self) -> Option<String> {
        if self
            .rest
            .first()
            .is_some_and(|a| !a.starts_with("--") || a == "--help")
        {
            Some(self.rest.remove(0))
        } else {
            None
        }
    }

    /// Takes a boolean flag.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// Takes every `--name VALUE` / `--name=VALUE`, in order.
    fn values(&mut self, name: &str) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < self.rest.len() {
            if self.rest[i] == name {
                if i + 1 >= self.rest.len() {
                    bail!("{name} needs a value");
                }
                found.push(self.rest.remove(i + 1));
                self.rest.remove(i);
            } else if let Some(v) = self.rest[i].strip_prefix(&format!("{name}=")) {
                found.push(v.to_string());
                self.rest.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Takes `--name VALUE` or `--name=VALUE` (the last one wins).
    pub fn value(&mut self, name: &str) -> Result<Option<String>> {
        Ok(self.values(name)?.pop())
    }

    /// Takes a comma-separated list flag (may be repeated).
    pub fn list(&mut self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .values(name)?
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    /// Fails if anything was not consumed.
    pub fn finish(self) -> Result<()> {
        if !self.rest.is_empty() {
            bail!("unexpected arguments: {}", self.rest.join(" "));
        }
        Ok(())
    }
}
