//! End-to-end tests of OTLP profile export: the real oxeye binary and BPF programs, sending to a
//! real gRPC receiver (otlp-sink) that can be absent, fail on purpose, or require TLS.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use otlp_sink::{check, stacks, Reply, Sink, SinkConfig};
use oxeye_tests::{deadline, output, output_dir, run_workload, servers::Nginx, start_workload, workload, Oxeye};
use tonic::Code;

/// Each test's limit: a few seconds of workload, oxeye's start and stop, with room for a CPU
/// three times slower (the collector-down test runs for about a minute by design).
const LIMIT: Duration = Duration::from_secs(150);

fn sink(script: Vec<Reply>) -> Sink {
    let mut config = SinkConfig::localhost();
    config.script = script;
    Sink::start(config).expect("start otlp-sink")
}

fn oxeye_to(sink_addr: &str, test: &str, extra: &[&str]) -> Oxeye {
    let mut args = vec!["--samples-per-second", "99", "--collection-agent", sink_addr, "--reporter-interval", "1"];
    args.extend_from_slice(extra);
    Oxeye::start(test, &args)
}

fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn exported_profiles_carry_whole_chains_and_valid_dictionaries() {
    let _deadline = deadline(LIMIT);
    let sink = sink(Vec::new());
    let chain = workload("chain");
    let oxeye = oxeye_to(&sink.addr().to_string(), "export-chain", &["--disable-tls"]);
    let chain_pid = run_workload(&chain, &["3"]).pid;
    let finished = oxeye.stop();
    finished.assert_success();
    let requests = sink.requests();
    assert!(!requests.is_empty(), "no request arrived:\n{}", finished.stderr);

    let (mut chain_samples, mut whole_chains, mut all_samples) = (0u64, 0u64, 0u64);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    for request in &requests {
        check::all(request).unwrap_or_else(|problem| panic!("invalid request: {problem}"));
        for profile in request.resource_profiles.iter().flat_map(|r| &r.scope_profiles).flat_map(|s| &s.profiles) {
            for sample in &profile.samples {
                for &t in &sample.timestamps_unix_nano {
                    assert!(t >= profile.time_unix_nano && t < profile.time_unix_nano + profile.duration_nano, "timestamp outside its profile");
                }
            }
        }
        for sample in stacks(request) {
            all_samples += sample.count;
            if sample.resource.get("process.pid") != Some(&chain_pid.to_string()) {
                continue;
            }
            let expected_resource: BTreeMap<&str, String> = [
                ("service.name", "chain".to_owned()),
                ("process.executable.name", "chain".to_owned()),
                ("process.executable.path", chain.display().to_string()),
                ("host.name", hostname.clone()),
                ("host.arch", if cfg!(target_arch = "x86_64") { "amd64" } else { "arm64" }.to_owned()),
            ]
            .into();
            for (key, value) in &expected_resource {
                assert_eq!(sample.resource.get(*key), Some(value), "resource attribute {key}: {:?}", sample.resource);
            }
            assert_eq!(sample.attributes.get("thread.id"), Some(&chain_pid.to_string()));
            assert_eq!(sample.attributes.get("thread.name").map(String::as_str), Some("chain"));
            let cpu: usize = sample.attributes["cpu.logical_number"].parse().unwrap();
            assert!(cpu < thread::available_parallelism().unwrap().get(), "cpu {cpu}");
            assert_eq!(sample.count as usize, sample.timestamps.len(), "one timestamp per sample");
            chain_samples += sample.count;
            // Stacks are stored innermost first.
            for leaf in ["leaf_a", "leaf_b"] {
                if sample.frames.starts_with(&[leaf.to_owned(), "middle".into(), "outer".into(), "main".into()]) {
                    assert!(sample.frame_types[..4].iter().all(|t| t == "native"), "{:?}", sample.frame_types);
                    whole_chains += sample.count;
                }
            }
        }
    }
    assert!(chain_samples >= 150, "only {chain_samples} samples of chain arrived");
    let share = whole_chains as f64 / chain_samples as f64;
    assert!(share >= 0.90, "{:.1}% of chain's exported samples carry main→outer→middle→leaf", share * 100.0);
    // Everything sampled was exported: the collector got what the local profile counted.
    assert_eq!(all_samples, finished.folded().total(), "exported samples differ from the local profile");
    assert_eq!(finished.reported("exported", "dropped"), 0, "{}", finished.stderr);
}

#[test]
fn collector_down_at_start_then_up_gets_new_profiles_within_the_queue_bound() {
    let _deadline = deadline(LIMIT);
    // A port nobody listens on yet.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("127.0.0.1:{port}");
    let queue_bound = 16 * 1024;
    let bound = queue_bound.to_string();
    // One process only: a batch's size must not depend on what else the machine runs (with
    // every process of a busy machine, one second of samples outgrew the bound by itself).
    // It outlasts the longest wait below.
    let mut busy = start_workload(&workload("chain"), &["60"]);
    let pid = busy.id().to_string();
    let oxeye = oxeye_to(&address, "export-down", &["--pid", &pid, "--disable-tls", "--max-export-queue-bytes", &bound, "--summary-interval", "1"]);
    let started = Instant::now();
    let mut peak_rss_kib = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", oxeye.pid())).unwrap();
        // Anonymous memory: what a growing queue would use. (VmRSS also counts the unwind
        // tables' BPF maps, which oxeye memory-maps: fixed-size, resident from the start.)
        let rss: u64 = status.lines().find_map(|l| l.strip_prefix("RssAnon:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap();
        peak_rss_kib = peak_rss_kib.max(rss);
        thread::sleep(Duration::from_millis(250));
    }
    let mut config = SinkConfig::new(address.parse().unwrap());
    config.script = Vec::new();
    let sink = Sink::start(config).expect("start the late collector");
    let up_at = unix_now_ns();
    // Back-off may have grown to about 16 s ± 50% while the collector was down.
    let arrived = sink.wait_for_requests(1, Duration::from_secs(40));
    thread::sleep(Duration::from_secs(2));
    let finished = oxeye.stop();
    busy.stop();
    finished.assert_success();
    assert!(arrived, "nothing arrived after the collector came up:\n{}", finished.stderr);
    let newest = sink.requests().iter().flat_map(stacks).flat_map(|s| s.timestamps).max().unwrap_or(0);
    assert!(newest >= up_at, "no sample taken after the collector came up arrived");
    let dropped = finished.reported("exported", "dropped");
    assert!(dropped > 0, "10 s of samples cannot fit in {queue_bound} bytes, yet none were reported dropped:\n{}", finished.stderr);
    for line in finished.stderr.lines().filter(|l| l.contains("queue ")) {
        let kib: usize = line.split("queue ").nth(1).and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap();
        assert!(kib * 1024 <= queue_bound, "queue above its bound: {line}");
    }
    eprintln!("peak anonymous memory while the collector was down: {peak_rss_kib} KiB");
    assert!(peak_rss_kib < 40 * 1024, "oxeye's anonymous memory grew to {peak_rss_kib} KiB while the collector was down");
}

#[test]
fn collector_down_at_stop_costs_one_flush_wait_for_every_signal() {
    let _deadline = deadline(LIMIT);
    // A port nobody listens on: profiles, spans and metrics all queue up.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nginx = Nginx::start("export-down-at-stop");
    let mut oxeye = oxeye_to(&format!("127.0.0.1:{port}"), "export-down-at-stop", &["--disable-tls"]);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(10));
    for _ in 0..5 {
        let status = output(std::process::Command::new("curl").args(["-s", "-o", "/dev/null", &nginx.url()]), "curl").status;
        assert!(status.success(), "curl {} failed", nginx.url());
    }
    // Long enough for every exporter to have tried and failed at least once.
    thread::sleep(Duration::from_secs(3));
    let stopping = Instant::now();
    let finished = oxeye.stop();
    let took = stopping.elapsed();
    finished.assert_success();
    // One 5-second wait for all of them, plus detaching and writing the outputs; a wait per
    // signal would be 15 s.
    assert!(took < Duration::from_secs(11), "oxeye took {took:?} to stop with its collector down:\n{}", finished.stderr);
    // What could not be sent is reported, not silently missing.
    assert!(finished.reported("spans (", "spans") == 0 && finished.reported("spans (", "dropped") > 0, "{}", finished.stderr);
    assert!(finished.reported("samples (", "dropped") > 0, "{}", finished.stderr);
}

#[test]
fn unavailable_collector_is_retried_until_it_recovers() {
    let _deadline = deadline(LIMIT);
    let sink = sink(vec![Reply::Status(Code::Unavailable), Reply::Status(Code::Unavailable)]);
    let oxeye = oxeye_to(&sink.addr().to_string(), "export-retry", &["--disable-tls"]);
    run_workload(&workload("chain"), &["3"]);
    let finished = oxeye.stop();
    finished.assert_success();
    assert!(sink.attempts() >= 3, "only {} attempts", sink.attempts());
    assert!(!sink.requests().is_empty(), "nothing accepted after the collector recovered");
    let exported: u64 = sink.requests().iter().map(otlp_sink::total_samples).sum();
    assert_eq!(finished.reported("exported", "samples"), exported);
    assert_eq!(finished.reported("exported", "dropped"), 0, "retried batches must not be lost:\n{}", finished.stderr);
    assert_eq!(exported, finished.folded().total(), "every sample reached the collector in the end");
}

#[test]
fn partial_success_is_logged_with_its_counts() {
    let _deadline = deadline(LIMIT);
    let sink = sink(vec![Reply::PartialSuccess { rejected: 3, message: "three profiles too old".into() }]);
    let oxeye = oxeye_to(&sink.addr().to_string(), "export-partial", &["--disable-tls"]);
    run_workload(&workload("chain"), &["2"]);
    let finished = oxeye.stop();
    finished.assert_success();
    let line = finished.stderr.lines().find(|l| l.contains("only in part")).unwrap_or_else(|| panic!("partial success not logged:\n{}", finished.stderr));
    assert!(line.contains("3 profiles rejected") && line.contains("three profiles too old"), "{line}");
    assert!(sink.attempts() >= 2, "later batches still go out");
}

#[test]
fn non_retryable_errors_are_not_retried() {
    let _deadline = deadline(LIMIT);
    let sink = sink(vec![Reply::Status(Code::InvalidArgument); 1000]);
    let oxeye = oxeye_to(&sink.addr().to_string(), "export-refused", &["--disable-tls"]);
    run_workload(&workload("chain"), &["3"]);
    let finished = oxeye.stop();
    finished.assert_success();
    let attempts = sink.attempts();
    // About one batch per second of running plus the final one; each is tried exactly once.
    assert!((2..=10).contains(&attempts), "{attempts} attempts for about 5 batches:\n{}", finished.stderr);
    assert!(sink.requests().is_empty());
    assert!(finished.reported("exported", "refused") > 0, "{}", finished.stderr);
    assert!(finished.stderr.contains("not retrying"), "{}", finished.stderr);
}

#[test]
fn tls_collector_is_trusted_only_with_its_ca() {
    let _deadline = deadline(LIMIT);
    let identity = otlp_sink::self_signed("localhost").expect("make a certificate");
    let ca_file = output_dir("export-tls-ca").join("ca.pem");
    std::fs::write(&ca_file, &identity.cert_pem).unwrap();
    let mut config = SinkConfig::localhost();
    config.tls = Some(identity);
    let sink = Sink::start(config).expect("start TLS sink");
    let address = format!("localhost:{}", sink.addr().port());
    let ca = ca_file.to_str().unwrap();

    let without_ca = oxeye_to(&address, "export-tls-refused", &[]);
    // Something to sample (an idle machine gives no samples, and then no export attempts).
    run_workload(&workload("chain"), &["3"]);
    let finished = without_ca.stop();
    finished.assert_success();
    assert!(sink.requests().is_empty(), "oxeye sent profiles to a server it should not trust");
    assert!(finished.reported("exported", "failed attempts") > 0, "{}", finished.stderr);

    let with_ca = oxeye_to(&address, "export-tls", &["--tls-ca-file", ca]);
    run_workload(&workload("chain"), &["2"]);
    let finished = with_ca.stop();
    finished.assert_success();
    assert!(!sink.requests().is_empty(), "nothing arrived over TLS with --tls-ca-file:\n{}", finished.stderr);
    assert_eq!(finished.reported("exported", "dropped"), 0, "{}", finished.stderr);
}

#[test]
fn standard_otlp_environment_variables_are_honoured() {
    let _deadline = deadline(LIMIT);
    let sink = sink(Vec::new());
    let endpoint = format!("http://{}", sink.addr());
    let env = [
        ("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.name=from-env"),
    ];
    let oxeye = Oxeye::start_with_env("export-env", &["--samples-per-second", "99", "--reporter-interval", "1"], &env);
    let chain_pid = run_workload(&workload("chain"), &["2"]).pid;
    let finished = oxeye.stop();
    finished.assert_success();
    let chain: Vec<_> = sink.requests().iter().flat_map(stacks).filter(|s| s.resource.get("process.pid") == Some(&chain_pid.to_string())).collect();
    assert!(!chain.is_empty(), "nothing arrived at the endpoint from OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT:\n{}", finished.stderr);
    for sample in chain {
        assert_eq!(sample.resource.get("deployment.environment").map(String::as_str), Some("ci"));
        assert_eq!(sample.resource.get("service.name").map(String::as_str), Some("from-env"), "OTEL_RESOURCE_ATTRIBUTES overrides");
        assert_eq!(sample.resource.get("process.executable.name").map(String::as_str), Some("chain"));
    }
}

#[test]
fn bad_endpoints_are_clear_errors() {
    let _deadline = deadline(LIMIT);
    for (args, expected) in [
        (&["--collection-agent", "nohost"][..], "must be HOST:PORT"),
        (&["--collection-agent", "ftp://x:1"], "unsupported scheme"),
        (&["--collection-agent", "127.0.0.1:1", "--disable-tls", "--tls-ca-file", "/nonexistent"], "needs TLS"),
    ] {
        let output = output(std::process::Command::new(oxeye_tests::oxeye_bin()).args(args).arg("--duration").arg("1"), "oxeye with a bad endpoint");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected) && stderr.trim().lines().count() == 1, "{args:?}: {stderr}");
    }
}
