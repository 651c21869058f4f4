//! Exemplar banks: labeled embeddings in a safetensors file, memory-mapped when loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use featherguard_core::ModelId;
use featherguard_loader::{write_safetensors, Dtype, SafeTensorsFile, TensorData};
use serde::{Deserialize, Serialize};

use crate::knn::KnnScorer;
use crate::meta::{model_metadata, open_featherguard_file, today_utc};
use crate::{Calibration, EmbeddedSet, SemanticError, BENIGN};

const REBUILD: &str = "bank build --corpus FILE.jsonl --out BANK.safetensors";
const KIND: &str = "featherguard.bank.v1";

/// What a bank was built from and how its scores are calibrated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankMeta {
    pub model: ModelId,
    /// Class names; index 0 is [`BENIGN`].
    pub classes: Vec<String>,
    /// Exemplars per class.
    pub counts: BTreeMap<String, usize>,
    /// Build date, `YYYY-MM-DD` (UTC).
    pub built: String,
    /// What the exemplars came from (file name and sha256, or a description).
    pub source: String,
    /// Neighbours per class used for scoring.
    pub k: usize,
    /// Raw-score cut points, fitted leave-one-out on the bank's benign exemplars.
    pub calibration: Calibration,
}

enum Vectors {
    Mapped(SafeTensorsFile),
    Owned(Vec<f32>),
}

/// Unit-length exemplar vectors with class labels. Loaded banks stay memory-mapped.
pub struct Bank {
    meta: BankMeta,
    vectors: Vectors,
    labels: Vec<u16>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("meta", &self.meta)
            .field("rows", &self.labels.len())
            .finish()
    }
}

/// Builds a bank from an embedded set: one pooled vector per example; calibration by
/// leave-one-out scores of the benign exemplars.
pub fn build_bank(
    set: &EmbeddedSet,
    k: usize,
    source: String,
    flag_fpr: f32,
    block_fpr: f32,
) -> Result<Bank, SemanticError> {
    let counts = set.counts();
    if !counts.contains_key(BENIGN) || counts.len() < 2 {
        return Err(SemanticError::Data(format!(
            "a bank needs benign examples and at least one attack family; got {counts:?}"
        )));
    }
    let scorer = KnnScorer { k };
    let d = set.dim();
    let benign_raw: Vec<f32> = (0..set.len())
        .filter(|&i| set.labels[i] == 0)
        .map(|i| {
            scorer
                .score(
                    &set.pooled,
                    &set.labels,
                    set.classes.len(),
                    &set.pooled[i * d..(i + 1) * d],
                    |r| r == i,
                )
                .raw
        })
        .collect();
    let calibration = Calibration::fit(&benign_raw, flag_fpr, block_fpr)
        .ok_or_else(|| SemanticError::Data("no benign examples to calibrate on".into()))?;
    Ok(Bank {
        meta: BankMeta {
            model: set.model.clone(),
            classes: set.classes.clone(),
            counts,
            built: today_utc(),
            source,
            k,
            calibration,
        },
        vectors: Vectors::Owned(set.pooled.clone()),
        labels: set.labels.clone(),
        path: None,
    })
}

impl Bank {
    pub fn meta(&self) -> &BankMeta {
        &self.meta
    }

    /// Number of exemplars.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The exemplar vectors, `len * dim` values (borrowed from the mapping for loaded banks).
    pub fn vectors(&self) -> Result<&[f32], SemanticError> {
        match &self.vectors {
            Vectors::Owned(v) => Ok(v),
            Vectors::Mapped(f) => Ok(f.tensor("embeddings")?.as_slice::<f32>()?),
        }
    }

    /// Writes the bank (atomically) as safetensors with its metadata.
    pub fn save(&self, path: &Path) -> Result<(), SemanticError> {
        let v = self.vectors()?;
        let dim = self.meta.model.dim;
        let shape = [self.len(), dim];
        let lshape = [self.len()];
        let mut m = BTreeMap::new();
        m.insert("featherguard.kind".into(), KIND.into());
        model_metadata(&self.meta.model, &mut m);
        m.insert(
            "bank.meta".into(),
            serde_json::to_string(&self.meta).expect("plain data serializes"),
        );
        write_safetensors(
            path,
            &[
                TensorData::from_slice("embeddings", Dtype::F32, &shape, v),
                TensorData::from_slice("labels", Dtype::U16, &lshape, &self.labels),
            ],
            &m,
        )?;
        Ok(())
    }

    /// Maps a bank file and checks its tensors against its metadata.
    pub fn open(path: &Path) -> Result<Bank, SemanticError> {
        let invalid = |reason: String| SemanticError::Invalid {
            path: path.to_owned(),
            reason,
            rebuild: REBUILD,
        };
        let (file, model, meta) =
            open_featherguard_file(path, KIND, "bank", "bank.meta", REBUILD, |m: &BankMeta| {
                (&m.model, &m.classes[..])
            })?;
        let emb = file.tensor("embeddings")?;
        let labels = file.tensor("labels")?;
        if emb.shape()
            != [
                labels.shape().first().copied().unwrap_or(usize::MAX),
                model.dim,
            ]
        {
            return Err(invalid(format!(
                "embeddings {:?} and labels {:?} disagree with dim {}",
                emb.shape(),
                labels.shape(),
                model.dim
            )));
        }
        if model.dim == 0 {
            return Err(invalid("model dim is 0".into()));
        }
        // A non-finite exemplar or cut point would turn every score it touches into NaN, which
        // no threshold catches: a scan would silently pass.
        if let Some(row) = emb
            .as_slice::<f32>()?
            .chunks_exact(model.dim)
            .position(|v| v.iter().any(|x| !x.is_finite()))
        {
            return Err(invalid(format!(
                "exemplar {row} has a NaN or infinite value"
            )));
        }
        let c = &meta.calibration;
        if c.flag_raw.is_nan() || c.block_raw.is_nan() {
            return Err(invalid("a calibration cut point is NaN".into()));
        }
        let labels: Vec<u16> = labels.as_slice::<u16>()?.to_vec();
        if let Some(bad) = labels.iter().find(|l| **l as usize >= meta.classes.len()) {
            return Err(invalid(format!("label {bad} has no class name")));
        }
        Ok(Bank {
            meta,
            vectors: Vectors::Mapped(file),
            labels,
            path: Some(path.to_owned()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use featherguard_core::Embeddings;

    /// A toy set in 2-d: benign along x, jailbreak along y.
    pub(crate) fn toy_set() -> EmbeddedSet {
        let pts: Vec<(f32, f32, u16)> = vec![
            (1.0, 0.0, 0),
            (0.95, 0.31, 0),
            (0.95, -0.31, 0),
            (0.0, 1.0, 1),
            (0.31, 0.95, 1),
            (-0.31, 0.95, 1),
        ];
        let data: Vec<f32> = pts.iter().flat_map(|p| [p.0, p.1]).collect();
        let spans = (0..pts.len()).map(|i| i..i + 1).collect();
        EmbeddedSet {
            model: ModelId {
                name: "toy".into(),
                sha256: "00".into(),
                dim: 2,
            },
            classes: vec![BENIGN.into(), "jailbreak".into()],
            labels: pts.iter().map(|p| p.2).collect(),
            windows: Embeddings::new(2, data.clone(), spans, vec![0; pts.len()]).unwrap(),
            pooled: data,
        }
    }

    #[test]
    fn save_open_roundtrip_and_validation() {
        let bank = build_bank(&toy_set(), 2, "toy".into(), 0.05, 0.01).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.safetensors");
        bank.save(&p).unwrap();
        let back = Bank::open(&p).unwrap();
        assert_eq!(back.meta(), bank.meta());
        assert_eq!(back.vectors().unwrap(), bank.vectors().unwrap());
        std::fs::write(&p, b"garbage").unwrap();
        let err = Bank::open(&p).unwrap_err().to_string();
        assert!(err.contains("b.safetensors"), "{err}");
    }

    #[test]
    fn non_finite_exemplars_are_refused_by_name() {
        let mut bank = build_bank(&toy_set(), 2, "toy".into(), 0.05, 0.01).unwrap();
        if let Vectors::Owned(v) = &mut bank.vectors {
            v[3] = f32::NAN;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nan.safetensors");
        bank.save(&p).unwrap();
        let err = Bank::open(&p).unwrap_err().to_string();
        assert!(
            err.contains("nan.safetensors") && err.contains("exemplar 1"),
            "{err}"
        );
    }

    #[test]
    fn needs_both_classes() {
        let mut s = toy_set();
        s.labels.iter_mut().for_each(|l| *l = 1);
        assert!(build_bank(&s, 2, "x".into(), 0.05, 0.01).is_err());
    }
}
