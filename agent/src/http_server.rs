//! The small HTTP/1 server behind oxeye's local endpoints (Prometheus `/metrics`, the devfiler
//! symbol endpoint).
//!
//! Each endpoint faces whatever can reach its port, so the server defends itself cheaply: a
//! deadline for the request head (which also closes idle keep-alive connections), a bound on
//! the head's size, a cap on each connection's lifetime (against clients that never read the
//! response), and a cap on concurrent connections, beyond which new ones are closed at once.

use std::{convert::Infallible, future::Future, io, sync::Arc, time::Duration};

use anyhow::anyhow;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, warn};

/// Defensive limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request head, counted from when the server starts waiting
    /// for it (so idle keep-alive connections are closed after this too).
    pub header_read_timeout: Duration,
    /// Hard cap on one connection's life.
    pub max_connection_lifetime: Duration,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Most bytes of a request head (hyper's buffer; 8 KiB is its least).
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connection_lifetime: Duration::from_secs(60),
            max_connections: 64,
            max_head_bytes: 16 * 1024,
        }
    }
}

/// Pause after a failed `accept`, so that running out of file descriptors does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The address to listen on for `text`: `HOST:PORT` as given, or loopback for a bare `PORT`
/// or `:PORT` (an endpoint is only reachable from elsewhere when asked for).
pub fn listen_address(text: &str) -> String {
    let port = text.strip_prefix(':').unwrap_or(text);
    if port.parse::<u16>().is_ok() {
        format!("127.0.0.1:{port}")
    } else {
        text.to_owned()
    }
}

/// Binds `addr` (see [`listen_address`]) for `flag`, with an error that says what failed and
/// why in one line, e.g. `cannot listen on 127.0.0.1:9400 for --prometheus-listen: Address
/// already in use`.
pub async fn bind(addr: &str, flag: &str) -> anyhow::Result<TcpListener> {
    let addr = listen_address(addr);
    TcpListener::bind(&addr).await.map_err(|e| anyhow!("cannot listen on {addr} for {flag}: {}", io_error_text(&e)))
}

/// Serves `handler` on `listener` until the task is dropped or aborted. Each connection runs
/// in its own task; errors only affect their own connection. `name` labels log lines.
pub async fn serve<H, F>(listener: TcpListener, limits: Limits, name: &'static str, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Per-connection failures (ECONNABORTED) and resource exhaustion (EMFILE)
                // alike: neither is a reason to stop serving.
                warn!("{name}: accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "{name}: too many connections, closing new one");
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            serve_connection(stream, limits, name, handler).await;
            drop(permit);
        });
    }
}

async fn serve_connection<H, F>(stream: TcpStream, limits: Limits, name: &'static str, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let peer = stream.peer_addr().ok();
    let service = service_fn(move |req: Request<Incoming>| {
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.max_connection_lifetime, conn).await {
        Ok(Ok(())) => {}
        // Malformed requests, header timeouts and resets are the client's problem.
        Ok(Err(e)) => debug!(?peer, "{name}: connection error: {e}"),
        Err(_) => debug!(?peer, "{name}: connection exceeded its lifetime, closing"),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// 405 for anything but GET and HEAD (hyper leaves the body out of HEAD responses itself).
pub fn method_not_allowed() -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

/// `io::Error` text without the ` (os error 98)` tail, which only repeats the message.
fn io_error_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ports_listen_on_loopback() {
        assert_eq!(listen_address("9400"), "127.0.0.1:9400");
        assert_eq!(listen_address(":9400"), "127.0.0.1:9400");
        assert_eq!(listen_address("0.0.0.0:9400"), "0.0.0.0:9400");
        assert_eq!(listen_address("[::1]:9400"), "[::1]:9400");
    }

    #[tokio::test]
    async fn bind_error_is_one_clear_line() {
        let taken = bind("127.0.0.1:0", "--some-listen").await.expect("bind");
        let addr = taken.local_addr().expect("local addr").to_string();
        let err = bind(&addr, "--some-listen").await.expect_err("port is taken");
        assert_eq!(format!("{err:#}"), format!("cannot listen on {addr} for --some-listen: Address already in use"));
    }
}
