//! End-to-end tests of the sink with a real tonic client over loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use otlp_sink::proto::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
};
use otlp_sink::proto::collector::profiles::v1development::{
    profiles_service_client::ProfilesServiceClient, ExportProfilesServiceRequest,
};
use otlp_sink::proto::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use otlp_sink::proto::common::v1::{any_value, AnyValue, KeyValue};
use otlp_sink::proto::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use otlp_sink::proto::resource::v1::Resource;
use otlp_sink::proto::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use otlp_sink::{
    fixtures, self_signed, DecodedSpan, MetricPoint, MetricValue, Reply, Retention, Sink,
    SinkConfig,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(10);

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

async fn connect(url: String, tls: Option<&str>) -> ProfilesServiceClient<Channel> {
    let mut endpoint = Endpoint::from_shared(url)
        .expect("valid endpoint")
        .connect_timeout(WAIT);
    if let Some(ca_pem) = tls {
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .domain_name("localhost"),
            )
            .expect("client TLS config");
    }
    let channel = endpoint.connect().await.expect("connects");
    ProfilesServiceClient::new(channel)
}

#[test]
fn plaintext_script_and_recording() {
    let mut config = SinkConfig::localhost();
    config.script = vec![
        Reply::Status(tonic::Code::Unavailable),
        Reply::PartialSuccess {
            rejected: 2,
            message: "too old".into(),
        },
    ];
    let mut sink = Sink::start(config).expect("sink starts");
    let request = fixtures::valid_request();

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = connect(sink.endpoint(false), None).await;
        let status = client
            .export(request.clone())
            .await
            .expect_err("first call is scripted to fail");
        assert_eq!(status.code(), tonic::Code::Unavailable);

        let partial = client
            .export(request.clone())
            .await
            .expect("second call is accepted")
            .into_inner()
            .partial_success
            .expect("partial success reported");
        assert_eq!(partial.rejected_profiles, 2);
        assert_eq!(partial.error_message, "too old");

        let ok = client
            .export(request.clone())
            .await
            .expect("third call is accepted");
        assert_eq!(ok.into_inner().partial_success, None);
    });

    assert!(sink.wait_for_requests(2, WAIT));
    assert!(!sink.wait_for_requests(3, Duration::from_millis(50)));
    assert_eq!(sink.attempts(), 3);
    assert_eq!(
        sink.replies(),
        vec![
            Reply::Status(tonic::Code::Unavailable),
            Reply::PartialSuccess {
                rejected: 2,
                message: "too old".into()
            },
            Reply::Ok,
        ]
    );
    assert_eq!(sink.requests(), vec![request.clone(), request.clone()]);
    let stats = sink.stats();
    assert_eq!((stats.attempts, stats.accepted, stats.samples), (3, 2, 6));
    assert_eq!(stats.connections, 1);
    // Three requests went over the wire, plus HTTP/2 framing.
    let payload = request.encoded_len() as u64;
    assert!(sink.bytes_received() > 3 * payload, "{stats:?}");
    assert!(sink.bytes_sent() > 0);

    drop(rt);
    sink.stop().expect("clean stop");
    sink.stop().expect("stop is idempotent");
    assert!(!sink.is_running());
    assert_eq!(sink.requests().len(), 2, "data stays readable after stop");
    assert!(
        std::net::TcpStream::connect(sink.addr()).is_err(),
        "listener closed after stop"
    );
}

#[test]
fn tls_with_self_signed_certificate() {
    let identity = self_signed("localhost").expect("certificate");
    let mut config = SinkConfig::localhost();
    config.tls = Some(identity.clone());
    let mut sink = Sink::start(config).expect("sink starts");
    let request = fixtures::valid_request();

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = connect(sink.endpoint(true), Some(&identity.cert_pem)).await;
        client
            .export(request.clone())
            .await
            .expect("accepted over TLS");
    });
    assert!(sink.wait_for_requests(1, WAIT));
    assert_eq!(sink.requests(), vec![request.clone()]);
    // The handshake alone carries the client hello and finished messages.
    assert!(sink.bytes_received() > request.encoded_len() as u64 + 200);

    // A client that does not trust the certificate gets nowhere.
    rt.block_on(async {
        let other = self_signed("localhost").expect("certificate");
        let endpoint = Endpoint::from_shared(sink.endpoint(true))
            .expect("valid endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&other.cert_pem))
                    .domain_name("localhost"),
            )
            .expect("client TLS config");
        assert!(endpoint.connect().await.is_err());
    });
    drop(rt);
    sink.stop().expect("clean stop");
    assert_eq!(sink.attempts(), 1);
}

#[test]
fn gzip_requests_and_counts_only_retention() {
    let mut sink =
        Sink::start_with(SinkConfig::localhost(), Retention::CountsOnly).expect("sink starts");
    // A request that compresses well: many identical samples.
    let mut request: ExportProfilesServiceRequest = fixtures::valid_request();
    let profile = &mut request.resource_profiles[0].scope_profiles[0].profiles[0];
    let sample = profile.samples[0].clone();
    profile.samples = vec![sample; 2000];
    let raw = request.encoded_len() as u64;

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = connect(sink.endpoint(false), None)
            .await
            .send_compressed(CompressionEncoding::Gzip);
        client.export(request.clone()).await.expect("gzip accepted");
    });
    assert!(sink.wait_for_requests(1, WAIT));
    assert!(sink.requests().is_empty());
    let stats = sink.stats();
    assert_eq!(stats.samples, 6000);
    assert!(stats.bytes_received > 0);
    assert!(
        stats.bytes_received < raw / 4,
        "gzip should shrink {raw} bytes: {stats:?}"
    );
    drop(rt);
    sink.stop().expect("clean stop");
}

#[test]
fn drop_stops_the_server() {
    let sink = Sink::start(SinkConfig::localhost()).expect("sink starts");
    let addr = sink.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(sink);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn bad_listen_address_and_identity_are_errors() {
    let taken = Sink::start(SinkConfig::localhost()).expect("sink starts");
    assert!(Sink::start(SinkConfig::new(taken.addr())).is_err());

    let mut config = SinkConfig::localhost();
    config.tls = Some(otlp_sink::TlsIdentity {
        cert_pem: "not a certificate".into(),
        key_pem: "not a key".into(),
    });
    assert!(Sink::start(config).is_err());
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            string_kv("service.name", service),
            kv("process.pid", any_value::Value::IntValue(42)),
        ],
        ..Default::default()
    })
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Two resources: a server span with a child in "api", a root in "worker".
fn trace_request() -> ExportTraceServiceRequest {
    let server = Span {
        trace_id: vec![0xaa; 16],
        span_id: vec![1; 8],
        name: "GET /items".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 5_000,
        attributes: vec![
            string_kv("http.method", "GET"),
            kv("http.status_code", any_value::Value::IntValue(200)),
        ],
        ..Default::default()
    };
    let child = Span {
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        name: "SELECT items".into(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 2_000,
        end_time_unix_nano: 3_000,
        attributes: vec![string_kv("db.system", "postgresql")],
        ..server.clone()
    };
    let job = Span {
        trace_id: vec![0xbb; 16],
        span_id: vec![3; 8],
        name: "job".into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: 7,
        end_time_unix_nano: 9,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource("api"),
                scope_spans: vec![ScopeSpans {
                    spans: vec![server, child],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                resource: resource("worker"),
                scope_spans: vec![ScopeSpans {
                    spans: vec![job],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

fn int_point(attributes: Vec<KeyValue>, value: i64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    }
}

/// A cumulative counter (int), a double gauge and a histogram, all at `step`.
fn metrics_request(step: u64) -> ExportMetricsServiceRequest {
    let counter = Metric {
        name: "requests".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![
                int_point(vec![string_kv("route", "/a")], 10 * step as i64),
                int_point(vec![string_kv("route", "/b")], step as i64),
            ],
            aggregation_temporality: 2, // cumulative
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let gauge = Metric {
        name: "temperature".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                value: Some(number_data_point::Value::AsDouble(20.5)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "latency".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![kv("shard", any_value::Value::IntValue(3))],
                count: 3 * step,
                sum: Some(1.5 * step as f64),
                bucket_counts: vec![step, 2 * step, 0],
                explicit_bounds: vec![0.1, 1.0],
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("api"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter, gauge, histogram],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn traces_are_recorded_and_decoded() {
    let mut config = SinkConfig::localhost();
    config.trace_script = vec![Reply::Status(tonic::Code::ResourceExhausted)];
    let mut sink = Sink::start(config).expect("sink starts");
    let request = trace_request();

    let rt = client_runtime();
    rt.block_on(async {
        let channel = Endpoint::from_shared(sink.endpoint(false))
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connects");
        let mut client = TraceServiceClient::new(channel.clone());
        let status = client
            .export(request.clone())
            .await
            .expect_err("first trace call is scripted to fail");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let ok = client
            .export(request.clone())
            .await
            .expect("second trace call is accepted");
        assert_eq!(ok.into_inner().partial_success, None);
        // Profiles on the same connection have their own (empty) script.
        ProfilesServiceClient::new(channel)
            .export(fixtures::valid_request())
            .await
            .expect("profiles accepted");
    });

    assert!(sink.wait_for_spans(3, WAIT));
    assert!(!sink.wait_for_spans(4, Duration::from_millis(50)));
    assert!(sink.wait_for_requests(1, WAIT));
    assert_eq!(sink.trace_requests(), vec![request.clone()]);
    assert_eq!(
        sink.trace_replies(),
        vec![Reply::Status(tonic::Code::ResourceExhausted), Reply::Ok]
    );
    assert_eq!(sink.replies(), vec![Reply::Ok], "profiles script untouched");
    assert!(sink.metrics_requests().is_empty());

    let spans = sink.all_spans();
    assert_eq!(spans, otlp_sink::spans(&request));
    let api_resource = map(&[("process.pid", "42"), ("service.name", "api")]);
    assert_eq!(
        spans[0],
        DecodedSpan {
            service_name: "api".into(),
            name: "GET /items".into(),
            kind: SpanKind::Server as i32,
            trace_id: vec![0xaa; 16],
            span_id: vec![1; 8],
            parent_span_id: Vec::new(),
            start_unix_nano: 1_000,
            end_unix_nano: 5_000,
            attributes: map(&[("http.method", "GET"), ("http.status_code", "200")]),
            resource: api_resource.clone(),
        }
    );
    assert_eq!(spans[1].name, "SELECT items");
    assert_eq!(spans[1].kind, SpanKind::Client as i32);
    assert_eq!(spans[1].trace_id, spans[0].trace_id);
    assert_eq!(spans[1].parent_span_id, spans[0].span_id);
    assert_eq!(spans[1].attributes, map(&[("db.system", "postgresql")]));
    assert_eq!(spans[1].resource, api_resource);
    assert_eq!(spans[2].service_name, "worker");
    assert_eq!(spans[2].name, "job");
    assert!(spans[2].attributes.is_empty());

    let stats = sink.stats();
    assert_eq!((stats.trace_requests, stats.spans), (1, 3), "{stats:?}");
    assert_eq!((stats.attempts, stats.accepted, stats.samples), (1, 1, 3));
    assert_eq!((stats.metrics_requests, stats.metric_points), (0, 0));

    drop(rt);
    sink.stop().expect("clean stop");
    sink.clear_requests();
    assert!(sink.trace_requests().is_empty() && sink.all_spans().is_empty());
    assert_eq!(sink.stats().spans, 3, "counters survive clearing");
}

#[test]
fn metrics_are_recorded_and_latest_points_decoded() {
    let mut config = SinkConfig::localhost();
    config.metrics_script = vec![Reply::PartialSuccess {
        rejected: 1,
        message: "late".into(),
    }];
    let mut sink = Sink::start(config).expect("sink starts");
    assert!(sink.latest_metric_points().is_empty());

    let rt = client_runtime();
    rt.block_on(async {
        let mut client = MetricsServiceClient::new(
            Endpoint::from_shared(sink.endpoint(false))
                .expect("valid endpoint")
                .connect()
                .await
                .expect("connects"),
        )
        .send_compressed(CompressionEncoding::Gzip);
        let partial = client
            .export(metrics_request(1))
            .await
            .expect("first metrics call is accepted")
            .into_inner()
            .partial_success
            .expect("partial success reported");
        assert_eq!(partial.rejected_data_points, 1);
        assert_eq!(partial.error_message, "late");
        let ok = client
            .export(metrics_request(2))
            .await
            .expect("second metrics call is accepted");
        assert_eq!(ok.into_inner().partial_success, None);
    });

    assert!(sink.wait_for_metrics_requests(2, WAIT));
    assert_eq!(
        sink.metrics_requests(),
        vec![metrics_request(1), metrics_request(2)]
    );
    // Only the latest (cumulative) request counts.
    let point = |name: &str, attributes: &[(&str, &str)], value| MetricPoint {
        name: name.into(),
        service_name: "api".into(),
        attributes: map(attributes),
        resource: map(&[("service.name", "api"), ("process.pid", "42")]),
        value,
    };
    assert_eq!(
        sink.latest_metric_points(),
        vec![
            point("requests", &[("route", "/a")], MetricValue::Sum(20.0)),
            point("requests", &[("route", "/b")], MetricValue::Sum(2.0)),
            point("temperature", &[], MetricValue::Sum(20.5)),
            point(
                "latency",
                &[("shard", "3")],
                MetricValue::Histogram {
                    count: 6,
                    sum: 3.0,
                    bucket_counts: vec![2, 4, 0],
                    bounds: vec![0.1, 1.0],
                }
            ),
        ]
    );
    let stats = sink.stats();
    assert_eq!(
        (stats.metrics_requests, stats.metric_points),
        (2, 8),
        "{stats:?}"
    );
    assert_eq!(
        (stats.attempts, stats.trace_requests, stats.spans),
        (0, 0, 0)
    );
    assert!(sink.requests().is_empty() && sink.trace_requests().is_empty());
    drop(rt);
    sink.stop().expect("clean stop");
}

#[test]
fn counts_only_retention_still_counts_spans_and_points() {
    let mut sink =
        Sink::start_with(SinkConfig::localhost(), Retention::CountsOnly).expect("sink starts");
    let rt = client_runtime();
    rt.block_on(async {
        let channel = Endpoint::from_shared(sink.endpoint(false))
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connects");
        TraceServiceClient::new(channel.clone())
            .export(trace_request())
            .await
            .expect("spans accepted");
        MetricsServiceClient::new(channel)
            .export(metrics_request(1))
            .await
            .expect("metrics accepted");
    });
    assert!(sink.wait_for_spans(3, WAIT));
    assert!(sink.wait_for_metrics_requests(1, WAIT));
    assert!(sink.trace_requests().is_empty() && sink.all_spans().is_empty());
    assert!(sink.metrics_requests().is_empty() && sink.latest_metric_points().is_empty());
    let stats = sink.stats();
    assert_eq!((stats.spans, stats.metric_points), (3, 4), "{stats:?}");
    drop(rt);
    sink.stop().expect("clean stop");
}

#[test]
fn devfiler_mode_refuses_what_devfiler_refuses_and_serves_profiles_only() {
    let mut sink = Sink::start(SinkConfig::devfiler()).expect("sink starts");
    let rt = client_runtime();
    rt.block_on(async {
        let channel = Endpoint::from_shared(sink.endpoint(false))
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connects");
        let mut profiles = ProfilesServiceClient::new(channel.clone());
        profiles
            .export(fixtures::valid_request())
            .await
            .expect("a valid request is accepted");
        // A mapping with a GNU build ID but no htlhash file ID: devfiler refuses the whole call.
        let mut bad = fixtures::valid_request();
        let dict = bad.dictionary.as_mut().expect("fixture has a dictionary");
        dict.string_table.push("process.executable.build_id.gnu".into());
        dict.attribute_table.push(otlp_sink::proto::profiles::v1development::KeyValueAndUnit {
            key_strindex: dict.string_table.len() as i32 - 1,
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("ab12".into())) }),
            unit_strindex: 0,
        });
        let attribute = dict.attribute_table.len() as i32 - 1;
        dict.mapping_table[1].attribute_indices.push(attribute);
        let status = profiles.export(bad).await.expect_err("devfiler refuses it");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("failed to get process.executable.build_id"), "{}", status.message());
        // devfiler has no trace or metrics service.
        let status = TraceServiceClient::new(channel.clone())
            .export(trace_request())
            .await
            .expect_err("no trace service");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        let status = MetricsServiceClient::new(channel)
            .export(metrics_request(1))
            .await
            .expect_err("no metrics service");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    });
    let stats = sink.stats();
    assert_eq!((stats.attempts, stats.accepted, stats.refused), (2, 1, 1));
    assert_eq!(sink.refusals().len(), 1);
    sink.stop().expect("clean stop");
}
