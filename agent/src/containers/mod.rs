//! Kubernetes metadata of the containers oxeye sees: which pod, namespace and container a
//! container ID is, asked of the node's own container runtime (the labels the kubelet gave the
//! container), so no node watches the API server.
//!
//! [`Pods::get`] never waits: a container not known yet is asked for in the background and
//! shows without pod attributes until the answer arrives (usually within milliseconds, before
//! the first export). Answers are cached for the container's life, up to [`MAX_CONTAINERS`].

pub mod runtime;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::runtime::{RuntimeClient, RuntimeError, CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL};

/// The runtimes tried when `--container-runtime-endpoint` is not given: containerd's socket,
/// then CRI-O's (the kubelet's own defaults).
pub const DEFAULT_ENDPOINTS: [&str; 2] = ["unix:///run/containerd/containerd.sock", "unix:///var/run/crio/crio.sock"];
/// Most containers remembered; past it, the ones the runtime did not know go first, then all.
pub const MAX_CONTAINERS: usize = 4096;
/// Most lookups waiting; a container that finds the queue full is asked for on its next use.
const MAX_PENDING: usize = 256;
/// How long a container the runtime did not know (or could not answer for) is not asked again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where a container runs in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodMetadata {
    /// `k8s.pod.name`.
    pub pod_name: Arc<str>,
    /// `k8s.pod.uid`.
    pub pod_uid: Arc<str>,
    /// `k8s.namespace.name`.
    pub namespace: Arc<str>,
    /// `k8s.container.name`.
    pub container_name: Arc<str>,
}

impl PodMetadata {
    /// The metadata in a container's labels, if the kubelet labelled it (a pod name at least).
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        let label = |key: &str| -> Arc<str> { labels.get(key).map_or("", String::as_str).into() };
        let pod_name = label(POD_NAME_LABEL);
        (!pod_name.is_empty()).then(|| PodMetadata { pod_name, pod_uid: label(POD_UID_LABEL), namespace: label(POD_NAMESPACE_LABEL), container_name: label(CONTAINER_NAME_LABEL) })
    }

    /// The resource attributes, in the semantic conventions' names; empty values left out.
    pub fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [("k8s.pod.name", &self.pod_name), ("k8s.pod.uid", &self.pod_uid), ("k8s.namespace.name", &self.namespace), ("k8s.container.name", &self.container_name)]
            .into_iter()
            .map(|(key, value)| (key, &**value))
            .filter(|(_, value)| !value.is_empty())
    }
}

enum Entry {
    /// Asked for; no answer yet.
    Pending,
    /// The runtime's answer (`None`: a container without Kubernetes labels).
    Known(Option<Arc<PodMetadata>>),
    /// No answer; ask again after this.
    Unknown(Instant),
}

/// The containers' metadata, shared by every pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pods {
    entries: Arc<Mutex<HashMap<Arc<str>, Entry>>>,
    /// Bumped at each answer.
    generation: Arc<AtomicU64>,
    lookups: Option<mpsc::Sender<Arc<str>>>,
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods").field("enabled", &self.lookups.is_some()).finish()
    }
}

impl Default for Pods {
    fn default() -> Self {
        Pods::disabled()
    }
}

impl Pods {
    /// No runtime: every container is without pod metadata.
    pub fn disabled() -> Self {
        Pods { entries: Arc::default(), generation: Arc::default(), lookups: None }
    }

    /// Asks the runtime at `endpoints` (the first that answers) from a task on the current
    /// tokio runtime.
    pub fn start(endpoints: Vec<String>) -> Self {
        let (sender, receiver) = mpsc::channel(MAX_PENDING);
        let pods = Pods { lookups: Some(sender), ..Pods::disabled() };
        tokio::spawn(lookups(pods.clone(), endpoints, receiver));
        pods
    }

    /// The pod of container `id`, if known now; otherwise asks for it and returns `None`.
    pub fn get(&self, id: &str) -> Option<Arc<PodMetadata>> {
        let lookups = self.lookups.as_ref()?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(id) {
            Some(Entry::Known(pod)) => return pod.clone(),
            Some(Entry::Pending) => return None,
            Some(Entry::Unknown(until)) if Instant::now() < *until => return None,
            _ => {}
        }
        if entries.len() >= MAX_CONTAINERS {
            entries.retain(|_, entry| matches!(entry, Entry::Known(Some(_))));
            if entries.len() >= MAX_CONTAINERS {
                entries.clear();
            }
        }
        let id: Arc<str> = id.into();
        if lookups.try_send(id.clone()).is_ok() {
            entries.insert(id, Entry::Pending);
        }
        None
    }

    /// Changes each time an answer arrives.
    #[cfg(test)]
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn answer(&self, id: Arc<str>, entry: Entry) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).insert(id, entry);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// Answers lookups one at a time, connecting (again) whenever there is no connection.
async fn lookups(pods: Pods, endpoints: Vec<String>, mut receiver: mpsc::Receiver<Arc<str>>) {
    let mut client: Option<RuntimeClient> = None;
    let mut said_unreachable = false;
    while let Some(id) = receiver.recv().await {
        if client.is_none() {
            client = connect(&endpoints, &mut said_unreachable).await;
        }
        let Some(connected) = &client else {
            pods.answer(id, Entry::Unknown(Instant::now() + RETRY_AFTER));
            continue;
        };
        // tonic's own timeouts cover connecting and each call; this covers anything between.
        let answer = tokio::time::timeout(2 * runtime::CALL_TIMEOUT, connected.labels(&id)).await;
        let answer = answer.unwrap_or_else(|_| Err(RuntimeError::TimedOut(id.to_string())));
        match answer {
            Ok(labels) => {
                let pod = PodMetadata::from_labels(&labels).map(Arc::new);
                debug!(container = %id, pod = ?pod.as_ref().map(|p| &p.pod_name), "container runtime answered");
                pods.answer(id, Entry::Known(pod));
            }
            Err(RuntimeError::NotFound(_)) => pods.answer(id, Entry::Unknown(Instant::now() + RETRY_AFTER)),
            Err(error) => {
                warn!("no pod metadata for container {id}: {error}");
                // The connection may be what failed: connect anew for the next one.
                client = None;
                pods.answer(id, Entry::Unknown(Instant::now() + RETRY_AFTER));
            }
        }
    }
}

/// The first of `endpoints` that answers; says once when none does.
async fn connect(endpoints: &[String], said_unreachable: &mut bool) -> Option<RuntimeClient> {
    let mut reasons = Vec::new();
    for endpoint in endpoints {
        match RuntimeClient::connect(endpoint).await {
            Ok(client) => {
                info!(endpoint = client.endpoint(), "pod metadata from the container runtime");
                *said_unreachable = false;
                return Some(client);
            }
            Err(error) => reasons.push(error.to_string()),
        }
    }
    if !*said_unreachable {
        warn!("containers carry container.id only (no k8s.pod.* attributes): {}", reasons.join("; "));
        *said_unreachable = true;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_from_the_kubelets_labels() {
        let labels: HashMap<String, String> = [
            (POD_NAME_LABEL, "web-7d9f"),
            (POD_NAMESPACE_LABEL, "shop"),
            (POD_UID_LABEL, "0b7c6f9e-1111-2222-3333-444455556666"),
            (CONTAINER_NAME_LABEL, "nginx"),
            ("io.cri-containerd.kind", "container"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let pod = PodMetadata::from_labels(&labels).expect("labelled");
        let attributes: Vec<_> = pod.attributes().collect();
        assert_eq!(
            attributes,
            [("k8s.pod.name", "web-7d9f"), ("k8s.pod.uid", "0b7c6f9e-1111-2222-3333-444455556666"), ("k8s.namespace.name", "shop"), ("k8s.container.name", "nginx")]
        );
        assert_eq!(PodMetadata::from_labels(&HashMap::new()), None, "a container no kubelet made");
    }

    /// A runtime that accepts connections and never answers costs a lookup its timeout, and
    /// nothing else waits for it.
    #[tokio::test]
    async fn a_silent_runtime_times_out_without_blocking_anyone() {
        let dir = std::env::temp_dir().join(format!("oxeye-silent-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("runtime.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let silent = std::thread::spawn(move || {
            let held = listener.accept();
            std::thread::sleep(3 * runtime::CALL_TIMEOUT);
            drop(held);
        });
        let pods = Pods::start(vec![format!("unix://{}", socket.display())]);
        let started = Instant::now();
        assert_eq!(pods.get("abc"), None);
        assert!(started.elapsed() < Duration::from_millis(50), "get waited");
        while pods.generation() == 0 {
            assert!(started.elapsed() < 3 * runtime::CALL_TIMEOUT, "the lookup never gave up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pods.get("abc"), None, "unknown, not asked again yet");
        drop(silent);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_absent_runtime_never_blocks_and_is_asked_again_later() {
        let pods = Pods::start(vec!["unix:///nonexistent/oxeye-test.sock".into()]);
        let started = Instant::now();
        assert_eq!(pods.get("abc"), None);
        // The lookup task runs while this one waits.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if pods.generation() > 0 {
                break;
            }
        }
        assert_eq!(pods.generation(), 1, "answered as unknown");
        assert_eq!(pods.get("abc"), None);
        assert_eq!(pods.generation(), 1, "not asked again before RETRY_AFTER");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(Pods::disabled().get("abc"), None);
    }
}
