//! `otlp-sink`: run an OTLP profiles, traces and metrics receiver and print
//! its totals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use otlp_sink::{proto::trace::v1::span::SpanKind, self_signed, DecodedSpan, Retention, Sink, SinkConfig, Stats};

/// An OTLP gRPC receiver (profiles, traces and metrics) that counts what it
/// gets.
///
/// Every stats line reads `requests=N samples=N wire_bytes=N spans=N
/// metric_points=N refused=N`: profiles requests and samples, bytes read from
/// the sockets, spans, metric data points (summed over metrics requests), and
/// profiles requests refused by `--devfiler`'s rules.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:11000")]
    listen: SocketAddr,
    /// Serve TLS with a generated self-signed certificate, written (PEM) to
    /// this path for clients to trust.
    #[arg(long)]
    tls_cert_out: Option<PathBuf>,
    /// Seconds between two stats lines.
    #[arg(long, default_value_t = 1.0)]
    stats_interval: f64,
    /// On exit, write every span received to this file, one per line: kind, service name,
    /// span name, then `key=value` attributes, separated by tabs. Keeps every request in
    /// memory: for tests, not for long runs.
    #[arg(long, value_name = "PATH")]
    spans_out: Option<PathBuf>,
    /// Behave like devfiler 0.15: serve profiles only (traces and metrics get UNIMPLEMENTED)
    /// and refuse, whole and with INVALID_ARGUMENT, every request devfiler would refuse;
    /// each refusal is logged with its reason.
    #[arg(long)]
    devfiler: bool,
}

fn stats_line(stats: &Stats) -> String {
    format!(
        "requests={} samples={} wire_bytes={} spans={} metric_points={} refused={}",
        stats.accepted, stats.samples, stats.bytes_received, stats.spans, stats.metric_points, stats.refused
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.stats_interval.is_finite() && args.stats_interval > 0.0,
        "--stats-interval must be a positive number of seconds"
    );
    let interval = Duration::from_secs_f64(args.stats_interval);

    let mut config = SinkConfig::new(args.listen);
    if args.devfiler {
        config.peer = otlp_sink::Peer::Devfiler;
    }
    if let Some(path) = &args.tls_cert_out {
        let identity = self_signed("localhost")?;
        std::fs::write(path, &identity.cert_pem)
            .with_context(|| format!("writing the certificate to {}", path.display()))?;
        config.tls = Some(identity);
    }
    let retention = if args.spans_out.is_some() { Retention::All } else { Retention::CountsOnly };
    let mut sink = Sink::start_with(config, retention)?;
    eprintln!("otlp-sink: listening on {}", sink.addr());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut logged_refusals = 0;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    println!("{}", stats_line(&sink.stats()));
                    for why in sink.refusals().iter().skip(logged_refusals) {
                        eprintln!("otlp-sink: refused a profiles request as devfiler would: {why}");
                    }
                    logged_refusals = sink.refusals().len();
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
            }
            anyhow::ensure!(sink.is_running(), "the server stopped unexpectedly");
        }
        anyhow::Ok(())
    })?;
    let stopped = sink.stop();
    println!("{}", stats_line(&sink.stats()));
    if let Some(path) = &args.spans_out {
        let lines: String = sink.all_spans().iter().map(span_line).collect();
        std::fs::write(path, lines).with_context(|| format!("writing the spans to {}", path.display()))?;
    }
    stopped.context("stopping the server")
}

/// One `--spans-out` line; tabs and line breaks inside values become spaces.
fn span_line(span: &DecodedSpan) -> String {
    let clean = |text: &str| text.replace(['\t', '\n', '\r'], " ");
    let kind = SpanKind::try_from(span.kind).map_or("UNKNOWN", |kind| kind.as_str_name().trim_start_matches("SPAN_KIND_"));
    let mut line = format!("{kind}\t{}\t{}", clean(&span.service_name), clean(&span.name));
    for (key, value) in &span.attributes {
        line.push_str(&format!("\t{}={}", clean(key), clean(value)));
    }
    line.push('\n');
    line
}
