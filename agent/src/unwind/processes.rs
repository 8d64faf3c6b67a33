//! Each process's executable mappings, written for the BPF unwinder: where each mapping is,
//! and which table (and bias) unwinds it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use agent_common::unwind::{ExecMapping, MappingRange, MAX_PROCESS_MAPPINGS};
use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};

use super::{
    extents::{Extent, Extents},
    mapped_array::MappedArray,
    tables::{FileBytes, TableKey, TableStore},
};
use crate::process::maps::{open_mapped_file, read_executable, FileIdentity, MapsEntry};

/// Least time between two descriptions of one process (they are asked for on misses).
const REDESCRIBE_INTERVAL: Duration = Duration::from_millis(100);

/// What is written for one process.
struct Described {
    range: Extent,
    mappings: Vec<ExecMapping>,
    tables: Vec<TableKey>,
    at: Instant,
}

/// The processes described to the BPF unwinder.
pub struct ProcessMappings {
    processes: HashMap<u32, Described>,
    mappings: MappedArray<ExecMapping>,
    extents: Extents,
    ranges: BpfHashMap<MapData, u32, MappingRange>,
    max_processes: usize,
    /// The unwind tables the mappings point into.
    pub tables: TableStore,
}

/// What [`ProcessMappings::describe`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Written (new or changed mappings): the mappings read.
    Updated(Vec<MapsEntry>),
    /// The mappings had not changed, or were described very recently.
    Unchanged,
}

impl ProcessMappings {
    /// Starts with no process described.
    pub fn new(
        mappings: MappedArray<ExecMapping>,
        ranges: BpfHashMap<MapData, u32, MappingRange>,
        max_processes: usize,
        tables: TableStore,
    ) -> Self {
        let extents = Extents::new(mappings.len() as u32);
        ProcessMappings { processes: HashMap::new(), mappings, extents, ranges, max_processes, tables }
    }

    /// Processes described.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Mapping entries in use.
    pub fn mappings_used(&self) -> u32 {
        self.extents.used()
    }

    /// Reads `pid`'s executable mappings (through the process manager's one reader of
    /// `/proc/PID/maps`) and writes them, with their tables, for the unwinder. Unless
    /// `scheduled` (the follow-ups after an exec, which are few and must not be skipped: the
    /// loader maps the libraries right after the exec's description), a process described in
    /// the last [`REDESCRIBE_INTERVAL`] is left as it is.
    pub fn describe(&mut self, pid: u32, scheduled: bool) -> Result<Outcome> {
        if !scheduled && self.processes.get(&pid).is_some_and(|d| d.at.elapsed() < REDESCRIBE_INTERVAL) {
            return Ok(Outcome::Unchanged);
        }
        let mut entries = read_executable(pid).with_context(|| format!("cannot read /proc/{pid}/maps"))?;
        // `[vsyscall]` sits at a kernel address, above 2^63, where the BPF search's branch-free
        // comparison does not hold; it has no table anyway, and no user code runs there.
        entries.retain(|entry| entry.start < 1 << 63);
        entries.sort_by_key(|entry| entry.start);
        entries.truncate(MAX_PROCESS_MAPPINGS as usize);

        let mut mappings = Vec::with_capacity(entries.len());
        let mut tables = Vec::with_capacity(entries.len());
        for entry in &entries {
            let key = self.table_key(pid, entry);
            let mut mapping = ExecMapping { start: entry.start, end: entry.end, ..Default::default() };
            if let Some(key) = key {
                let table = self.tables.acquire(key, || match key {
                    TableKey::Vdso => crate::vdso::image().map(|image| FileBytes::Owned(image.to_vec())).context("no vDSO image"),
                    TableKey::File(_) => read_mapped_file(pid, entry),
                });
                if let (Some(rows), Some(vaddr)) = (table.rows, table.vaddr_of(entry.file_offset)) {
                    mapping.bias = entry.start.wrapping_sub(vaddr).wrapping_add(table.base);
                    mapping.rows_start = rows.start;
                    mapping.rows_len = rows.len;
                }
                tables.push(key);
            }
            mappings.push(mapping);
        }

        if let Some(previous) = self.processes.get_mut(&pid) {
            if previous.mappings == mappings {
                previous.at = Instant::now();
                self.tables.release_all(&tables);
                return Ok(Outcome::Unchanged);
            }
        } else if self.processes.len() >= self.max_processes {
            self.tables.release_all(&tables);
            anyhow::bail!("{} processes are described already (the unwinder's limit)", self.max_processes);
        }
        let Some(range) = self.extents.allocate(mappings.len() as u32) else {
            self.tables.release_all(&tables);
            anyhow::bail!("no room left for the mappings of process {pid}");
        };
        self.mappings.write(range.start as usize, &mappings);
        let value = MappingRange { start: range.start, len: range.len };
        if let Err(error) = self.ranges.insert(pid, value, 0) {
            self.extents.release(range);
            self.tables.release_all(&tables);
            return Err(error).context("cannot update the unwinder's process map");
        }
        if let Some(previous) = self.processes.insert(pid, Described { range, mappings, tables, at: Instant::now() }) {
            self.release(previous);
        }
        Ok(Outcome::Updated(entries))
    }

    /// Forgets `pid` (it exited).
    pub fn forget(&mut self, pid: u32) {
        if let Some(described) = self.processes.remove(&pid) {
            // Already gone if the kernel reused nothing; either way the entry must not stay.
            let _ = self.ranges.remove(&pid);
            self.release(described);
        }
    }

    /// Forgets processes that no longer exist (their exit event may have been lost).
    pub fn forget_dead(&mut self) -> usize {
        let dead: Vec<u32> = self.processes.keys().copied().filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()).collect();
        for &pid in &dead {
            self.forget(pid);
        }
        dead.len()
    }

    fn release(&mut self, described: Described) {
        self.extents.release(described.range);
        self.tables.release_all(&described.tables);
    }

    fn table_key(&self, pid: u32, entry: &MapsEntry) -> Option<TableKey> {
        if entry.path == "[vdso]" {
            return crate::vdso::image().is_some().then_some(TableKey::Vdso);
        }
        if !entry.is_file() {
            return None; // anonymous code (JIT): frame pointers only
        }
        FileIdentity::of_mapping(pid, entry).map(TableKey::File)
    }
}


/// Maps a file a process has mapped.
fn read_mapped_file(pid: u32, entry: &MapsEntry) -> Result<FileBytes> {
    let path = &entry.path;
    let file = open_mapped_file(pid, entry).with_context(|| format!("cannot open {path}"))?;
    // SAFETY: executables and libraries are replaced by rename, not rewritten in place; the
    // mapping is only read while the table is compiled.
    let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {path}"))?;
    Ok(FileBytes::Mapped(map))
}
