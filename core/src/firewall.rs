//! The firewall: an ordered set of guards run under a policy, producing one verdict per input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigError, Limits};
use crate::engine::RuleSet;
use crate::guard::{Guard, GuardError, Input};
use crate::policy::Policy;
use crate::rules::{default_rules, load_rule_file, merge_rules};
use crate::scanner::PatternGuard;
use crate::verdict::{Family, Finding, GuardFailure, Severity, Span, Verdict};

/// Runs guards in order and combines their findings with the policy.
pub struct Firewall {
    guards: Vec<Arc<dyn Guard>>,
    policy: Policy,
    limits: Limits,
}

impl std::fmt::Debug for Firewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.guards.iter().map(|g| g.name()).collect();
        f.debug_struct("Firewall")
            .field("guards", &names)
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .finish()
    }
}

const LIMITS_GUARD: &str = "limits";

impl Firewall {
    /// A firewall with the given guards (run in this order), policy and limits.
    pub fn new(guards: Vec<Arc<dyn Guard>>, policy: Policy, limits: Limits) -> Firewall {
        Firewall {
            guards,
            policy,
            limits,
        }
    }

    /// The pattern guard with the embedded default rules and default policy.
    pub fn with_default_rules() -> Result<Firewall, ConfigError> {
        Firewall::from_config(&Config::default())
    }

    /// Build the pattern guard described by `config` (default pack, extra files, disabled rules).
    pub fn from_config(config: &Config) -> Result<Firewall, ConfigError> {
        let guard = pattern_guard(config)?;
        Ok(Firewall::new(
            vec![Arc::new(guard)],
            config.policy.clone(),
            config.limits.clone(),
        ))
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
    }

    /// Scan a user prompt.
    pub fn scan(&self, text: &str) -> Verdict {
        self.scan_input(&Input::new(text))
    }

    /// Scan one input through every guard.
    pub fn scan_input(&self, input: &Input<'_>) -> Verdict {
        self.scan_bounded(input, input.text.len())
    }

    /// Scan the first part of an input too large to hold in memory: `input` holds its first bytes,
    /// `total_len` is the whole input's length in bytes. The unscanned rest is reported as a
    /// `limits.input_too_large` finding, like any input over `max_input_bytes`.
    pub fn scan_prefix(&self, input: &Input<'_>, total_len: usize) -> Verdict {
        self.scan_bounded(input, total_len.max(input.text.len()))
    }

    fn scan_bounded(&self, input: &Input<'_>, total_len: usize) -> Verdict {
        let started = Instant::now();
        let (input, mut findings) = self.bound(input, total_len);
        let mut errors = Vec::new();
        for guard in &self.guards {
            match run_guard(guard.as_ref(), || guard.scan(&input)) {
                Ok(f) => findings.extend(f),
                Err(failure) => errors.push(failure),
            }
        }
        self.verdict(findings, errors, started)
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
        for guard in &self.guards {
            match run_guard(guard.as_ref(), || Ok(guard.scan_batch(&bounded))) {
                Ok(results) if results.len() == inputs.len() => {
                    for (i, r) in results.into_iter().enumerate() {
                        match r {
                            Ok(f) => findings[i].extend(f),
                            Err(e) => errors[i].push(failure(guard.name(), &e)),
                        }
                    }
                }
                Ok(results) => {
                    let e = GuardError::Backend {
                        guard: guard.name().to_string(),
                        message: format!("returned {} results for {} inputs", results.len(), inputs.len()),
                    };
                    errors.iter_mut().for_each(|v| v.push(failure(guard.name(), &e)));
                }
                Err(f) => errors.iter_mut().for_each(|v| v.push(f.clone())),
            }
        }
        // The batch shares one clock: each verdict reports the batch's wall time per input.
        let per_input = started.elapsed() / (inputs.len().max(1) as u32);
        findings
            .into_iter()
            .zip(errors)
            .map(|(f, e)| {
                let mut v = self.verdict(f, e, Instant::now());
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

    fn verdict(&self, mut findings: Vec<Finding>, errors: Vec<GuardFailure>, started: Instant) -> Verdict {
        if self.guards.len() > 1 {
            findings.sort_by(|a, b| (a.span.start, a.span.end, &a.rule).cmp(&(b.span.start, b.span.end, &b.rule)));
        }
        let (action, score) = self.policy.decide(&findings, !errors.is_empty());
        Verdict {
            action,
            score,
            findings,
            errors,
            elapsed: started.elapsed(),
        }
    }
}

fn failure(guard: &str, e: &GuardError) -> GuardFailure {
    GuardFailure {
        guard: Arc::from(guard),
        error: e.to_string(),
    }
}

/// Run a guard call, turning errors and panics into a recorded failure.
fn run_guard<T>(guard: &dyn Guard, call: impl FnOnce() -> Result<T, GuardError>) -> Result<T, GuardFailure> {
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
