//! `cargo xtask build`: the oxeye binary with its BPF object embedded (agent/build.rs builds
//! the object from agent-ebpf/ whenever it changed).

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{
    setup,
    shell::{self, root, say},
};

/// Debian's rustc, which has an arm64 standard library in `libstd-rust-web-dev:arm64`.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// Flags of `cargo xtask build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Build with optimizations (target/release/oxeye).
    #[arg(long)]
    pub release: bool,
    /// Cross-build for this target, e.g. aarch64-unknown-linux-gnu.
    #[arg(long)]
    pub target: Option<String>,
}

/// Builds oxeye; returns the path of the binary.
pub fn run(args: &BuildArgs) -> Result<PathBuf> {
    setup::ensure_build_tools()?;
    let mut cargo = Command::new(setup::cargo());
    cargo.current_dir(root()).args(["build", "--package", "oxeye"]);
    if args.release {
        cargo.arg("--release");
    }
    let mut binary = root().join("target");
    if let Some(target) = &args.target {
        if target.starts_with("aarch64") {
            setup::ensure_aarch64()?;
        }
        // rustup's toolchains here have no arm64 standard library; Debian's rustc does.
        cargo.args(["--target", target]).env("RUSTC", DEBIAN_RUSTC);
        binary.push(target);
    }
    binary.push(if args.release { "release" } else { "debug" });
    binary.push("oxeye");
    say(format!("building {}", binary.display()));
    shell::run(&mut cargo)?;
    Ok(binary)
}

/// Builds `package` in release mode (cross-built for `target` with Debian's rustc) and returns
/// the path of its binary `binary`.
pub fn package(package: &str, binary: &str, target: Option<&str>) -> Result<PathBuf> {
    let mut cargo = Command::new(setup::cargo());
    cargo.current_dir(root()).args(["build", "--release", "--package", package]);
    let mut path = root().join("target");
    if let Some(target) = target {
        cargo.args(["--target", target]).env("RUSTC", DEBIAN_RUSTC);
        path.push(target);
    }
    path.push("release");
    path.push(binary);
    say(format!("building {}", path.display()));
    shell::run(&mut cargo)?;
    Ok(path)
}
