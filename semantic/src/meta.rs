//! Embedded example sets, progress reporting and the metadata shared by banks and heads.

use std::collections::BTreeMap;
use std::path::Path;

use featherguard_core::{Embedder, Embeddings, ModelId};

use crate::{Example, SemanticError};

/// Receives `(done, total)` as examples are embedded.
pub trait Progress {
    fn update(&mut self, done: usize, total: usize);
}

impl<F: FnMut(usize, usize)> Progress for F {
    fn update(&mut self, done: usize, total: usize) {
        self(done, total)
    }
}

/// Examples after embedding: every window of every example plus one pooled vector per example.
#[derive(Debug, Clone)]
pub struct EmbeddedSet {
    pub model: ModelId,
    /// Class names; index 0 is always [`crate::BENIGN`].
    pub classes: Vec<String>,
    /// Class index of each example.
    pub labels: Vec<u16>,
    /// Per example: its windows (for scoring it as a query).
    pub windows: Embeddings,
    /// Per example: the unit-length mean of its windows, `len * dim` values (for exemplars).
    pub pooled: Vec<f32>,
}

impl EmbeddedSet {
    /// Embeds `examples` in batches of `batch`, reporting progress.
    pub fn embed(
        embedder: &dyn Embedder,
        examples: &[Example],
        batch: usize,
        progress: &mut dyn Progress,
    ) -> Result<EmbeddedSet, SemanticError> {
        let mut classes = vec![crate::BENIGN.to_string()];
        let mut labels = Vec::with_capacity(examples.len());
        for e in examples {
            let idx = match classes.iter().position(|c| *c == e.class) {
                Some(i) => i,
                None => {
                    classes.push(e.class.clone());
                    classes.len() - 1
                }
            };
            labels.push(
                u16::try_from(idx)
                    .map_err(|_| SemanticError::Data("more than 65535 classes".into()))?,
            );
        }
        let mut data = Vec::new();
        let mut spans = Vec::with_capacity(examples.len());
        let mut skipped = Vec::with_capacity(examples.len());
        let mut dim = 0;
        let mut rows = 0;
        for (n, chunk) in examples.chunks(batch.max(1)).enumerate() {
            let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
            let emb = embedder.embed(&texts)?;
            dim = emb.dim();
            for i in 0..emb.len() {
                let count = emb.windows(i).len();
                spans.push(rows..rows + count);
                rows += count;
                skipped.push(emb.skipped_windows(i));
            }
            data.extend_from_slice(emb.data());
            progress.update(
                (n * batch.max(1) + chunk.len()).min(examples.len()),
                examples.len(),
            );
        }
        let windows = Embeddings::new(dim.max(1), data, spans, skipped)?;
        let mut pooled = Vec::with_capacity(examples.len() * dim);
        for i in 0..windows.len() {
            pooled.extend(windows.pooled(i));
        }
        Ok(EmbeddedSet {
            model: embedder.model().clone(),
            classes,
            labels,
            windows,
            pooled,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.windows.dim()
    }

    /// Examples per class name.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for &l in &self.labels {
            *m.entry(self.classes[l as usize].clone()).or_insert(0) += 1;
        }
        m
    }

    /// The subset at `idx` (pooled vectors and labels; windows are re-gathered).
    pub fn subset(&self, idx: &[usize]) -> EmbeddedSet {
        let d = self.dim();
        let mut data = Vec::new();
        let mut spans = Vec::with_capacity(idx.len());
        let mut skipped = Vec::with_capacity(idx.len());
        let mut pooled = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            let start = data.len() / d;
            let mut count = 0;
            for w in self.windows.windows(i) {
                data.extend_from_slice(w);
                count += 1;
            }
            spans.push(start..start + count);
            skipped.push(self.windows.skipped_windows(i));
            pooled.extend_from_slice(&self.pooled[i * d..(i + 1) * d]);
        }
        EmbeddedSet {
            model: self.model.clone(),
            classes: self.classes.clone(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            windows: Embeddings::new(d, data, spans, skipped).expect("gathered consistently"),
            pooled,
        }
    }
}

/// Metadata keys common to banks and heads.
pub(crate) fn model_metadata(model: &ModelId, m: &mut BTreeMap<String, String>) {
    m.insert("model.name".into(), model.name.clone());
    m.insert("model.sha256".into(), model.sha256.clone());
    m.insert("model.dim".into(), model.dim.to_string());
}

/// Opens a bank or head file: checks its `featherguard.kind`, reads the model id and the JSON metadata
/// under `meta_key`, and checks that metadata agrees with the model id and lists `benign` first.
/// `what` names the file kind in messages ("bank", "classifier head").
pub(crate) fn open_featherguard_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &str,
    what: &str,
    meta_key: &str,
    rebuild: &'static str,
    model_and_classes: impl Fn(&T) -> (&ModelId, &[String]),
) -> Result<(featherguard_loader::SafeTensorsFile, ModelId, T), SemanticError> {
    let invalid = |reason: String| SemanticError::Invalid {
        path: path.to_owned(),
        reason,
        rebuild,
    };
    let file = featherguard_loader::SafeTensorsFile::open(path)?;
    let md = file.header().metadata().clone();
    if md.get("featherguard.kind").map(String::as_str) != Some(kind) {
        return Err(invalid(format!(
            "not a featherguard {what} (featherguard.kind is not {kind})"
        )));
    }
    let model = read_model(path, &md, rebuild)?;
    let meta: T = serde_json::from_str(md.get(meta_key).map_or("", String::as_str))
        .map_err(|e| invalid(format!("{meta_key}: {e}")))?;
    let (meta_model, classes) = model_and_classes(&meta);
    if *meta_model != model || classes.first().map(String::as_str) != Some(crate::BENIGN) {
        return Err(invalid("inconsistent metadata".into()));
    }
    Ok((file, model, meta))
}

pub(crate) fn read_model(
    path: &Path,
    m: &BTreeMap<String, String>,
    rebuild: &'static str,
) -> Result<ModelId, SemanticError> {
    let get = |k: &str| {
        m.get(k).cloned().ok_or_else(|| SemanticError::Invalid {
            path: path.to_owned(),
            reason: format!("metadata has no `{k}`"),
            rebuild,
        })
    };
    Ok(ModelId {
        name: get("model.name")?,
        sha256: get("model.sha256")?,
        dim: get("model.dim")?
            .parse()
            .map_err(|_| SemanticError::Invalid {
                path: path.to_owned(),
                reason: "model.dim is not a number".into(),
                rebuild,
            })?,
    })
}

/// Today's UTC date as `YYYY-MM-DD` (civil-from-days, no time-zone database needed).
pub(crate) fn today_utc() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_has_iso_shape() {
        let d = super::today_utc();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
