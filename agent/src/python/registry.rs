//! The CPython processes the walker is attached to, shared by the unwinder thread (which
//! attaches them) and the collector (which names their frames).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use super::{memory::ProcessMemory, versions::VersionLayout};

/// One attached process.
#[derive(Debug)]
pub struct AttachedProcess {
    /// Its CPython version's layout.
    pub layout: VersionLayout,
    /// Address of `PyCode_Type` in the process.
    pub code_type: u64,
    /// Its memory, opened at attach time (so a code object can be read as long as the
    /// process lives, whatever its credentials become).
    pub memory: ProcessMemory,
}

/// Attached processes by pid.
#[derive(Debug, Default)]
pub struct PythonProcesses {
    processes: Mutex<HashMap<u32, Arc<AttachedProcess>>>,
}

impl PythonProcesses {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Arc<AttachedProcess>>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.processes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The attached process `pid`.
    pub fn get(&self, pid: u32) -> Option<Arc<AttachedProcess>> {
        self.lock().get(&pid).cloned()
    }

    /// Whether `pid` is attached.
    pub fn contains(&self, pid: u32) -> bool {
        self.lock().contains_key(&pid)
    }

    /// Processes attached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// The pids attached.
    pub fn pids(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    pub(super) fn insert(&self, pid: u32, process: AttachedProcess) {
        self.lock().insert(pid, Arc::new(process));
    }

    /// Removes `pid`; whether it was there.
    pub(super) fn remove(&self, pid: u32) -> bool {
        self.lock().remove(&pid).is_some()
    }
}
