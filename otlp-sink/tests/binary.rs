//! The `otlp-sink` binary: TLS cert output, stats lines, clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use otlp_sink::fixtures;
use otlp_sink::proto::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use otlp_sink::proto::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest,
};
use otlp_sink::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(20);

/// The numeric `name=N` field of a stats line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn two_spans() -> ExportTraceServiceRequest {
    let span = |name: &str| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span("a"), span("b")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn binary_serves_tls_prints_stats_and_exits_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("otlp-sink-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert_path = dir.join("cert.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_otlp-sink"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--stats-interval",
            "0.2",
            "--tls-cert-out",
        ])
        .arg(&cert_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");

    let stderr = child.stderr.take().expect("stderr piped");
    let mut first = String::new();
    BufReader::new(stderr)
        .read_line(&mut first)
        .expect("reads stderr");
    let addr = first
        .trim()
        .strip_prefix("otlp-sink: listening on ")
        .unwrap_or_else(|| panic!("unexpected first stderr line {first:?}"))
        .to_string();

    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let ca = std::fs::read_to_string(&cert_path).expect("certificate written");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&ca))
                    .domain_name("localhost"),
            )
            .expect("TLS config")
            .connect()
            .await
            .expect("connects");
        let mut client = ProfilesServiceClient::new(channel.clone());
        client
            .export(fixtures::valid_request())
            .await
            .expect("accepted");
        TraceServiceClient::new(channel)
            .export(two_spans())
            .await
            .expect("spans accepted");
    });
    drop(rt);

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a stats line with the request");
        assert!(line.starts_with("requests="), "{line}");
        if line.starts_with("requests=1 samples=3 wire_bytes=") && line.contains(" spans=2 ") {
            assert!(line.ends_with(" metric_points=0 refused=0"), "{line}");
            break;
        }
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("binary exits");
    assert!(exit.success(), "{exit:?}");
    reader.join().expect("reader thread");
    let last = lines.try_iter().last().expect("a final stats line");
    assert!(
        last.starts_with("requests=1 samples=3 wire_bytes="),
        "unexpected final line {last:?}"
    );
    let wire = field(&last, "wire_bytes").expect("wire_bytes field");
    assert!(wire > 0);
    assert_eq!(field(&last, "spans"), Some(2), "{last}");
    assert_eq!(field(&last, "metric_points"), Some(0), "{last}");
    let _ = std::fs::remove_dir_all(&dir);
}
