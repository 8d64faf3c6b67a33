//! The kernel/user contract, checked against the BPF object this binary embeds: every map,
//! program and global user space looks up by name (`agent_common::names`) is there, of the
//! kind user space takes it as, with the key and value sizes of the `agent_common` types it
//! reads and writes; and the object has nothing the contract does not list.
//!
//! aya-ebpf's macros name BPF items by their Rust identifiers, which cannot be constants, so
//! this test is what ties the two sides' names together.

use std::{collections::HashMap, mem::size_of};

use agent_common::{
    counters::Counter,
    files::{FileHintRecord, FileOffsets, FileTable, KernelFile, PendingMmap},
    names::{globals, maps, programs},
    net::{Connection, NetConfig, PayloadRecord, PendingIo, SendStart, ServingRequest, SocketOwner},
    records::OffCpuStart,
    sampler::{SampleRecord, SamplerConfig},
    python::{PythonProcess, PythonThread},
    unwind::{ExecMapping, MappingRange, UnwindConfig, UnwindEntry, UnwindRule},
};
use aya_obj::{generated::bpf_map_type as map_type, Object, ProgramSection};

use super::{files, off_cpu, hooks::{SendStartHook, TcpStateHook, SOCKET_HOOKS}, network::{CONNECTION_HOOKS, PAYLOAD_SYSCALL_HOOKS}, sizing::MapSizes, BPF_OBJECT, PYTHON_PROGRAM, SAMPLER_PROGRAM, TRACEPOINTS, UNWIND_PROGRAM};

/// `BPF_F_MMAPABLE`: user space memory-maps these arrays.
const MMAPABLE: u32 = 1 << 10;

/// What user space expects of a map.
struct MapSpec {
    name: &'static str,
    kind: map_type,
    key: usize,
    /// `None`: a BPF-private value user space never reads (only its size's lower bound matters).
    value: Option<usize>,
    flags: u32,
}

const fn map(name: &'static str, kind: map_type, key: usize, value: usize) -> MapSpec {
    MapSpec { name, kind, key, value: Some(value), flags: 0 }
}

fn map_specs() -> Vec<MapSpec> {
    use map_type::*;
    let mmapable = |spec: MapSpec| MapSpec { flags: MMAPABLE, ..spec };
    vec![
        map(maps::EVENTS, BPF_MAP_TYPE_RINGBUF, 0, 0),
        map(maps::COUNTERS, BPF_MAP_TYPE_PERCPU_ARRAY, size_of::<u32>(), size_of::<u64>()),
        // The sampler's record plus the unwinder's registers: only the BPF side knows it all.
        MapSpec { name: maps::SCRATCH, kind: BPF_MAP_TYPE_PERCPU_ARRAY, key: size_of::<u32>(), value: None, flags: 0 },
        mmapable(map(maps::UNWIND_ROWS, BPF_MAP_TYPE_ARRAY, size_of::<u32>(), size_of::<UnwindEntry>())),
        mmapable(map(maps::UNWIND_RULES, BPF_MAP_TYPE_ARRAY, size_of::<u32>(), size_of::<UnwindRule>())),
        mmapable(map(maps::EXEC_MAPPINGS, BPF_MAP_TYPE_ARRAY, size_of::<u32>(), size_of::<ExecMapping>())),
        map(maps::PROCESS_MAPPINGS, BPF_MAP_TYPE_HASH, size_of::<u32>(), size_of::<MappingRange>()),
        map(maps::PYTHON_PROCESSES, BPF_MAP_TYPE_HASH, size_of::<u32>(), size_of::<PythonProcess>()),
        map(maps::PYTHON_THREADS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<PythonThread>()),
        map(maps::UNWIND_PROGRAMS, BPF_MAP_TYPE_PROG_ARRAY, size_of::<u32>(), size_of::<u32>()),
        map(maps::OFF_CPU_PROGRAMS, BPF_MAP_TYPE_PROG_ARRAY, size_of::<u32>(), size_of::<u32>()),
        map(maps::OFF_CPU_STARTS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<OffCpuStart>()),
        map(maps::NET_EVENTS, BPF_MAP_TYPE_RINGBUF, 0, 0),
        map(maps::CONNECTIONS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<Connection>()),
        map(maps::NOT_SOCKETS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<u8>()),
        map(maps::SOCKETS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<SocketOwner>()),
        map(maps::PENDING_IO, BPF_MAP_TYPE_HASH, size_of::<u64>(), size_of::<PendingIo>()),
        map(maps::SEND_STARTS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<SendStart>()),
        map(maps::SERVING_REQUESTS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<ServingRequest>()),
        map(maps::WAKE_PENDING, BPF_MAP_TYPE_PERCPU_ARRAY, size_of::<u32>(), size_of::<u64>()),
        map(maps::PAYLOAD_SCRATCH, BPF_MAP_TYPE_PERCPU_ARRAY, size_of::<u32>(), size_of::<PayloadRecord>()),
        map(maps::FILE_TABLES, BPF_MAP_TYPE_HASH, size_of::<KernelFile>(), size_of::<FileTable>()),
        map(maps::KERNEL_MAPPINGS, BPF_MAP_TYPE_LRU_HASH, size_of::<u32>(), size_of::<FileHintRecord>()),
        map(maps::PENDING_MMAPS, BPF_MAP_TYPE_LRU_HASH, size_of::<u64>(), size_of::<PendingMmap>()),
    ]
}

/// Every program user space loads, by name, with the section kind its loader expects.
fn program_specs() -> Vec<(&'static str, &'static str)> {
    let mut specs = vec![(SAMPLER_PROGRAM, "perf_event"), (UNWIND_PROGRAM, "perf_event"), (PYTHON_PROGRAM, "perf_event")];
    specs.extend(off_cpu::PROGRAMS.iter().map(|&program| (program, "raw_tracepoint")));
    specs.extend(files::HOOKS.iter().map(|&(program, _, _)| (program, "tracepoint")));
    specs.extend(TRACEPOINTS.iter().map(|&(program, _, _)| (program, "tracepoint")));
    specs.extend(CONNECTION_HOOKS.iter().chain(PAYLOAD_SYSCALL_HOOKS).map(|&(program, _, _, _)| (program, "tracepoint")));
    specs.extend(SOCKET_HOOKS.iter().map(|&(program, _, _)| (program, "btf_tracepoint")));
    // The alternatives user space picks between, each in the section its loader expects.
    specs.extend([
        (SendStartHook::TracePoint.program(), "btf_tracepoint"),
        (SendStartHook::FEntry.program(), "fentry"),
        (SendStartHook::KProbe.program(), "kprobe"),
        (TcpStateHook::FEntry.program(), "fentry"),
        (TcpStateHook::KProbe.program(), "kprobe"),
        (TcpStateHook::TracePoint.program(), "tracepoint"),
    ]);
    specs.sort_unstable();
    specs.dedup();
    specs
}

fn section_kind(section: &ProgramSection) -> &'static str {
    match section {
        ProgramSection::PerfEvent => "perf_event",
        ProgramSection::TracePoint => "tracepoint",
        ProgramSection::FEntry { .. } => "fentry",
        ProgramSection::KProbe => "kprobe",
        ProgramSection::BtfTracePoint => "btf_tracepoint",
        ProgramSection::RawTracePoint => "raw_tracepoint",
        _ => "other",
    }
}

fn object() -> Object {
    Object::parse(BPF_OBJECT).unwrap_or_else(|error| panic!("the embedded BPF object does not parse: {error}"))
}

#[test]
fn every_map_user_space_uses_is_in_the_object_as_expected() {
    let object = object();
    let mut problems = Vec::new();
    let specs = map_specs();
    for spec in &specs {
        let Some(found) = object.maps.get(spec.name) else {
            problems.push(format!("BPF object has no map {}", spec.name));
            continue;
        };
        let (kind, key, value, flags) = (found.map_type(), found.key_size() as usize, found.value_size() as usize, found.map_flags());
        if kind != spec.kind as u32 {
            problems.push(format!("map {}: type {kind}, user space expects {:?} ({})", spec.name, spec.kind, spec.kind as u32));
        }
        if key != spec.key {
            problems.push(format!("map {}: key of {key} bytes, user space expects {}", spec.name, spec.key));
        }
        match spec.value {
            Some(expected) if value != expected => {
                problems.push(format!("map {}: value of {value} bytes, user space expects {expected}", spec.name));
            }
            None if value < size_of::<SampleRecord>() => {
                problems.push(format!("map {}: value of {value} bytes cannot hold a SampleRecord", spec.name));
            }
            _ => {}
        }
        if flags & spec.flags != spec.flags {
            problems.push(format!("map {}: flags {flags:#x} lack {:#x}", spec.name, spec.flags));
        }
    }
    if let Some(counters) = object.maps.get(maps::COUNTERS) {
        if counters.max_entries() != Counter::COUNT {
            problems.push(format!("map COUNTERS: {} entries, Counter has {}", counters.max_entries(), Counter::COUNT));
        }
    }
    // Data sections (.rodata, .bss, .data) are maps too, named after their section.
    for name in object.maps.keys().filter(|name| !name.starts_with('.')) {
        if !specs.iter().any(|spec| spec.name == name) {
            problems.push(format!("BPF object has map {name}, which agent_common::names and this contract do not list"));
        }
    }
    problems.sort();
    assert!(problems.is_empty(), "kernel/user contract broken:\n  {}", problems.join("\n  "));
}

#[test]
fn every_program_user_space_loads_is_in_the_object_as_expected() {
    let object = object();
    let specs = program_specs();
    let mut problems = Vec::new();
    for &(name, kind) in &specs {
        match object.programs.get(name) {
            None => problems.push(format!("BPF object has no program {name}")),
            Some(program) if section_kind(&program.section) != kind => {
                problems.push(format!("program {name}: section {:?}, user space loads it as {kind}", program.section));
            }
            Some(_) => {}
        }
    }
    for name in object.programs.keys() {
        if !specs.iter().any(|&(expected, _)| expected == name) {
            problems.push(format!("BPF object has program {name}, which user space never loads"));
        }
    }
    problems.sort();
    assert!(problems.is_empty(), "kernel/user contract broken:\n  {}", problems.join("\n  "));
}

#[test]
fn every_global_user_space_sets_is_in_the_object_with_its_size() {
    let mut object = object();
    let globals: [(&str, usize); 4] = [
        (globals::SAMPLER_CONFIG, size_of::<SamplerConfig>()),
        (globals::UNWIND_CONFIG, size_of::<UnwindConfig>()),
        (globals::NET_CONFIG, size_of::<NetConfig>()),
        (globals::FILE_OFFSETS, size_of::<FileOffsets>()),
    ];
    let mut problems = Vec::new();
    for (name, size) in globals {
        // aya's own check, as `EbpfLoader::override_global(.., must_exist: true)` runs it:
        // the symbol must exist with exactly this size.
        let data = vec![0u8; size];
        if let Err(error) = object.patch_map_data(HashMap::from([(name, (data.as_slice(), true))])) {
            problems.push(format!("global {name} ({size} bytes): {error}"));
        }
    }
    assert!(problems.is_empty(), "kernel/user contract broken:\n  {}", problems.join("\n  "));
}

#[test]
fn every_name_is_listed_once() {
    let map_names: Vec<&str> = map_specs().iter().map(|spec| spec.name).collect();
    let all = [
        maps::EVENTS, maps::COUNTERS, maps::SCRATCH, maps::UNWIND_ROWS, maps::UNWIND_RULES, maps::EXEC_MAPPINGS,
        maps::PROCESS_MAPPINGS, maps::PYTHON_PROCESSES, maps::PYTHON_THREADS, maps::UNWIND_PROGRAMS, maps::OFF_CPU_PROGRAMS, maps::OFF_CPU_STARTS, maps::NET_EVENTS, maps::CONNECTIONS, maps::NOT_SOCKETS,
        maps::SOCKETS, maps::PENDING_IO, maps::SEND_STARTS, maps::SERVING_REQUESTS, maps::WAKE_PENDING, maps::PAYLOAD_SCRATCH, maps::FILE_TABLES, maps::KERNEL_MAPPINGS, maps::PENDING_MMAPS,
    ];
    assert_eq!(map_names, all, "map_specs lists each map once");
    let program_names: Vec<&str> = program_specs().iter().map(|&(name, _)| name).collect();
    for name in [
        programs::SAMPLE, programs::UNWIND, programs::PYTHON, programs::EXEC_FILES, programs::MMAP_ENTER, programs::MMAP_EXIT, programs::EXEC, programs::EXIT, programs::ACCEPT_EXIT,
        programs::CONNECT_EXIT, programs::CLOSE_ENTER, programs::RECV_EXIT, programs::SEND_ENTER, programs::READV_EXIT,
        programs::WRITEV_ENTER, programs::RECVMSG_EXIT, programs::SENDMSG_ENTER, programs::SEND_EXIT,
        programs::SOCK_RECV, programs::SOCK_SEND_START, programs::SOCK_SEND_START_FENTRY, programs::SOCK_SEND_START_KPROBE, programs::SOCK_SEND,
        programs::TCP_STATE_FENTRY, programs::TCP_STATE_KPROBE, programs::TCP_STATE_TRACEPOINT, programs::OFF_CPU,
        programs::OFF_CPU_UNWIND, programs::OFF_CPU_PYTHON,
    ] {
        assert!(program_names.contains(&name), "user space loads no program {name}");
    }
    assert_eq!(program_names.len(), 29);
}

#[test]
fn every_map_is_sized_in_one_place() {
    let sized: Vec<&str> = MapSizes::decide(99, 2, 32 << 20, true, 1000, true).all().iter().map(|&(name, _)| name).collect();
    let specs: Vec<&str> = map_specs().iter().map(|spec| spec.name).collect();
    assert_eq!(sized, specs, "sizing::MapSizes::all sizes every map of the contract, once");
}
