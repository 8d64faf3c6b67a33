//! The OCI image of `cargo xtask image`: built twice to the same bytes, loaded with podman and
//! run with runc (x86_64); for arm64, its layer unpacked and its binary run under qemu user
//! mode. Both check the archive's digests, that every library the binary needs is in the image,
//! and that there is no shell.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use oxeye_tests::{deadline, output, output_dir, podman::Podman, root, run_ok};
use serde_json::Value;

/// oxeye's version, which the workspace gives every crate.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The cargo running the tests, else the one on PATH.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// `cargo xtask image [--target TARGET] --output OUTPUT`.
fn xtask_image(target: Option<&str>, output_path: &Path) {
    let mut command = Command::new(cargo());
    command.current_dir(root()).args(["xtask", "image", "--output"]).arg(output_path);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    let out = output(&mut command, "cargo xtask image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo xtask image {target:?} failed ({}):\n{stderr}", out.status);
    assert!(output_path.exists(), "cargo xtask image succeeded but wrote no {}:\n{stderr}", output_path.display());
}

/// An image archive unpacked: the layout's JSON documents, and the layer's files.
struct Unpacked {
    config: Value,
    index: Value,
    rootfs: PathBuf,
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()))
}

fn sha256_of(path: &Path) -> String {
    let sum = run_ok(Command::new("sha256sum").arg(path), "sha256sum");
    format!("sha256:{}", sum.split_whitespace().next().unwrap_or_default())
}

/// The blob a descriptor names, after checking its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().unwrap_or_else(|| panic!("descriptor without a digest: {descriptor}"));
    let path = layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    assert_eq!(sha256_of(&path), digest, "{} does not hash to its name", path.display());
    let size = fs::metadata(&path).unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display())).len();
    assert_eq!(Some(size), descriptor["size"].as_u64(), "wrong size in the descriptor of {digest}");
    path
}

/// Unpacks `archive` into `dir`: the layout into `dir/layout`, its layer into `dir/rootfs`.
fn unpack(archive: &Path, dir: &Path) -> Unpacked {
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    for d in [&layout, &rootfs] {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    }
    run_ok(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout), "tar -x (the archive)");
    assert_eq!(fs::read_to_string(layout.join("oci-layout")).unwrap_or_default(), r#"{"imageLayoutVersion":"1.0.0"}"#, "bad oci-layout file");
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob(&layout, &index["manifests"][0]));
    let config = read_json(&blob(&layout, &manifest["config"]));
    let layers = manifest["layers"].as_array().unwrap_or_else(|| panic!("manifest without layers: {manifest}"));
    assert_eq!(layers.len(), 1, "one layer expected: {manifest}");
    let layer = blob(&layout, &layers[0]);
    let tar = dir.join("layer.tar");
    let mut gunzip = flate2::read::GzDecoder::new(fs::File::open(&layer).unwrap_or_else(|e| panic!("cannot open {}: {e}", layer.display())));
    let mut file = fs::File::create(&tar).unwrap_or_else(|e| panic!("cannot create {}: {e}", tar.display()));
    std::io::copy(&mut gunzip, &mut file).unwrap_or_else(|e| panic!("cannot decompress the layer {}: {e}", layer.display()));
    assert_eq!(config["rootfs"]["diff_ids"][0].as_str(), Some(sha256_of(&tar).as_str()), "the diff_id is not the uncompressed layer's digest");
    run_ok(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&rootfs), "tar -x (the layer)");
    Unpacked { config, index, rootfs }
}

/// Checks what every image must hold: the binary, each library it needs, the users, no shell.
fn check_rootfs(unpacked: &Unpacked, triplet: &str) {
    let rootfs = &unpacked.rootfs;
    let binary = rootfs.join("usr/bin/oxeye");
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&binary), "readelf -d oxeye");
    let needed: Vec<&str> = dynamic.lines().filter_map(|line| line.split("Shared library: [").nth(1)?.strip_suffix(']')).collect();
    assert!(needed.iter().any(|lib| lib.starts_with("libc.so")), "readelf found no libc in oxeye's DT_NEEDED:\n{dynamic}");
    for library in &needed {
        let path = rootfs.join("lib").join(triplet).join(library);
        assert!(path.is_file(), "oxeye needs {library}, but the image has no /lib/{triplet}/{library}");
    }
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    assert!(passwd.starts_with("root:x:0:0:") && passwd.contains("\nnobody:x:65534:65534:"), "bad /etc/passwd:\n{passwd}");
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox"] {
        assert!(fs::symlink_metadata(rootfs.join(shell)).is_err(), "the image has a shell: /{shell}");
    }
    let index = &unpacked.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"];
    assert_eq!(index.as_str(), Some(format!("oxeye:{VERSION}").as_str()), "index.json's ref.name");
    let config = &unpacked.config["config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/bin/oxeye"]), "the config's Entrypoint");
    assert_eq!(config["Labels"]["org.opencontainers.image.version"].as_str(), Some(VERSION), "the version label");
}

/// An image podman loaded, removed again when dropped.
struct Loaded<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        let _ = output(&mut self.podman.command(&["rmi", "--force", &self.name]), "podman rmi");
    }
}

#[test]
fn image_loads_and_runs_in_podman() {
    let _deadline = deadline(Duration::from_secs(10 * 60));
    let dir = output_dir("image_x86_64");
    let archive = dir.join("oxeye-x86_64.oci.tar");
    xtask_image(None, &archive);
    let again = dir.join("again.oci.tar");
    xtask_image(None, &again);
    let bytes = |path: &Path| fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(bytes(&archive) == bytes(&again), "two builds of the image differ: {} and {}", archive.display(), again.display());
    let unpacked = unpack(&archive, &dir);
    check_rootfs(&unpacked, "x86_64-linux-gnu");
    assert_eq!(unpacked.config["architecture"].as_str(), Some("amd64"), "the config's architecture");

    let podman = Podman::new(&dir);
    let loaded = run_ok(podman.command(&["load", "-i"]).arg(&archive), "podman load");
    let name = loaded.lines().find_map(|line| line.strip_prefix("Loaded image: ")).unwrap_or_else(|| panic!("podman load named no image:\n{loaded}"));
    assert!(name.ends_with(&format!("oxeye:{VERSION}")), "podman loaded {name}, not oxeye:{VERSION}");
    let image = Loaded { podman: &podman, name: name.trim().to_owned() };

    let version = run_ok(&mut podman.command(&["run", "--rm", "--network", "none", &image.name, "--version"]), "podman run oxeye --version");
    assert_eq!(version.trim(), format!("oxeye {VERSION}"), "oxeye --version in the container");
    let as_nobody = run_ok(&mut podman.command(&["run", "--rm", "--network", "none", "--user", "nobody", &image.name, "--version"]), "podman run --user nobody");
    assert_eq!(as_nobody.trim(), format!("oxeye {VERSION}"), "oxeye --version as nobody");
    let shell = output(&mut podman.command(&["run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", &image.name, "-c", "true"]), "podman run /bin/sh");
    assert!(!shell.status.success(), "the image ran /bin/sh");

    let inspect = run_ok(&mut podman.command(&["image", "inspect", &image.name]), "podman image inspect");
    let inspect: Value = serde_json::from_str(&inspect).unwrap_or_else(|e| panic!("podman image inspect printed no JSON: {e}\n{inspect}"));
    let inspect = &inspect[0];
    assert_eq!(inspect["Config"]["Entrypoint"], serde_json::json!(["/usr/bin/oxeye"]), "podman's Entrypoint: {inspect}");
    assert_eq!(inspect["Config"]["Cmd"], serde_json::json!(["--no-live"]), "podman's Cmd: {inspect}");
    assert_eq!(inspect["Architecture"].as_str(), Some("amd64"), "podman's Architecture");
    let size = inspect["Size"].as_u64().unwrap_or_else(|| panic!("podman image inspect has no Size: {inspect}"));
    let archive_size = fs::metadata(&archive).map(|m| m.len()).unwrap_or_default();
    println!("image oxeye:{VERSION} (amd64): {:.1} MB in podman, archive {:.1} MB", size as f64 / 1e6, archive_size as f64 / 1e6);
    // The release binary's debug sections alone are about 55 MB: they must not be in the image.
    assert!(size < 40_000_000, "the image is {size} bytes: are the debug sections stripped?");
}

#[test]
fn arm64_image_runs_under_qemu() {
    // The first arm64 build takes minutes on a busy machine (CI has cross-built it by now).
    let _deadline = deadline(Duration::from_secs(25 * 60));
    let dir = output_dir("image_arm64");
    let archive = dir.join("oxeye-arm64.oci.tar");
    xtask_image(Some("aarch64-unknown-linux-gnu"), &archive);
    let unpacked = unpack(&archive, &dir);
    check_rootfs(&unpacked, "aarch64-linux-gnu");
    assert_eq!(unpacked.config["architecture"].as_str(), Some("arm64"), "the config's architecture");
    assert_eq!(unpacked.index["manifests"][0]["platform"]["architecture"].as_str(), Some("arm64"), "index.json's platform");

    let rootfs = &unpacked.rootfs;
    let version = run_ok(Command::new("qemu-aarch64-static").arg("-L").arg(rootfs).arg(rootfs.join("usr/bin/oxeye")).arg("--version"), "qemu-aarch64-static -L rootfs oxeye --version");
    assert_eq!(version.trim(), format!("oxeye {VERSION}"), "the arm64 oxeye's --version under qemu -L");
    // -L falls back to this machine's files for what the image lacks, and the arm64 cross tools
    // install libc6:arm64 here: in a chroot of the image (with the static qemu copied in),
    // only the image's interpreter and libraries can be found.
    fs::copy("/usr/bin/qemu-aarch64-static", rootfs.join("qemu-aarch64-static")).unwrap_or_else(|e| panic!("cannot copy qemu-aarch64-static into {}: {e}", rootfs.display()));
    let version = run_ok(Command::new("chroot").arg(rootfs).args(["/qemu-aarch64-static", "/usr/bin/oxeye", "--version"]), "chroot rootfs qemu-aarch64-static oxeye --version");
    assert_eq!(version.trim(), format!("oxeye {VERSION}"), "the arm64 oxeye's --version under qemu in a chroot of the image");
    let size = fs::metadata(&archive).map(|m| m.len()).unwrap_or_default();
    println!("image oxeye:{VERSION} (arm64): archive {:.1} MB", size as f64 / 1e6);
}
