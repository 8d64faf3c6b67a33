//! HTTP tracing at saturation: wrk with 64 connections keeps nginx (and this machine's CPUs)
//! as busy as they can be for 10 s of wall time, while oxeye traces both sides. Nothing may be
//! lost: the request-duration metrics on both sides count exactly what wrk completed (up to the
//! requests in flight when it stopped), every exchange becomes a span, and the collector
//! receives every span.

use std::time::Duration;

use otlp_sink::{Retention, Sink, SinkConfig};
use oxeye_tests::{
    deadline, number_before,
    servers::{free_port, get, parse_exposition, route_count, wrk, Nginx},
    Oxeye,
};

/// nginx's and oxeye's starts, 10 s of load, the catch-up, and the export of about a million
/// spans at the stop, with room for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(240);
/// wrk's connections: it counts a request once it read the response, so each side may have
/// seen up to this many more requests when it stopped.
const CONNECTIONS: u64 = 64;

#[test]
fn every_request_is_counted_and_spanned_at_saturation() {
    let _deadline = deadline::deadline(LIMIT);
    let nginx = Nginx::start("http-saturation");
    // Counts only: a million spans decoded and kept would be gigabytes.
    let sink = Sink::start_with(SinkConfig::localhost(), Retention::CountsOnly).expect("start otlp-sink");
    let metrics_port = free_port();
    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start(
        "http-saturation",
        &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1", "--prometheus-listen", &metrics_port.to_string()],
    );
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));

    let completed = wrk(&format!("{}/", nginx.url()), CONNECTIONS, 10, 10_000);
    // The agent catches up with the ring (it holds well under a second of records).
    std::thread::sleep(Duration::from_secs(3));
    let exposition = get(metrics_port, "/metrics").body;
    let finished = oxeye.stop();
    finished.assert_success();

    let lost = number_before(&finished.stderr, " network records lost in kernel").unwrap_or(u64::MAX);
    assert_eq!(lost, 0, "records lost in the kernel at saturation:\n{}", finished.stderr);
    // The metric says the same as the final line.
    let lost_metric: Vec<f64> =
        parse_exposition(&exposition).into_iter().filter(|(name, _, _)| name == "oxeye_net_records_lost_total").map(|(_, _, value)| value).collect();
    assert_eq!(lost_metric, [0.0], "oxeye_net_records_lost_total: one series, at 0");
    let in_flight = completed..=completed + CONNECTIONS;
    for (metric, side) in [("http_server_request_duration_seconds_count", "nginx's"), ("http_client_request_duration_seconds_count", "wrk's")] {
        let counted = route_count(&exposition, metric, "/");
        assert!(in_flight.contains(&counted), "{metric} counts {counted} of {side} requests, wrk completed {completed}:\n{}", finished.stderr);
    }
    let server = number_before(&finished.stderr, " as server").expect("the server count");
    let client = number_before(&finished.stderr, " as client").expect("the client count");
    assert!(in_flight.contains(&server) && in_flight.contains(&client), "{server} server and {client} client exchanges for {completed} requests:\n{}", finished.stderr);
    let exported = number_before(&finished.stderr, " spans (").expect("the spans line");
    assert_eq!(exported, server + client, "spans exported against exchanges traced:\n{}", finished.stderr);
    let received = sink.stats().spans;
    assert_eq!(received, exported, "the collector received {received} of {exported} spans");
    eprintln!("wrk {completed} requests; {server} server and {client} client exchanges; {exported} spans exported and received; 0 records lost");
}
