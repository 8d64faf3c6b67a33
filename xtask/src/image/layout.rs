//! The OCI image layout (image-spec v1.1 `image-layout.md`) around the layer: the config,
//! the manifest and `index.json`, in one tar (an "oci-archive").

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{
    layer::{self, Entry, Layer, Tree},
    Platform,
};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the image says about itself.
pub struct Image<'a> {
    /// oxeye's version: the tag and the version label.
    pub version: &'a str,
    pub platform: &'a Platform,
    /// Seconds since 1970: the image's creation date.
    pub epoch: u64,
}

/// The archive's bytes: `oci-layout`, `index.json` naming the image `oxeye:<version>`, and
/// the blobs (layer, config, manifest) under `blobs/sha256/`.
pub fn archive(image: &Image, layer: &Layer) -> Result<Vec<u8>> {
    let mut blobs = Vec::new();
    let layer_descriptor = descriptor(LAYER, &layer.gzip);
    blobs.push(layer.gzip.clone());
    let config = to_bytes(&config(image, &layer.diff_id))?;
    let config_descriptor = descriptor(CONFIG, &config);
    blobs.push(config);
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_descriptor,
        "layers": [layer_descriptor],
    }))?;
    let mut manifest_descriptor = descriptor(MANIFEST, &manifest);
    manifest_descriptor["platform"] = json!({ "architecture": image.platform.oci_arch, "os": "linux" });
    // podman and skopeo name the loaded image after the OCI annotation (localhost/oxeye:V);
    // containerd prefers its own, given here as the kubelet spells `oxeye:V`, so a DaemonSet's
    // `image: oxeye:V` finds the imported image without a registry.
    manifest_descriptor["annotations"] = json!({
        "org.opencontainers.image.ref.name": format!("oxeye:{}", image.version),
        "io.containerd.image.name": format!("docker.io/library/oxeye:{}", image.version),
    });
    blobs.push(manifest);
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))?;

    let mut tree = Tree::new();
    tree.insert("oci-layout".into(), file(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
    tree.insert("index.json".into(), file(index));
    tree.insert("blobs".into(), Entry::Dir { mode: 0o755 });
    tree.insert("blobs/sha256".into(), Entry::Dir { mode: 0o755 });
    for blob in blobs {
        let digest = layer::sha256(&blob);
        tree.insert(format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")), file(blob));
    }
    layer::tar(&tree, image.epoch)
}

/// The image configuration (image-spec `config.md`).
fn config(image: &Image, diff_id: &str) -> Value {
    let created = rfc3339(image.epoch);
    json!({
        "created": created,
        "architecture": image.platform.oci_arch,
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/bin/oxeye"],
            "Cmd": ["--no-live"],
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": "oxeye",
                "org.opencontainers.image.version": image.version,
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "cargo xtask image" }],
    })
}

/// A content descriptor of `bytes` (image-spec `descriptor.md`).
fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": layer::sha256(bytes), "size": bytes.len() })
}

fn to_bytes(value: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(value).context("cannot write the image's JSON")
}

fn file(data: Vec<u8>) -> Entry {
    Entry::File { mode: 0o644, data }
}

/// `epoch` (seconds since 1970, UTC) as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(epoch: u64) -> String {
    let (days, seconds) = (epoch / 86_400, epoch % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never before it here).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", seconds / 3600, seconds % 3600 / 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
