//! The de-duplicated tables of a `ProfilesDictionary`. Index 0 of every table is the
//! empty/zero entry, as the profiles proto requires.

use std::{collections::HashMap, hash::Hash};

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue},
    profiles::v1development::{Function, KeyValueAndUnit, Line, Link, Location, Mapping, ProfilesDictionary, Stack},
};

/// A location's identity: mapping, address, `(function, line)` per line, attributes.
type LocationKey = (i32, u64, Vec<(i32, i64)>, Vec<i32>);

/// A table whose entries are unique; `add` returns the index of an equal entry if there is one.
#[derive(Debug)]
struct Table<K, V> {
    index: HashMap<K, i32>,
    values: Vec<V>,
}

impl<K: Hash + Eq, V: Default> Table<K, V> {
    fn new(zero_key: K) -> Self {
        Table { index: HashMap::from([(zero_key, 0)]), values: vec![V::default()] }
    }

    fn add(&mut self, key: K, make: impl FnOnce() -> V) -> i32 {
        if let Some(&index) = self.index.get(&key) {
            return index;
        }
        let index = self.values.len() as i32;
        self.values.push(make());
        self.index.insert(key, index);
        index
    }
}

/// Attribute values oxeye sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

impl Value {
    pub fn to_any(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                Value::Str(s) => any_value::Value::StringValue(s.clone()),
                Value::Int(i) => any_value::Value::IntValue(*i),
            }),
        }
    }
}

/// Builds a `ProfilesDictionary`.
#[derive(Debug)]
pub struct Dictionary {
    strings: Table<String, String>,
    attributes: Table<(i32, Value), KeyValueAndUnit>,
    functions: Table<(i32, i32, i64), Function>,
    mappings: Table<(i32, Vec<i32>), Mapping>,
    locations: Table<LocationKey, Location>,
    stacks: Table<Vec<i32>, Stack>,
    links: Table<([u8; 16], [u8; 8]), Link>,
}

impl Dictionary {
    pub fn new() -> Self {
        Dictionary {
            strings: Table::new(String::new()),
            attributes: Table::new((0, Value::Str(String::new()))),
            functions: Table::new((0, 0, 0)),
            mappings: Table::new((0, Vec::new())),
            locations: Table::new((0, 0, Vec::new(), Vec::new())),
            stacks: Table::new(Vec::new()),
            links: Table::new(([0; 16], [0; 8])),
        }
    }

    pub fn string(&mut self, s: &str) -> i32 {
        if let Some(&index) = self.strings.index.get(s) {
            return index;
        }
        self.strings.add(s.to_owned(), || s.to_owned())
    }

    pub fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key_strindex = self.string(key);
        self.attributes.add((key_strindex, value.clone()), || KeyValueAndUnit { key_strindex, value: Some(value.to_any()), unit_strindex: 0 })
    }

    pub fn function(&mut self, name: &str, file: &str) -> i32 {
        self.function_at(name, file, 0)
    }

    /// A function whose source starts at `start_line` (Python functions).
    pub fn function_at(&mut self, name: &str, file: &str, start_line: i64) -> i32 {
        let (name_strindex, filename_strindex) = (self.string(name), self.string(file));
        self.functions.add((name_strindex, filename_strindex, start_line), || Function {
            name_strindex,
            system_name_strindex: name_strindex,
            filename_strindex,
            start_line,
        })
    }

    /// A mapping for a whole file (addresses in it are the file's own virtual addresses).
    pub fn mapping(&mut self, file: &str, attribute_indices: Vec<i32>) -> i32 {
        let filename_strindex = self.string(file);
        self.mappings.add((filename_strindex, attribute_indices.clone()), || Mapping {
            memory_start: 0,
            memory_limit: 0,
            file_offset: 0,
            filename_strindex,
            attribute_indices,
        })
    }

    pub fn location(&mut self, mapping_index: i32, address: u64, function_index: i32, attribute_indices: Vec<i32>) -> i32 {
        self.location_at(mapping_index, address, function_index, 0, attribute_indices)
    }

    /// A location at a source `line` of its function (Python frames).
    pub fn location_at(&mut self, mapping_index: i32, address: u64, function_index: i32, line: i64, attribute_indices: Vec<i32>) -> i32 {
        let lines = if function_index == 0 { Vec::new() } else { vec![(function_index, line)] };
        self.location_lines(mapping_index, address, lines, attribute_indices)
    }

    /// A location with one line per source frame at its address, `(function, line)`: the
    /// innermost inlined function first, the function whose code it is last (the OTLP order).
    pub fn location_lines(&mut self, mapping_index: i32, address: u64, lines: Vec<(i32, i64)>, attribute_indices: Vec<i32>) -> i32 {
        let key = (mapping_index, address, lines.clone(), attribute_indices.clone());
        self.locations.add(key, || Location {
            mapping_index,
            address,
            lines: lines.into_iter().map(|(function_index, line)| Line { function_index, line, column: 0 }).collect(),
            attribute_indices,
        })
    }

    pub fn stack(&mut self, location_indices: Vec<i32>) -> i32 {
        self.stacks.add(location_indices.clone(), || Stack { location_indices })
    }

    /// A link to a span (`Sample.link_index`).
    pub fn link(&mut self, trace_id: [u8; 16], span_id: [u8; 8]) -> i32 {
        self.links.add((trace_id, span_id), || Link { trace_id: trace_id.to_vec(), span_id: span_id.to_vec() })
    }

    pub fn finish(self) -> ProfilesDictionary {
        ProfilesDictionary {
            mapping_table: self.mappings.values,
            location_table: self.locations.values,
            function_table: self.functions.values,
            link_table: self.links.values,
            string_table: self.strings.values,
            attribute_table: self.attributes.values,
            stack_table: self.stacks.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_entries_and_deduplication() {
        let mut d = Dictionary::new();
        assert_eq!(d.string(""), 0);
        let a = d.string("a");
        assert_eq!(d.string("a"), a);
        let f = d.function("main", "/bin/x");
        assert_eq!(d.function("main", "/bin/x"), f);
        assert_eq!(d.stack(Vec::new()), 0, "the empty stack is entry 0");
        let attr = d.attribute("thread.id", Value::Int(7));
        assert_eq!(d.attribute("thread.id", Value::Int(7)), attr);
        assert_ne!(d.attribute("thread.id", Value::Int(8)), attr);
        let dictionary = d.finish();
        assert_eq!(dictionary.string_table[0], "");
        assert_eq!(dictionary.function_table[0], Function::default());
        assert_eq!(dictionary.attribute_table[0], KeyValueAndUnit::default());
        assert_eq!(dictionary.link_table, [Link::default()]);
        let mut d = Dictionary::new();
        let link = d.link([1; 16], [2; 8]);
        assert_eq!((link, d.link([1; 16], [2; 8]), d.link([1; 16], [3; 8])), (1, 1, 2));
        assert_eq!(d.finish().link_table[1], Link { trace_id: vec![1; 16], span_id: vec![2; 8] });
    }
}
