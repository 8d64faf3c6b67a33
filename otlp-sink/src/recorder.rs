//! What the sink saw: every call, its reply, and the accepted requests,
//! one [`Recorder`] per signal (profiles, traces, metrics).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Reply;

/// Whether a sink keeps the decoded accepted requests in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Keep every accepted request (what tests want).
    #[default]
    All,
    /// Keep only counters; [`crate::Sink::requests`],
    /// [`crate::Sink::trace_requests`] and [`crate::Sink::metrics_requests`]
    /// stay empty. For long benchmark runs, where keeping every request would
    /// grow without bound.
    CountsOnly,
}

/// Running totals of a sink, cheap to read at any time.
///
/// `attempts`, `accepted` and `samples` are about the profiles service only;
/// traces and metrics have their own fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Profiles `Export` calls that reached the service (accepted or not).
    pub attempts: usize,
    /// Profiles `Export` calls answered with [`Reply::Ok`] or
    /// [`Reply::PartialSuccess`].
    pub accepted: usize,
    /// Profiles `Export` calls refused by the peer's rules
    /// ([`crate::Peer`]).
    pub refused: usize,
    /// Samples in the accepted profiles requests: per sample the number of
    /// timestamps, or the sum of its values when it has none.
    pub samples: u64,
    /// Accepted trace `Export` calls.
    pub trace_requests: usize,
    /// Spans in the accepted trace requests.
    pub spans: u64,
    /// Accepted metrics `Export` calls.
    pub metrics_requests: usize,
    /// Data points in the accepted metrics requests, summed over requests
    /// (with cumulative metrics the same series counts once per request).
    pub metric_points: u64,
    /// Bytes read from the TCP connections (encrypted bytes with TLS).
    pub bytes_received: u64,
    /// Bytes written to the TCP connections (encrypted bytes with TLS).
    pub bytes_sent: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

/// A peer's acceptance rules: `Err(why)` for a request it refuses.
pub(crate) type Rules<R> = fn(&R) -> Result<(), String>;

struct State<R> {
    replies: Vec<Reply>,
    /// Why each refused request was refused, in arrival order.
    refusals: Vec<String>,
    requests: Vec<R>,
    accepted: usize,
    /// Sum of `Recorder::units` over the accepted requests.
    units: u64,
}

/// Shared record of the calls of one signal, filled by the service, read by
/// the [`crate::Sink`].
pub(crate) struct Recorder<R> {
    script: Vec<Reply>,
    retention: Retention,
    /// What one request counts for (samples, spans, data points).
    units: fn(&R) -> u64,
    /// The peer's rules: a request they refuse is answered [`Reply::Refused`].
    rules: Option<Rules<R>>,
    state: Mutex<State<R>>,
    changed: Condvar,
}

impl<R: Clone> Recorder<R> {
    pub(crate) fn new(script: Vec<Reply>, retention: Retention, units: fn(&R) -> u64) -> Self {
        Recorder {
            script,
            retention,
            units,
            rules: None,
            state: Mutex::new(State {
                replies: Vec::new(),
                refusals: Vec::new(),
                requests: Vec::new(),
                accepted: 0,
                units: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Checks every request with `rules` before the script is consulted.
    pub(crate) fn with_rules(mut self, rules: Rules<R>) -> Self {
        self.rules = Some(rules);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // A panic elsewhere while holding the lock leaves consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one call and returns the scripted reply for it.
    pub(crate) fn record(&self, request: R) -> Reply {
        // Checked outside the lock: the rules walk the whole request.
        let verdict = self.rules.map_or(Ok(()), |rules| rules(&request));
        let mut state = self.lock();
        let reply = match verdict {
            Err(why) => {
                state.refusals.push(why.clone());
                Reply::Refused(why)
            }
            Ok(()) => self.script.get(state.replies.len()).cloned().unwrap_or(Reply::Ok),
        };
        state.replies.push(reply.clone());
        if reply.is_accepted() {
            state.accepted += 1;
            state.units = state.units.saturating_add((self.units)(&request));
            if self.retention == Retention::All {
                state.requests.push(request);
            }
        }
        drop(state);
        self.changed.notify_all();
        reply
    }

    pub(crate) fn requests(&self) -> Vec<R> {
        self.lock().requests.clone()
    }

    /// The most recent stored request, if any.
    pub(crate) fn last_request(&self) -> Option<R> {
        self.lock().requests.last().cloned()
    }

    pub(crate) fn replies(&self) -> Vec<Reply> {
        self.lock().replies.clone()
    }

    /// Why each refused request was refused.
    pub(crate) fn refusals(&self) -> Vec<String> {
        self.lock().refusals.clone()
    }

    pub(crate) fn attempts(&self) -> usize {
        self.lock().replies.len()
    }

    /// (attempts, accepted, units, refused by the rules)
    pub(crate) fn totals(&self) -> (usize, usize, u64, usize) {
        let state = self.lock();
        (state.replies.len(), state.accepted, state.units, state.refusals.len())
    }

    pub(crate) fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Waits until at least `n` requests were accepted, or `timeout` passed.
    pub(crate) fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| state.accepted >= n)
    }

    /// Waits until the accepted requests count for at least `n` units, or
    /// `timeout` passed.
    pub(crate) fn wait_for_units(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| state.units >= n)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&State<R>) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !done(&state) {
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
