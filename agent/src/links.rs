//! Links from CPU samples to the spans of the HTTP requests their threads were serving.
//!
//! The kernel side stamps a sample taken while a server thread serves a request with the
//! request's connection and start (see `agent-ebpf/src/net/serving.rs`). The network pipeline
//! publishes, for each server span it exports whose request had samples, that key with the
//! span's IDs and end; the profile pipeline looks its samples up when it exports them.
//!
//! A link is made only when the key names one span and the sample lies within that span, so a
//! sample is never linked to the wrong request: a key two exchanges share (requests pipelined
//! in one receive) links nothing.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

/// A request as the kernel side keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// Process id.
    pub pid: u32,
    /// The connection's `struct sock`.
    pub sock: u64,
    /// When the request's first bytes were received (`CLOCK_MONOTONIC`, ns).
    pub started_ns: u64,
}

/// A span, as a profile links to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanRef {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span.
    pub span_id: [u8; 8],
}

impl SpanRef {
    /// The trace ID in lower-case hex, as W3C trace context writes it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span ID in lower-case hex.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What a key resolves to.
#[derive(Clone, Copy, Debug)]
enum Published {
    /// One span, which ended at `ended_ns` (`CLOCK_MONOTONIC`).
    Span { span: SpanRef, ended_ns: u64 },
    /// More than one span: no link.
    Ambiguous,
}

/// Published spans, bounded: the oldest go first. Only requests that had samples are
/// published, so at most as many as samples are taken between two exports are needed.
#[derive(Debug)]
pub struct SpanLinks {
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    spans: HashMap<RequestKey, Published>,
    order: VecDeque<RequestKey>,
    capacity: usize,
}

impl SpanLinks {
    /// Most requests remembered: far more than the samples of an export interval at the
    /// highest sampling rate on a big host (1,000 Hz × 64 CPUs × 1 s).
    pub const CAPACITY: usize = 65_536;

    /// An empty table holding at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        SpanLinks { table: Mutex::new(Table { spans: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }) }
    }

    /// The request `key` became `span`, which ended at `ended_ns`.
    pub fn publish(&self, key: RequestKey, span: SpanRef, ended_ns: u64) {
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(published) = table.spans.get_mut(&key) {
            *published = Published::Ambiguous;
            return;
        }
        if table.order.len() >= table.capacity {
            if let Some(oldest) = table.order.pop_front() {
                table.spans.remove(&oldest);
            }
        }
        table.order.push_back(key);
        table.spans.insert(key, Published::Span { span, ended_ns });
    }

    /// The span a sample taken at `sampled_ns` in request `key` belongs to, if it is known,
    /// alone, and the sample lies within it.
    pub fn resolve(&self, key: RequestKey, sampled_ns: u64) -> Option<SpanRef> {
        let table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match table.spans.get(&key)? {
            Published::Span { span, ended_ns } if (key.started_ns..=*ended_ns).contains(&sampled_ns) => Some(*span),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: SpanRef = SpanRef { trace_id: [1; 16], span_id: [2; 8] };

    fn key(started_ns: u64) -> RequestKey {
        RequestKey { pid: 7, sock: 0xffff_0000, started_ns }
    }

    #[test]
    fn a_sample_links_only_within_its_span() {
        let links = SpanLinks::new(8);
        links.publish(key(100), SPAN, 200);
        assert_eq!(links.resolve(key(100), 100), Some(SPAN));
        assert_eq!(links.resolve(key(100), 200), Some(SPAN));
        assert_eq!(links.resolve(key(100), 201), None, "after the response: a slot left behind");
        assert_eq!(links.resolve(key(100), 99), None);
        assert_eq!(links.resolve(key(101), 150), None, "another request");
        assert_eq!(links.resolve(RequestKey { pid: 8, ..key(100) }, 150), None, "another process");
    }

    #[test]
    fn ids_are_written_in_lower_case_hex() {
        let span = SpanRef { trace_id: [0xab; 16], span_id: [0x0c; 8] };
        assert_eq!((span.trace_id_hex(), span.span_id_hex()), ("ab".repeat(16), "0c".repeat(8)));
    }

    #[test]
    fn a_key_two_spans_share_links_neither() {
        let links = SpanLinks::new(8);
        links.publish(key(100), SPAN, 200);
        links.publish(key(100), SpanRef { trace_id: [3; 16], span_id: [4; 8] }, 300);
        assert_eq!(links.resolve(key(100), 150), None);
    }

    #[test]
    fn the_oldest_requests_go_first() {
        let links = SpanLinks::new(2);
        for started in [100, 200, 300] {
            links.publish(key(started), SPAN, started + 50);
        }
        assert_eq!(links.resolve(key(100), 120), None);
        assert_eq!(links.resolve(key(200), 220), Some(SPAN));
        assert_eq!(links.resolve(key(300), 320), Some(SPAN));
    }
}
