//! Turning per-window raw scores into findings (shared by the similarity and classifier guards),
//! and the pieces every embedding guard's `Guard` impl shares.

use std::sync::Arc;

use featherguard_core::{
    Embedder, Embeddings, Family, Finding, Guard, GuardError, Input, ModelId, Severity, Span,
};

use crate::{Calibration, BLOCK_SCORE, FLAG_SCORE};

/// A window's verdict from a scorer: raw score and the attack class it points to.
pub(crate) struct WindowScore {
    pub raw: f32,
    pub class: usize,
}

/// What a guard's data file (bank or head) says about the raw scores it gives.
pub(crate) struct Scoring<'a> {
    /// What the file is, for errors ("exemplar bank", "classifier head").
    pub what: &'a str,
    /// The model whose vectors the file was built from.
    pub model: &'a ModelId,
    /// Class names; index 0 is benign.
    pub classes: &'a [String],
    pub calibration: &'a Calibration,
}

/// Checks that the embedder is the model `scoring` was built with, embeds the inputs once and
/// scores every window with `score`; returns one result per input.
pub(crate) fn scan_with(
    guard: &str,
    embedder: &dyn Embedder,
    inputs: &[Input<'_>],
    scoring: Scoring<'_>,
    score: impl Fn(&[f32]) -> Result<WindowScore, GuardError>,
) -> Vec<Result<Vec<Finding>, GuardError>> {
    let Scoring {
        what,
        model,
        classes,
        calibration,
    } = scoring;
    if let Err(e) = check_model(guard, embedder, model, what) {
        return fail_all(inputs, &e);
    }
    let texts: Vec<&str> = inputs.iter().map(|i| i.text).collect();
    let emb: Embeddings = match embedder.embed(&texts) {
        Ok(e) => e,
        Err(e) => return fail_all(inputs, &e.into_guard_error(guard)),
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
                    let rule = format!("{guard}.{}", classes[b.class]);
                    out.push(text_finding(guard, rule, family, score, len));
                }
            }
            if emb.skipped_windows(i) > 0 {
                // Never silent: the text was longer than the window bound allows. Medium: its
                // score is below BLOCK_SCORE.
                let rule = format!("{guard}.windows_sampled");
                let score = Severity::Medium.score();
                out.push(text_finding(guard, rule, Family::Limits, score, len));
            }
            Ok(out)
        })
        .collect()
}

/// A finding of `guard` over a whole text of `len` bytes; High from [`BLOCK_SCORE`] up, else Medium.
pub(crate) fn text_finding(
    guard: &str,
    rule: String,
    family: Family,
    score: f32,
    len: usize,
) -> Finding {
    Finding {
        rule: Arc::from(rule),
        family,
        severity: if score >= BLOCK_SCORE {
            Severity::High
        } else {
            Severity::Medium
        },
        score,
        span: Span::new(0, len),
        guard: Arc::from(guard),
        view: None,
    }
}

/// `Guard::scan` of the embedding guards: a batch of one, so one text takes the batch path.
pub(crate) fn scan_one(guard: &dyn Guard, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
    guard
        .scan_batch(std::slice::from_ref(input))
        .pop()
        .unwrap_or(Ok(Vec::new()))
}

/// The same error for every input of a batch that failed as a whole.
pub(crate) fn fail_all(
    inputs: &[Input<'_>],
    e: &GuardError,
) -> Vec<Result<Vec<Finding>, GuardError>> {
    inputs.iter().map(|_| Err(clone_err(e))).collect()
}

/// `GuardError` is not `Clone`; rebuild the same error for each input of a failed batch.
fn clone_err(e: &GuardError) -> GuardError {
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
fn check_model(
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
