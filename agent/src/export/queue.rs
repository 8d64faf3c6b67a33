//! A FIFO of encoded batches bounded by bytes: when a new batch does not fit, the oldest
//! waiting ones are dropped (and their samples counted), so memory stays bounded while the
//! collector is down and the newest data goes first once it is back.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::Notify;

use super::stats::ExportStats;

/// One request waiting to be sent.
#[derive(Debug)]
pub struct Batch<R> {
    /// The request.
    pub request: R,
    /// Its encoded size.
    pub bytes: usize,
    /// Items (samples, spans, data points) it carries.
    pub samples: u64,
}

#[derive(Debug)]
struct Inner<R> {
    waiting: VecDeque<Batch<R>>,
    /// Bytes of the waiting batches plus the one being sent.
    bytes: usize,
    in_flight: bool,
}

/// The byte-bounded queue between the reporting loop and the sending task.
#[derive(Debug)]
pub struct ExportQueue<R> {
    inner: Mutex<Inner<R>>,
    max_bytes: usize,
    stats: Arc<ExportStats>,
    changed: Notify,
}

impl<R> ExportQueue<R> {
    /// An empty queue holding at most `max_bytes`.
    pub fn new(max_bytes: usize, stats: Arc<ExportStats>) -> Self {
        ExportQueue { inner: Mutex::new(Inner { waiting: VecDeque::new(), bytes: 0, in_flight: false }), max_bytes, stats, changed: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a batch, dropping the oldest waiting ones to make room (or the batch itself if it
    /// can never fit).
    pub fn push(&self, batch: Batch<R>) {
        if batch.bytes > self.max_bytes {
            self.stats.add_dropped(batch.samples);
            return;
        }
        let mut inner = self.lock();
        while inner.bytes + batch.bytes > self.max_bytes {
            let Some(oldest) = inner.waiting.pop_front() else { break };
            inner.bytes -= oldest.bytes;
            self.stats.add_dropped(oldest.samples);
        }
        if inner.bytes + batch.bytes > self.max_bytes {
            self.stats.add_dropped(batch.samples);
            return;
        }
        inner.bytes += batch.bytes;
        inner.waiting.push_back(batch);
        drop(inner);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// Takes the oldest batch for sending, waiting for one; its bytes stay counted until
    /// [`ExportQueue::done`] or [`ExportQueue::retry`].
    pub async fn take(&self) -> Batch<R> {
        loop {
            let notified = self.changed.notified();
            {
                let mut inner = self.lock();
                if let Some(batch) = inner.waiting.pop_front() {
                    inner.in_flight = true;
                    return batch;
                }
            }
            notified.await;
        }
    }

    /// The batch taken last was sent, or given up on.
    pub fn done(&self, batch: &Batch<R>) {
        let mut inner = self.lock();
        inner.bytes -= batch.bytes;
        inner.in_flight = false;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The batch taken last must be sent again: it goes back to the front.
    pub fn retry(&self, batch: Batch<R>) {
        let mut inner = self.lock();
        inner.in_flight = false;
        inner.waiting.push_front(batch);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Resolves once nothing is waiting or being sent.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.changed.notified();
            {
                let inner = self.lock();
                if inner.waiting.is_empty() && !inner.in_flight {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Empties the queue at shutdown; returns the samples that were never sent.
    pub fn abandon(&self) -> u64 {
        let mut inner = self.lock();
        let samples = inner.waiting.drain(..).map(|b| b.samples).sum();
        inner.bytes = 0;
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize, samples: u64) -> Batch<()> {
        Batch { request: (), bytes, samples }
    }

    #[tokio::test]
    async fn drops_oldest_when_full_and_counts_samples() {
        let stats = Arc::new(ExportStats::default());
        let queue = ExportQueue::new(100, stats.clone());
        queue.push(batch(40, 1));
        queue.push(batch(40, 2));
        queue.push(batch(40, 3)); // the first goes
        assert_eq!((queue.bytes(), stats.dropped()), (80, 1));
        queue.push(batch(500, 9)); // never fits
        assert_eq!((queue.bytes(), stats.dropped()), (80, 10));
        let taken = queue.take().await;
        assert_eq!(taken.samples, 2, "oldest first");
        queue.push(batch(50, 4)); // the in-flight batch keeps its bytes: the waiting one goes
        assert_eq!((queue.bytes(), stats.dropped()), (90, 13));
        queue.done(&taken);
        assert_eq!(queue.bytes(), 50);
        let next = queue.take().await;
        queue.retry(next);
        assert_eq!(queue.take().await.samples, 4, "a retried batch goes first");
    }
}
