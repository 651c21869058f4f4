//! Turning per-window raw scores into findings (shared by the similarity and classifier guards).

use std::sync::Arc;

use featherguard_core::{Embedder, Embeddings, Family, Finding, GuardError, Input, Severity, Span};

use crate::{Calibration, FLAG_SCORE};

/// A window's verdict from a scorer: raw score and the attack class it points to.
pub(crate) struct WindowScore {
    pub raw: f32,
    pub class: usize,
}

/// Embeds the inputs once and scores every window with `score`; returns one result per input.
pub(crate) fn scan_with(
    guard: &str,
    embedder: &dyn Embedder,
    inputs: &[Input<'_>],
    classes: &[String],
    calibration: &Calibration,
    score: impl Fn(&[f32]) -> Result<WindowScore, GuardError>,
) -> Vec<Result<Vec<Finding>, GuardError>> {
    let texts: Vec<&str> = inputs.iter().map(|i| i.text).collect();
    let emb: Embeddings = match embedder.embed(&texts) {
        Ok(e) => e,
        Err(e) => {
            let e = e.into_guard_error(guard);
            return inputs.iter().map(|_| Err(clone_err(&e))).collect();
        }
    };
    (0..inputs.len())
        .map(|i| {
            let mut best: Option<WindowScore> = None;
            for w in emb.windows(i) {
                let s = score(w)?;
                if best.as_ref().is_none_or(|b| s.raw > b.raw) {
                    best = Some(s);
                }
            }
            let mut out = Vec::new();
            let len = inputs[i].text.len();
            if let Some(b) = best {
                let score = calibration.score(b.raw);
                let family = classes.get(b.class).and_then(|c| crate::family_of(c));
                if let (true, Some(family)) = (score >= FLAG_SCORE, family) {
                    out.push(Finding {
                        rule: Arc::from(format!("{guard}.{}", classes[b.class])),
                        family,
                        severity: if score >= crate::BLOCK_SCORE {
                            Severity::High
                        } else {
                            Severity::Medium
                        },
                        score,
                        span: Span::new(0, len),
                        guard: Arc::from(guard),
                        view: None,
                    });
                }
            }
            let skipped = emb.skipped_windows(i);
            if skipped > 0 {
                // Never silent: the text was longer than the window bound allows.
                out.push(Finding {
                    rule: Arc::from(format!("{guard}.windows_sampled")),
                    family: Family::Limits,
                    severity: Severity::Medium,
                    score: Severity::Medium.score(),
                    span: Span::new(0, len),
                    guard: Arc::from(guard),
                    view: None,
                });
            }
            Ok(out)
        })
        .collect()
}

/// `GuardError` is not `Clone`; rebuild the same error for each input of a failed batch.
pub(crate) fn clone_err(e: &GuardError) -> GuardError {
    match e {
        GuardError::Unavailable {
            guard,
            what,
            reason,
            fix,
        } => GuardError::Unavailable {
            guard: guard.clone(),
            what: what.clone(),
            reason: reason.clone(),
            fix: fix.clone(),
        },
        GuardError::InputRejected { guard, reason } => GuardError::InputRejected {
            guard: guard.clone(),
            reason: reason.clone(),
        },
        GuardError::Backend { guard, message } => GuardError::Backend {
            guard: guard.clone(),
            message: message.clone(),
        },
    }
}

/// Checks that vectors from `embedder` are comparable with ones built with `built`.
pub(crate) fn check_model(
    guard: &str,
    embedder: &dyn Embedder,
    built: &featherguard_core::ModelId,
    what: &str,
) -> Result<(), GuardError> {
    let current = embedder.model();
    if current.sha256 != built.sha256 || current.dim != built.dim {
        return Err(GuardError::Unavailable {
            guard: guard.into(),
            what: what.into(),
            reason: format!("built with {built}, but the embedder is {current}"),
            fix: "rebuild it with `featherguard bank build` / `featherguard train` for this model, or run `featherguard setup --only models`".into(),
        });
    }
    Ok(())
}
