//! What the sink saw: every call, its reply, and the accepted requests.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

use crate::config::Reply;
use crate::decode::total_samples;

/// Whether a sink keeps the decoded accepted requests in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Keep every accepted request (what tests want).
    #[default]
    All,
    /// Keep only counters; [`crate::Sink::requests`] stays empty. For long
    /// benchmark runs, where keeping every request would grow without bound.
    CountsOnly,
}

/// Running totals of a sink, cheap to read at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Export calls that reached the service (accepted or not).
    pub attempts: usize,
    /// Export calls answered with [`Reply::Ok`] or [`Reply::PartialSuccess`].
    pub accepted: usize,
    /// Samples in the accepted requests: per sample the number of
    /// timestamps, or the sum of its values when it has none.
    pub samples: u64,
    /// Bytes read from the TCP connections (encrypted bytes with TLS).
    pub bytes_received: u64,
    /// Bytes written to the TCP connections (encrypted bytes with TLS).
    pub bytes_sent: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

#[derive(Default)]
struct State {
    replies: Vec<Reply>,
    requests: Vec<ExportProfilesServiceRequest>,
    accepted: usize,
    samples: u64,
}

/// Shared record of the calls, filled by the service, read by the [`crate::Sink`].
pub(crate) struct Recorder {
    script: Vec<Reply>,
    retention: Retention,
    state: Mutex<State>,
    changed: Condvar,
}

impl Recorder {
    pub(crate) fn new(script: Vec<Reply>, retention: Retention) -> Self {
        Recorder {
            script,
            retention,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one call and returns the scripted reply for it.
    pub(crate) fn record(&self, request: ExportProfilesServiceRequest) -> Reply {
        let mut state = self.lock();
        let reply = self
            .script
            .get(state.replies.len())
            .cloned()
            .unwrap_or(Reply::Ok);
        state.replies.push(reply.clone());
        if reply.is_accepted() {
            state.accepted += 1;
            state.samples = state.samples.saturating_add(total_samples(&request));
            if self.retention == Retention::All {
                state.requests.push(request);
            }
        }
        drop(state);
        self.changed.notify_all();
        reply
    }

    pub(crate) fn requests(&self) -> Vec<ExportProfilesServiceRequest> {
        self.lock().requests.clone()
    }

    pub(crate) fn replies(&self) -> Vec<Reply> {
        self.lock().replies.clone()
    }

    pub(crate) fn attempts(&self) -> usize {
        self.lock().replies.len()
    }

    /// (attempts, accepted, samples)
    pub(crate) fn totals(&self) -> (usize, usize, u64) {
        let state = self.lock();
        (state.replies.len(), state.accepted, state.samples)
    }

    pub(crate) fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Waits until at least `n` requests were accepted, or `timeout` passed.
    pub(crate) fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.accepted < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}
