//! The default rule pack, compiled into static tables by build.rs from `core/rules/*.toml`.

use crate::rules::{Examples, Origin, Rule, ViewKind};
use crate::validate::Validator;
use crate::verdict::{Family, Severity};

/// Gate of one pattern (see `anchors.rs`): (kind, first literal, literal count), `None` when
/// ungated. Kind 0 is a prefix gate, 1 an inner gate, 2 an inner gate right after a word
/// boundary, 3 a prefix gate of a pattern that starts with a word boundary, 4 an inner gate right
/// after a letter. The literals are [`gate_literal`]`(first..first + count)`.
pub(crate) type StaticGate = Option<(u8, u32, u32)>;

/// One default rule as build.rs emitted it. `gates[i]` belongs to `regex[i]`.
pub(crate) struct StaticRule {
    id: &'static str,
    family: Family,
    severity: Severity,
    description: &'static str,
    lang: Option<&'static str>,
    view: ViewKind,
    regex: &'static [&'static str],
    gates: &'static [StaticGate],
    literals: &'static [&'static str],
    validate: Option<Validator>,
    matches: &'static [&'static str],
    no_match: &'static [&'static str],
    file: &'static str,
    line: usize,
}

include!(concat!(env!("OUT_DIR"), "/default_pack.rs"));

/// Literal `i` of the precomputed gates (see `GATE_BYTES`, `GATE_ENDS`).
pub(crate) fn gate_literal(i: u32) -> &'static [u8] {
    let i = i as usize;
    let start = if i == 0 { 0 } else { GATE_ENDS[i - 1] as usize };
    &GATE_BYTES[start..GATE_ENDS[i] as usize]
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The default rules, with their precomputed gates attached.
pub(crate) fn rules() -> Vec<Rule> {
    RULES
        .iter()
        .map(|r| Rule {
            id: r.id.to_string(),
            family: r.family,
            severity: r.severity,
            description: r.description.to_string(),
            lang: r.lang.map(str::to_string),
            view: r.view,
            regex: owned(r.regex),
            literals: owned(r.literals),
            validate: r.validate,
            examples: Examples {
                matches: owned(r.matches),
                no_match: owned(r.no_match),
            },
            origin: Origin {
                file: format!("<default>/{}", r.file),
                line: r.line,
                col: 1,
            },
            precomputed_gates: Some(r.gates),
        })
        .collect()
}
