//! Admission control: a bounded number of requests in flight, a bounded queue in front of them,
//! and a deadline on the wait. Anything beyond is refused at once (503), never queued without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In-flight slots and queue are full.
    Overloaded,
    /// The request waited in the queue until its deadline.
    Deadline,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Overloaded => "overloaded",
            Refusal::Deadline => "deadline",
        }
    }
}

/// Gate shared by every scan request.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    max_inflight: usize,
    max_queue: usize,
    queued: AtomicUsize,
}

/// Held while a request is in flight; releasing it admits the next queued request.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// Counts a waiting request; decrements even when the wait is abandoned (client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// At most `max_inflight` (at least 1) requests run at once and `max_queue` wait.
    pub fn new(max_inflight: usize, max_queue: usize) -> Admission {
        let max_inflight = max_inflight.max(1);
        Admission {
            permits: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            max_queue,
            queued: AtomicUsize::new(0),
        }
    }

    /// Admit now, or wait in the queue until `deadline`; refuse at once when the queue is full.
    pub async fn admit(&self, deadline: Instant) -> Result<Admitted, Refusal> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Admitted { _permit: p });
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Overloaded);
        }
        let _waiting = Waiting(&self.queued);
        match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Admitted { _permit: p }),
            Ok(Err(_closed)) => Err(Refusal::Overloaded),
            Err(_elapsed) => Err(Refusal::Deadline),
        }
    }

    /// Requests holding a slot now.
    pub fn inflight(&self) -> usize {
        self.max_inflight - self.permits.available_permits()
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn full_queue_refuses_at_once_and_slots_free_up() {
        let a = Admission::new(1, 1);
        let far = Instant::now() + Duration::from_secs(60);
        let first = a.admit(far).await.unwrap();
        assert_eq!(a.inflight(), 1);
        // The second waits in the queue; the third finds it full.
        let a = Arc::new(a);
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.admit(far).await.map(|_| ()) });
        while a.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(a.admit(far).await.unwrap_err(), Refusal::Overloaded);
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!((a.inflight(), a.queued()), (0, 0));
    }

    #[tokio::test]
    async fn queued_request_gives_up_at_its_deadline() {
        let a = Admission::new(1, 4);
        let _held = a
            .admit(Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        let soon = Instant::now() + Duration::from_millis(1);
        assert_eq!(a.admit(soon).await.unwrap_err(), Refusal::Deadline);
        assert_eq!(a.queued(), 0);
    }
}
