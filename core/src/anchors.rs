//! Pattern syntax checks and gate extraction: literals that must occur in any match of a pattern.
//! One multi-literal automaton over all gates decides which patterns need to run at all.
//! Depends only on `regex-syntax` so `build.rs` can include it and precompute the default pack.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, Hir, HirKind, Literal};

/// Most literals one gate may have before the pattern is treated as ungated.
const MAX_GATE_LITERALS: usize = 512;

/// Literals that gate a pattern, lowercase ASCII (gates are matched ASCII-case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every match starts with one of these: the pattern runs anchored where one occurs.
    Prefix(Vec<Vec<u8>>),
    /// Every match contains one of these: the pattern runs over the text when one occurs.
    Inner(Vec<Vec<u8>>),
}

/// Parse a pattern the way the engine compiles it: Unicode classes off, byte-oriented.
pub fn parse(pattern: &str) -> Result<Hir, String> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| {
            // regex-syntax prints the pattern with a caret; the last line is the reason.
            let msg = e.to_string();
            let reason = msg.lines().filter(|l| !l.trim().is_empty()).last().unwrap_or("").trim().to_string();
            format!("invalid regex: {}", reason.trim_start_matches("error: "))
        })?;
    if hir.properties().minimum_len() == Some(0) {
        return Err("regex can match the empty string; every pattern must consume text".into());
    }
    Ok(hir)
}

/// The best gate of a parsed pattern, or `None` when no finite literal set is required
/// (the pattern then runs over every text).
pub fn gate(hir: &Hir) -> Option<Gate> {
    let hir = fold_ascii_case(hir);
    if let Some(lits) = literal_set(&hir) {
        return Some(Gate::Prefix(lits));
    }
    let mut node = &hir;
    while let HirKind::Capture(c) = node.kind() {
        node = &c.sub;
    }
    let HirKind::Concat(children) = node.kind() else {
        return None;
    };
    // The most selective required piece: longest shortest literal, then fewest literals; the
    // first one wins ties (`@` before `.` in an e-mail pattern).
    let mut best: Option<(usize, usize, Vec<Vec<u8>>)> = None;
    for lits in children.iter().filter_map(literal_set) {
        let min_len = lits.iter().map(Vec::len).min().unwrap_or(0).min(8);
        let better = best
            .as_ref()
            .is_none_or(|(l, n, _)| min_len > *l || (min_len == *l && lits.len() < *n));
        if better {
            best = Some((min_len, lits.len(), lits));
        }
    }
    best.map(|(_, _, lits)| Gate::Inner(lits))
}

/// The finite set of non-empty literals one of which every match of `hir` starts with.
fn literal_set(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let mut seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    seq.optimize_for_prefix_by_preference();
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_GATE_LITERALS || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_ascii_lowercase()).collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// `hir` with ASCII letters lowercased and `[aA]`-style case classes turned into literals, so
/// `(?i)` patterns yield a small set of lowercase gates instead of every case combination.
fn fold_ascii_case(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Literal(Literal(bytes)) => Hir::literal(bytes.to_ascii_lowercase()),
        HirKind::Class(class) => match case_pair(class) {
            Some(b) => Hir::literal([b]),
            None => hir.clone(),
        },
        HirKind::Repetition(rep) => {
            let mut rep = rep.clone();
            rep.sub = Box::new(fold_ascii_case(&rep.sub));
            Hir::repetition(rep)
        }
        HirKind::Capture(cap) => {
            let mut cap = cap.clone();
            cap.sub = Box::new(fold_ascii_case(&cap.sub));
            Hir::capture(cap)
        }
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(fold_ascii_case).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(fold_ascii_case).collect()),
        HirKind::Empty | HirKind::Look(_) => hir.clone(),
    }
}

/// The lowercase letter when `class` is exactly one ASCII letter in both cases.
fn case_pair(class: &Class) -> Option<u8> {
    let ranges: Vec<(u32, u32)> = match class {
        Class::Bytes(c) => c.ranges().iter().map(|r| (u32::from(r.start()), u32::from(r.end()))).collect(),
        Class::Unicode(c) => c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect(),
    };
    match ranges[..] {
        [(a, a2), (b, b2)] if a == a2 && b == b2 && a < 128 && b < 128 => {
            let (a, b) = (a as u8, b as u8);
            (a.is_ascii_uppercase() && b == a.to_ascii_lowercase()).then_some(b)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate_of(p: &str) -> Option<Gate> {
        gate(&parse(p).unwrap())
    }

    #[test]
    fn rejects_empty_matching_and_invalid_patterns() {
        assert!(parse("a*").is_err());
        assert!(parse("(a").unwrap_err().starts_with("invalid regex"));
        assert!(parse(r"\bignore\b").is_ok());
        assert!(parse("忽略").is_ok());
    }

    #[test]
    fn prefix_gates_are_match_prefixes() {
        let Some(Gate::Prefix(a)) = gate_of(r"\b(?:ignore|disregard)\s+all") else { panic!() };
        assert!(a.iter().all(|l| b"ignore".starts_with(l) || b"disregard".starts_with(l)), "{a:?}");
    }

    #[test]
    fn case_insensitive_patterns_get_lowercase_gates() {
        let Some(Gate::Prefix(a)) = gate_of(r"(?i)\bAccountKey=") else { panic!() };
        assert!(a.iter().all(|l| b"accountkey=".starts_with(l) && !l.is_empty()), "{a:?}");
    }

    #[test]
    fn inner_literals_gate_patterns_that_start_with_a_class() {
        assert_eq!(gate_of(r"\b[a-z0-9.]{1,64}@[a-z]{2,}\.[a-z]{2,}"), Some(Gate::Inner(vec![b"@".to_vec()])));
        assert_eq!(gate_of(r"[a-z0-9]{20,}"), None);
    }
}
