//! Sharing one embedding pass between guards that scan the same texts.

use std::sync::{Arc, Mutex};

use featherguard_core::{EmbedError, Embedder, Embeddings, LoadStats, ModelId};
use sha2::{Digest, Sha256};

/// Wraps an embedder and remembers its last batch, so the similarity, classifier and topic guards
/// of one firewall embed each input once. The key is a sha256 of the texts (lengths included), so a
/// different batch can never be answered from the memo.
pub struct LastBatchMemo {
    inner: Arc<dyn Embedder>,
    last: Mutex<Option<([u8; 32], Arc<Embeddings>)>>,
}

impl LastBatchMemo {
    pub fn new(inner: Arc<dyn Embedder>) -> LastBatchMemo {
        LastBatchMemo {
            inner,
            last: Mutex::new(None),
        }
    }

    fn key(texts: &[&str]) -> [u8; 32] {
        let mut h = Sha256::new();
        for t in texts {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        h.finalize().into()
    }
}

impl Embedder for LastBatchMemo {
    fn model(&self) -> &ModelId {
        self.inner.model()
    }

    fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        let key = Self::key(texts);
        if let Some((k, e)) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *k == key {
                return Ok(Embeddings::clone(e));
            }
        }
        let e = self.inner.embed(texts)?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, Arc::new(e.clone())));
        Ok(e)
    }

    fn load_runtime(&self) -> Result<(), EmbedError> {
        self.inner.load_runtime()
    }

    fn load(&self) -> Result<(), EmbedError> {
        self.inner.load()
    }

    fn unload(&self) -> bool {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.inner.unload()
    }

    fn load_stats(&self) -> Option<LoadStats> {
        self.inner.load_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize, ModelId);

    impl Embedder for Counting {
        fn model(&self) -> &ModelId {
            &self.1
        }
        fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let data = texts.iter().flat_map(|t| [t.len() as f32, 1.0]).collect();
            Embeddings::new(
                2,
                data,
                (0..texts.len()).map(|i| i..i + 1).collect(),
                vec![0; texts.len()],
            )
        }
    }

    #[test]
    fn same_batch_is_embedded_once() {
        let inner = Arc::new(Counting(
            AtomicUsize::new(0),
            ModelId {
                name: "c".into(),
                sha256: "0".into(),
                dim: 2,
            },
        ));
        let memo = LastBatchMemo::new(inner.clone());
        let a = memo.embed(&["ab", "c"]).unwrap();
        assert_eq!(memo.embed(&["ab", "c"]).unwrap(), a);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        memo.embed(&["a", "bc"]).unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
    }
}
