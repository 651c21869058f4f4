//! Compiles a rule pack into one multi-pattern automaton per view and runs it over views.
//!
//! One overlapping pass of a lazy DFA tells which patterns occur at all; only those patterns are then
//! run alone (compiled on first use) to find spans and apply validators. Clean text costs one pass.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use regex_automata::meta;
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet};

use crate::normalize::fold_char;
use crate::rules::{Rule, RuleError, ViewKind};
use crate::verdict::{Finding, Span};
use crate::view::View;

/// Most matches one pattern reports per view; enough for redaction, bounded for hostile input.
const MAX_MATCHES_PER_PATTERN: usize = 256;

fn syntax_config() -> syntax::Config {
    // Unicode classes off: every pattern stays on the DFA (text is normalized first instead).
    syntax::Config::new().unicode(false).utf8(false)
}

/// Check one pattern's syntax; reject patterns that can match the empty string.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), String> {
    let hir = syntax::parse_with(pattern, &syntax_config()).map_err(|e| {
        // regex-syntax prints the pattern with a caret; the last line is the reason.
        let msg = e.to_string();
        let reason = msg.lines().filter(|l| !l.trim().is_empty()).last().unwrap_or("").trim();
        format!("invalid regex: {}", reason.trim_start_matches("error: "))
    })?;
    if hir.properties().minimum_len() == Some(0) {
        return Err("regex can match the empty string; every pattern must consume text".into());
    }
    Ok(())
}

/// A pattern's non-ASCII literal characters, folded the way the normalized view folds text.
fn fold_pattern(pattern: &str) -> String {
    if pattern.is_ascii() {
        return pattern.to_string();
    }
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            fold_char(c, |d| {
                if d.is_ascii_punctuation() {
                    out.push('\\');
                }
                out.push(d);
            });
        }
    }
    out
}

fn escape_literal(lit: &str, out: &mut String) {
    for c in lit.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
}

struct Pattern {
    rule: usize,
    source: String,
    single: OnceLock<Option<meta::Regex>>,
}

impl Pattern {
    fn single(&self) -> Option<&meta::Regex> {
        self.single
            .get_or_init(|| {
                meta::Builder::new()
                    .syntax(syntax_config())
                    .configure(meta::Config::new().utf8_empty(false))
                    .build(&self.source)
                    .ok()
            })
            .as_ref()
    }
}

/// All patterns of one view kind, compiled into one automaton.
pub(crate) struct Matcher {
    set: Option<meta::Regex>,
    patterns: Vec<Pattern>,
}

impl Matcher {
    fn build(patterns: Vec<Pattern>) -> Result<Matcher, RuleError> {
        if patterns.is_empty() {
            return Ok(Matcher {
                set: None,
                patterns,
            });
        }
        let sources: Vec<&str> = patterns.iter().map(|p| p.source.as_str()).collect();
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
        Ok(Matcher {
            set: Some(set),
            patterns,
        })
    }

    pub(crate) fn pattern_count(&self) -> usize {
        self.patterns.len()
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

impl RuleSet {
    /// Compile rules (already parsed and checked) into matchers.
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, RuleError> {
        let mut raw = Vec::new();
        let mut normalized = Vec::new();
        for (idx, rule) in rules.iter().enumerate() {
            let fold = rule.view == ViewKind::Normalized;
            let target = if fold { &mut normalized } else { &mut raw };
            for re in &rule.regex {
                let source = if fold { fold_pattern(re) } else { re.clone() };
                target.push(Pattern {
                    rule: idx,
                    source,
                    single: OnceLock::new(),
                });
            }
            if !rule.literals.is_empty() {
                let mut source = String::from("(?:");
                for (i, lit) in rule.literals.iter().enumerate() {
                    if i > 0 {
                        source.push('|');
                    }
                    let lit: Cow<str> = if fold {
                        Cow::Owned(crate::normalize::fold_str(lit))
                    } else {
                        Cow::Borrowed(lit)
                    };
                    escape_literal(&lit, &mut source);
                }
                source.push(')');
                target.push(Pattern {
                    rule: idx,
                    source,
                    single: OnceLock::new(),
                });
            }
        }
        let ids = rules.iter().map(|r| Arc::from(r.id.as_str())).collect();
        Ok(RuleSet {
            raw: Matcher::build(raw)?,
            normalized: Matcher::build(normalized)?,
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
        hits: &mut PatternSet,
        guard: &Arc<str>,
        out: &mut Vec<Finding>,
    ) {
        let Some(set) = &matcher.set else { return };
        if view.text.is_empty() {
            return;
        }
        hits.clear();
        set.which_overlapping_matches(&Input::new(&view.text), hits);
        if hits.is_empty() {
            return;
        }
        for pid in hits.iter() {
            let pattern = &matcher.patterns[pid.as_usize()];
            let rule = &self.rules[pattern.rule];
            let mut emit = |start: usize, end: usize| {
                if start < end {
                    out.push(Finding {
                        rule: self.ids[pattern.rule].clone(),
                        family: rule.family,
                        severity: rule.severity,
                        score: rule.severity.score(),
                        span: view.original(start, end),
                        guard: guard.clone(),
                        view: Some(Cow::Borrowed(view_name)),
                    });
                }
            };
            let Some(re) = pattern.single() else {
                // Cannot happen for patterns the set accepted; still report, over the whole view.
                emit(0, view.text.len());
                continue;
            };
            match rule.validate {
                None => {
                    for m in re.find_iter(&view.text).take(MAX_MATCHES_PER_PATTERN) {
                        emit(m.start(), m.end());
                    }
                }
                Some(validator) => {
                    let group = re.group_info().to_index(regex_automata::PatternID::ZERO, "v");
                    for caps in re.captures_iter(&view.text).take(MAX_MATCHES_PER_PATTERN) {
                        let Some(whole) = caps.get_match() else { continue };
                        let value: Span = group
                            .and_then(|g| caps.get_group(g))
                            .map_or(Span::new(whole.start(), whole.end()), |g| {
                                Span::new(g.start, g.end)
                            });
                        if validator.check(&view.text[value.start..value.end]) {
                            emit(whole.start(), whole.end());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_matching_and_invalid_patterns() {
        assert!(check_pattern("a*").is_err());
        assert!(check_pattern("(a").unwrap_err().starts_with("invalid regex"));
        assert!(check_pattern(r"\bignore\b").is_ok());
        assert!(check_pattern("忽略").is_ok());
    }

    #[test]
    fn non_ascii_pattern_text_is_folded() {
        assert_eq!(fold_pattern("précédentes"), "precedentes");
        assert_eq!(fold_pattern("a＊"), "a\\*");
    }
}
