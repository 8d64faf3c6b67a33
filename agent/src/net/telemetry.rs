//! The metrics network tracing produces: HTTP request durations (semantic conventions) and
//! TCP connection counters, bytes, retransmits and round-trip times.

use agent_common::net::{role, SocketAddrs};

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::{
    exchanges::{Exchange, Side},
    http::Method,
    services::Service,
    spans::ip_addresses,
};
use crate::metrics::{AttrValue, Attributes, MetricDesc, MetricKind, MetricsStore, Resource, HTTP_DURATION_BOUNDS};

/// Round-trip time buckets, seconds: loopback (tens of µs) to intercontinental.
const RTT_BOUNDS: &[f64] = &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// `http.server.request.duration`.
pub static HTTP_SERVER_DURATION: MetricDesc = MetricDesc {
    name: "http.server.request.duration",
    description: "Duration of HTTP server requests: first byte of the request read to first byte of the response written.",
    unit: "s",
    kind: MetricKind::Histogram { bounds: HTTP_DURATION_BOUNDS },
};

/// `http.client.request.duration`.
pub static HTTP_CLIENT_DURATION: MetricDesc = MetricDesc {
    name: "http.client.request.duration",
    description: "Duration of HTTP client requests: request written to first byte of the response read.",
    unit: "s",
    kind: MetricKind::Histogram { bounds: HTTP_DURATION_BOUNDS },
};

/// TCP connections opened (accepted or connected).
pub static TCP_OPENED: MetricDesc =
    MetricDesc { name: "oxeye.tcp.connections.opened", description: "TCP connections accepted or connected.", unit: "{connection}", kind: MetricKind::Counter };

/// TCP connections closed.
pub static TCP_CLOSED: MetricDesc =
    MetricDesc { name: "oxeye.tcp.connections.closed", description: "TCP connections closed.", unit: "{connection}", kind: MetricKind::Counter };

/// Payload bytes of closed connections, by direction.
pub static TCP_BYTES: MetricDesc = MetricDesc {
    name: "oxeye.tcp.bytes",
    description: "Payload bytes of closed TCP connections, sent (transmit, retransmissions not counted) or received (receive).",
    unit: "By",
    kind: MetricKind::Counter,
};

/// Retransmitted segments of closed connections.
pub static TCP_RETRANSMITS: MetricDesc =
    MetricDesc { name: "oxeye.tcp.retransmits", description: "Segments retransmitted by closed TCP connections.", unit: "{segment}", kind: MetricKind::Counter };

/// Smoothed round-trip time of closed connections.
pub static TCP_RTT: MetricDesc = MetricDesc {
    name: "oxeye.tcp.rtt",
    description: "Smoothed round-trip time of TCP connections when they closed.",
    unit: "s",
    kind: MetricKind::Histogram { bounds: RTT_BOUNDS },
};

/// How long connections stayed open.
pub static TCP_DURATION: MetricDesc = MetricDesc {
    name: "oxeye.tcp.connection.duration",
    description: "Time from accept or connect to close of TCP connections.",
    unit: "s",
    kind: MetricKind::Histogram { bounds: HTTP_DURATION_BOUNDS },
};

/// Spans `--trace-sample-ratio` left out.
pub static SPANS_SAMPLED_OUT: MetricDesc = MetricDesc {
    name: "oxeye.spans.sampled_out",
    description: "Spans of traced HTTP requests left out by head sampling (--trace-sample-ratio); the requests still count in the HTTP metrics.",
    unit: "{span}",
    kind: MetricKind::Counter,
};

/// Network records the kernel side could not hand over (its ring was full): the requests they
/// carried are missing from spans and from the HTTP metrics.
pub static RECORDS_LOST: MetricDesc = MetricDesc {
    name: "oxeye.net.records.lost",
    description: "Network records lost in the kernel because oxeye's ring buffer was full; the requests they carried are missing from spans and HTTP metrics.",
    unit: "{record}",
    kind: MetricKind::Counter,
};

/// Adds `lost` records lost in the kernel, counted against oxeye's own `resource` (the kernel
/// cannot say whose they were).
pub fn record_records_lost(store: &mut MetricsStore, resource: &Resource, lost: u64) {
    store.add(&RECORDS_LOST, resource, Vec::new(), lost);
}

/// Counts a span the sampler left out.
pub fn record_sampled_out(store: &mut MetricsStore, resource: &Resource) {
    store.add(&SPANS_SAMPLED_OUT, resource, Vec::new(), 1);
}

/// Exchange durations waiting to be recorded, by series. They go into the store once per series
/// per drain ([`ExchangeDurations::record_into`]), not once per exchange: building a series'
/// key costs a `Vec`, two `String`s and four hashes of strings, more than the rest of an
/// exchange's metrics.
#[derive(Debug, Default)]
pub struct ExchangeDurations {
    pending: HashMap<DurationKey, PendingSeries, foldhash::fast::RandomState>,
}

/// What a duration's series is, cheap to hash: the service by its `Arc`'s address (kept alive
/// by [`PendingSeries::service`] while pending, so the address is not reused meanwhile).
#[derive(Debug, PartialEq, Eq, Hash)]
struct DurationKey {
    service: usize,
    side: Side,
    method: Method,
    status: u16,
    route: String,
}

#[derive(Debug)]
struct PendingSeries {
    service: Arc<Service>,
    seconds: Vec<f64>,
}

impl ExchangeDurations {
    /// Adds `exchange`'s duration, of `service`, under `route`.
    pub fn add(&mut self, service: &Arc<Service>, exchange: &Exchange, route: String) {
        let key = DurationKey { service: Arc::as_ptr(service) as usize, side: exchange.side, method: exchange.method, status: exchange.status, route };
        let seconds = exchange.ended_ns.saturating_sub(exchange.started_ns) as f64 / 1e9;
        self.pending.entry(key).or_insert_with(|| PendingSeries { service: Arc::clone(service), seconds: Vec::new() }).seconds.push(seconds);
    }

    /// Records every pending duration into `store` (`http.server.request.duration` or
    /// `http.client.request.duration`, by method, status and route).
    pub fn record_into(&mut self, store: &mut MetricsStore) {
        for (key, series) in self.pending.drain() {
            let metric = match key.side {
                Side::Server => &HTTP_SERVER_DURATION,
                Side::Client => &HTTP_CLIENT_DURATION,
            };
            let attributes = vec![
                ("http.request.method", AttrValue::Str(key.method.as_str().to_owned())),
                ("http.response.status_code", AttrValue::Int(key.status.into())),
                ("http.route", AttrValue::Str(key.route)),
            ];
            store.record_all(metric, &series.service.metrics, attributes, &series.seconds);
        }
    }
}

/// Connection metrics waiting to be recorded, by series, for the same reason as
/// [`ExchangeDurations`]: a close touches six metrics, and building their keys (attribute
/// vectors with the peer's address as text) per connection cost more than everything else a
/// connection-per-request load asks of oxeye. They go into the store once per series per drain.
#[derive(Debug, Default)]
pub struct ConnectionTotals {
    pending: HashMap<ConnectionKey, PendingConnections, foldhash::fast::RandomState>,
}

/// A connection series: the service (by its `Arc`'s address, kept alive meanwhile by
/// [`PendingConnections::service`]), its role, the server's port and the peer's address (never
/// the client's ephemeral port, which would make a series per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnectionKey {
    service: usize,
    role: &'static str,
    server_port: u16,
    peer: IpAddr,
}

impl ConnectionKey {
    fn new(service: &Arc<Service>, connection_role: u32, addrs: &SocketAddrs) -> Self {
        let (_, peer) = ip_addresses(addrs);
        let (role, server_port) = match connection_role {
            role::SERVER => ("server", addrs.local_port),
            role::CLIENT => ("client", addrs.remote_port),
            // Open before oxeye started: the lower port is the likelier server (ephemeral ports
            // are high).
            _ => ("unknown", addrs.local_port.min(addrs.remote_port)),
        };
        ConnectionKey { service: Arc::as_ptr(service) as usize, role, server_port, peer }
    }

    fn attributes(&self) -> Attributes {
        vec![
            ("oxeye.tcp.role", AttrValue::Str(self.role.to_owned())),
            ("server.port", AttrValue::Int(self.server_port.into())),
            ("network.peer.address", AttrValue::Str(self.peer.to_string())),
        ]
    }
}

/// One series' connections since the last drain.
#[derive(Debug)]
struct PendingConnections {
    service: Arc<Service>,
    opened: u64,
    closed: u64,
    bytes_sent: u64,
    bytes_received: u64,
    retransmits: u64,
    /// Smoothed RTTs of closed connections that had one, seconds.
    rtt_seconds: Vec<f64>,
    /// How long closed connections that oxeye saw open stayed open, seconds.
    open_seconds: Vec<f64>,
}

/// What a closed connection reported.
pub struct ClosedConnection<'a> {
    /// Role.
    pub role: u32,
    /// Addresses.
    pub addrs: &'a SocketAddrs,
    /// Bytes sent, retransmissions not counted.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Smoothed RTT, µs (0: unknown).
    pub srtt_us: u32,
    /// Open time, ns; `None` when it was open before oxeye started.
    pub duration_ns: Option<u64>,
}

impl ConnectionTotals {
    fn series(&mut self, service: &Arc<Service>, connection_role: u32, addrs: &SocketAddrs) -> &mut PendingConnections {
        self.pending.entry(ConnectionKey::new(service, connection_role, addrs)).or_insert_with(|| PendingConnections {
            service: Arc::clone(service),
            opened: 0,
            closed: 0,
            bytes_sent: 0,
            bytes_received: 0,
            retransmits: 0,
            rtt_seconds: Vec::new(),
            open_seconds: Vec::new(),
        })
    }

    /// Counts a connection of `service` opened.
    pub fn opened(&mut self, service: &Arc<Service>, connection_role: u32, addrs: &SocketAddrs) {
        self.series(service, connection_role, addrs).opened += 1;
    }

    /// Adds what a closed connection of `service` reported.
    pub fn closed(&mut self, service: &Arc<Service>, closed: &ClosedConnection<'_>) {
        let series = self.series(service, closed.role, closed.addrs);
        series.closed += 1;
        series.bytes_sent = series.bytes_sent.saturating_add(closed.bytes_sent);
        series.bytes_received = series.bytes_received.saturating_add(closed.bytes_received);
        series.retransmits += u64::from(closed.retransmits);
        if closed.srtt_us > 0 {
            series.rtt_seconds.push(f64::from(closed.srtt_us) / 1e6);
        }
        if let Some(duration_ns) = closed.duration_ns {
            series.open_seconds.push(duration_ns as f64 / 1e9);
        }
    }

    /// Records every pending series into `store`: opened connections, and the closed ones'
    /// counts, bytes by direction, retransmits, RTTs and open times.
    pub fn record_into(&mut self, store: &mut MetricsStore) {
        for (key, series) in self.pending.drain() {
            let resource = &series.service.metrics;
            let attributes = key.attributes();
            if series.opened > 0 {
                store.add(&TCP_OPENED, resource, attributes.clone(), series.opened);
            }
            if series.closed == 0 {
                continue;
            }
            store.add(&TCP_CLOSED, resource, attributes.clone(), series.closed);
            for (direction, bytes) in [("transmit", series.bytes_sent), ("receive", series.bytes_received)] {
                let mut with_direction = attributes.clone();
                with_direction.push(("network.io.direction", AttrValue::Str(direction.to_owned())));
                store.add(&TCP_BYTES, resource, with_direction, bytes);
            }
            store.add(&TCP_RETRANSMITS, resource, attributes.clone(), series.retransmits);
            if !series.rtt_seconds.is_empty() {
                store.record_all(&TCP_RTT, resource, attributes.clone(), &series.rtt_seconds);
            }
            if !series.open_seconds.is_empty() {
                store.record_all(&TCP_DURATION, resource, attributes, &series.open_seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metrics::store::SeriesValue, net::http::Method};
    use agent_common::net::family;

    fn service(name: &str) -> Arc<Service> {
        let identity = Arc::new(crate::process::identity::ProcessIdentity::named(name));
        Arc::new(Service { identity, pid: 1, metrics: Resource { service_name: name.to_owned(), attributes: Vec::new() } })
    }

    fn exchange(side: Side, status: u16, duration_ns: u64) -> Exchange {
        Exchange {
            pid: 1,
            side,
            method: Method::Get,
            path: "/".into(),
            host: None,
            trace: None,
            status,
            started_ns: 1_000,
            ended_ns: 1_000 + duration_ns,
            addrs: SocketAddrs { family: family::INET, ..Default::default() },
            sock: 0,
            cpu_samples: 0,
            off_cpu_events: false,
        }
    }

    /// (metric, service, status, route, count, sum in µs) of every duration series in `store`.
    fn durations(store: &MetricsStore) -> Vec<(&'static str, String, String, String, u64, u64)> {
        let mut found = Vec::new();
        for family in store.families() {
            for series in family.series {
                let SeriesValue::Histogram(histogram) = series.value else { continue };
                let attribute = |key: &str| series.attributes.iter().find(|(name, _)| *name == key).map(|(_, value)| value.to_string()).unwrap_or_default();
                let (status, route) = (attribute("http.response.status_code"), attribute("http.route"));
                found.push((family.desc.name, series.resource.service_name.clone(), status, route, histogram.count, (histogram.sum * 1e6).round() as u64));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn durations_are_recorded_per_series_once_the_drain_ends() {
        let (shop, cart) = (service("shop"), service("cart"));
        let mut pending = ExchangeDurations::default();
        pending.add(&shop, &exchange(Side::Server, 200, 1_000_000), "/".to_owned());
        pending.add(&shop, &exchange(Side::Server, 200, 3_000_000), "/".to_owned());
        pending.add(&shop, &exchange(Side::Server, 404, 2_000_000), "/".to_owned());
        pending.add(&shop, &exchange(Side::Client, 200, 5_000_000), "/api".to_owned());
        pending.add(&cart, &exchange(Side::Server, 200, 4_000_000), "/".to_owned());
        let mut store = MetricsStore::new(100);
        assert!(durations(&store).is_empty());
        pending.record_into(&mut store);
        let client = "http.client.request.duration";
        let server = "http.server.request.duration";
        let expected = vec![
            (client, "shop".to_owned(), "200".to_owned(), "/api".to_owned(), 1, 5_000),
            (server, "cart".to_owned(), "200".to_owned(), "/".to_owned(), 1, 4_000),
            (server, "shop".to_owned(), "200".to_owned(), "/".to_owned(), 2, 4_000),
            (server, "shop".to_owned(), "404".to_owned(), "/".to_owned(), 1, 2_000),
        ];
        assert_eq!(durations(&store), expected);
        // Nothing is left pending: a second drain adds nothing twice.
        pending.record_into(&mut store);
        assert_eq!(durations(&store), expected);
    }

    /// (metric, role, peer, direction, count or counter total) of every connection series.
    fn connection_series(store: &MetricsStore) -> Vec<(&'static str, String, String, String, u64)> {
        let mut found = Vec::new();
        for family in store.families() {
            for series in family.series {
                let attribute = |key: &str| series.attributes.iter().find(|(name, _)| *name == key).map(|(_, value)| value.to_string()).unwrap_or_default();
                let value = match series.value {
                    SeriesValue::Counter(total) => *total,
                    SeriesValue::Histogram(histogram) => histogram.count,
                };
                found.push((family.desc.name, attribute("oxeye.tcp.role"), attribute("network.peer.address"), attribute("network.io.direction"), value));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn connections_are_recorded_per_series_once_the_drain_ends() {
        let shop = service("shop");
        let peer = |last: u8, remote_port: u16| SocketAddrs {
            family: family::INET,
            local_port: 80,
            remote_port,
            remote: [10, 0, 0, last, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        let (a1, a2, b) = (peer(1, 40_000), peer(1, 40_001), peer(2, 40_002));
        let closed = |addrs, srtt_us, duration_ns| ClosedConnection { role: role::SERVER, addrs, bytes_sent: 100, bytes_received: 10, retransmits: 1, srtt_us, duration_ns };
        let mut totals = ConnectionTotals::default();
        totals.opened(&shop, role::SERVER, &a1);
        totals.opened(&shop, role::SERVER, &a2);
        totals.opened(&shop, role::SERVER, &b);
        totals.closed(&shop, &closed(&a1, 50, Some(1_000)));
        // No RTT and open before oxeye: no RTT and no duration measurement.
        totals.closed(&shop, &closed(&a2, 0, None));
        let mut store = MetricsStore::new(100);
        totals.record_into(&mut store);
        let row = |metric: &'static str, peer: &str, direction: &str, value: u64| (metric, "server".to_owned(), peer.to_owned(), direction.to_owned(), value);
        let expected = vec![
            row("oxeye.tcp.bytes", "10.0.0.1", "receive", 20),
            row("oxeye.tcp.bytes", "10.0.0.1", "transmit", 200),
            row("oxeye.tcp.connection.duration", "10.0.0.1", "", 1),
            row("oxeye.tcp.connections.closed", "10.0.0.1", "", 2),
            row("oxeye.tcp.connections.opened", "10.0.0.1", "", 2),
            row("oxeye.tcp.connections.opened", "10.0.0.2", "", 1),
            row("oxeye.tcp.retransmits", "10.0.0.1", "", 2),
            row("oxeye.tcp.rtt", "10.0.0.1", "", 1),
        ];
        assert_eq!(connection_series(&store), expected);
        totals.record_into(&mut store);
        assert_eq!(connection_series(&store), expected, "nothing is recorded twice");
    }
}
