//! Turning a metrics request back into readable data points.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point, NumberDataPoint};

use crate::decode::plain_attributes;
use crate::spans::SERVICE_NAME_KEY;

/// The value of one metric data point.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// A sum (counter) point, int or double, as `f64`. Gauge points are
    /// reported this way too.
    Sum(f64),
    /// An explicit-bucket histogram point.
    Histogram {
        /// Number of recorded values.
        count: u64,
        /// Sum of the recorded values (0 if not sent).
        sum: f64,
        /// Count per bucket; one more than `bounds`.
        bucket_counts: Vec<u64>,
        /// The explicit bucket upper bounds.
        bounds: Vec<f64>,
    },
}

/// One data point of a metrics request, flattened with its metric and resource.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    /// The metric's name.
    pub name: String,
    /// The `service.name` attribute of the point's resource (`""` if absent).
    pub service_name: String,
    /// The point's attributes; strings as is, ints in decimal, bools as
    /// `true`/`false`.
    pub attributes: BTreeMap<String, String>,
    /// The attributes of the point's resource, `service.name` among them.
    pub resource: BTreeMap<String, String>,
    /// The point's value.
    pub value: MetricValue,
}

/// Every sum, gauge and histogram data point of a request, in message order.
/// Exponential histograms and summaries are left out.
pub fn metric_points(request: &ExportMetricsServiceRequest) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        let resource = rm.resource.as_ref().map(|r| plain_attributes(&r.attributes)).unwrap_or_default();
        let service_name = resource.get(SERVICE_NAME_KEY).cloned().unwrap_or_default();
        for metric in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
            let point = |attributes, value| MetricPoint {
                name: metric.name.clone(),
                service_name: service_name.clone(),
                attributes: plain_attributes(attributes),
                resource: resource.clone(),
                value,
            };
            match &metric.data {
                Some(Data::Sum(sum)) => out.extend(
                    sum.data_points
                        .iter()
                        .map(|p| point(&p.attributes, MetricValue::Sum(number(p)))),
                ),
                Some(Data::Gauge(gauge)) => out.extend(
                    gauge
                        .data_points
                        .iter()
                        .map(|p| point(&p.attributes, MetricValue::Sum(number(p)))),
                ),
                Some(Data::Histogram(histogram)) => {
                    out.extend(histogram.data_points.iter().map(|p| {
                        point(
                            &p.attributes,
                            MetricValue::Histogram {
                                count: p.count,
                                sum: p.sum.unwrap_or(0.0),
                                bucket_counts: p.bucket_counts.clone(),
                                bounds: p.explicit_bounds.clone(),
                            },
                        )
                    }))
                }
                Some(Data::ExponentialHistogram(_)) | Some(Data::Summary(_)) | None => {}
            }
        }
    }
    out
}

fn number(point: &NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

/// Number of data points of any kind in a request.
pub(crate) fn total_metric_points(request: &ExportMetricsServiceRequest) -> u64 {
    request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|metric| match &metric.data {
            Some(Data::Sum(d)) => d.data_points.len(),
            Some(Data::Gauge(d)) => d.data_points.len(),
            Some(Data::Histogram(d)) => d.data_points.len(),
            Some(Data::ExponentialHistogram(d)) => d.data_points.len(),
            Some(Data::Summary(d)) => d.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}
