//! [`Sink`]: the server on its own thread and runtime, and its accessors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::MetricsServiceServer, ExportMetricsServiceRequest,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    profiles_service_server::ProfilesServiceServer, ExportProfilesServiceRequest,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::TraceServiceServer, ExportTraceServiceRequest,
};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::{Router, ServerTlsConfig};
use tonic::transport::{Identity, Server};

use crate::config::{Peer, Reply, SinkConfig};
use crate::devfiler;
use crate::decode::total_samples;
use crate::error::SinkError;
use crate::metrics::{metric_points, total_metric_points, MetricPoint};
use crate::recorder::{Recorder, Retention, Stats};
use crate::service::SinkService;
use crate::spans::{spans, total_spans, DecodedSpan};
use crate::wire::{CountingStream, WireCounters};

/// How long connections may drain after a stop before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running OTLP receiver for profiles, traces and metrics, all three
/// services on one gRPC port.
///
/// It serves on its own OS thread with its own tokio runtime, so plain
/// synchronous tests can use it. Dropping it stops it.
///
/// The accessors without a signal in their name ([`Sink::requests`],
/// [`Sink::attempts`], [`Sink::replies`], [`Sink::wait_for_requests`]) are
/// about profiles; traces and metrics have their own.
pub struct Sink {
    addr: SocketAddr,
    recorder: Arc<Recorder<ExportProfilesServiceRequest>>,
    traces: Arc<Recorder<ExportTraceServiceRequest>>,
    metrics: Arc<Recorder<ExportMetricsServiceRequest>>,
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

        let recorder = Recorder::new(config.script, retention, total_samples);
        let recorder = Arc::new(match config.peer {
            Peer::Any => recorder,
            Peer::Devfiler => recorder.with_rules(devfiler::accepts),
        });
        let traces = Arc::new(Recorder::new(config.trace_script, retention, total_spans));
        let metrics = Arc::new(Recorder::new(
            config.metrics_script,
            retention,
            total_metric_points,
        ));
        let wire = Arc::new(WireCounters::default());

        let mut builder = Server::builder();
        if let Some(tls) = &config.tls {
            let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(SinkError::Tls)?;
        }
        let profiles_service = ProfilesServiceServer::new(SinkService::new(recorder.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(devfiler::MAX_MESSAGE_BYTES);
        let router = builder.add_service(profiles_service);
        // devfiler serves profiles only: the other services answer UNIMPLEMENTED.
        let router = match config.peer {
            Peer::Devfiler => router,
            Peer::Any => router
                .add_service(TraceServiceServer::new(SinkService::new(traces.clone())).accept_compressed(CompressionEncoding::Gzip))
                .add_service(MetricsServiceServer::new(SinkService::new(metrics.clone())).accept_compressed(CompressionEncoding::Gzip)),
        };

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
            traces,
            metrics,
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

    /// Every accepted profiles request (reply `Ok` or `PartialSuccess`), in
    /// arrival order. Empty with [`Retention::CountsOnly`].
    pub fn requests(&self) -> Vec<ExportProfilesServiceRequest> {
        self.recorder.requests()
    }

    /// Forgets the stored requests of all three signals (counters are kept).
    pub fn clear_requests(&self) {
        self.recorder.clear_requests();
        self.traces.clear_requests();
        self.metrics.clear_requests();
    }

    /// Number of profiles `Export` calls that reached the service, accepted
    /// or not.
    pub fn attempts(&self) -> usize {
        self.recorder.attempts()
    }

    /// The reply given to each profiles `Export` call so far, in call order.
    pub fn replies(&self) -> Vec<Reply> {
        self.recorder.replies()
    }

    /// Waits until at least `n` profiles requests were accepted; false on
    /// timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.recorder.wait_for_accepted(n, timeout)
    }

    /// Every accepted trace request, in arrival order. Empty with
    /// [`Retention::CountsOnly`].
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.traces.requests()
    }

    /// The reply given to each trace `Export` call so far, in call order.
    pub fn trace_replies(&self) -> Vec<Reply> {
        self.traces.replies()
    }

    /// Every span of the stored trace requests, decoded (see [`spans`]), in
    /// arrival order.
    pub fn all_spans(&self) -> Vec<DecodedSpan> {
        self.traces.requests().iter().flat_map(spans).collect()
    }

    /// Waits until the accepted trace requests hold at least `n` spans in
    /// all; false on timeout. Works with [`Retention::CountsOnly`] too.
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> bool {
        self.traces.wait_for_units(n as u64, timeout)
    }

    /// Every accepted metrics request, in arrival order. Empty with
    /// [`Retention::CountsOnly`].
    pub fn metrics_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.metrics.requests()
    }

    /// The reply given to each metrics `Export` call so far, in call order.
    pub fn metrics_replies(&self) -> Vec<Reply> {
        self.metrics.replies()
    }

    /// The sum, gauge and histogram points (see [`metric_points`]) of the
    /// most recent stored metrics request only: with cumulative metrics it
    /// holds the current totals. Empty if none was stored.
    pub fn latest_metric_points(&self) -> Vec<MetricPoint> {
        self.metrics
            .last_request()
            .map(|request| metric_points(&request))
            .unwrap_or_default()
    }

    /// Waits until at least `n` metrics requests were accepted; false on
    /// timeout.
    pub fn wait_for_metrics_requests(&self, n: usize, timeout: Duration) -> bool {
        self.metrics.wait_for_accepted(n, timeout)
    }

    /// Bytes read from the TCP connections so far (TLS: encrypted bytes).
    pub fn bytes_received(&self) -> u64 {
        self.wire.received()
    }

    /// Bytes written to the TCP connections so far (TLS: encrypted bytes).
    pub fn bytes_sent(&self) -> u64 {
        self.wire.sent()
    }

    /// Why each refused profiles request was refused (by the peer's rules,
    /// [`crate::Peer`]), in arrival order.
    pub fn refusals(&self) -> Vec<String> {
        self.recorder.refusals()
    }

    /// All running totals at once.
    pub fn stats(&self) -> Stats {
        let (attempts, accepted, samples, refused) = self.recorder.totals();
        let (_, trace_requests, spans, _) = self.traces.totals();
        let (_, metrics_requests, metric_points, _) = self.metrics.totals();
        Stats {
            attempts,
            accepted,
            refused,
            samples,
            trace_requests,
            spans,
            metrics_requests,
            metric_points,
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
