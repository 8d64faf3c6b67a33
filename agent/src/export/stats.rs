//! Counters of what the exporter did, shared with the reporting code.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Exporter counters. All counts are samples unless named otherwise.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    failed_attempts: AtomicU64,
    last_latency_us: AtomicU64,
    unsupported: AtomicBool,
}

impl ExportStats {
    /// Samples the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Relaxed)
    }

    /// Samples dropped because the queue was full or oxeye stopped before sending them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Samples the collector refused (non-retryable errors and partial successes).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    /// Export calls that failed.
    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Relaxed)
    }

    /// Duration of the last successful export call, microseconds.
    pub fn last_latency_us(&self) -> u64 {
        self.last_latency_us.load(Relaxed)
    }

    /// Whether the endpoint answered that it does not implement this signal (UNIMPLEMENTED):
    /// nothing more is sent there.
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Relaxed)
    }

    pub(super) fn set_unsupported(&self) {
        self.unsupported.store(true, Relaxed);
    }

    pub(super) fn add_exported(&self, samples: u64, latency_us: u64) {
        self.exported.fetch_add(samples, Relaxed);
        self.last_latency_us.store(latency_us, Relaxed);
    }

    /// Counts samples that will never be sent.
    pub fn add_dropped(&self, samples: u64) {
        self.dropped.fetch_add(samples, Relaxed);
    }

    pub(super) fn add_rejected(&self, samples: u64) {
        self.rejected.fetch_add(samples, Relaxed);
    }

    pub(super) fn add_failed_attempt(&self) {
        self.failed_attempts.fetch_add(1, Relaxed);
    }
}
