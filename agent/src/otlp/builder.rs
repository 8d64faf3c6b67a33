//! Encodes a [`SampleBatch`] as one `ExportProfilesServiceRequest`: one resource per process,
//! one CPU profile per resource, and one shared dictionary with every table de-duplicated.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::{InstrumentationScope, KeyValue},
    profiles::v1development::{Profile, ResourceProfiles, Sample, ScopeProfiles, ValueType},
    resource::v1::Resource,
};

use super::{
    batch::{ProcessMeta, SampleBatch},
    dictionary::{Dictionary, Value},
    resource::HostInfo,
};
use crate::{
    objects::{Object, ObjectId, ObjectRegistry},
    profile::Frame,
    symbolize::FrameNamer,
};

/// What the builder needs besides the batch.
pub struct BuildContext<'a> {
    /// Host facts and `OTEL_RESOURCE_ATTRIBUTES`.
    pub host: &'a HostInfo,
    /// Nanoseconds of CPU time one sample stands for.
    pub period_ns: u64,
    /// End of the interval, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// Frame names.
    pub namer: &'a mut FrameNamer,
    /// Files and their symbols, build IDs and file IDs.
    pub objects: &'a mut ObjectRegistry,
}

/// The kernel's pseudo-file, as the OpenTelemetry eBPF profiler names it.
const KERNEL_FILE: &str = "[kernel.kallsyms]";

/// Identifies one OTLP sample within a process: same stack, thread and CPU.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct SampleIdentity {
    stack: u32,
    tid: u32,
    thread_name: u32,
    cpu: u32,
}

/// Builds the request; returns it with the number of samples it carries.
pub fn build_request(batch: &SampleBatch, ctx: BuildContext<'_>) -> (ExportProfilesServiceRequest, u64) {
    let mut d = Dictionary::new();
    let mut stack_index: HashMap<u32, i32> = HashMap::new();
    let mut mapping_index: HashMap<Option<ObjectId>, i32> = HashMap::new();

    // Group samples: process → identity → timestamps.
    let mut by_process: BTreeMap<u32, BTreeMap<SampleIdentity, Vec<u64>>> = BTreeMap::new();
    let mut start = batch.start_unix_nano;
    for sample in &batch.samples {
        start = start.min(sample.time_unix_nano);
        let identity = SampleIdentity { stack: sample.stack, tid: sample.tid, thread_name: sample.thread_name, cpu: sample.cpu };
        by_process.entry(sample.pid).or_default().entry(identity).or_default().push(sample.time_unix_nano);
    }
    let end = ctx.end_unix_nano.max(batch.samples.iter().map(|s| s.time_unix_nano + 1).max().unwrap_or(0));

    let samples_type = ValueType { type_strindex: d.string("samples"), unit_strindex: d.string("count") };
    let period_type = ValueType { type_strindex: d.string("cpu"), unit_strindex: d.string("nanoseconds") };
    let scope = InstrumentationScope { name: "oxeye".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() };

    let mut resource_profiles = Vec::with_capacity(by_process.len());
    let mut total = 0u64;
    for (pid, identities) in by_process {
        let mut samples = Vec::with_capacity(identities.len());
        for (identity, mut timestamps) in identities {
            let stack = *stack_index.entry(identity.stack).or_insert_with(|| {
                let frames = &batch.stacks[identity.stack as usize];
                let locations = frames.iter().map(|&frame| location(&mut d, &mut mapping_index, frame, ctx.namer, ctx.objects)).collect();
                d.stack(locations)
            });
            let attribute_indices = vec![
                d.attribute("thread.id", Value::Int(i64::from(identity.tid))),
                d.attribute("thread.name", Value::Str(batch.thread_names[identity.thread_name as usize].to_string())),
                d.attribute("cpu.logical_number", Value::Int(i64::from(identity.cpu))),
            ];
            timestamps.sort_unstable();
            total += timestamps.len() as u64;
            samples.push(Sample { stack_index: stack, attribute_indices, link_index: 0, values: Vec::new(), timestamps_unix_nano: timestamps });
        }
        let profile = Profile {
            sample_type: Some(samples_type),
            samples,
            time_unix_nano: start,
            duration_nano: end.saturating_sub(start),
            period_type: Some(period_type),
            period: ctx.period_ns as i64,
            ..Default::default()
        };
        let meta = batch.processes.get(&pid).cloned().unwrap_or_default();
        resource_profiles.push(ResourceProfiles {
            resource: Some(Resource { attributes: resource_attributes(ctx.host, pid, &meta), ..Default::default() }),
            scope_profiles: vec![ScopeProfiles { scope: Some(scope.clone()), profiles: vec![profile], schema_url: String::new() }],
            schema_url: String::new(),
        });
    }
    let request = ExportProfilesServiceRequest { resource_profiles, dictionary: Some(d.finish()) };
    (request, total)
}

/// The location of one frame: kernel frames and named user frames carry their function; an
/// unnamed user frame carries only its file (with build IDs) and address, for later
/// symbolization. User addresses are the file's own virtual addresses, as devfiler expects.
fn location(d: &mut Dictionary, mappings: &mut HashMap<Option<ObjectId>, i32>, frame: Frame, namer: &mut FrameNamer, objects: &mut ObjectRegistry) -> i32 {
    let (object, address, frame_type) = match frame {
        Frame::Kernel { address } => (None, address, "kernel"),
        Frame::User { object, file_offset } => {
            let address = objects.ensure_loaded(object).symbols().and_then(|s| s.file_offset_to_address(file_offset)).unwrap_or(file_offset);
            (Some(object), address, "native")
        }
        Frame::Unknown { address } => {
            let native = frame_type_attribute(d, "native");
            return d.location(0, address, 0, vec![native]);
        }
        // The OTel eBPF profiler's marker for a stack that could not be finished.
        Frame::UnwindError { .. } => {
            let abort = frame_type_attribute(d, "abort-marker");
            let function = d.function(&namer.name(frame, objects), "");
            return d.location(0, 0, function, vec![abort]);
        }
    };
    let mapping = *mappings.entry(object).or_insert_with(|| match object {
        None => d.mapping(KERNEL_FILE, Vec::new()),
        Some(id) => {
            let object = objects.get(id);
            let attributes = mapping_attributes(d, object);
            d.mapping(&object.path, attributes)
        }
    });
    let function = match namer.symbol(frame, objects) {
        Some(name) => {
            let file = object.map_or(KERNEL_FILE.to_owned(), |id| objects.get(id).path.clone());
            d.function(&name, &file)
        }
        None => 0,
    };
    let frame_type = frame_type_attribute(d, frame_type);
    d.location(mapping, address, function, vec![frame_type])
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

fn frame_type_attribute(d: &mut Dictionary, frame_type: &str) -> i32 {
    d.attribute("profile.frame.type", Value::Str(frame_type.to_owned()))
}

fn resource_attributes(host: &HostInfo, pid: u32, meta: &ProcessMeta) -> Vec<KeyValue> {
    let executable_name = meta.executable_path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or(&meta.name);
    let mut attributes: Vec<(String, Value)> = vec![
        ("host.name".into(), Value::Str(host.name.clone())),
        ("host.arch".into(), Value::Str(host.arch.into())),
        ("service.name".into(), Value::Str(executable_name.to_owned())),
        ("process.pid".into(), Value::Int(i64::from(pid))),
        ("process.executable.name".into(), Value::Str(executable_name.to_owned())),
    ];
    if !meta.executable_path.is_empty() {
        attributes.push(("process.executable.path".into(), Value::Str(meta.executable_path.to_string())));
    }
    if !meta.container_id.is_empty() {
        attributes.push(("container.id".into(), Value::Str(meta.container_id.to_string())));
    }
    host.resource_attributes(attributes)
}
