//! Rendering verdicts as JSON objects and human-readable text.

use std::io::Write;

use featherguard::Verdict;
use serde_json::{Map, Value};

/// The JSON object for one verdict, after the echoed fields of the input (e.g. `id`). The verdict's
/// own fields are its serde form, the one shape the CLI and the server both emit.
pub fn verdict_json(verdict: &Verdict, echo: Option<Map<String, Value>>) -> Value {
    let mut obj = echo.unwrap_or_default();
    if let Ok(Value::Object(fields)) = serde_json::to_value(verdict) {
        obj.extend(fields);
    }
    Value::Object(obj)
}

/// At most `max` chars of `s`, on one line, with an ellipsis when cut.
pub fn snippet(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Human-readable verdict: a header line, then one line per finding with the matched text.
pub fn write_text(
    out: &mut impl Write,
    label: &str,
    text: &str,
    v: &Verdict,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<5} score={:.2} {:>6}us  {}",
        v.action.as_str().to_uppercase(),
        v.score,
        v.elapsed.as_micros(),
        if label.is_empty() {
            snippet(text, 70)
        } else {
            label.to_string()
        }
    )?;
    for f in &v.findings {
        let matched = text.get(f.span.start..f.span.end).unwrap_or("");
        writeln!(
            out,
            "      {} [{} {}] {}..{} {:?}{}",
            f.rule,
            f.family,
            f.severity,
            f.span.start,
            f.span.end,
            snippet(matched, 60),
            f.view
                .as_deref()
                .map(|v| format!(" via {v}"))
                .unwrap_or_default(),
        )?;
    }
    for e in &v.errors {
        writeln!(out, "      error in guard {}: {}", e.guard, e.error)?;
    }
    Ok(())
}
