//! Turning exchanges into OTLP spans (semantic conventions for HTTP), and batching them by
//! service for export.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use agent_common::net::{family, SocketAddrs};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status},
};

use super::{
    exchanges::{Exchange, Side},
    services::Service,
    traceparent::IdGenerator,
};
use crate::{
    clock::Clock,
    otlp::{
        dictionary::Value,
        resource::{key_value, process_attributes, HostInfo},
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

/// Spans of one export interval, bounded.
#[derive(Debug)]
pub struct SpanBatch {
    spans: Vec<(Arc<Service>, Span)>,
    max: usize,
    /// Spans that did not fit.
    pub dropped: u64,
}

impl SpanBatch {
    /// An empty batch holding at most `max` spans.
    pub fn new(max: usize) -> Self {
        SpanBatch { spans: Vec::new(), max, dropped: 0 }
    }

    /// Adds the span of `exchange`, named with its bounded `route`.
    pub fn add(&mut self, service: Arc<Service>, exchange: &Exchange, route: &str, clock: Clock, ids: &mut IdGenerator) {
        if self.spans.len() >= self.max {
            self.dropped += 1;
            return;
        }
        self.spans.push((service, span(exchange, route, clock, ids)));
    }

    /// Whether a full request's worth of spans is waiting.
    pub fn full_request_ready(&self) -> bool {
        self.spans.len() >= SPANS_PER_REQUEST
    }

    /// Export requests for everything held, at most [`SPANS_PER_REQUEST`] spans each (well
    /// under gRPC's usual 4 MiB message limit), grouped by service; empties the batch.
    pub fn take_requests(&mut self, host: &HostInfo) -> Vec<(ExportTraceServiceRequest, u64)> {
        let mut requests = Vec::new();
        while !self.spans.is_empty() {
            let rest = self.spans.split_off(self.spans.len().min(SPANS_PER_REQUEST));
            let chunk = std::mem::replace(&mut self.spans, rest);
            requests.push(request(chunk, host));
        }
        requests
    }
}

/// Most spans in one export request: about 300 bytes each encoded, so about 300 KiB.
pub const SPANS_PER_REQUEST: usize = 1_000;

fn request(spans: Vec<(Arc<Service>, Span)>, host: &HostInfo) -> (ExportTraceServiceRequest, u64) {
    let count = spans.len() as u64;
    let mut by_service: HashMap<Arc<Service>, Vec<Span>> = HashMap::new();
    for (service, span) in spans {
        by_service.entry(service).or_default().push(span);
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(resource(&service, host)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "oxeye".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, count)
}

/// The resource of a traced process: the same attributes as its profiles.
pub fn resource(service: &Service, host: &HostInfo) -> Resource {
    Resource { attributes: process_attributes(host, service.pid, &service.identity), ..Default::default() }
}

fn span(exchange: &Exchange, route: &str, clock: Clock, ids: &mut IdGenerator) -> Span {
    let (local, peer) = ip_addresses(&exchange.addrs);
    let (local_port, peer_port) = (i64::from(exchange.addrs.local_port), i64::from(exchange.addrs.remote_port));
    let method = exchange.method.as_str();
    let mut attributes = vec![
        string("http.request.method", method),
        string("url.path", &exchange.path),
        int("http.response.status_code", exchange.status.into()),
        string("network.protocol.name", "http"),
        string("network.peer.address", &peer.to_string()),
        int("network.peer.port", peer_port),
    ];
    // Server spans: the trace comes from the caller's header. Client spans: a header the
    // process sent names the span that made the call, which is this one.
    let (trace_id, span_id, parent_span_id, kind) = match exchange.side {
        Side::Server => {
            attributes.push(string("http.route", route));
            attributes.push(string("server.address", &host_name(exchange.host.as_deref()).unwrap_or(local.to_string())));
            attributes.push(int("server.port", local_port));
            attributes.push(string("client.address", &peer.to_string()));
            match exchange.trace {
                Some(parent) => (parent.trace_id, ids.span_id(), parent.parent_id.to_vec(), SpanKind::Server),
                None => (ids.trace_id(), ids.span_id(), Vec::new(), SpanKind::Server),
            }
        }
        Side::Client => {
            attributes.push(string("server.address", &host_name(exchange.host.as_deref()).unwrap_or(peer.to_string())));
            attributes.push(int("server.port", peer_port));
            match exchange.trace {
                Some(own) => (own.trace_id, own.parent_id, Vec::new(), SpanKind::Client),
                None => (ids.trace_id(), ids.span_id(), Vec::new(), SpanKind::Client),
            }
        }
    };
    // Semantic conventions: 5xx is an error on both sides, 4xx only for the client.
    let error = exchange.status >= 500 || (exchange.side == Side::Client && exchange.status >= 400);
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id,
        name: format!("{method} {route}"),
        kind: kind as i32,
        start_time_unix_nano: clock.to_unix_ns(exchange.started_ns),
        end_time_unix_nano: clock.to_unix_ns(exchange.ended_ns),
        attributes,
        status: error.then(|| Status { code: StatusCode::Error as i32, message: String::new() }),
        ..Default::default()
    }
}

/// The host part of a `Host` header (`example.com:8080` → `example.com`, `[::1]:80` → `::1`).
fn host_name(header: Option<&str>) -> Option<String> {
    let header = header?.trim();
    let host = if let Some(rest) = header.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        header.rsplit_once(':').map_or(header, |(host, port)| if port.chars().all(|c| c.is_ascii_digit()) { host } else { header })
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn string(key: &str, value: &str) -> KeyValue {
    key_value(key, Value::Str(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    key_value(key, Value::Int(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{http::Method, traceparent::parse};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

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
        }
    }

    #[test]
    fn server_span_follows_the_incoming_traceparent() {
        let mut ids = IdGenerator::new();
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = span(&exchange(Side::Server, Some(header)), "/users/*", Clock::with_offset(10), &mut ids);
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
        let span = span(&exchange(Side::Client, Some(header)), "/users/*", Clock::with_offset(0), &mut ids);
        assert_eq!(span.span_id, vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(span.parent_span_id.is_empty());
        let fresh = super::span(&exchange(Side::Client, None), "/", Clock::with_offset(0), &mut ids);
        assert_eq!((fresh.trace_id.len(), fresh.span_id.len()), (16, 8));
        assert_ne!(fresh.trace_id, span.trace_id);
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(host_name(Some("a.example:80")).as_deref(), Some("a.example"));
        assert_eq!(host_name(Some("[::1]:8080")).as_deref(), Some("::1"));
        assert_eq!(host_name(Some("plain")).as_deref(), Some("plain"));
        assert_eq!(host_name(Some("")), None);
    }
}
