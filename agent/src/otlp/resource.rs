//! Resource attributes: the host, the process, and `OTEL_RESOURCE_ATTRIBUTES`.

use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::dictionary::Value;
use crate::process::identity::ProcessIdentity;

/// The resource attributes of one process, the same on its profiles and its spans (so the two
/// join): host, service, process and container, then `OTEL_RESOURCE_ATTRIBUTES`.
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
    if !identity.container_id.is_empty() {
        attributes.push(("container.id".into(), Value::Str(identity.container_id.to_string())));
    }
    host.resource_attributes(attributes)
}

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
