#![no_main]
//! Arbitrary bytes as a rule file: `parse_rules` must never panic; errors must point inside the file;
//! a pack that parses must compile (or fail with an error) and scan its own examples without panicking.
//! Seed corpus: `core/rules/*.toml`; dictionary: `core/fuzz/rules.dict`.

use featherguard_core::{parse_rules, PatternGuard, RuleError, RuleSet, ScanLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let rules = match parse_rules("fuzz.toml", src) {
        Ok(rules) => rules,
        Err(e) => {
            let lines = src.split('\n').count();
            let (line, col) = match &e {
                RuleError::Syntax { line, col, .. } => (*line, *col),
                RuleError::Invalid { origin, .. } | RuleError::Duplicate { origin, .. } => {
                    (origin.line, origin.col)
                }
                _ => (1, 1),
            };
            assert!(
                line >= 1 && line <= lines.max(1),
                "error line {line} outside 1..={lines}: {e}"
            );
            assert!(col >= 1, "error column {col}: {e}");
            assert!(
                e.to_string().starts_with("fuzz.toml"),
                "error does not name the file: {e}"
            );
            return;
        }
    };
    for r in &rules {
        assert!(
            !r.id.is_empty() && r.id.len() <= 64,
            "accepted bad id {:?}",
            r.id
        );
        assert!(
            !r.regex.is_empty() || !r.literals.is_empty(),
            "accepted rule {} without patterns",
            r.id
        );
    }
    let Ok(set) = RuleSet::new(rules.clone()) else {
        return;
    };
    let guard = PatternGuard::new(set, ScanLimits::default());
    for r in rules.iter().take(8) {
        for text in r
            .examples
            .matches
            .iter()
            .chain(&r.examples.no_match)
            .take(8)
        {
            for f in guard.find(text) {
                assert!(
                    f.span.start < f.span.end && f.span.end <= text.len(),
                    "{f:?} in {text:?}"
                );
            }
        }
    }
    let _ = guard.find(src);
});
