//! The main loop: set up the outputs, load the probes, build one pipeline per signal, drive
//! them until told to stop, then stop cleanly and let each pipeline finish.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use agent_common::counters::Counter;
use anyhow::{bail, Context, Result};
use symbolizer::{debug_file::DebugDirectories, kallsyms::KernelSymbols};
use tokio::{
    signal::unix::{signal, SignalKind},
    time::sleep,
};
use tracing::{debug, info, warn};

use crate::debug_sources::DebugSources;
use crate::debuginfod::{Debuginfod, DebuginfodConfig};
use crate::python::registry::PythonProcesses;
use crate::{
    bpf::{Loaded, ProbeConfig, Probes, DRAIN_INTERVAL},
    cli::Args,
    clock::Clock,
    collector::{Collector, CollectorConfig},
    containers::{self, Pods},
    export::Profiles,
    http_server,
    links::SpanLinks,
    otlp::resource::HostInfo,
    output::RunInfo,
    pipeline::{
        self,
        network::NetworkOutputs,
        network_thread::{NetworkParts, NetworkThread, NetworkTimers},
        profiles::ProfilePipeline,
        reporting::Reporter,
        start_exporter, ticker,
    },
    privileges,
    process::identity::Identities,
    symbolize::FrameNamer,
    symbols::{self, Catalog, RangesBuilder},
    unwind::{UnwindMaps, Unwinder},
};

/// How often exited processes are swept from the caches.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);
/// Most samples held for one export interval (about 8 MB); more are counted as dropped.
const MAX_BATCH_SAMPLES: usize = 250_000;
/// Longest wait for the unwind tables of running processes before sampling starts.
const INITIAL_TABLES_WAIT: Duration = Duration::from_secs(3);

/// Runs oxeye until Ctrl-C, SIGTERM or `--duration`, then writes the outputs.
pub async fn run(args: Args) -> Result<()> {
    privileges::check(args.java_perf_map)?;
    if let Some(pid) = args.pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("process {pid} does not exist");
        }
    }
    let kernel = KernelSymbols::load()
        .inspect_err(|error| match privileges::can_read_kernel_symbols() {
            true => warn!("kernel frames will show addresses only: {error}"),
            // Already said, with the capability's name.
            false => debug!("kernel frames will show addresses only: {error}"),
        })
        .ok();
    // Every output checks its endpoint, TLS set-up or port before anything touches the kernel.
    let profile_exporter = start_exporter::<Profiles>(&args)?;
    let network_outputs = NetworkOutputs::start(&args).await?;
    let symbols = match &args.symbols_listen {
        Some(address) => Some(start_symbol_endpoint(address).await?),
        None => None,
    };
    // Signal handlers first: a Ctrl-C during loading must still clean up.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let Loaded { mut probes, events, unwind_maps, net_events } = Probes::load(probe_config(&args))?;
    let python = Arc::new(PythonProcesses::default());
    let unwinder = start_unwinder(&args, unwind_maps, Arc::clone(&python))?;
    probes.start_sampling()?;
    let start = SystemTime::now();
    let started = Instant::now();
    info!(samples_per_second = args.samples_per_second, pid = ?args.pid, "sampling; Ctrl-C stops and writes the profile");

    let pods = start_pods(&args);
    let (clock, host, period_ns) = (Clock::new(), HostInfo::read(pods.clone()), 1_000_000_000 / args.samples_per_second);
    let identities = Arc::new(Identities::new(pods));
    // Samples link to spans only when both are exported.
    let links = (profile_exporter.is_some() && network_outputs.exports_spans()).then(|| Arc::new(SpanLinks::new(SpanLinks::CAPACITY)));
    let config = CollectorConfig {
        max_stacks: args.max_stacks,
        unwinder,
        target_pid: args.pid,
        export_batch: profile_exporter.is_some().then_some(MAX_BATCH_SAMPLES),
        links: links.clone(),
        clock,
        identities: identities.clone(),
        python,
        java_perf_map: args.java_perf_map,
        debug: DebugSources::new(DebugDirectories::new(args.debug_file_directory.clone()), start_debuginfod()),
    };
    let mut collector = Collector::new(FrameNamer::new(kernel), config);
    if let Some((catalog, _)) = &symbols {
        collector.publish_to(catalog.clone());
    }
    let mut profiles = ProfilePipeline::new(events, collector, profile_exporter, host.clone(), period_ns)?;
    let exporting = profiles.exporting() || network_outputs.exporting();
    let export_interval = Duration::from_secs_f64(args.reporter_interval);
    let network = NetworkThread::spawn(
        NetworkParts { outputs: network_outputs, ring: net_events, identities, host, clock, sample_ratio: args.trace_sample_ratio, links },
        NetworkTimers { drain: DRAIN_INTERVAL, export: export_interval, expire: EXPIRE_INTERVAL },
    )?;
    let reporter = Reporter::new(args.no_live, Duration::from_secs(args.summary_interval));

    let mut drain_tick = ticker(DRAIN_INTERVAL);
    let mut report_tick = ticker(reporter.interval());
    let mut expire_tick = ticker(EXPIRE_INTERVAL);
    let mut export_tick = ticker(export_interval);
    let deadline = sleep(args.duration.map_or(Duration::MAX / 4, Duration::from_secs_f64));
    tokio::pin!(deadline);

    loop {
        if profiles.target_exited() {
            info!(pid = ?args.pid, "the profiled process exited");
            break;
        }
        let settle = profiles.exec_settle_deadline();
        tokio::select! {
            readable = profiles.readable() => readable?,
            _ = drain_tick.tick() => profiles.drain(),
            _ = tokio::time::sleep_until(settle.unwrap_or_else(std::time::Instant::now).into()), if settle.is_some() => profiles.drain(),
            _ = report_tick.tick() => {
                let counters = probes.counters()?;
                network.set_losses(counters.get(Counter::NetRingFull));
                reporter.report(&profiles.live_stats(&counters, started.elapsed(), args.samples_per_second));
                profiles.decay_top();
            }
            _ = export_tick.tick(), if exporting => {
                network.set_losses(probes.counters()?.get(Counter::NetRingFull));
                profiles.report();
            }
            _ = expire_tick.tick() => profiles.expire(),
            _ = &mut deadline => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }

    let network = network.stop()?;
    // Stop sampling: detach and unload every program, then take what is left in the rings.
    // The profile covers until sampling stops; detaching every tracepoint takes a while more.
    let duration = started.elapsed();
    let counters = probes.counters()?;
    for counter in Counter::ALL {
        debug!(counter = counter.name(), value = counters.get(counter), "BPF counter");
    }
    let detach_started = Instant::now();
    drop(probes);
    debug!(elapsed_ms = detach_started.elapsed().as_millis() as u64, "BPF programs detached");
    profiles.drain();
    if let Some((_, server)) = symbols {
        server.abort();
    }
    let flush_by = pipeline::flush_deadline();
    network.finish(&counters, flush_by).await;
    let closing = profiles.finish(&counters, RunInfo { start, duration, period_ns, off_cpu: args.off_cpu_threshold > 0.0 }, &args.output_dir, flush_by).await?;
    reporter.finish();
    eprintln!("{closing}");
    Ok(())
}

/// What to load, from the flags.
fn probe_config(args: &Args) -> ProbeConfig {
    ProbeConfig {
        samples_per_second: args.samples_per_second,
        target_pid: args.pid,
        include_idle: args.include_idle,
        unwind_tables: !args.frame_pointers_only,
        unwind_table_bytes: args.unwind_table_memory_mb << 20,
        trace_network: !args.no_network,
        max_connections: args.max_connections,
        payload_hooks: args.payload_hooks,
        off_cpu_threshold: args.off_cpu_threshold,
    }
}

/// Starts the unwind-table loader (unless `--frame-pointers-only`) and gives it a moment to
/// describe the processes already running.
/// The debuginfod client `DEBUGINFOD_URLS` asks for; without one (or if it cannot start,
/// said in one line) files are named from what the host has.
fn start_debuginfod() -> Option<Debuginfod> {
    let config = DebuginfodConfig::from_env()?;
    let (urls, cache) = (config.urls.join(" "), config.cache_dir.clone());
    match Debuginfod::start(config) {
        Ok(client) => {
            info!(servers = %urls, cache = %cache.display(), "fetching missing debug files from debuginfod");
            Some(client)
        }
        Err(error) => {
            warn!("debuginfod is off: {error:#}");
            None
        }
    }
}

fn start_unwinder(args: &Args, maps: UnwindMaps, python: Arc<PythonProcesses>) -> Result<Option<Unwinder>> {
    if args.frame_pointers_only {
        return Ok(None);
    }
    let initial = match args.pid {
        Some(pid) => vec![pid],
        None => running_processes(),
    };
    let unwinder = Unwinder::start(maps, initial, python)?;
    // Stacks are complete from the first sample if running processes' tables are in place
    // first; a slow start (thousands of processes) is not waited for past this.
    if !unwinder.wait_ready(INITIAL_TABLES_WAIT) {
        info!("still loading unwind tables for running processes; sampling meanwhile");
    }
    Ok(Some(unwinder))
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

/// Process ids in `/proc`, for describing every running process to the unwinder.
fn running_processes() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Pod metadata from `--container-runtime-endpoint` (or the kubelet's default runtimes);
/// none with `none`.
fn start_pods(args: &Args) -> Pods {
    match args.container_runtime_endpoint.as_deref() {
        Some("none") => Pods::disabled(),
        Some(endpoint) => Pods::start(vec![endpoint.to_owned()]),
        None => Pods::start(containers::DEFAULT_ENDPOINTS.iter().map(|e| (*e).to_owned()).collect()),
    }
}
