//! The default rule pack, compiled into static tables by build.rs from `core/rules/*.toml`.

use crate::rules::{Examples, Origin, Rule, ViewKind};
use crate::validate::Validator;
use crate::verdict::{Family, Severity};

/// Gate of one pattern (see `anchors.rs`): (kind, literals), `None` when ungated. Kind 0 is a
/// prefix gate, 1 an inner gate, 2 an inner gate right after a word boundary.
pub(crate) type StaticGate = Option<(u8, &'static [&'static [u8]])>;

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
