//! Regression test: a `readv`/`recvmsg` whose first iovec is empty. The payload tracer used to
//! take the empty iovec as the data's place: it missed the request, and on a connection whose
//! last receive had filled its buffer it copied 8 KiB from the empty iovec's base (bytes the
//! syscall never wrote) as a continuation.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use otlp_sink::{Sink, SinkConfig};
use oxeye_tests::{deadline, servers::free_port, start_workload, workload, Oxeye};

/// `SpanKind::Server` in OTLP.
const SERVER: i32 = 2;
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The payload hooks this kernel offers first: the socket tracepoints where it has all three.
fn best_payload_hooks() -> &'static str {
    let has = |event: &str| std::path::Path::new("/sys/kernel/tracing/events").join(event).exists();
    if has("sock/sock_recv_length") && has("sock/sock_send_length") && has("tcp/tcp_sendmsg_locked") {
        "payloads=tp_btf:sock_recv_length,tcp_sendmsg_locked,sock_send_length"
    } else {
        "payloads=tracepoint:syscalls"
    }
}

#[test]
fn requests_received_into_a_second_iovec_are_traced_and_the_empty_first_is_not_copied() {
    iovec_scenario("auto", best_payload_hooks());
}

/// The syscall tracepoints, which kernels without the socket tracepoints use, on this one too.
#[test]
fn the_same_with_the_syscall_tracepoints() {
    iovec_scenario("syscalls", "payloads=tracepoint:syscalls");
}

fn iovec_scenario(payload_hooks: &str, expected_hooks: &str) {
    let _deadline = deadline(Duration::from_secs(150));
    let server_binary = workload("payload_iovec");
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start(
        "payload-iovec",
        &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1", "--payload-hooks", payload_hooks],
    );
    let hooks = oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(5));
    assert!(hooks.contains(expected_hooks), "--payload-hooks {payload_hooks} should give {expected_hooks}: {hooks}");

    let port = free_port();
    let mut server = start_workload(&server_binary, &[&port.to_string()]);
    let started = Instant::now();
    let mut client = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                let _ = error;
                thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("cannot connect to payload_iovec on port {port}: {error}"),
        }
    };
    let paths = ["/first", "/readv", "/recvmsg"];
    for path in paths {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        if path == "/first" {
            // Two full 16-byte reads: the connection's next receive is taken as a continuation.
            assert_eq!(request.len(), 32);
        }
        client.write_all(request.as_bytes()).expect("send request");
        let mut response = vec![0; RESPONSE.len()];
        client.read_exact(&mut response).expect("read response");
        assert_eq!(response, RESPONSE);
    }
    drop(client);
    let exited = server.wait();
    assert!(exited.status.success(), "payload_iovec failed: {}", exited.status);

    // Three server spans, and the test's three client spans.
    let arrived = sink.wait_for_spans(6, Duration::from_secs(10));
    let finished = oxeye.stop();
    finished.assert_success();
    let spans = sink.all_spans();
    let mut requests = BTreeMap::new();
    for span in spans.iter().filter(|span| span.service_name == "payload_iovec" && span.kind == SERVER) {
        let attribute = |key: &str| span.attributes.get(key).cloned().unwrap_or_default();
        *requests.entry((attribute("http.request.method"), attribute("url.path"), attribute("http.response.status_code"))).or_insert(0) += 1;
    }
    let expected: BTreeMap<_, _> = paths.iter().map(|path| (("GET".to_owned(), (*path).to_owned(), "200".to_owned()), 1)).collect();
    assert_eq!(requests, expected, "server spans of payload_iovec (all spans arrived: {arrived})\n{}", finished.stderr);
    for span in &spans {
        assert!(!format!("{span:?}").contains("ZZZZ"), "a span carries bytes of the empty iovec: {span:?}");
    }
}
