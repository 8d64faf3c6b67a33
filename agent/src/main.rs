//! `oxeye`: a whole-system eBPF CPU profiler. See README.md for usage.

mod bpf;
mod cli;
mod clock;
mod collector;
mod containers;
mod debug_sources;
mod debuginfod;
mod events;
mod export;
mod http_server;
mod jit;
mod links;
mod live;
mod metrics;
mod net;
mod objects;
mod off_cpu;
mod otlp;
mod output;
mod pipeline;
mod privileges;
mod process;
mod python;
mod profile;
mod run;
mod symbolize;
mod source_frames;
mod symbols;
mod top;
mod unwind;
mod vdso;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Errors about processes that exited are routine (thousands a second in an exec storm);
    // with RUST_BACKTRACE=1 each would capture a backtrace. Panics still print theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // No other thread exists yet to read the environment meanwhile.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let args = cli::Args::parse();
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();

    // One thread is plenty: the work per sample is small and a second thread would only add
    // overhead to the host being profiled.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("oxeye: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` puts the whole chain of causes on one line.
            eprintln!("oxeye: {error:#}");
            ExitCode::FAILURE
        }
    }
}
