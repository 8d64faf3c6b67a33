//! What runs inside a guest, built for its architecture: oxeye, the OTLP receiver, the
//! workloads, and busybox and bpftool from Debian; and the libraries they need.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{arch::Arch, debian};
use crate::{
    build::{self, BuildArgs, DEBIAN_RUSTC},
    setup,
    shell::{self, root, say},
};

/// The guest's programs, gathered in one directory, and where their libraries are found.
pub struct GuestFiles {
    /// oxeye, otlp-sink, busybox, bpftool and the workloads.
    pub bin_dir: PathBuf,
    /// Directories to look for shared libraries in, first match wins.
    pub lib_dirs: Vec<PathBuf>,
}

/// Workloads: (binary name, source, compiler flags, only for this architecture). The names
/// are the process names the checks look for.
const WORKLOADS: &[(&str, &str, &[&str], Option<Arch>)] = &[
    // -O0: GCC 12 drops leaf functions' frame pointers at -O1 and above.
    ("chain", "chain.c", &["-O0", "-fno-omit-frame-pointer", "-fno-inline"], None),
    ("chain-nofp", "chain.c", &["-O2", "-fomit-frame-pointer"], None),
    ("chain-rs", "chain.rs", &["-O", "-C", "force-frame-pointers=no"], None),
    ("syscalls", "syscalls.c", &["-O0", "-fno-omit-frame-pointer", "-fno-inline"], None),
    // Runs a program as a user with given capabilities (the least-privilege sessions).
    ("with-caps", "with_caps.c", &["-O1"], None),
    // Return addresses signed with pointer authentication (the arm64 guest's CPU has it): in
    // frame records, and described by DW_CFA_AARCH64_negate_ra_state in the unwind tables.
    ("chain-pac", "chain.c", &["-O0", "-fno-omit-frame-pointer", "-fno-inline", "-mbranch-protection=pac-ret+leaf"], Some(Arch::Aarch64)),
    ("chain-pac-nofp", "chain.c", &["-O2", "-fomit-frame-pointer", "-mbranch-protection=pac-ret"], Some(Arch::Aarch64)),
    ("pac-probe", "pac_probe.c", &["-O0", "-fno-omit-frame-pointer", "-mbranch-protection=pac-ret+leaf"], Some(Arch::Aarch64)),
];

/// Builds (or reuses) everything a guest of `arch` runs.
pub fn prepare(arch: Arch) -> Result<GuestFiles> {
    let bin_dir = root().join("target/vm").join(arch.name()).join("bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("cannot create {}", bin_dir.display()))?;

    let target = (arch != Arch::HOST).then(|| arch.rust_target().to_owned());
    let oxeye = build::run(&BuildArgs { release: true, target: target.clone() })?;
    install_stripped(arch, &oxeye, &bin_dir.join("oxeye"))?;
    let sink = build::package("otlp-sink", "otlp-sink", target.as_deref())?;
    install_stripped(arch, &sink, &bin_dir.join("otlp-sink"))?;

    for (name, source, flags, only) in WORKLOADS {
        if only.is_none_or(|only| only == arch) {
            compile_workload(arch, source, flags, &bin_dir.join(name))?;
        }
    }

    let mut lib_dirs = Vec::new();
    let busybox = debian::unpacked("busybox-static", arch.debian())?;
    copy(&busybox.join("bin/busybox"), &bin_dir.join("busybox"))?;
    let bpftool = debian::unpacked("bpftool", arch.debian())?;
    copy(&bpftool.join("usr/sbin/bpftool"), &bin_dir.join("bpftool"))?;
    for library in ["libcap2", "libelf1", "zlib1g"] {
        let dir = debian::unpacked(library, arch.debian())?;
        for sub in ["lib", "usr/lib"] {
            lib_dirs.push(dir.join(sub).join(format!("{}-linux-gnu", arch.name())));
        }
    }
    lib_dirs.extend(arch.lib_dirs());
    Ok(GuestFiles { bin_dir, lib_dirs })
}

/// Copies a binary without its debug information (oxeye's is mostly DWARF: the initramfs
/// stays small and boots faster).
fn install_stripped(arch: Arch, from: &Path, to: &Path) -> Result<()> {
    let objcopy = format!("{}objcopy", arch.tool_prefix());
    shell::run(Command::new(&objcopy).arg("--strip-debug").arg(from).arg(to))
}

/// Compiles one workload for `arch` when its source is newer than the binary.
fn compile_workload(arch: Arch, source: &str, flags: &[&str], binary: &Path) -> Result<()> {
    let path = root().join("tests/workloads").join(source);
    let fresh = fs::metadata(binary).and_then(|b| Ok(b.modified()? >= fs::metadata(&path)?.modified()?)).unwrap_or(false);
    if fresh {
        return Ok(());
    }
    let mut command = if source.ends_with(".rs") {
        let mut rustc = Command::new(DEBIAN_RUSTC);
        rustc.args(["--target", arch.rust_target()]);
        if arch != Arch::HOST {
            rustc.arg(format!("-Clinker={}gcc", arch.tool_prefix()));
        }
        rustc
    } else {
        Command::new(format!("{}gcc", arch.tool_prefix()))
    };
    say(format!("compiling {source} for {} as {}", arch.name(), binary.display()));
    shell::run(command.args(flags).arg("-o").arg(binary).arg(&path))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Makes sure the tools for building and booting `arch` guests are installed.
pub fn ensure_tools(arch: Arch) -> Result<()> {
    setup::ensure_build_tools()?;
    setup::ensure_vm_tools()?;
    if arch == Arch::Aarch64 {
        setup::ensure_aarch64()?;
    }
    Ok(())
}
