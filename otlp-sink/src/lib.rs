//! A small, real OTLP gRPC receiver for **profiles, traces and metrics**,
//! for end-to-end tests and benchmarks.
//!
//! One [`Sink`] serves the OTLP `ProfilesService`, `TraceService` and
//! `MetricsService` on the same port. Each signal has its own record, its
//! own [`Reply`] script ([`SinkConfig::script`] for profiles,
//! [`SinkConfig::trace_script`], [`SinkConfig::metrics_script`]) and its own
//! accessors: [`Sink::requests`] / [`stacks`] for profiles,
//! [`Sink::trace_requests`] / [`Sink::all_spans`] / [`Sink::wait_for_spans`]
//! for traces, [`Sink::metrics_requests`] / [`Sink::latest_metric_points`]
//! for metrics.
//!
//! ```no_run
//! use std::time::Duration;
//! use otlp_sink::{Reply, Sink, SinkConfig};
//!
//! let mut config = SinkConfig::localhost();
//! config.script = vec![Reply::Status(tonic::Code::Unavailable)];
//! let mut sink = Sink::start(config).expect("sink starts");
//! // ... point the exporter at sink.endpoint(false) ...
//! assert!(sink.wait_for_requests(1, Duration::from_secs(10)));
//! for request in sink.requests() {
//!     otlp_sink::check::all(&request).expect("valid request");
//!     let samples = otlp_sink::stacks(&request);
//!     assert!(!samples.is_empty());
//! }
//! assert!(sink.wait_for_spans(1, Duration::from_secs(10)));
//! for span in sink.all_spans() {
//!     println!("{} {} {:?}", span.service_name, span.name, span.attributes);
//! }
//! for point in sink.latest_metric_points() {
//!     println!("{} {:?}", point.name, point.value);
//! }
//! sink.stop().expect("clean stop");
//! ```

#![warn(missing_docs)]

pub mod check;
mod config;
mod decode;
pub mod devfiler;
pub mod devfiler_view;
mod error;
pub mod fixtures;
mod metrics;
mod recorder;
mod service;
mod sink;
mod spans;
mod tls;
mod wire;

pub use config::{Peer, Reply, SinkConfig, TlsIdentity};
pub use decode::{sample_count, stacks, total_samples, DecodedSample, FRAME_TYPE_KEY};
pub use error::SinkError;
pub use metrics::{metric_points, MetricPoint, MetricValue};
pub use recorder::{Retention, Stats};
pub use sink::Sink;
pub use spans::{spans, DecodedSpan};
pub use tls::self_signed;

/// The generated OTLP types this crate speaks, re-exported so users need
/// not depend on `opentelemetry-proto` with the right features themselves.
pub use opentelemetry_proto::tonic as proto;
