//! Sending profiles, spans and metrics to an OTLP collector (or devfiler) over gRPC, without
//! ever holding up sampling or tracing: each signal's batches wait in a byte-bounded queue; a
//! background task sends them with exponential back-off and jitter, drops the oldest when the
//! queue is full, and counts every item it could not deliver.

mod backoff;
mod endpoint;
mod queue;
mod sender;
mod signal;
mod stats;

use std::{sync::Arc, time::Duration};

use anyhow::Result;
use prost::Message;
use tokio::task::JoinHandle;

pub use endpoint::{resolve, Endpoint};
pub use signal::{Metrics, Profiles, Signal, Traces};
pub use stats::ExportStats;

use self::queue::{Batch, ExportQueue};

/// How the exporter runs.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Where to send.
    pub endpoint: Endpoint,
    /// Extra CA certificate (PEM) to trust, besides the system's.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Most bytes of encoded batches held while the collector is unreachable.
    pub max_queue_bytes: usize,
    /// The reporting interval: also the least time between two log lines about failures.
    pub interval: Duration,
}

/// A running exporter of one signal.
pub struct Exporter<S: Signal> {
    queue: Arc<ExportQueue<S::Request>>,
    /// What it has done so far.
    pub stats: Arc<ExportStats>,
    task: JoinHandle<()>,
}

impl<S: Signal> Exporter<S> {
    /// Starts the sending task. Connecting happens lazily: a collector that is down now is
    /// tried again later, it is not an error.
    pub fn start(config: ExportConfig) -> Result<Self> {
        let channel = endpoint::channel(&config.endpoint, config.tls_ca_file.as_deref())?;
        let stats = Arc::new(ExportStats::default());
        let queue = Arc::new(ExportQueue::new(config.max_queue_bytes, stats.clone()));
        let task = tokio::spawn(sender::run::<S>(channel, config.endpoint.uri.clone(), queue.clone(), stats.clone(), config.interval));
        Ok(Exporter { queue, stats, task })
    }

    /// Whether the endpoint takes this signal: false once it answered UNIMPLEMENTED, and then
    /// building requests is wasted work.
    pub fn accepts(&self) -> bool {
        !self.stats.unsupported()
    }

    /// Queues a request carrying `samples` items; the oldest batches go if it does not fit.
    pub fn submit(&self, request: S::Request, samples: u64) {
        if !self.accepts() {
            self.stats.add_rejected(samples);
            return;
        }
        let bytes = request.encoded_len();
        self.queue.push(Batch { request, bytes, samples });
    }

    /// Bytes waiting to be sent (including the batch being sent).
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Gives queued batches until `deadline` to go out, then stops the task. One deadline
    /// serves every exporter, so a collector that is down costs one wait, not one per signal.
    pub async fn shutdown(self, deadline: tokio::time::Instant) {
        let _ = tokio::time::timeout_at(deadline, self.queue.wait_empty()).await;
        self.task.abort();
        let left = self.queue.abandon();
        if left > 0 {
            self.stats.add_dropped(left);
        }
    }
}
