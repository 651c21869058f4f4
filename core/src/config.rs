//! The configuration file (`--config FILE`, TOML): policy, limits and rule selection.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::CacheConfig;
use crate::govern::HeavyConfig;
use crate::memory::MemoryConfig;
use crate::policy::Policy;
use crate::rules::{toml_position, RuleError};
use crate::scanner::ScanLimits;

/// Input bounds applied by the firewall before any guard runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Inputs longer than this many bytes get a `limits.input_too_large` finding and only their first
    /// `max_input_bytes` are scanned; the policy for family `limits` decides flag or block.
    pub max_input_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Which rules the pattern guard uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Use the embedded default pack (true by default).
    pub default_pack: bool,
    /// Extra rule files; a rule with an existing id replaces it. Relative paths are relative to the
    /// config file.
    pub files: Vec<PathBuf>,
    /// Rule ids to turn off.
    pub disable: Vec<String>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            default_pack: true,
            files: Vec::new(),
            disable: Vec::new(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub policy: Policy,
    pub limits: Limits,
    /// Windowing and decoding bounds of the pattern guard.
    pub scan: ScanLimits,
    pub rules: RulesConfig,
    /// RSS budget: soft/hard thresholds (see docs/server.md).
    pub memory: MemoryConfig,
    /// Verdict cache bounds (off by default).
    pub cache: CacheConfig,
    /// Governance of heavy (ML) guards: cascade, idle unload, window bounds.
    pub heavy: HeavyConfig,
}

/// Errors building a firewall from configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read config: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("rule `{0}` named in rules.disable does not exist (see `featherguard rules list`)")]
    UnknownRule(String),
}

impl Config {
    /// Parse a config file's text; `file` names it in messages and anchors relative rule paths.
    pub fn parse(file: &Path, src: &str) -> Result<Config, ConfigError> {
        let name = file.display().to_string();
        let mut cfg: Config = toml::from_str(src).map_err(|e| {
            let (line, col, message) = toml_position(src, &e);
            ConfigError::Syntax {
                file: name.clone(),
                line,
                col,
                message,
            }
        })?;
        cfg.policy
            .validate()
            .map_err(|message| ConfigError::Invalid {
                file: name.clone(),
                message,
            })?;
        cfg.memory
            .validate()
            .map_err(|message| ConfigError::Invalid {
                file: name.clone(),
                message,
            })?;
        if let Some(dir) = file.parent() {
            for f in &mut cfg.rules.files {
                if f.is_relative() {
                    *f = dir.join(&*f);
                }
            }
        }
        Ok(cfg)
    }

    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(file).map_err(|source| ConfigError::Io {
            file: file.display().to_string(),
            source,
        })?;
        Config::parse(file, &src)
    }
}
