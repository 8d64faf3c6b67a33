//! Turning exchanges into OTLP spans (semantic conventions for HTTP), and batching them by
//! service for export.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use agent_common::net::{family, SocketAddrs};
use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode},
};
use prost::Message;

use super::{
    exchanges::{Exchange, Side},
    sampling::Sampler,
    services::Service,
    traceparent::IdGenerator,
};
use crate::{
    clock::Clock,
    links::SpanRef,
    otlp::{
        resource::{process_attributes, HostInfo},
        wire::{self, Encoded},
    },
};

/// The local and remote IP addresses of a connection (IPv4-mapped IPv6 shown as IPv4).
pub fn ip_addresses(addrs: &SocketAddrs) -> (IpAddr, IpAddr) {
    let ip = |bytes: &[u8; 16]| -> IpAddr {
        if addrs.family == family::INET {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            let v6 = Ipv6Addr::from(*bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
    };
    (ip(&addrs.local), ip(&addrs.remote))
}

/// Spans of one export interval, written as OTLP bytes as they come (see [`wire`]), grouped
/// by process, bounded.
#[derive(Debug)]
pub struct SpanBatch {
    /// Per service (keyed by its `Arc`'s address: hashing a whole `Service` per span would
    /// cost more than writing the span), the spans written since its last chunk.
    open: HashMap<usize, ServiceSpans, foldhash::fast::RandomState>,
    /// Chunks of [`SPANS_PER_REQUEST`] spans of one service, ready to send.
    full: Vec<ServiceSpans>,
    held: usize,
    max: usize,
    /// Spans that did not fit.
    pub dropped: u64,
    /// Which spans are kept (`--trace-sample-ratio`).
    sampler: Sampler,
    /// Spans the sampler left out, over the run.
    pub sampled_out: u64,
    /// Addresses' text, formatted once per address.
    texts: AddressTexts,
}

/// What became of an exchange's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Held for the next export, with these IDs.
    Kept(SpanRef),
    /// Left out by `--trace-sample-ratio` (counted).
    SampledOut,
    /// Left out because the batch is full (counted).
    Dropped,
}

/// Spans of one service: `ScopeSpans.spans` fields, written back to back.
#[derive(Debug)]
struct ServiceSpans {
    service: Arc<Service>,
    bytes: Vec<u8>,
    count: usize,
}

impl SpanBatch {
    /// An empty batch holding at most `max` spans, keeping those `sampler` keeps.
    pub fn new(max: usize, sampler: Sampler) -> Self {
        SpanBatch { open: HashMap::default(), full: Vec::new(), held: 0, max, dropped: 0, sampler, sampled_out: 0, texts: AddressTexts::default() }
    }

    /// Adds the span of `exchange`, named with its bounded `route`, unless the sampler leaves
    /// it out or the batch is full.
    pub fn add(&mut self, service: &Arc<Service>, exchange: &Exchange, route: &str, clock: Clock, ids: &mut IdGenerator) -> Added {
        let span_ids = SpanIds::of(exchange, ids);
        if !self.sampler.keep(exchange.trace.as_ref(), &span_ids.trace_id) {
            self.sampled_out += 1;
            return Added::SampledOut;
        }
        if self.held >= self.max {
            self.dropped += 1;
            return Added::Dropped;
        }
        let key = Arc::as_ptr(service) as usize;
        let spans = self.open.entry(key).or_insert_with(|| ServiceSpans { service: service.clone(), bytes: Vec::with_capacity(4096), count: 0 });
        write_span(exchange, &span_ids, route, clock, &mut self.texts, &mut spans.bytes);
        spans.count += 1;
        self.held += 1;
        if spans.count >= SPANS_PER_REQUEST {
            if let Some(chunk) = self.open.remove(&key) {
                // A busy service fills its next chunk as big as this one: allocate it whole
                // now, rather than growing (and copying) it from 4 KiB again.
                let next = ServiceSpans { service: chunk.service.clone(), bytes: Vec::with_capacity(chunk.bytes.len() + chunk.bytes.len() / 8), count: 0 };
                self.open.insert(key, next);
                self.full.push(chunk);
            }
        }
        Added::Kept(SpanRef { trace_id: span_ids.trace_id, span_id: span_ids.span_id })
    }

    /// Whether a full request's worth of spans is waiting.
    pub fn full_request_ready(&self) -> bool {
        self.held >= SPANS_PER_REQUEST
    }

    /// Export requests for everything held, at most [`SPANS_PER_REQUEST`] spans each (well
    /// under gRPC's usual 4 MiB message limit), grouped by service; empties the batch.
    pub fn take_requests(&mut self, host: &HostInfo) -> Vec<(Encoded, u64)> {
        let mut requests: Vec<(Encoded, u64)> = self.full.drain(..).map(|chunk| request(&[chunk], host)).collect();
        let mut pending: Vec<ServiceSpans> = Vec::new();
        let mut count = 0;
        for (_, spans) in self.open.drain() {
            if spans.count == 0 {
                continue;
            }
            if count + spans.count > SPANS_PER_REQUEST && !pending.is_empty() {
                requests.push(request(&std::mem::take(&mut pending), host));
                count = 0;
            }
            count += spans.count;
            pending.push(spans);
        }
        if !pending.is_empty() {
            requests.push(request(&pending, host));
        }
        self.held = 0;
        requests
    }
}

/// Most spans in one export request: about 300 bytes each encoded, so about 75 KiB. A
/// receiver on the same host decodes a request in one go: at 1,000 spans (2 ms) that stalled
/// the traced server behind it; 250 measured 5–10% more nginx throughput, and 100 cost more
/// per call than it saved.
pub const SPANS_PER_REQUEST: usize = 250;

/// An `ExportTraceServiceRequest` of the services' spans, and how many spans it holds.
fn request(services: &[ServiceSpans], host: &HostInfo) -> (Encoded, u64) {
    let scope = InstrumentationScope { name: "oxeye".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    let size: usize = services.iter().map(|s| s.bytes.len() + 512).sum();
    let mut out = Vec::with_capacity(size);
    for spans in services {
        // ExportTraceServiceRequest.resource_spans = 1.
        wire::message_field(1, &mut out, |out| {
            // ResourceSpans.resource = 1, .scope_spans = 2.
            wire::message_field(1, out, |out| resource(&spans.service, host).encode_raw(out));
            wire::message_field(2, out, |out| {
                // ScopeSpans.scope = 1, .spans = 2 (already written with their keys).
                wire::message_field(1, out, |out| scope.encode_raw(out));
                out.extend_from_slice(&spans.bytes);
            });
        });
    }
    (Encoded(out.into()), services.iter().map(|s| s.count as u64).sum())
}

/// The resource of a traced process: the same attributes as its profiles.
pub fn resource(service: &Service, host: &HostInfo) -> Resource {
    Resource { attributes: process_attributes(host, service.pid, &service.identity), ..Default::default() }
}

/// `Span` fields (opentelemetry/proto/trace/v1/trace.proto).
mod tag {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    /// `Status.code`.
    pub const STATUS_CODE: u32 = 3;
    /// `ScopeSpans.spans`.
    pub const SCOPE_SPANS_SPANS: u32 = 2;
}

/// Who a span is in its trace.
struct SpanIds {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    kind: SpanKind,
}

impl SpanIds {
    /// Server spans: the trace comes from the caller's header. Client spans: a header the
    /// process sent names the span that made the call, which is this one.
    fn of(exchange: &Exchange, ids: &mut IdGenerator) -> SpanIds {
        let (trace_id, span_id, parent_span_id, kind) = match (exchange.side, exchange.trace) {
            (Side::Server, Some(parent)) => (parent.trace_id, ids.span_id(), Some(parent.parent_id), SpanKind::Server),
            (Side::Server, None) => (ids.trace_id(), ids.span_id(), None, SpanKind::Server),
            (Side::Client, Some(own)) => (own.trace_id, own.parent_id, None, SpanKind::Client),
            (Side::Client, None) => (ids.trace_id(), ids.span_id(), None, SpanKind::Client),
        };
        SpanIds { trace_id, span_id, parent_span_id, kind }
    }
}

/// A server span's attribute: the CPU samples taken on its thread while it served the request.
pub const CPU_SAMPLES_ATTRIBUTE: &str = "oxeye.cpu.samples";

/// Writes the span of `exchange` as a `ScopeSpans.spans` field (HTTP semantic conventions).
fn write_span(exchange: &Exchange, span_ids: &SpanIds, route: &str, clock: Clock, texts: &mut AddressTexts, out: &mut Vec<u8>) {
    let (local, peer) = ip_addresses(&exchange.addrs);
    let (local_port, peer_port) = (i64::from(exchange.addrs.local_port), i64::from(exchange.addrs.remote_port));
    let method = exchange.method.as_str();
    let SpanIds { trace_id, span_id, parent_span_id, kind } = span_ids;
    // Semantic conventions: 5xx is an error on both sides, 4xx only for the client.
    let error = exchange.status >= 500 || (exchange.side == Side::Client && exchange.status >= 400);
    wire::message_field(tag::SCOPE_SPANS_SPANS, out, |out| {
        wire::bytes_field(tag::TRACE_ID, trace_id, out);
        wire::bytes_field(tag::SPAN_ID, span_id, out);
        wire::bytes_field(tag::PARENT_SPAN_ID, parent_span_id.as_ref().map_or(&[][..], |id| &id[..]), out);
        wire::message_field(tag::NAME, out, |out| {
            out.extend_from_slice(method.as_bytes());
            out.push(b' ');
            out.extend_from_slice(route.as_bytes());
        });
        wire::varint_field(tag::KIND, *kind as i64, out);
        wire::fixed64_field(tag::START, clock.to_unix_ns(exchange.started_ns), out);
        wire::fixed64_field(tag::END, clock.to_unix_ns(exchange.ended_ns), out);
        let string = |name: &str, value: &str, out: &mut Vec<u8>| wire::string_attribute(tag::ATTRIBUTES, name, value, out);
        let int = |name: &str, value: i64, out: &mut Vec<u8>| wire::int_attribute(tag::ATTRIBUTES, name, value, out);
        string("http.request.method", method, out);
        string("url.path", &exchange.path, out);
        int("http.response.status_code", exchange.status.into(), out);
        string("network.protocol.name", "http", out);
        string("network.peer.address", texts.get(peer), out);
        int("network.peer.port", peer_port, out);
        let host = host_name(exchange.host.as_deref());
        match exchange.side {
            Side::Server => {
                string("http.route", route, out);
                string("server.address", host.unwrap_or_else(|| texts.get(local)), out);
                int("server.port", local_port, out);
                string("client.address", texts.get(peer), out);
                // Whether a slow request was computing or waiting, at a glance.
                int(CPU_SAMPLES_ATTRIBUTE, exchange.cpu_samples.into(), out);
            }
            Side::Client => {
                string("server.address", host.unwrap_or_else(|| texts.get(peer)), out);
                int("server.port", peer_port, out);
            }
        }
        if error {
            wire::message_field(tag::STATUS, out, |out| wire::varint_field(tag::STATUS_CODE, StatusCode::Error as i64, out));
        }
    });
}

/// Addresses as text, each formatted once (`Display` for an address costs more than the rest
/// of a span's attribute); bounded, as a host can talk to any number of peers.
#[derive(Debug, Default)]
struct AddressTexts(HashMap<IpAddr, Box<str>, foldhash::fast::RandomState>);

impl AddressTexts {
    /// Distinct addresses kept before the cache starts over.
    const MAX: usize = 4096;

    fn get(&mut self, address: IpAddr) -> &str {
        if self.0.len() >= Self::MAX && !self.0.contains_key(&address) {
            self.0.clear();
        }
        self.0.entry(address).or_insert_with(|| address.to_string().into_boxed_str())
    }
}

/// The host part of a `Host` header (`example.com:8080` → `example.com`, `[::1]:80` → `::1`).
fn host_name(header: Option<&str>) -> Option<&str> {
    let header = header?.trim();
    let host = if let Some(rest) = header.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        header.rsplit_once(':').map_or(header, |(host, port)| if port.chars().all(|c| c.is_ascii_digit()) { host } else { header })
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{http::Method, traceparent::parse};
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::any_value::Value,
        trace::v1::{ScopeSpans, Span},
    };

    /// The span `write_span` writes, decoded as a collector would.
    fn written_span(exchange: &Exchange, route: &str, clock: Clock, ids: &mut IdGenerator) -> Span {
        let mut out = Vec::new();
        write_span(exchange, &SpanIds::of(exchange, ids), route, clock, &mut AddressTexts::default(), &mut out);
        let mut scope = ScopeSpans::decode(&out[..]).expect("a ScopeSpans.spans field");
        assert_eq!(scope.spans.len(), 1);
        scope.spans.remove(0)
    }

    fn service(pid: u32) -> Arc<Service> {
        let identity = Arc::new(crate::process::identity::ProcessIdentity::named(&format!("svc{pid}")));
        Arc::new(Service { identity, pid, metrics: crate::metrics::Resource { service_name: format!("svc{pid}"), attributes: Vec::new() } })
    }

    #[test]
    fn address_texts_are_right_and_bounded() {
        let mut texts = AddressTexts::default();
        for i in 0..(AddressTexts::MAX as u32 * 2) {
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(texts.get(address), address.to_string());
            assert!(texts.0.len() <= AddressTexts::MAX);
        }
        assert_eq!(texts.get("::1".parse().expect("an address")), "::1");
    }

    #[test]
    fn batches_decode_as_requests_grouped_by_service_and_bounded() {
        let mut batch = SpanBatch::new(10_000, Sampler::new(1.0));
        let mut ids = IdGenerator::new();
        let (a, b) = (service(1), service(2));
        for i in 0..2_500 {
            let who = if i % 5 == 0 { &b } else { &a };
            batch.add(who, &exchange(Side::Server, None), "/users/*", Clock::with_offset(0), &mut ids);
        }
        assert!(batch.full_request_ready());
        let host = HostInfo::read(crate::containers::Pods::disabled());
        let requests = batch.take_requests(&host);
        let mut by_pid: HashMap<String, usize> = HashMap::new();
        let mut total = 0;
        for (encoded, count) in &requests {
            let request = ExportTraceServiceRequest::decode(encoded.0.clone()).expect("decodes");
            let spans: usize = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            assert_eq!(spans as u64, *count);
            assert!(spans <= SPANS_PER_REQUEST, "{spans} spans in one request");
            for resource_spans in &request.resource_spans {
                let pid = resource_spans.resource.as_ref().and_then(|r| r.attributes.iter().find(|kv| kv.key == "process.pid")).and_then(|kv| kv.value.clone()?.value);
                let pid = format!("{pid:?}");
                let scope = &resource_spans.scope_spans[0];
                assert!(!scope.spans.is_empty(), "a service with no spans left in the request");
                assert_eq!(scope.scope.as_ref().map(|s| s.name.as_str()), Some("oxeye"));
                assert!(scope.spans.iter().all(|s| s.name == "GET /users/*"));
                *by_pid.entry(pid).or_default() += scope.spans.len();
            }
            total += spans;
        }
        assert_eq!(total, 2_500);
        let mut counts: Vec<usize> = by_pid.values().copied().collect();
        counts.sort();
        assert_eq!(counts, [500, 2_000]);
        assert!(batch.take_requests(&host).is_empty(), "taken");
    }

    fn exchange(side: Side, trace: Option<&str>) -> Exchange {
        let mut addrs = SocketAddrs { family: family::INET, local_port: 8080, remote_port: 51000, ..Default::default() };
        addrs.local[..4].copy_from_slice(&[127, 0, 0, 1]);
        addrs.remote[..4].copy_from_slice(&[10, 0, 0, 2]);
        Exchange {
            pid: 1,
            side,
            method: Method::Get,
            path: "/users/42".into(),
            host: Some("shop.example:8080".into()),
            trace: trace.and_then(parse),
            status: 503,
            started_ns: 1_000,
            ended_ns: 3_000,
            addrs,
            sock: 0xabc,
            cpu_samples: 4,
            off_cpu_events: false,
        }
    }

    #[test]
    fn server_span_follows_the_incoming_traceparent() {
        let mut ids = IdGenerator::new();
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = written_span(&exchange(Side::Server, Some(header)), "/users/*", Clock::with_offset(10), &mut ids);
        assert_eq!(span.name, "GET /users/*");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(span.parent_span_id, vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (1_010, 3_010));
        let get = |key: &str| span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value);
        assert_eq!(get("server.address"), Some(Value::StringValue("shop.example".into())));
        assert_eq!(get("client.address"), Some(Value::StringValue("10.0.0.2".into())));
        assert_eq!(get("http.response.status_code"), Some(Value::IntValue(503)));
        assert_eq!(span.status.map(|s| s.code), Some(StatusCode::Error as i32));
    }

    #[test]
    fn client_span_takes_the_id_its_header_announced() {
        let mut ids = IdGenerator::new();
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = written_span(&exchange(Side::Client, Some(header)), "/users/*", Clock::with_offset(0), &mut ids);
        assert_eq!(span.span_id, vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(span.parent_span_id.is_empty());
        let fresh = written_span(&exchange(Side::Client, None), "/", Clock::with_offset(0), &mut ids);
        assert_eq!((fresh.trace_id.len(), fresh.span_id.len()), (16, 8));
        assert_ne!(fresh.trace_id, span.trace_id);
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(host_name(Some("a.example:80")), Some("a.example"));
        assert_eq!(host_name(Some("[::1]:8080")), Some("::1"));
        assert_eq!(host_name(Some("plain")), Some("plain"));
        assert_eq!(host_name(Some("")), None);
    }
}
