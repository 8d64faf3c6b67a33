//! Turning a request back into readable samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    KeyValueAndUnit, ProfilesDictionary, Sample,
};

/// The location attribute that holds a frame's type (`native`, `kernel`, ...).
pub const FRAME_TYPE_KEY: &str = "profile.frame.type";

/// One sample of a request, with every dictionary reference resolved.
///
/// Unresolvable references show up as `<invalid ...>` strings rather than
/// failing; use [`crate::check`] to find them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedSample {
    /// Attributes of the sample's resource; ints as decimal, bools as
    /// `true`/`false`.
    pub resource: BTreeMap<String, String>,
    /// The sample's own attributes (through `attribute_indices`).
    pub attributes: BTreeMap<String, String>,
    /// Function names, innermost first as stored in the stack. A location
    /// with several lines (inlined functions) gives one frame per line, in
    /// line order; a location without lines gives `""`.
    pub frames: Vec<String>,
    /// The [`FRAME_TYPE_KEY`] attribute of each frame's location (`""` if
    /// absent); same length as `frames`.
    pub frame_types: Vec<String>,
    /// Number of timestamps if the sample has any, else the sum of its values.
    pub count: u64,
    /// The sample's timestamps, as sent.
    pub timestamps: Vec<u64>,
}

/// How many events one sample stands for: its number of timestamps, or the
/// sum of its (non-negative) values when it has no timestamps.
pub fn sample_count(sample: &Sample) -> u64 {
    if sample.timestamps_unix_nano.is_empty() {
        sample
            .values
            .iter()
            .map(|v| u64::try_from(*v).unwrap_or(0))
            .fold(0u64, u64::saturating_add)
    } else {
        sample.timestamps_unix_nano.len() as u64
    }
}

/// [`sample_count`] summed over every sample of a request.
pub fn total_samples(request: &ExportProfilesServiceRequest) -> u64 {
    request
        .resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles)
        .flat_map(|sp| &sp.profiles)
        .flat_map(|p| &p.samples)
        .map(sample_count)
        .fold(0u64, u64::saturating_add)
}

/// Every sample of a request, decoded, in message order.
pub fn stacks(request: &ExportProfilesServiceRequest) -> Vec<DecodedSample> {
    let empty = ProfilesDictionary::default();
    let dict = request.dictionary.as_ref().unwrap_or(&empty);
    let mut out = Vec::new();
    for rp in &request.resource_profiles {
        let resource: BTreeMap<String, String> = rp
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .map(|kv| key_value(kv, dict))
            .collect();
        for sample in rp
            .scope_profiles
            .iter()
            .flat_map(|sp| &sp.profiles)
            .flat_map(|p| &p.samples)
        {
            out.push(decode_sample(sample, resource.clone(), dict));
        }
    }
    out
}

fn decode_sample(
    sample: &Sample,
    resource: BTreeMap<String, String>,
    dict: &ProfilesDictionary,
) -> DecodedSample {
    let attributes = sample
        .attribute_indices
        .iter()
        .map(|&i| match table_entry(&dict.attribute_table, i) {
            Some(attr) => attribute(attr, dict),
            None => (format!("<invalid attribute {i}>"), String::new()),
        })
        .collect();
    let mut frames = Vec::new();
    let mut frame_types = Vec::new();
    match table_entry(&dict.stack_table, sample.stack_index) {
        None => {
            frames.push(format!("<invalid stack {}>", sample.stack_index));
            frame_types.push(String::new());
        }
        Some(stack) => {
            for &li in &stack.location_indices {
                let Some(location) = table_entry(&dict.location_table, li) else {
                    frames.push(format!("<invalid location {li}>"));
                    frame_types.push(String::new());
                    continue;
                };
                let frame_type = location
                    .attribute_indices
                    .iter()
                    .filter_map(|&ai| table_entry(&dict.attribute_table, ai))
                    .map(|attr| attribute(attr, dict))
                    .find(|(key, _)| key == FRAME_TYPE_KEY)
                    .map(|(_, value)| value)
                    .unwrap_or_default();
                if location.lines.is_empty() {
                    frames.push(String::new());
                    frame_types.push(frame_type.clone());
                }
                for line in &location.lines {
                    let name = match table_entry(&dict.function_table, line.function_index) {
                        Some(function) => string(dict, function.name_strindex),
                        None => format!("<invalid function {}>", line.function_index),
                    };
                    frames.push(name);
                    frame_types.push(frame_type.clone());
                }
            }
        }
    }
    DecodedSample {
        resource,
        attributes,
        frames,
        frame_types,
        count: sample_count(sample),
        timestamps: sample.timestamps_unix_nano.clone(),
    }
}

/// The entry at a (possibly negative or too large) index of a table.
pub(crate) fn table_entry<T>(table: &[T], index: i32) -> Option<&T> {
    usize::try_from(index).ok().and_then(|i| table.get(i))
}

/// The string at `index`, or an `<invalid ...>` marker.
fn string(dict: &ProfilesDictionary, index: i32) -> String {
    table_entry(&dict.string_table, index)
        .cloned()
        .unwrap_or_else(|| format!("<invalid string {index}>"))
}

fn attribute(attr: &KeyValueAndUnit, dict: &ProfilesDictionary) -> (String, String) {
    let value = attr
        .value
        .as_ref()
        .map(|v| any_value(v, dict))
        .unwrap_or_default();
    (string(dict, attr.key_strindex), value)
}

/// Attributes of a trace or metrics message (no dictionary) as a map, values
/// formatted like the profiles ones.
pub(crate) fn plain_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let empty = ProfilesDictionary::default();
    attributes.iter().map(|kv| key_value(kv, &empty)).collect()
}

fn key_value(kv: &KeyValue, dict: &ProfilesDictionary) -> (String, String) {
    let key = if kv.key.is_empty() && kv.key_strindex != 0 {
        string(dict, kv.key_strindex)
    } else {
        kv.key.clone()
    };
    let value = kv
        .value
        .as_ref()
        .map(|v| any_value(v, dict))
        .unwrap_or_default();
    (key, value)
}

/// Formats an attribute value: strings as is, ints in decimal, bytes in hex,
/// arrays as `[a, b]` and key-value lists as `{k=v, ...}`.
fn any_value(value: &AnyValue, dict: &ProfilesDictionary) -> String {
    match &value.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(bytes)) => bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|v| any_value(v, dict)).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| {
                    let (k, v) = key_value(kv, dict);
                    format!("{k}={v}")
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(Value::StringValueStrindex(i)) => string(dict, *i),
    }
}
