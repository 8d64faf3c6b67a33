//! Encodes a [`MetricsStore`] as one OTLP `ExportMetricsServiceRequest`: one `ResourceMetrics`
//! per resource, one scope, one `Metric` per metric with that resource's series as cumulative
//! data points.

use std::{collections::BTreeMap, sync::Arc};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource as OtlpResource,
};

use super::store::{AttrValue, Attributes, MetricKind, MetricsStore, Resource, SeriesRef, SeriesValue};

/// Data points in a request (what the exporter counts as items).
pub fn point_count(request: &ExportMetricsServiceRequest) -> u64 {
    let points = |metric: &Metric| match &metric.data {
        Some(metric::Data::Sum(sum)) => sum.data_points.len(),
        Some(metric::Data::Histogram(histogram)) => histogram.data_points.len(),
        _ => 0,
    };
    request.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics).map(points).sum::<usize>() as u64
}

/// Builds the export request for everything in `store`, stamping every data point with
/// `now_unix_nano` as its time. An empty store gives a request without `resource_metrics`.
pub fn to_request(
    store: &MetricsStore,
    now_unix_nano: u64,
    scope_name: &str,
    scope_version: &str,
) -> ExportMetricsServiceRequest {
    // Families come sorted by name, so each resource's metrics stay in name order; the
    // BTreeMap orders the resources themselves.
    let mut by_resource: BTreeMap<&Arc<Resource>, Vec<Metric>> = BTreeMap::new();
    for family in store.families() {
        let mut per_resource: BTreeMap<&Arc<Resource>, Vec<&SeriesRef<'_>>> = BTreeMap::new();
        for series in &family.series {
            per_resource.entry(series.resource).or_default().push(series);
        }
        for (resource, series) in per_resource {
            let data = match family.desc.kind {
                MetricKind::Counter => metric::Data::Sum(Sum {
                    data_points: series.iter().filter_map(|s| number_point(s, now_unix_nano)).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                MetricKind::Histogram { bounds } => metric::Data::Histogram(Histogram {
                    data_points: series
                        .iter()
                        .filter_map(|s| histogram_point(s, bounds, now_unix_nano))
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            by_resource.entry(resource).or_default().push(Metric {
                name: family.desc.name.to_owned(),
                description: family.desc.description.to_owned(),
                unit: family.desc.unit.to_owned(),
                metadata: Vec::new(),
                data: Some(data),
            });
        }
    }

    let resource_metrics = by_resource
        .into_iter()
        .map(|(resource, metrics)| ResourceMetrics {
            resource: Some(otlp_resource(resource)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope_name.to_owned(),
                    version: scope_version.to_owned(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

fn number_point(series: &SeriesRef<'_>, now_unix_nano: u64) -> Option<NumberDataPoint> {
    let SeriesValue::Counter(total) = series.value else {
        return None;
    };
    Some(NumberDataPoint {
        attributes: key_values(series.attributes),
        start_time_unix_nano: series.start_unix_nano,
        time_unix_nano: now_unix_nano,
        // OTLP's int is signed; a counter past i64::MAX saturates rather than going negative.
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(*total).unwrap_or(i64::MAX),
        )),
        ..Default::default()
    })
}

fn histogram_point(series: &SeriesRef<'_>, bounds: &[f64], now_unix_nano: u64) -> Option<HistogramDataPoint> {
    let SeriesValue::Histogram(h) = series.value else {
        return None;
    };
    let has_values = h.count > 0;
    Some(HistogramDataPoint {
        attributes: key_values(series.attributes),
        start_time_unix_nano: series.start_unix_nano,
        time_unix_nano: now_unix_nano,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: h.bucket_counts.clone(),
        explicit_bounds: bounds.to_vec(),
        // min/max are only meaningful once something was recorded.
        min: has_values.then_some(h.min),
        max: has_values.then_some(h.max),
        ..Default::default()
    })
}

fn otlp_resource(resource: &Resource) -> OtlpResource {
    let mut attributes = Vec::with_capacity(resource.attributes.len() + 1);
    attributes.push(key_value(
        "service.name",
        any_value::Value::StringValue(resource.service_name.clone()),
    ));
    attributes.extend(
        resource
            .attributes
            .iter()
            .map(|(k, v)| key_value(k, any_value::Value::StringValue(v.clone()))),
    );
    OtlpResource {
        attributes,
        ..Default::default()
    }
}

fn key_values(attributes: &Attributes) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| {
            let value = match v {
                AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
                AttrValue::Int(i) => any_value::Value::IntValue(*i),
            };
            key_value(k, value)
        })
        .collect()
}

fn key_value(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::{MetricDesc, HTTP_DURATION_BOUNDS};
    use super::*;

    static DURATION: MetricDesc = MetricDesc {
        name: "http.server.request.duration",
        description: "Duration of HTTP server requests.",
        unit: "s",
        kind: MetricKind::Histogram {
            bounds: HTTP_DURATION_BOUNDS,
        },
    };
    static CONNECTIONS: MetricDesc = MetricDesc {
        name: "oxeye.tcp.connections",
        description: "TCP connections opened.",
        unit: "{connection}",
        kind: MetricKind::Counter,
    };

    fn resource(name: &str) -> Resource {
        Resource {
            service_name: name.to_owned(),
            attributes: vec![("host.name", "box".to_owned())],
        }
    }

    fn str_attr(kv: &KeyValue) -> (&str, Option<&any_value::Value>) {
        (kv.key.as_str(), kv.value.as_ref().and_then(|v| v.value.as_ref()))
    }

    #[test]
    fn empty_store_gives_empty_request() {
        let req = to_request(&MetricsStore::new(10), 5, "oxeye", "1.0");
        assert!(req.resource_metrics.is_empty());
    }

    #[test]
    fn request_structure() {
        let mut store = MetricsStore::new(10);
        store.set_now(100);
        let attrs = vec![
            ("http.request.method", AttrValue::Str("GET".into())),
            ("http.response.status_code", AttrValue::Int(200)),
        ];
        store.record_all(&DURATION, &resource("web"), attrs.clone(), &[0.005]);
        store.record_all(&DURATION, &resource("web"), attrs.clone(), &[20.0]);
        store.add(&CONNECTIONS, &resource("web"), vec![], 3);
        store.add(&CONNECTIONS, &resource("db"), vec![], 4);

        let req = to_request(&store, 999, "oxeye", "1.2.3");
        assert_eq!(req.resource_metrics.len(), 2);

        // Resources in order: "db" then "web".
        let db = &req.resource_metrics[0];
        let db_attrs: Vec<_> = db.resource.as_ref().unwrap().attributes.iter().map(str_attr).collect();
        assert_eq!(
            db_attrs,
            vec![
                ("service.name", Some(&any_value::Value::StringValue("db".into()))),
                ("host.name", Some(&any_value::Value::StringValue("box".into()))),
            ]
        );
        assert_eq!(db.scope_metrics.len(), 1);
        assert_eq!(db.scope_metrics[0].metrics.len(), 1);

        let web = &req.resource_metrics[1];
        let scope = &web.scope_metrics[0];
        let scope_info = scope.scope.as_ref().unwrap();
        assert_eq!(
            (scope_info.name.as_str(), scope_info.version.as_str()),
            ("oxeye", "1.2.3")
        );
        let names: Vec<_> = scope.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["http.server.request.duration", "oxeye.tcp.connections"]);

        let hist = &scope.metrics[0];
        assert_eq!(hist.unit, "s");
        let Some(metric::Data::Histogram(h)) = &hist.data else {
            panic!("not a histogram: {:?}", hist.data)
        };
        assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(h.data_points.len(), 1);
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, HTTP_DURATION_BOUNDS);
        assert_eq!(p.bucket_counts.len(), HTTP_DURATION_BOUNDS.len() + 1);
        assert_eq!(p.bucket_counts[0], 1);
        assert_eq!(p.bucket_counts[HTTP_DURATION_BOUNDS.len()], 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 2);
        assert_eq!(
            (p.count, p.sum, p.min, p.max),
            (2, Some(20.005), Some(0.005), Some(20.0))
        );
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (100, 999));
        let point_attrs: Vec<_> = p.attributes.iter().map(str_attr).collect();
        assert_eq!(
            point_attrs,
            vec![
                (
                    "http.request.method",
                    Some(&any_value::Value::StringValue("GET".into()))
                ),
                ("http.response.status_code", Some(&any_value::Value::IntValue(200))),
            ]
        );

        let counter = &scope.metrics[1];
        let Some(metric::Data::Sum(s)) = &counter.data else {
            panic!("not a sum: {:?}", counter.data)
        };
        assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert!(s.is_monotonic);
        assert_eq!(s.data_points.len(), 1);
        assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsInt(3)));
        assert!(s.data_points[0].attributes.is_empty());
    }

    #[test]
    fn request_encodes() {
        use prost::Message;
        let mut store = MetricsStore::new(10);
        store.add(&CONNECTIONS, &resource("web"), vec![], 1);
        let bytes = to_request(&store, 1, "oxeye", "0").encode_to_vec();
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).expect("round trip");
        assert_eq!(back.resource_metrics.len(), 1);
    }
}
