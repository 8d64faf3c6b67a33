//! Which service a process is: `OTEL_SERVICE_NAME` from its environment, else its
//! executable's name, else its `comm`. Read from `/proc` once per process and cached.

use crate::metrics::Resource;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// Most processes remembered; past it the cache starts over.
const MAX_PROCESSES: usize = 8192;
/// How long a name is trusted: a pid may be reused, or a process exec another program.
const TTL: Duration = Duration::from_secs(60);

/// A traced process, as spans and metrics name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// `service.name`.
    pub name: String,
    /// `process.executable.name` (empty when unknown).
    pub executable: String,
    /// `process.pid`.
    pub pid: u32,
    /// Its metrics resource (per service name, not per process), built once here rather than
    /// per request.
    pub metrics: Resource,
}

/// The cache.
#[derive(Debug, Default)]
pub struct Services {
    known: HashMap<u32, (Arc<Service>, Instant), foldhash::fast::RandomState>,
    host_name: String,
}

impl Services {
    /// An empty cache for processes of host `host_name`.
    pub fn new(host_name: String) -> Self {
        Services { known: HashMap::default(), host_name }
    }

    /// The service of `pid`; `comm` names it if `/proc` no longer has it.
    pub fn get(&mut self, pid: u32, comm: &str) -> Arc<Service> {
        if let Some((service, at)) = self.known.get(&pid) {
            if at.elapsed() < TTL {
                return service.clone();
            }
        }
        if self.known.len() >= MAX_PROCESSES {
            self.known.clear();
        }
        let service = Arc::new(read(pid, comm, &self.host_name));
        self.known.insert(pid, (service.clone(), Instant::now()));
        service
    }
}

fn read(pid: u32, comm: &str, host_name: &str) -> Service {
    let executable = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let from_environment = std::fs::read(format!("/proc/{pid}/environ")).ok().and_then(|environ| service_name_variable(&environ));
    let name = from_environment
        .or_else(|| (!executable.is_empty()).then(|| executable.clone()))
        .or_else(|| (!comm.is_empty()).then(|| comm.to_owned()))
        .unwrap_or_else(|| "unknown_service".to_owned());
    let metrics = Resource { service_name: name.clone(), attributes: vec![("host.name", host_name.to_owned())] };
    Service { name, executable, pid, metrics }
}

/// `OTEL_SERVICE_NAME` from a NUL-separated environment block.
fn service_name_variable(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"OTEL_SERVICE_NAME="))
        .map(|value| String::from_utf8_lossy(value).trim().to_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variable_wins_then_executable() {
        assert_eq!(service_name_variable(b"A=1\0OTEL_SERVICE_NAME=checkout\0B=2\0").as_deref(), Some("checkout"));
        assert_eq!(service_name_variable(b"A=1\0OTEL_SERVICE_NAME=\0"), None);
        let me = Services::default().get(std::process::id(), "comm");
        assert!(!me.executable.is_empty());
        let gone = Services::default().get(u32::MAX - 1, "curl");
        assert_eq!((gone.name.as_str(), gone.executable.as_str()), ("curl", ""));
    }
}
