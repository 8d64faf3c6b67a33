//! Pure validity checks over a received request.
//!
//! Each check returns `Err` with a description of the first problem found.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{ProfilesDictionary, ValueType};
use prost::Message;

pub use crate::decode::{sample_count, stacks, total_samples, DecodedSample, FRAME_TYPE_KEY};

/// Runs every check of this module.
pub fn all(request: &ExportProfilesServiceRequest) -> Result<(), String> {
    dictionary_indices_in_range(request)?;
    no_duplicate_entries(request)
}

/// Table sizes of a dictionary, for range checks.
struct Sizes {
    strings: usize,
    mappings: usize,
    locations: usize,
    functions: usize,
    links: usize,
    attributes: usize,
    stacks: usize,
}

impl Sizes {
    fn of(dict: &ProfilesDictionary) -> Self {
        Sizes {
            strings: dict.string_table.len(),
            mappings: dict.mapping_table.len(),
            locations: dict.location_table.len(),
            functions: dict.function_table.len(),
            links: dict.link_table.len(),
            attributes: dict.attribute_table.len(),
            stacks: dict.stack_table.len(),
        }
    }
}

/// Fails unless `0 <= index < len`; `what` names the field, lazily.
fn in_range(
    index: i32,
    len: usize,
    table: &str,
    what: impl FnOnce() -> String,
) -> Result<(), String> {
    match usize::try_from(index) {
        Ok(i) if i < len => Ok(()),
        _ => Err(format!(
            "{} = {index} is out of range ({table} has {len} entries)",
            what()
        )),
    }
}

fn all_in_range(
    indices: &[i32],
    len: usize,
    table: &str,
    what: impl Fn() -> String,
) -> Result<(), String> {
    for (j, &index) in indices.iter().enumerate() {
        in_range(index, len, table, || format!("{}[{j}]", what()))?;
    }
    Ok(())
}

/// Checks every `*_strindex` and `*_index`/`*_indices` of a request against
/// the length of its dictionary table, and that every table starts with its
/// zero entry (`""` for strings, the default message for the others).
pub fn dictionary_indices_in_range(request: &ExportProfilesServiceRequest) -> Result<(), String> {
    let Some(dict) = request.dictionary.as_ref() else {
        let has_profiles = request
            .resource_profiles
            .iter()
            .flat_map(|rp| &rp.scope_profiles)
            .any(|sp| !sp.profiles.is_empty());
        return if has_profiles {
            Err("request has profiles but no dictionary".into())
        } else {
            Ok(())
        };
    };
    zero_entries(dict)?;
    let sizes = Sizes::of(dict);
    dictionary_references(dict, &sizes)?;
    profile_references(request, &sizes)
}

fn zero_entry<T: Default + PartialEq>(table: &[T], name: &str) -> Result<(), String> {
    match table.first() {
        None => Err(format!("{name} is empty: its zero entry is missing")),
        Some(first) if *first != T::default() => {
            Err(format!("{name}[0] is not the zero (default) entry"))
        }
        Some(_) => Ok(()),
    }
}

fn zero_entries(dict: &ProfilesDictionary) -> Result<(), String> {
    match dict.string_table.first() {
        None => return Err("string_table is empty: its zero entry \"\" is missing".into()),
        Some(s) if !s.is_empty() => return Err(format!("string_table[0] is {s:?}, not \"\"")),
        Some(_) => {}
    }
    zero_entry(&dict.mapping_table, "mapping_table")?;
    zero_entry(&dict.location_table, "location_table")?;
    zero_entry(&dict.function_table, "function_table")?;
    zero_entry(&dict.link_table, "link_table")?;
    zero_entry(&dict.attribute_table, "attribute_table")?;
    zero_entry(&dict.stack_table, "stack_table")
}

fn dictionary_references(dict: &ProfilesDictionary, n: &Sizes) -> Result<(), String> {
    for (i, m) in dict.mapping_table.iter().enumerate() {
        in_range(m.filename_strindex, n.strings, "string_table", || {
            format!("mapping_table[{i}].filename_strindex")
        })?;
        all_in_range(
            &m.attribute_indices,
            n.attributes,
            "attribute_table",
            || format!("mapping_table[{i}].attribute_indices"),
        )?;
    }
    for (i, loc) in dict.location_table.iter().enumerate() {
        in_range(loc.mapping_index, n.mappings, "mapping_table", || {
            format!("location_table[{i}].mapping_index")
        })?;
        all_in_range(
            &loc.attribute_indices,
            n.attributes,
            "attribute_table",
            || format!("location_table[{i}].attribute_indices"),
        )?;
        for (j, line) in loc.lines.iter().enumerate() {
            in_range(line.function_index, n.functions, "function_table", || {
                format!("location_table[{i}].lines[{j}].function_index")
            })?;
        }
    }
    for (i, f) in dict.function_table.iter().enumerate() {
        for (field, index) in [
            ("name_strindex", f.name_strindex),
            ("system_name_strindex", f.system_name_strindex),
            ("filename_strindex", f.filename_strindex),
        ] {
            in_range(index, n.strings, "string_table", || {
                format!("function_table[{i}].{field}")
            })?;
        }
    }
    for (i, attr) in dict.attribute_table.iter().enumerate() {
        in_range(attr.key_strindex, n.strings, "string_table", || {
            format!("attribute_table[{i}].key_strindex")
        })?;
        in_range(attr.unit_strindex, n.strings, "string_table", || {
            format!("attribute_table[{i}].unit_strindex")
        })?;
        if let Some(value) = &attr.value {
            any_value_references(value, n, &format!("attribute_table[{i}].value"))?;
        }
    }
    for (i, stack) in dict.stack_table.iter().enumerate() {
        all_in_range(
            &stack.location_indices,
            n.locations,
            "location_table",
            || format!("stack_table[{i}].location_indices"),
        )?;
    }
    Ok(())
}

fn any_value_references(value: &AnyValue, n: &Sizes, path: &str) -> Result<(), String> {
    match &value.value {
        Some(Value::StringValueStrindex(index)) => {
            in_range(*index, n.strings, "string_table", || {
                format!("{path}.string_value_strindex")
            })
        }
        Some(Value::ArrayValue(array)) => {
            for (j, v) in array.values.iter().enumerate() {
                any_value_references(v, n, &format!("{path}.array_value[{j}]"))?;
            }
            Ok(())
        }
        Some(Value::KvlistValue(list)) => {
            key_values_references(&list.values, n, &format!("{path}.kvlist_value"))
        }
        _ => Ok(()),
    }
}

fn key_values_references(kvs: &[KeyValue], n: &Sizes, path: &str) -> Result<(), String> {
    for (j, kv) in kvs.iter().enumerate() {
        in_range(kv.key_strindex, n.strings, "string_table", || {
            format!("{path}[{j}].key_strindex")
        })?;
        if let Some(value) = &kv.value {
            any_value_references(value, n, &format!("{path}[{j}].value"))?;
        }
    }
    Ok(())
}

fn value_type_references(vt: &Option<ValueType>, n: &Sizes, path: &str) -> Result<(), String> {
    let Some(vt) = vt else { return Ok(()) };
    in_range(vt.type_strindex, n.strings, "string_table", || {
        format!("{path}.type_strindex")
    })?;
    in_range(vt.unit_strindex, n.strings, "string_table", || {
        format!("{path}.unit_strindex")
    })
}

fn profile_references(request: &ExportProfilesServiceRequest, n: &Sizes) -> Result<(), String> {
    for (r, rp) in request.resource_profiles.iter().enumerate() {
        let rpath = format!("resource_profiles[{r}]");
        if let Some(resource) = &rp.resource {
            key_values_references(
                &resource.attributes,
                n,
                &format!("{rpath}.resource.attributes"),
            )?;
        }
        for (s, sp) in rp.scope_profiles.iter().enumerate() {
            let spath = format!("{rpath}.scope_profiles[{s}]");
            if let Some(scope) = &sp.scope {
                key_values_references(&scope.attributes, n, &format!("{spath}.scope.attributes"))?;
            }
            for (p, profile) in sp.profiles.iter().enumerate() {
                let ppath = format!("{spath}.profiles[{p}]");
                value_type_references(&profile.sample_type, n, &format!("{ppath}.sample_type"))?;
                value_type_references(&profile.period_type, n, &format!("{ppath}.period_type"))?;
                all_in_range(
                    &profile.attribute_indices,
                    n.attributes,
                    "attribute_table",
                    || format!("{ppath}.attribute_indices"),
                )?;
                for (k, sample) in profile.samples.iter().enumerate() {
                    let path = || format!("{ppath}.samples[{k}]");
                    in_range(sample.stack_index, n.stacks, "stack_table", || {
                        format!("{}.stack_index", path())
                    })?;
                    in_range(sample.link_index, n.links, "link_table", || {
                        format!("{}.link_index", path())
                    })?;
                    all_in_range(
                        &sample.attribute_indices,
                        n.attributes,
                        "attribute_table",
                        || format!("{}.attribute_indices", path()),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Fails on the first pair of equal entries within `table`, comparing the
/// entries' protobuf encodings.
fn unique_encoded<T: Message>(table: &[T], name: &str) -> Result<(), String> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::with_capacity(table.len());
    for (i, entry) in table.iter().enumerate() {
        if let Some(first) = seen.insert(entry.encode_to_vec(), i) {
            return Err(format!("{name}[{i}] duplicates {name}[{first}]"));
        }
    }
    Ok(())
}

/// Checks that no dictionary table holds two equal entries.
pub fn no_duplicate_entries(request: &ExportProfilesServiceRequest) -> Result<(), String> {
    let Some(dict) = request.dictionary.as_ref() else {
        return Ok(());
    };
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(dict.string_table.len());
    for (i, s) in dict.string_table.iter().enumerate() {
        if let Some(first) = seen.insert(s.as_str(), i) {
            return Err(format!(
                "string_table[{i}] duplicates string_table[{first}] ({s:?})"
            ));
        }
    }
    unique_encoded(&dict.mapping_table, "mapping_table")?;
    unique_encoded(&dict.location_table, "location_table")?;
    unique_encoded(&dict.function_table, "function_table")?;
    unique_encoded(&dict.link_table, "link_table")?;
    unique_encoded(&dict.attribute_table, "attribute_table")?;
    unique_encoded(&dict.stack_table, "stack_table")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::valid_request;
    use opentelemetry_proto::tonic::profiles::v1development::{Function, Mapping};

    fn dict(request: &mut ExportProfilesServiceRequest) -> &mut ProfilesDictionary {
        request.dictionary.get_or_insert_with(Default::default)
    }

    fn first_sample(
        request: &mut ExportProfilesServiceRequest,
    ) -> &mut opentelemetry_proto::tonic::profiles::v1development::Sample {
        &mut request.resource_profiles[0].scope_profiles[0].profiles[0].samples[0]
    }

    #[test]
    fn valid_request_passes() {
        assert_eq!(all(&valid_request()), Ok(()));
    }

    #[test]
    fn empty_request_passes() {
        assert_eq!(all(&ExportProfilesServiceRequest::default()), Ok(()));
    }

    #[test]
    fn profiles_without_dictionary_fail() {
        let mut request = valid_request();
        request.dictionary = None;
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("no dictionary"), "{err}");
    }

    #[test]
    fn stack_index_out_of_range() {
        let mut request = valid_request();
        first_sample(&mut request).stack_index = 2;
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("samples[0].stack_index = 2"), "{err}");
        assert!(err.contains("stack_table has 2 entries"), "{err}");
    }

    #[test]
    fn negative_attribute_index() {
        let mut request = valid_request();
        first_sample(&mut request).attribute_indices = vec![1, -1];
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("attribute_indices[1] = -1"), "{err}");
    }

    #[test]
    fn nested_references_are_checked() {
        let mut request = valid_request();
        dict(&mut request).location_table[1].mapping_index = 9;
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("location_table[1].mapping_index = 9"), "{err}");

        let mut request = valid_request();
        dict(&mut request).location_table[2].lines[0].function_index = 3;
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("lines[0].function_index = 3"), "{err}");

        let mut request = valid_request();
        dict(&mut request).function_table[1].filename_strindex = 100;
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("function_table[1].filename_strindex"), "{err}");

        let mut request = valid_request();
        dict(&mut request).stack_table[1].location_indices.push(3);
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(
            err.contains("stack_table[1].location_indices[2] = 3"),
            "{err}"
        );

        let mut request = valid_request();
        dict(&mut request).attribute_table[1].value = Some(AnyValue {
            value: Some(Value::StringValueStrindex(50)),
        });
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("string_value_strindex = 50"), "{err}");

        let mut request = valid_request();
        request.resource_profiles[0].scope_profiles[0].profiles[0]
            .sample_type
            .as_mut()
            .expect("fixture has a sample type")
            .unit_strindex = 8;
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("sample_type.unit_strindex = 8"), "{err}");
    }

    #[test]
    fn zero_entries_are_required() {
        let mut request = valid_request();
        dict(&mut request).string_table[0] = "x".into();
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("string_table[0]"), "{err}");

        let mut request = valid_request();
        dict(&mut request).link_table.clear();
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("link_table is empty"), "{err}");

        let mut request = valid_request();
        dict(&mut request).mapping_table[0] = Mapping {
            memory_start: 1,
            ..Mapping::default()
        };
        let err = dictionary_indices_in_range(&request).unwrap_err();
        assert!(err.contains("mapping_table[0] is not the zero"), "{err}");
    }

    #[test]
    fn duplicates_are_found() {
        let mut request = valid_request();
        dict(&mut request).string_table.push("main".into());
        let err = no_duplicate_entries(&request).unwrap_err();
        assert!(
            err.contains("string_table[8] duplicates string_table[3]"),
            "{err}"
        );

        let mut request = valid_request();
        let copy: Function = dict(&mut request).function_table[2];
        dict(&mut request).function_table.push(copy);
        let err = no_duplicate_entries(&request).unwrap_err();
        assert!(
            err.contains("function_table[3] duplicates function_table[2]"),
            "{err}"
        );

        let mut request = valid_request();
        dict(&mut request).stack_table.push(Default::default());
        let err = no_duplicate_entries(&request).unwrap_err();
        assert!(
            err.contains("stack_table[2] duplicates stack_table[0]"),
            "{err}"
        );
    }

    #[test]
    fn stacks_of_valid_request() {
        let samples = stacks(&valid_request());
        assert_eq!(samples.len(), 1);
        let sample = &samples[0];
        assert_eq!(sample.frames, ["work", "main"]);
        assert_eq!(sample.frame_types, ["native", "native"]);
        assert_eq!(sample.count, 3);
        assert_eq!(sample.timestamps, [1, 2, 3]);
        assert_eq!(
            sample.attributes.get("thread.name").map(String::as_str),
            Some("worker")
        );
        assert_eq!(
            sample.resource.get("service.name").map(String::as_str),
            Some("app")
        );
        assert_eq!(
            sample.resource.get("process.pid").map(String::as_str),
            Some("42")
        );
        assert_eq!(total_samples(&valid_request()), 3);
    }

    #[test]
    fn counts_from_values_and_lineless_locations() {
        let mut request = valid_request();
        {
            let sample = first_sample(&mut request);
            sample.timestamps_unix_nano.clear();
            sample.values = vec![5, 2];
        }
        dict(&mut request).location_table[1].lines.clear();
        let samples = stacks(&request);
        assert_eq!(samples[0].count, 7);
        assert_eq!(samples[0].frames, ["", "main"]);
        assert_eq!(samples[0].frame_types, ["native", "native"]);
    }
}
