//! Resource attributes: the host, the process, and `OTEL_RESOURCE_ATTRIBUTES`.

use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::dictionary::Value;

/// Facts about this host, read once.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// `host.name`.
    pub name: String,
    /// `host.arch`, by the semantic conventions' names (`amd64`, `arm64`).
    pub arch: &'static str,
    /// Extra attributes from `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub extra: Vec<(String, String)>,
}

impl HostInfo {
    /// Reads the host name and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn read() -> Self {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default();
        let extra = std::env::var("OTEL_RESOURCE_ATTRIBUTES").map(|v| parse_resource_attributes(&v)).unwrap_or_default();
        HostInfo { name, arch: host_arch(), extra }
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

/// The container ID in a `/proc/PID/cgroup` file: the last 64-hex-digit name in its paths
/// (docker, containerd, CRI-O and podman all name the cgroup after the container).
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split(['/', '-', '.', ':']))
        .rfind(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
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
    fn resource_attributes_env() {
        assert_eq!(
            parse_resource_attributes("deployment.environment=prod, team=a%2Cb,bad,=x"),
            [("deployment.environment".to_owned(), "prod".to_owned()), ("team".to_owned(), "a,b".to_owned())]
        );
    }
}
