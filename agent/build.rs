//! Builds the BPF programs in `agent-ebpf/` and hands the object to the agent, which embeds it.
//!
//! Runs whenever `agent-ebpf/` or `agent-common/` change, so the embedded object is never
//! stale. Two toolchains work:
//! - Debian's `rustc-web` + `rust-web-src` (`/usr/bin/rustc`, core sources in
//!   `/usr/lib/rustlib/src`): the default when present; `cargo xtask setup` installs them.
//! - rustup's nightly with `rust-src`: used when Debian's is absent, or when
//!   `OXEYE_BPF_TOOLCHAIN=nightly`.
//!
//! Both need `bpf-linker` on `PATH`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("agent/ lives in the workspace root").to_owned();
    for watched in ["agent-ebpf/src", "agent-ebpf/Cargo.toml", "agent-common/src", "agent-common/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=OXEYE_BPF_TOOLCHAIN");

    // The BPF programs read registers through aya-ebpf's per-architecture accessors.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let target_dir = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let bpf_target_dir = target_dir.join(format!("bpf-{arch}"));

    let mut cargo = bpf_cargo();
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--package", "agent-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--ignore-rust-version", "--target-dir"])
        .arg(&bpf_target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", format!("-Cdebuginfo=2\x1f-Ctarget-cpu=v3\x1f-Clink-arg=--btf\x1f--cfg=bpf_target_arch=\"{arch}\""));
    // Nothing of the outer build may leak into the BPF build.
    for var in [
        "RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS", "CARGO_PROFILE_RELEASE_LTO", "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS",
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        cargo.env_remove(var);
    }
    add_cargo_bin_to_path(&mut cargo);

    let output = cargo.output().unwrap_or_else(|error| panic!("cannot run cargo for the BPF build: {error}"));
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        panic!(
            "building the BPF programs failed (see the warnings above). \
             Run `cargo xtask setup` to install the toolchain (Debian's rustc-web, rust-web-src, llvm-22-dev and bpf-linker)."
        );
    }
    let object = bpf_target_dir.join("bpfel-unknown-none/release/oxeye");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("oxeye.bpf.o");
    std::fs::copy(&object, &out).unwrap_or_else(|error| panic!("cannot copy {}: {error}", object.display()));
}

/// The cargo command for the BPF build, with the toolchain chosen as the module docs say.
fn bpf_cargo() -> Command {
    let wants_nightly = env::var("OXEYE_BPF_TOOLCHAIN").is_ok_and(|t| t == "nightly");
    let has_debian = Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_RUST_SRC).exists();
    if has_debian && !wants_nightly {
        let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
        cargo
    } else {
        let mut cargo = Command::new("rustup");
        cargo.args(["run", "nightly", "cargo"]).env_remove("RUSTC").env_remove("CARGO");
        cargo
    }
}

/// `cargo install` puts bpf-linker in `$CARGO_HOME/bin`, which may not be on `PATH` under sudo.
fn add_cargo_bin_to_path(cargo: &mut Command) {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(bin) = cargo_home.map(|home| home.join("bin")) {
        let mut paths: Vec<PathBuf> = env::var_os("PATH").map(|p| env::split_paths(&p).collect()).unwrap_or_default();
        if !paths.contains(&bin) {
            paths.push(bin);
        }
        if let Ok(joined) = env::join_paths(paths) {
            cargo.env("PATH", joined);
        }
    }
}
