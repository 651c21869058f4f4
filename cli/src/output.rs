//! Rendering verdicts as JSON objects and human-readable text.

use std::io::Write;

use featherguard::{Finding, Verdict};
use serde_json::{Map, Value};

/// The JSON object for one verdict, after the echoed fields of the input (e.g. `id`).
pub fn verdict_json(verdict: &Verdict, echo: Option<Map<String, Value>>) -> Value {
    let mut obj = echo.unwrap_or_default();
    obj.insert("action".into(), verdict.action.as_str().into());
    obj.insert("score".into(), round3(verdict.score).into());
    obj.insert(
        "findings".into(),
        Value::Array(verdict.findings.iter().map(finding_json).collect()),
    );
    if !verdict.errors.is_empty() {
        obj.insert(
            "errors".into(),
            serde_json::to_value(&verdict.errors).unwrap_or(Value::Null),
        );
    }
    obj.insert(
        "elapsed_us".into(),
        (verdict.elapsed.as_micros().min(u64::MAX as u128) as u64).into(),
    );
    Value::Object(obj)
}

fn finding_json(f: &Finding) -> Value {
    let mut o = Map::new();
    o.insert("rule".into(), (*f.rule).into());
    o.insert("family".into(), f.family.as_str().into());
    o.insert("severity".into(), f.severity.as_str().into());
    o.insert("score".into(), round3(f.score).into());
    o.insert("start".into(), f.span.start.into());
    o.insert("end".into(), f.span.end.into());
    o.insert("guard".into(), (*f.guard).into());
    if let Some(view) = &f.view {
        o.insert("view".into(), view.as_ref().into());
    }
    Value::Object(o)
}

fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
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
pub fn write_text(out: &mut impl Write, label: &str, text: &str, v: &Verdict) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<5} score={:.2} {:>6}us  {}",
        v.action.as_str().to_uppercase(),
        v.score,
        v.elapsed.as_micros(),
        if label.is_empty() { snippet(text, 70) } else { label.to_string() }
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
            f.view.as_deref().map(|v| format!(" via {v}")).unwrap_or_default(),
        )?;
    }
    for e in &v.errors {
        writeln!(out, "      error in guard {}: {}", e.guard, e.error)?;
    }
    Ok(())
}
