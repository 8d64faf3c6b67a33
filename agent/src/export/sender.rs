//! The task that sends queued batches and decides what to do when that fails.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{transport::Channel, Code};
use tracing::{info, warn};

use super::{backoff::Backoff, queue::ExportQueue, signal::Signal, stats::ExportStats};

/// Sends batches until shutdown (the exporter aborts the task), or until the endpoint says it
/// does not implement the signal.
pub async fn run<S: Signal>(channel: Channel, endpoint: String, queue: Arc<ExportQueue<S::Request>>, stats: Arc<ExportStats>, log_interval: Duration) {
    let mut backoff = Backoff::new();
    let mut failure_log = RateLimitedLog::new(log_interval);
    let mut was_failing = false;
    let gzip = S::gzip();
    loop {
        let batch = queue.take().await;
        let started = Instant::now();
        match S::export(channel.clone(), batch.request.clone(), gzip).await {
            Ok(partial) => {
                backoff.reset();
                if let Some(message) = partial {
                    // The batch's items are counted as rejected only if the whole batch was.
                    warn!(signal = S::ITEMS, "collector accepted the export only in part: {message}");
                }
                stats.add_exported(batch.samples, started.elapsed().as_micros() as u64);
                queue.done(&batch);
                if was_failing {
                    info!("exporting {} again", S::ITEMS);
                    was_failing = false;
                }
            }
            // A viewer such as devfiler takes profiles only: say so once and stop sending this
            // signal there, rather than failing every interval.
            Err(status) if status.code() == Code::Unimplemented => {
                stats.add_failed_attempt();
                stats.set_unsupported();
                queue.done(&batch);
                stats.add_rejected(batch.samples + queue.abandon());
                warn!("{endpoint} does not accept OTLP {} (UNIMPLEMENTED): no longer sending {} there", S::NAME, S::ITEMS);
                return;
            }
            Err(status) if is_retryable(status.code()) => {
                stats.add_failed_attempt();
                was_failing = true;
                let wait = backoff.next_wait();
                failure_log.warn(|| format!("collector unavailable for {}, retrying in {wait:.1?}: {}: {}", S::ITEMS, status.code(), status.message()));
                queue.retry(batch);
                tokio::time::sleep(wait).await;
            }
            Err(status) => {
                stats.add_failed_attempt();
                stats.add_rejected(batch.samples);
                failure_log.warn(|| format!("collector refused {} {}, not retrying: {}: {}", batch.samples, S::ITEMS, status.code(), status.message()));
                queue.done(&batch);
            }
        }
    }
}

/// Codes the OTLP specification says may succeed if retried; everything else is final.
fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::OutOfRange | Code::Unavailable | Code::DataLoss
    )
}

/// Logs at most once per interval, saying how many messages it held back.
struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn new(interval: Duration) -> Self {
        RateLimitedLog { interval, last: None, suppressed: 0 }
    }

    fn warn(&mut self, message: impl FnOnce() -> String) {
        if self.last.is_some_and(|at| at.elapsed() < self.interval) {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        if suppressed > 0 {
            warn!("{} ({suppressed} similar messages suppressed)", message());
        } else {
            warn!("{}", message());
        }
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_follow_the_otlp_specification() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::ResourceExhausted));
        for code in [Code::InvalidArgument, Code::Unimplemented, Code::PermissionDenied, Code::Unauthenticated, Code::Internal, Code::Unknown] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }
}
