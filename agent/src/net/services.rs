//! Which service a traced process is, cached per pid: its [`ProcessIdentity`] (the same one
//! its profiles carry) and its metrics resource.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    metrics::Resource,
    otlp::resource::HostInfo,
    process::identity::{Identities, ProcessIdentity},
};

/// Most processes remembered; past it the cache starts over.
const MAX_PROCESSES: usize = 8192;
/// How long a service is used without asking the shared identities again.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A traced process, as spans and metrics name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// Who the process is (`service.name` and the process's resource attributes).
    pub identity: Arc<ProcessIdentity>,
    /// `process.pid`.
    pub pid: u32,
    /// Its metrics resource (per service name, not per process), built once here rather than
    /// per request.
    pub metrics: Resource,
}

/// The cache: a service per process, rebuilt when the process's shared identity changes.
#[derive(Debug)]
pub struct Services {
    known: HashMap<u32, (Arc<Service>, Instant), foldhash::fast::RandomState>,
    identities: Arc<Identities>,
    /// [`Identities::changes`] when the cache was last known current.
    seen_changes: u64,
    host: HostInfo,
    /// The time freshness is judged against, set once per drain: reading the clock per
    /// record was 4% of oxeye's CPU under load.
    now: Instant,
}

impl Services {
    /// An empty cache for processes of `host`, named through `identities`.
    pub fn new(identities: Arc<Identities>, host: HostInfo) -> Self {
        Services { known: HashMap::default(), seen_changes: identities.changes(), identities, host, now: Instant::now() }
    }

    /// Sets the time entries' freshness is judged against (once per batch of records).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The service of `pid`; `comm` names it if `/proc` no longer has it.
    pub fn get(&mut self, pid: u32, comm: &str) -> Arc<Service> {
        // The hot path (every network record): no identity changed since, and the entry is
        // fresh; else check it against the shared identity.
        let changes = self.identities.changes();
        let unchanged = changes == self.seen_changes;
        self.seen_changes = changes;
        if let Some((service, at)) = self.known.get(&pid) {
            if unchanged && self.now.saturating_duration_since(*at) < CHECK_INTERVAL {
                return service.clone();
            }
        }
        let identity = self.identities.get(pid, comm);
        if let Some((service, at)) = self.known.get_mut(&pid) {
            if Arc::ptr_eq(&service.identity, &identity) {
                *at = self.now;
                return service.clone();
            }
        }
        if self.known.len() >= MAX_PROCESSES {
            self.known.clear();
        }
        let metrics = self.metrics_resource(&identity);
        let service = Arc::new(Service { identity, pid, metrics });
        self.known.insert(pid, (service.clone(), self.now));
        service
    }

    /// A service's metrics resource: its name, the host, and its container's and pod's
    /// attributes that never change (so a service's series stay apart per pod, from the
    /// first request on); the runtime's pod attributes join at each export.
    fn metrics_resource(&self, identity: &ProcessIdentity) -> Resource {
        let mut attributes = vec![("host.name", self.host.name.clone())];
        attributes.extend(self.host.container_attributes(identity));
        Resource { service_name: identity.service_name.to_string(), attributes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_and_named_like_profiles() {
        let identities = Arc::new(Identities::default());
        let mut services = Services::new(identities.clone(), HostInfo::read(crate::containers::Pods::disabled()));
        let me = services.get(std::process::id(), "comm");
        assert!(Arc::ptr_eq(&me, &services.get(std::process::id(), "comm")), "cached");
        assert_eq!(*me.identity, ProcessIdentity::read(std::process::id(), "comm"));
        identities.refresh(std::process::id(), "comm");
        assert!(!Arc::ptr_eq(&me, &services.get(std::process::id(), "comm")), "rebuilt when the process exec'd");
        assert_eq!(me.metrics.service_name, &*me.identity.service_name);
        let gone = services.get(u32::MAX - 1, "curl");
        assert_eq!(&*gone.identity.service_name, "curl");
    }
}
