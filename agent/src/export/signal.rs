//! The three OTLP signals oxeye sends, each through its own gRPC service.

use std::future::Future;

use opentelemetry_proto::tonic::collector::{
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    profiles::v1development::{profiles_service_client::ProfilesServiceClient, ExportProfilesServiceRequest},
    trace::v1::ExportTraceServiceResponse,
};
use tonic::{codec::CompressionEncoding, codegen::http::uri::PathAndQuery, transport::Channel, Status};
use tonic_prost::ProstCodec;

use crate::otlp::wire::Encoded;

/// One OTLP signal: its request type and how to send it.
pub trait Signal: Send + Sync + 'static {
    /// The export request.
    type Request: prost::Message + Clone + Default + Send + Sync + 'static;
    /// What the exporter counts, plural, for logs ("samples", "spans", "data points").
    const ITEMS: &'static str;
    /// The signal's OTLP name, for logs ("profiles", "traces", "metrics").
    const NAME: &'static str;
    /// The signal's own endpoint variable, read before `OTEL_EXPORTER_OTLP_ENDPOINT`.
    const ENDPOINT_VARIABLE: &'static str;
    /// Whether that variable wins over `--collection-agent` (true for spans and metrics,
    /// which may go to a different collector than profiles).
    const VARIABLE_FIRST: bool = true;
    /// The signal's own compression variable, read before `OTEL_EXPORTER_OTLP_COMPRESSION`.
    const COMPRESSION_VARIABLE: &'static str;
    /// Whether to gzip when no variable says: OTLP's default is no compression; profiles,
    /// small and very repetitive, are gzipped unless told otherwise.
    const GZIP_BY_DEFAULT: bool = false;

    /// Sends one request; `Ok(Some(message))` when the collector accepted only part of it.
    fn export(channel: Channel, request: Self::Request, gzip: bool) -> impl Future<Output = Result<Option<String>, Status>> + Send;

    /// Whether to gzip requests: the signal's `OTEL_EXPORTER_OTLP_*_COMPRESSION`, else
    /// `OTEL_EXPORTER_OTLP_COMPRESSION` (`gzip` or `none`), else the signal's default.
    fn gzip() -> bool {
        let env = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty());
        match env(Self::COMPRESSION_VARIABLE).or_else(|| env("OTEL_EXPORTER_OTLP_COMPRESSION")).as_deref() {
            Some("gzip") => true,
            Some(_) => false,
            None => Self::GZIP_BY_DEFAULT,
        }
    }
}

/// Gzips requests when asked to.
fn compressed<T>(client: T, gzip: bool, compress: impl FnOnce(T) -> T) -> T {
    if gzip {
        compress(client)
    } else {
        client
    }
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
    const NAME: &'static str = "profiles";
    const ENDPOINT_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT";
    const VARIABLE_FIRST: bool = false;
    const COMPRESSION_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION";
    const GZIP_BY_DEFAULT: bool = true;

    async fn export(channel: Channel, request: Self::Request, gzip: bool) -> Result<Option<String>, Status> {
        let mut client = compressed(ProfilesServiceClient::new(channel), gzip, |c| c.send_compressed(CompressionEncoding::Gzip));
        let partial = client.export(request).await?.into_inner().partial_success;
        Ok(partial
            .filter(|p| p.rejected_profiles > 0 || !p.error_message.is_empty())
            .map(|p| format!("{} profiles rejected: {}", p.rejected_profiles, p.error_message)))
    }
}

impl Signal for Traces {
    /// An `ExportTraceServiceRequest` written by `net::spans` straight from the exchanges.
    type Request = Encoded;
    const ITEMS: &'static str = "spans";
    const NAME: &'static str = "traces";
    const ENDPOINT_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const COMPRESSION_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";

    async fn export(channel: Channel, request: Self::Request, gzip: bool) -> Result<Option<String>, Status> {
        // What `TraceServiceClient::export` does, with a codec that sends the bytes as they are.
        const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
        let mut grpc = compressed(tonic::client::Grpc::new(channel), gzip, |c| c.send_compressed(CompressionEncoding::Gzip));
        grpc.ready().await.map_err(|e| Status::unavailable(format!("service was not ready: {e}")))?;
        let codec = ProstCodec::<Encoded, ExportTraceServiceResponse>::default();
        let response = grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(EXPORT), codec).await?;
        let partial = response.into_inner().partial_success;
        Ok(partial
            .filter(|p| p.rejected_spans > 0 || !p.error_message.is_empty())
            .map(|p| format!("{} spans rejected: {}", p.rejected_spans, p.error_message)))
    }
}

impl Signal for Metrics {
    type Request = ExportMetricsServiceRequest;
    const ITEMS: &'static str = "data points";
    const NAME: &'static str = "metrics";
    const ENDPOINT_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
    const COMPRESSION_VARIABLE: &'static str = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION";

    async fn export(channel: Channel, request: Self::Request, gzip: bool) -> Result<Option<String>, Status> {
        let mut client = compressed(MetricsServiceClient::new(channel), gzip, |c| c.send_compressed(CompressionEncoding::Gzip));
        let partial = client.export(request).await?.into_inner().partial_success;
        Ok(partial
            .filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty())
            .map(|p| format!("{} data points rejected: {}", p.rejected_data_points, p.error_message)))
    }
}
