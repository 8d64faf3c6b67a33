//! Debian packages for the guests (kernels, busybox, bpftool and its libraries), downloaded
//! with `apt-get download` and unpacked with `dpkg-deb -x`, once: they stay in the cache
//! directory across runs and clones.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    setup,
    shell::{self, say},
};

/// The cache: `$XDG_CACHE_HOME/oxeye-vm` or `~/.cache/oxeye-vm`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
    });
    base.join("oxeye-vm")
}

/// The concrete package a metapackage depends on for `arch` (e.g. `linux-image-arm64` →
/// `linux-image-6.1.0-56-arm64`), checked against the version the matrix expects.
pub fn resolve_kernel(metapackage: &str, arch: &str, version_prefix: &str) -> Result<String> {
    setup::ensure_dpkg_architecture(arch)?;
    let spec = format!("{metapackage}:{arch}");
    let depends = match shell::output("apt-cache", &["depends", "--important", &spec]) {
        Some(text) if text.contains("Depends:") => text,
        _ => {
            apt_update()?;
            shell::output("apt-cache", &["depends", "--important", &spec]).with_context(|| format!("apt-cache knows no package {spec}"))?
        }
    };
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(|dep| dep.split(':').next().unwrap_or(dep).trim())
        .find(|dep| dep.starts_with("linux-image-"))
        .with_context(|| format!("{spec} depends on no linux-image package:\n{depends}"))?
        .to_owned();
    let version = package.trim_start_matches("linux-image-");
    if !version.starts_with(version_prefix) {
        bail!("{spec} now means {package}, not a {version_prefix}x kernel: update the matrix in xtask/src/vm/kernels.rs");
    }
    Ok(package)
}

/// Downloads (once) and unpacks (once) `package` for `arch`; returns the directory it was
/// unpacked into.
pub fn unpacked(package: &str, arch: &str) -> Result<PathBuf> {
    let root = cache_dir();
    let dir = root.join("unpacked").join(format!("{package}_{arch}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    let deb = download(package, arch)?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    shell::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    fs::write(dir.join(".complete"), b"")?;
    Ok(dir)
}

/// The cached `.deb` of `package` for `arch`, downloaded if missing.
fn download(package: &str, arch: &str) -> Result<PathBuf> {
    setup::ensure_dpkg_architecture(arch)?;
    let debs = cache_dir().join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;
    if let Some(deb) = find_deb(&debs, package, arch)? {
        return Ok(deb);
    }
    say(format!("downloading {package}:{arch}"));
    let fetch = || Command::new("apt-get").current_dir(&debs).args(["download", "-q"]).arg(format!("{package}:{arch}")).status();
    if !fetch().is_ok_and(|status| status.success()) {
        apt_update()?;
        let status = fetch().context("cannot run apt-get download")?;
        if !status.success() {
            bail!("apt-get download {package}:{arch} failed ({status}); is the {arch} architecture enabled (dpkg --add-architecture {arch})?");
        }
    }
    find_deb(&debs, package, arch)?.with_context(|| format!("apt-get download {package}:{arch} wrote no .deb"))
}

fn find_deb(debs: &Path, package: &str, arch: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let suffix = format!("_{arch}.deb");
    for entry in fs::read_dir(debs).with_context(|| format!("cannot read {}", debs.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(&suffix) {
            return Ok(Some(debs.join(name)));
        }
    }
    Ok(None)
}

fn apt_update() -> Result<()> {
    say("apt-get update");
    setup::apt_update()
}
