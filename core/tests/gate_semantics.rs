//! Findings do not depend on which gate (prefix or inner, word-start or not) a pattern's literals
//! get: cases where a gate choice once changed what was found.

use featherguard_core::{default_rules, parse_rules, PatternGuard, RuleSet};

fn custom(regex: &str) -> PatternGuard {
    let src = format!(
        "[[rule]]\nid = \"t.custom\"\nfamily = \"prompt_injection\"\nseverity = \"high\"\n\
         description = \"test\"\nregex = ['''{regex}''']\n"
    );
    let rules = parse_rules("test.toml", &src).expect("rule parses");
    PatternGuard::new(RuleSet::new(rules).expect("compiles"), Default::default())
}

fn spans(g: &PatternGuard, text: &str) -> Vec<(String, usize, usize)> {
    g.find(text)
        .into_iter()
        .map(|f| (f.rule.to_string(), f.span.start, f.span.end))
        .collect()
}

/// A validated match starting inside a candidate its validator rejects is found, whether the
/// pattern is checked anchored at gate hits or scanned (the entropy check rejects the first).
#[test]
fn a_valid_match_inside_a_rejected_one_is_found() {
    let g = PatternGuard::new(RuleSet::new(default_rules()).unwrap(), Default::default());
    let text = r#"token="aaaaaaaaaaaaaaaaaaaa-api_key="Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2""#;
    let found = spans(&g, text);
    assert!(
        found.iter().any(|(r, ..)| r == "secret.generic.assignment"),
        "{found:?}"
    );
}

/// The word boundary before a later piece with the same literals as an earlier one says nothing
/// about the earlier one, where the pattern is split.
#[test]
fn a_repeated_gate_piece_keeps_the_first_pieces_boundary() {
    let g = custom(r"[a-z]+qzx\s+\bqzx");
    assert_eq!(spans(&g, "aqzx qzx"), [("t.custom".to_string(), 0, 8)]);
}

/// `\b` at the start of a pattern's text binds to the first branch only.
#[test]
fn a_leading_boundary_of_one_branch_does_not_gate_the_others() {
    let g = custom(r"\bqzxa|qzxb");
    assert_eq!(spans(&g, "xqzxb"), [("t.custom".to_string(), 1, 5)]);
    assert_eq!(spans(&g, "xqzxa qzxa"), [("t.custom".to_string(), 6, 10)]);
}
