//! HTTP tracing overhead, measured side by side in one run:
//! - nginx (one worker, a ~600-byte static page) under `wrk -t1 -c16 -d8s` on loopback, without
//!   oxeye and with oxeye tracing every request and exporting spans, metrics and profiles to the
//!   local OTLP receiver: throughput, p99 latency, oxeye's CPU per 1,000 requests, and how many
//!   of the requests wrk sent oxeye traced;
//! - the same nginx with the payload hooks compared (socket against syscall tracepoints), with
//!   and without exporting, and a traced process's file I/O under each (see `hooks`);
//! - the same nginx under `ab -c32` without keep-alive, a new connection per request (see
//!   `connections`);
//! - a Flask app (served by waitress, 4 threads) under `wrk -t1 -c8 -d8s`, as in the Beyla talk:
//!   uninstrumented, under the OpenTelemetry Python SDK's auto-instrumentation (exporting to the
//!   same receiver), and uninstrumented with oxeye running.
//!
//! Configurations alternate within a round and medians over rounds are printed (this machine
//! is small and noisy). CPU times come from utime + stime in /proc/PID/stat, which include
//! threads that have exited; the BPF programs run in the traced processes' context, so their
//! cost shows up in the servers' CPU, not in oxeye's.
//!
//! The parts: `nginx` and `flask` run one comparison each against their server; `wrk` drives
//! and reads the load generator, `oxeye` starts and stops the agent under test, `server` and
//! `process` are what both comparisons do to the processes they start.

mod connections;
mod flask;
mod hooks;
mod nginx;
mod oxeye;
mod process;
mod server;
mod wrk;

use std::path::Path;

use anyhow::Result;

use process::find_program;
use super::sink;

/// Runs both HTTP comparisons and prints their figures.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    let missing = || anyhow::anyhow!("the HTTP benchmark needs nginx and wrk: run `cargo xtask setup --bench`");
    let nginx = find_program("nginx").ok_or_else(missing)?;
    let wrk = find_program("wrk").ok_or_else(missing)?;
    let sink = sink::SinkProcess::start(&sink::build()?, work_dir)?;
    let ab = find_program("ab").ok_or_else(missing)?;
    nginx::overhead(oxeye, &nginx, &wrk, &ab, work_dir, &sink, rounds.max(5))?;
    flask::comparison(oxeye, &wrk, work_dir, &sink, (rounds * 3 / 5).max(3))
}
