//! Head sampling of spans under load (`--trace-sample-ratio`): wrk keeps nginx busy for a few
//! seconds of wall time; spans come out for a tenth of the traces, while the request-duration
//! metric still counts every request wrk completed, and the final line accounts for every span
//! left out.

use std::time::Duration;

use otlp_sink::{Sink, SinkConfig};
use oxeye_tests::{
    deadline, number_before,
    servers::{free_port, get, parse_exposition, route_count, wrk, Nginx},
    Oxeye,
};

/// nginx's and oxeye's starts, 3 s of load, the export and the stop, with room for a slow CPU.
const LIMIT: Duration = Duration::from_secs(120);
/// `SpanKind::Server`.
const SERVER: i32 = 2;
const RATIO: f64 = 0.1;
/// wrk's connections: requests it counts as completed are those whose responses it read, so
/// nginx may have answered up to this many more when wrk stopped.
const CONNECTIONS: u64 = 8;

#[test]
fn a_tenth_of_the_spans_are_kept_and_metrics_count_every_request() {
    let _deadline = deadline::deadline(LIMIT);
    let nginx = Nginx::start("http-sampling");
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let metrics_port = free_port();
    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start(
        "http-sampling",
        &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1", "--trace-sample-ratio", "0.1", "--prometheus-listen", &metrics_port.to_string()],
    );
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));

    let completed = wrk(&format!("{}/", nginx.url()), CONNECTIONS, 3, 1_000);
    // The metrics are read from the kernel's records every interval: wait for the last ones.
    std::thread::sleep(Duration::from_secs(3));
    let exposition = get(metrics_port, "/metrics").body;
    let finished = oxeye.stop();
    finished.assert_success();

    let counted = route_count(&exposition, "http_server_request_duration_seconds_count", "/");
    let lost = number_before(&finished.stderr, " network records lost in kernel").unwrap_or(u64::MAX);
    assert_eq!(lost, 0, "records lost in the kernel:\n{}", finished.stderr);
    assert!(
        (completed..=completed + CONNECTIONS).contains(&counted),
        "the request-duration metric counts {counted} nginx requests, wrk completed {completed}:\n{}",
        finished.stderr
    );

    let server_spans = sink.all_spans().into_iter().filter(|s| s.kind == SERVER && s.service_name == "nginx").count() as f64;
    let share = server_spans / counted as f64;
    assert!((share - RATIO).abs() <= 0.02, "{server_spans} nginx server spans for {counted} requests: {:.3}, expected {RATIO} ± 0.02", share);
    // Every traced exchange (nginx's and wrk's) is either exported or sampled out.
    let exported = number_before(&finished.stderr, " spans (").expect("the spans line");
    let sampled_out = number_before(&finished.stderr, " sampled out").expect("the sampled-out count");
    let server = number_before(&finished.stderr, " as server").expect("the server count");
    let client = number_before(&finished.stderr, " as client").expect("the client count");
    assert_eq!(exported + sampled_out, server + client, "spans exported plus sampled out, against exchanges traced:\n{}", finished.stderr);
    // The metric says the same, scraped after the load (but before the exchanges still in
    // flight when wrk stopped ended, on both sides).
    let metric = parse_exposition(&exposition).into_iter().filter(|(name, _, _)| name == "oxeye_spans_sampled_out_total").map(|(_, _, value)| value).sum::<f64>() as u64;
    assert!((sampled_out.saturating_sub(2 * CONNECTIONS)..=sampled_out).contains(&metric), "oxeye_spans_sampled_out_total {metric}, the final line {sampled_out}");
    eprintln!("wrk {completed} requests; metric {counted}; nginx server spans {server_spans} ({:.1}%); {exported} spans exported, {sampled_out} sampled out", share * 100.0);
}
