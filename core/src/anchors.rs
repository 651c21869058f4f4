//! Pattern syntax checks and anchor extraction: the literals every match of a pattern starts with.
//! A multi-literal automaton over all anchors decides which patterns need to run at all.
//! Depends only on `regex-syntax` so `build.rs` can include it and precompute the default pack.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::Hir;

/// Most anchors one pattern may have before it is treated as unanchored.
const MAX_ANCHORS: usize = 512;

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

/// The literals one of which every match starts with, or `None` when there is no useful finite set
/// (the pattern then runs on every text).
pub fn anchors(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let mut seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    seq.optimize_for_prefix_by_preference();
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_ANCHORS || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    out.sort();
    out.dedup();
    Some(out)
}
