//! Budgets from `xtask/budgets.toml`: `[<set>] <metric> = <limit>`, each an upper bound.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// One budget line.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Feature set.
    pub set: String,
    /// Metric name (see docs/audit.md), e.g. `binary_mb`.
    pub metric: String,
    /// Upper bound, in the metric's unit.
    pub limit: f64,
}

/// The outcome of checking one budget.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Measured within the limit.
    Within(f64),
    /// Measured over the limit.
    Exceeded(f64),
    /// The set was not audited in this run (skipped or not selected).
    NotMeasured,
}

/// Parses budgets text; `file` names the file in errors.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Budget>> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", file.display()))?;
    let mut out = Vec::new();
    for (set, metrics) in table {
        let Some(metrics) = metrics.as_table() else {
            bail!(
                "{}: `{set}` must be a table `[{set}]` of metric = limit",
                file.display()
            );
        };
        for (metric, limit) in metrics {
            let limit = match limit {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                other => bail!(
                    "{}: [{set}] {metric} is a {}: the limit must be a number",
                    file.display(),
                    other.type_str()
                ),
            };
            out.push(Budget {
                set: set.clone(),
                metric: metric.clone(),
                limit,
            });
        }
    }
    Ok(out)
}

/// Checks budgets against measured metrics (`set -> metric -> value`; a set absent from the map
/// was not audited). A metric unknown for an audited set is an error: it is a typo in the file.
pub fn check(
    budgets: &[Budget],
    measured: &BTreeMap<String, BTreeMap<String, f64>>,
    file: &Path,
) -> Result<Vec<(Budget, Verdict)>> {
    budgets
        .iter()
        .map(|b| {
            let verdict = match measured.get(&b.set) {
                None => Verdict::NotMeasured,
                Some(metrics) => match metrics.get(&b.metric) {
                    Some(&v) if v <= b.limit => Verdict::Within(v),
                    Some(&v) => Verdict::Exceeded(v),
                    None => bail!(
                        "{}: [{}] {} is not a metric of that set; known: {}",
                        file.display(),
                        b.set,
                        b.metric,
                        metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                },
            };
            Ok((b.clone(), verdict))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut core = BTreeMap::new();
        core.insert("binary_mb".to_string(), 2.0);
        core.insert("scan_first_peak_rss_mb".to_string(), 9.0);
        BTreeMap::from([("core".to_string(), core)])
    }

    #[test]
    fn within_exceeded_and_unmeasured() {
        let file = Path::new("budgets.toml");
        let b = parse("[core]\nbinary_mb = 2.5\nscan_first_peak_rss_mb = 8\n[onnx]\nstart_peak_rss_mb = 10.0\n", file)
            .unwrap();
        let r = check(&b, &measured(), file).unwrap();
        assert_eq!(r[0].1, Verdict::Within(2.0));
        assert_eq!(r[1].1, Verdict::Exceeded(9.0));
        assert_eq!(r[2].1, Verdict::NotMeasured);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let file = Path::new("budgets.toml");
        let b = parse("[core]\nbinary_mib = 2.5\n", file).unwrap();
        let e = check(&b, &measured(), file).unwrap_err().to_string();
        assert!(
            e.contains("binary_mib") && e.contains("known: binary_mb"),
            "{e}"
        );
        assert!(parse("[core]\nbinary_mb = \"big\"\n", file).is_err());
        assert!(parse("core = 1\n", file).is_err());
    }
}
