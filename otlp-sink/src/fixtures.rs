//! Small hand-made requests, for tests of this crate and of its users.

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::decode::FRAME_TYPE_KEY;

fn string_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.to_string())),
    })
}

/// A valid request with one resource (`service.name=app`, `process.pid=42`),
/// one CPU profile and one sample: stack `work` <- `main` (innermost first),
/// both `native` frames, sample attribute `thread.name=worker`, and three
/// timestamps (1, 2, 3).
pub fn valid_request() -> ExportProfilesServiceRequest {
    let strings = [
        "",
        "cpu",
        "nanoseconds",
        "main",
        "work",
        FRAME_TYPE_KEY,
        "thread.name",
        "/bin/app",
    ];
    let s = |name: &str| -> i32 {
        strings
            .iter()
            .position(|x| *x == name)
            .and_then(|i| i32::try_from(i).ok())
            .unwrap_or(0)
    };
    let dictionary = ProfilesDictionary {
        string_table: strings.iter().map(|x| x.to_string()).collect(),
        mapping_table: vec![
            Mapping::default(),
            Mapping {
                memory_start: 0x1000,
                memory_limit: 0x2000,
                file_offset: 0,
                filename_strindex: s("/bin/app"),
                attribute_indices: vec![],
            },
        ],
        attribute_table: vec![
            KeyValueAndUnit::default(),
            KeyValueAndUnit {
                key_strindex: s(FRAME_TYPE_KEY),
                value: string_value("native"),
                unit_strindex: 0,
            },
            KeyValueAndUnit {
                key_strindex: s("thread.name"),
                value: string_value("worker"),
                unit_strindex: 0,
            },
        ],
        function_table: vec![
            Function::default(),
            Function {
                name_strindex: s("main"),
                ..Function::default()
            },
            Function {
                name_strindex: s("work"),
                ..Function::default()
            },
        ],
        location_table: vec![
            Location::default(),
            Location {
                mapping_index: 1,
                address: 0x1100,
                lines: vec![Line {
                    function_index: 2,
                    line: 0,
                    column: 0,
                }],
                attribute_indices: vec![1],
            },
            Location {
                mapping_index: 1,
                address: 0x1200,
                lines: vec![Line {
                    function_index: 1,
                    line: 0,
                    column: 0,
                }],
                attribute_indices: vec![1],
            },
        ],
        link_table: vec![Link::default()],
        stack_table: vec![
            Stack::default(),
            Stack {
                location_indices: vec![1, 2],
            },
        ],
    };
    let profile = Profile {
        sample_type: Some(ValueType {
            type_strindex: s("cpu"),
            unit_strindex: s("nanoseconds"),
        }),
        samples: vec![Sample {
            stack_index: 1,
            attribute_indices: vec![2],
            link_index: 0,
            values: vec![],
            timestamps_unix_nano: vec![1, 2, 3],
        }],
        time_unix_nano: 1,
        duration_nano: 3,
        ..Profile::default()
    };
    let resource = Resource {
        attributes: vec![
            KeyValue {
                key: "service.name".into(),
                value: string_value("app"),
                key_strindex: 0,
            },
            KeyValue {
                key: "process.pid".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(42)),
                }),
                key_strindex: 0,
            },
        ],
        ..Resource::default()
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(resource),
            scope_profiles: vec![ScopeProfiles {
                profiles: vec![profile],
                ..ScopeProfiles::default()
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(dictionary),
    }
}
