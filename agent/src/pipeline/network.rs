//! The network pipeline: connection and payload records from the `NET_EVENTS` ring buffer
//! into the [`NetTracker`], spans and metrics out over OTLP, metrics to Prometheus scrapes.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, task::JoinHandle};
use tracing::info;

use super::start_exporter;
use crate::{
    bpf::Counters,
    cli::Args,
    clock::{unix_now_ns, Clock},
    export::{Exporter, Metrics, Traces},
    links::SpanLinks,
    metrics::{self, MetricsStore},
    net::{sampling::Sampler, spans::SpanBatch, telemetry, NetTracker},
    otlp::resource::{self, HostInfo},
    process::identity::Identities,
};
use agent_common::counters::Counter;

/// Most spans held between two drains (they are queued for export as soon as a request's worth
/// is there); more are counted as dropped.
const MAX_BATCH_SPANS: usize = 50_000;
/// Most series per metric; more fold into one overflow series.
const MAX_SERIES_PER_METRIC: usize = 2_000;

/// Where network signals go: set up before the programs load, so that a bad endpoint or a
/// busy port fails before anything touches the kernel.
pub struct NetworkOutputs {
    spans: Option<Exporter<Traces>>,
    metrics: Option<Exporter<Metrics>>,
    store: Arc<Mutex<MetricsStore>>,
    prometheus: Option<JoinHandle<()>>,
}

impl NetworkOutputs {
    /// Starts the span and metric exporters (unless `--no-network`) and the Prometheus
    /// endpoint (`--prometheus-listen`).
    pub async fn start(args: &Args) -> Result<Self> {
        let (spans, metrics) =
            if args.no_network { (None, None) } else { (start_exporter::<Traces>(args)?, start_exporter::<Metrics>(args)?) };
        let store = Arc::new(Mutex::new(MetricsStore::new(MAX_SERIES_PER_METRIC)));
        let prometheus = match &args.prometheus_listen {
            Some(address) => {
                let listener = metrics::bind(address).await?;
                info!(address = %address, "serving Prometheus metrics at /metrics");
                Some(tokio::spawn(metrics::serve(listener, store.clone())))
            }
            None => None,
        };
        Ok(NetworkOutputs { spans, metrics, store, prometheus })
    }

    /// Whether spans are exported (what samples can be linked to).
    pub fn exports_spans(&self) -> bool {
        self.spans.is_some()
    }

    /// Whether anything is exported on the reporting interval.
    pub fn exporting(&self) -> bool {
        self.spans.is_some() || self.metrics.is_some()
    }
}

/// Network records in, spans and metrics out.
pub struct NetworkPipeline {
    outputs: NetworkOutputs,
    /// Absent when network tracing is off (by flag, or the kernel cannot).
    traced: Option<(NetTracker, AsyncFd<RingBuf<MapData>>)>,
    host: HostInfo,
    /// oxeye's own metrics resource, for what belongs to no traced process.
    own: metrics::Resource,
    /// Records lost in the kernel already added to `oxeye.net.records.lost`.
    losses_counted: u64,
}

impl NetworkPipeline {
    /// A pipeline reading `ring` (if network tracing runs) into `outputs`, naming processes
    /// through the same `identities` as the profile pipeline.
    pub fn new(
        outputs: NetworkOutputs,
        ring: Option<RingBuf<MapData>>,
        identities: Arc<Identities>,
        host: HostInfo,
        clock: Clock,
        sample_ratio: f64,
        links: Option<Arc<SpanLinks>>,
    ) -> Result<Self> {
        let traced = match ring {
            Some(ring) => {
                // SAFETY: the ring buffer owns its fd and keeps it open while registered.
                let ring = unsafe { AsyncFd::register(ring) }.context("cannot poll the network ring buffer")?;
                let spans = outputs.spans.is_some().then(|| SpanBatch::new(MAX_BATCH_SPANS, Sampler::new(sample_ratio)));
                let mut tracker = NetTracker::new(outputs.store.clone(), spans, identities, host.clone(), clock);
                tracker.links = links;
                Some((tracker, ring))
            }
            None => None,
        };
        let own = metrics::Resource { service_name: "oxeye".to_owned(), attributes: vec![("host.name", host.name.clone())] };
        Ok(NetworkPipeline { outputs, traced, host, own, losses_counted: 0 })
    }

    /// Waits until the programs wake the reader (the ring is filling up), and reads records;
    /// never returns when network tracing is off.
    pub async fn readable(&mut self) -> Result<()> {
        let Some((tracker, ring)) = &mut self.traced else { return std::future::pending().await };
        let mut guard = ring.readable_mut().await.context("polling the network ring buffer")?;
        // A drain cut short leaves the readiness set, so the next turn of the loop reads on.
        if tracker.drain(guard.get_inner_mut()) {
            guard.clear_ready();
        }
        self.queue_full_requests();
        Ok(())
    }

    /// Reads the records waiting (a bounded number); queues spans as soon as a request's
    /// worth is there.
    pub fn drain(&mut self) {
        self.drain_some();
    }

    /// Reads records, at most a bounded number (so that at saturation the loop still exports
    /// and reports); `true` if the ring was emptied.
    fn drain_some(&mut self) -> bool {
        let Some((tracker, ring)) = &mut self.traced else { return true };
        let emptied = tracker.drain(ring.get_mut());
        self.queue_full_requests();
        emptied
    }

    /// Queues spans for export once a request's worth is held.
    fn queue_full_requests(&mut self) {
        let Some((tracker, _)) = &mut self.traced else { return };
        if tracker.spans.as_ref().is_some_and(SpanBatch::full_request_ready) {
            report_spans(tracker, self.outputs.spans.as_ref(), &self.host);
        }
    }

    /// Brings `oxeye.net.records.lost` up to the kernel's count (the series exists, at 0,
    /// from the first call, so that it can be alerted on).
    pub fn count_losses(&mut self, lost: u64) {
        if self.traced.is_none() {
            return;
        }
        let mut store = self.outputs.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        telemetry::record_records_lost(&mut store, &self.own, lost.saturating_sub(self.losses_counted));
        self.losses_counted = self.losses_counted.max(lost);
    }

    /// Whether this pipeline exports anything on the reporting interval.
    pub fn exporting(&self) -> bool {
        self.outputs.exporting()
    }

    /// Queues the spans of the interval that just ended, and the metrics so far (cumulative).
    pub fn report(&mut self) {
        let Some((tracker, _)) = &mut self.traced else { return };
        report_spans(tracker, self.outputs.spans.as_ref(), &self.host);
        let Some(exporter) = self.outputs.metrics.as_ref().filter(|exporter| exporter.accepts()) else { return };
        let mut request = {
            let store = self.outputs.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            metrics::to_request(&store, unix_now_ns(), "oxeye", env!("CARGO_PKG_VERSION"))
        };
        for attributes in request.resource_metrics.iter_mut().filter_map(|r| r.resource.as_mut()).map(|r| &mut r.attributes) {
            resource::add_pod_attributes(&self.host, attributes);
        }
        if !request.resource_metrics.is_empty() {
            let points = metrics::point_count(&request);
            exporter.submit(request, points);
        }
    }

    /// Forgets connections silent for too long.
    pub fn expire(&mut self) {
        if let Some((tracker, _)) = &mut self.traced {
            tracker.expire();
        }
    }

    /// After the programs are detached: stops serving scrapes, takes the last records,
    /// exports them, and prints what was traced.
    pub async fn finish(mut self, counters: &Counters, flush_by: tokio::time::Instant) {
        if let Some(server) = self.outputs.prometheus.take() {
            server.abort();
        }
        if self.traced.is_some() {
            while !self.drain_some() {}
            self.count_losses(counters.get(Counter::NetRingFull));
            self.report();
            if let Some((tracker, _)) = &self.traced {
                eprintln!("oxeye: {}", traced_summary(tracker, counters, &self.outputs.store));
            }
        }
        let sampled_out = self.traced.as_ref().and_then(|(tracker, _)| tracker.spans.as_ref()).map_or(0, |batch| batch.sampled_out);
        if let Some(exporter) = self.outputs.spans.take() {
            let stats = exporter.stats.clone();
            exporter.shutdown(flush_by).await;
            eprintln!(
                "oxeye: exported {} spans ({} sampled out by --trace-sample-ratio, {} dropped, {} refused by the collector, {} failed attempts){}",
                stats.exported(),
                sampled_out,
                stats.dropped(),
                stats.rejected(),
                stats.failed_attempts(),
                if stats.unsupported() { "; the endpoint does not accept traces" } else { "" },
            );
        }
        if let Some(exporter) = self.outputs.metrics.take() {
            exporter.shutdown(flush_by).await;
        }
    }
}

fn traced_summary(tracker: &NetTracker, counters: &Counters, store: &Mutex<MetricsStore>) -> String {
    let matched = tracker.match_stats();
    let stats = tracker.stats;
    let overflowed = store.lock().map_or(0, |store| store.overflowed());
    format!(
        "traced {} TCP connections ({} closed) and {} HTTP requests ({} as server, {} as client); {} responses without a request, {} requests without a response; {} network records lost in kernel; {} user reads, {} kernel reads and {} map inserts failed in kernel; {} metric measurements over the series limit",
        stats.opened,
        stats.closed,
        stats.server_exchanges + stats.client_exchanges,
        stats.server_exchanges,
        stats.client_exchanges,
        matched.unmatched_responses,
        matched.unanswered_requests,
        counters.get(Counter::NetRingFull),
        counters.get(Counter::NetUserReadFailed),
        counters.get(Counter::NetKernelReadFailed),
        counters.get(Counter::NetMapUpdateFailed),
        overflowed,
    )
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
