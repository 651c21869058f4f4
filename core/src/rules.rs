//! The TOML rule format (see docs/rules.md): parsing, validation and the embedded default pack.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::validate::Validator;
use crate::verdict::{Family, Severity};

/// Which view of the text a rule's patterns run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// Normalized text, plus deobfuscated and decoded views.
    #[default]
    Normalized,
    /// The original bytes.
    Raw,
}

/// Where a rule was defined: `file:line:col` for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Example texts a rule must / must not match; checked by `featherguard rules check` and the tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    #[serde(default, rename = "match")]
    pub matches: Vec<String>,
    #[serde(default)]
    pub no_match: Vec<String>,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique id: `[a-z0-9._-]`, at most 64 bytes.
    pub id: String,
    pub family: Family,
    pub severity: Severity,
    pub description: String,
    /// ISO 639-1 code of the language the patterns target, if any.
    pub lang: Option<String>,
    pub view: ViewKind,
    /// Rust regex syntax (Unicode classes off), as written in the file.
    pub regex: Vec<String>,
    /// Exact strings, as written in the file.
    pub literals: Vec<String>,
    pub validate: Option<Validator>,
    pub examples: Examples,
    pub origin: Origin,
    /// Gates per regex, computed at build time for the default pack; `None` for rules read at run time.
    #[serde(skip)]
    pub(crate) precomputed_gates: Option<&'static [crate::default_pack::StaticGate]>,
}

/// Errors reading or validating a rule file. Every variant names the file and position.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: cannot read rule file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{origin}: rule `{id}`: {message}")]
    Invalid {
        origin: Origin,
        id: String,
        message: String,
    },
    #[error("{origin}: duplicate rule id `{id}` (first defined at {first})")]
    Duplicate {
        origin: Origin,
        id: String,
        first: Origin,
    },
    #[error("rule pack is too large to compile: {message}")]
    Compile { message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValidate {
    Name(String),
    Entropy { entropy: f32 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    family: Family,
    severity: Severity,
    #[serde(default)]
    description: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    view: ViewKind,
    #[serde(default)]
    regex: Vec<Spanned<String>>,
    #[serde(default)]
    literals: Vec<String>,
    #[serde(default)]
    validate: Option<Spanned<RawValidate>>,
    #[serde(default)]
    examples: Examples,
}

/// Line, column and message of a TOML error in `src`.
pub(crate) fn toml_position(src: &str, e: &toml::de::Error) -> (usize, usize, String) {
    let (line, col) = e.span().map_or((1, 1), |s| line_col(src, s.start));
    (line, col, e.message().trim().to_string())
}

/// 1-based line and column (in chars) of a byte offset.
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn origin(file: &str, src: &str, offset: usize) -> Origin {
    let (line, col) = line_col(src, offset);
    Origin {
        file: file.to_string(),
        line,
        col,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Parse and validate a rule file's text. `file` is used in messages only.
/// Patterns are checked for syntax here; they are compiled by [`crate::RuleSet`].
pub fn parse_rules(file: &str, src: &str) -> Result<Vec<Rule>, RuleError> {
    let doc: FileDoc = toml::from_str(src).map_err(|e| {
        let (line, col, message) = toml_position(src, &e);
        RuleError::Syntax {
            file: file.to_string(),
            line,
            col,
            message,
        }
    })?;
    let mut rules = Vec::with_capacity(doc.rule.len());
    let mut seen: std::collections::HashMap<String, Origin> = std::collections::HashMap::new();
    for spanned in doc.rule {
        let raw = spanned.into_inner();
        let at = origin(file, src, raw.id.span().start);
        let id = raw.id.get_ref().clone();
        let invalid = |origin: Origin, message: String| RuleError::Invalid {
            origin,
            id: id.clone(),
            message,
        };
        if !valid_id(&id) {
            return Err(invalid(
                at,
                "id must be 1-64 bytes of lowercase ASCII letters, digits, `.`, `_` or `-`".into(),
            ));
        }
        if let Some(first) = seen.get(&id) {
            return Err(RuleError::Duplicate {
                origin: at,
                id,
                first: first.clone(),
            });
        }
        if raw.regex.is_empty() && raw.literals.is_empty() {
            return Err(invalid(
                at,
                "a rule needs at least one `regex` or `literals` entry".into(),
            ));
        }
        if raw.literals.iter().any(String::is_empty) {
            return Err(invalid(at, "`literals` entries must not be empty".into()));
        }
        for pattern in &raw.regex {
            let source = match raw.view {
                ViewKind::Normalized => crate::fold::fold_pattern(pattern.get_ref()),
                ViewKind::Raw => pattern.get_ref().clone(),
            };
            if let Err(message) = crate::anchors::parse(&source) {
                return Err(invalid(origin(file, src, pattern.span().start), message));
            }
        }
        let validate = match raw.validate {
            None => None,
            Some(v) => {
                let vat = origin(file, src, v.span().start);
                Some(match v.into_inner() {
                    RawValidate::Name(n) if n == "luhn" => Validator::Luhn,
                    RawValidate::Name(n) if n == "iban" => Validator::Iban,
                    RawValidate::Name(n) => {
                        return Err(invalid(
                            vat,
                            format!("unknown validator `{n}` (expected \"luhn\", \"iban\" or {{ entropy = N }})"),
                        ))
                    }
                    RawValidate::Entropy { entropy } if (0.0..=8.0).contains(&entropy) => {
                        Validator::Entropy(entropy)
                    }
                    RawValidate::Entropy { entropy } => {
                        return Err(invalid(
                            vat,
                            format!("entropy must be between 0 and 8 bits per byte, got {entropy}"),
                        ))
                    }
                })
            }
        };
        seen.insert(id.clone(), at.clone());
        rules.push(Rule {
            id,
            family: raw.family,
            severity: raw.severity,
            description: raw.description,
            lang: raw.lang,
            view: raw.view,
            regex: raw.regex.into_iter().map(Spanned::into_inner).collect(),
            literals: raw.literals,
            validate,
            examples: raw.examples,
            origin: at,
            precomputed_gates: None,
        });
    }
    Ok(rules)
}

/// Read and parse a rule file from disk.
pub fn load_rule_file(path: &Path) -> Result<Vec<Rule>, RuleError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| RuleError::Io {
        file: file.clone(),
        source,
    })?;
    let src = String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(e.as_bytes());
        let (line, col) = line_col(&text, off);
        RuleError::Syntax {
            file: file.clone(),
            line,
            col,
            message: "rule files must be UTF-8".into(),
        }
    })?;
    parse_rules(&file, &src)
}

/// The embedded default pack (validated when featherguard was built).
pub fn default_rules() -> Vec<Rule> {
    crate::default_pack::rules()
}

/// Add `extra` rules to `base`; an extra rule with an existing id replaces it in place.
pub fn merge_rules(base: &mut Vec<Rule>, extra: Vec<Rule>) {
    for rule in extra {
        match base.iter_mut().find(|r| r.id == rule.id) {
            Some(slot) => *slot = rule,
            None => base.push(rule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_rule() {
        let src = r#"
[[rule]]
id = "t.one"
family = "prompt_injection"
severity = "high"
regex = ['\bignore\b']
literals = ["<|im_start|>"]
validate = { entropy = 3.0 }
[rule.examples]
match = ["ignore"]
no_match = ["ignored"]
"#;
        let rules = parse_rules("t.toml", src).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].family, Family::PromptInjection);
        assert_eq!(rules[0].validate, Some(Validator::Entropy(3.0)));
        assert_eq!(rules[0].origin.line, 3);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let src = "[[rule]]\nid = \"a\"\nfamily = \"nope\"\nseverity = \"high\"\nregex = ['x']\n";
        let err = parse_rules("f.toml", src).unwrap_err().to_string();
        assert!(err.starts_with("f.toml:3:"), "{err}");
        assert!(err.contains("nope"), "{err}");

        let src = "[[rule]]\nid = \"a\"\nfamily = \"pii\"\nseverity = \"high\"\nregex = ['ok', '(unclosed']\n";
        let err = parse_rules("f.toml", src).unwrap_err().to_string();
        assert!(err.starts_with("f.toml:5:16"), "{err}");
    }

    #[test]
    fn rejects_duplicates_bad_ids_and_empty_rules() {
        let dup = "[[rule]]\nid='a'\nfamily='pii'\nseverity='low'\nliterals=['x']\n[[rule]]\nid='a'\nfamily='pii'\nseverity='low'\nliterals=['y']\n";
        assert!(matches!(
            parse_rules("f", dup),
            Err(RuleError::Duplicate { .. })
        ));
        let bad = "[[rule]]\nid='A B'\nfamily='pii'\nseverity='low'\nliterals=['x']\n";
        assert!(matches!(
            parse_rules("f", bad),
            Err(RuleError::Invalid { .. })
        ));
        let empty = "[[rule]]\nid='a'\nfamily='pii'\nseverity='low'\n";
        assert!(matches!(
            parse_rules("f", empty),
            Err(RuleError::Invalid { .. })
        ));
        let unknown =
            "[[rule]]\nid='a'\nfamily='pii'\nseverity='low'\nliterals=['x']\ncolour='red'\n";
        assert!(matches!(
            parse_rules("f", unknown),
            Err(RuleError::Syntax { .. })
        ));
    }
}
