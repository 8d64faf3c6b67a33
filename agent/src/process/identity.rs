//! Who a process is, for every signal: its name, executable, container and service.
//!
//! Profiles, spans and metrics all name a process through [`ProcessIdentity::read`], so the
//! same process carries the same `service.name` everywhere and its traces and profiles join.

use crate::containers::Pods;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// Used when nothing names a process.
const UNKNOWN_SERVICE: &str = "unknown_service";
/// Most processes remembered; past it the cache starts over.
const MAX_PROCESSES: usize = 8192;
/// How long an identity is trusted without an exec event: a pid may be reused.
const TTL: Duration = Duration::from_secs(60);

/// Every process's identity, read once and shared by the profile and network pipelines, so
/// that both always agree on who a process is.
#[derive(Debug, Default)]
pub struct Identities {
    known: Mutex<IdentityMap>,
    /// Asked for a container's pod as soon as one of its processes is first read, so the
    /// answer is there by the time its signals are exported.
    pods: Pods,
    /// Bumped whenever an identity is read again or forgotten: a reader that saw the same
    /// number before knows its copies are still current without taking the lock.
    changes: AtomicU64,
}

/// Identities by pid, with when they were read.
type IdentityMap = HashMap<u32, (Arc<ProcessIdentity>, Instant), foldhash::fast::RandomState>;

impl Identities {
    /// Identities whose containers' pods are looked up in `pods`.
    pub fn new(pods: Pods) -> Self {
        Identities { pods, ..Default::default() }
    }

    /// The identity of `pid`, read from `/proc` on first sight (`comm` names it if `/proc` no
    /// longer has it).
    pub fn get(&self, pid: u32, comm: &str) -> Arc<ProcessIdentity> {
        let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((identity, at)) = known.get(&pid) {
            if at.elapsed() < TTL {
                return identity.clone();
            }
        }
        self.insert(&mut known, pid, comm)
    }

    /// Reads `pid` again: it exec'd (a new executable, perhaps a new environment).
    pub fn refresh(&self, pid: u32, comm: &str) -> Arc<ProcessIdentity> {
        let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.insert(&mut known, pid, comm)
    }

    /// Forgets `pid` (its image changed; it is read again when next needed).
    pub fn forget(&self, pid: u32) {
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&pid);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times identities were read again or forgotten so far.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn insert(&self, known: &mut IdentityMap, pid: u32, comm: &str) -> Arc<ProcessIdentity> {
        if known.len() >= MAX_PROCESSES {
            known.clear();
        }
        let identity = Arc::new(ProcessIdentity::read(pid, comm));
        if !identity.container_id.is_empty() {
            // Starts the lookup of a container not seen yet; the answer is read at export.
            let _ = self.pods.get(&identity.container_id);
        }
        known.insert(pid, (identity.clone(), Instant::now()));
        identity
    }
}

/// What oxeye knows about a process, read from `/proc` while it is alive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// `comm` of the main thread.
    pub name: Arc<str>,
    /// `service.name`: `OTEL_SERVICE_NAME` from the process's environment, else its
    /// executable's name, else its `comm`.
    pub service_name: Arc<str>,
    /// Path of the executable (`/proc/PID/exe`); empty for kernel threads and processes gone.
    pub executable_path: Arc<str>,
    /// Container ID from the process's cgroup; empty outside containers.
    pub container_id: Arc<str>,
    /// The Kubernetes pod's UID from the process's cgroup (`…pod<UID>…`); empty outside pods.
    pub pod_uid: Arc<str>,
}

impl ProcessIdentity {
    /// Reads process `pid`; `comm` names it if `/proc` no longer has it.
    pub fn read(pid: u32, comm: &str) -> Self {
        let name: Arc<str> = read_comm(pid).map_or_else(|| comm.into(), Into::into);
        let executable_path = read_executable_path(pid);
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let container_id = container_id(&cgroup).map_or_else(|| "".into(), Into::into);
        let pod_uid = pod_uid(&cgroup).map_or_else(|| "".into(), Into::into);
        let from_environment = std::fs::read(format!("/proc/{pid}/environ")).ok().and_then(|environ| service_name_variable(&environ));
        let executable_name = file_name(&executable_path);
        let service_name = match from_environment {
            Some(name) => name.into(),
            None if !executable_name.is_empty() => executable_name.into(),
            None if !name.is_empty() => name.clone(),
            None => UNKNOWN_SERVICE.into(),
        };
        ProcessIdentity { name, service_name, executable_path, container_id, pod_uid }
    }

    /// An identity from a name alone (the idle task, a process already gone).
    pub fn named(name: &str) -> Self {
        let service_name = if name.is_empty() { UNKNOWN_SERVICE } else { name };
        ProcessIdentity { name: name.into(), service_name: service_name.into(), ..Default::default() }
    }

    /// `process.executable.name`: the executable's file name, else `comm`.
    pub fn executable_name(&self) -> &str {
        match file_name(&self.executable_path) {
            "" => &self.name,
            name => name,
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// `/proc/PID/exe`; empty for kernel threads and processes that are gone.
pub fn read_executable_path(pid: u32) -> Arc<str> {
    std::fs::read_link(format!("/proc/{pid}/exe")).map_or_else(|_| "".into(), |path| path.to_string_lossy().into())
}

/// `/proc/PID/comm`, without its newline.
pub fn read_comm(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_owned())
}

/// `OTEL_SERVICE_NAME` from a NUL-separated environment block.
fn service_name_variable(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"OTEL_SERVICE_NAME="))
        .map(|value| String::from_utf8_lossy(value).trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The container ID in a `/proc/PID/cgroup` file: the last 64-hex-digit name in its paths
/// (docker, containerd, CRI-O and podman all name the cgroup after the container).
fn container_id(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split(['/', '-', '.', ':']))
        .rfind(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The pod UID in a `/proc/PID/cgroup` file: kubelets name a pod's cgroup `pod<UID>`
/// (cgroupfs driver) or `kubepods-<class>-pod<UID with _ for ->.slice` (systemd driver).
fn pod_uid(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split(['/', '.']).rev())
        .filter_map(|part| part.rfind("pod").map(|at| part[at + 3..].replace('_', "-")))
        .find(|uid| uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') && uid.matches('-').count() == 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a2f7c0e5b9d8a1f3c6e2b7d9f0a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a";

    #[test]
    fn container_ids_from_common_runtimes() {
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("12:cpu,cpuacct:/kubepods/burstable/pod0b7c-11/{ID}\n"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope\n"),
        ] {
            assert_eq!(container_id(&cgroup).as_deref(), Some(ID), "{cgroup}");
        }
        assert_eq!(container_id("0::/user.slice/user-0.slice/session-1.scope\n"), None);
    }

    #[test]
    fn pod_uids_from_both_cgroup_drivers() {
        const UID: &str = "0b7c6f9e-1111-2222-3333-444455556666";
        for cgroup in [
            format!("12:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n"),
            format!("0::/kubepods/pod{UID}/{ID}\n"),
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n", UID.replace('-', "_")),
            format!("0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope\n", UID.replace('-', "_")),
        ] {
            assert_eq!(pod_uid(&cgroup).as_deref(), Some(UID), "{cgroup}");
        }
        assert_eq!(pod_uid(&format!("0::/machine.slice/libpod-{ID}.scope/container\n")), None);
        assert_eq!(pod_uid("0::/kubepods/podnotauid/x\n"), None);
    }

    #[test]
    fn environment_variable_wins_then_executable_then_comm() {
        assert_eq!(service_name_variable(b"A=1\0OTEL_SERVICE_NAME=checkout\0B=2\0").as_deref(), Some("checkout"));
        assert_eq!(service_name_variable(b"A=1\0OTEL_SERVICE_NAME=\0"), None);
        let me = ProcessIdentity::read(std::process::id(), "comm");
        assert!(!me.executable_path.is_empty());
        assert_eq!(&*me.service_name, me.executable_name());
        let gone = ProcessIdentity::read(u32::MAX - 1, "curl");
        assert_eq!((&*gone.service_name, gone.executable_name(), &*gone.executable_path), ("curl", "curl", ""));
        assert_eq!(&*ProcessIdentity::named("").service_name, UNKNOWN_SERVICE);
    }

    #[test]
    fn identities_are_shared_until_refreshed() {
        let identities = Identities::default();
        let pid = std::process::id();
        let first = identities.get(pid, "comm");
        assert!(Arc::ptr_eq(&first, &identities.get(pid, "other")), "cached");
        let again = identities.refresh(pid, "comm");
        assert!(!Arc::ptr_eq(&first, &again) && first == again, "read again, same process");
        identities.forget(pid);
        assert!(!Arc::ptr_eq(&again, &identities.get(pid, "comm")));
    }
}
