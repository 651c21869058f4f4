#![no_main]
//! Arbitrary bytes (as lossy UTF-8) through the default firewall and a small-window pattern guard:
//! no panic, spans inside the text and on its char boundaries, scores in [0, 1], redaction total.
//! The proptests in `core/tests/properties.rs` are the always-on version of this target.

use std::sync::OnceLock;

use featherguard_core::{
    default_rules, redact, Config, Finding, Firewall, PatternGuard, RuleSet, ScanLimits,
};
use libfuzzer_sys::fuzz_target;

fn firewall() -> &'static Firewall {
    static FW: OnceLock<Firewall> = OnceLock::new();
    FW.get_or_init(|| {
        let mut cfg = Config::default();
        // Exercise the over-limit cut on larger inputs too.
        cfg.limits.max_input_bytes = 3000;
        Firewall::from_config(&cfg).expect("default firewall")
    })
}

fn small_window() -> &'static PatternGuard {
    static G: OnceLock<PatternGuard> = OnceLock::new();
    G.get_or_init(|| {
        let limits = ScanLimits {
            window_bytes: 1024,
            window_overlap: 256,
            ..ScanLimits::default()
        };
        PatternGuard::new(RuleSet::new(default_rules()).unwrap(), limits)
    })
}

fn check(text: &str, findings: &[Finding]) {
    for f in findings {
        let (s, e) = (f.span.start, f.span.end);
        assert!(
            s < e && e <= text.len(),
            "bad span {s}..{e} (len {}) for {}",
            text.len(),
            f.rule
        );
        let aligned = text.is_char_boundary(s) && text.is_char_boundary(e);
        assert!(
            aligned,
            "span {s}..{e} of {} not on char boundaries of {text:?}",
            f.rule
        );
        assert!(
            (0.0..=1.0).contains(&f.score),
            "score {} for {}",
            f.score,
            f.rule
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let v = firewall().scan(&text);
    assert!(v.errors.is_empty(), "guard failed: {:?}", v.errors);
    assert!((0.0..=1.0).contains(&v.score), "verdict score {}", v.score);
    check(&text, &v.findings);
    let out = redact(&text, &v.findings);
    if !v.findings.iter().any(|f| f.family.is_sensitive_data()) {
        assert_eq!(out, text, "redact changed text without sensitive findings");
    }
    check(&text, &small_window().find(&text));
});
