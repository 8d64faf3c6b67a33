//! End-to-end tests of TCP and HTTP tracing: the real oxeye binary and BPF programs watching
//! real servers (nginx, Prometheus) and real clients (curl, ab, and plain sockets), with spans
//! and metrics read back from a real OTLP receiver and a real Prometheus.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use otlp_sink::{DecodedSpan, Sink, SinkConfig};
use oxeye_tests::{
    servers::{free_port, get, parse_exposition, Connection, Nginx, Prometheus},
    deadline, output, Finished, Oxeye,
};

/// Each test's limit, with room for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(150);

/// `SpanKind` values in OTLP.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn sink() -> Sink {
    Sink::start(SinkConfig::localhost()).expect("start otlp-sink")
}

/// oxeye exporting to `sink` every second (and serving Prometheus metrics on `prometheus`).
fn oxeye(test: &str, sink: &Sink, prometheus: Option<u16>) -> Oxeye {
    let addr = sink.addr().to_string();
    let mut args = vec!["--collection-agent".to_owned(), addr, "--disable-tls".to_owned(), "--reporter-interval".to_owned(), "1".to_owned()];
    if let Some(port) = prometheus {
        args.extend(["--prometheus-listen".to_owned(), format!("127.0.0.1:{port}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut oxeye = Oxeye::start(test, &args);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));
    oxeye
}

/// Stops oxeye (it exports what is left) and returns its spans of `service`.
fn stop_and_collect(oxeye: Oxeye, sink: &Sink) -> (Finished, Vec<DecodedSpan>) {
    let finished = oxeye.stop();
    finished.assert_success();
    (finished, sink.all_spans())
}

fn of<'a>(spans: &'a [DecodedSpan], service: &str, kind: i32) -> Vec<&'a DecodedSpan> {
    spans.iter().filter(|s| s.service_name == service && s.kind == kind).collect()
}

/// (method, url.path, status) → spans.
fn by_request(spans: &[&DecodedSpan]) -> BTreeMap<(String, String, String), usize> {
    let mut counts = BTreeMap::new();
    for span in spans {
        let key = (span.attributes["http.request.method"].clone(), span.attributes["url.path"].clone(), span.attributes["http.response.status_code"].clone());
        *counts.entry(key).or_default() += 1;
    }
    counts
}

fn key(method: &str, path: &str, status: u16) -> (String, String, String) {
    (method.to_owned(), path.to_owned(), status.to_string())
}

/// Runs curl; returns the seconds to the whole response it measured.
fn curl(url: &str, extra: &[&str]) -> f64 {
    let output = output(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{time_total}"]).args(extra).arg(url), "curl");
    assert!(output.status.success(), "curl {url} failed");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("curl prints its time")
}

#[test]
fn nginx_requests_from_curl_and_ab_become_exactly_as_many_server_spans() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-nginx");
    let sink = sink();
    let oxeye = oxeye("http-nginx", &sink, None);

    let mut slowest = 0f64;
    for _ in 0..7 {
        slowest = slowest.max(curl(&format!("{}/a/b.txt?x=1", nginx.url()), &[]));
    }
    for _ in 0..5 {
        slowest = slowest.max(curl(&format!("{}/missing", nginx.url()), &[]));
    }
    // Every method oxeye recognises; nginx refuses them on static files.
    const METHODS: [&str; 5] = ["DELETE", "POST", "PUT", "PATCH", "OPTIONS"];
    for method in METHODS {
        slowest = slowest.max(curl(&format!("{}/a/b.txt", nginx.url()), &["-X", method, "-d", "body"]));
    }
    run_ab(&nginx, 2000, &["-k"]);

    assert!(sink.wait_for_spans(2 * (2012 + METHODS.len()), Duration::from_secs(10)), "spans did not arrive");
    let (finished, spans) = stop_and_collect(oxeye, &sink);
    let server = of(&spans, "nginx", SERVER);
    let counts = by_request(&server);
    let refused = METHODS.map(|method| (key(method, "/a/b.txt", 405), 1));
    let mut expected: BTreeMap<_, _> = [(key("GET", "/", 200), 2000), (key("GET", "/a/b.txt", 200), 7), (key("GET", "/missing", 404), 5)].into();
    expected.extend(refused.clone());
    assert_eq!(counts, expected, "nginx server spans per request\n{}", finished.stderr);

    for span in &server {
        let duration = span.end_unix_nano.saturating_sub(span.start_unix_nano);
        assert!(span.end_unix_nano > span.start_unix_nano, "non-positive duration: {span:?}");
        if span.attributes["url.path"] != "/" {
            // Only curl asked for these.
            assert!(duration as f64 / 1e9 <= slowest, "server span of {duration} ns is longer than curl's slowest request ({slowest} s)");
        }
        assert_eq!(span.attributes["server.port"], nginx.port.to_string());
        assert_eq!(span.attributes["network.peer.address"], "127.0.0.1");
        assert!(span.parent_span_id.is_empty() && span.trace_id.len() == 16 && span.span_id.len() == 8);
        assert_eq!(span.name, format!("{} {}", span.attributes["http.request.method"], span.attributes["http.route"]));
        assert_eq!(span.resource.get("process.executable.name").map(String::as_str), Some("nginx"));
    }
    // curl's own requests, seen from the client side.
    let curl_counts = by_request(&of(&spans, "curl", CLIENT));
    let mut curl_expected: BTreeMap<_, _> = [(key("GET", "/a/b.txt", 200), 7), (key("GET", "/missing", 404), 5)].into();
    curl_expected.extend(refused);
    assert_eq!(curl_counts, curl_expected, "curl client spans");
    // ab's 2000, as client spans of ab.
    assert_eq!(by_request(&of(&spans, "ab", CLIENT)), [(key("GET", "/", 200), 2000)].into(), "ab client spans");
}

#[test]
fn connections_without_keep_alive_are_each_counted_once_on_both_sides() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-connections");
    let sink = sink();
    let metrics_port = free_port();
    let oxeye = oxeye("http-connections", &sink, Some(metrics_port));
    // ab without -k: a connection per request, opened with a non-blocking connect that ab
    // calls again once the handshake is done (the second call returns 0).
    const REQUESTS: usize = 300;
    run_ab(&nginx, REQUESTS, &[]);
    let port_label = nginx.port.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let samples = parse_exposition(&get(metrics_port, "/metrics").body);
        let counts: BTreeMap<(String, String), f64> = samples
            .iter()
            .filter(|(name, labels, _)| name.starts_with("oxeye_tcp_connections_") && labels.get("server_port") == Some(&port_label))
            .filter(|(_, labels, _)| labels.get("service_name").is_some_and(|service| service == "ab" || service == "nginx"))
            .map(|(name, labels, value)| ((name.clone(), labels["oxeye_tcp_role"].clone()), *value))
            .collect();
        // Done once both sides have counted every open and close (closes come last).
        let first = counts.values().next().copied().unwrap_or(0.0);
        let done = counts.len() == 4 && first >= REQUESTS as f64 && counts.values().all(|&value| value == first);
        if done || Instant::now() > deadline {
            break counts;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let (finished, _) = stop_and_collect(oxeye, &sink);
    // ab may open up to its concurrency more connections than requests and close them unused;
    // whatever it opened, each side must count every connection once, opened and closed.
    let opened = counts.get(&("oxeye_tcp_connections_opened_total".to_owned(), "server".to_owned())).copied().unwrap_or(0.0);
    assert!((REQUESTS as f64..=(REQUESTS + 4) as f64).contains(&opened), "{opened} connections accepted for {REQUESTS} requests: {counts:?}\n{}", finished.stderr);
    let expected: BTreeMap<(String, String), f64> = ["closed", "opened"]
        .into_iter()
        .flat_map(|event| ["client", "server"].map(|role| ((format!("oxeye_tcp_connections_{event}_total"), role.to_owned()), opened)))
        .collect();
    assert_eq!(counts, expected, "connections to port {port_label}, by ab and nginx\n{}", finished.stderr);
}

#[test]
fn prometheus_scrapes_exact_request_counts_per_method_and_status() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-prometheus");
    let sink = sink();
    let metrics_port = free_port();
    let oxeye = oxeye("http-prometheus", &sink, Some(metrics_port));
    let prometheus = Prometheus::start("http-prometheus", &format!("127.0.0.1:{metrics_port}"));

    let mut connection = Connection::open(nginx.port);
    for i in 0..30 {
        let path = if i % 3 == 0 { "/missing" } else { "/" };
        let response = connection.get(path);
        assert_eq!(response.status, if i % 3 == 0 { 404 } else { 200 });
    }
    for _ in 0..4 {
        curl(&format!("{}/a/b.txt", nginx.url()), &["-I"]);
    }
    let query = "sum by (http_request_method, http_response_status_code) (http_server_request_duration_seconds_count{service_name=\"nginx\"})";
    let expected: BTreeMap<(String, String), f64> =
        [(("GET".to_owned(), "200".to_owned()), 20.0), (("GET".to_owned(), "404".to_owned()), 10.0), (("HEAD".to_owned(), "200".to_owned()), 4.0)].into();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = BTreeMap::new();
    while Instant::now() < deadline {
        seen = prometheus
            .query(query)
            .into_iter()
            .map(|(labels, value)| ((labels["http_request_method"].clone(), labels["http_response_status_code"].clone()), value))
            .collect();
        if seen == expected {
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(seen, expected, "request counts Prometheus scraped\n{}", prometheus.log());
    // The histogram is whole: buckets are cumulative and +Inf equals the count.
    let inf = prometheus.query("sum(http_server_request_duration_seconds_bucket{service_name=\"nginx\",le=\"+Inf\"})");
    assert_eq!(inf.first().map(|(_, v)| *v), Some(34.0));
    let text = get(metrics_port, "/metrics").body;
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"), "{text}");
    assert!(text.contains("# HELP http_server_request_duration_seconds "), "{text}");
    drop(prometheus);
    stop_and_collect(oxeye, &sink);
}

#[test]
fn keep_alive_and_pipelined_requests_are_each_matched_to_their_own_response() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-pipeline");
    let sink = sink();
    let oxeye = oxeye("http-pipeline", &sink, None);
    let status_of = |path: &str| if path == "/missing" { 404 } else { 200 };

    // 1,000 requests, one after the other, on one keep-alive connection.
    let mut connection = Connection::open(nginx.port);
    let paths = ["/", "/missing", "/a/b.txt"];
    for i in 0..1000 {
        let path = paths[i % 3];
        assert_eq!(connection.get(path).status, status_of(path));
    }
    // A pipelined burst: 150 requests (about 6 KiB) in one write, then all the responses.
    let mut burst = Connection::open(nginx.port);
    let burst_paths: Vec<&str> = (0..150).map(|i| paths[(i * 7 + i / 5) % 3]).collect();
    burst.send(&burst_paths, "");
    for path in &burst_paths {
        assert_eq!(burst.receive().status, status_of(path));
    }

    assert!(sink.wait_for_spans(1150, Duration::from_secs(10)), "spans did not arrive");
    let (finished, spans) = stop_and_collect(oxeye, &sink);
    let server = of(&spans, "nginx", SERVER);
    let mut expected = BTreeMap::new();
    for path in (0..1000).map(|i| paths[i % 3]).chain(burst_paths.iter().copied()) {
        *expected.entry(key("GET", path, status_of(path))).or_default() += 1;
    }
    // A response matched to another request would pair a path with the wrong status.
    assert_eq!(by_request(&server), expected, "server spans\n{}", finished.stderr);
    // This test process is the client of the keep-alive connection.
    let me = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let client = of(&spans, &me, CLIENT);
    let client_counts = by_request(&client);
    for path in paths {
        let sequential = (0..1000).filter(|i| paths[i % 3] == path).count();
        let seen = client_counts.get(&key("GET", path, status_of(path))).copied().unwrap_or(0);
        assert!(seen >= sequential, "client spans for {path}: {seen} < {sequential}: {client_counts:?}");
    }
    assert!(client_counts.keys().all(|(_, path, status)| status_of(path).to_string() == *status), "client spans mismatched: {client_counts:?}");
}

#[test]
fn curl_traceparent_links_client_and_server_spans_in_one_trace() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-traceparent");
    let sink = sink();
    let oxeye = oxeye("http-traceparent", &sink, None);
    let header = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    curl(&format!("{}/a/b.txt?id=7", nginx.url()), &["-H", header]);
    curl(&format!("{}/", nginx.url()), &[]);
    // A request head longer than a response's copy limit (1 KiB): its header comes after a
    // large cookie, as a browser's often does.
    let cookie = format!("Cookie: session={}", "c".repeat(3000));
    let late = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    curl(&format!("{}/late", nginx.url()), &["-H", &cookie, "-H", late]);
    assert!(sink.wait_for_spans(6, Duration::from_secs(10)), "spans did not arrive");
    let (_, spans) = stop_and_collect(oxeye, &sink);

    let find = |service: &str, kind: i32, path: &str| -> DecodedSpan {
        let found: Vec<_> = of(&spans, service, kind).into_iter().filter(|s| s.attributes["url.path"] == path).cloned().collect();
        assert_eq!(found.len(), 1, "{service} {kind} {path}: {found:?}");
        found[0].clone()
    };
    let trace_id = hex("4bf92f3577b34da6a3ce929d0e0e4736");
    let caller = hex("00f067aa0ba902b7");
    let (client, server) = (find("curl", CLIENT, "/a/b.txt"), find("nginx", SERVER, "/a/b.txt"));
    assert_eq!((&client.trace_id, &server.trace_id), (&trace_id, &trace_id), "one trace");
    assert_eq!(client.span_id, caller, "the client span is the one its header named");
    assert_eq!(server.parent_span_id, client.span_id, "the server span's parent is the client span");
    assert!(client.start_unix_nano <= server.start_unix_nano && server.end_unix_nano <= client.end_unix_nano, "the server span nests in the client span");
    assert_eq!(client.attributes["server.port"], nginx.port.to_string());

    // Without a header: a new trace, shared by neither.
    let (client, server) = (find("curl", CLIENT, "/"), find("nginx", SERVER, "/"));
    assert!(server.parent_span_id.is_empty() && client.trace_id != trace_id && server.trace_id != trace_id);

    let (client, server) = (find("curl", CLIENT, "/late"), find("nginx", SERVER, "/late"));
    let late_trace = hex("0af7651916cd43dd8448eb211c80319c");
    assert_eq!((&client.trace_id, &server.trace_id), (&late_trace, &late_trace), "a header 3 KiB into the request is read");
    assert_eq!(server.parent_span_id, hex("b7ad6b7169203331"));
}

#[test]
fn garbage_and_half_open_connections_make_no_spans_and_no_growth() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-garbage");
    let sink = sink();
    let metrics_port = free_port();
    let oxeye = oxeye("http-garbage", &sink, Some(metrics_port));
    // A listener that reads and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("address").port();
    thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut round = |count: usize| {
        let mut half_open = Vec::new();
        for i in 0..count {
            for port in [nginx.port, silent_port, metrics_port] {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                // Every fourth connection starts with the half request, so it is parsed as HTTP.
                let length = if i % 4 == 0 { 0 } else { (random() % 3000) as usize };
                let bytes: Vec<u8> = (0..length).map(|_| random() as u8).collect();
                let _ = stream.write_all(&bytes);
                // Half a request line, or HTTP-looking garbage, left hanging.
                let _ = stream.write_all(if i % 2 == 0 { b"GET /half-open HT" } else { b"HTTP/1.1 200 OK\r\n\r\n" });
                half_open.push(stream);
            }
        }
        thread::sleep(Duration::from_millis(300));
        drop(half_open);
    };
    // Warm-up: oxeye also profiles this busy test process, and names its frames (loading this
    // binary's symbols) on its first samples of it.
    round(200);
    round(200);
    thread::sleep(Duration::from_secs(2));
    let rss_before = rss_kib(oxeye.pid());
    for _ in 0..5 {
        round(200);
    }
    thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(oxeye.pid());
    // Still serving, and still tracing real requests.
    assert!(get(metrics_port, "/metrics").status == 200, "the metrics endpoint stopped answering after garbage");
    assert_eq!(get(nginx.port, "/a/b.txt").status, 200);
    assert!(sink.wait_for_spans(1, Duration::from_secs(10)), "the real request made no span");
    let (finished, spans) = stop_and_collect(oxeye, &sink);
    let nginx_spans = of(&spans, "nginx", SERVER);
    assert_eq!(by_request(&nginx_spans), [(key("GET", "/a/b.txt", 200), 1)].into(), "only the real request is a span\n{}", finished.stderr);
    assert!(spans.iter().all(|s| s.attributes.get("url.path").map(String::as_str) != Some("/half-open")), "a half-open request became a span");
    eprintln!("oxeye RssAnon {rss_before} KiB before, {rss_after} KiB after");
    assert!(rss_after < rss_before + 4 * 1024, "oxeye grew from {rss_before} KiB to {rss_after} KiB over 3,000 more garbage connections");
}

#[test]
fn tcp_connection_is_reported_with_the_bytes_it_moved() {
    let _deadline = deadline(LIMIT);
    let sink = sink();
    let metrics_port = free_port();
    let oxeye = oxeye("tcp-bytes", &sink, Some(metrics_port));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    const UP: usize = 123_457;
    const DOWN: usize = 7_654_321;
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        while got < UP {
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0);
            got += n;
        }
        stream.write_all(&vec![b'y'; DOWN]).expect("write");
    });
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    client.write_all(&vec![b'x'; UP]).expect("write");
    let mut received = Vec::new();
    client.read_to_end(&mut received).expect("read");
    assert_eq!(received.len(), DOWN);
    drop(client);
    server.join().expect("server thread");

    let port_label = port.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let bytes = loop {
        let samples = parse_exposition(&get(metrics_port, "/metrics").body);
        let bytes: BTreeMap<(String, String), f64> = samples
            .iter()
            .filter(|(name, labels, _)| name == "oxeye_tcp_bytes_total" && labels.get("server_port") == Some(&port_label))
            .map(|(_, labels, value)| ((labels["oxeye_tcp_role"].clone(), labels["network_io_direction"].clone()), *value))
            .collect();
        if bytes.len() == 4 || Instant::now() > deadline {
            break bytes;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let expected: BTreeMap<(String, String), f64> = [
        (("client".to_owned(), "transmit".to_owned()), UP as f64),
        (("client".to_owned(), "receive".to_owned()), DOWN as f64),
        (("server".to_owned(), "transmit".to_owned()), DOWN as f64),
        (("server".to_owned(), "receive".to_owned()), UP as f64),
    ]
    .into();
    assert_eq!(bytes, expected, "TCP byte counters of the connection on port {port}");
    let (finished, _) = stop_and_collect(oxeye, &sink);
    let points = sink.latest_metric_points();
    let opened: f64 = points
        .iter()
        .filter(|p| p.name == "oxeye.tcp.connections.opened" && p.attributes.get("server.port") == Some(&port_label))
        .map(|p| match p.value {
            otlp_sink::MetricValue::Sum(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(opened, 2.0, "one connection, seen from both ends, in OTLP metrics\n{}", finished.stderr);

    // The statistics above came from the TCP-state hook oxeye chose. This host's kernel has no
    // kprobes and refuses fentry programs (EPERM), so the tracepoint it is, and the line says why.
    let hooks: Vec<&str> = finished.stderr.lines().filter(|line| line.contains("hooks chosen")).collect();
    assert_eq!(hooks.len(), 1, "one `hooks chosen` line\n{}", finished.stderr);
    let hooks = hooks[0];
    for field in ["cpu_samples=perf_event:cpu-clock", "tcp_state=tracepoint:sock/inet_sock_set_state", "connections=tracepoint:syscalls"] {
        assert!(hooks.contains(field), "`hooks chosen` lacks {field}: {hooks}");
    }
    let fallbacks = hooks.split_once("tcp_state_fallbacks=\"").map(|(_, rest)| rest).unwrap_or_default();
    assert!(fallbacks.contains("fentry: ") && fallbacks.contains("kprobe: "), "fallbacks should explain fentry and kprobe: {hooks}");
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn keep_alive_connection_opened_before_oxeye_is_traced_from_its_next_request() {
    let _deadline = deadline(LIMIT);
    let nginx = Nginx::start("http-preexisting");
    let mut connection = Connection::open(nginx.port);
    assert_eq!(connection.get("/").status, 200);
    let sink = sink();
    let oxeye = oxeye("http-preexisting", &sink, None);
    let paths = ["/", "/missing"];
    for i in 0..50 {
        let path = paths[i % 2];
        assert_eq!(connection.get(path).status, if path == "/" { 200 } else { 404 });
    }
    assert!(sink.wait_for_spans(100, Duration::from_secs(10)), "spans did not arrive");
    let (finished, spans) = stop_and_collect(oxeye, &sink);
    assert_eq!(
        by_request(&of(&spans, "nginx", SERVER)),
        [(key("GET", "/", 200), 25), (key("GET", "/missing", 404), 25)].into(),
        "server spans of a connection found mid-stream\n{}",
        finished.stderr
    );
}

/// `ab -c 4` sending `requests` requests to nginx's `/` (with `extra` flags); fails the test
/// unless every one completed.
fn run_ab(nginx: &Nginx, requests: usize, extra: &[&str]) {
    let ab = output(Command::new("ab").args(["-q", "-n", &requests.to_string(), "-c", "4"]).args(extra).arg(format!("{}/", nginx.url())), "ab");
    let text = String::from_utf8_lossy(&ab.stdout);
    assert!(text.contains(&format!("Complete requests:      {requests}")) && text.contains("Failed requests:        0"), "ab did not complete:\n{text}");
}
