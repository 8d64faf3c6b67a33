//! Network tracing in user space: connection records and HTTP payloads from the BPF
//! programs become spans (one per request) and metrics.
//!
//! - [`records`]: decoding `NET_EVENTS`.
//! - [`http`]: parsing HTTP/1.x request and status lines from captured bytes.
//! - [`exchanges`]: matching responses to requests per connection.
//! - [`spans`], [`telemetry`]: what the exchanges and connections become.
//! - [`services`], [`route`], [`traceparent`]: naming processes, bounding routes, trace ids.
//! - [`sampling`]: which spans `--trace-sample-ratio` keeps.

pub mod exchanges;
pub mod http;
pub mod records;
pub mod route;
pub mod sampling;
pub mod services;
pub mod spans;
pub mod telemetry;
pub mod traceparent;

use std::sync::{Arc, Mutex};

use agent_common::net::PayloadHeader;
use aya::maps::{MapData, RingBuf};
use tracing::debug;

use crate::{
    clock::{self, Clock},
    events::comm_str,
    links::{RequestKey, SpanLinks},
    metrics::MetricsStore,
    otlp::resource::HostInfo,
    process::identity::Identities,
};

use self::{
    exchanges::{Exchange, Exchanges, Payload, Side},
    records::NetRecord,
    route::RouteLimiter,
    services::Services,
    spans::{ip_addresses, Added, SpanBatch},
    telemetry::ClosedConnection,
    traceparent::IdGenerator,
};

/// Most connections with requests in flight.
const MAX_OPEN_EXCHANGES: usize = 65_536;
/// Most distinct routes per run; more collapse to `/*`.
const MAX_ROUTES: usize = 1_000;
/// Connections silent this long lose their unanswered requests (their close was missed).
const EXCHANGE_TIMEOUT_NS: u64 = 300_000_000_000;
/// Most records read in one go (tens of milliseconds of work), so that a saturated ring
/// does not keep the agent's loop from exporting and reporting.
const MAX_RECORDS_PER_DRAIN: usize = 65_536;

/// What network tracing has seen so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetStats {
    /// Connections opened.
    pub opened: u64,
    /// Connections closed.
    pub closed: u64,
    /// HTTP payloads received from the kernel.
    pub payloads: u64,
    /// Requests answered, as server.
    pub server_exchanges: u64,
    /// Requests answered, as client.
    pub client_exchanges: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
}

/// Turns network records into spans and metrics.
pub struct NetTracker {
    exchanges: Exchanges,
    services: Services,
    routes: RouteLimiter,
    ids: IdGenerator,
    /// Spans waiting for the next export (only kept when spans are exported).
    pub spans: Option<SpanBatch>,
    metrics: Arc<Mutex<MetricsStore>>,
    clock: Clock,
    last_seen_ns: u64,
    /// Counters.
    pub stats: NetStats,
    done: Vec<Exchange>,
    /// Durations of this drain's exchanges, recorded at its end.
    durations: telemetry::ExchangeDurations,
    connection_totals: telemetry::ConnectionTotals,
    /// Where server spans whose requests had CPU samples are published, when profiles and
    /// spans are both exported.
    pub links: Option<Arc<SpanLinks>>,
}

impl NetTracker {
    /// A tracker recording into `metrics`; `clock` turns BPF timestamps into Unix time.
    pub fn new(metrics: Arc<Mutex<MetricsStore>>, spans: Option<SpanBatch>, identities: Arc<Identities>, host: HostInfo, clock: Clock) -> Self {
        NetTracker {
            exchanges: Exchanges::new(MAX_OPEN_EXCHANGES),
            services: Services::new(identities, host),
            routes: RouteLimiter::new(MAX_ROUTES),
            ids: IdGenerator::new(),
            spans,
            metrics,
            clock,
            last_seen_ns: 0,
            stats: NetStats::default(),
            done: Vec::new(),
            durations: telemetry::ExchangeDurations::default(),
            connection_totals: telemetry::ConnectionTotals::default(),
            links: None,
        }
    }

    /// Matching counters.
    pub fn match_stats(&self) -> exchanges::MatchStats {
        self.exchanges.stats
    }

    /// Reads the records waiting in the ring buffer, at most [`MAX_RECORDS_PER_DRAIN`]: at
    /// saturation the programs may write as fast as this reads. `true` if the ring was
    /// emptied.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        let metrics = self.metrics.clone();
        let mut store = metrics.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        store.set_now(clock::unix_now_ns());
        self.services.set_now(std::time::Instant::now());
        let mut emptied = false;
        for _ in 0..MAX_RECORDS_PER_DRAIN {
            let Some(item) = ring.next() else {
                emptied = true;
                break;
            };
            self.handle(&item, &mut store);
        }
        self.durations.record_into(&mut store);
        self.connection_totals.record_into(&mut store);
        emptied
    }

    /// Handles one record (its exchange's duration is recorded at the end of the drain).
    fn handle(&mut self, bytes: &[u8], store: &mut MetricsStore) {
        match records::decode(bytes) {
            Some(NetRecord::Open(open)) => {
                self.stats.opened += 1;
                let service = self.services.get(open.pid, &comm_str(&open.comm));
                self.connection_totals.opened(&service, open.role, &open.addrs);
            }
            Some(NetRecord::Close(close)) => {
                self.stats.closed += 1;
                self.exchanges.closed(close.pid, close.sock);
                let service = self.services.get(close.pid, &comm_str(&close.comm));
                let (local, peer) = ip_addresses(&close.addrs);
                debug!(
                    pid = close.pid,
                    service = %service.identity.service_name,
                    local = %format!("{local}:{}", close.addrs.local_port),
                    peer = %format!("{peer}:{}", close.addrs.remote_port),
                    sent = close.bytes_sent,
                    received = close.bytes_received,
                    retransmits = close.retransmits,
                    srtt_us = close.srtt_us,
                    "TCP connection closed"
                );
                let closed = ClosedConnection {
                    role: close.role,
                    addrs: &close.addrs,
                    bytes_sent: close.bytes_sent,
                    bytes_received: close.bytes_received,
                    retransmits: close.retransmits,
                    srtt_us: close.srtt_us,
                    duration_ns: (close.opened_ns != 0).then(|| close.closed_ns.saturating_sub(close.opened_ns)),
                };
                self.connection_totals.closed(&service, &closed);
            }
            Some(NetRecord::Payload(header, data)) => {
                tracing::trace!(pid = header.pid, direction = header.direction, size = header.size, captured = data.len(), flags = header.flags, "payload");
                self.stats.payloads += 1;
                self.last_seen_ns = self.last_seen_ns.max(header.timestamp_ns);
                // Name the process at its connection's first record (the only one with a
                // name), while it most likely still lives (a server that forks a child per
                // connection has it exit right after answering); its exchanges find the name
                // cached.
                if header.comm[0] != 0 {
                    self.services.get(header.pid, &comm_str(&header.comm));
                }
                let mut done = std::mem::take(&mut self.done);
                let payload = Payload {
                    pid: header.pid,
                    sock: header.sock,
                    flow: header.direction,
                    timestamp_ns: header.timestamp_ns,
                    addrs: header.addrs,
                    data,
                    continuation: header.flags & PayloadHeader::CONTINUATION != 0,
                    truncated: header.size > data.len() as u64,
                    size: header.size,
                    cpu_samples: header.cpu_samples,
                    off_cpu_events: header.flags & PayloadHeader::OFF_CPU_EVENTS != 0,
                };
                self.exchanges.payload(payload, &mut done);
                for exchange in done.drain(..) {
                    self.finish(exchange, store);
                }
                self.done = done;
            }
            None => self.stats.malformed += 1,
        }
    }

    /// Forgets connections silent for too long.
    pub fn expire(&mut self) {
        self.exchanges.expire(self.last_seen_ns.saturating_sub(EXCHANGE_TIMEOUT_NS));
    }

    fn finish(&mut self, exchange: Exchange, store: &mut MetricsStore) {
        match exchange.side {
            Side::Server => self.stats.server_exchanges += 1,
            Side::Client => self.stats.client_exchanges += 1,
        }
        let service = self.services.get(exchange.pid, "");
        let route = self.routes.limit(route::route(&exchange.path));
        if let Some(spans) = &mut self.spans {
            match spans.add(&service, &exchange, &route, self.clock, &mut self.ids) {
                Added::Kept(span) => {
                    // Only requests with samples or off-CPU events are looked up.
                    let sampled = exchange.cpu_samples > 0 || exchange.off_cpu_events;
                    if let (Some(links), Side::Server, true) = (&self.links, exchange.side, sampled) {
                        let key = RequestKey { pid: exchange.pid, sock: exchange.sock, started_ns: exchange.started_ns };
                        links.publish(key, span, exchange.ended_ns);
                    }
                }
                Added::SampledOut => telemetry::record_sampled_out(store, &service.metrics),
                Added::Dropped => {}
            }
        }
        self.durations.add(&service, &exchange, route);
    }
}
