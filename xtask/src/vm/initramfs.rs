//! Packing a guest's initramfs: busybox as `/bin/sh` and every applet, `/init`, the guest's
//! programs under `/oxeye`, and the shared libraries they need (found with `readelf`).

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::guest::GuestFiles;

/// The guest's `/init`.
const INIT: &str = include_str!("init.sh");
/// The scenarios, run by `/init` (and directly on the host).
pub const SCENARIOS: &str = include_str!("scenarios.sh");

/// Builds `dir/initramfs.cpio` (uncompressed: the guest unpacks it faster than it could
/// gunzip it under emulation) from `files`; returns its path.
pub fn build(files: &GuestFiles, dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("root");
    let _ = fs::remove_dir_all(&tree);
    for sub in ["bin", "lib", "oxeye", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(tree.join(sub)).with_context(|| format!("cannot create {}", tree.join(sub).display()))?;
    }
    fs::copy(files.bin_dir.join("busybox"), tree.join("bin/busybox")).context("cannot copy busybox")?;
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh"))?;
    write_executable(&tree.join("init"), INIT)?;
    write_executable(&tree.join("oxeye/scenarios.sh"), SCENARIOS)?;

    let mut needed = BTreeSet::new();
    let mut interpreters = BTreeSet::new();
    for entry in fs::read_dir(&files.bin_dir)? {
        let path = entry?.path();
        let to = tree.join("oxeye").join(path.file_name().context("a file in bin/ has no name")?);
        fs::copy(&path, &to).with_context(|| format!("cannot copy {}", path.display()))?;
        if let Some(interpreter) = interpreter(&path)? {
            interpreters.insert(interpreter);
        }
        needed.extend(needed_libraries(&path)?);
    }
    // Libraries' own dependencies, until nothing new turns up.
    let mut copied = BTreeSet::new();
    while let Some(name) = needed.iter().find(|name| !copied.contains(*name)).cloned() {
        let source = find_library(&files.lib_dirs, &name)?;
        fs::copy(&source, tree.join("lib").join(&name)).with_context(|| format!("cannot copy {}", source.display()))?;
        needed.extend(needed_libraries(&source)?);
        copied.insert(name);
    }
    for interpreter in interpreters {
        let name = Path::new(&interpreter).file_name().context("interpreter path has no file name")?;
        let source = find_library(&files.lib_dirs, &name.to_string_lossy())?;
        let target = tree.join(interpreter.trim_start_matches('/'));
        fs::create_dir_all(target.parent().context("interpreter path has no directory")?)?;
        fs::copy(&source, &target).with_context(|| format!("cannot copy {}", source.display()))?;
    }

    let cpio = dir.join("initramfs.cpio");
    let output = fs::File::create(&cpio).with_context(|| format!("cannot create {}", cpio.display()))?;
    let mut find = Command::new("find").arg(".").current_dir(&tree).stdout(Stdio::piped()).spawn().context("cannot run find")?;
    let status = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&tree)
        .stdin(find.stdout.take().context("find has no stdout")?)
        .stdout(output)
        .status()
        .context("cannot run cpio (apt-get install cpio)")?;
    if !status.success() || !find.wait()?.success() {
        bail!("packing {} failed", cpio.display());
    }
    Ok(cpio)
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The `DT_NEEDED` libraries of an ELF file (none for a static one or a script).
fn needed_libraries(path: &Path) -> Result<Vec<String>> {
    let text = readelf(&["-d"], path)?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once("Shared library: [").and_then(|(_, rest)| rest.split_once(']')).map(|(name, _)| name.to_owned()))
        .collect())
}

/// The program interpreter (`/lib/ld-linux-aarch64.so.1`) of an ELF executable, if dynamic.
fn interpreter(path: &Path) -> Result<Option<String>> {
    let text = readelf(&["-l"], path)?;
    Ok(text
        .lines()
        .find_map(|line| line.split_once("Requesting program interpreter: ").and_then(|(_, rest)| rest.split_once(']')).map(|(p, _)| p.to_owned())))
}

fn readelf(args: &[&str], path: &Path) -> Result<String> {
    // GNU readelf reads ELF files of every architecture.
    let output = Command::new("readelf").args(args).arg("-W").arg(path).output().context("cannot run readelf (apt-get install binutils)")?;
    if !output.status.success() {
        bail!("readelf {} failed: {}", path.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn find_library(dirs: &[PathBuf], name: &str) -> Result<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.exists())
        .with_context(|| format!("library {name} is in none of {dirs:?}"))
        .map(|path| fs::canonicalize(&path).unwrap_or(path))
}
