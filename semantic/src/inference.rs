//! One dedicated thread runs every model call while the model is loaded.
//!
//! Why a thread of its own: a server calls the guards from whichever worker thread picked up the
//! request. Every thread that ever ran the model keeps the runtime's thread-local scratch buffers
//! (ONNX Runtime's MLAS packing buffers, libtorch's per-thread state) and, on glibc, its own malloc
//! arena, for as long as the thread lives, and worker threads outlive an idle unload. Measured with
//! `scripts/server/load_ml.sh`: 64 in-flight workers held ~20 MiB more after the unload than 2 did.
//! Here the model is loaded, run and unloaded by one thread that is started on load and joined on
//! unload, so what it accumulated goes away with it. Callers send their texts through a bounded
//! channel and wait for the answer; requests that queued up while the model was busy are embedded
//! together in one call (micro-batching), which the backend then splits into its own token-bounded
//! chunks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use featherguard_core::{EmbedError, Embedder, Embeddings, LoadStats, ModelId};

/// How much queued work the inference thread merges into one model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most texts in one merged call (a single request with more is never split).
    pub max_texts: usize,
    /// Most text bytes in one merged call: bounds the latency a merged call adds to the first
    /// request in it. The backend's own token budget still bounds each model run.
    pub max_bytes: usize,
    /// Requests that can wait in the channel; senders block beyond it (the server's admission
    /// control bounds them anyway).
    pub queue: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_texts: 32,
            max_bytes: 32 * 1024,
            queue: 256,
        }
    }
}

/// The answer to one request.
type Reply = Result<Embeddings, EmbedError>;

enum Msg {
    Embed {
        texts: Vec<String>,
        reply: SyncSender<Reply>,
    },
    Stop,
}

/// The running thread: its inbox and handle.
struct Running {
    inbox: SyncSender<Msg>,
    handle: JoinHandle<()>,
}

/// An [`Embedder`] whose model lives on one dedicated thread from [`Embedder::load`] to
/// [`Embedder::unload`]. Calls made while it is not loaded run on the caller's thread, as the
/// wrapped embedder would (a bank build or a one-off `embed` never needs the thread).
pub struct InferenceThread {
    inner: Arc<dyn Embedder>,
    limits: BatchLimits,
    running: Mutex<Option<Running>>,
    counts: Arc<Counts>,
}

/// Requests answered by the thread and model calls made for them (fewer calls than requests:
/// requests were merged).
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    calls: AtomicU64,
}

impl std::fmt::Debug for InferenceThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceThread")
            .field("model", self.inner.model())
            .field("limits", &self.limits)
            .field("running", &self.is_running())
            .finish()
    }
}

fn stopped(why: &str) -> EmbedError {
    EmbedError::Backend(format!("the inference thread {why}"))
}

impl InferenceThread {
    pub fn new(inner: Arc<dyn Embedder>, limits: BatchLimits) -> InferenceThread {
        InferenceThread {
            inner,
            limits,
            running: Mutex::new(None),
            counts: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        // Only replaced whole; a panic elsewhere cannot leave it half-written.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(requests, model calls)` served by the inference thread so far; fewer calls than requests
    /// means concurrent requests were embedded together.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.requests.load(Ordering::Relaxed),
            self.counts.calls.load(Ordering::Relaxed),
        )
    }

    /// Whether the thread is running (between a successful load and the unload).
    pub fn is_running(&self) -> bool {
        self.lock().is_some()
    }

    /// Starts the thread and loads the model on it; returns once the load has finished.
    fn start(&self, running: &mut Option<Running>) -> Result<(), EmbedError> {
        if running.is_some() {
            return Ok(());
        }
        let (inbox, rx) = mpsc::sync_channel(self.limits.queue.max(1));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let inner = self.inner.clone();
        let limits = self.limits;
        let counts = self.counts.clone();
        let handle = std::thread::Builder::new()
            .name("fg-inference".into())
            .spawn(move || {
                let loaded = catch(|| inner.load());
                let ok = loaded.is_ok();
                let _ = ready_tx.send(loaded);
                if ok {
                    serve(&*inner, &rx, limits, &counts);
                }
            })
            .map_err(|e| stopped(&format!("could not be started: {e}")))?;
        let loaded = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(stopped("ended while loading the model")));
        match loaded {
            Ok(()) => {
                *running = Some(Running { inbox, handle });
                Ok(())
            }
            Err(e) => {
                let _ = handle.join();
                Err(e)
            }
        }
    }

    /// The inbox of the running thread, `None` when not loaded.
    fn inbox(&self) -> Option<SyncSender<Msg>> {
        self.lock().as_ref().map(|r| r.inbox.clone())
    }
}

/// Runs `f`, turning a panic into a typed error so the thread keeps serving.
fn catch<T>(f: impl FnOnce() -> Result<T, EmbedError>) -> Result<T, EmbedError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(EmbedError::Backend("the embedding model panicked".into())))
}

/// The thread's loop: take a request, merge whatever else is already queued (within `limits`),
/// embed, answer each request with its own rows. Ends on `Stop` or when every sender is gone.
fn serve(inner: &dyn Embedder, rx: &Receiver<Msg>, limits: BatchLimits, counts: &Counts) {
    loop {
        let (texts, reply) = match rx.recv() {
            Ok(Msg::Embed { texts, reply }) => (texts, reply),
            Ok(Msg::Stop) | Err(_) => return,
        };
        let mut bytes: usize = texts.iter().map(String::len).sum();
        let mut count = texts.len();
        let mut batch = vec![(texts, reply)];
        let mut stop = false;
        while count < limits.max_texts && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(Msg::Embed { texts, reply }) => {
                    count += texts.len();
                    bytes += texts.iter().map(String::len).sum::<usize>();
                    batch.push((texts, reply));
                }
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        counts
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let calls = embed_batch(inner, batch);
        counts.calls.fetch_add(calls, Ordering::Relaxed);
        if stop {
            return;
        }
    }
}

/// Embeds several requests in one call and hands each its rows. A merged call that fails is
/// retried request by request, so one bad input (e.g. over the window bound) fails only its own
/// request, with its own error. Returns the number of model calls made.
fn embed_batch(inner: &dyn Embedder, batch: Vec<(Vec<String>, SyncSender<Reply>)>) -> u64 {
    if batch.len() > 1 {
        let all: Vec<&str> = batch
            .iter()
            .flat_map(|(t, _)| t.iter().map(String::as_str))
            .collect();
        if let Ok(e) = catch(|| inner.embed(&all)) {
            if let Ok(parts) = split(&e, batch.iter().map(|(t, _)| t.len())) {
                for ((_, reply), part) in batch.into_iter().zip(parts) {
                    // A caller that gave up (its deadline passed) no longer listens: fine.
                    let _ = reply.send(Ok(part));
                }
                return 1;
            }
        }
    }
    let merged = u64::from(batch.len() > 1);
    let mut calls = merged;
    for (texts, reply) in batch {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let _ = reply.send(catch(|| inner.embed(&texts)));
        calls += 1;
    }
    calls
}

/// Cuts a merged batch back into one [`Embeddings`] per request of `sizes` texts each.
fn split(
    all: &Embeddings,
    sizes: impl Iterator<Item = usize>,
) -> Result<Vec<Embeddings>, EmbedError> {
    let dim = all.dim();
    let mut out = Vec::new();
    let mut text = 0;
    for n in sizes {
        let mut data = Vec::new();
        let mut spans = Vec::with_capacity(n);
        let mut skipped = Vec::with_capacity(n);
        for i in text..text + n {
            let start = data.len() / dim;
            for w in all.windows(i) {
                data.extend_from_slice(w);
            }
            spans.push(start..data.len() / dim);
            skipped.push(all.skipped_windows(i));
        }
        text += n;
        out.push(Embeddings::new(dim, data, spans, skipped)?);
    }
    Ok(out)
}

impl Embedder for InferenceThread {
    fn model(&self) -> &ModelId {
        self.inner.model()
    }

    fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        let Some(inbox) = self.inbox() else {
            return self.inner.embed(texts);
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let msg = Msg::Embed {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            reply,
        };
        // Either fails only when the thread is gone (its receiver dropped, or the request dropped
        // unanswered): an error now, never a wait on a thread that will not answer.
        inbox.send(msg).map_err(|_| stopped("has stopped"))?;
        answer
            .recv()
            .map_err(|_| stopped("stopped before answering"))?
    }

    fn load_runtime(&self) -> Result<(), EmbedError> {
        self.inner.load_runtime()
    }

    fn load(&self) -> Result<(), EmbedError> {
        let mut running = self.lock();
        self.start(&mut running)
    }

    /// Stops and joins the thread (its thread-local buffers and cached allocations are freed as it
    /// exits), then unloads the model from this thread, after which the backend returns the freed
    /// memory to the OS.
    fn unload(&self) -> bool {
        let taken = self.lock().take();
        if let Some(r) = taken {
            // Requests already queued are answered first; later senders get an error.
            let _ = r.inbox.send(Msg::Stop);
            drop(r.inbox);
            let _ = r.handle.join();
        }
        self.inner.unload()
    }

    fn load_stats(&self) -> Option<LoadStats> {
        self.inner.load_stats()
    }
}

impl Drop for InferenceThread {
    fn drop(&mut self) {
        let taken = self.lock().take();
        if let Some(r) = taken {
            let _ = r.inbox.send(Msg::Stop);
            let _ = r.handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::OnceLock;

    /// Vectors `[len, 1]` per text (normalized by nobody: the tests compare them as given);
    /// `"panic"` panics, `"reject"` is an input error, `fail_load` makes the load fail.
    #[derive(Default)]
    struct Fake {
        loads: AtomicU64,
        unloads: AtomicU64,
        fail_load: AtomicBool,
        /// Names of the threads `embed` ran on.
        threads: Mutex<Vec<String>>,
    }

    impl Embedder for Fake {
        fn model(&self) -> &ModelId {
            static ID: OnceLock<ModelId> = OnceLock::new();
            ID.get_or_init(|| ModelId {
                name: "fake".into(),
                sha256: "0".into(),
                dim: 2,
            })
        }
        fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.threads.lock().unwrap().push(name);
            if texts.contains(&"panic") {
                panic!("model bug");
            }
            if texts.contains(&"reject") {
                return Err(EmbedError::InputRejected("too long".into()));
            }
            // Two windows for texts starting with "w", to check the split keeps spans.
            let mut data = Vec::new();
            let mut spans = Vec::new();
            for t in texts {
                let start = data.len() / 2;
                let windows = if t.starts_with('w') { 2 } else { 1 };
                for k in 0..windows {
                    data.extend([t.len() as f32, k as f32]);
                }
                spans.push(start..data.len() / 2);
            }
            let skipped = texts.iter().map(|t| t.len() % 2).collect();
            Embeddings::new(2, data, spans, skipped)
        }
        fn load(&self) -> Result<(), EmbedError> {
            if self.fail_load.load(Ordering::SeqCst) {
                return Err(EmbedError::Unavailable {
                    what: "model".into(),
                    reason: "missing".into(),
                    fix: "install it".into(),
                });
            }
            self.loads.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn unload(&self) -> bool {
            self.unloads.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    #[test]
    fn runs_on_its_thread_while_loaded_and_joins_it_on_unload() {
        let fake = Arc::new(Fake::default());
        let t = InferenceThread::new(fake.clone(), BatchLimits::default());
        // Not loaded: runs on the caller, like the wrapped embedder.
        t.embed(&["a"]).unwrap();
        t.load().unwrap();
        assert!(t.is_running());
        let e = t.embed(&["abc", "wxyz"]).unwrap();
        assert_eq!(e, fake.embed(&["abc", "wxyz"]).unwrap());
        let threads = fake.threads.lock().unwrap().clone();
        assert_eq!(threads[1], "fg-inference", "{threads:?}");
        assert!(t.unload());
        assert!(!t.is_running());
        assert_eq!(fake.unloads.load(Ordering::SeqCst), 1);
        // Reload starts a new thread.
        t.load().unwrap();
        assert_eq!(fake.loads.load(Ordering::SeqCst), 2);
        t.embed(&["b"]).unwrap();
        t.unload();
    }

    #[test]
    fn a_failed_load_is_a_typed_error_and_leaves_no_thread() {
        let fake = Arc::new(Fake::default());
        fake.fail_load.store(true, Ordering::SeqCst);
        let t = InferenceThread::new(fake.clone(), BatchLimits::default());
        assert!(matches!(t.load(), Err(EmbedError::Unavailable { .. })));
        assert!(!t.is_running());
        fake.fail_load.store(false, Ordering::SeqCst);
        t.load().unwrap();
        assert!(t.is_running());
    }

    #[test]
    fn panics_and_input_errors_come_back_typed_and_the_thread_keeps_serving() {
        let t = InferenceThread::new(Arc::new(Fake::default()), BatchLimits::default());
        t.load().unwrap();
        assert!(
            matches!(t.embed(&["panic"]), Err(EmbedError::Backend(m)) if m.contains("panicked"))
        );
        assert!(matches!(
            t.embed(&["reject"]),
            Err(EmbedError::InputRejected(_))
        ));
        assert_eq!(t.embed(&["ok"]).unwrap().len(), 1);
    }

    #[test]
    fn a_dead_thread_is_an_error_not_a_hang() {
        let t = InferenceThread::new(Arc::new(Fake::default()), BatchLimits::default());
        // A thread that ended without being unloaded: its receiver is gone.
        let (inbox, rx) = mpsc::sync_channel::<Msg>(1);
        let handle = std::thread::spawn(move || drop(rx));
        while !handle.is_finished() {
            std::thread::yield_now();
        }
        *t.lock() = Some(Running { inbox, handle });
        assert!(matches!(t.embed(&["a"]), Err(EmbedError::Backend(m)) if m.contains("stopped")));
        // A thread that takes the request and ends without answering.
        let (inbox, rx) = mpsc::sync_channel::<Msg>(1);
        let handle = std::thread::spawn(move || {
            let msg = rx.recv();
            drop(msg);
        });
        *t.lock() = Some(Running { inbox, handle });
        assert!(matches!(t.embed(&["a"]), Err(EmbedError::Backend(m)) if m.contains("stopped")));
        t.unload();
    }

    #[test]
    fn merged_requests_get_exactly_their_own_rows_and_errors() {
        let fake = Arc::new(Fake::default());
        let t = Arc::new(InferenceThread::new(fake.clone(), BatchLimits::default()));
        t.load().unwrap();
        let inputs: Vec<Vec<String>> = (0..64)
            .map(|i| match i % 5 {
                0 => vec!["reject".to_string()],
                1 => vec![format!("w{i}"), "x".repeat(i)],
                _ => vec!["y".repeat(i + 1)],
            })
            .collect();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .map(|texts| {
                    let t = t.clone();
                    s.spawn(move || {
                        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                        t.embed(&texts)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (texts, r) in inputs.iter().zip(results) {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            match fake.embed(&texts) {
                Ok(expected) => assert_eq!(r.unwrap(), expected, "{texts:?}"),
                Err(_) => assert!(matches!(r, Err(EmbedError::InputRejected(_))), "{texts:?}"),
            }
        }
        let (requests, calls) = t.counts();
        assert_eq!(requests, 64);
        assert!(calls >= 1);
    }

    #[test]
    fn split_keeps_windows_and_skips() {
        let fake = Fake::default();
        let all = fake.embed(&["wa", "b", "wcd", "e"]).unwrap();
        let parts = split(&all, [1, 3].into_iter()).unwrap();
        assert_eq!(parts[0], fake.embed(&["wa"]).unwrap());
        assert_eq!(parts[1], fake.embed(&["b", "wcd", "e"]).unwrap());
    }
}
