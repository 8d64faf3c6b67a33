//! A small, real OTLP **profiles** gRPC receiver for end-to-end tests and
//! benchmarks.
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
//! sink.stop().expect("clean stop");
//! ```

#![warn(missing_docs)]

pub mod check;
mod config;
mod decode;
mod error;
pub mod fixtures;
mod recorder;
mod service;
mod sink;
mod tls;
mod wire;

pub use config::{Reply, SinkConfig, TlsIdentity};
pub use decode::{sample_count, stacks, total_samples, DecodedSample, FRAME_TYPE_KEY};
pub use error::SinkError;
pub use recorder::{Retention, Stats};
pub use sink::Sink;
pub use tls::self_signed;

/// The generated OTLP types this crate speaks, re-exported so users need
/// not depend on `opentelemetry-proto` with the right features themselves.
pub use opentelemetry_proto::tonic as proto;
