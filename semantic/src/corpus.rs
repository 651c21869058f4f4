//! Labeled JSONL corpora: `{"text": ..., "label": "attack"|"benign", "category": "family:detail"}`.

use std::io::BufRead;
use std::path::Path;

use crate::classes::{family_of, BENIGN};
use crate::SemanticError;

/// One labeled text. `class` is [`BENIGN`] or the attack family (the part of `category` before
/// the first `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub class: String,
    /// The full `category` field (empty when absent).
    pub category: String,
    /// The `source` field (empty when absent).
    pub source: String,
}

/// Reads a labeled corpus. Every attack family must be one [`family_of`] knows; blank lines are
/// skipped; any malformed line is an error naming the line.
pub fn read_corpus(path: &Path) -> Result<Vec<Example>, SemanticError> {
    let file = std::fs::File::open(path).map_err(|source| SemanticError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| SemanticError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| SemanticError::Corpus {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| bad("missing string field \"text\"".into()))?
            .to_string();
        let category = field("category");
        let class = match field("label").as_str() {
            "benign" => BENIGN.to_string(),
            "attack" => {
                let fam = category.split(':').next().unwrap_or("").to_string();
                if family_of(&fam).is_none() {
                    return Err(bad(format!(
                        "attack category {category:?}: the part before ':' must be a family (jailbreak, \
                         prompt_injection, indirect_injection, prompt_leak, exfiltration, tool_abuse, obfuscation, \
                         harmful_request, ...)"
                    )));
                }
                fam
            }
            other => {
                return Err(bad(format!(
                    "label must be \"attack\" or \"benign\", got {other:?}"
                )))
            }
        };
        out.push(Example {
            text,
            class,
            category,
            source: field("source"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classes_and_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(
            &p,
            "{\"text\":\"hi\",\"label\":\"benign\"}\n\n{\"text\":\"x\",\"label\":\"attack\",\"category\":\"jailbreak:dan\"}\n",
        )
        .unwrap();
        let ex = read_corpus(&p).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].class, "jailbreak");
        std::fs::write(
            &p,
            "{\"text\":\"x\",\"label\":\"attack\",\"category\":\"weird\"}\n",
        )
        .unwrap();
        let err = read_corpus(&p).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("family"), "{err}");
        std::fs::write(&p, "not json\n").unwrap();
        assert!(read_corpus(&p).is_err());
    }
}
