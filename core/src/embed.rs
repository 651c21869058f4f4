//! The `Embedder` trait: texts in, unit-length vectors out. Each ML backend (ONNX Runtime, libtorch)
//! implements it once; the similarity, classifier and topic guards are written over it.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::guard::GuardError;

/// Which model produced a vector: vectors of different models (or weights) are not comparable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelId {
    /// Human name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// Lowercase hex sha256 of the weights file the vectors come from.
    pub sha256: String,
    /// Vector length (number of f32 components).
    pub dim: usize,
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(f, "{} (dim {}, sha256 {short}…)", self.name, self.dim)
    }
}

/// Why an embedder could not embed; converted to a [`GuardError`] by the guards that use it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The runtime library, model or tokenizer is missing or unusable; `fix` says what to run.
    #[error("{what} is not available: {reason}; fix: {fix}")]
    Unavailable {
        what: String,
        reason: String,
        fix: String,
    },
    /// The input exceeds a configured bound (e.g. more windows than allowed and overflow = reject).
    #[error("input rejected: {0}")]
    InputRejected(String),
    /// The backend failed while running.
    #[error("{0}")]
    Backend(String),
}

impl EmbedError {
    /// The same failure, attributed to a guard.
    pub fn into_guard_error(self, guard: &str) -> GuardError {
        let guard = guard.to_string();
        match self {
            EmbedError::Unavailable { what, reason, fix } => GuardError::Unavailable {
                guard,
                what,
                reason,
                fix,
            },
            EmbedError::InputRejected(reason) => GuardError::InputRejected { guard, reason },
            EmbedError::Backend(message) => GuardError::Backend { guard, message },
        }
    }
}

/// Embeddings of a batch of texts. A text longer than the model's window has one row per window;
/// every row has unit L2 norm (an all-padding window is the zero vector, never NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dim: usize,
    /// `rows * dim` values, row-major.
    data: Vec<f32>,
    /// For text `i`, the rows of its windows.
    spans: Vec<Range<usize>>,
    /// For text `i`, how many windows were left out to respect the max-windows bound.
    skipped: Vec<usize>,
}

impl Embeddings {
    /// Builds a batch, checking that `data` holds exactly the rows `spans` cover, in order.
    pub fn new(
        dim: usize,
        data: Vec<f32>,
        spans: Vec<Range<usize>>,
        skipped: Vec<usize>,
    ) -> Result<Embeddings, EmbedError> {
        let rows = spans.last().map_or(0, |r| r.end);
        let contiguous = spans.windows(2).all(|w| w[0].end == w[1].start)
            && spans.first().is_none_or(|r| r.start == 0);
        if dim == 0 || data.len() != rows * dim || !contiguous || skipped.len() != spans.len() {
            return Err(EmbedError::Backend(format!(
                "inconsistent embedding batch: dim {dim}, {} values, {} texts, {rows} rows",
                data.len(),
                spans.len()
            )));
        }
        Ok(Embeddings {
            dim,
            data,
            spans,
            skipped,
        })
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Total number of window rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Every row, row-major (`rows() * dim()` values).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The window vectors of text `i` (at least one for any text, empty or not).
    pub fn windows(&self, i: usize) -> impl ExactSizeIterator<Item = &[f32]> {
        let r = self.spans[i].clone();
        self.data[r.start * self.dim..r.end * self.dim].chunks_exact(self.dim)
    }

    /// Windows of text `i` left out because the text had more than the configured maximum.
    pub fn skipped_windows(&self, i: usize) -> usize {
        self.skipped[i]
    }

    /// One vector for text `i`: the L2-normalized mean of its windows.
    pub fn pooled(&self, i: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.dim];
        for w in self.windows(i) {
            out.iter_mut().zip(w).for_each(|(o, v)| *o += v);
        }
        l2_normalize(&mut out);
        out
    }
}

/// Scales `v` to unit L2 norm in place; a zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 1e-12 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// What loading a lazily loaded model cost, for stats and memory governance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadStats {
    /// Whether the model is loaded now.
    pub loaded: bool,
    /// When the current (or last) load finished.
    pub loaded_at: Option<SystemTime>,
    /// Wall time of the last load.
    #[serde(with = "millis")]
    pub load_time: Duration,
    /// Process RSS after the last load minus before it, in bytes (may be negative).
    pub rss_delta_bytes: i64,
    /// How many times the model was loaded (reloads after unload count).
    pub loads: u64,
    /// Execution provider actually running (e.g. `cpu`, `cuda`).
    pub provider: String,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        f64::deserialize(d).map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3))
    }
}

/// Turns texts into unit-length vectors. Implementations load their model lazily and are shared
/// across threads.
pub trait Embedder: Send + Sync {
    /// The model (and its weights' digest) the vectors come from.
    fn model(&self) -> &ModelId;

    /// Embeds every text; long texts yield several overlapping windows (see [`Embeddings`]).
    fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError>;

    /// Loads only the backend's runtime library (ONNX Runtime's shared object), not the model: a
    /// separate step so a memory profile can tell the runtime's cost from the session's. Backends
    /// whose runtime is linked in (libtorch) have nothing to do.
    fn load_runtime(&self) -> Result<(), EmbedError> {
        Ok(())
    }

    /// Loads the model now instead of on first use.
    fn load(&self) -> Result<(), EmbedError> {
        Ok(())
    }

    /// Releases the model's memory; the next call loads it again. Returns whether anything was
    /// loaded.
    fn unload(&self) -> bool {
        false
    }

    /// Cost of the last load, when the implementation loads lazily.
    fn load_stats(&self) -> Option<LoadStats> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_is_unit_mean_of_windows() {
        let e = Embeddings::new(
            2,
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            vec![0..2, 2..3],
            vec![0, 0],
        )
        .unwrap();
        let p = e.pooled(0);
        assert!((p[0] - p[1]).abs() < 1e-6 && (p[0] * p[0] + p[1] * p[1] - 1.0).abs() < 1e-6);
        assert_eq!(e.windows(1).len(), 1);
    }

    #[test]
    fn inconsistent_batches_are_errors() {
        assert!(
            Embeddings::new(2, vec![1.0; 3], vec![Range { start: 0, end: 1 }], vec![0]).is_err()
        );
        assert!(Embeddings::new(2, vec![1.0; 4], vec![0..1, 0..1], vec![0, 0]).is_err());
        assert!(Embeddings::new(0, vec![], vec![], vec![]).is_err());
    }

    #[test]
    fn zero_vector_stays_finite() {
        let mut v = vec![0.0f32; 4];
        l2_normalize(&mut v);
        assert!(v.iter().all(|x| *x == 0.0));
    }
}
