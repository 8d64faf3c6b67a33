//! What devfiler 0.15 *shows* for the frames it accepted, as its collector
//! (`ingest_locations` in `src/collector/otlp/service.rs`) stores them:
//!
//! - every frame is keyed by `(file ID, address)`: the file ID is the
//!   mapping's `process.executable.build_id.htlhash`, or, for a mapping with
//!   no attributes, a hash of the location's lines (function name, file name,
//!   line, column);
//! - a `native` frame is named later by devfiler's own symbolizer from that
//!   key, whatever names were sent;
//! - any other frame (except `abort-marker`) stores its *first* line's
//!   function name under its key, and a later location with the same key
//!   overwrites it, in the same batch or a later one.
//!
//! So two different functions sent at the same `(file ID, address)` show as
//! one name. [`shown_stacks`] replays that over everything a sink received,
//! so a test asserts what a devfiler user sees rather than what was sent.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::profiles::v1development::{Function, Location, ProfilesDictionary};

use crate::decode::{sample_count, table_entry};
use crate::devfiler::{FILE_ID_KEY, LEGACY_FILE_ID_KEY};
use crate::FRAME_TYPE_KEY;

/// One frame as devfiler shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShownFrame {
    /// A native frame: devfiler names it from its own symbols for this file and address.
    Native {
        /// The file ID devfiler looks the symbols up by.
        file_id: String,
        /// The address in that file.
        address: u64,
    },
    /// A frame named by what was sent (the last name stored under its key), or `None`.
    Named(Option<String>),
    /// An `abort-marker` frame.
    Abort,
}

/// One accepted sample's stack as devfiler shows it, innermost frame first.
#[derive(Debug, Clone)]
pub struct ShownSample {
    /// The frames, innermost first.
    pub frames: Vec<ShownFrame>,
    /// The frame types, one per frame.
    pub frame_types: Vec<String>,
    /// Events the sample stands for.
    pub count: u64,
}

impl ShownSample {
    /// The names of the frames devfiler names from what was sent (non-native ones).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.frames.iter().filter_map(|frame| match frame {
            ShownFrame::Named(Some(name)) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// A frame's key in devfiler's frame store.
type FrameKey = (String, u64);

/// A location read from a batch: named frames are looked up by key once every batch is in.
#[derive(Clone)]
enum Read {
    Shown(ShownFrame),
    Keyed(FrameKey),
}

/// The samples of `requests` (in the order received) as devfiler shows them
/// once it has taken all of them in.
pub fn shown_stacks(requests: &[ExportProfilesServiceRequest]) -> Vec<ShownSample> {
    let mut names: HashMap<FrameKey, Option<String>> = HashMap::new();
    let mut read: Vec<(Vec<Read>, Vec<String>, u64)> = Vec::new();
    for request in requests {
        let Some(dict) = &request.dictionary else { continue };
        let locations: Vec<(Read, String)> = dict.location_table.iter().map(|loc| location(dict, loc, &mut names)).collect();
        for profile in request.resource_profiles.iter().flat_map(|r| &r.scope_profiles).flat_map(|s| &s.profiles) {
            for sample in &profile.samples {
                let Some(stack) = table_entry(&dict.stack_table, sample.stack_index) else { continue };
                let (frames, types) = stack.location_indices.iter().filter_map(|&i| locations.get(i as usize).cloned()).unzip();
                read.push((frames, types, sample_count(sample)));
            }
        }
    }
    // Names are read when the view is drawn, after every write.
    let shown = |frame: Read| match frame {
        Read::Shown(frame) => frame,
        Read::Keyed(key) => ShownFrame::Named(names.get(&key).cloned().flatten()),
    };
    read.into_iter()
        .map(|(frames, frame_types, count)| ShownSample { frames: frames.into_iter().map(shown).collect(), frame_types, count })
        .collect()
}

/// A location's frame and type; a non-native frame's name goes into `names` under its key.
fn location(dict: &ProfilesDictionary, loc: &Location, names: &mut HashMap<FrameKey, Option<String>>) -> (Read, String) {
    let kind = attribute(dict, &loc.attribute_indices, FRAME_TYPE_KEY).unwrap_or_default();
    if kind == "abort-marker" {
        return (Read::Shown(ShownFrame::Abort), kind);
    }
    let file_id = file_id(dict, loc);
    if kind == "native" {
        return (Read::Shown(ShownFrame::Native { file_id, address: loc.address }), kind);
    }
    let key = (file_id, loc.address);
    if let Some(line) = loc.lines.first().filter(|line| line.function_index != 0) {
        names.insert(key.clone(), function_field(dict, line.function_index, |f| f.name_strindex));
    }
    (Read::Keyed(key), kind)
}

/// The file ID devfiler keys a location's frame by.
fn file_id(dict: &ProfilesDictionary, loc: &Location) -> String {
    let mapping = table_entry(&dict.mapping_table, loc.mapping_index);
    if let Some(mapping) = mapping.filter(|m| !m.attribute_indices.is_empty()) {
        let id = attribute(dict, &mapping.attribute_indices, FILE_ID_KEY).or_else(|| attribute(dict, &mapping.attribute_indices, LEGACY_FILE_ID_KEY));
        return id.unwrap_or_default();
    }
    // devfiler's fallback: a hash of every line's function name, file name, line and column.
    let mut hasher = DefaultHasher::new();
    for line in &loc.lines {
        if line.function_index != 0 {
            function_field(dict, line.function_index, |f| f.name_strindex).hash(&mut hasher);
            function_field(dict, line.function_index, |f| f.filename_strindex).hash(&mut hasher);
        }
        (line.line, line.column).hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

fn function_field(dict: &ProfilesDictionary, index: i32, field: impl Fn(&Function) -> i32) -> Option<String> {
    let function = table_entry(&dict.function_table, index)?;
    let string = field(function);
    (string > 0).then(|| dict.string_table.get(string as usize).cloned()).flatten()
}

/// The string value of the first attribute with key `key` among `indices`.
fn attribute(dict: &ProfilesDictionary, indices: &[i32], key: &str) -> Option<String> {
    indices.iter().filter_map(|&i| table_entry(&dict.attribute_table, i)).find_map(|kv| {
        let name = dict.string_table.get(kv.key_strindex as usize)?;
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(value)) if name == key => Some(value.clone()),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::profiles::v1development::{KeyValueAndUnit, Line, Mapping, Stack};

    use super::*;
    use crate::fixtures::valid_request;

    /// A request whose one sample's stack is `locations` (mapping attributes, address,
    /// function names of its lines), all of frame type `go`.
    fn go_request(locations: &[(bool, u64, &[&str])]) -> ExportProfilesServiceRequest {
        let mut request = valid_request();
        let dict = request.dictionary.as_mut().unwrap();
        let string = |dict: &mut ProfilesDictionary, s: &str| {
            dict.string_table.push(s.into());
            dict.string_table.len() as i32 - 1
        };
        let key = string(dict, FRAME_TYPE_KEY);
        dict.attribute_table.push(KeyValueAndUnit { key_strindex: key, value: Some(AnyValue { value: Some(Value::StringValue("go".into())) }), unit_strindex: 0 });
        let frame_type = dict.attribute_table.len() as i32 - 1;
        let id_key = string(dict, FILE_ID_KEY);
        dict.attribute_table.push(KeyValueAndUnit { key_strindex: id_key, value: Some(AnyValue { value: Some(Value::StringValue("0123456789abcdef0123456789abcdef".into())) }), unit_strindex: 0 });
        dict.mapping_table.push(Mapping { attribute_indices: vec![dict.attribute_table.len() as i32 - 1], ..Default::default() });
        let mapped = dict.mapping_table.len() as i32 - 1;
        let mut indices = Vec::new();
        for (with_mapping, address, functions) in locations {
            let lines = functions
                .iter()
                .map(|name| {
                    let name_strindex = string(dict, name);
                    dict.function_table.push(Function { name_strindex, ..Default::default() });
                    Line { function_index: dict.function_table.len() as i32 - 1, line: 7, column: 0 }
                })
                .collect();
            let mapping_index = if *with_mapping { mapped } else { 0 };
            dict.location_table.push(Location { mapping_index, address: *address, lines, attribute_indices: vec![frame_type] });
            indices.push(dict.location_table.len() as i32 - 1);
        }
        dict.stack_table.push(Stack { location_indices: indices });
        let profile = &mut request.resource_profiles[0].scope_profiles[0].profiles[0];
        profile.samples.truncate(1);
        profile.samples[0].stack_index = dict.stack_table.len() as i32 - 1;
        request
    }

    #[test]
    fn functions_sent_at_one_file_and_address_show_as_the_last_one() {
        let shared = go_request(&[(true, 0x40, &["inlined"]), (true, 0x40, &["outer"])]);
        let shown = shown_stacks(&[shared]);
        assert_eq!(shown[0].names().collect::<Vec<_>>(), ["outer", "outer"]);
    }

    #[test]
    fn locations_without_a_mapping_are_keyed_by_their_names() {
        let apart = go_request(&[(false, 0, &["inlined"]), (true, 0x40, &["outer"])]);
        let shown = shown_stacks(&[apart]);
        assert_eq!(shown[0].names().collect::<Vec<_>>(), ["inlined", "outer"]);
        assert_eq!(shown[0].frame_types, ["go", "go"]);
    }

    #[test]
    fn only_the_first_line_of_a_non_native_location_is_shown() {
        let lines = go_request(&[(true, 0x40, &["inlined", "outer"])]);
        assert_eq!(shown_stacks(&[lines])[0].names().collect::<Vec<_>>(), ["inlined"]);
    }
}
