//! [`Sink`]: the server on its own thread and runtime, and its accessors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::profiles::v1development::{
    profiles_service_server::ProfilesServiceServer, ExportProfilesServiceRequest,
};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::{Router, ServerTlsConfig};
use tonic::transport::{Identity, Server};

use crate::config::{Reply, SinkConfig};
use crate::error::SinkError;
use crate::recorder::{Recorder, Retention, Stats};
use crate::service::SinkService;
use crate::wire::{CountingStream, WireCounters};

/// How long connections may drain after a stop before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running OTLP profiles receiver.
///
/// It serves on its own OS thread with its own tokio runtime, so plain
/// synchronous tests can use it. Dropping it stops it.
pub struct Sink {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    wire: Arc<WireCounters>,
    stop_tx: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), SinkError>>>,
}

impl Sink {
    /// Starts a sink that keeps every accepted request. Returns once the
    /// socket is listening (connections are queued until the server runs).
    pub fn start(config: SinkConfig) -> Result<Sink, SinkError> {
        Self::start_with(config, Retention::All)
    }

    /// Starts a sink with a choice of what it keeps in memory.
    pub fn start_with(config: SinkConfig, retention: Retention) -> Result<Sink, SinkError> {
        let listen_err = |source| SinkError::Listen {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;

        let recorder = Arc::new(Recorder::new(config.script, retention));
        let wire = Arc::new(WireCounters::default());

        let mut builder = Server::builder();
        if let Some(tls) = &config.tls {
            let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(SinkError::Tls)?;
        }
        let service = ProfilesServiceServer::new(SinkService::new(recorder.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let router = builder.add_service(service);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SinkError::Runtime)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let thread_wire = wire.clone();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-sink-{}", addr.port()))
            .spawn(move || {
                let result = runtime.block_on(serve(router, listener, thread_wire, stop_rx));
                runtime.shutdown_timeout(Duration::from_secs(1));
                result
            })
            .map_err(SinkError::Runtime)?;

        Ok(Sink {
            addr,
            recorder,
            wire,
            stop_tx,
            thread: Some(thread),
        })
    }

    /// The address the sink listens on (with the real port if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL a client connects to: `http://ADDR` or, with TLS,
    /// `https://ADDR`.
    pub fn endpoint(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every accepted request (reply `Ok` or `PartialSuccess`), in arrival
    /// order. Empty with [`Retention::CountsOnly`].
    pub fn requests(&self) -> Vec<ExportProfilesServiceRequest> {
        self.recorder.requests()
    }

    /// Forgets the stored requests (counters are kept).
    pub fn clear_requests(&self) {
        self.recorder.clear_requests()
    }

    /// Number of `Export` calls that reached the service, accepted or not.
    pub fn attempts(&self) -> usize {
        self.recorder.attempts()
    }

    /// The reply given to each `Export` call so far, in call order.
    pub fn replies(&self) -> Vec<Reply> {
        self.recorder.replies()
    }

    /// Waits until at least `n` requests were accepted; false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.recorder.wait_for_accepted(n, timeout)
    }

    /// Bytes read from the TCP connections so far (TLS: encrypted bytes).
    pub fn bytes_received(&self) -> u64 {
        self.wire.received()
    }

    /// Bytes written to the TCP connections so far (TLS: encrypted bytes).
    pub fn bytes_sent(&self) -> u64 {
        self.wire.sent()
    }

    /// All running totals at once.
    pub fn stats(&self) -> Stats {
        let (attempts, accepted, samples) = self.recorder.totals();
        Stats {
            attempts,
            accepted,
            samples,
            bytes_received: self.wire.received(),
            bytes_sent: self.wire.sent(),
            connections: self.wire.connections(),
        }
    }

    /// Whether the server thread is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops accepting, lets open connections drain (for a few seconds at
    /// most) and joins the server thread. Returns the server's error if it
    /// had failed. Idempotent; the recorded data stays readable.
    pub fn stop(&mut self) -> Result<(), SinkError> {
        let _ = self.stop_tx.send(true);
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread.join().unwrap_or(Err(SinkError::Panicked)),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Serves until `stop` turns true, then drains for at most [`SHUTDOWN_GRACE`].
async fn serve(
    router: Router,
    listener: std::net::TcpListener,
    wire: Arc<WireCounters>,
    stop: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(SinkError::Runtime)?;
    let incoming = TcpListenerStream::new(listener).map(move |conn| {
        conn.map(|stream| {
            let _ = stream.set_nodelay(true);
            CountingStream::new(stream, wire.clone())
        })
    });
    let mut signal_rx = stop.clone();
    let signal = async move {
        // An error means the Sink is gone: stop as well.
        let _ = signal_rx.wait_for(|stop| *stop).await;
    };
    let mut grace_rx = stop;
    let grace = async move {
        let _ = grace_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = router.serve_with_incoming_shutdown(incoming, signal) => {
            result.map_err(SinkError::Serve)
        }
        () = grace => Ok(()),
    }
}
