//! `cargo xtask`: oxeye's build, run, test and benchmark commands. Each installs what it
//! needs first (Debian packages, bpf-linker), says what it does, and is quick when everything
//! is already there.

mod bench;
mod build;
mod setup;
mod shell;
mod test;

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
    /// Build oxeye in release mode and run it with the given arguments (as root).
    Run {
        /// Arguments for oxeye, e.g. `-- --duration 10`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and end-to-end tests with the real BPF programs.
    Test {
        /// Only run end-to-end tests whose name contains this.
        filter: Option<String>,
    },
    /// Measure oxeye's overhead against running without it and against `perf record`.
    Bench(bench::BenchArgs),
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
        Command::Run { args } => {
            setup::ensure_build_tools()?;
            let binary = build::run(&build::BuildArgs { release: true, target: None })?;
            shell::exec_as_root(&binary, &args)
        }
        Command::Test { filter } => test::run(filter.as_deref()),
        Command::Bench(args) => bench::run(&args),
    }
}
