//! The result types every guard and the firewall produce: families, severities, findings and verdicts.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The kind of threat a finding belongs to. Policies are set per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    PromptInjection,
    IndirectInjection,
    Jailbreak,
    PromptLeak,
    Exfiltration,
    ToolAbuse,
    Obfuscation,
    Secret,
    Pii,
    InvisibleText,
    HarmfulContent,
    /// Not a threat in the text itself: the input exceeded a configured bound or a guard failed.
    Limits,
}

impl Family {
    /// Every family, in a stable order (used for tables and metrics).
    pub const ALL: [Family; 12] = [
        Family::PromptInjection,
        Family::IndirectInjection,
        Family::Jailbreak,
        Family::PromptLeak,
        Family::Exfiltration,
        Family::ToolAbuse,
        Family::Obfuscation,
        Family::Secret,
        Family::Pii,
        Family::InvisibleText,
        Family::HarmfulContent,
        Family::Limits,
    ];

    /// The snake_case name used in rule files, JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::PromptInjection => "prompt_injection",
            Family::IndirectInjection => "indirect_injection",
            Family::Jailbreak => "jailbreak",
            Family::PromptLeak => "prompt_leak",
            Family::Exfiltration => "exfiltration",
            Family::ToolAbuse => "tool_abuse",
            Family::Obfuscation => "obfuscation",
            Family::Secret => "secret",
            Family::Pii => "pii",
            Family::InvisibleText => "invisible_text",
            Family::HarmfulContent => "harmful_content",
            Family::Limits => "limits",
        }
    }

    /// Families whose findings can be redacted out of the text (data, not instructions).
    pub fn is_sensitive_data(self) -> bool {
        matches!(self, Family::Secret | Family::Pii)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown family `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// How serious a finding is; sets its score (see [`Severity::score`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Score in [0, 1] a pattern finding of this severity carries.
    pub fn score(self) -> f32 {
        match self {
            Severity::Info => 0.1,
            Severity::Low => 0.35,
            Severity::Medium => 0.6,
            Severity::High => 0.85,
            Severity::Critical => 1.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller should do with the text. Ordered: `Allow < Flag < Block`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Allow,
    Flag,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Block => "block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A byte range `[start, end)` in the ORIGINAL input text; both ends lie on char boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One piece of evidence: which rule or model saw what, where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Rule id (pattern guard) or detector name (ML guards).
    pub rule: Arc<str>,
    pub family: Family,
    pub severity: Severity,
    /// Confidence in [0, 1]; for pattern findings the severity's score. JSON: 3 decimals.
    #[serde(serialize_with = "round3")]
    pub score: f32,
    /// Byte offsets into the original text.
    #[serde(flatten)]
    pub span: Span,
    /// Name of the guard that produced it.
    pub guard: Arc<str>,
    /// Which view of the text matched (`raw`, `normalized`, `deobfuscated`, `base64`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<Cow<'static, str>>,
}

/// Why a guard could not give an answer; recorded in the verdict, never dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardFailure {
    pub guard: Arc<str>,
    pub error: String,
}

/// The firewall's answer for one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub action: Action,
    /// Highest finding score, in [0, 1]; 0 when there are no findings. JSON: 3 decimals.
    #[serde(serialize_with = "round3")]
    pub score: f32,
    /// Sorted by start offset, then rule id.
    pub findings: Vec<Finding>,
    /// Guards that failed; under fail-closed any entry blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<GuardFailure>,
    /// Wall time of the whole scan.
    #[serde(rename = "elapsed_us", with = "micros")]
    pub elapsed: Duration,
}

impl Verdict {
    /// True when the action is [`Action::Block`].
    pub fn is_blocked(&self) -> bool {
        self.action == Action::Block
    }

    /// The families present in the findings, deduplicated, in [`Family::ALL`] order.
    pub fn families(&self) -> Vec<Family> {
        let mut fams: Vec<Family> = self.findings.iter().map(|f| f.family).collect();
        fams.sort();
        fams.dedup();
        fams
    }
}

/// Scores as JSON numbers with 3 decimals (0.85, not 0.8500000238): stable output for every client.
fn round3<S: serde::Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((f64::from(*x) * 1000.0).round() / 1000.0)
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}
