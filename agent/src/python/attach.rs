//! Attaching the Python walker to CPython processes: on the unwinder thread, each time a
//! process's mappings are described, finds its CPython runtime, and writes what the BPF
//! walker needs into `PYTHON_PROCESSES`; the collector finds the same process in
//! [`PythonProcesses`] to name its frames.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::python::{frames, PythonProcess};
use aya::maps::{HashMap as BpfHashMap, MapData};
use tracing::{debug, info, warn};

use super::{
    memory::ProcessMemory,
    registry::{AttachedProcess, PythonProcesses},
    runtime::{self, RuntimeFile},
    versions::VersionLayout,
};
use crate::process::maps::{open_mapped_file, FileIdentity, MapsEntry};

/// Runtime files remembered (per file identity), before the cache starts over.
const MAX_FILES: usize = 4096;
/// How long a process whose interpreter is not initialised yet is retried.
const PENDING_FOR: Duration = Duration::from_secs(3);
/// Most processes waiting for their interpreter to start.
const MAX_PENDING: usize = 1024;
/// Bytes of the main thread's `struct pthread` searched for its thread id.
const PTHREAD_SEARCH_BYTES: usize = 2048;
/// Where glibc keeps `struct pthread.tid` (x86-64, arm64): tried first.
const GLIBC_PTHREAD_TID: [u16; 2] = [720, 208];

/// Attaches and detaches CPython processes.
pub struct PythonAttacher {
    map: BpfHashMap<MapData, u32, PythonProcess>,
    capacity: usize,
    processes: Arc<PythonProcesses>,
    files: HashMap<FileIdentity, Option<Arc<RuntimeFile>>>,
    /// Files whose unsupported version was logged (once each).
    logged: HashSet<FileIdentity>,
    /// Processes whose runtime is mapped but not initialised: (first seen, the mapping).
    pending: HashMap<u32, (Instant, FileIdentity, MapsEntry)>,
    /// The initial pid namespace (`/proc/1/ns/pid`), whose thread ids BPF sees directly.
    initial_namespace: Option<(u64, u64)>,
}

impl PythonAttacher {
    /// An attacher writing `map` (of `capacity` entries) and publishing to `processes`.
    pub fn new(map: BpfHashMap<MapData, u32, PythonProcess>, capacity: usize, processes: Arc<PythonProcesses>) -> Self {
        let initial_namespace = namespace_of(1);
        PythonAttacher { map, capacity, processes, files: HashMap::new(), logged: HashSet::new(), pending: HashMap::new(), initial_namespace }
    }

    /// `pid`'s executable mappings were just described: attaches it if it runs CPython.
    pub fn on_described(&mut self, pid: u32, entries: &[MapsEntry]) {
        if self.processes.contains(pid) {
            return;
        }
        for entry in entries.iter().filter(|entry| entry.is_file() && runtime::is_candidate(&entry.path)) {
            let Some(identity) = FileIdentity::of_mapping(pid, entry) else { continue };
            let Some(file) = self.runtime_file(pid, entry, identity) else { continue };
            let Some(layout) = file.layout else {
                self.log_unsupported(pid, entry, identity, &file);
                return;
            };
            self.attach(pid, entry, identity, &file, layout);
            return;
        }
    }

    /// Tries again the processes whose interpreter had not started.
    pub fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let waiting: Vec<(u32, (Instant, FileIdentity, MapsEntry))> = self.pending.drain().collect();
        for (pid, (since, identity, entry)) in waiting {
            if since.elapsed() > PENDING_FOR || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let file = self.files.get(&identity).cloned().flatten();
            match file.as_ref().and_then(|file| file.layout.map(|layout| (file, layout))) {
                Some((file, layout)) => {
                    if !self.attach(pid, &entry, identity, file, layout) {
                        self.pending.entry(pid).or_insert((since, identity, entry));
                    }
                }
                None => continue,
            }
        }
    }

    /// Detaches `pid` (it exited or exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.pending.remove(&pid);
        if self.processes.remove(pid) {
            let _ = self.map.remove(&pid);
        }
    }

    /// Detaches processes that no longer exist.
    pub fn forget_dead(&mut self) {
        for pid in self.processes.pids() {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.forget(pid);
            }
        }
    }

    fn runtime_file(&mut self, pid: u32, entry: &MapsEntry, identity: FileIdentity) -> Option<Arc<RuntimeFile>> {
        if let Some(known) = self.files.get(&identity) {
            return known.clone();
        }
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        let inspected = open_mapped_file(pid, entry)
            .ok()
            // SAFETY: executables and libraries are replaced by rename, not rewritten in
            // place; the mapping is only read here.
            .and_then(|file| unsafe { memmap2::Mmap::map(&file) }.ok())
            .and_then(|data| runtime::inspect(&entry.path, &data))
            .map(Arc::new);
        self.files.insert(identity, inspected.clone());
        inspected
    }

    /// Writes the process for the walker; false if its interpreter has not started yet (it
    /// is then retried).
    fn attach(&mut self, pid: u32, entry: &MapsEntry, identity: FileIdentity, file: &RuntimeFile, layout: VersionLayout) -> bool {
        let (Some(bias), Some(runtime)) = (file.bias(entry.start, entry.file_offset), file.runtime) else { return true };
        let runtime = bias.wrapping_add(runtime);
        let Ok(memory) = ProcessMemory::open(pid) else { return true };
        let namespace = namespace_of(pid).filter(|&namespace| Some(namespace) != self.initial_namespace);
        let mut walker = layout.walker;
        if walker.frames == frames::FRAME_OBJECTS {
            match pthread_tid_offset(&memory, runtime, &layout, pid) {
                Some(offset) => walker.pthread_tid = offset,
                None => {
                    if self.pending.len() < MAX_PENDING {
                        self.pending.entry(pid).or_insert((Instant::now(), identity, entry.clone()));
                    }
                    return false;
                }
            }
        }
        if self.processes.len() >= self.capacity {
            debug!(pid, "python: the walker's process limit is reached");
            return true;
        }
        let (dev, inode) = namespace.unwrap_or((0, 0));
        let value = PythonProcess { runtime, code_type: bias.wrapping_add(file.code_type), pid_namespace_dev: dev, pid_namespace_inode: inode, layout: walker };
        if let Err(error) = self.map.insert(pid, value, 0) {
            warn!(pid, "python: cannot attach the frame walker: {error}");
            return true;
        }
        let attached = AttachedProcess { layout, code_type: value.code_type, memory };
        self.processes.insert(pid, attached);
        debug!(pid, version = %layout.version, file = %entry.path, "python: frames walked");
        true
    }

    fn log_unsupported(&mut self, pid: u32, entry: &MapsEntry, identity: FileIdentity, file: &RuntimeFile) {
        if self.logged.len() < MAX_FILES && self.logged.insert(identity) {
            let version = file.version.map_or_else(|| "of unknown version".to_owned(), |v| v.to_string());
            info!("python: CPython {version} in {} (PID {pid}) is not supported: its samples have native frames only", entry.path);
        }
    }
}

/// The (device, inode) of `pid`'s pid namespace.
fn namespace_of(pid: u32) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok().map(|metadata| (metadata.dev(), metadata.ino()))
}

/// The process's own id in its pid namespace (the last `NSpid` of its status).
fn namespace_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Where the C library keeps a thread's kernel id in its `struct pthread`, for versions whose
/// thread state holds only the `pthread_t`: the main thread's `pthread_t` (in `_PyRuntime`)
/// points at a `struct pthread` holding the process id (the main thread's id). `None` until
/// the interpreter has started.
fn pthread_tid_offset(memory: &ProcessMemory, runtime: u64, layout: &VersionLayout, pid: u32) -> Option<u16> {
    let main_thread = memory.read_u64(runtime + layout.runtime_main_thread as u64).ok().filter(|&address| address != 0)?;
    let id = namespace_pid(pid)?;
    let mut bytes = vec![0u8; PTHREAD_SEARCH_BYTES];
    memory.read(main_thread, &mut bytes).ok()?;
    let at = |offset: usize| bytes.get(offset..offset + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    GLIBC_PTHREAD_TID
        .iter()
        .map(|&offset| offset as usize)
        .chain((0..PTHREAD_SEARCH_BYTES).step_by(4))
        .find(|&offset| at(offset) == Some(id))
        .map(|offset| offset as u16)
}
