//! Installs what building, testing and benchmarking need, if it is missing.
//!
//! The BPF toolchain follows the recipe verified on this project's machines: Debian's
//! `rustc-web` and `rust-web-src` (a rustc with core sources for `-Z build-std`),
//! `llvm-22-dev`, and `bpf-linker` 0.13 built against LLVM 22. A user with rustup's nightly and
//! `rust-src` plus a `bpf-linker` on `PATH` needs none of the Debian packages.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};

use crate::shell::{self, root_command, say};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Packages for building the BPF programs with Debian's toolchain.
const BUILD_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "llvm-22-dev"];
/// Packages the tests use: C and C++ compilers for the workloads, bpftool to check nothing is left
/// in the kernel, setpriv to run unprivileged, protoc + Python protobuf + pprof's own
/// `profile.proto` to read the pprof output with a reader that is not ours (and the symbfile
/// decoder, with a venv for zstandard from PyPI); binutils' nm and addr2line to check the
/// symbol endpoint; nginx, wrk, curl (and ab, which sends an exact number of requests) and
/// Prometheus as the real servers, clients and scraper of the network tracing tests; Node.js and
/// the JDK for JIT code; Go for stripped Go binaries; libc6-dbg and elfutils' debuginfod for
/// separate debug files; podman and runc to load and run the OCI image, and qemu-user-static to
/// run the arm64 image's binary; containerd (with ctr) to run containers the way a kubelet does; setcap to give a copy of oxeye file capabilities.
const TEST_PACKAGES: &[&str] = &[
    "gcc",
    "g++",
    "bpftool",
    "util-linux",
    "protobuf-compiler",
    "python3-protobuf",
    "python3-venv",
    "golang-github-google-pprof-dev",
    "libc6-arm64-cross",
    "binutils",
    "nginx-light",
    "wrk",
    "apache2-utils",
    "curl",
    "prometheus",
    "nodejs",
    "openjdk-17-jdk-headless",
    "golang-go",
    "libc6-dbg",
    "xz-utils",
    "elfutils",
    "debuginfod",
    "podman",
    "runc",
    "qemu-user-static",
    "containerd",
    "libcap2-bin",
];
/// Python packages from PyPI the tests use, in their own venv ([`TEST_PYTHON`]), on top of
/// Debian's Python and its protobuf, as (pip's name, the module to import): zstandard for the
/// symbfile decoder; the Kubernetes client's models and PyYAML for the manifests' validator.
const TEST_PYPI_PACKAGES: &[(&str, &str)] = &[("zstandard", "zstandard"), ("kubernetes", "kubernetes"), ("PyYAML", "yaml")];
/// The tests' Python: a venv of Debian's `python3` that also sees Debian's packages.
pub const TEST_PYTHON: &str = "target/test-python";
/// Packages the benchmark uses: `perf` as the reference profiler; nginx and wrk for the HTTP
/// overhead runs; a Python venv for the OpenTelemetry SDK comparison; bpftool for the BPF
/// programs' run-time statistics.
const BENCH_PACKAGES: &[&str] = &["gcc", "g++", "linux-perf", "nginx-light", "wrk", "apache2-utils", "python3-venv", "bpftool"];
/// Packages for the VM tests: the emulators, cpio for the initramfs, and binutils for arm64
/// (to strip the guest's binaries).
const VM_PACKAGES: &[&str] = &["qemu-system-arm", "qemu-system-x86", "cpio", "binutils", "binutils-aarch64-linux-gnu"];
/// Packages for cross-building the agent for arm64.
const AARCH64_PACKAGES: &[&str] = &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "libstd-rust-web-dev:arm64"];

/// Flags of `cargo xtask setup`.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// Also install what the tests need.
    #[arg(long)]
    tests: bool,
    /// Also install what the benchmark needs.
    #[arg(long)]
    bench: bool,
    /// Also install the arm64 cross toolchain.
    #[arg(long)]
    aarch64: bool,
}

/// `cargo xtask setup`.
pub fn run(args: &SetupArgs) -> Result<()> {
    ensure_build_tools()?;
    if args.tests {
        ensure_test_tools()?;
    }
    if args.bench {
        ensure_bench_tools()?;
    }
    if args.aarch64 {
        ensure_aarch64()?;
    }
    say("setup complete");
    Ok(())
}

/// The BPF toolchain: Debian's rustc with core sources (unless rustup nightly has rust-src)
/// and bpf-linker.
pub fn ensure_build_tools() -> Result<()> {
    let nightly = nightly_has_rust_src();
    if !(nightly && bpf_linker().is_some()) {
        apt_install(BUILD_PACKAGES)?;
    }
    if bpf_linker().is_none() {
        say(format!("installing bpf-linker {BPF_LINKER_VERSION} for LLVM 22 (takes about 3 minutes, once)"));
        shell::run(
            Command::new(cargo())
                .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        )?;
        if bpf_linker().is_none() {
            bail!("bpf-linker was installed but is not on PATH or in $CARGO_HOME/bin");
        }
    }
    Ok(())
}

/// Go toolchains of the 1.20+ table layout, from Debian's bookworm-backports: the Go symbolizer's
/// tests check every installed toolchain (`/usr/lib/go-*`), Debian's own 1.19 among them.
const TEST_BACKPORTS_PACKAGES: &[&str] = &["golang-1.21-go", "golang-1.23-go"];
/// Where apt finds bookworm-backports, added if the machine lacks it.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/oxeye-backports.sources";

/// What the end-to-end tests need.
pub fn ensure_test_tools() -> Result<()> {
    apt_install(TEST_PACKAGES)?;
    if TEST_BACKPORTS_PACKAGES.iter().any(|p| !is_installed(p)) {
        // The source is taken away again afterwards: with it, apt also sees backports' versions of
        // packages a machine already has (this image's qemu-utils 10.0), and their Breaks make
        // later installs (the VM matrix's qemu-system 7.2) impossible to resolve.
        let added = ensure_backports()?;
        let installed = apt_install(TEST_BACKPORTS_PACKAGES);
        if added {
            remove_backports()?;
        }
        installed?;
    }
    ensure_test_python().map(drop)
}

/// The venv of [`TEST_PYTHON`] with [`TEST_PYPI_PACKAGES`]; returns its interpreter.
pub fn ensure_test_python() -> Result<PathBuf> {
    let venv = shell::root().join(TEST_PYTHON);
    let python = venv.join("bin/python3");
    let imports = TEST_PYPI_PACKAGES.iter().map(|&(_, module)| module).collect::<Vec<_>>().join(", ");
    if shell::output(&python, &["-c", &format!("import {imports}")]).is_some() {
        return Ok(python);
    }
    say(format!("creating the tests' Python venv in {} with {imports}", venv.display()));
    shell::run(Command::new("/usr/bin/python3").args(["-m", "venv", "--system-site-packages"]).arg(&venv))?;
    shell::run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(TEST_PYPI_PACKAGES.iter().map(|&(package, _)| package)))?;
    Ok(python)
}

/// What the benchmark needs.
pub fn ensure_bench_tools() -> Result<()> {
    apt_install(BENCH_PACKAGES)
}

/// What the VM tests need.
pub fn ensure_vm_tools() -> Result<()> {
    if Path::new(BACKPORTS_SOURCE).exists() {
        // Left by an earlier setup that stopped half-way; see ensure_test_tools.
        remove_backports()?;
    }
    apt_install(VM_PACKAGES)
}

/// The arm64 cross toolchain: Debian's arm64 Rust standard library for `/usr/bin/rustc`, and
/// the aarch64 GNU linker.
pub fn ensure_aarch64() -> Result<()> {
    ensure_dpkg_architecture("arm64")?;
    apt_install(AARCH64_PACKAGES)
}

/// Lets apt install and download packages of Debian architecture `arch` (`arm64`), so that
/// whatever needs them (the cross toolchain, the VM matrix's kernels and busybox) works on a
/// machine where nothing enabled it before.
pub fn ensure_dpkg_architecture(arch: &str) -> Result<()> {
    let native = shell::output("dpkg", &["--print-architecture"]).unwrap_or_default();
    let foreign = shell::output("dpkg", &["--print-foreign-architectures"]).unwrap_or_default();
    if native.trim() == arch || foreign.lines().any(|known| known.trim() == arch) {
        return Ok(());
    }
    say(format!("enabling {arch} packages (dpkg --add-architecture {arch})"));
    shell::run(root_command("dpkg").args(["--add-architecture", arch]))?;
    // The package lists must be read again to know the new architecture's packages.
    APT_UPDATED.store(false, Ordering::SeqCst);
    apt_update()
}

/// apt waits this long for a dpkg lock another apt holds (unattended-upgrades, a user's own
/// install) instead of failing at once.
const APT_WAIT_FOR_LOCK: [&str; 2] = ["-o", "DPkg::Lock::Timeout=900"];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs the packages that are not installed yet; says which.
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(format!("installing Debian packages: {}", missing.join(" ")));
    if !APT_UPDATED.load(Ordering::SeqCst) {
        apt_update()?;
    }
    shell::run(
        root_command("apt-get")
            .args(APT_WAIT_FOR_LOCK)
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Adds bookworm-backports to apt's sources unless some source already names it; says whether
/// it added it.
fn ensure_backports() -> Result<bool> {
    let named = ["/etc/apt/sources.list", "/etc/apt/sources.list.d"].iter().any(|path| {
        let text = match std::fs::read_dir(path) {
            Ok(dir) => dir.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect::<String>(),
            Err(_) => std::fs::read_to_string(path).unwrap_or_default(),
        };
        text.lines().any(|line| !line.trim_start().starts_with('#') && line.contains("bookworm-backports"))
    });
    if named {
        return Ok(false);
    }
    say(format!("adding Debian's bookworm-backports to apt's sources ({BACKPORTS_SOURCE})"));
    let source = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
    let mut tee = root_command("tee");
    tee.arg(BACKPORTS_SOURCE).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
    let mut child = tee.spawn().context("start tee")?;
    std::io::Write::write_all(&mut child.stdin.take().context("tee's stdin")?, source.as_bytes()).context("write the backports source")?;
    if !child.wait().context("wait for tee")?.success() {
        bail!("cannot write {BACKPORTS_SOURCE}");
    }
    apt_update().map(|()| true)
}

/// Takes away the source [`ensure_backports`] added, and reads the package lists again.
fn remove_backports() -> Result<()> {
    say(format!("removing {BACKPORTS_SOURCE} again"));
    shell::run(root_command("rm").args(["-f", BACKPORTS_SOURCE]))?;
    apt_update()
}

/// `apt-get update`, once per run unless the sources changed.
pub fn apt_update() -> Result<()> {
    shell::run(root_command("apt-get").args(APT_WAIT_FOR_LOCK).args(["update", "-qq"]))?;
    APT_UPDATED.store(true, Ordering::SeqCst);
    Ok(())
}

fn is_installed(package: &str) -> bool {
    shell::output("dpkg-query", &["-W", "-f=${Status}", package]).is_some_and(|status| status.contains("install ok installed"))
}

fn nightly_has_rust_src() -> bool {
    let Some(sysroot) = shell::output("rustup", &["run", "nightly", "rustc", "--print", "sysroot"]) else {
        return false;
    };
    Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core").exists()
}

/// The bpf-linker of the right version, on PATH or in `$CARGO_HOME/bin`.
fn bpf_linker() -> Option<PathBuf> {
    let candidates = [PathBuf::from("bpf-linker"), cargo_home().join("bin/bpf-linker")];
    candidates.into_iter().find(|linker| {
        shell::output(linker, &["--version"]).is_some_and(|version| version.contains(BPF_LINKER_VERSION))
    })
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"))
}

/// The cargo running us.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}
