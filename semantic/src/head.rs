//! A classifier head: multinomial logistic regression on unit embeddings, trained with a held-out
//! validation split and calibrated on its benign part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use featherguard_core::{Embedder, Finding, Guard, GuardError, Input, ModelId};
use featherguard_loader::{write_safetensors, Dtype, TensorData};
use serde::{Deserialize, Serialize};

use crate::findings::{scan_one, scan_with, Scoring, WindowScore};
use crate::knn::dot;
use crate::meta::{model_metadata, open_featherguard_file, today_utc};
use crate::{Calibration, EmbeddedSet, SemanticError, BENIGN};

const REBUILD: &str = "train --corpus FILE.jsonl --out HEAD.safetensors";
const KIND: &str = "featherguard.head.v1";

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Share of each class held out for validation and calibration, in (0, 1).
    pub validation: f32,
    /// Full-batch Adam steps.
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub l2: f32,
    /// Benign false-positive rate at the flag / block cut points (on the validation split).
    pub flag_fpr: f32,
    pub block_fpr: f32,
    /// Seed of the deterministic split.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            validation: 0.2,
            epochs: 300,
            learning_rate: 0.05,
            l2: 1e-4,
            flag_fpr: 0.05,
            block_fpr: 0.01,
            seed: 0x5eed,
        }
    }
}

/// Validation figures of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub train: usize,
    pub validation: usize,
    pub validation_benign: usize,
    /// Mean cross-entropy on the training split after the last step.
    pub train_loss: f32,
    /// Validation attacks reaching the block / flag cut points, in [0, 1].
    pub recall_block: f32,
    pub recall_flag: f32,
    /// Validation benign texts reaching the block cut point, in [0, 1].
    pub fpr_block: f32,
}

/// Metadata stored with a head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    pub model: ModelId,
    /// Class names; index 0 is [`BENIGN`].
    pub classes: Vec<String>,
    pub counts: BTreeMap<String, usize>,
    pub built: String,
    pub source: String,
    pub options: TrainOptions,
    pub report: TrainReport,
    /// Cut points on the raw score (log-odds of "not benign").
    pub calibration: Calibration,
}

/// Weights `[classes, dim]` and biases `[classes]`.
pub struct Head {
    meta: HeadMeta,
    weight: Vec<f32>,
    bias: Vec<f32>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head").field("meta", &self.meta).finish()
    }
}

/// A deterministic xorshift generator (no global RNG; same seed, same split).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Splits indices per class into (train, validation).
pub(crate) fn stratified_split(
    labels: &[u16],
    fraction: f32,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().map(|l| *l as usize + 1).max().unwrap_or(0);
    let mut rng = XorShift(seed | 1);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let n_val = ((idx.len() as f32) * fraction).round() as usize;
        let n_val = if idx.len() >= 2 {
            n_val.clamp(1, idx.len() - 1)
        } else {
            0
        };
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Fits weights on `x` (rows of `dim`) with class weights balancing benign against attacks.
pub(crate) fn fit(
    x: &[f32],
    labels: &[u16],
    classes: usize,
    dim: usize,
    o: &TrainOptions,
) -> (Vec<f32>, Vec<f32>, f32) {
    let n = labels.len();
    let benign = labels.iter().filter(|l| **l == 0).count().max(1);
    let attacks = (n - benign.min(n)).max(1);
    let cw: Vec<f32> = (0..classes)
        .map(|c| {
            if c == 0 {
                attacks as f32 / benign as f32
            } else {
                1.0
            }
        })
        .collect();
    let wsum: f32 = labels.iter().map(|l| cw[*l as usize]).sum();
    let mut w = vec![0f32; classes * dim];
    let mut b = vec![0f32; classes];
    let (mut mw, mut vw) = (vec![0f32; w.len()], vec![0f32; w.len()]);
    let (mut mb, mut vb) = (vec![0f32; classes], vec![0f32; classes]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut loss = 0.0;
    let mut p = vec![0f32; classes];
    for step in 1..=o.epochs {
        let mut gw = vec![0f32; w.len()];
        let mut gb = vec![0f32; classes];
        loss = 0.0;
        for (row, &l) in x.chunks_exact(dim).zip(labels) {
            logits_into(&w, &b, row, &mut p);
            softmax(&mut p);
            let weight = cw[l as usize] / wsum;
            loss -= weight * p[l as usize].max(1e-12).ln();
            for c in 0..classes {
                let g = weight * (p[c] - if c == l as usize { 1.0 } else { 0.0 });
                gb[c] += g;
                gw[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(gi, xi)| *gi += g * xi);
            }
        }
        gw.iter_mut().zip(&w).for_each(|(g, wi)| *g += o.l2 * wi);
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        let adam = |param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]| {
            for i in 0..param.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
                v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
                param[i] -= o.learning_rate * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        };
        adam(&mut w, &gw, &mut mw, &mut vw);
        adam(&mut b, &gb, &mut mb, &mut vb);
    }
    (w, b, loss)
}

fn logits_into(w: &[f32], b: &[f32], row: &[f32], out: &mut [f32]) {
    let dim = row.len();
    for (c, o) in out.iter_mut().enumerate() {
        *o = dot(&w[c * dim..(c + 1) * dim], row) + b[c];
    }
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    v.iter_mut().for_each(|x| *x = (*x - max).exp());
    let s: f32 = v.iter().sum();
    v.iter_mut().for_each(|x| *x /= s);
}

/// Raw score of a row: log-odds that it is not benign, and the most likely attack class.
pub(crate) fn raw_score(w: &[f32], b: &[f32], row: &[f32]) -> WindowScore {
    let mut p = vec![0f32; b.len()];
    logits_into(w, b, row, &mut p);
    softmax(&mut p);
    let attack: f32 = p[1..].iter().sum();
    let class = (1..p.len())
        .max_by(|&i, &j| p[i].total_cmp(&p[j]))
        .unwrap_or(0);
    let raw = (attack.max(1e-9) / p[0].max(1e-9)).ln().clamp(-30.0, 30.0);
    WindowScore { raw, class }
}

/// Trains a head on `set` (pooled vectors): fits on the training split, calibrates the cut points
/// on the validation split's benign examples, and reports validation recall.
pub fn train_head(
    set: &EmbeddedSet,
    options: TrainOptions,
    source: String,
) -> Result<(Head, TrainReport), SemanticError> {
    if !(0.0..1.0).contains(&options.validation) || options.validation <= 0.0 {
        return Err(SemanticError::Data(format!(
            "validation share must be in (0, 1), got {}",
            options.validation
        )));
    }
    let counts = set.counts();
    if !counts.contains_key(BENIGN) || counts.len() < 2 {
        return Err(SemanticError::Data(format!(
            "training needs benign examples and at least one attack family; got {counts:?}"
        )));
    }
    let dim = set.dim();
    let (train, val) = stratified_split(&set.labels, options.validation, options.seed);
    let gather = |idx: &[usize]| -> (Vec<f32>, Vec<u16>) {
        (
            idx.iter()
                .flat_map(|&i| set.pooled[i * dim..(i + 1) * dim].iter().copied())
                .collect(),
            idx.iter().map(|&i| set.labels[i]).collect(),
        )
    };
    let (xt, yt) = gather(&train);
    let (w, b, loss) = fit(&xt, &yt, set.classes.len(), dim, &options);
    // Validation texts are scored like queries: every window, the maximum.
    let score_item = |i: usize| {
        set.windows
            .windows(i)
            .map(|row| raw_score(&w, &b, row).raw)
            .fold(f32::NEG_INFINITY, f32::max)
    };
    let val_benign: Vec<f32> = val
        .iter()
        .filter(|&&i| set.labels[i] == 0)
        .map(|&i| score_item(i))
        .collect();
    let val_attack: Vec<f32> = val
        .iter()
        .filter(|&&i| set.labels[i] != 0)
        .map(|&i| score_item(i))
        .collect();
    let calibration = Calibration::fit(&val_benign, options.flag_fpr, options.block_fpr)
        .ok_or_else(|| SemanticError::Data("no benign examples in the validation split".into()))?;
    let rate = |v: &[f32], cut: f32| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().filter(|x| **x >= cut).count() as f32 / v.len() as f32
        }
    };
    let report = TrainReport {
        train: train.len(),
        validation: val.len(),
        validation_benign: val_benign.len(),
        train_loss: loss,
        recall_block: rate(&val_attack, calibration.block_raw),
        recall_flag: rate(&val_attack, calibration.flag_raw),
        fpr_block: rate(&val_benign, calibration.block_raw),
    };
    let meta = HeadMeta {
        model: set.model.clone(),
        classes: set.classes.clone(),
        counts,
        built: today_utc(),
        source,
        options,
        report: report.clone(),
        calibration,
    };
    Ok((
        Head {
            meta,
            weight: w,
            bias: b,
            path: None,
        },
        report,
    ))
}

impl Head {
    pub fn meta(&self) -> &HeadMeta {
        &self.meta
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Weights `[classes * dim]` and biases `[classes]`.
    pub fn weights(&self) -> (&[f32], &[f32]) {
        (&self.weight, &self.bias)
    }

    /// Raw score (log-odds of "not benign") of one unit vector.
    pub fn raw(&self, v: &[f32]) -> f32 {
        raw_score(&self.weight, &self.bias, v).raw
    }

    pub fn save(&self, path: &Path) -> Result<(), SemanticError> {
        let c = self.meta.classes.len();
        let wshape = [c, self.meta.model.dim];
        let bshape = [c];
        let mut m = BTreeMap::new();
        m.insert("featherguard.kind".into(), KIND.into());
        model_metadata(&self.meta.model, &mut m);
        m.insert(
            "head.meta".into(),
            serde_json::to_string(&self.meta).expect("plain data serializes"),
        );
        write_safetensors(
            path,
            &[
                TensorData::from_slice("weight", Dtype::F32, &wshape, &self.weight),
                TensorData::from_slice("bias", Dtype::F32, &bshape, &self.bias),
            ],
            &m,
        )?;
        Ok(())
    }

    /// Loads a head (a few KB: the weights are copied out of the mapping).
    pub fn open(path: &Path) -> Result<Head, SemanticError> {
        let invalid = |reason: String| SemanticError::Invalid {
            path: path.to_owned(),
            reason,
            rebuild: REBUILD,
        };
        let (file, model, meta) = open_featherguard_file(
            path,
            KIND,
            "classifier head",
            "head.meta",
            REBUILD,
            |m: &HeadMeta| (&m.model, &m.classes[..]),
        )?;
        let c = meta.classes.len();
        let w = file.tensor("weight")?;
        let b = file.tensor("bias")?;
        if w.shape() != [c, model.dim] || b.shape() != [c] {
            return Err(invalid(format!(
                "weight {:?} / bias {:?} do not match {c} classes x dim {}",
                w.shape(),
                b.shape(),
                model.dim
            )));
        }
        let weight = w.as_slice::<f32>()?.to_vec();
        let bias = b.as_slice::<f32>()?.to_vec();
        // Inputs are unit vectors, so |logit| <= |w| * sqrt(dim) + |b|: with this bound no logit
        // can overflow to infinity, whose softmax would be NaN and pass every threshold.
        if weight
            .iter()
            .chain(&bias)
            .any(|x| !x.is_finite() || x.abs() > MAX_WEIGHT)
        {
            return Err(invalid(format!(
                "non-finite weights or weights beyond ±{MAX_WEIGHT}"
            )));
        }
        Ok(Head {
            meta,
            weight,
            bias,
            path: Some(path.to_owned()),
        })
    }
}

/// Largest weight or bias magnitude a head file may hold (trained heads stay below ~100).
const MAX_WEIGHT: f32 = 1e6;

/// Flags texts the head scores as attacks; the finding names the most likely attack family.
pub struct HeadGuard {
    name: String,
    embedder: Arc<dyn Embedder>,
    head: Arc<Head>,
}

impl HeadGuard {
    /// A guard named `classifier`.
    pub fn new(embedder: Arc<dyn Embedder>, head: Arc<Head>) -> HeadGuard {
        HeadGuard {
            name: "classifier".into(),
            embedder,
            head,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> HeadGuard {
        self.name = name.into();
        self
    }
}

impl Guard for HeadGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        scan_one(self, input)
    }

    fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Result<Vec<Finding>, GuardError>> {
        let meta = self.head.meta();
        scan_with(
            &self.name,
            self.embedder.as_ref(),
            inputs,
            Scoring {
                what: "classifier head",
                model: &meta.model,
                classes: &meta.classes,
                calibration: &meta.calibration,
            },
            |w| Ok(raw_score(&self.head.weight, &self.head.bias, w)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::tests::toy_set;

    #[test]
    fn weights_that_could_overflow_a_logit_are_refused() {
        let opts = TrainOptions {
            validation: 0.34,
            ..Default::default()
        };
        let (mut head, _) = train_head(&toy_set(), opts, "toy".into()).unwrap();
        head.weight[0] = 1e30;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.safetensors");
        head.save(&p).unwrap();
        let err = Head::open(&p).unwrap_err().to_string();
        assert!(
            err.contains("huge.safetensors") && err.contains("weights"),
            "{err}"
        );
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let labels: Vec<u16> = (0..100).map(|i| (i % 4) as u16).collect();
        let (t, v) = stratified_split(&labels, 0.2, 7);
        assert_eq!(t.len() + v.len(), 100);
        assert_eq!(v.len(), 20);
        assert_eq!(stratified_split(&labels, 0.2, 7), (t, v));
    }

    #[test]
    fn learns_a_separable_toy_problem_and_roundtrips() {
        let set = toy_set();
        let opts = TrainOptions {
            validation: 0.34,
            ..Default::default()
        };
        let (head, report) = train_head(&set, opts, "toy".into()).unwrap();
        assert!(head.raw(&[0.0, 1.0]) > head.raw(&[1.0, 0.0]));
        assert!(report.validation >= 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.safetensors");
        head.save(&p).unwrap();
        let back = Head::open(&p).unwrap();
        assert_eq!(back.meta(), head.meta());
        assert_eq!(back.raw(&[0.6, 0.8]), head.raw(&[0.6, 0.8]));
        assert!(crate::Bank::open(&p).is_err(), "a head is not a bank");
    }
}
