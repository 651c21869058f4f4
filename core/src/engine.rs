//! Compiles a rule pack and runs it over views.
//!
//! Every pattern's gate (literals each of its matches starts with, or else contains) goes into one
//! ASCII-case-insensitive Aho-Corasick automaton per view kind. A text pays one pass over that
//! automaton; a pattern runs (compiled on first use) only where one of its gate literals occurs,
//! anchored at the literal for prefix gates. The few patterns without a gate share one lazy-DFA set.
//! Startup parses no regex syntax for the default pack (build.rs precomputes the gates).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use aho_corasick::AhoCorasick;
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::syntax;
use regex_automata::{hybrid, meta};
use regex_automata::{Anchored, Input, MatchKind, PatternID, PatternSet};

use crate::anchors::Gate;
use crate::fold::{fold_pattern, fold_str};
use crate::rules::{Rule, RuleError, ViewKind};
use crate::validate::Validator;
use crate::verdict::{Finding, Span};
use crate::view::View;

/// Most matches one pattern reports per view; enough for redaction, bounded for hostile input.
const MAX_MATCHES_PER_PATTERN: usize = 256;

/// Gate literals are cut to this many bytes: longer ones add DFA states faster than selectivity.
const MAX_GATE_BYTES: usize = 6;

/// Lazy-DFA cache bound per compiled pattern (the default is 2 MiB per pattern and thread).
const SINGLE_CACHE_BYTES: usize = 64 * 1024;

fn syntax_config() -> syntax::Config {
    // Unicode classes off: patterns stay on the DFA (text is normalized first instead).
    syntax::Config::new().unicode(false).utf8(false)
}

fn escape_literal(lit: &str, out: &mut String) {
    for c in lit.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
}

/// How a pattern is checked once its gate fires.
enum Check {
    /// Run the regex anchored at the gate literal.
    Anchored,
    /// Run the regex over the whole view (the gate literal is inside the match).
    Scan,
    /// A literal list: the match is a whole literal starting at the gate hit.
    Exact(Vec<Vec<u8>>),
}

struct Pattern {
    rule: usize,
    /// Regex source as compiled (folded for the normalized view), or the escaped literal list.
    source: String,
    check: Check,
    /// Forward-only lazy DFA for anchored checks: the start is known, so no reverse pass.
    fwd: OnceLock<Option<hybrid::dfa::DFA>>,
    /// Full regex for scans, captures (validators) and as a fallback; built on first use.
    single: OnceLock<Option<meta::Regex>>,
}

impl Pattern {
    fn forward(&self) -> Option<&hybrid::dfa::DFA> {
        self.fwd
            .get_or_init(|| {
                hybrid::dfa::Builder::new()
                    .syntax(syntax_config())
                    .thompson(thompson::Config::new().which_captures(WhichCaptures::None))
                    .configure(
                        hybrid::dfa::Config::new()
                            .match_kind(MatchKind::LeftmostFirst)
                            .cache_capacity(SINGLE_CACHE_BYTES),
                    )
                    .build(&self.source)
                    .ok()
            })
            .as_ref()
    }

    /// End of the match starting exactly at `start`, if any; `None` from the DFA is final,
    /// an error (cache thrash) falls back to the full regex.
    fn anchored_end(
        &self,
        cache: &mut Option<hybrid::dfa::Cache>,
        text: &[u8],
        start: usize,
    ) -> Option<usize> {
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        if let Some(dfa) = self.forward() {
            let cache = cache.get_or_insert_with(|| dfa.create_cache());
            if let Ok(found) = dfa.try_search_fwd(cache, &input) {
                return found.map(|hm| hm.offset());
            }
        }
        self.single()?.search(&input).map(|m| m.end())
    }

    fn single(&self) -> Option<&meta::Regex> {
        self.single
            .get_or_init(|| {
                meta::Builder::new()
                    .syntax(syntax_config())
                    .configure(
                        meta::Config::new()
                            .utf8_empty(false)
                            // Searches are short (anchored at a gate); a small lazy-DFA cache per
                            // pattern keeps memory flat as more patterns get compiled.
                            .hybrid_cache_capacity(SINGLE_CACHE_BYTES)
                            // The backtracker keeps a visited set of up to 256 KiB per pattern;
                            // captures (only validated rules need them) use the PikeVM instead.
                            .backtrack(false)
                            .onepass(false),
                    )
                    .build(&self.source)
                    .ok()
            })
            .as_ref()
    }
}

/// A candidate match start: pattern `pattern` may match at `start` (anchor ends at `end`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Candidate {
    pattern: u32,
    start: u32,
    end: u32,
}

/// Reusable per-scan buffers for one matcher.
pub(crate) struct MatchScratch {
    candidates: Vec<Candidate>,
    unanchored_hits: PatternSet,
    /// Lazy-DFA cache per pattern, created on the pattern's first anchored check in this thread.
    caches: Vec<Option<hybrid::dfa::Cache>>,
}

/// The gate literals of one pattern; `None` when it has no gate and runs over every view.
type GateLiterals = Option<Vec<Vec<u8>>>;

/// One gate automaton and, per gate literal, the patterns it gates.
struct Gates {
    ac: AhoCorasick,
    /// For literal `i` of `ac`, the gated patterns are `targets[ranges[i].0..ranges[i].1]`.
    ranges: Vec<(u32, u32)>,
    targets: Vec<u32>,
    /// Holds only literals with non-ASCII bytes, so it cannot match an ASCII view.
    non_ascii: bool,
}

impl Gates {
    /// ASCII literals go into a DFA (one table lookup per byte; the ASCII alphabet keeps it small);
    /// the others (CJK, Cyrillic, ...) into a compact NFA that only runs on non-ASCII views.
    fn build(
        literals: Vec<(Vec<u8>, Vec<u32>)>,
        non_ascii: bool,
        lowercase_text: bool,
    ) -> Result<Gates, RuleError> {
        let mut ranges = Vec::with_capacity(literals.len());
        let mut targets = Vec::new();
        for (_, t) in &literals {
            let from = targets.len() as u32;
            targets.extend_from_slice(t);
            ranges.push((from, targets.len() as u32));
        }
        let kind = if non_ascii {
            aho_corasick::AhoCorasickKind::ContiguousNFA
        } else {
            aho_corasick::AhoCorasickKind::DFA
        };
        let ac = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .ascii_case_insensitive(!lowercase_text)
            // Dense transitions only at the root: deeper dense NFA states cost ~1 MB for a couple
            // of thousand literals and buy little speed.
            .dense_depth(1)
            .kind(Some(kind))
            .start_kind(aho_corasick::StartKind::Unanchored)
            .build(literals.iter().map(|(a, _)| a))
            .map_err(|e| RuleError::Compile {
                message: format!("gate automaton: {e}"),
            })?;
        Ok(Gates {
            ac,
            ranges,
            targets,
            non_ascii,
        })
    }
}

/// All patterns of one view kind.
pub(crate) struct Matcher {
    patterns: Vec<Pattern>,
    gates: Vec<Gates>,
    /// Patterns without anchors, searched together; set pattern `i` is `unanchored_ids[i]`.
    unanchored: Option<meta::Regex>,
    unanchored_ids: Vec<u32>,
}

impl Matcher {
    /// `lowercase_text`: the view is lowercase already (normalized), so gates match exactly;
    /// otherwise (raw) they match ASCII-case-insensitively.
    fn build(
        patterns: Vec<Pattern>,
        gates: Vec<GateLiterals>,
        lowercase_text: bool,
    ) -> Result<Matcher, RuleError> {
        let mut by_anchor: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        let mut unanchored_ids = Vec::new();
        for (i, gate) in gates.into_iter().enumerate() {
            match gate {
                Some(list) => {
                    for a in list {
                        // A prefix of a gate literal is still a gate; short ones keep the DFA small.
                        let a = &a[..a.len().min(MAX_GATE_BYTES)];
                        by_anchor
                            .entry(a.to_ascii_lowercase())
                            .or_default()
                            .push(i as u32);
                    }
                }
                None => unanchored_ids.push(i as u32),
            }
        }
        for targets in by_anchor.values_mut() {
            targets.dedup();
        }
        let mut anchor_list: Vec<(Vec<u8>, Vec<u32>)> = by_anchor.into_iter().collect();
        anchor_list.sort();
        let (ascii, other): (Vec<_>, Vec<_>) =
            anchor_list.into_iter().partition(|(a, _)| a.is_ascii());
        let mut gates = Vec::new();
        for (lits, non_ascii) in [(ascii, false), (other, true)] {
            if !lits.is_empty() {
                gates.push(Gates::build(lits, non_ascii, lowercase_text)?);
            }
        }
        let unanchored = if unanchored_ids.is_empty() {
            None
        } else {
            let sources: Vec<&str> = unanchored_ids
                .iter()
                .map(|&i| patterns[i as usize].source.as_str())
                .collect();
            let set = meta::Builder::new()
                .syntax(syntax_config())
                .configure(
                    meta::Config::new()
                        .match_kind(MatchKind::All)
                        .which_captures(WhichCaptures::None)
                        .utf8_empty(false),
                )
                .build_many(&sources)
                .map_err(|e| RuleError::Compile {
                    message: e.to_string(),
                })?;
            Some(set)
        };
        Ok(Matcher {
            patterns,
            gates,
            unanchored,
            unanchored_ids,
        })
    }

    /// A constructor of scratch space for this matcher (held by the scanner's pool).
    pub(crate) fn scratch_factory(&self) -> impl Fn() -> MatchScratch + Send + Sync + 'static {
        let n = self.unanchored_ids.len();
        let patterns = self.patterns.len();
        move || MatchScratch {
            candidates: Vec::new(),
            unanchored_hits: PatternSet::new(n),
            caches: (0..patterns).map(|_| None).collect(),
        }
    }
}

/// A compiled rule pack.
pub struct RuleSet {
    rules: Vec<Rule>,
    ids: Vec<Arc<str>>,
    raw: Matcher,
    normalized: Matcher,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("raw_patterns", &self.raw.patterns.len())
            .field("normalized_patterns", &self.normalized.patterns.len())
            .finish()
    }
}

/// Gate of a rule's `i`th regex (folded `source`): precomputed for the default pack, parsed otherwise.
fn regex_gate(rule: &Rule, i: usize, source: &str) -> Result<Option<Gate>, String> {
    if let Some(pre) = rule.precomputed_gates.and_then(|p| p.get(i)) {
        return Ok(pre.map(|(prefix, lits)| {
            let lits = lits.iter().map(|a| a.to_vec()).collect();
            if prefix {
                Gate::Prefix(lits)
            } else {
                Gate::Inner(lits)
            }
        }));
    }
    let hir = crate::anchors::parse(source)?;
    Ok(crate::anchors::gate(&hir))
}

impl RuleSet {
    /// Compile rules (already parsed and checked) into matchers. Regexes compile on first use.
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, RuleError> {
        let mut parts: [(Vec<Pattern>, Vec<GateLiterals>); 2] = Default::default();
        for (idx, rule) in rules.iter().enumerate() {
            let fold = rule.view == ViewKind::Normalized;
            let (patterns, anchors) = &mut parts[usize::from(fold)];
            for (i, re) in rule.regex.iter().enumerate() {
                let source = if fold { fold_pattern(re) } else { re.clone() };
                let gate = regex_gate(rule, i, &source).map_err(|message| RuleError::Invalid {
                    origin: rule.origin.clone(),
                    id: rule.id.clone(),
                    message,
                })?;
                let (check, lits) = match gate {
                    Some(Gate::Prefix(l)) => (Check::Anchored, Some(l)),
                    Some(Gate::Inner(l)) => (Check::Scan, Some(l)),
                    None => (Check::Scan, None),
                };
                anchors.push(lits);
                patterns.push(Pattern {
                    rule: idx,
                    source,
                    check,
                    fwd: OnceLock::new(),
                    single: OnceLock::new(),
                });
            }
            if !rule.literals.is_empty() {
                let lits: Vec<Cow<str>> = rule
                    .literals
                    .iter()
                    .map(|l| {
                        if fold {
                            Cow::Owned(fold_str(l))
                        } else {
                            Cow::Borrowed(l.as_str())
                        }
                    })
                    .filter(|l| !l.is_empty())
                    .collect();
                let mut source = String::from("(?:");
                for (i, lit) in lits.iter().enumerate() {
                    if i > 0 {
                        source.push('|');
                    }
                    escape_literal(lit, &mut source);
                }
                source.push(')');
                let mut exact: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
                exact.sort();
                exact.dedup();
                anchors.push(Some(exact.clone()));
                patterns.push(Pattern {
                    rule: idx,
                    source,
                    check: Check::Exact(exact),
                    fwd: OnceLock::new(),
                    single: OnceLock::new(),
                });
            }
        }
        let [(raw_p, raw_a), (norm_p, norm_a)] = parts;
        let ids = rules.iter().map(|r| Arc::from(r.id.as_str())).collect();
        Ok(RuleSet {
            raw: Matcher::build(raw_p, raw_a, false)?,
            normalized: Matcher::build(norm_p, norm_a, true)?,
            rules,
            ids,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The pattern sources rule `id` compiled to (after folding and literal escaping).
    pub fn compiled_patterns(&self, id: &str) -> Vec<&str> {
        let Some(idx) = self.rules.iter().position(|r| r.id == id) else {
            return Vec::new();
        };
        self.raw
            .patterns
            .iter()
            .chain(&self.normalized.patterns)
            .filter(|p| p.rule == idx)
            .map(|p| p.source.as_str())
            .collect()
    }

    /// Ids of rules with a pattern that has no anchor (it runs over every text, which costs speed).
    pub fn unanchored_rules(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = [&self.raw, &self.normalized]
            .iter()
            .flat_map(|m| {
                m.unanchored_ids
                    .iter()
                    .map(|&i| m.patterns[i as usize].rule)
            })
            .map(|r| self.rules[r].id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Heap bytes held by the anchor automata, the unanchored sets and the regexes compiled so far.
    pub fn memory_usage(&self) -> usize {
        [&self.raw, &self.normalized]
            .iter()
            .map(|m| {
                m.gates.iter().map(|g| g.ac.memory_usage()).sum::<usize>()
                    + m.unanchored.as_ref().map_or(0, meta::Regex::memory_usage)
                    + m.patterns
                        .iter()
                        .filter_map(|p| p.single.get().and_then(Option::as_ref))
                        .map(meta::Regex::memory_usage)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Compile every pattern now instead of on first use (steadier latency, more memory).
    pub fn warm(&self) {
        for m in [&self.raw, &self.normalized] {
            for p in m
                .patterns
                .iter()
                .filter(|p| !matches!(p.check, Check::Exact(_)))
            {
                p.single();
            }
        }
    }

    pub(crate) fn raw(&self) -> &Matcher {
        &self.raw
    }

    pub(crate) fn normalized(&self) -> &Matcher {
        &self.normalized
    }

    /// Run `matcher` over `view`, pushing findings (spans in the original text) to `out`.
    pub(crate) fn scan_view(
        &self,
        matcher: &Matcher,
        view: &View,
        view_name: &'static str,
        scratch: &mut MatchScratch,
        guard: &Arc<str>,
        out: &mut Vec<Finding>,
    ) {
        let text = &view.text[..];
        if text.is_empty() {
            return;
        }
        let emit = |out: &mut Vec<Finding>, pattern: &Pattern, start: usize, end: usize| {
            let rule = &self.rules[pattern.rule];
            let span = view.original(start, end);
            if span.is_empty() {
                return;
            }
            out.push(Finding {
                rule: self.ids[pattern.rule].clone(),
                family: rule.family,
                severity: rule.severity,
                score: rule.severity.score(),
                span,
                guard: guard.clone(),
                view: Some(Cow::Borrowed(view_name)),
            });
        };
        if !matcher.gates.is_empty() {
            let ascii = text.is_ascii();
            let MatchScratch {
                candidates: cands,
                caches,
                ..
            } = scratch;
            cands.clear();
            for g in matcher.gates.iter().filter(|g| !(ascii && g.non_ascii)) {
                for m in g.ac.find_overlapping_iter(aho_corasick::Input::new(text)) {
                    let (from, to) = g.ranges[m.pattern().as_usize()];
                    for &pattern in &g.targets[from as usize..to as usize] {
                        cands.push(Candidate {
                            pattern,
                            start: m.start() as u32,
                            end: m.end() as u32,
                        });
                    }
                }
            }
            if !cands.is_empty() {
                cands.sort_unstable();
                let mut current = u32::MAX;
                let mut last_end = 0usize;
                let mut count = 0usize;
                for c in cands.iter() {
                    if c.pattern != current {
                        current = c.pattern;
                        last_end = 0;
                        count = 0;
                    }
                    let start = c.start as usize;
                    if start < last_end || count >= MAX_MATCHES_PER_PATTERN {
                        continue;
                    }
                    let pattern = &matcher.patterns[c.pattern as usize];
                    let rule = &self.rules[pattern.rule];
                    let found = match &pattern.check {
                        Check::Exact(lits) => {
                            // The gate may be a cut-down literal: find the longest whole one here.
                            let rest = &text[start..];
                            lits.iter()
                                .filter(|l| rest.starts_with(l))
                                .map(|l| Span::new(start, start + l.len()))
                                .max_by_key(|sp| sp.end)
                                .filter(|sp| {
                                    rule.validate
                                        .is_none_or(|v| v.check(&text[sp.start..sp.end]))
                                })
                        }
                        Check::Anchored if rule.validate.is_none() => pattern
                            .anchored_end(&mut caches[c.pattern as usize], text, start)
                            .map(|end| Span::new(start, end)),
                        Check::Anchored => match pattern.single() {
                            Some(re) => anchored_match(re, text, start, rule.validate),
                            // Unreachable for patterns that parsed; still reported, at the gate.
                            None => Some(Span::new(start, c.end as usize)),
                        },
                        Check::Scan => {
                            // The gate says the pattern may occur somewhere: scan the view once.
                            scan_all(pattern, rule, text, |s, e| emit(out, pattern, s, e));
                            last_end = usize::MAX;
                            continue;
                        }
                    };
                    if let Some(span) = found {
                        emit(out, pattern, span.start, span.end);
                        last_end = span.end;
                        count += 1;
                    }
                }
            }
        }
        if let Some(set) = &matcher.unanchored {
            let hits = &mut scratch.unanchored_hits;
            hits.clear();
            set.which_overlapping_matches(&Input::new(text), hits);
            for pid in hits.iter() {
                let pattern = &matcher.patterns[matcher.unanchored_ids[pid.as_usize()] as usize];
                let rule = &self.rules[pattern.rule];
                scan_all(pattern, rule, text, |s, e| emit(out, pattern, s, e));
            }
        }
    }
}

/// Every match of `pattern` in `text` (up to the per-pattern bound) that passes the rule's validator.
fn scan_all(pattern: &Pattern, rule: &Rule, text: &[u8], mut emit: impl FnMut(usize, usize)) {
    let Some(re) = pattern.single() else {
        emit(0, text.len());
        return;
    };
    let mut count = 0;
    let mut at = 0;
    while at < text.len() && count < MAX_MATCHES_PER_PATTERN {
        let Some(m) = re.search(&Input::new(text).range(at..)) else {
            break;
        };
        let span = match rule.validate {
            None => Some(Span::new(m.start(), m.end())),
            Some(_) => anchored_match(re, text, m.start(), rule.validate),
        };
        if let Some(span) = span {
            emit(span.start, span.end);
            count += 1;
        }
        at = m.end().max(m.start() + 1);
    }
}

/// The match of `re` starting exactly at `start`, if any, that passes `validate`.
fn anchored_match(
    re: &meta::Regex,
    text: &[u8],
    start: usize,
    validate: Option<Validator>,
) -> Option<Span> {
    let input = Input::new(text).range(start..).anchored(Anchored::Yes);
    let Some(validator) = validate else {
        return re.search(&input).map(|m| Span::new(m.start(), m.end()));
    };
    let mut caps = re.create_captures();
    re.search_captures(&input, &mut caps);
    let whole = caps.get_match()?;
    let value = re
        .group_info()
        .to_index(PatternID::ZERO, "v")
        .and_then(|g| caps.get_group(g))
        .map_or(Span::new(whole.start(), whole.end()), |g| {
            Span::new(g.start, g.end)
        });
    validator
        .check(&text[value.start..value.end])
        .then_some(Span::new(whole.start(), whole.end()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_ascii_pattern_text_is_folded() {
        assert_eq!(crate::fold::fold_pattern("précédentes"), "precedentes");
        assert_eq!(crate::fold::fold_pattern("a＊"), "a\\*");
    }
}
