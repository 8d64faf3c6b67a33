//! `cargo xtask`: oxeye's build, run, test and benchmark commands. Each installs what it
//! needs first (Debian packages, bpf-linker), says what it does, and is quick when everything
//! is already there.

mod bench;
mod build;
mod image;
mod setup;
mod shell;
mod slow_cpu;
mod test;
mod vm;

// The host tests' checks, shared as source (they use only std) so the VM scenarios pass the
// same assertions.
#[path = "../../tests/src/checks.rs"]
mod checks;
#[path = "../../tests/src/folded.rs"]
#[allow(dead_code)]
mod folded;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run, test and benchmark oxeye")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain and test tools that are missing.
    Setup(setup::SetupArgs),
    /// Build the oxeye binary (with its BPF object embedded).
    Build(build::BuildArgs),
    /// Build oxeye in release mode and write a minimal OCI image archive of it (no shell, no
    /// registry needed): `podman load -i target/image/oxeye-amd64.oci.tar`.
    Image(image::ImageArgs),
    /// Build oxeye in release mode and run it with the given arguments (as root).
    Run {
        /// Arguments for oxeye, e.g. `-- --duration 10`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests, end-to-end tests with the real BPF programs, and the
    /// scenarios on other kernels and arm64 under qemu (as `vm-test`).
    Test {
        /// Only run end-to-end tests whose name contains this (no VMs then).
        filter: Option<String>,
        /// Skip the VMs.
        #[arg(long)]
        no_vm: bool,
        /// Run the end-to-end tests (and everything they start) as on a CPU this many times
        /// slower: in a cgroup with this machine's CPUs divided by FACTOR as quota. No VMs then.
        #[arg(long, value_name = "FACTOR")]
        slow_cpu: Option<f64>,
    },
    /// Measure oxeye's overhead against running without it and against `perf record`.
    Bench(bench::BenchArgs),
    /// Run the scenarios on other kernels and on arm64 under qemu, and on this kernel.
    VmTest(vm::VmTestArgs),
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Build(args) => build::run(&args).map(drop),
        Command::Image(args) => image::run(&args),
        Command::Run { args } => {
            setup::ensure_build_tools()?;
            let binary = build::run(&build::BuildArgs { release: true, target: None })?;
            shell::exec_as_root(&binary, &args)
        }
        Command::Test { filter, no_vm, slow_cpu } => test::run(filter.as_deref(), !no_vm && slow_cpu.is_none(), slow_cpu),
        Command::Bench(args) => bench::run(&args),
        Command::VmTest(args) => vm::run(&args),
    }
}
