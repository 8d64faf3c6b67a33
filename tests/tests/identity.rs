//! One process, one identity: a server started with `OTEL_SERVICE_NAME` carries that
//! `service.name`, and the same process attributes, on its profiles, its spans and its
//! metrics, so that a backend can join its traces and profiles.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use otlp_sink::{stacks, Sink, SinkConfig};
use oxeye_tests::{
    deadline::{self, spawn},
    servers::{free_port, get, wait_for_port, COMPUTING_SERVER},
    Oxeye,
};

const LIMIT: Duration = Duration::from_secs(150);
/// `SpanKind::Server`.
const SERVER: i32 = 2;
const REQUESTS: usize = 20;

#[test]
fn otel_service_name_names_the_process_on_profiles_spans_and_metrics() {
    let _deadline = deadline::deadline(LIMIT);
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let port = free_port();
    let mut server = spawn(
        Command::new("python3")
            .args(["-c", COMPUTING_SERVER, &port.to_string()])
            .env("OTEL_SERVICE_NAME", "checkout")
            .stdout(Stdio::null()),
        "python3 http.server",
    );
    wait_for_port(port, Duration::from_secs(20));
    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start("identity", &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"]);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));
    for i in 0..REQUESTS {
        assert_eq!(get(port, &format!("/item/{i}")).status, 200);
    }
    assert!(sink.wait_for_spans(REQUESTS, Duration::from_secs(20)), "spans did not arrive");
    let finished = oxeye.stop();
    finished.assert_success();
    server.stop();
    let pid = server.id().to_string();

    let spans: Vec<_> = sink.all_spans().into_iter().filter(|s| s.kind == SERVER && s.resource.get("process.pid") == Some(&pid)).collect();
    assert_eq!(spans.len(), REQUESTS, "server spans of the python process:\n{}", finished.stderr);
    let span_resource = &spans[0].resource;
    assert_eq!(span_resource.get("service.name").map(String::as_str), Some("checkout"), "{span_resource:?}");

    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).filter(|s| s.resource.get("process.pid") == Some(&pid)).collect();
    assert!(!samples.is_empty(), "no profile samples of the server (pid {pid}):\n{}", finished.stderr);
    let profile_resource = &samples[0].resource;
    let same = |key: &str| (span_resource.get(key), profile_resource.get(key));
    for key in ["service.name", "process.pid", "process.executable.name", "process.executable.path", "host.name", "host.arch"] {
        let (on_spans, on_profiles) = same(key);
        assert!(on_spans.is_some(), "{key} missing on spans: {span_resource:?}");
        assert_eq!(on_spans, on_profiles, "{key}: spans {span_resource:?}, profiles {profile_resource:?}");
    }
    assert!(samples.iter().all(|s| s.resource.get("service.name").map(String::as_str) == Some("checkout")));

    let durations: BTreeMap<String, usize> = sink
        .latest_metric_points()
        .into_iter()
        .filter(|p| p.name == "http.server.request.duration")
        .fold(BTreeMap::new(), |mut by, p| {
            *by.entry(p.service_name).or_default() += 1;
            by
        });
    assert!(durations.contains_key("checkout"), "metrics by service: {durations:?}");
}
