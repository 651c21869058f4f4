//! Policy: how finding scores become actions, per family, and what a guard failure means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::verdict::{Action, Family, Finding};

/// What a guard error does to the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// A failed guard blocks the input (the error is in the verdict).
    #[default]
    Closed,
    /// A failed guard is skipped; the error is still recorded in the verdict and the input is flagged.
    Open,
}

/// Score thresholds in [0, 1]; a threshold above 1 disables that action.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Findings scoring at least this are flagged.
    pub flag_at: f32,
    /// Findings scoring at least this block.
    pub block_at: f32,
}

impl Thresholds {
    pub fn action(&self, score: f32) -> Action {
        if score >= self.block_at {
            Action::Block
        } else if score >= self.flag_at {
            Action::Flag
        } else {
            Action::Allow
        }
    }
}

/// Maps findings to an action. Defaults: flag at 0.5, block at 0.8; PII flags but never blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Default flag threshold for families without an override.
    pub flag_at: f32,
    /// Default block threshold for families without an override.
    pub block_at: f32,
    pub fail_mode: FailMode,
    /// Per-family overrides of the default thresholds.
    pub families: BTreeMap<Family, Thresholds>,
}

impl Default for Policy {
    fn default() -> Self {
        let mut families = BTreeMap::new();
        families.insert(
            Family::Pii,
            Thresholds {
                flag_at: 0.5,
                block_at: 1.1,
            },
        );
        Policy {
            flag_at: 0.5,
            block_at: 0.8,
            fail_mode: FailMode::Closed,
            families,
        }
    }
}

impl Policy {
    pub fn thresholds(&self, family: Family) -> Thresholds {
        self.families.get(&family).copied().unwrap_or(Thresholds {
            flag_at: self.flag_at,
            block_at: self.block_at,
        })
    }

    /// The action and score for a set of findings and whether any guard failed.
    pub fn decide(&self, findings: &[Finding], guard_failed: bool) -> (Action, f32) {
        let mut action = Action::Allow;
        let mut score = 0.0f32;
        for f in findings {
            score = score.max(f.score);
            action = action.max(self.thresholds(f.family).action(f.score));
        }
        if guard_failed {
            action = action.max(match self.fail_mode {
                FailMode::Closed => Action::Block,
                FailMode::Open => Action::Flag,
            });
        }
        (action, score.clamp(0.0, 1.0))
    }

    /// Check thresholds are numbers in a meaningful range.
    pub fn validate(&self) -> Result<(), String> {
        let default = Thresholds {
            flag_at: self.flag_at,
            block_at: self.block_at,
        };
        let all = std::iter::once((None, &default))
            .chain(self.families.iter().map(|(f, t)| (Some(*f), t)));
        for (fam, t) in all {
            let ok = |x: f32| x.is_finite() && (0.0..=2.0).contains(&x);
            if !ok(t.flag_at) || !ok(t.block_at) {
                let which = fam.map_or("policy".to_string(), |f| format!("policy.families.{f}"));
                return Err(format!(
                    "{which}: thresholds must be numbers between 0 and 2 (above 1 disables)"
                ));
            }
        }
        Ok(())
    }
}
