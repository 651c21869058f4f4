//! Redaction of sensitive data (secrets, PII) out of a text, using findings' spans.

use crate::verdict::Finding;

/// A copy of `text` with every secret/PII finding's span replaced by `[REDACTED:<rule>]`.
/// Overlapping spans are merged (the first rule names the merged span).
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut spans: Vec<(usize, usize, &str)> = findings
        .iter()
        .filter(|f| f.family.is_sensitive_data())
        .filter(|f| {
            f.span.end <= text.len()
                && text.is_char_boundary(f.span.start)
                && text.is_char_boundary(f.span.end)
        })
        .map(|f| (f.span.start, f.span.end, &*f.rule))
        .collect();
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, mut end, rule) = spans[i];
        i += 1;
        while i < spans.len() && spans[i].0 < end {
            end = end.max(spans[i].1);
            i += 1;
        }
        if start < pos {
            continue;
        }
        out.push_str(&text[pos..start]);
        out.push_str("[REDACTED:");
        out.push_str(rule);
        out.push(']');
        pos = end;
    }
    out.push_str(&text[pos..]);
    out
}
