//! The three OTLP signals oxeye sends, each through its own gRPC service.

use std::future::Future;

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    profiles::v1development::{profiles_service_client::ProfilesServiceClient, ExportProfilesServiceRequest},
    trace::v1::{trace_service_client::TraceServiceClient, ExportTraceServiceRequest},
};
use tonic::{codec::CompressionEncoding, transport::Channel, Status};

/// One OTLP signal: its request type and how to send it.
pub trait Signal: Send + Sync + 'static {
    /// The export request.
    type Request: prost::Message + Clone + Default + Send + Sync + 'static;
    /// What the exporter counts, plural, for logs ("samples", "spans", "data points").
    const ITEMS: &'static str;
    /// The signal's own endpoint variable, read before `OTEL_EXPORTER_OTLP_ENDPOINT`.
    const ENDPOINT_VARIABLE: &'static str;
    /// Whether that variable wins over `--collection-agent` (true for spans and metrics,
    /// which may go to a different collector than profiles).
    const VARIABLE_FIRST: bool = true;

    /// Sends one request; `Ok(Some(message))` when the collector accepted only part of it.
    fn export(channel: Channel, request: Self::Request) -> impl Future<Output = Result<Option<String>, Status>> + Send;
}

/// Profiles (`v1development`).
pub struct Profiles;
/// Spans.
pub struct Traces;
/// Metrics.
pub struct Metrics;

impl Signal for Profiles {
    type Request = ExportProfilesServiceRequest;
    const ITEMS: &'static str = "samples";
    const ENDPOINT_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT";
    const VARIABLE_FIRST: bool = false;

    async fn export(channel: Channel, request: Self::Request) -> Result<Option<String>, Status> {
        let mut client = ProfilesServiceClient::new(channel).send_compressed(CompressionEncoding::Gzip);
        let partial = client.export(request).await?.into_inner().partial_success;
        Ok(partial
            .filter(|p| p.rejected_profiles > 0 || !p.error_message.is_empty())
            .map(|p| format!("{} profiles rejected: {}", p.rejected_profiles, p.error_message)))
    }
}

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    const ITEMS: &'static str = "spans";
    const ENDPOINT_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

    async fn export(channel: Channel, request: Self::Request) -> Result<Option<String>, Status> {
        let mut client = TraceServiceClient::new(channel).send_compressed(CompressionEncoding::Gzip);
        let partial = client.export(request).await?.into_inner().partial_success;
        Ok(partial
            .filter(|p| p.rejected_spans > 0 || !p.error_message.is_empty())
            .map(|p| format!("{} spans rejected: {}", p.rejected_spans, p.error_message)))
    }
}

impl Signal for Metrics {
    type Request = ExportMetricsServiceRequest;
    const ITEMS: &'static str = "data points";
    const ENDPOINT_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";

    async fn export(channel: Channel, request: Self::Request) -> Result<Option<String>, Status> {
        let mut client = MetricsServiceClient::new(channel).send_compressed(CompressionEncoding::Gzip);
        let partial = client.export(request).await?.into_inner().partial_success;
        Ok(partial
            .filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty())
            .map(|p| format!("{} data points rejected: {}", p.rejected_data_points, p.error_message)))
    }
}
