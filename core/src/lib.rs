//! featherguard-core: the pattern engine and the types every featherguard guard shares.
//!
//! Text is normalized (NFKD, marks stripped, lowercase, invisibles removed, look-alikes folded) with
//! every byte mapped back to the original, then one compiled multi-pattern automaton per view finds
//! rule matches. [`Firewall`] runs an ordered set of [`Guard`]s under a [`Policy`].
//!
//! ```
//! let fw = featherguard_core::Firewall::with_default_rules().unwrap();
//! let v = fw.scan("What is the capital of France?");
//! assert_eq!(v.action, featherguard_core::Action::Allow);
//! ```

mod anchors;
mod cache;
mod config;
mod decode;
mod default_pack;
mod deobfuscate;
mod embed;
mod engine;
mod firewall;
mod fold;
mod fold_table;
mod gate_dfa;
mod govern;
mod guard;
mod memory;
mod normalize;
mod policy;
mod redact;
mod rules;
mod scanner;
mod slot;
mod stream;
mod validate;
mod verdict;
mod view;

pub use cache::{CacheConfig, CacheScope, CacheStats, VerdictCache};
pub use config::{Config, ConfigError, Limits, RulesConfig};
pub use embed::{l2_normalize, EmbedError, Embedder, Embeddings, LoadStats, ModelId};
pub use engine::RuleSet;
pub use firewall::{pattern_guard, Firewall};
pub use fold::{fold_str, is_invisible};
pub use govern::{
    CascadeMode, CascadeStats, FirewallStats, HeavyConfig, Maintenance, MemoryStats, ScanObserver,
    ScanOptions, WindowOverflow,
};
pub use guard::{Guard, GuardError, Input, Source};
pub use memory::{
    parse_bytes, release_free_heap, MemoryBudget, MemoryConfig, Pressure, ProcStatus, Rss,
    MEMORY_LIMIT_ENV,
};
pub use policy::{FailMode, Policy, Thresholds};
pub use redact::redact;
pub use rules::{
    default_rules, load_rule_file, merge_rules, parse_rules, Examples, Origin, Rule, RuleError,
    ViewKind,
};
pub use scanner::{PatternGuard, ScanLimits};
pub use slot::{GuardCheck, GuardLoader, GuardSlot, SlotError, SlotOptions, SlotState, SlotStats};
pub use stream::{StreamChunk, StreamEvent, StreamScanner};
pub use validate::Validator;
pub use verdict::{Action, Family, Finding, GuardFailure, Severity, Span, Verdict};
