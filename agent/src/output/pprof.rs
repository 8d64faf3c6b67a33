//! `profile.pb.gz`: the profile in pprof's protobuf format, gzipped, for `pprof` and the
//! tools that read it.

use std::{collections::HashMap, io::Write, time::UNIX_EPOCH};

use anyhow::Result;
use flate2::{write::GzEncoder, Compression};
use prost::Message;

use super::{pprof_proto as pb, Kind, RunInfo};
use crate::{
    objects::{ObjectId, ObjectRegistry},
    profile::{Frame, Profile, SampleKey},
    symbolize::{Code, FrameNamer, KERNEL_FILE},
};

/// Mapping id of the kernel.
const KERNEL_MAPPING: u64 = 1;

/// Encodes the profile and writes it gzipped.
pub fn write(profile: &Profile, kind: Kind, namer: &mut FrameNamer, objects: &mut ObjectRegistry, run: RunInfo, out: &mut dyn Write) -> Result<()> {
    let encoded = match kind {
        Kind::Cpu => build(profile, namer, objects, run),
        Kind::OffCpu => build_off_cpu(profile, namer, objects, run),
    }
    .encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&encoded)?;
    gz.finish()?;
    Ok(())
}

fn build(profile: &Profile, namer: &mut FrameNamer, objects: &mut ObjectRegistry, run: RunInfo) -> pb::Profile {
    let mut b = Builder::new();
    let samples = pb::ValueType { r#type: b.strings.intern("samples"), unit: b.strings.intern("count") };
    let cpu = pb::ValueType { r#type: b.strings.intern("cpu"), unit: b.strings.intern("nanoseconds") };
    let [trace_key, span_key] = ["trace_id", "span_id"].map(|k| b.strings.intern(k));
    let values = |count: u64| vec![count as i64, (count * run.period_ns) as i64];
    // Samples linked to a span are their own pprof samples, labelled with its IDs.
    let mut linked: HashMap<&SampleKey, u64> = HashMap::new();
    for (key, span, count) in profile.linked() {
        *linked.entry(key).or_default() += count;
        let mut label = b.labels(profile, key);
        label.push(pb::Label { key: trace_key, str: b.strings.intern(&span.trace_id_hex()), ..Default::default() });
        label.push(pb::Label { key: span_key, str: b.strings.intern(&span.span_id_hex()), ..Default::default() });
        b.sample(profile, key, values(count), label, namer, objects);
    }
    for (key, count) in profile.counts() {
        let unlinked = count.saturating_sub(linked.get(key).copied().unwrap_or(0));
        if unlinked > 0 {
            let label = b.labels(profile, key);
            b.sample(profile, key, values(unlinked), label, namer, objects);
        }
    }
    b.finish(vec![samples, cpu], Some(cpu), run)
}

/// The off-CPU profile: nanoseconds off CPU by the stack threads were switched out in.
fn build_off_cpu(profile: &Profile, namer: &mut FrameNamer, objects: &mut ObjectRegistry, run: RunInfo) -> pb::Profile {
    let mut b = Builder::new();
    let off_cpu = pb::ValueType { r#type: b.strings.intern("off_cpu"), unit: b.strings.intern("nanoseconds") };
    for (key, nanoseconds) in profile.off_cpu() {
        let label = b.labels(profile, key);
        b.sample(profile, key, vec![nanoseconds as i64], label, namer, objects);
    }
    b.finish(vec![off_cpu], None, run)
}

#[derive(Default)]
struct Builder {
    out: pb::Profile,
    strings: Strings,
    locations: HashMap<Frame, u64>,
    functions: HashMap<(i64, i64, u64), u64>,
    mappings: HashMap<ObjectId, u64>,
}

impl Builder {
    fn finish(self, sample_type: Vec<pb::ValueType>, period_type: Option<pb::ValueType>, run: RunInfo) -> pb::Profile {
        let mut out = self.out;
        out.sample_type = sample_type;
        out.period_type = period_type;
        out.period = if period_type.is_some() { run.period_ns as i64 } else { 0 };
        out.time_nanos = run.start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
        out.duration_nanos = run.duration.as_nanos() as i64;
        out.string_table = self.strings.table;
        out
    }

    /// A profile with the empty string at index 0 and the kernel's mapping.
    fn new() -> Self {
        let mut b = Builder::default();
        b.strings.intern(""); // index 0 is the empty string
        let filename = b.strings.intern(KERNEL_FILE);
        b.out.mapping.push(pb::Mapping { id: KERNEL_MAPPING, memory_limit: u64::MAX, filename, has_functions: true, ..Default::default() });
        b
    }

    /// Who a sample is: process and thread, by id and by name.
    fn labels(&mut self, profile: &Profile, key: &SampleKey) -> Vec<pb::Label> {
        let [pid, tid, process, thread] = ["pid", "tid", "process_name", "thread_name"].map(|k| self.strings.intern(k));
        vec![
            pb::Label { key: pid, num: i64::from(key.pid), ..Default::default() },
            pb::Label { key: tid, num: i64::from(key.tid), ..Default::default() },
            pb::Label { key: process, str: self.strings.intern(profile.name(key.process)), ..Default::default() },
            pb::Label { key: thread, str: self.strings.intern(profile.name(key.thread)), ..Default::default() },
        ]
    }

    /// A sample of `value` under `key`'s stack.
    fn sample(&mut self, profile: &Profile, key: &SampleKey, value: Vec<i64>, label: Vec<pb::Label>, namer: &mut FrameNamer, objects: &mut ObjectRegistry) {
        let location_id = profile.stack(key.stack).iter().map(|&frame| self.location(frame, namer, objects)).collect();
        self.out.sample.push(pb::Sample { location_id, value, label });
    }

    fn location(&mut self, frame: Frame, namer: &mut FrameNamer, objects: &mut ObjectRegistry) -> u64 {
        if let Some(&id) = self.locations.get(&frame) {
            return id;
        }
        let resolved = namer.resolve(frame, objects);
        // Files are addressed by file offset (see `mapping`); frames without a file by address.
        let mapping_id = match resolved.code {
            Code::Kernel => KERNEL_MAPPING,
            Code::File(object) => self.mapping(object, objects),
            Code::Anonymous | Code::Interpreted => 0,
        };
        let name = self.strings.intern(&resolved.name);
        let filename = match resolved.path(objects) {
            "" => 0,
            path => self.strings.intern(path),
        };
        let start_line = resolved.source.as_ref().map_or(0, |source| source.first_line as i64);
        // A Python function is (name, file, first line); a native one (name, mapping).
        let key = (name, if resolved.source.is_some() { start_line } else { -1 }, if mapping_id == 0 { filename as u64 } else { mapping_id });
        let function_id = match self.functions.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.out.function.len() as u64 + 1;
                self.out.function.push(pb::Function { id, name, system_name: name, filename, start_line });
                self.functions.insert(key, id);
                id
            }
        };
        let id = self.out.location.len() as u64 + 1;
        let line = resolved.source.as_ref().map_or(0, |source| source.line as i64);
        self.out.location.push(pb::Location { id, mapping_id, address: resolved.address, line: vec![pb::Line { function_id, line }] });
        self.locations.insert(frame, id);
        id
    }

    /// One mapping per file, addressed by file offset (`memory_start` 0, `file_offset` 0), so
    /// a frame's address is its offset in the file and tools can symbolize it by build ID.
    fn mapping(&mut self, object_id: ObjectId, objects: &ObjectRegistry) -> u64 {
        if let Some(&id) = self.mappings.get(&object_id) {
            return id;
        }
        let object = objects.get(object_id);
        let id = self.out.mapping.len() as u64 + 1;
        self.out.mapping.push(pb::Mapping {
            id,
            memory_start: 0,
            memory_limit: if object.size > 0 { object.size } else { u64::MAX },
            file_offset: 0,
            filename: self.strings.intern(&object.path),
            build_id: object.build_id().map_or(0, |b| self.strings.intern(&b.to_hex())),
            has_functions: object.symbols().is_some(),
        });
        self.mappings.insert(object_id, id);
        id
    }
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}
