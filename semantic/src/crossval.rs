//! Out-of-fold scores: every example is scored by a bank and a head that never saw it.

use crate::bank::build_bank;
use crate::head::{raw_score, stratified_split, train_head, TrainOptions};
use crate::knn::KnnScorer;
use crate::{EmbeddedSet, SemanticError};

/// Which examples a fold tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub test: Vec<usize>,
}

/// Calibrated finding scores (in [0, 1]) and the attack class each guard named, per example.
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfFold {
    pub similarity: Vec<f32>,
    pub similarity_class: Vec<usize>,
    pub classifier: Vec<f32>,
    pub classifier_class: Vec<usize>,
    /// The fold that scored each example.
    pub fold: Vec<usize>,
}

/// Scores every example of `set` out of fold. Examples with `trainable[i] == false` are never
/// used for training (e.g. text whose license forbids shipping it); they are scored by fold
/// `i % folds`. Banks are calibrated at `bank_fpr` = (flag, block) benign false-positive rates,
/// heads as `options` says. `progress` receives `(fold, folds)`.
pub fn out_of_fold(
    set: &EmbeddedSet,
    trainable: &[bool],
    folds: usize,
    k: usize,
    bank_fpr: (f32, f32),
    options: TrainOptions,
    progress: &mut dyn crate::Progress,
) -> Result<OutOfFold, SemanticError> {
    let folds = folds.max(2);
    let n = set.len();
    let mut fold_of = vec![0usize; n];
    // Stratified assignment of trainable examples: peel off 1/folds, 1/(folds-1), ... per class.
    let trainable_idx: Vec<usize> = (0..n).filter(|&i| trainable[i]).collect();
    let mut rest: Vec<usize> = trainable_idx.clone();
    for f in 0..folds - 1 {
        let labels: Vec<u16> = rest.iter().map(|&i| set.labels[i]).collect();
        let (keep, take) =
            stratified_split(&labels, 1.0 / (folds - f) as f32, options.seed + f as u64);
        take.iter().for_each(|&j| fold_of[rest[j]] = f);
        rest = keep.iter().map(|&j| rest[j]).collect();
    }
    rest.iter().for_each(|&i| fold_of[i] = folds - 1);
    (0..n)
        .filter(|&i| !trainable[i])
        .for_each(|i| fold_of[i] = i % folds);

    let mut out = OutOfFold {
        similarity: vec![0.0; n],
        similarity_class: vec![0; n],
        classifier: vec![0.0; n],
        classifier_class: vec![0; n],
        fold: fold_of.clone(),
    };
    for f in 0..folds {
        progress.update(f, folds);
        let train: Vec<usize> = trainable_idx
            .iter()
            .copied()
            .filter(|&i| fold_of[i] != f)
            .collect();
        let sub = set.subset(&train);
        let bank = build_bank(&sub, k, "fold".into(), bank_fpr.0, bank_fpr.1)?;
        let (head, _) = train_head(&sub, options, "fold".into())?;
        let vectors = bank.vectors()?;
        let scorer = KnnScorer { k };
        let meta = head.meta();
        let (w, b) = head.weights();
        for i in (0..n).filter(|&i| fold_of[i] == f) {
            let (mut sim, mut cls) = (f32::NEG_INFINITY, (0, 0.0f32, 0));
            let mut hbest = f32::NEG_INFINITY;
            for win in set.windows.windows(i) {
                let s = scorer.score(
                    vectors,
                    bank.labels(),
                    bank.meta().classes.len(),
                    win,
                    |_| false,
                );
                if s.raw > sim {
                    sim = s.raw;
                    cls.0 = s.class;
                }
                let h = raw_score(w, b, win);
                if h.raw > hbest {
                    hbest = h.raw;
                    cls.2 = h.class;
                }
            }
            out.similarity[i] = bank.meta().calibration.score(sim);
            out.similarity_class[i] = class_index(set, &bank.meta().classes, cls.0);
            out.classifier[i] = meta.calibration.score(hbest);
            out.classifier_class[i] = class_index(set, &meta.classes, cls.2);
        }
    }
    progress.update(folds, folds);
    Ok(out)
}

/// Maps a class index of a fold's model back to the set's class index (folds may lack a class).
fn class_index(set: &EmbeddedSet, fold_classes: &[String], c: usize) -> usize {
    fold_classes
        .get(c)
        .and_then(|name| set.classes.iter().position(|x| x == name))
        .unwrap_or(0)
}
