//! Cumulative metric state: monotonic counters and explicit-bucket histograms, one series per
//! (resource, attribute set), with an OTel-SDK-style cardinality limit per metric.
//!
//! The store only aggregates and knows no exporter; the OTLP and Prometheus encoders read it through
//! [`MetricsStore::families`], which returns everything in a deterministic order.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

/// Bucket boundaries, in seconds, that the OTel HTTP semantic conventions recommend for
/// `http.server.request.duration` and `http.client.request.duration`.
pub const HTTP_DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Attribute key of the series that collects measurements beyond the cardinality limit, as
/// the OTel metrics SDK specification names it.
pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// What kind of instrument a metric is, which decides how it aggregates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricKind {
    /// Monotonic cumulative sum of non-negative integers (fed with [`MetricsStore::add`]).
    Counter,
    /// Explicit-bucket histogram (fed with [`MetricsStore::record`]). `bounds` must be sorted
    /// ascending; bucket `i` counts values in `(bounds[i-1], bounds[i]]` and the extra last
    /// bucket counts values above the last bound.
    Histogram {
        /// Upper bounds of the finite buckets.
        bounds: &'static [f64],
    },
}

/// Static description of one metric; define these as `static` items and pass `&NAME` around.
#[derive(Debug)]
pub struct MetricDesc {
    /// OTel metric name, e.g. `http.server.request.duration`. Metrics are told apart by name.
    pub name: &'static str,
    /// Human-readable description (OTLP `description`, Prometheus `# HELP`).
    pub description: &'static str,
    /// UCUM unit: `s`, `By`, `{connection}`, `{retransmit}`, `1`, ...
    pub unit: &'static str,
    /// Instrument kind.
    pub kind: MetricKind,
}

/// Value of a series attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrValue {
    /// String attribute.
    Str(String),
    /// Integer attribute (ports, status codes).
    Int(i64),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
        }
    }
}

/// Attributes of one series. Order is significant: the same keys in another order make another
/// series, so callers should always build them in the same order.
pub type Attributes = Vec<(&'static str, AttrValue)>;

/// The entity that produces a series (OTLP resource), e.g. one service on one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// `service.name`.
    pub service_name: String,
    /// Further resource attributes such as `host.name`, in export order.
    pub attributes: Vec<(&'static str, String)>,
}

/// Aggregated state of one histogram series.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    /// Number of recorded values.
    pub count: u64,
    /// Sum of recorded values.
    pub sum: f64,
    /// Smallest recorded value (`+inf` while `count == 0`, which never happens for a stored
    /// series since a series is created by its first value).
    pub min: f64,
    /// Largest recorded value.
    pub max: f64,
    /// Per-bucket (not cumulative) counts; `bounds.len() + 1` entries, the last one `+Inf`.
    pub bucket_counts: Vec<u64>,
}

impl HistogramValue {
    fn new(bounds: &[f64]) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            bucket_counts: vec![0; bounds.len() + 1],
        }
    }

    fn record(&mut self, bounds: &[f64], value: f64) {
        // First bound >= value: buckets are upper-inclusive, as in OTel and Prometheus `le`.
        let bucket = bounds.partition_point(|&b| b < value);
        if let Some(slot) = self.bucket_counts.get_mut(bucket) {
            *slot = slot.saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

/// Aggregated value of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    /// Counter total.
    Counter(u64),
    /// Histogram state.
    Histogram(HistogramValue),
}

#[derive(Debug)]
struct Series {
    start_unix_nano: u64,
    value: SeriesValue,
}

/// One series as exporters see it.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRef<'a> {
    /// Interned resource the series belongs to.
    pub resource: &'a Arc<Resource>,
    /// Series attributes.
    pub attributes: &'a Attributes,
    /// When the series was created (OTLP cumulative `start_time_unix_nano`).
    pub start_unix_nano: u64,
    /// Aggregated value.
    pub value: &'a SeriesValue,
}

/// One metric with all its series, as exporters see it.
#[derive(Debug, Clone)]
pub struct Family<'a> {
    /// The metric.
    pub desc: &'static MetricDesc,
    /// Its series, sorted by resource then attributes.
    pub series: Vec<SeriesRef<'a>>,
}

/// The maps' hasher: these are looked up once or twice per traced request, and SipHash over a
/// resource's strings showed in profiles; the keys are oxeye's own, not an attacker's choice
/// of collisions (routes and series are bounded before they get here).
type Hasher = foldhash::fast::RandomState;

#[derive(Debug)]
struct MetricState {
    desc: &'static MetricDesc,
    /// Two levels so that the hot path can look a resource up by reference without building
    /// an owned key.
    by_resource: HashMap<Arc<Resource>, HashMap<Attributes, Series, Hasher>, Hasher>,
    /// Non-overflow series across all resources, compared with the cardinality limit.
    series_count: usize,
}

/// Cumulative counters and histograms of every metric.
///
/// Time: the store does not read the clock on the hot path. Each new series takes its start
/// time from the store's "now", which [`MetricsStore::new`] initialises from the system clock
/// and the caller keeps current with [`MetricsStore::set_now`] (e.g. once per event batch).
#[derive(Debug)]
pub struct MetricsStore {
    max_series_per_metric: usize,
    now_unix_nano: u64,
    /// Interned resources, shared by the series of every metric.
    resources: HashSet<Arc<Resource>, Hasher>,
    metrics: HashMap<&'static str, MetricState, Hasher>,
    overflowed: u64,
}

impl MetricsStore {
    /// An empty store that keeps at most `max_series_per_metric` distinct series per metric
    /// (across all resources) before folding new attribute sets into an overflow series.
    pub fn new(max_series_per_metric: usize) -> Self {
        // A clock before 1970 is a broken host, not a reason to fail; 0 then marks "unknown".
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            max_series_per_metric,
            now_unix_nano: now,
            resources: HashSet::default(),
            metrics: HashMap::default(),
            overflowed: 0,
        }
    }

    /// Sets the time, in nanoseconds since the Unix epoch, that series created from now on
    /// record as their start time.
    pub fn set_now(&mut self, unix_nanos: u64) {
        self.now_unix_nano = unix_nanos;
    }

    /// Adds `value` to a counter series.
    pub fn add(&mut self, metric: &'static MetricDesc, resource: &Resource, attributes: Attributes, value: u64) {
        if !matches!(metric.kind, MetricKind::Counter) {
            debug_assert!(false, "add() on non-counter metric {}", metric.name);
            return;
        }
        if let Some(SeriesValue::Counter(total)) = self.series_mut(metric, resource, attributes) {
            *total = total.saturating_add(value);
        }
    }

    /// Records `values` into one histogram series, looked up once. Non-finite values are
    /// dropped: one NaN or infinity would poison the sum forever in a cumulative series.
    pub fn record_all(&mut self, metric: &'static MetricDesc, resource: &Resource, attributes: Attributes, values: &[f64]) {
        let MetricKind::Histogram { bounds } = metric.kind else {
            debug_assert!(false, "record_all() on non-histogram metric {}", metric.name);
            return;
        };
        if let Some(SeriesValue::Histogram(h)) = self.series_mut(metric, resource, attributes) {
            for &value in values.iter().filter(|value| value.is_finite()) {
                h.record(bounds, value);
            }
        }
    }

    /// Number of measurements that went to an overflow series because their metric had hit
    /// the cardinality limit.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Every metric that has at least one series, sorted by name, with its series sorted by
    /// resource then attributes, so that exports are stable.
    pub fn families(&self) -> Vec<Family<'_>> {
        let mut families: Vec<Family<'_>> = self
            .metrics
            .values()
            .map(|state| {
                let mut series: Vec<SeriesRef<'_>> = state
                    .by_resource
                    .iter()
                    .flat_map(|(resource, by_attrs)| {
                        by_attrs.iter().map(move |(attributes, s)| SeriesRef {
                            resource,
                            attributes,
                            start_unix_nano: s.start_unix_nano,
                            value: &s.value,
                        })
                    })
                    .collect();
                series.sort_by(|a, b| (a.resource, a.attributes).cmp(&(b.resource, b.attributes)));
                Family {
                    desc: state.desc,
                    series,
                }
            })
            .filter(|f| !f.series.is_empty())
            .collect();
        families.sort_by_key(|f| f.desc.name);
        families
    }

    /// Finds or creates the series, applying the cardinality limit. `None` only when the
    /// metric name is already registered with a different kind (a programming error).
    fn series_mut(
        &mut self,
        metric: &'static MetricDesc,
        resource: &Resource,
        attributes: Attributes,
    ) -> Option<&mut SeriesValue> {
        let state = self.metrics.entry(metric.name).or_insert_with(|| MetricState {
            desc: metric,
            by_resource: HashMap::default(),
            series_count: 0,
        });
        if state.desc.kind != metric.kind {
            debug_assert!(false, "metric {} registered twice with different kinds", metric.name);
            return None;
        }

        // Look up by reference first: the common case allocates nothing.
        if !state.by_resource.contains_key(resource) {
            let interned = match self.resources.get(resource) {
                Some(r) => Arc::clone(r),
                None => {
                    let r = Arc::new(resource.clone());
                    self.resources.insert(Arc::clone(&r));
                    r
                }
            };
            state.by_resource.insert(interned, HashMap::default());
        }
        let by_attrs = state.by_resource.get_mut(resource)?;

        let key = if by_attrs.contains_key(&attributes) {
            attributes
        } else if state.series_count < self.max_series_per_metric {
            state.series_count += 1;
            attributes
        } else {
            self.overflowed = self.overflowed.saturating_add(1);
            overflow_attributes()
        };
        let now = self.now_unix_nano;
        let series = by_attrs.entry(key).or_insert_with(|| Series {
            start_unix_nano: now,
            value: match metric.kind {
                MetricKind::Counter => SeriesValue::Counter(0),
                MetricKind::Histogram { bounds } => SeriesValue::Histogram(HistogramValue::new(bounds)),
            },
        });
        Some(&mut series.value)
    }
}

/// The attribute set of the overflow series.
fn overflow_attributes() -> Attributes {
    vec![(OVERFLOW_ATTRIBUTE, AttrValue::Str("true".to_owned()))]
}

#[cfg(test)]
mod tests {
    use super::*;

    static LATENCY: MetricDesc = MetricDesc {
        name: "test.latency",
        description: "latency",
        unit: "s",
        kind: MetricKind::Histogram {
            bounds: &[1.0, 2.0, 5.0],
        },
    };
    static BYTES: MetricDesc = MetricDesc {
        name: "test.bytes",
        description: "bytes",
        unit: "By",
        kind: MetricKind::Counter,
    };

    fn res(name: &str) -> Resource {
        Resource {
            service_name: name.to_owned(),
            attributes: vec![("host.name", "h".to_owned())],
        }
    }

    fn histogram(store: &MetricsStore) -> HistogramValue {
        let families = store.families();
        match families[0].series[0].value {
            SeriesValue::Histogram(h) => h.clone(),
            other => panic!("not a histogram: {other:?}"),
        }
    }

    #[test]
    fn bucket_placement_at_exact_boundaries() {
        let mut store = MetricsStore::new(10);
        for v in [0.0, 1.0, 1.0000001, 2.0, 5.0, 5.1, -3.0] {
            store.record_all(&LATENCY, &res("a"), vec![], &[v]);
        }
        let h = histogram(&store);
        // (-inf,1]: 0, 1, -3   (1,2]: 1.0000001, 2   (2,5]: 5   (5,+inf): 5.1
        assert_eq!(h.bucket_counts, vec![3, 2, 1, 1]);
        assert_eq!(h.count, 7);
        assert_eq!(h.min, -3.0);
        assert_eq!(h.max, 5.1);
        assert!((h.sum - 11.1000001).abs() < 1e-9);
    }

    #[test]
    fn non_finite_values_are_dropped() {
        let mut store = MetricsStore::new(10);
        store.record_all(&LATENCY, &res("a"), vec![], &[1.5]);
        store.record_all(&LATENCY, &res("a"), vec![], &[f64::NAN]);
        store.record_all(&LATENCY, &res("a"), vec![], &[f64::INFINITY]);
        assert_eq!(histogram(&store).count, 1);
    }

    #[test]
    fn counters_accumulate_per_series() {
        let mut store = MetricsStore::new(10);
        let attrs = |p: i64| vec![("port", AttrValue::Int(p))];
        store.add(&BYTES, &res("a"), attrs(80), 10);
        store.add(&BYTES, &res("a"), attrs(80), 5);
        store.add(&BYTES, &res("a"), attrs(443), 1);
        store.add(&BYTES, &res("b"), attrs(80), 7);
        let families = store.families();
        let values: Vec<(String, String, &SeriesValue)> = families[0]
            .series
            .iter()
            .map(|s| (s.resource.service_name.clone(), s.attributes[0].1.to_string(), s.value))
            .collect();
        assert_eq!(
            values,
            vec![
                // Integer attributes sort numerically.
                ("a".into(), "80".into(), &SeriesValue::Counter(15)),
                ("a".into(), "443".into(), &SeriesValue::Counter(1)),
                ("b".into(), "80".into(), &SeriesValue::Counter(7)),
            ]
        );
        // Both metrics' series share one interned resource per distinct resource.
        assert_eq!(store.resources.len(), 2);
    }

    #[test]
    fn overflow_series_beyond_the_limit() {
        let mut store = MetricsStore::new(2);
        store.set_now(1_000);
        let attrs = |p: i64| vec![("port", AttrValue::Int(p))];
        store.add(&BYTES, &res("a"), attrs(1), 1);
        store.add(&BYTES, &res("a"), attrs(2), 1);
        store.set_now(2_000);
        store.add(&BYTES, &res("a"), attrs(3), 4);
        store.add(&BYTES, &res("b"), attrs(4), 8);
        // Existing series still take measurements after the limit is hit.
        store.add(&BYTES, &res("a"), attrs(1), 1);
        assert_eq!(store.overflowed(), 2);

        let families = store.families();
        let overflow: Vec<_> = families[0]
            .series
            .iter()
            .filter(|s| s.attributes == &overflow_attributes())
            .map(|s| (s.resource.service_name.as_str(), s.value, s.start_unix_nano))
            .collect();
        assert_eq!(
            overflow,
            vec![
                ("a", &SeriesValue::Counter(4), 2_000),
                ("b", &SeriesValue::Counter(8), 2_000)
            ]
        );
        let normal: Vec<_> = families[0]
            .series
            .iter()
            .filter(|s| s.attributes != &overflow_attributes())
            .map(|s| (s.value, s.start_unix_nano))
            .collect();
        assert_eq!(
            normal,
            vec![(&SeriesValue::Counter(2), 1_000), (&SeriesValue::Counter(1), 1_000)]
        );
    }

    #[test]
    fn limit_is_per_metric() {
        let mut store = MetricsStore::new(1);
        store.add(&BYTES, &res("a"), vec![("k", AttrValue::Int(1))], 1);
        store.record_all(&LATENCY, &res("a"), vec![("k", AttrValue::Int(1))], &[1.0]);
        assert_eq!(store.overflowed(), 0);
    }

    #[test]
    fn empty_store_has_no_families() {
        assert!(MetricsStore::new(1).families().is_empty());
    }
}
