//! The similarity guard: class-conditional kNN against an exemplar bank.

use std::sync::Arc;

use featherguard_core::{Embedder, Finding, Guard, GuardError, Input};

use crate::findings::{scan_one, scan_with, Scoring, WindowScore};
use crate::knn::KnnScorer;
use crate::Bank;

/// Flags texts whose windows are closer to the bank's attack exemplars than to its benign ones.
/// The finding names the nearest attack family; its score is calibrated (see [`crate::Calibration`]).
pub struct SimilarityGuard {
    name: String,
    embedder: Arc<dyn Embedder>,
    bank: Arc<Bank>,
}

impl SimilarityGuard {
    /// A guard named `similarity`.
    pub fn new(embedder: Arc<dyn Embedder>, bank: Arc<Bank>) -> SimilarityGuard {
        SimilarityGuard {
            name: "similarity".into(),
            embedder,
            bank,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> SimilarityGuard {
        self.name = name.into();
        self
    }

    pub fn bank(&self) -> &Bank {
        &self.bank
    }
}

impl Guard for SimilarityGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        scan_one(self, input)
    }

    fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Result<Vec<Finding>, GuardError>> {
        let meta = self.bank.meta();
        let scorer = KnnScorer { k: meta.k };
        let labels = self.bank.labels();
        let classes = meta.classes.len();
        scan_with(
            &self.name,
            self.embedder.as_ref(),
            inputs,
            Scoring {
                what: "exemplar bank",
                model: &meta.model,
                classes: &meta.classes,
                calibration: &meta.calibration,
            },
            |w| {
                let vectors = self.bank.vectors().map_err(|e| GuardError::Backend {
                    guard: self.name.clone(),
                    message: e.to_string(),
                })?;
                let s = scorer.score(vectors, labels, classes, w, |_| false);
                Ok(WindowScore {
                    raw: s.raw,
                    class: s.class,
                })
            },
        )
    }
}
