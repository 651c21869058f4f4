//! One embedding model shared by several heavy guards that load and unload independently.
//!
//! Each ML guard sits in its own firewall slot (so each reports its own load, idle time and state),
//! but they all read vectors from one model, embedded once per input through [`LastBatchMemo`].
//! The model must stay loaded while any of those guards is loaded and be released when the last
//! one unloads, or an idle unload would free the guards' small state and keep the ~80 MB model.
//! A [`ModelLease`] held by every loaded guard gives exactly that.
//!
//! While loaded, the model runs on one [`InferenceThread`] owned by the shared model: started by
//! the first lease, joined when the last one goes, so the thread-local buffers and allocator
//! arenas that running a model accumulates are not spread over (and kept by) every worker thread
//! of the host.

use std::sync::{Arc, Mutex};

use featherguard_core::{EmbedError, Embedder, Finding, Guard, GuardError, Input};

use crate::{BatchLimits, InferenceThread, LastBatchMemo};

/// An embedder run by an [`InferenceThread`] behind a [`LastBatchMemo`], loaded while at least
/// one lease is alive.
pub struct SharedModel {
    embedder: Arc<dyn Embedder>,
    thread: Arc<InferenceThread>,
    /// Live leases. Held while loading and unloading, so a lease taken during an unload waits for
    /// it and then loads again instead of finding a half-released model.
    leases: Mutex<usize>,
}

impl std::fmt::Debug for SharedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedModel")
            .field("model", self.embedder.model())
            .field("leases", &*self.count())
            .finish()
    }
}

impl SharedModel {
    /// Shares `embedder` (run on an [`InferenceThread`] with the default [`BatchLimits`], and
    /// wrapped in a [`LastBatchMemo`] so guards scanning the same inputs embed them once). Nothing
    /// is loaded until the first [`SharedModel::lease`].
    pub fn new(embedder: Arc<dyn Embedder>) -> Arc<SharedModel> {
        SharedModel::with_limits(embedder, BatchLimits::default())
    }

    /// As [`SharedModel::new`], with explicit limits on how much queued work one model call merges.
    pub fn with_limits(embedder: Arc<dyn Embedder>, limits: BatchLimits) -> Arc<SharedModel> {
        let thread = Arc::new(InferenceThread::new(embedder, limits));
        Arc::new(SharedModel {
            embedder: Arc::new(LastBatchMemo::new(thread.clone())),
            thread,
            leases: Mutex::new(0),
        })
    }

    /// The memoized embedder the guards call.
    pub fn embedder(&self) -> Arc<dyn Embedder> {
        self.embedder.clone()
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        // The counter stays consistent across a panic: it is only changed after the call that
        // could panic has returned.
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Load the model if needed and keep it loaded until the returned lease is dropped.
    pub fn lease(self: &Arc<Self>) -> Result<ModelLease, EmbedError> {
        let mut n = self.count();
        self.embedder.load()?;
        *n += 1;
        Ok(ModelLease {
            model: self.clone(),
        })
    }

    /// The thread the model runs on while leased (running state, requests and merged calls).
    pub fn inference(&self) -> &InferenceThread {
        &self.thread
    }

    /// Live leases (loaded guards using the model).
    pub fn leases(&self) -> usize {
        *self.count()
    }
}

/// Keeps a [`SharedModel`] loaded; dropping the last one joins the inference thread, unloads the
/// model and returns its memory.
pub struct ModelLease {
    model: Arc<SharedModel>,
}

impl Drop for ModelLease {
    fn drop(&mut self) {
        let mut n = self.model.count();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.model.embedder.unload();
        }
    }
}

/// A guard built over a [`SharedModel`], holding a lease for as long as it lives: the form a slot
/// loader returns, so unloading the slot releases the model once no other guard uses it.
pub struct LeasedGuard {
    guard: Arc<dyn Guard>,
    _lease: ModelLease,
}

impl LeasedGuard {
    pub fn new(guard: Arc<dyn Guard>, lease: ModelLease) -> LeasedGuard {
        LeasedGuard {
            guard,
            _lease: lease,
        }
    }
}

impl Guard for LeasedGuard {
    fn name(&self) -> &str {
        self.guard.name()
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        self.guard.scan(input)
    }

    fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Result<Vec<Finding>, GuardError>> {
        self.guard.scan_batch(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use featherguard_core::{Embeddings, ModelId};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        loads: AtomicUsize,
        unloads: AtomicUsize,
    }

    impl Embedder for Counting {
        fn model(&self) -> &ModelId {
            static ID: std::sync::OnceLock<ModelId> = std::sync::OnceLock::new();
            ID.get_or_init(|| ModelId {
                name: "c".into(),
                sha256: "0".into(),
                dim: 1,
            })
        }
        fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
            Embeddings::new(
                1,
                vec![1.0; texts.len()],
                (0..texts.len()).map(|i| i..i + 1).collect(),
                vec![0; texts.len()],
            )
        }
        fn load(&self) -> Result<(), EmbedError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn unload(&self) -> bool {
            self.unloads.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    #[test]
    fn model_unloads_with_the_last_lease_only() {
        let inner = Arc::new(Counting::default());
        let shared = SharedModel::new(inner.clone());
        assert_eq!(inner.loads.load(Ordering::SeqCst), 0, "lazy until leased");
        let a = shared.lease().unwrap();
        let b = shared.lease().unwrap();
        assert_eq!(shared.leases(), 2);
        drop(a);
        assert_eq!(inner.unloads.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(inner.unloads.load(Ordering::SeqCst), 1);
        let _c = shared.lease().unwrap();
        assert_eq!(shared.leases(), 1);
    }
}
