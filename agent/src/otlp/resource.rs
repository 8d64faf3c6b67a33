//! Resource attributes: the host, the process, its container and pod, and
//! `OTEL_RESOURCE_ATTRIBUTES`.

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

use super::dictionary::Value;
use crate::{containers::Pods, process::identity::ProcessIdentity};

/// The resource attributes of one process, the same on its profiles and its spans (so the two
/// join): host, service, process, container and pod, then `OTEL_RESOURCE_ATTRIBUTES`.
pub fn process_attributes(host: &HostInfo, pid: u32, identity: &ProcessIdentity) -> Vec<KeyValue> {
    let mut attributes: Vec<(String, Value)> = vec![
        ("host.name".into(), Value::Str(host.name.clone())),
        ("host.arch".into(), Value::Str(host.arch.into())),
        ("service.name".into(), Value::Str(identity.service_name.to_string())),
        ("process.pid".into(), Value::Int(i64::from(pid))),
        ("process.executable.name".into(), Value::Str(identity.executable_name().to_owned())),
        ("telemetry.distro.name".into(), Value::Str("oxeye".into())),
    ];
    if !identity.executable_path.is_empty() {
        attributes.push(("process.executable.path".into(), Value::Str(identity.executable_path.to_string())));
    }
    for (key, value) in host.container_attributes(identity).into_iter().chain(host.pod_attributes(&identity.container_id)) {
        // The runtime's pod UID is the cgroup's: one of each key.
        attributes.retain(|(k, _)| k != key);
        attributes.push((key.to_owned(), Value::Str(value)));
    }
    host.resource_attributes(attributes)
}

/// Adds to a resource that has a `container.id` what the container runtime says of its pod
/// (metrics keep their series by the stable attributes and get these at each export).
pub fn add_pod_attributes(host: &HostInfo, attributes: &mut Vec<KeyValue>) {
    let container_id = attributes.iter().find(|kv| kv.key == "container.id").and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(id) => Some(id.clone()),
        _ => None,
    });
    for (key, value) in container_id.map(|id| host.pod_attributes(&id)).unwrap_or_default() {
        attributes.retain(|kv| kv.key != key);
        attributes.push(key_value(key, Value::Str(value)));
    }
}

/// Facts about this host (read once) and its containers' pods (asked of its runtime).
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `host.name`.
    pub name: String,
    /// `host.arch`, by the semantic conventions' names (`amd64`, `arm64`).
    pub arch: &'static str,
    /// `k8s.node.name`, from `NODE_NAME` (the DaemonSet sets it from the downward API).
    pub node_name: Option<String>,
    /// Extra attributes from `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub extra: Vec<(String, String)>,
    /// The pods of the host's containers.
    pub pods: Pods,
}

impl HostInfo {
    /// Reads the host name, `NODE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; containers are
    /// looked up in `pods`.
    pub fn read(pods: Pods) -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default();
        let node_name = std::env::var("NODE_NAME").ok().filter(|name| !name.is_empty());
        let extra = std::env::var("OTEL_RESOURCE_ATTRIBUTES").map(|v| parse_resource_attributes(&v)).unwrap_or_default();
        HostInfo { name, arch: host_arch(), node_name, extra, pods }
    }

    /// What a process's cgroup and this node say of it, which never changes for the
    /// process: `container.id`, `k8s.pod.uid` and `k8s.node.name`.
    pub fn container_attributes(&self, identity: &ProcessIdentity) -> Vec<(&'static str, String)> {
        let mut attributes = Vec::new();
        if !identity.container_id.is_empty() {
            attributes.push(("container.id", identity.container_id.to_string()));
        }
        if !identity.pod_uid.is_empty() {
            attributes.push(("k8s.pod.uid", identity.pod_uid.to_string()));
        }
        if let Some(node) = &self.node_name {
            attributes.push(("k8s.node.name", node.clone()));
        }
        attributes
    }

    /// What the container runtime says of container `id`'s pod; nothing until it answered
    /// (or outside containers and pods).
    pub fn pod_attributes(&self, container_id: &str) -> Vec<(&'static str, String)> {
        if container_id.is_empty() {
            return Vec::new();
        }
        self.pods.get(container_id).map_or_else(Vec::new, |pod| pod.attributes().map(|(key, value)| (key, value.to_owned())).collect())
    }
}

impl HostInfo {
    /// The attributes of a resource: what oxeye `detected`, then `OTEL_RESOURCE_ATTRIBUTES`,
    /// which adds to and overrides it.
    pub fn resource_attributes(&self, mut detected: Vec<(String, Value)>) -> Vec<KeyValue> {
        for (key, value) in &self.extra {
            detected.retain(|(k, _)| k != key);
            detected.push((key.clone(), Value::Str(value.clone())));
        }
        detected.into_iter().map(|(key, value)| key_value(key, value)).collect()
    }
}

/// An OTLP attribute.
pub fn key_value(key: impl Into<String>, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(value.to_any()), ..Default::default() }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Parses `key1=value1,key2=value2` (values percent-decoded, as the OpenTelemetry
/// specification says). Malformed pairs are skipped.
pub fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(byte) = text.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_attributes_env() {
        assert_eq!(
            parse_resource_attributes("deployment.environment=prod, team=a%2Cb,bad,=x"),
            [("deployment.environment".to_owned(), "prod".to_owned()), ("team".to_owned(), "a,b".to_owned())]
        );
    }
}
