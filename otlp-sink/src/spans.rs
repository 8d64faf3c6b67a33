//! Turning a trace request back into readable spans.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::decode::plain_attributes;

/// The resource attribute that names the service.
pub(crate) const SERVICE_NAME_KEY: &str = "service.name";

/// One span of a trace request, flattened with its resource.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedSpan {
    /// The `service.name` attribute of the span's resource (`""` if absent).
    pub service_name: String,
    /// The span's name.
    pub name: String,
    /// The span's kind, a `SpanKind` as `i32` (see
    /// [`crate::proto::trace::v1::span::SpanKind`]).
    pub kind: i32,
    /// The trace id, as sent (16 bytes when valid).
    pub trace_id: Vec<u8>,
    /// The span id, as sent (8 bytes when valid).
    pub span_id: Vec<u8>,
    /// The parent span id, empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// The span's attributes; strings as is, ints in decimal, bools as
    /// `true`/`false`, bytes in hex.
    pub attributes: BTreeMap<String, String>,
    /// Attributes of the span's resource, formatted the same way.
    pub resource: BTreeMap<String, String>,
}

/// Every span of a request, decoded, in message order.
pub fn spans(request: &ExportTraceServiceRequest) -> Vec<DecodedSpan> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| plain_attributes(&r.attributes))
            .unwrap_or_default();
        let service_name = resource.get(SERVICE_NAME_KEY).cloned().unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            out.push(DecodedSpan {
                service_name: service_name.clone(),
                name: span.name.clone(),
                kind: span.kind,
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                parent_span_id: span.parent_span_id.clone(),
                start_unix_nano: span.start_time_unix_nano,
                end_unix_nano: span.end_time_unix_nano,
                attributes: plain_attributes(&span.attributes),
                resource: resource.clone(),
            });
        }
    }
    out
}

/// Number of spans in a request.
pub(crate) fn total_spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}
