//! Guard slots: a heavy guard (an ML model) built by a loader closure on first use, measured, and
//! dropped again after a quiet period or under memory pressure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::guard::{Guard, GuardError, Input};
use crate::memory::{release_free_heap, MemoryBudget, Pressure};
use crate::verdict::Finding;

/// Builds the guard a slot holds; called again after every unload. Must be cheap to call twice
/// concurrently only in the sense that the slot never does: loads are serialized per slot.
pub type GuardLoader = Box<dyn Fn() -> Result<Arc<dyn Guard>, GuardError> + Send + Sync>;

/// A cheap test of whether a load could work (files present with the right size, runtime library
/// found), run without loading anything: what readiness reports for a slot that is not loaded.
pub type GuardCheck = Box<dyn Fn() -> Result<(), GuardError> + Send + Sync>;

/// Why a slot could not provide its guard.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SlotError {
    /// Sampled RSS is over the budget's hard threshold: no new model is loaded.
    #[error("{guard}: not loaded: process RSS {rss} bytes is over the hard memory threshold of {threshold} bytes")]
    OverBudget {
        guard: String,
        rss: u64,
        threshold: u64,
    },
    /// The loader failed; the slot retries after `retry_after` has passed since this failure.
    #[error("{guard}: load failed: {message}")]
    LoadFailed { guard: String, message: String },
}

impl From<SlotError> for GuardError {
    fn from(e: SlotError) -> GuardError {
        match e {
            SlotError::OverBudget { ref guard, .. } => GuardError::Unavailable {
                reason: e.to_string(),
                guard: guard.clone(),
                what: "memory for the model".into(),
                fix: "raise memory.limit_bytes, or lower idle_unload_secs so other guards unload"
                    .into(),
            },
            SlotError::LoadFailed { guard, message, .. } => GuardError::Unavailable {
                guard,
                what: "the model".into(),
                reason: message,
                fix: "check the model files and runtime library (featherguard setup)".into(),
            },
        }
    }
}

/// Lifecycle of a slot's guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Never loaded, or unloaded since.
    Unloaded,
    Loaded,
    /// The last load attempt failed (the error is in [`SlotStats::last_error`]).
    Failed,
}

/// What a slot reports in `Firewall::stats()` and `/v1/guards`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotStats {
    pub name: String,
    pub state: SlotState,
    /// Successful loads, reloads after unload included.
    pub loads: u64,
    pub unloads: u64,
    /// Loads refused because RSS was over the hard threshold.
    pub refused_over_budget: u64,
    /// When the current or last load finished, in milliseconds since the Unix epoch.
    pub loaded_at_unix_ms: Option<u64>,
    /// Wall time of the last successful load, in milliseconds.
    pub load_ms: Option<f64>,
    /// Process RSS after the last load minus before it, in bytes (other threads' allocations during
    /// the load count too).
    pub rss_delta_bytes: Option<i64>,
    /// Process RSS before the last unload minus after it (and after returning free heap), in bytes.
    pub rss_freed_bytes: Option<i64>,
    /// Milliseconds since the guard last scanned anything; `None` if never used.
    pub idle_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// Tuning of one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotOptions {
    /// Unload after this long without a scan; `None` keeps the guard loaded.
    pub idle_unload_after: Option<Duration>,
    /// After a failed load, further scans fail fast with the same error for this long.
    pub retry_after: Duration,
}

impl Default for SlotOptions {
    fn default() -> Self {
        SlotOptions {
            idle_unload_after: None,
            retry_after: Duration::from_secs(10),
        }
    }
}

#[derive(Default)]
struct Record {
    loads: u64,
    unloads: u64,
    /// Set while `unload` frees the model: the memory is still held, so stats say loaded until
    /// the unload (and its count) is complete.
    unloading: bool,
    refused: u64,
    loaded_at: Option<SystemTime>,
    load_time: Option<Duration>,
    rss_delta: Option<i64>,
    rss_freed: Option<i64>,
    failure: Option<(Instant, SlotError)>,
}

/// A lazily loaded guard. Implements [`Guard`] itself, so it sits in a firewall like any other; a
/// scan that needs the model loads it, a scan in flight keeps its model alive across an unload
/// (the memory is freed when that scan finishes).
pub struct GuardSlot {
    name: Arc<str>,
    loader: GuardLoader,
    check: Option<GuardCheck>,
    options: SlotOptions,
    memory: Arc<MemoryBudget>,
    guard: RwLock<Option<Arc<dyn Guard>>>,
    /// Serializes loads and unloads, so a model is never built twice at once.
    transition: Mutex<()>,
    /// Measurements; locked only briefly, so stats never wait for a load.
    record: Mutex<Record>,
    origin: Instant,
    /// Milliseconds since `origin` of the last scan, plus one (0 = never used).
    last_used: AtomicU64,
}

impl std::fmt::Debug for GuardSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardSlot")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl GuardSlot {
    /// A slot named `name` (the name the loaded guard's findings should carry too).
    pub fn new(
        name: &str,
        loader: GuardLoader,
        options: SlotOptions,
        memory: Arc<MemoryBudget>,
    ) -> GuardSlot {
        GuardSlot {
            name: Arc::from(name),
            loader,
            check: None,
            options,
            memory,
            guard: RwLock::new(None),
            transition: Mutex::new(()),
            record: Mutex::new(Record::default()),
            origin: Instant::now(),
            last_used: AtomicU64::new(0),
        }
    }

    /// Adds the check [`GuardSlot::check`] runs while the guard is not loaded.
    pub fn with_check(mut self, check: GuardCheck) -> GuardSlot {
        self.check = Some(check);
        self
    }

    /// Whether a scan could get the guard, without loading it: `Ok` while loaded, else the slot's
    /// check (when it has one). Cheap enough for every readiness probe, so a library or model
    /// that is missing at start, or removed after an unload, shows before a scan fails on it.
    pub fn check(&self) -> Result<(), GuardError> {
        match &self.check {
            Some(check) if !self.is_loaded() => check(),
            _ => Ok(()),
        }
    }

    pub fn options(&self) -> &SlotOptions {
        &self.options
    }

    pub fn is_loaded(&self) -> bool {
        self.guard.read().is_ok_and(|g| g.is_some())
    }

    /// The loaded guard, loading it first if needed.
    pub fn get(&self) -> Result<Arc<dyn Guard>, SlotError> {
        if let Some(g) = self.current() {
            return Ok(g);
        }
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have loaded it while this one waited for the lock.
        if let Some(g) = self.current() {
            return Ok(g);
        }
        if let Some((at, e)) = &self.record().failure {
            if at.elapsed() < self.options.retry_after {
                return Err(e.clone());
            }
        }
        let before = self.memory.resample();
        if self.memory.classify(before) == Pressure::Hard {
            self.record().refused += 1;
            return Err(SlotError::OverBudget {
                guard: self.name.to_string(),
                rss: before,
                threshold: self.memory.hard_threshold().unwrap_or(0),
            });
        }
        let started = Instant::now();
        let loaded = (self.loader)();
        let took = started.elapsed();
        let mut rec = self.record();
        match loaded {
            Ok(guard) => {
                let after = self.memory.resample();
                rec.loads += 1;
                rec.loaded_at = Some(SystemTime::now());
                rec.load_time = Some(took);
                rec.rss_delta = Some(after as i64 - before as i64);
                rec.failure = None;
                *self.guard.write().unwrap_or_else(|p| p.into_inner()) = Some(guard.clone());
                Ok(guard)
            }
            Err(e) => {
                let err = SlotError::LoadFailed {
                    guard: self.name.to_string(),
                    message: e.to_string(),
                };
                rec.failure = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    fn current(&self) -> Option<Arc<dyn Guard>> {
        self.guard.read().ok().and_then(|g| g.clone())
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Load now instead of on first use (for warm-up at startup).
    pub fn load(&self) -> Result<(), SlotError> {
        self.get().map(|_| ())
    }

    /// Drop the guard; the next scan reloads it. Returns whether anything was loaded. Freed heap is
    /// handed back to the kernel so RSS really drops (a scan still running keeps its model until it
    /// finishes).
    pub fn unload(&self) -> bool {
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.memory.resample();
        let guard = {
            let mut rec = self.record();
            let guard = self.guard.write().unwrap_or_else(|p| p.into_inner()).take();
            rec.unloading = guard.is_some();
            guard
        };
        let Some(guard) = guard else {
            return false;
        };
        drop(guard);
        release_free_heap();
        let after = self.memory.resample();
        let mut rec = self.record();
        rec.unloading = false;
        rec.unloads += 1;
        rec.rss_freed = Some(before as i64 - after as i64);
        true
    }

    /// Unload if idle for at least `idle_unload_after` as of `now`. Returns whether it unloaded.
    pub fn unload_if_idle(&self, now: Instant) -> bool {
        let Some(after) = self.options.idle_unload_after else {
            return false;
        };
        match self.idle_for(now) {
            Some(idle) if idle >= after && self.is_loaded() => self.unload(),
            // Loaded but never used through `scan` (e.g. warmed up at start): idle since the load.
            None if self.is_loaded() && now.saturating_duration_since(self.origin) >= after => {
                self.unload()
            }
            _ => false,
        }
    }

    /// Time since the last scan as of `now`; `None` if never used.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        match self.last_used.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(now.saturating_duration_since(self.origin + Duration::from_millis(ms - 1))),
        }
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64 + 1;
        self.last_used.store(ms, Ordering::Relaxed);
    }

    pub fn stats(&self) -> SlotStats {
        let rec = self.record();
        let loaded = self.is_loaded();
        SlotStats {
            name: self.name.to_string(),
            state: if loaded || rec.unloading {
                SlotState::Loaded
            } else if rec.failure.is_some() {
                SlotState::Failed
            } else {
                SlotState::Unloaded
            },
            loads: rec.loads,
            unloads: rec.unloads,
            refused_over_budget: rec.refused,
            loaded_at_unix_ms: rec
                .loaded_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            load_ms: rec.load_time.map(|d| d.as_secs_f64() * 1e3),
            rss_delta_bytes: rec.rss_delta,
            rss_freed_bytes: rec.rss_freed,
            idle_ms: self.idle_for(Instant::now()).map(|d| d.as_millis() as u64),
            last_error: rec.failure.as_ref().map(|(_, e)| e.to_string()),
        }
    }
}

impl Guard for GuardSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        self.touch();
        let guard = self.get()?;
        let out = guard.scan(input);
        // Idle time counts from the end of the last scan, not its start.
        self.touch();
        out
    }

    fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Result<Vec<Finding>, GuardError>> {
        self.touch();
        match self.get() {
            Ok(guard) => {
                let out = guard.scan_batch(inputs);
                self.touch();
                out
            }
            Err(e) => inputs
                .iter()
                .map(|_| Err(GuardError::from(e.clone())))
                .collect(),
        }
    }
}
