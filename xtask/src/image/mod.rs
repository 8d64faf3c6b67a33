//! `cargo xtask image`: an OCI image archive of oxeye, made here without a registry, Docker or
//! the network, for `podman load` / `ctr images import` / `skopeo copy oci-archive:…`.
//!
//! The image holds `/usr/bin/oxeye` (the release build, debug sections stripped: the symbol
//! table stays for panics' backtraces), exactly the shared libraries it needs (its `DT_NEEDED`
//! entries and interpreter, followed through the libraries' own entries), `/etc/passwd` and
//! `/etc/group` with root and nobody, the CA certificates for TLS to a collector, an empty
//! `/tmp` (mode 1777) and `/var/lib/oxeye`. No shell. The archive is byte-for-byte
//! reproducible: entries sorted, owned by root, dated 0 or `SOURCE_DATE_EPOCH`.

mod layer;
mod layout;

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    build::{self, BuildArgs},
    shell::{self, root, say},
};

/// Flags of `cargo xtask image`.
#[derive(clap::Args)]
pub struct ImageArgs {
    /// Build the image for this target (default: this machine's), e.g.
    /// aarch64-unknown-linux-gnu.
    #[arg(long)]
    pub target: Option<String>,
    /// Where to write the archive (default: target/image/oxeye-<amd64|arm64>.oci.tar).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// What differs between the image's architectures.
pub struct Platform {
    /// The OCI name of the architecture: `amd64`, `arm64`.
    pub oci_arch: &'static str,
    /// The Debian multiarch triplet: the image keeps its libraries in `/lib/<triplet>`.
    pub triplet: &'static str,
    /// What the binary and its libraries must be built for.
    pub elf_arch: object::Architecture,
    /// Where this machine keeps the target's libraries.
    pub host_lib_dirs: &'static [&'static str],
    /// The objcopy that understands the target's ELF files.
    pub objcopy: &'static str,
}

impl Platform {
    /// The platform of `target` (a Rust target triple), or of this machine.
    pub fn of(target: Option<&str>) -> Result<Platform> {
        let arch = target.map_or(std::env::consts::ARCH, |t| t.split('-').next().unwrap_or_default());
        let native = arch == std::env::consts::ARCH;
        let platform = match (arch, native) {
            ("x86_64", true) => Platform::new("amd64", "x86_64-linux-gnu", object::Architecture::X86_64, &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"], "objcopy"),
            ("x86_64", false) => Platform::new("amd64", "x86_64-linux-gnu", object::Architecture::X86_64, &["/usr/x86_64-linux-gnu/lib"], "x86_64-linux-gnu-objcopy"),
            ("aarch64", true) => Platform::new("arm64", "aarch64-linux-gnu", object::Architecture::Aarch64, &["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"], "objcopy"),
            // From the cross packages (libc6-arm64-cross, libgcc-s1-arm64-cross).
            ("aarch64", false) => Platform::new("arm64", "aarch64-linux-gnu", object::Architecture::Aarch64, &["/usr/aarch64-linux-gnu/lib"], "aarch64-linux-gnu-objcopy"),
            _ => bail!("no image for target {}: only x86_64 and aarch64 (Linux, glibc)", target.unwrap_or(arch)),
        };
        Ok(platform)
    }

    fn new(oci_arch: &'static str, triplet: &'static str, elf_arch: object::Architecture, host_lib_dirs: &'static [&'static str], objcopy: &'static str) -> Platform {
        Platform { oci_arch, triplet, elf_arch, host_lib_dirs, objcopy }
    }
}

/// `cargo xtask image`: builds oxeye in release mode and writes the image archive.
pub fn run(args: &ImageArgs) -> Result<()> {
    let platform = Platform::of(args.target.as_deref())?;
    let binary = build::run(&BuildArgs { release: true, target: args.target.clone() })?;
    let epoch = source_date_epoch()?;
    let work = root().join("target/image");
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    let stripped = work.join(format!("oxeye-{}.stripped", platform.oci_arch));
    say(format!("stripping the debug sections into {}", stripped.display()));
    shell::run(Command::new(platform.objcopy).arg("--strip-debug").arg(&binary).arg(&stripped))?;
    let oxeye = fs::read(&stripped).with_context(|| format!("cannot read {}", stripped.display()))?;

    let rootfs = layer::rootfs(oxeye, &platform)?;
    let layer = layer::Layer::pack(&rootfs, epoch)?;
    // xtask shares the workspace's version with oxeye.
    let version = env!("CARGO_PKG_VERSION");
    let image = layout::Image { version, platform: &platform, epoch };
    let archive = layout::archive(&image, &layer)?;

    let output = args.output.clone().unwrap_or_else(|| work.join(format!("oxeye-{}.oci.tar", platform.oci_arch)));
    write_atomically(&output, &archive)?;
    say(format!(
        "wrote {} ({:.1} MB; image oxeye:{version}, {} files, layer {:.1} MB compressed, {:.1} MB unpacked); load it with `podman load -i {}`",
        output.display(),
        mb(archive.len()),
        rootfs.len(),
        mb(layer.gzip.len()),
        mb(layer.tar_len),
        output.display()
    ));
    Ok(())
}

/// `SOURCE_DATE_EPOCH` (seconds), or 0: the date of every file and of the image.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, so that no half-written
/// archive is ever left under the final name.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, bytes).with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}
