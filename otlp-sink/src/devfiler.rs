//! devfiler 0.15's acceptance rules for a profiles `Export`, as its collector
//! (`src/collector/otlp/service.rs`) applies them: it fails the *whole* call
//! with `InvalidArgument` on the first problem, and a few inputs make its
//! handler panic (the call then fails too). [`accepts`] reports the first
//! problem it would hit, so a sink in devfiler mode refuses exactly what
//! devfiler refuses.
//!
//! What devfiler reads, in order:
//! 1. the dictionary, which must be present;
//! 2. every location of the dictionary (used or not), see [`location`];
//! 3. every sample of every profile that has a `sample_type`: its stack and
//!    locations must be in range, the sample type's type and unit must be
//!    non-empty strings, and the `thread.name` attribute is looked up.

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::profiles::v1development::{
    KeyValueAndUnit, Location, ProfilesDictionary, Sample, ValueType,
};

/// The frame types devfiler knows (`profile.frame.type` values).
pub const FRAME_TYPES: [&str; 13] = [
    "native",
    "kernel",
    "jvm",
    "perl",
    "cpython",
    "php",
    "phpjit",
    "ruby",
    "dotnet",
    "v8js",
    "beam",
    "go",
    "abort-marker",
];

/// The mapping attribute devfiler takes the file ID from.
pub const FILE_ID_KEY: &str = "process.executable.build_id.htlhash";
/// The legacy name of [`FILE_ID_KEY`], tried second.
pub const LEGACY_FILE_ID_KEY: &str = "process.executable.build_id.profiling";

/// Largest decoded message devfiler takes (its `max_decoding_message_size`).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// `Ok` if devfiler 0.15 would accept `request`, else the first problem it
/// would report (its own message where it has one).
pub fn accepts(request: &ExportProfilesServiceRequest) -> Result<(), String> {
    let dict = request
        .dictionary
        .as_ref()
        .ok_or("ProfilesDictionary is required")?;
    for (index, loc) in dict.location_table.iter().enumerate() {
        location(dict, loc).map_err(|why| format!("location_table[{index}]: {why}"))?;
    }
    for profile in request
        .resource_profiles
        .iter()
        .flat_map(|r| &r.scope_profiles)
        .flat_map(|s| &s.profiles)
    {
        let Some(sample_type) = &profile.sample_type else {
            continue;
        };
        for (index, sample) in profile.samples.iter().enumerate() {
            self::sample(dict, sample_type, sample).map_err(|why| format!("sample {index}: {why}"))?;
        }
    }
    Ok(())
}

/// One location: it needs a known frame type; an `abort-marker` needs
/// nothing else; any other needs a mapping in range whose file ID devfiler
/// can read; names are only read for non-native frames.
fn location(dict: &ProfilesDictionary, loc: &Location) -> Result<(), String> {
    let kind = match attribute(dict, &loc.attribute_indices, "profile.frame.type") {
        Ok(kind) => kind,
        // devfiler skips a location equal to the table's first (zero) entry.
        Err(_) if dict.location_table.first() == Some(loc) => return Ok(()),
        Err(why) => return Err(why),
    };
    if !FRAME_TYPES.contains(&kind) {
        return Err(format!("unsupported frame kind: {kind}"));
    }
    if kind == "abort-marker" {
        return Ok(());
    }
    let mapping = dict
        .mapping_table
        .get(loc.mapping_index as usize)
        .ok_or("mapping index is out of bounds")?;
    // Without attributes, devfiler hashes the frame's names into a file ID:
    // always valid. With attributes, one of them must be the file ID.
    if !mapping.attribute_indices.is_empty() {
        let file_id = attribute(dict, &mapping.attribute_indices, FILE_ID_KEY)
            .or_else(|_| attribute(dict, &mapping.attribute_indices, LEGACY_FILE_ID_KEY))?;
        if !is_file_id(file_id) {
            return Err(format!("failed to parse file ID {file_id:?}"));
        }
    }
    if kind == "native" {
        // Native frames are named by devfiler itself; it only keeps the file name.
        return optional_string(dict, mapping.filename_strindex, "file name").map(drop);
    }
    let Some(line) = loc.lines.first() else {
        return Ok(());
    };
    if line.function_index == 0 {
        return Ok(());
    }
    let function = dict
        .function_table
        .get(line.function_index as usize)
        .ok_or("invalid function index")?;
    optional_string(dict, function.name_strindex, "function name")?;
    optional_string(dict, function.filename_strindex, "function filename")?;
    Ok(())
}

fn sample(dict: &ProfilesDictionary, sample_type: &ValueType, sample: &Sample) -> Result<(), String> {
    let stack = dict
        .stack_table
        .get(sample.stack_index as usize)
        .ok_or_else(|| format!("stack_index {} is out of range: devfiler panics", sample.stack_index))?;
    if stack
        .location_indices
        .iter()
        .any(|&index| index < 0 || index as usize >= dict.location_table.len())
    {
        return Err("location_table: index is out of bounds".into());
    }
    // Looked up, and its failure ignored, but a negative key index panics.
    if let Err(why) = attribute(dict, &sample.attribute_indices, "thread.name") {
        if why.contains("panics") {
            return Err(why);
        }
    }
    required_string(dict, sample_type.type_strindex, "sample_type.type")?;
    required_string(dict, sample_type.unit_strindex, "sample_type.unit")?;
    Ok(())
}

/// devfiler's `get_attr`: walks `indices` in order until an attribute with
/// key `field`, whose value must then be a plain `string_value`. Every
/// attribute walked past must be in range with a non-empty key.
fn attribute<'a>(dict: &'a ProfilesDictionary, indices: &[i32], field: &str) -> Result<&'a str, String> {
    if indices.is_empty() {
        return Err("empty list of attribute indices".into());
    }
    for &index in indices {
        let kv: &KeyValueAndUnit = dict
            .attribute_table
            .get(index as usize)
            .ok_or_else(|| format!("index {index} out of bounds"))?;
        if kv.key_strindex < 0 {
            return Err(format!("attribute {index} has key index {}: devfiler panics", kv.key_strindex));
        }
        let key = required_string(dict, kv.key_strindex, "attr_key")?;
        if key != field {
            continue;
        }
        return match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(value)) => Ok(value),
            other => Err(format!("failed to cast {other:?} as string for {field}")),
        };
    }
    Err(format!("failed to get {field} from attributes_tables for mapping"))
}

/// A string devfiler requires: index 0 is refused.
fn required_string<'a>(dict: &'a ProfilesDictionary, index: i32, field: &str) -> Result<&'a str, String> {
    if index == 0 {
        return Err(format!("{field} field is not optional"));
    }
    if index < 0 {
        return Err(format!("{field} index {index} is negative: devfiler panics"));
    }
    dict.string_table
        .get(index as usize)
        .map(String::as_str)
        .ok_or_else(|| format!("{field} index out of bounds"))
}

/// A string devfiler takes if present: index 0 means none.
fn optional_string<'a>(dict: &'a ProfilesDictionary, index: i32, field: &str) -> Result<Option<&'a str>, String> {
    if index == 0 {
        return Ok(None);
    }
    dict.string_table
        .get(index as usize)
        .map(|s| Some(s.as_str()))
        .ok_or_else(|| format!("{field} index out of bounds"))
}

/// A file ID devfiler parses: 16 bytes in unpadded (or padded) base64url, or
/// a hexadecimal number of at most 128 bits.
pub fn is_file_id(text: &str) -> bool {
    base64url_16(text) || u128::from_str_radix(text, 16).is_ok()
}

/// Whether `text` is 16 bytes in base64url (22 characters, or 24 with `==`).
fn base64url_16(text: &str) -> bool {
    let body = text.strip_suffix("==").unwrap_or(text);
    let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    // 16 bytes = 128 bits = 21 full sextets and 2 bits: the last character's
    // low 4 bits must be zero (base64's canonical form).
    body.len() == 22
        && body.bytes().all(alphabet)
        && body
            .bytes()
            .last()
            .map(sextet)
            .is_some_and(|last| last & 0x0f == 0)
}

fn sextet(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::profiles::v1development::{Line, Location, Mapping};

    use super::*;
    use crate::fixtures::valid_request;

    fn string(dict: &mut ProfilesDictionary, s: &str) -> i32 {
        dict.string_table.push(s.into());
        dict.string_table.len() as i32 - 1
    }

    fn attr(dict: &mut ProfilesDictionary, key: &str, value: Value) -> i32 {
        let key_strindex = string(dict, key);
        dict.attribute_table.push(KeyValueAndUnit { key_strindex, value: Some(AnyValue { value: Some(value) }), unit_strindex: 0 });
        dict.attribute_table.len() as i32 - 1
    }

    /// The fixture with one more location, of `frame_type`, in a mapping with `mapping_attrs`.
    fn with_location(frame_type: &str, mapping_attrs: &[(&str, Value)]) -> ExportProfilesServiceRequest {
        let mut request = valid_request();
        let dict = request.dictionary.as_mut().unwrap();
        let attribute_indices = mapping_attrs.iter().map(|(k, v)| attr(dict, k, v.clone())).collect();
        dict.mapping_table.push(Mapping { attribute_indices, ..Default::default() });
        let frame = attr(dict, "profile.frame.type", Value::StringValue(frame_type.into()));
        let mapping_index = dict.mapping_table.len() as i32 - 1;
        dict.location_table.push(Location { mapping_index, attribute_indices: vec![frame], lines: vec![Line::default()], ..Default::default() });
        request
    }

    #[test]
    fn the_fixture_is_accepted() {
        accepts(&valid_request()).unwrap();
    }

    #[test]
    fn a_mapping_with_attributes_but_no_file_id_is_refused() {
        let gnu_only = with_location("native", &[("process.executable.build_id.gnu", Value::StringValue("ab12".into()))]);
        let why = accepts(&gnu_only).unwrap_err();
        assert!(why.contains("failed to get process.executable.build_id.profiling"), "{why}");
        let with_id = with_location("native", &[(FILE_ID_KEY, Value::StringValue("0123456789abcdef0123456789abcdef".into()))]);
        accepts(&with_id).unwrap();
        let legacy = with_location("native", &[(LEGACY_FILE_ID_KEY, Value::StringValue("ASNFZ4mrze8BI0VniavN7w".into()))]);
        accepts(&legacy).unwrap();
    }

    #[test]
    fn bad_file_ids_frame_types_and_value_kinds_are_refused() {
        let not_an_id = with_location("native", &[(FILE_ID_KEY, Value::StringValue("not a file id".into()))]);
        assert!(accepts(&not_an_id).unwrap_err().contains("failed to parse file ID"));
        let unknown = with_location("wasm", &[]);
        assert!(accepts(&unknown).unwrap_err().contains("unsupported frame kind: wasm"));
        // A file ID sent as an integer fails, and so does the legacy key then.
        let int_id = with_location("native", &[(FILE_ID_KEY, Value::IntValue(7))]);
        assert!(accepts(&int_id).is_err());
        // A mapping without attributes is fine for any frame type, abort markers need no mapping.
        accepts(&with_location("kernel", &[])).unwrap();
        let mut abort = with_location("abort-marker", &[]);
        abort.dictionary.as_mut().unwrap().location_table.last_mut().unwrap().mapping_index = 999;
        accepts(&abort).unwrap();
    }

    #[test]
    fn out_of_range_indices_are_refused() {
        let mut request = valid_request();
        request.dictionary.as_mut().unwrap().location_table.push(Location { attribute_indices: vec![], ..Default::default() });
        request.dictionary.as_mut().unwrap().location_table.last_mut().unwrap().address = 1;
        assert!(accepts(&request).unwrap_err().contains("empty list of attribute indices"));

        let mut request = with_location("native", &[]);
        request.dictionary.as_mut().unwrap().location_table.last_mut().unwrap().mapping_index = 99;
        assert!(accepts(&request).unwrap_err().contains("mapping index is out of bounds"));

        let mut request = valid_request();
        request.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 99;
        assert!(accepts(&request).unwrap_err().contains("devfiler panics"));

        let mut request = valid_request();
        request.resource_profiles[0].scope_profiles[0].profiles[0].sample_type = Some(ValueType { type_strindex: 0, unit_strindex: 0 });
        assert!(accepts(&request).unwrap_err().contains("sample_type.type field is not optional"));

        let mut request = valid_request();
        request.dictionary = None;
        assert!(accepts(&request).unwrap_err().contains("ProfilesDictionary is required"));
    }

    #[test]
    fn file_ids_parse_as_devfiler_parses_them() {
        for good in ["0123456789abcdef0123456789abcdef", "ff", "ASNFZ4mrze8BI0VniavN7w", "ASNFZ4mrze8BI0VniavN7w=="] {
            assert!(is_file_id(good), "{good}");
        }
        for bad in ["", "1123456789abcdef0123456789abcdef0", "xyz", "ASNFZ4mrze8BI0VniavN7x", "ASNFZ4mrze8BI0Vni+vN7w"] {
            assert!(!is_file_id(bad), "{bad}");
        }
    }
}
