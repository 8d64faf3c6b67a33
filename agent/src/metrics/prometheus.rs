//! Renders a [`MetricsStore`] in the Prometheus text exposition format 0.0.4, naming metrics
//! and labels as the OTel "Prometheus and OpenMetrics compatibility" specification says.
//!
//! Only `service.name` of a resource becomes a label (`service_name`); the other resource
//! attributes are not exposed. Series that end up with the same label set (same service on
//! two hosts, say) are merged, since Prometheus rejects a scrape with duplicate series.

use std::{collections::BTreeMap, fmt::Write as _};

use super::store::{AttrValue, MetricDesc, MetricKind, MetricsStore, SeriesValue};

/// Label carrying the resource's `service.name`.
const SERVICE_NAME_LABEL: &str = "service_name";

/// The store's metrics as a Prometheus text-format page, metrics sorted by name and series by
/// labels so that the output is stable.
pub fn render(store: &MetricsStore) -> String {
    // Keyed by Prometheus name: two OTel names may sanitize to the same one, and a family
    // must appear once in the page.
    let mut families: BTreeMap<String, FamilyAgg> = BTreeMap::new();
    for family in store.families() {
        let name = metric_name(family.desc);
        let agg = families.entry(name).or_insert_with(|| FamilyAgg {
            desc: family.desc,
            series: BTreeMap::new(),
        });
        if agg.desc.kind != family.desc.kind {
            // Same Prometheus name, different type or buckets: cannot share a family; the
            // first one (by OTel name) wins.
            continue;
        }
        let is_histogram = matches!(family.desc.kind, MetricKind::Histogram { .. });
        for series in &family.series {
            let labels = labels(series.attributes, &series.resource.service_name, is_histogram);
            match (agg.series.get_mut(&labels), series.value) {
                (None, value) => {
                    agg.series.insert(labels, value.clone());
                }
                (Some(SeriesValue::Counter(total)), SeriesValue::Counter(v)) => {
                    *total = total.saturating_add(*v);
                }
                (Some(SeriesValue::Histogram(total)), SeriesValue::Histogram(h)) => {
                    total.count = total.count.saturating_add(h.count);
                    total.sum += h.sum;
                    total.min = total.min.min(h.min);
                    total.max = total.max.max(h.max);
                    for (t, v) in total.bucket_counts.iter_mut().zip(&h.bucket_counts) {
                        *t = t.saturating_add(*v);
                    }
                }
                // Kinds were checked above; nothing else can happen.
                (Some(_), _) => {}
            }
        }
    }

    let mut out = String::new();
    for (name, family) in &families {
        write_family(&mut out, name, family);
    }
    out
}

/// One Prometheus metric family: series keyed by their sorted label set.
struct FamilyAgg {
    desc: &'static MetricDesc,
    series: BTreeMap<Vec<(String, String)>, SeriesValue>,
}

fn write_family(out: &mut String, name: &str, family: &FamilyAgg) {
    let type_name = match family.desc.kind {
        MetricKind::Counter => "counter",
        MetricKind::Histogram { .. } => "histogram",
    };
    // Writing to a String cannot fail, hence the ignored fmt::Results below.
    let _ = writeln!(out, "# HELP {name} {}", escape_help(family.desc.description));
    let _ = writeln!(out, "# TYPE {name} {type_name}");
    for (labels, value) in &family.series {
        match (value, family.desc.kind) {
            (SeriesValue::Counter(total), _) => {
                let _ = writeln!(out, "{name}{} {total}", label_block(labels, None));
            }
            (SeriesValue::Histogram(h), MetricKind::Histogram { bounds }) => {
                let mut cumulative = 0u64;
                for (i, count) in h.bucket_counts.iter().enumerate() {
                    cumulative = cumulative.saturating_add(*count);
                    let le = bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| format_float(*b));
                    let _ = writeln!(out, "{name}_bucket{} {cumulative}", label_block(labels, Some(&le)));
                }
                let block = label_block(labels, None);
                let _ = writeln!(out, "{name}_sum{block} {}", format_float(h.sum));
                let _ = writeln!(out, "{name}_count{block} {}", h.count);
            }
            // A histogram value under a counter desc cannot be stored; skip rather than panic.
            (SeriesValue::Histogram(_), MetricKind::Counter) => {}
        }
    }
}

/// `{k="v",...}` (with `le` last when given), or nothing for an empty label set.
fn label_block(labels: &[(String, String)], le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut block = String::from("{");
    let le_pair = le.map(|v| ("le", v));
    let pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(le_pair);
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            block.push(',');
        }
        let _ = write!(block, "{k}=\"{}\"", escape_label_value(v));
    }
    block.push('}');
    block
}

/// The series' labels, sorted by name: its attributes plus `service_name`. An attribute that
/// sanitizes to a name already taken (by `service_name`, `le` on histograms, or an earlier
/// attribute) is dropped, since a label name must be unique within a series.
fn labels(attributes: &[(&'static str, AttrValue)], service_name: &str, is_histogram: bool) -> Vec<(String, String)> {
    let mut labels = vec![(SERVICE_NAME_LABEL.to_owned(), service_name.to_owned())];
    for (key, value) in attributes {
        let key = label_name(key);
        let reserved = is_histogram && key == "le";
        if !reserved && !labels.iter().any(|(k, _)| *k == key) {
            labels.push((key, value.to_string()));
        }
    }
    labels.sort();
    labels
}

/// Prometheus name of a metric: sanitized OTel name, then the unit suffix, then `_total` for
/// counters, each suffix added only when the name does not already end with it.
pub fn metric_name(desc: &MetricDesc) -> String {
    let mut name = sanitize(desc.name);
    if let Some(unit) = unit_suffix(desc.unit) {
        push_suffix(&mut name, &unit);
    }
    if desc.kind == MetricKind::Counter {
        push_suffix(&mut name, "total");
    }
    name
}

fn push_suffix(name: &mut String, suffix: &str) {
    let already =
        name.len() > suffix.len() && name.ends_with(suffix) && name.as_bytes()[name.len() - suffix.len() - 1] == b'_';
    if !already {
        if !name.ends_with('_') {
            name.push('_');
        }
        name.push_str(suffix);
    }
}

/// Replaces every character outside `[a-zA-Z0-9_:]` with `_`, collapses runs of `_`, and
/// prefixes `_` when the name would start with a digit.
fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Label names: like metric names but without `:`, and `key_` in front of a leading digit
/// as the compatibility specification asks.
fn label_name(raw: &str) -> String {
    let mut out = sanitize(&raw.replace(':', "_"));
    let leading_digit = out
        .strip_prefix('_')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    if leading_digit {
        out.replace_range(..1, "key_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The Prometheus suffix for a UCUM unit, if any. Annotations in braces (`{connection}`) carry
/// no unit; `1` only gets `_ratio` on gauges, which we do not have; `a/b` reads `a_per_b`.
fn unit_suffix(unit: &str) -> Option<String> {
    let unit = strip_annotations(unit);
    let unit = unit.trim();
    if unit.is_empty() || unit == "1" {
        return None;
    }
    let suffix = match unit.split_once('/') {
        Some((num, den)) => {
            let num = main_unit(num.trim());
            let den = per_unit(den.trim());
            match (num.is_empty(), den.is_empty()) {
                (_, true) => num,
                (true, false) => format!("per_{den}"),
                (false, false) => format!("{num}_per_{den}"),
            }
        }
        None => main_unit(unit),
    };
    let suffix = sanitize(&suffix).trim_matches('_').to_owned();
    (!suffix.is_empty()).then_some(suffix)
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn main_unit(unit: &str) -> String {
    let word = match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "bit" => "bits",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" => "",
        other => other,
    };
    word.to_owned()
}

fn per_unit(unit: &str) -> String {
    let word = match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => return main_unit(other),
    };
    word.to_owned()
}

/// Formats a sample value or bucket bound: shortest round-trip decimal (`0.005`, `1`, `2.5`),
/// and the spellings Prometheus expects for the special values.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::store::Resource;
    use super::*;

    static DURATION: MetricDesc = MetricDesc {
        name: "http.server.request.duration",
        description: "Duration of HTTP server requests.",
        unit: "s",
        kind: MetricKind::Histogram {
            bounds: &[0.005, 1.0, 2.5],
        },
    };
    static TCP_BYTES: MetricDesc = MetricDesc {
        name: "oxeye.tcp.bytes",
        description: "Bytes sent over TCP.",
        unit: "By",
        kind: MetricKind::Counter,
    };

    fn resource(name: &str, host: &str) -> Resource {
        Resource {
            service_name: name.to_owned(),
            attributes: vec![("host.name", host.to_owned())],
        }
    }

    fn desc(name: &'static str, unit: &'static str, kind: MetricKind) -> MetricDesc {
        MetricDesc {
            name,
            description: "",
            unit,
            kind,
        }
    }

    #[test]
    fn names_follow_the_compatibility_spec() {
        let hist = MetricKind::Histogram { bounds: &[] };
        let cases = [
            (
                desc("http.server.request.duration", "s", hist),
                "http_server_request_duration_seconds",
            ),
            (
                desc("oxeye.tcp.bytes", "By", MetricKind::Counter),
                "oxeye_tcp_bytes_total",
            ),
            (
                desc("oxeye.tcp.connections", "{connection}", MetricKind::Counter),
                "oxeye_tcp_connections_total",
            ),
            (
                desc("oxeye.tcp.retransmits", "{retransmit}", MetricKind::Counter),
                "oxeye_tcp_retransmits_total",
            ),
            (desc("oxeye.things", "1", MetricKind::Counter), "oxeye_things_total"),
            (desc("db.latency", "ms", hist), "db_latency_milliseconds"),
            (desc("net.rate", "By/s", hist), "net_rate_bytes_per_second"),
            (desc("already_seconds", "s", hist), "already_seconds"),
            (desc("requests.total", "", MetricKind::Counter), "requests_total"),
            (
                desc("2xx..weird-name", "", MetricKind::Counter),
                "_2xx_weird_name_total",
            ),
        ];
        for (d, want) in &cases {
            assert_eq!(metric_name(d), *want, "{}", d.name);
        }
        assert_eq!(label_name("http.request.method"), "http_request_method");
        assert_eq!(label_name("9lives"), "key_9lives");
    }

    #[test]
    fn renders_counter_and_histogram() {
        let mut store = MetricsStore::new(100);
        let web = resource("web", "a");
        let attrs = || {
            vec![
                ("http.request.method", AttrValue::Str("GET".into())),
                ("http.response.status_code", AttrValue::Int(200)),
            ]
        };
        for v in [0.005, 0.5, 2.5, 3.0] {
            store.record_all(&DURATION, &web, attrs(), &[v]);
        }
        store.add(&TCP_BYTES, &web, vec![("net.peer.port", AttrValue::Int(443))], 100);
        store.add(&TCP_BYTES, &web, vec![("net.peer.port", AttrValue::Int(80))], 7);
        // Same service on another host: same labels, merged into one Prometheus series.
        store.add(
            &TCP_BYTES,
            &resource("web", "b"),
            vec![("net.peer.port", AttrValue::Int(80))],
            3,
        );
        store.add(
            &TCP_BYTES,
            &resource("db", "a"),
            vec![("net.peer.port", AttrValue::Int(80))],
            1,
        );

        let expected = "\
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",service_name=\"web\",le=\"0.005\"} 1
http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",service_name=\"web\",le=\"1\"} 2
http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",service_name=\"web\",le=\"2.5\"} 3
http_server_request_duration_seconds_bucket{http_request_method=\"GET\",http_response_status_code=\"200\",service_name=\"web\",le=\"+Inf\"} 4
http_server_request_duration_seconds_sum{http_request_method=\"GET\",http_response_status_code=\"200\",service_name=\"web\"} 6.005
http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"200\",service_name=\"web\"} 4
# HELP oxeye_tcp_bytes_total Bytes sent over TCP.
# TYPE oxeye_tcp_bytes_total counter
oxeye_tcp_bytes_total{net_peer_port=\"443\",service_name=\"web\"} 100
oxeye_tcp_bytes_total{net_peer_port=\"80\",service_name=\"db\"} 1
oxeye_tcp_bytes_total{net_peer_port=\"80\",service_name=\"web\"} 10
";
        assert_eq!(render(&store), expected);
    }

    #[test]
    fn escapes_label_values_and_help() {
        static WEIRD: MetricDesc = MetricDesc {
            name: "weird",
            description: "line one\nback\\slash",
            unit: "{thing}",
            kind: MetricKind::Counter,
        };
        let mut store = MetricsStore::new(10);
        let res = Resource {
            service_name: "svc \"quoted\"".into(),
            attributes: vec![],
        };
        store.add(&WEIRD, &res, vec![("path", AttrValue::Str("a\\b\n\"c\"".into()))], 1);
        let expected = "\
# HELP weird_total line one\\nback\\\\slash
# TYPE weird_total counter
weird_total{path=\"a\\\\b\\n\\\"c\\\"\",service_name=\"svc \\\"quoted\\\"\"} 1
";
        assert_eq!(render(&store), expected);
    }

    #[test]
    fn colliding_labels_do_not_duplicate() {
        let mut store = MetricsStore::new(10);
        store.record_all(
            &DURATION,
            &resource("web", "a"),
            vec![
                ("service.name", AttrValue::Str("other".into())),
                ("le", AttrValue::Int(1)),
            ],
            &[0.1],
        );
        let text = render(&store);
        assert!(text.contains("_count{service_name=\"web\"} 1\n"), "{text}");
    }

    #[test]
    fn floats() {
        assert_eq!(format_float(0.005), "0.005");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(10.0), "10");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn empty_store_renders_nothing() {
        assert_eq!(render(&MetricsStore::new(1)), "");
    }
}
