//! Encodes a [`SampleBatch`] as one `ExportProfilesServiceRequest`: one resource per process,
//! one CPU profile per resource, and one shared dictionary with every table de-duplicated.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::InstrumentationScope,
    profiles::v1development::{Profile, ResourceProfiles, Sample, ScopeProfiles, ValueType},
    resource::v1::Resource,
};

use super::{
    batch::SampleBatch,
    dictionary::{Dictionary, Value},
    resource::{process_attributes, HostInfo},
};
use crate::{
    links::SpanRef,
    objects::{Object, ObjectRegistry},
    profile::{self, Frame},
    symbolize::{Code, FrameKind, FrameNamer, ResolvedFrame, KERNEL_FILE},
};

/// What the builder needs besides the batch.
pub struct BuildContext<'a> {
    /// Host facts and `OTEL_RESOURCE_ATTRIBUTES`.
    pub host: &'a HostInfo,
    /// Nanoseconds of CPU time one sample stands for.
    pub period_ns: u64,
    /// End of the interval, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// The run's profile, which interned the batch's stacks and thread names.
    pub profile: &'a profile::Profile,
    /// Frame names.
    pub namer: &'a mut FrameNamer,
    /// Files and their symbols, build IDs and file IDs.
    pub objects: &'a mut ObjectRegistry,
}

/// Identifies one OTLP sample within a process: same stack, thread, CPU and span.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct SampleIdentity {
    stack: profile::StackId,
    tid: u32,
    thread_name: profile::NameId,
    cpu: u32,
    link: Option<SpanRef>,
}

/// One process's samples of the batch, each identity with its events: (time, nanoseconds off
/// CPU for an off-CPU event).
#[derive(Default)]
struct ProcessSamples {
    cpu: BTreeMap<SampleIdentity, Vec<(u64, u64)>>,
    off_cpu: BTreeMap<SampleIdentity, Vec<(u64, u64)>>,
}

/// Builds the request; returns it with the number of samples (and off-CPU events) it carries.
pub fn build_request(batch: &SampleBatch, ctx: BuildContext<'_>) -> (ExportProfilesServiceRequest, u64) {
    let mut by_process: BTreeMap<u32, ProcessSamples> = BTreeMap::new();
    let mut start = batch.start_unix_nano;
    for sample in &batch.samples {
        start = start.min(sample.time_unix_nano);
        let key = sample.key;
        let identity = SampleIdentity { stack: key.stack, tid: key.tid, thread_name: key.thread, cpu: sample.cpu, link: sample.link };
        let process = by_process.entry(key.pid).or_default();
        let events = match sample.off_cpu_ns {
            None => &mut process.cpu,
            Some(_) => &mut process.off_cpu,
        };
        events.entry(identity).or_default().push((sample.time_unix_nano, sample.off_cpu_ns.unwrap_or(0)));
    }
    let end = ctx.end_unix_nano.max(batch.samples.iter().map(|s| s.time_unix_nano + 1).max().unwrap_or(0));

    let mut encoder = Encoder { d: Dictionary::new(), stacks: HashMap::new(), mappings: HashMap::new(), ctx };
    let d = &mut encoder.d;
    let samples_type = ValueType { type_strindex: d.string("samples"), unit_strindex: d.string("count") };
    let period_type = ValueType { type_strindex: d.string("cpu"), unit_strindex: d.string("nanoseconds") };
    let off_cpu_type = ValueType { type_strindex: d.string("off_cpu"), unit_strindex: d.string("nanoseconds") };
    let scope = InstrumentationScope { name: "oxeye".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };
    let timing = |samples: Vec<Sample>, sample_type: ValueType| Profile {
        sample_type: Some(sample_type),
        samples,
        time_unix_nano: start,
        duration_nano: end.saturating_sub(start),
        ..Default::default()
    };

    let mut resource_profiles = Vec::with_capacity(by_process.len());
    let mut total = 0u64;
    for (pid, process) in by_process {
        let mut profiles = Vec::with_capacity(2);
        if !process.cpu.is_empty() {
            let samples = encoder.samples(process.cpu, false, &mut total);
            let period = encoder.ctx.period_ns as i64;
            profiles.push(Profile { period_type: Some(period_type), period, ..timing(samples, samples_type) });
        }
        if !process.off_cpu.is_empty() {
            // One event per timestamp, its nanoseconds off CPU in `values` (as the OpenTelemetry
            // eBPF profiler sends them; devfiler counts the timestamps).
            let samples = encoder.samples(process.off_cpu, true, &mut total);
            profiles.push(timing(samples, off_cpu_type));
        }
        let identity = batch.processes.get(&pid).cloned().unwrap_or_default();
        resource_profiles.push(ResourceProfiles {
            resource: Some(Resource { attributes: process_attributes(encoder.ctx.host, pid, &identity), ..Default::default() }),
            scope_profiles: vec![ScopeProfiles { scope: Some(scope.clone()), profiles, schema_url: String::new() }],
            schema_url: String::new(),
        });
    }
    let request = ExportProfilesServiceRequest { resource_profiles, dictionary: Some(encoder.d.finish()) };
    (request, total)
}

/// The dictionary being filled, with the stacks and mappings already in it.
struct Encoder<'a> {
    d: Dictionary,
    stacks: HashMap<profile::StackId, i32>,
    mappings: HashMap<Code, i32>,
    ctx: BuildContext<'a>,
}

impl Encoder<'_> {
    /// The OTLP samples of one process's identities; `with_values`: each event's value too.
    /// Adds the events to `total`.
    fn samples(&mut self, identities: BTreeMap<SampleIdentity, Vec<(u64, u64)>>, with_values: bool, total: &mut u64) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(identities.len());
        for (identity, mut events) in identities {
            let stack_index = self.stack(identity.stack);
            let d = &mut self.d;
            let attribute_indices = vec![
                d.attribute("thread.id", Value::Int(i64::from(identity.tid))),
                d.attribute("thread.name", Value::Str(self.ctx.profile.name(identity.thread_name).to_owned())),
                d.attribute("cpu.logical_number", Value::Int(i64::from(identity.cpu))),
            ];
            events.sort_unstable();
            *total += events.len() as u64;
            let link_index = identity.link.map_or(0, |span| d.link(span.trace_id, span.span_id));
            let values = if with_values { events.iter().map(|&(_, value)| value as i64).collect() } else { Vec::new() };
            let timestamps_unix_nano = events.into_iter().map(|(time, _)| time).collect();
            samples.push(Sample { stack_index, attribute_indices, link_index, values, timestamps_unix_nano });
        }
        samples
    }

    /// The dictionary's stack for a profile's stack.
    fn stack(&mut self, id: profile::StackId) -> i32 {
        if let Some(&index) = self.stacks.get(&id) {
            return index;
        }
        let frames = self.ctx.profile.stack(id);
        let mut locations = Vec::with_capacity(frames.len());
        for group in profile::frames_by_address(frames) {
            push_locations(&mut self.d, &mut self.mappings, group, self.ctx.namer, self.ctx.objects, &mut locations);
        }
        let index = self.d.stack(locations);
        self.stacks.insert(id, index);
        index
    }
}

/// The locations of the frames at one address (see [`profile::frames_by_address`]).
///
/// Native inlined frames become one location with a line per function, innermost first, as
/// OTLP says; devfiler expands native frames itself. Go's inlined frames each get their own
/// location without a mapping, named by function, file and line: devfiler keeps only the first
/// line of a non-native location and keys it by (file, address), so sharing the address would
/// leave one name for them all.
fn push_locations(d: &mut Dictionary, mappings: &mut HashMap<Code, i32>, group: &[Frame], namer: &mut FrameNamer, objects: &mut ObjectRegistry, out: &mut Vec<i32>) {
    let [inlined @ .., physical] = group else { return };
    if inlined.is_empty() {
        out.push(location(d, mappings, *physical, namer, objects));
        return;
    }
    let resolved = namer.resolve(*physical, objects);
    if resolved.kind == FrameKind::Go {
        for &frame in inlined {
            let inlined = namer.resolve(frame, objects);
            let frame_type = frame_type(d, inlined.kind);
            let (function, line) = function_and_line(d, &inlined, objects);
            out.push(d.location_at(0, 0, function, line, vec![frame_type]));
        }
        out.push(location(d, mappings, *physical, namer, objects));
        return;
    }
    let mut lines = Vec::with_capacity(group.len());
    for &frame in group {
        let named = namer.resolve(frame, objects);
        if let (function @ 1.., line) = function_and_line(d, &named, objects) {
            lines.push((function, line));
        }
    }
    let mapping = mapping(d, mappings, resolved.code, objects);
    let frame_type = frame_type(d, resolved.kind);
    out.push(d.location_lines(mapping, resolved.file_address, lines, vec![frame_type]));
}

/// The location of one frame: kernel frames and named user frames carry their function; an
/// unnamed user frame carries only its file (with build IDs) and address, for later
/// symbolization. User addresses are the file's own virtual addresses, as devfiler expects.
fn location(d: &mut Dictionary, mappings: &mut HashMap<Code, i32>, frame: Frame, namer: &mut FrameNamer, objects: &mut ObjectRegistry) -> i32 {
    let resolved = namer.resolve(frame, objects);
    let frame_type = frame_type(d, resolved.kind);
    match (resolved.code, resolved.kind) {
        // The OTel eBPF profiler's marker for a stack that could not be finished: a function only.
        (_, FrameKind::AbortMarker) => {
            let function = d.function(&resolved.name, "");
            return d.location(0, 0, function, vec![frame_type]);
        }
        // No file to symbolize against later: the address alone.
        (Code::Anonymous, _) => return d.location(0, resolved.address, 0, vec![frame_type]),
        // Named by the interpreter: function, file and line, no mapping (devfiler shows
        // non-native frames by the names sent).
        (Code::Interpreted, _) => {
            let (file, line, first_line) = resolved.source.as_ref().map_or(("", 0, 0), |s| (&*s.file, s.line as i64, s.first_line as i64));
            let function = d.function_at(&resolved.name, file, first_line);
            return d.location_at(0, 0, function, line, vec![frame_type]);
        }
        _ => {}
    }
    let mapping = mapping(d, mappings, resolved.code, objects);
    let (function, line) = function_and_line(d, &resolved, objects);
    d.location_at(mapping, resolved.file_address, function, line, vec![frame_type])
}

fn frame_type(d: &mut Dictionary, kind: FrameKind) -> i32 {
    d.attribute("profile.frame.type", Value::Str(kind.otel_name().to_owned()))
}

/// The mapping of a file-backed or kernel frame, one per file.
fn mapping(d: &mut Dictionary, mappings: &mut HashMap<Code, i32>, code: Code, objects: &ObjectRegistry) -> i32 {
    *mappings.entry(code).or_insert_with(|| match code {
        Code::File(id) => {
            let object = objects.get(id);
            let attributes = mapping_attributes(d, object);
            d.mapping(&object.path, attributes)
        }
        _ => d.mapping(KERNEL_FILE, Vec::new()),
    })
}

/// A file-backed frame's function (0 if no symbol names it) and line. Frames named from
/// `.gopclntab` or DWARF carry their source file and line.
fn function_and_line(d: &mut Dictionary, resolved: &ResolvedFrame, objects: &ObjectRegistry) -> (i32, i64) {
    let function = match (resolved.symbol(), &resolved.source) {
        (Some(name), Some(source)) => d.function_at(name, &source.file, source.first_line as i64),
        (Some(name), None) => d.function(name, resolved.path(objects)),
        (None, _) => 0,
    };
    (function, resolved.source.as_ref().map_or(0, |source| source.line as i64))
}

/// A file's mapping attributes: its file ID first (what devfiler looks up, and it refuses a
/// mapping that has attributes but no file ID), then its GNU build ID; none without a file ID.
fn mapping_attributes(d: &mut Dictionary, object: &Object) -> Vec<i32> {
    let Some(file_id) = object.file_id() else { return Vec::new() };
    let mut attributes = vec![d.attribute("process.executable.build_id.htlhash", Value::Str(file_id.to_hex()))];
    if let Some(build_id) = object.build_id() {
        attributes.push(d.attribute("process.executable.build_id.gnu", Value::Str(build_id.to_hex())));
    }
    attributes
}
