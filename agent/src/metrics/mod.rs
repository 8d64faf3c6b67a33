//! Application metrics derived from traced events (HTTP durations, TCP bytes, connections,
//! retransmits): a cumulative in-memory store, exported as OTLP metrics and served to
//! Prometheus over HTTP.
//!
//! - [`store`]: aggregation, series identity and the cardinality limit.
//! - [`otlp`]: the store as an `ExportMetricsServiceRequest`.
//! - [`prometheus`]: the store as Prometheus text exposition format 0.0.4.
//! - [`server`]: the `/metrics` scrape endpoint.

pub mod otlp;
pub mod prometheus;
pub mod server;
pub mod store;

pub use otlp::{point_count, to_request};
pub use server::{bind, serve};
pub use store::{AttrValue, Attributes, MetricDesc, MetricKind, MetricsStore, Resource, HTTP_DURATION_BOUNDS};
