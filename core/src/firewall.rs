//! The firewall: an ordered set of guards run under a policy, producing one verdict per input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::{CacheScope, VerdictCache};
use crate::config::{Config, ConfigError, Limits};
use crate::engine::RuleSet;
use crate::govern::{
    policy_version, CascadeStats, FirewallStats, Governance, Maintenance, MemoryStats,
    ScanObserver, ScanOptions,
};
use crate::guard::{Guard, GuardError, Input};
use crate::memory::{MemoryBudget, Rss};
use crate::policy::Policy;
use crate::rules::{default_rules, load_rule_file, merge_rules};
use crate::scanner::PatternGuard;
use crate::slot::GuardSlot;
use crate::stream::StreamScanner;
use crate::verdict::{Family, Finding, GuardFailure, Severity, Span, Verdict};

/// Runs guards in order and combines their findings with the policy.
pub struct Firewall {
    guards: Vec<Arc<dyn Guard>>,
    policy: Policy,
    limits: Limits,
    /// Heavy guards, cascade, cache and memory budget.
    gov: Governance,
    /// Fingerprint of the policy, guard set and cascade mode, part of every cache key.
    version: u64,
}

impl std::fmt::Debug for Firewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.guards.iter().map(|g| g.name()).collect();
        f.debug_struct("Firewall")
            .field("guards", &names)
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("heavy", &self.gov.heavy)
            .finish()
    }
}

const LIMITS_GUARD: &str = "limits";

impl Firewall {
    /// A firewall with the given guards (run in this order), policy and limits.
    pub fn new(guards: Vec<Arc<dyn Guard>>, policy: Policy, limits: Limits) -> Firewall {
        let gov = Governance::default();
        let version = policy_version(&policy, None, gov.config.cascade);
        Firewall {
            guards,
            policy,
            limits,
            gov,
            version,
        }
    }

    /// The pattern guard with the embedded default rules and default policy.
    pub fn with_default_rules() -> Result<Firewall, ConfigError> {
        Firewall::from_config(&Config::default())
    }

    /// Build the pattern guard described by `config` (default pack, extra files, disabled rules),
    /// with the config's memory budget (`FEATHERGUARD_MEMORY_LIMIT` overrides its limit), verdict
    /// cache and heavy-guard settings. Heavy guards are added with [`Firewall::add_heavy`].
    pub fn from_config(config: &Config) -> Result<Firewall, ConfigError> {
        let guard = Arc::new(pattern_guard(config)?);
        let memory = config
            .memory
            .clone()
            .with_env()
            .map_err(|message| ConfigError::Invalid {
                file: "environment".into(),
                message,
            })?;
        let mut fw = Firewall::new(
            vec![guard.clone() as Arc<dyn Guard>],
            config.policy.clone(),
            config.limits.clone(),
        );
        fw.gov.memory = Arc::new(MemoryBudget::new(memory));
        fw.gov.cache = VerdictCache::new(config.cache.clone());
        fw.gov.config = config.heavy.clone();
        fw.gov.pattern = Some(guard);
        fw.version = policy_version(&fw.policy, None, fw.gov.config.cascade);
        Ok(fw)
    }

    /// A scanner for streamed output with this firewall's pattern guard and policy; `None` when the
    /// firewall was not built from a config (it has no pattern guard of its own then).
    pub fn stream_scanner(&self) -> Option<StreamScanner> {
        let guard = self.gov.pattern.clone()?;
        Some(StreamScanner::new(guard, self.policy.clone()))
    }

    /// The pattern guard, when the firewall was built from a config.
    pub fn pattern(&self) -> Option<&Arc<PatternGuard>> {
        self.gov.pattern.as_ref()
    }

    /// Report every guard call's duration to `observer` (metrics).
    pub fn set_observer(&mut self, observer: Arc<dyn ScanObserver>) {
        self.gov.observer = Some(observer);
    }

    /// The memory budget shared by this firewall's slots; hand it to [`GuardSlot::new`].
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.gov.memory
    }

    /// Add a heavy guard built by `loader` on first use, governed by this firewall's `[heavy]`
    /// settings and memory budget. Heavy guards run after the light ones, as the cascade allows.
    pub fn add_heavy(&mut self, name: &str, loader: crate::slot::GuardLoader) -> Arc<GuardSlot> {
        let slot = Arc::new(GuardSlot::new(
            name,
            loader,
            self.gov.config.slot_options(),
            self.gov.memory.clone(),
        ));
        self.add_slot(slot.clone());
        slot
    }

    /// Add an already built slot as a heavy guard.
    pub fn add_slot(&mut self, slot: Arc<GuardSlot>) {
        self.gov.heavy.push(slot);
        self.gov.cache.as_ref().map(VerdictCache::clear);
    }

    /// The heavy guards, in run order.
    pub fn slots(&self) -> &[Arc<GuardSlot>] {
        &self.gov.heavy
    }

    /// The `[heavy]` settings in force.
    pub fn heavy_config(&self) -> &crate::govern::HeavyConfig {
        &self.gov.config
    }

    /// Which guards are loaded, what loading them cost, cache hit rates, memory and cascade counts.
    pub fn stats(&self) -> FirewallStats {
        let rss = self.gov.memory.resample();
        FirewallStats {
            guards: self.guards.iter().map(|g| g.name().to_string()).collect(),
            slots: self.gov.heavy.iter().map(|s| s.stats()).collect(),
            cache: self.gov.cache.as_ref().map(|c| c.stats()),
            memory: MemoryStats {
                rss: Rss::sample().unwrap_or_default(),
                limit_bytes: self.gov.memory.config().limit_bytes,
                pressure: self.gov.memory.classify(rss),
            },
            cascade: CascadeStats {
                mode: self.gov.config.cascade,
                heavy_runs: self
                    .gov
                    .heavy_runs
                    .load(std::sync::atomic::Ordering::Relaxed),
                heavy_skipped: self
                    .gov
                    .heavy_skipped
                    .load(std::sync::atomic::Ordering::Relaxed),
            },
        }
    }

    /// Periodic upkeep for long-running hosts: unload idle heavy guards, and under soft memory
    /// pressure shed the cache and unload guards that have been quiet for a while.
    pub fn maintain(&self) -> Maintenance {
        self.gov.maintain(Instant::now())
    }

    /// Drop cached verdicts and return free heap to the kernel (on demand: a signal or an API
    /// call). Returns how many cache entries were dropped.
    pub fn release_caches(&self) -> usize {
        self.gov.release_caches()
    }

    pub fn guards(&self) -> &[Arc<dyn Guard>] {
        &self.guards
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Add a guard after the existing ones.
    pub fn push_guard(&mut self, guard: Arc<dyn Guard>) {
        self.guards.push(guard);
        self.gov.cache.as_ref().map(VerdictCache::clear);
    }

    /// Scan a user prompt.
    pub fn scan(&self, text: &str) -> Verdict {
        self.scan_input(&Input::new(text))
    }

    /// Scan one input through every guard.
    pub fn scan_input(&self, input: &Input<'_>) -> Verdict {
        self.scan_bounded(input, input.text.len(), &ScanOptions::default())
    }

    /// Scan one input with per-call options (policy, guard subset, cascade mode).
    pub fn scan_with(&self, input: &Input<'_>, options: &ScanOptions) -> Verdict {
        self.scan_bounded(input, input.text.len(), options)
    }

    /// Scan the first part of an input too large to hold in memory: `input` holds its first bytes,
    /// `total_len` is the whole input's length in bytes. The unscanned rest is reported as a
    /// `limits.input_too_large` finding, like any input over `max_input_bytes`.
    pub fn scan_prefix(&self, input: &Input<'_>, total_len: usize) -> Verdict {
        self.scan_bounded(
            input,
            total_len.max(input.text.len()),
            &ScanOptions::default(),
        )
    }

    fn scope(&self, input: &Input<'_>, options: &ScanOptions) -> CacheScope {
        let policy_version = if options == &ScanOptions::default() {
            self.version
        } else {
            policy_version(
                options.policy.as_ref().unwrap_or(&self.policy),
                options.guards.as_deref(),
                options.cascade.unwrap_or(self.gov.config.cascade),
            )
        };
        CacheScope {
            source: input.source,
            policy_version,
        }
    }

    fn scan_bounded(&self, input: &Input<'_>, total_len: usize, options: &ScanOptions) -> Verdict {
        let started = Instant::now();
        // Only whole inputs are cached: a prefix's verdict depends on the length of the rest.
        let cache = self
            .gov
            .cache
            .as_ref()
            .filter(|_| total_len == input.text.len());
        let scope = cache.map(|_| self.scope(input, options));
        if let (Some(cache), Some(scope)) = (cache, scope) {
            if let Some(mut v) = cache.get(input.text, scope, started) {
                v.elapsed = started.elapsed();
                return v;
            }
        }
        let policy = options.policy.as_ref().unwrap_or(&self.policy);
        let (bounded, mut findings) = self.bound(input, total_len);
        let mut errors = Vec::new();
        for guard in self.guards.iter().filter(|g| options.allows(g.name())) {
            match self.run_guard(guard.as_ref(), 1, || guard.scan(&bounded), |_| 0) {
                Ok(f) => findings.extend(f),
                Err(failure) => errors.push(failure),
            }
        }
        let heavy: Vec<&Arc<GuardSlot>> = self
            .gov
            .heavy
            .iter()
            .filter(|s| options.allows(s.name()))
            .collect();
        if !heavy.is_empty() {
            let cascade = options.cascade.unwrap_or(self.gov.config.cascade);
            let run = cascade.runs_heavy(policy.decide(&findings, !errors.is_empty()).0);
            self.gov.count_cascade(run);
            for slot in heavy.into_iter().filter(|_| run) {
                match self.run_guard(slot.as_ref(), 1, || slot.scan(&bounded), |_| 0) {
                    Ok(f) => findings.extend(f),
                    Err(failure) => errors.push(failure),
                }
            }
        }
        let v = self.verdict(policy, findings, errors, started);
        if let (Some(cache), Some(scope)) = (cache, scope) {
            cache.put(input.text, scope, &v, started);
        }
        v
    }

    /// Scan many inputs; each guard sees the whole batch at once (ML guards batch on the device).
    pub fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Verdict> {
        let started = Instant::now();
        let mut bounded = Vec::with_capacity(inputs.len());
        let mut findings = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (b, f) = self.bound(input, input.text.len());
            bounded.push(b);
            findings.push(f);
        }
        let mut errors: Vec<Vec<GuardFailure>> = vec![Vec::new(); inputs.len()];
        let all: Vec<usize> = (0..inputs.len()).collect();
        for guard in &self.guards {
            batch_guard(
                self,
                guard.as_ref(),
                &bounded,
                &all,
                &mut findings,
                &mut errors,
            );
        }
        if !self.gov.heavy.is_empty() {
            // The cascade picks, per input, whether the heavy guards see it; they batch the rest.
            let cascade = self.gov.config.cascade;
            let pick: Vec<usize> = (0..inputs.len())
                .filter(|&i| {
                    let run = cascade
                        .runs_heavy(self.policy.decide(&findings[i], !errors[i].is_empty()).0);
                    self.gov.count_cascade(run);
                    run
                })
                .collect();
            if !pick.is_empty() {
                let subset: Vec<Input<'_>> = pick.iter().map(|&i| bounded[i]).collect();
                for slot in &self.gov.heavy {
                    batch_guard(
                        self,
                        slot.as_ref(),
                        &subset,
                        &pick,
                        &mut findings,
                        &mut errors,
                    );
                }
            }
        }
        // The batch shares one clock: each verdict reports the batch's wall time per input.
        let per_input = started.elapsed() / (inputs.len().max(1) as u32);
        findings
            .into_iter()
            .zip(errors)
            .map(|(f, e)| {
                let mut v = self.verdict(&self.policy, f, e, Instant::now());
                v.elapsed = per_input;
                v
            })
            .collect()
    }

    /// Apply `max_input_bytes`: an oversized input is cut to the limit for the guards, and the cut is
    /// reported as a finding (never silent).
    fn bound<'a>(&self, input: &Input<'a>, total_len: usize) -> (Input<'a>, Vec<Finding>) {
        let max = self.limits.max_input_bytes.min(input.text.len());
        if total_len <= self.limits.max_input_bytes && total_len == input.text.len() {
            return (*input, Vec::new());
        }
        let mut cut = max;
        while !input.text.is_char_boundary(cut) {
            cut -= 1;
        }
        let finding = Finding {
            rule: Arc::from("limits.input_too_large"),
            family: Family::Limits,
            severity: Severity::High,
            score: Severity::High.score(),
            span: Span::new(cut, total_len),
            guard: Arc::from(LIMITS_GUARD),
            view: None,
        };
        (
            Input {
                text: &input.text[..cut],
                source: input.source,
            },
            vec![finding],
        )
    }

    fn verdict(
        &self,
        policy: &Policy,
        mut findings: Vec<Finding>,
        errors: Vec<GuardFailure>,
        started: Instant,
    ) -> Verdict {
        // Always sort: the limits finding and several guards' findings interleave.
        if findings.len() > 1 {
            findings.sort_by(|a, b| {
                (a.span.start, a.span.end, &a.rule).cmp(&(b.span.start, b.span.end, &b.rule))
            });
        }
        let (action, score) = policy.decide(&findings, !errors.is_empty());
        Verdict {
            action,
            score,
            findings,
            errors,
            elapsed: started.elapsed(),
        }
    }
}

/// Run `guard` over `inputs` (the batch positions `at`), adding findings and failures in place.
fn batch_guard(
    fw: &Firewall,
    guard: &dyn Guard,
    inputs: &[Input<'_>],
    at: &[usize],
    findings: &mut [Vec<Finding>],
    errors: &mut [Vec<GuardFailure>],
) {
    let failed = |results: &Vec<Result<Vec<Finding>, GuardError>>| {
        if results.len() == inputs.len() {
            results.iter().filter(|r| r.is_err()).count()
        } else {
            inputs.len()
        }
    };
    match fw.run_guard(guard, inputs.len(), || Ok(guard.scan_batch(inputs)), failed) {
        Ok(results) if results.len() == inputs.len() => {
            for (&i, r) in at.iter().zip(results) {
                match r {
                    Ok(f) => findings[i].extend(f),
                    Err(e) => errors[i].push(failure(guard.name(), &e)),
                }
            }
        }
        Ok(results) => {
            let e = GuardError::Backend {
                guard: guard.name().to_string(),
                message: format!(
                    "returned {} results for {} inputs",
                    results.len(),
                    inputs.len()
                ),
            };
            at.iter()
                .for_each(|&i| errors[i].push(failure(guard.name(), &e)));
        }
        Err(f) => at.iter().for_each(|&i| errors[i].push(f.clone())),
    }
}

fn failure(guard: &str, e: &GuardError) -> GuardFailure {
    GuardFailure {
        guard: Arc::from(guard),
        error: e.to_string(),
    }
}

impl Firewall {
    /// Run a guard call over `inputs` texts, timed for the observer; `failed` counts the inputs a
    /// call that returned still failed on (per-input errors of a batch).
    fn run_guard<T>(
        &self,
        guard: &dyn Guard,
        inputs: usize,
        call: impl FnOnce() -> Result<T, GuardError>,
        failed: impl FnOnce(&T) -> usize,
    ) -> Result<T, GuardFailure> {
        let Some(observer) = &self.gov.observer else {
            return run_guard(guard, call);
        };
        let started = Instant::now();
        let r = run_guard(guard, call);
        let failed = r.as_ref().map_or(inputs, failed);
        observer.guard_done(guard.name(), inputs, started.elapsed(), failed);
        r
    }
}

/// Run a guard call, turning errors and panics into a recorded failure.
fn run_guard<T>(
    guard: &dyn Guard,
    call: impl FnOnce() -> Result<T, GuardError>,
) -> Result<T, GuardFailure> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failure(guard.name(), &e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(GuardFailure {
                guard: Arc::from(guard.name()),
                error: format!("guard panicked: {msg}"),
            })
        }
    }
}

/// Build the pattern guard a config describes.
pub fn pattern_guard(config: &Config) -> Result<PatternGuard, ConfigError> {
    let mut rules = if config.rules.default_pack {
        default_rules()
    } else {
        Vec::new()
    };
    for file in &config.rules.files {
        merge_rules(&mut rules, load_rule_file(file)?);
    }
    for id in &config.rules.disable {
        let before = rules.len();
        rules.retain(|r| &r.id != id);
        if rules.len() == before {
            return Err(ConfigError::UnknownRule(id.clone()));
        }
    }
    Ok(PatternGuard::new(RuleSet::new(rules)?, config.scan.clone()))
}
