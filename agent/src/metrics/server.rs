//! The Prometheus scrape endpoint: `GET /metrics` on oxeye's small HTTP server
//! ([`crate::http_server`], which bounds connections, head sizes and lifetimes).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONTENT_TYPE},
    Method, Request, Response, StatusCode,
};
use tokio::net::TcpListener;

use super::{prometheus::render, store::MetricsStore};
use crate::http_server::{self, method_not_allowed, text, Limits};

/// Content type of the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE_TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the `--prometheus-listen` address (a bare port means loopback).
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    http_server::bind(addr, "--prometheus-listen").await
}

/// Serves `/metrics` from `store` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, store: Arc<Mutex<MetricsStore>>) {
    serve_with(listener, store, Limits::default()).await;
}

async fn serve_with(listener: TcpListener, store: Arc<Mutex<MetricsStore>>, limits: Limits) {
    http_server::serve(listener, limits, "metrics endpoint", move |req| {
        let response = respond(&req, &store);
        async move { response }
    })
    .await;
}

fn respond(req: &Request<Incoming>, store: &Mutex<MetricsStore>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/" {
        return text(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed();
    }
    if path == "/" {
        return text(StatusCode::OK, "oxeye metrics exporter: scrape /metrics\n");
    }
    let body = {
        // A panic elsewhere while holding the lock leaves the store readable; better to
        // serve possibly half-updated counters than to fail every scrape from then on.
        let store = store.lock().unwrap_or_else(PoisonError::into_inner);
        render(&store)
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT_0_0_4));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::super::store::{AttrValue, MetricDesc, MetricKind, Resource};
    use super::*;

    static REQUESTS: MetricDesc = MetricDesc {
        name: "test.requests",
        description: "Requests.",
        unit: "{request}",
        kind: MetricKind::Counter,
    };

    fn store() -> Arc<Mutex<MetricsStore>> {
        let mut store = MetricsStore::new(10);
        let res = Resource {
            service_name: "web".into(),
            attributes: vec![],
        };
        store.add(&REQUESTS, &res, vec![("code", AttrValue::Int(200))], 5);
        Arc::new(Mutex::new(store))
    }

    async fn start(limits: Limits) -> std::net::SocketAddr {
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(serve_with(listener, store(), limits));
        addr
    }

    /// Sends `raw` on a fresh connection and returns everything the server sends back before
    /// closing (requests use `Connection: close`); empty if the server closed without a word.
    async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut response = Vec::new();
        // A refused connection may reset instead of answering: that reads as "no response".
        if stream.write_all(raw).await.is_ok() {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
            assert!(read.is_ok(), "server did not answer in time");
        }
        String::from_utf8_lossy(&response).into_owned()
    }

    async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        exchange(addr, raw.as_bytes()).await
    }

    #[tokio::test]
    async fn serves_metrics_and_survives_garbage() {
        let addr = start(Limits::default()).await;

        let response = get(addr, "GET", "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        let body = response.split("\r\n\r\n").nth(1).expect("body");
        assert_eq!(
            body,
            "# HELP test_requests_total Requests.\n# TYPE test_requests_total counter\n\
             test_requests_total{code=\"200\",service_name=\"web\"} 5\n"
        );

        let garbage = exchange(addr, b"\x00\xff\xfe not http at all \x01\r\n\r\n").await;
        assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");

        let again = get(addr, "GET", "/metrics").await;
        assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let addr = start(Limits::default()).await;
        let root = get(addr, "GET", "/").await;
        assert!(
            root.starts_with("HTTP/1.1 200 OK\r\n") && root.contains("/metrics"),
            "{root}"
        );
        assert!(get(addr, "GET", "/nope").await.starts_with("HTTP/1.1 404"));
        let post = get(addr, "POST", "/metrics").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.to_ascii_lowercase().contains("allow: get, head\r\n"), "{post}");
        let head = get(addr, "HEAD", "/metrics").await;
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn slow_client_is_cut_off() {
        let addr = start(Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        // The head never completes: the server must give up and close, not wait forever.
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
            .await
            .expect("server closed the slow connection")
            .ok();
        assert!(get(addr, "GET", "/metrics").await.starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test]
    async fn extra_connections_are_refused_and_slots_come_back() {
        let addr = start(Limits {
            max_connections: 2,
            ..Limits::default()
        })
        .await;
        let idle1 = TcpStream::connect(addr).await.expect("connect");
        let idle2 = TcpStream::connect(addr).await.expect("connect");
        // Give the server time to accept both and hand them their slots.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let refused = get(addr, "GET", "/metrics").await;
        assert!(refused.is_empty(), "{refused}");

        drop((idle1, idle2));
        // Slots are released once the server notices the closes; retry briefly.
        let mut answered = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if get(addr, "GET", "/metrics").await.starts_with("HTTP/1.1 200 OK\r\n") {
                answered = true;
                break;
            }
        }
        assert!(answered);
    }

    #[tokio::test]
    async fn bind_error_is_one_clear_line() {
        let taken = bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("local addr").to_string();
        let err = bind(&addr).await.expect_err("port is taken");
        assert_eq!(
            format!("{err:#}"),
            format!("cannot listen on {addr} for --prometheus-listen: Address already in use")
        );
    }
}
