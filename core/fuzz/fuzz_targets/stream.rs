#![no_main]
//! Arbitrary bytes fed to a `StreamScanner` in arbitrary pieces through `push_bytes`: no panic; the
//! released pieces are contiguous and cover the whole stream (`String::from_utf8_lossy` of the input,
//! however a UTF-8 sequence was cut); without secret/PII rules (nothing redacted) the released text
//! is exactly that string; every finding's span lies inside it and on its char boundaries; with the
//! default holdback the stream reports the findings a scan of the whole text does.
//!
//! Input: byte 0 picks the guard (bit 0: default pack with redaction / without secret and PII
//! rules) and the holdback (bits 1..: 0 = the default, else a small holdback); bytes 1..3 seed the
//! chunk sizes; the rest is the stream. Seeds: `core/fuzz/seeds/stream`.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use featherguard_core::{
    default_rules, Finding, PatternGuard, Policy, RuleSet, ScanLimits, StreamChunk, StreamScanner,
};
use libfuzzer_sys::fuzz_target;

fn guard(redacting: bool) -> Arc<PatternGuard> {
    static FULL: OnceLock<Arc<PatternGuard>> = OnceLock::new();
    static PLAIN: OnceLock<Arc<PatternGuard>> = OnceLock::new();
    let limits = || ScanLimits {
        window_bytes: 1024,
        window_overlap: 256,
        ..ScanLimits::default()
    };
    if redacting {
        FULL.get_or_init(|| {
            Arc::new(PatternGuard::new(
                RuleSet::new(default_rules()).unwrap(),
                limits(),
            ))
        })
        .clone()
    } else {
        PLAIN
            .get_or_init(|| {
                let rules = default_rules()
                    .into_iter()
                    .filter(|r| !r.family.is_sensitive_data())
                    .collect();
                Arc::new(PatternGuard::new(RuleSet::new(rules).unwrap(), limits()))
            })
            .clone()
    }
}

fn key(f: &Finding) -> (usize, usize, String) {
    (f.span.start, f.span.end, f.rule.to_string())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (ctl, seed, input) = (data[0], u16::from_le_bytes([data[1], data[2]]), &data[3..]);
    let redacting = ctl & 1 == 1;
    let holdback = usize::from(ctl >> 1);
    let g = guard(redacting);
    let mut s = StreamScanner::new(g.clone(), Policy::default());
    if holdback != 0 {
        s = s.with_holdback(holdback);
    }
    let whole = String::from_utf8_lossy(input);

    let mut chunks: Vec<StreamChunk> = Vec::new();
    let mut rng = u32::from(seed) | 1;
    let mut rest = input;
    while !rest.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        // Mostly tiny pieces (cuts inside UTF-8 sequences and matches), sometimes large ones.
        let n = if rng % 8 == 0 {
            rng as usize % 4096
        } else {
            rng as usize % 8
        };
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        chunks.push(s.push_bytes(piece));
        rest = tail;
    }
    chunks.push(s.finish());
    assert_eq!(
        s.finish(),
        StreamChunk {
            offset: whole.len(),
            action: s.action(),
            ..StreamChunk::default()
        }
    );

    let mut at = 0;
    let mut text = String::new();
    let mut findings = Vec::new();
    for c in &chunks {
        if c.original_len > 0 {
            assert_eq!(c.offset, at, "released pieces are not contiguous");
        }
        at += c.original_len;
        text.push_str(&c.text);
        findings.extend(c.findings.iter().cloned());
    }
    assert_eq!(at, whole.len(), "released bytes do not cover the stream");
    if !redacting {
        assert!(text == whole, "released text differs from the input");
    }
    for f in &findings {
        let (a, b) = (f.span.start, f.span.end);
        assert!(
            a < b && b <= whole.len(),
            "span {a}..{b} outside 0..{}",
            whole.len()
        );
        assert!(
            whole.is_char_boundary(a) && whole.is_char_boundary(b),
            "span {a}..{b} of {} not on char boundaries",
            f.rule
        );
        assert!((0.0..=1.0).contains(&f.score), "score {}", f.score);
    }
    if holdback == 0 {
        let streamed: BTreeSet<_> = findings.iter().map(key).collect();
        let scanned: BTreeSet<_> = g.find(&whole).iter().map(key).collect();
        assert_eq!(streamed, scanned, "stream and whole-text scan disagree");
    }
});
