//! One pipeline per signal, each owning its intake (a ring buffer), its state and its exporter:
//!
//! - [`profiles`]: CPU samples → the run's profile, OTLP profiles, and the files at exit.
//! - [`network`]: connection and payload records → spans and metrics (OTLP, Prometheus), run
//!   on a thread of its own by [`network_thread`].
//! - [`reporting`]: the live view and one-line summaries.
//!
//! `run.rs` builds them and drives the profile pipeline and the reporting from its event loop,
//! the network pipeline from the network thread's; they share only the [`Clock`], the process
//! identities and the host facts.
//!
//! [`Clock`]: crate::clock::Clock

pub mod network;
pub mod network_thread;
pub mod profiles;
pub mod reporting;

use std::time::Duration;

use anyhow::Result;
use tracing::info;

use crate::{
    cli::Args,
    export::{self, ExportConfig, Exporter, Signal},
};

/// How long queued items get to reach the collector when oxeye stops, all signals together.
const EXPORT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// When the exporters' last batches must be out, from now (oxeye is stopping).
pub fn flush_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + EXPORT_FLUSH_TIMEOUT
}

/// Starts the exporter of signal `S` if `--collection-agent` (or the environment) names an
/// endpoint; checks the endpoint and TLS set-up first.
pub fn start_exporter<S: Signal>(args: &Args) -> Result<Option<Exporter<S>>> {
    let Some(endpoint) = export::resolve::<S>(args.collection_agent.as_deref(), args.disable_tls)? else { return Ok(None) };
    let (uri, tls) = (endpoint.uri.clone(), endpoint.tls);
    let interval = Duration::from_secs_f64(args.reporter_interval);
    let config = ExportConfig { endpoint, tls_ca_file: args.tls_ca_file.clone(), max_queue_bytes: args.max_export_queue_bytes, interval };
    let exporter = Exporter::start(config)?;
    info!(endpoint = %uri, tls, gzip = S::gzip(), "exporting OTLP {} every {}s", S::ITEMS, args.reporter_interval);
    Ok(Some(exporter))
}

/// A ticker whose first tick is one `period` from now, and which does not catch up on ticks
/// missed while the loop was busy.
pub fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    tick
}
