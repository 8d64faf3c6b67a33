//! The main loop: load the probes, drain samples, show progress, stop cleanly, write outputs.

use std::{
    io::IsTerminal,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use symbolizer::kallsyms::KernelSymbols;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    time::{interval, sleep, MissedTickBehavior},
};
use tracing::{debug, info, warn};

use crate::{
    bpf::{Loaded, ProbeConfig, Probes, DRAIN_INTERVAL},
    cli::Args,
    collector::{monotonic_to_unix_offset, Collector},
    export::{self, ExportConfig, Exporter, Metrics, Profiles, Signal, Traces},
    http_server,
    live,
    metrics::{self, MetricsStore},
    net::{spans::SpanBatch, NetTracker},
    otlp::{build_request, resource::HostInfo, BuildContext, SampleBatch},
    output::{self, RunInfo},
    privileges,
    symbolize::FrameNamer,
    symbols::{self, Catalog, RangesBuilder},
    unwind::Unwinder,
};

/// How often exited processes are swept from the cache.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);
/// Most samples held for one export interval (about 8 MB); more are counted as dropped.
const MAX_BATCH_SAMPLES: usize = 250_000;
/// Longest wait for the unwind tables of running processes before sampling starts.
const INITIAL_TABLES_WAIT: Duration = Duration::from_secs(3);
/// How long queued profiles get to reach the collector when oxeye stops.
const EXPORT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most spans held between two drains (they are queued for export as soon as a request's worth
/// is there); more are counted as dropped.
const MAX_BATCH_SPANS: usize = 50_000;
/// Most series per metric; more fold into one overflow series.
const MAX_SERIES_PER_METRIC: usize = 2_000;
/// The network events ring buffer: a few hundred thousand payload records of slack.
const NET_RING_BYTES: u32 = 8 << 20;

/// Runs oxeye until Ctrl-C, SIGTERM or `--duration`, then writes the outputs.
pub async fn run(args: Args) -> Result<()> {
    privileges::check()?;
    if let Some(pid) = args.pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("process {pid} does not exist");
        }
    }
    let kernel = match KernelSymbols::load() {
        Ok(symbols) => Some(symbols),
        Err(error) => {
            warn!("kernel frames will show addresses only: {error}");
            None
        }
    };
    // The exporters check their endpoints and TLS set-up before anything touches the kernel.
    let exporter = start_exporter::<Profiles>(&args)?;
    let trace_network = !args.no_network;
    let (span_exporter, metric_exporter) =
        if trace_network { (start_exporter::<Traces>(&args)?, start_exporter::<Metrics>(&args)?) } else { (None, None) };
    let metric_store = Arc::new(Mutex::new(MetricsStore::new(MAX_SERIES_PER_METRIC)));
    let prometheus = match &args.prometheus_listen {
        Some(address) => {
            let listener = metrics::bind(address).await?;
            info!(address = %address, "serving Prometheus metrics at /metrics");
            Some(tokio::spawn(metrics::serve(listener, metric_store.clone())))
        }
        None => None,
    };
    let symbols = match &args.symbols_listen {
        Some(address) => Some(start_symbol_endpoint(address).await?),
        None => None,
    };
    // Signal handlers first: a Ctrl-C during loading must still clean up.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let config = ProbeConfig {
        samples_per_second: args.samples_per_second,
        target_pid: args.pid,
        include_idle: args.include_idle,
        unwind_tables: !args.frame_pointers_only,
        unwind_table_bytes: args.unwind_table_memory_mb << 20,
        trace_network,
        max_connections: args.max_connections,
        net_ring_bytes: NET_RING_BYTES,
    };
    let Loaded { mut probes, events: ring, unwind_maps, net_events } = Probes::load(config)?;
    let unwinder = if args.frame_pointers_only {
        None
    } else {
        let initial = match args.pid {
            Some(pid) => vec![pid],
            None => running_processes(),
        };
        let unwinder = Unwinder::start(unwind_maps, initial)?;
        // Stacks are complete from the first sample if running processes' tables are in
        // place first; a slow start (thousands of processes) is not waited for past this.
        if !unwinder.wait_ready(INITIAL_TABLES_WAIT) {
            info!("still loading unwind tables for running processes; sampling meanwhile");
        }
        Some(unwinder)
    };
    probes.start_sampling()?;
    let start = SystemTime::now();
    let started = Instant::now();
    info!(samples_per_second = args.samples_per_second, pid = ?args.pid, "sampling; Ctrl-C stops and writes the profile");

    let mut collector = Collector::new(FrameNamer::new(kernel), args.max_stacks);
    if let Some((catalog, _)) = &symbols {
        collector.objects.publish_to(catalog.clone());
    }
    collector.unwinder = unwinder;
    collector.target_pid = args.pid;
    let period_ns = 1_000_000_000 / args.samples_per_second;
    let host = HostInfo::read();
    if exporter.is_some() {
        collector.batch = Some(SampleBatch::new(unix_now_ns(), MAX_BATCH_SAMPLES));
    }
    let mut export_tick = interval(Duration::from_secs_f64(args.reporter_interval));
    export_tick.reset();
    // SAFETY: the ring buffer owns its fd and keeps it open until `into_inner` hands it back.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("cannot poll the BPF ring buffer: {e}"))?;
    let mut net = net_events.map(|ring| {
        let spans = span_exporter.is_some().then(|| SpanBatch::new(MAX_BATCH_SPANS));
        (NetTracker::new(metric_store.clone(), spans, host.name.clone(), monotonic_to_unix_offset()), ring)
    });
    let live_view = !args.no_live && std::io::stdout().is_terminal();
    let mut drain_tick = interval(DRAIN_INTERVAL);
    let mut report_tick = interval(if live_view { Duration::from_secs(1) } else { Duration::from_secs(args.summary_interval) });
    let mut expire_tick = interval(EXPIRE_INTERVAL);
    for tick in [&mut drain_tick, &mut report_tick, &mut expire_tick] {
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    report_tick.reset(); // no report at time zero
    let deadline = sleep(args.duration.map_or(Duration::MAX / 4, Duration::from_secs_f64));
    tokio::pin!(deadline);

    loop {
        if collector.target_exited {
            info!(pid = ?args.pid, "the profiled process exited");
            break;
        }
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the BPF ring buffer")?;
                drain(guard.get_inner_mut(), &mut collector);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), &mut collector);
                if let Some((tracker, ring)) = &mut net {
                    tracker.drain(ring);
                    if tracker.spans.as_ref().is_some_and(SpanBatch::full_request_ready) {
                        report_spans(tracker, span_exporter.as_ref(), &host);
                    }
                }
            }
            _ = report_tick.tick() => {
                let counters = probes.counters()?;
                if live_view {
                    // A closed terminal must not stop profiling; the summary goes to the log then.
                    if live::draw(&mut std::io::stdout().lock(), &collector, &counters, started.elapsed(), args.samples_per_second).is_err() {
                        info!("{}", live::summary_line(&collector, &counters, exporter.as_ref(), started.elapsed()));
                    }
                } else {
                    info!("{}", live::summary_line(&collector, &counters, exporter.as_ref(), started.elapsed()));
                }
                collector.top.decay();
            }
            _ = export_tick.tick(), if exporter.is_some() || span_exporter.is_some() || metric_exporter.is_some() => {
                if let Some(exporter) = &exporter {
                    report(&mut collector, exporter, &host, period_ns);
                }
                if let Some((tracker, _)) = &mut net {
                    report_network(tracker, span_exporter.as_ref(), metric_exporter.as_ref(), &metric_store, &host);
                }
            }
            _ = expire_tick.tick() => {
                collector.processes.expire();
                if let Some((tracker, _)) = &mut net {
                    tracker.expire();
                }
                // In case its exit event was lost.
                if args.pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    collector.target_exited = true;
                }
            }
            _ = &mut deadline => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }

    // Stop sampling: detach and unload every program, then take what is left in the ring.
    // The profile covers until sampling stops; detaching every tracepoint takes a while more.
    let elapsed = started.elapsed();
    let counters = probes.counters()?;
    let detach_started = Instant::now();
    drop(probes);
    debug!(elapsed_ms = detach_started.elapsed().as_millis() as u64, "BPF programs detached");
    let mut ring = ring.into_inner();
    drain(&mut ring, &mut collector);
    drop(ring);
    if let Some(server) = prometheus {
        server.abort();
    }
    if let Some((_, server)) = symbols {
        server.abort();
    }
    if let Some((mut tracker, mut ring)) = net {
        tracker.drain(&mut ring);
        report_network(&mut tracker, span_exporter.as_ref(), metric_exporter.as_ref(), &metric_store, &host);
        let matched = tracker.match_stats();
        let stats = tracker.stats;
        let overflowed = metric_store.lock().map_or(0, |store| store.overflowed());
        eprintln!(
            "oxeye: traced {} TCP connections ({} closed) and {} HTTP requests ({} as server, {} as client); {} responses without a request, {} requests without a response; {} network records lost in kernel; {} metric measurements over the series limit",
            stats.opened,
            stats.closed,
            stats.server_exchanges + stats.client_exchanges,
            stats.server_exchanges,
            stats.client_exchanges,
            matched.unmatched_responses,
            matched.unanswered_requests,
            counters.get(agent_common::counters::Counter::NetRingFull),
            overflowed,
        );
    }
    if let Some(exporter) = span_exporter {
        let stats = exporter.stats.clone();
        exporter.shutdown(EXPORT_FLUSH_TIMEOUT).await;
        eprintln!(
            "oxeye: exported {} spans ({} dropped, {} refused by the collector, {} failed attempts){}",
            stats.exported(),
            stats.dropped(),
            stats.rejected(),
            stats.failed_attempts(),
            if stats.unsupported() { "; the endpoint does not accept traces" } else { "" },
        );
    }
    if let Some(exporter) = metric_exporter {
        exporter.shutdown(EXPORT_FLUSH_TIMEOUT).await;
    }

    if let Some(exporter) = exporter {
        report(&mut collector, &exporter, &host, period_ns);
        let stats = exporter.stats.clone();
        exporter.shutdown(EXPORT_FLUSH_TIMEOUT).await;
        eprintln!(
            "oxeye: exported {} samples ({} dropped, {} refused by the collector, {} failed attempts)",
            stats.exported(),
            stats.dropped(),
            stats.rejected(),
            stats.failed_attempts()
        );
    }
    if let Some(unwinder) = collector.unwinder.take() {
        let stats = unwinder.stats();
        drop(unwinder);
        let tables = stats.tables;
        eprintln!(
            "oxeye: unwind tables: {} files, {} rows ({:.1} of {:.0} MiB), {} rules, {} processes, {} mappings; {} compiled, {} evicted, {} without room, {} without unwind info; slowest process {:.0} ms",
            tables.tables,
            tables.rows,
            (tables.rows * ROW_BYTES) as f64 / (1 << 20) as f64,
            (tables.capacity * ROW_BYTES) as f64 / (1 << 20) as f64,
            tables.rules,
            stats.processes,
            stats.mappings,
            tables.compiled,
            tables.evicted,
            tables.no_room,
            tables.without_info,
            stats.slowest_describe.as_secs_f64() * 1e3,
        );
    }
    let run = RunInfo { start, duration: elapsed, period_ns };
    let written = output::write_all(&args.output_dir, &collector.profile, &mut collector.namer, &mut collector.objects, run)?;
    if live_view {
        println!();
    }
    let in_flight = counters.get(agent_common::counters::Counter::SamplesSent).saturating_sub(collector.samples_received);
    eprintln!(
        "oxeye: {} samples in {:.1}s ({} lost in kernel, {} dropped when full, {} malformed, {} unaccounted); wrote {}",
        collector.profile.samples,
        elapsed.as_secs_f64(),
        counters.lost(),
        collector.profile.dropped_full,
        collector.malformed_records,
        in_flight,
        written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    );
    Ok(())
}

/// Starts the exporter of signal `S` if it has an endpoint.
fn start_exporter<S: Signal>(args: &Args) -> Result<Option<Exporter<S>>> {
    let Some(endpoint) = export::resolve::<S>(args.collection_agent.as_deref(), args.disable_tls)? else { return Ok(None) };
    let (uri, tls) = (endpoint.uri.clone(), endpoint.tls);
    let interval = Duration::from_secs_f64(args.reporter_interval);
    let config = ExportConfig { endpoint, tls_ca_file: args.tls_ca_file.clone(), max_queue_bytes: args.max_export_queue_bytes, interval };
    let exporter = Exporter::start(config)?;
    info!(endpoint = %uri, tls, gzip = S::gzip(), "exporting OTLP {} every {}s", S::ITEMS, args.reporter_interval);
    Ok(Some(exporter))
}

/// Binds the `--symbols-listen` address and serves the symbol endpoint from a catalog the
/// object registry fills.
async fn start_symbol_endpoint(address: &str) -> Result<(Arc<Catalog>, tokio::task::JoinHandle<()>)> {
    let listener = http_server::bind(address, "--symbols-listen").await?;
    let url = listener.local_addr().map_or_else(|_| address.to_owned(), |local| format!("http://{local}"));
    let catalog = Arc::new(Catalog::default());
    let server = tokio::spawn(symbols::server::serve(listener, Arc::new(RangesBuilder::new(catalog.clone()))));
    info!(url = %url, "serving symbols of every profiled executable; start devfiler with --symb-endpoint {url}");
    Ok((catalog, server))
}

/// Queues the spans of the interval that just ended, and the metrics so far (cumulative).
fn report_network(
    tracker: &mut NetTracker,
    spans: Option<&Exporter<Traces>>,
    metrics: Option<&Exporter<Metrics>>,
    store: &Mutex<MetricsStore>,
    host: &HostInfo,
) {
    report_spans(tracker, spans, host);
    if let Some(exporter) = metrics.filter(|exporter| exporter.accepts()) {
        let request = {
            let store = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            metrics::to_request(&store, unix_now_ns(), "oxeye", env!("CARGO_PKG_VERSION"))
        };
        if !request.resource_metrics.is_empty() {
            let points = request
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) => sum.data_points.len(),
                    Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => h.data_points.len(),
                    _ => 0,
                })
                .sum::<usize>();
            exporter.submit(request, points as u64);
        }
    }
}

/// Queues the spans waiting, a request per [`crate::net::spans::SPANS_PER_REQUEST`].
fn report_spans(tracker: &mut NetTracker, exporter: Option<&Exporter<Traces>>, host: &HostInfo) {
    let (Some(exporter), Some(batch)) = (exporter, tracker.spans.as_mut()) else { return };
    if !exporter.accepts() {
        // The endpoint takes no spans: stop building them.
        tracker.spans = None;
        return;
    }
    exporter.stats.add_dropped(std::mem::take(&mut batch.dropped));
    for (request, count) in batch.take_requests(host) {
        exporter.submit(request, count);
    }
}

/// Encodes the samples of the interval that just ended and queues them for the collector.
fn report(collector: &mut Collector, exporter: &Exporter<Profiles>, host: &HostInfo, period_ns: u64) {
    let now = unix_now_ns();
    let Some(batch) = collector.batch.replace(SampleBatch::new(now, MAX_BATCH_SAMPLES)) else { return };
    exporter.stats.add_dropped(batch.dropped);
    if batch.samples.is_empty() {
        return;
    }
    let context = BuildContext { host, period_ns, end_unix_nano: now, namer: &mut collector.namer, objects: &mut collector.objects };
    let (request, samples) = build_request(&batch, context);
    exporter.submit(request, samples);
}

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Bytes per unwind row in the kernel.
const ROW_BYTES: u64 = size_of::<agent_common::unwind::UnwindEntry>() as u64;

/// Process ids in `/proc`, for describing every running process to the unwinder.
fn running_processes() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Reads every record waiting in the ring buffer.
fn drain(ring: &mut RingBuf<MapData>, collector: &mut Collector) {
    while let Some(item) = ring.next() {
        collector.handle(&item);
    }
}
