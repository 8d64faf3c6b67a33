//! Processes being profiled: names and executable mappings, read from `/proc` and cached.
//!
//! A process's mappings are read on its `exec` event (so a process that lives for a few hundred
//! milliseconds still has them), on its first sample if oxeye started after it, and again when
//! a sample lands outside every known mapping (it has mapped new code, e.g. `dlopen`). After
//! `exit` the entry stays for a grace period, for samples still in flight, then goes.

pub mod identity;
pub mod maps;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::files::{FileHint, KernelFile};

use self::identity::{Identities, ProcessIdentity};
use crate::objects::{ObjectId, ObjectRegistry};

/// How long an exited process's mappings are kept for samples still in the ring buffer.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Least time between two re-reads of one process's maps after misses.
const REREAD_INTERVAL: Duration = Duration::from_millis(50);
/// Processes not sampled for this long are forgotten (and re-read if seen again).
const IDLE_EXPIRY: Duration = Duration::from_secs(600);

/// Where a user-space address points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAddress {
    /// Inside a file-backed mapping (or the vDSO), at this offset into the file (image).
    File { object: ObjectId, file_offset: u64 },
    /// Inside executable memory with no file (JIT code), or outside every mapping.
    Unknown,
}

#[derive(Debug)]
struct Mapping {
    start: u64,
    end: u64,
    file_offset: u64,
    object: Option<ObjectId>,
}

#[derive(Debug)]
struct Process {
    /// Sorted by `start`, non-overlapping.
    mappings: Vec<Mapping>,
    maps_read_at: Option<Instant>,
    exited_at: Option<Instant>,
    last_sample: Instant,
}

/// Cached state of every process seen.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<u32, Process>,
    /// Who each process is, shared with the network pipeline.
    identities: Arc<Identities>,
    /// Times `/proc/PID/maps` was read.
    pub maps_reads: u64,
}

impl ProcessTable {
    /// An empty table naming processes through `identities`.
    pub fn new(identities: Arc<Identities>) -> Self {
        ProcessTable { identities, ..Default::default() }
    }

    /// A process has called `execve`: forget its old image and read the new one.
    pub fn on_exec(&mut self, pid: u32, comm: &str, objects: &mut ObjectRegistry) {
        let process = self.processes.entry(pid).or_insert_with(Process::new);
        // A new program: its executable, and perhaps its environment (service name), changed.
        self.identities.refresh(pid, comm);
        process.mappings.clear();
        process.exited_at = None;
        self.maps_reads += 1;
        process.read_maps(pid, objects);
    }

    /// A process has called `execve` but its maps are not read now: forget the old image;
    /// the new one is read on its first sample.
    pub fn forget_image(&mut self, pid: u32, comm: &str) {
        let process = self.processes.entry(pid).or_insert_with(Process::new);
        // Read again when first needed (cheaper than now, in an exec storm).
        self.identities.forget(pid);
        let _ = comm;
        process.mappings.clear();
        process.maps_read_at = None;
        process.exited_at = None;
    }

    /// A process has exited.
    pub fn on_exit(&mut self, pid: u32) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.exited_at = Some(Instant::now());
        }
    }

    /// Who process `pid` is (name, service, executable, container), read from `/proc` on
    /// first sight and again on exec.
    pub fn identity(&mut self, pid: u32, fallback: &str) -> Arc<ProcessIdentity> {
        self.identities.get(pid, fallback)
    }

    /// Finds the mapping containing `address` in process `pid`, reading `/proc` as needed.
    pub fn resolve(&mut self, pid: u32, address: u64, objects: &mut ObjectRegistry) -> UserAddress {
        let process = self.processes.entry(pid).or_insert_with(Process::new);
        process.last_sample = Instant::now();
        if let Some(found) = process.find(address) {
            return found;
        }
        let stale = process.maps_read_at.is_none_or(|at| at.elapsed() >= REREAD_INTERVAL);
        if process.exited_at.is_none() && stale {
            process.read_maps(pid, objects);
            self.maps_reads += 1;
            return process.find(address).unwrap_or(UserAddress::Unknown);
        }
        UserAddress::Unknown
    }

    /// Mappings the kernel reported for `pid`'s next sample (a process not read yet, perhaps
    /// gone already): added where they overlap nothing known, with the file if a process
    /// mapped or exec'd it before. Returns how many were added.
    pub fn add_kernel_mappings(&mut self, pid: u32, hints: &[FileHint], objects: &mut ObjectRegistry) -> usize {
        let process = self.processes.entry(pid).or_insert_with(Process::new);
        let mut added = 0;
        for hint in hints {
            let index = process.mappings.partition_point(|m| m.start < hint.start);
            let clear_before = index == 0 || process.mappings[index - 1].end <= hint.start;
            let clear_after = process.mappings.get(index).is_none_or(|next| hint.end <= next.start);
            if hint.start >= hint.end || !clear_before || !clear_after {
                continue;
            }
            let object = if hint.file == KernelFile::VDSO { Some(objects.register_vdso()) } else { objects.find_kernel_file(hint.file) };
            process.mappings.insert(index, Mapping { start: hint.start, end: hint.end, file_offset: hint.file_offset, object });
            added += 1;
        }
        added
    }

    /// Drops processes that exited more than the grace period ago or have not been sampled for
    /// a long time. Returns how many were dropped.
    pub fn expire(&mut self) -> usize {
        let before = self.processes.len();
        self.processes.retain(|_, p| {
            p.exited_at.is_none_or(|at| at.elapsed() < EXIT_GRACE) && p.last_sample.elapsed() < IDLE_EXPIRY
        });
        before - self.processes.len()
    }

    /// Number of processes cached.
    pub fn len(&self) -> usize {
        self.processes.len()
    }
}

impl Process {
    fn new() -> Self {
        Process {
            mappings: Vec::new(),
            maps_read_at: None,
            exited_at: None,
            last_sample: Instant::now(),
        }
    }

    fn find(&self, address: u64) -> Option<UserAddress> {
        let index = self.mappings.partition_point(|m| m.start <= address).checked_sub(1)?;
        let mapping = &self.mappings[index];
        (address < mapping.end).then(|| match mapping.object {
            Some(object) => UserAddress::File { object, file_offset: address - mapping.start + mapping.file_offset },
            None => UserAddress::Unknown,
        })
    }

    /// Replaces the mappings with what `/proc/PID/maps` says now; keeps the old ones if the
    /// process is already gone.
    fn read_maps(&mut self, pid: u32, objects: &mut ObjectRegistry) {
        self.maps_read_at = Some(Instant::now());
        let Ok(entries) = maps::read_executable(pid) else { return };
        if entries.is_empty() {
            return; // exiting (mm already gone) or a kernel thread
        }
        self.mappings = entries
            .iter()
            .map(|e| Mapping {
                start: e.start,
                end: e.end,
                file_offset: e.file_offset,
                object: if e.is_file() {
                    Some(objects.register(pid, e.start, e.end, e.dev, e.inode, &e.path))
                } else if e.path == "[vdso]" {
                    Some(objects.register_vdso())
                } else {
                    None
                },
            })
            .collect();
        self.mappings.sort_by_key(|m| m.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test process reads its own maps: its own code resolves to its own executable.
    #[test]
    fn resolves_own_code() {
        let mut table = ProcessTable::default();
        let mut objects = ObjectRegistry::default();
        let pid = std::process::id();
        let address = resolves_own_code as *const () as u64;
        let UserAddress::File { object, file_offset } = table.resolve(pid, address, &mut objects) else {
            panic!("own code not found in own maps");
        };
        // Right away (reading our own symbols below can take longer than the re-read interval).
        assert_eq!(table.resolve(pid, 8, &mut objects), UserAddress::Unknown);
        assert_eq!(table.maps_reads, 1, "a miss right after a read does not read again");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(objects.get(object).path, exe.to_str().unwrap());
        let symbols = objects.ensure_loaded(object).symbols().expect("own symbols");
        let symbol = symbols.lookup_file_offset(file_offset).expect("own function");
        assert!(symbol.demangled().contains("resolves_own_code"), "{}", symbol.demangled());
    }
}
