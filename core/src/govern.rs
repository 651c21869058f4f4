//! Runtime governance of a firewall: heavy guards in slots, when they run (cascade), the verdict
//! cache, the memory budget, per-request scan options, and the stats that report all of it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::{CacheStats, VerdictCache};
use crate::memory::{release_free_heap, MemoryBudget, Pressure, Rss};
use crate::policy::Policy;
use crate::slot::{GuardSlot, SlotStats};
use crate::verdict::Action;

/// When heavy (ML) guards run relative to the pattern verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CascadeMode {
    /// On every input.
    Always,
    /// Only when the light guards have not already decided to block: a heavy guard can raise an
    /// action but never lower one, so a block is final and the model call would change nothing.
    #[default]
    OnAmbiguous,
    /// Never (pattern-only, e.g. to shed load).
    Never,
}

impl CascadeMode {
    /// Whether heavy guards run after the light guards reached `light_action`.
    pub fn runs_heavy(self, light_action: Action) -> bool {
        match self {
            CascadeMode::Always => true,
            CascadeMode::OnAmbiguous => light_action < Action::Block,
            CascadeMode::Never => false,
        }
    }
}

/// What a heavy guard does with a text needing more model windows than `max_windows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WindowOverflow {
    /// Scan `max_windows` windows spread over the text and add a `limits` finding (the policy for
    /// family `limits` then flags or blocks).
    #[default]
    Sample,
    /// Refuse the text: a guard error, so the fail mode decides.
    Reject,
}

/// The `[heavy]` config section: how ML guards are governed. Backends read `max_windows` and
/// `window_overflow` when they build their guards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeavyConfig {
    pub cascade: CascadeMode,
    /// Unload a heavy guard after this many seconds without a scan; absent = never.
    pub idle_unload_secs: Option<u64>,
    /// After a failed load, fail fast for this many seconds before trying again.
    pub retry_secs: u64,
    /// Most model windows one input may take (never silently truncated: see `window_overflow`).
    pub max_windows: usize,
    pub window_overflow: WindowOverflow,
    /// Under soft memory pressure, unload heavy guards idle for at least this many seconds.
    pub soft_unload_idle_secs: u64,
}

impl Default for HeavyConfig {
    fn default() -> Self {
        HeavyConfig {
            cascade: CascadeMode::OnAmbiguous,
            idle_unload_secs: None,
            retry_secs: 10,
            max_windows: 32,
            window_overflow: WindowOverflow::Sample,
            soft_unload_idle_secs: 30,
        }
    }
}

impl HeavyConfig {
    /// Slot options implied by this section.
    pub fn slot_options(&self) -> crate::slot::SlotOptions {
        crate::slot::SlotOptions {
            idle_unload_after: self.idle_unload_secs.map(Duration::from_secs),
            retry_after: Duration::from_secs(self.retry_secs),
        }
    }
}

/// Per-call choices, within what the firewall was built with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanOptions {
    /// Replaces the firewall's policy for this scan.
    pub policy: Option<Policy>,
    /// Run only the guards (light or heavy) with these names; `None` runs all.
    pub guards: Option<Vec<String>>,
    /// Replaces the firewall's cascade mode for this scan.
    pub cascade: Option<CascadeMode>,
}

impl ScanOptions {
    pub(crate) fn allows(&self, guard: &str) -> bool {
        self.guards
            .as_ref()
            .is_none_or(|g| g.iter().any(|n| n == guard))
    }
}

/// Told how long each guard call took: hosts export it (the server's per-guard latency histograms).
pub trait ScanObserver: Send + Sync {
    /// `guard` scanned `inputs` texts in `elapsed` and failed on `failed` of them: all when the
    /// call failed or panicked, some when a batch call reported errors for single inputs (a heavy
    /// guard whose load failed errs on each input of the batch).
    fn guard_done(&self, guard: &str, inputs: usize, elapsed: Duration, failed: usize);
}

/// Memory figures in [`FirewallStats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryStats {
    /// Freshly sampled RSS (zeros where `/proc` is unavailable).
    pub rss: Rss,
    pub limit_bytes: Option<u64>,
    pub pressure: Pressure,
}

/// How often the cascade let heavy guards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CascadeStats {
    pub mode: CascadeMode,
    /// Scans in which heavy guards ran.
    pub heavy_runs: u64,
    /// Scans in which heavy guards were configured but the cascade skipped them.
    pub heavy_skipped: u64,
}

/// A snapshot of the firewall's runtime state: `Firewall::stats()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FirewallStats {
    /// Light guards (always loaded), in run order.
    pub guards: Vec<String>,
    /// Heavy guards and their load history.
    pub slots: Vec<SlotStats>,
    /// `None` when caching is off.
    pub cache: Option<CacheStats>,
    pub memory: MemoryStats,
    pub cascade: CascadeStats,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Maintenance {
    pub pressure: Option<Pressure>,
    /// Slots unloaded (idle, or idle-ish under soft pressure).
    pub unloaded: usize,
    /// Cache entries shed.
    pub cache_shed: usize,
}

/// Governance state a firewall owns.
pub(crate) struct Governance {
    pub heavy: Vec<Arc<GuardSlot>>,
    pub config: HeavyConfig,
    pub cache: Option<VerdictCache>,
    pub memory: Arc<MemoryBudget>,
    pub heavy_runs: AtomicU64,
    pub heavy_skipped: AtomicU64,
    pub observer: Option<Arc<dyn ScanObserver>>,
    /// The pattern guard when the firewall was built from a config, for stream scanners.
    pub pattern: Option<Arc<crate::scanner::PatternGuard>>,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("heavy", &self.heavy)
            .field("config", &self.config)
            .field("cache", &self.cache)
            .field("memory", &self.memory)
            .finish()
    }
}

impl Default for Governance {
    fn default() -> Self {
        Governance {
            heavy: Vec::new(),
            config: HeavyConfig::default(),
            cache: None,
            memory: Arc::new(MemoryBudget::default()),
            heavy_runs: AtomicU64::new(0),
            heavy_skipped: AtomicU64::new(0),
            observer: None,
            pattern: None,
        }
    }
}

impl Governance {
    /// Count whether heavy guards ran; called once per scan that has heavy guards.
    pub fn count_cascade(&self, ran: bool) {
        let c = if ran {
            &self.heavy_runs
        } else {
            &self.heavy_skipped
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Unload idle slots; under soft pressure (or worse) shed the cache and unload slots idle for
    /// `soft_unload_idle_secs` too.
    pub fn maintain(&self, now: Instant) -> Maintenance {
        let mut m = Maintenance::default();
        for slot in &self.heavy {
            m.unloaded += usize::from(slot.unload_if_idle(now));
        }
        let pressure = self.memory.classify(self.memory.resample());
        if pressure >= Pressure::Soft {
            m.cache_shed = self.cache.as_ref().map_or(0, |c| c.clear());
            let quiet = Duration::from_secs(self.config.soft_unload_idle_secs);
            for slot in &self.heavy {
                let idle = slot.idle_for(now).is_none_or(|d| d >= quiet);
                if idle && slot.is_loaded() {
                    m.unloaded += usize::from(slot.unload());
                }
            }
            release_free_heap();
        }
        m.pressure = Some(pressure);
        m
    }

    pub fn release_caches(&self) -> usize {
        let n = self.cache.as_ref().map_or(0, |c| c.clear());
        release_free_heap();
        n
    }
}

/// A stable fingerprint of everything besides the text that decides a verdict.
pub(crate) fn policy_version(
    policy: &Policy,
    guards: Option<&[String]>,
    cascade: CascadeMode,
) -> u64 {
    let mut h = DefaultHasher::new();
    // Debug output covers every field (thresholds as exact float text, families in map order).
    format!("{policy:?}").hash(&mut h);
    guards.hash(&mut h);
    cascade.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascade_skips_only_decided_inputs() {
        assert!(CascadeMode::OnAmbiguous.runs_heavy(Action::Allow));
        assert!(CascadeMode::OnAmbiguous.runs_heavy(Action::Flag));
        assert!(!CascadeMode::OnAmbiguous.runs_heavy(Action::Block));
        assert!(CascadeMode::Always.runs_heavy(Action::Block));
        assert!(!CascadeMode::Never.runs_heavy(Action::Allow));
    }

    #[test]
    fn policy_version_changes_with_policy() {
        let p = Policy::default();
        let mut q = p.clone();
        q.block_at = 0.9;
        let v = |p: &Policy| policy_version(p, None, CascadeMode::OnAmbiguous);
        assert_eq!(v(&p), v(&p.clone()));
        assert_ne!(v(&p), v(&q));
        assert_ne!(
            v(&p),
            policy_version(&p, Some(&["patterns".into()]), CascadeMode::OnAmbiguous)
        );
    }
}
