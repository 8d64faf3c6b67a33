//! Where the cost of HTTP tracing sits, side by side in one run, against the same nginx:
//!
//! - the payload hooks: socket tracepoints against syscall tracepoints (`--payload-hooks`),
//!   both exporting to the local receiver;
//! - the export: the socket tracepoints writing local files only, with no collector;
//! - a traced process's file I/O (64-byte reads from `/dev/zero` and writes to `/dev/null`, in
//!   this process, for a fixed wall time), which the syscall tracepoints run for and the socket
//!   tracepoints do not.
//!
//! Each configuration runs once per round, in an order that rotates with the round; medians
//! over rounds are printed.

use std::{
    fs::File,
    io::{Read, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    oxeye::Oxeye,
    process::process_cpu_ns,
    wrk::{wrk, WARM_UP_SECONDS},
};
use crate::bench::{median, sink};

/// Seconds of wrk per run (shorter than the main comparison: four configurations a round).
const WRK_SECONDS: u32 = 5;
/// Wall time of each file-I/O run.
const FILE_IO_TIME: Duration = Duration::from_secs(3);

/// An oxeye configuration, or none.
#[derive(Clone, Copy, PartialEq)]
enum Config {
    Without,
    SocketHooks,
    SyscallHooks,
    SocketHooksLocal,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Without => "without oxeye",
            Config::SocketHooks => "socket tracepoints, exporting",
            Config::SyscallHooks => "syscall tracepoints, exporting",
            Config::SocketHooksLocal => "socket tracepoints, local files only",
        }
    }

    fn start(self, oxeye: &Path, work_dir: &Path, sink: &sink::SinkProcess) -> Result<Option<Oxeye>> {
        let agent = match self {
            Config::Without => return Ok(None),
            Config::SocketHooks => Oxeye::start_with(oxeye, work_dir, Some(sink), &[])?,
            Config::SyscallHooks => Oxeye::start_with(oxeye, work_dir, Some(sink), &["--payload-hooks", "syscalls"])?,
            Config::SocketHooksLocal => Oxeye::start_with(oxeye, work_dir, None, &[])?,
        };
        Ok(Some(agent))
    }
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Run {
    /// Requests a second (nginx) or read+write pairs a second (file I/O).
    rate: f64,
    /// oxeye's CPU per request, µs (NaN without it).
    oxeye_us: f64,
    /// The receiver's CPU per request, µs.
    receiver_us: f64,
}

/// Runs the comparison against nginx at `url` and prints it.
pub(super) fn compare(oxeye: &Path, wrk_bin: &Path, url: &str, work_dir: &Path, sink: &sink::SinkProcess, rounds: usize) -> Result<()> {
    let configs = [Config::Without, Config::SocketHooks, Config::SyscallHooks, Config::SocketHooksLocal];
    let mut nginx: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
    let mut file_io: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for step in 0..configs.len() {
            let index = (round + step) % configs.len();
            let agent = configs[index].start(oxeye, work_dir, sink)?;
            let agent_before = match &agent {
                Some(agent) => agent.settle(|| Ok(wrk(wrk_bin, url, 16, WARM_UP_SECONDS)?.requests))?.cpu_ns,
                None => 0,
            };
            let receiver_before = process_cpu_ns(sink.pid());
            let result = wrk(wrk_bin, url, 16, WRK_SECONDS)?;
            let per_request = |ns: u64| ns as f64 / 1e3 / result.requests.max(1) as f64;
            let receiver_us = per_request(process_cpu_ns(sink.pid()) - receiver_before);
            let oxeye_us = agent.as_ref().map_or(f64::NAN, |a| per_request(process_cpu_ns(a.pid()) - agent_before));
            // The file-I/O runs need no receiver: the same agent, before it stops.
            if index < 3 {
                file_io[index].push(file_io_rate()?);
            }
            if let Some(agent) = agent {
                agent.stop()?;
            }
            eprintln!(
                "    round {}: {:<38} {:>9.0} req/s  oxeye {:>5.2} µs/req  receiver {:>5.2} µs/req{}",
                round + 1,
                configs[index].name(),
                result.requests_per_second,
                oxeye_us,
                receiver_us,
                file_io[..].get(index).and_then(|runs| runs.last()).map_or(String::new(), |rate| format!("  file I/O {rate:.0} pairs/s")),
            );
            nginx[index].push(Run { rate: result.requests_per_second, oxeye_us, receiver_us });
        }
    }
    print_summary(&configs, &nginx, &file_io, rounds);
    Ok(())
}

/// 64-byte reads from `/dev/zero` and writes to `/dev/null` for [`FILE_IO_TIME`]: pairs a
/// second.
fn file_io_rate() -> Result<f64> {
    let mut zero = File::open("/dev/zero").context("cannot open /dev/zero")?;
    let mut null = File::options().write(true).open("/dev/null").context("cannot open /dev/null")?;
    let mut buffer = [0u8; 64];
    let started = Instant::now();
    let mut pairs = 0u64;
    while started.elapsed() < FILE_IO_TIME {
        for _ in 0..1000 {
            zero.read_exact(&mut buffer)?;
            null.write_all(&buffer)?;
        }
        pairs += 1000;
    }
    Ok(pairs as f64 / started.elapsed().as_secs_f64())
}

fn print_summary(configs: &[Config], nginx: &[Vec<Run>], file_io: &[Vec<f64>], rounds: usize) {
    let med = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let base = med(&nginx[0], |r| r.rate);
    println!("\nWhere HTTP tracing's cost sits: nginx under wrk -t1 -c16 -d{WRK_SECONDS}s, and a traced process's 64-byte file reads and writes, medians of {rounds} rounds");
    println!("  {:<38} {:>10} {:>8} {:>14} {:>16} {:>16} {:>8}", "", "req/s", "ratio", "oxeye µs/req", "receiver µs/req", "file I/O pairs/s", "ratio");
    let file_base = median(file_io[0].clone());
    for (index, config) in configs.iter().enumerate() {
        let rate = med(&nginx[index], |r| r.rate);
        let (file_rate, file_ratio) = match file_io.get(index) {
            Some(runs) => {
                let rate = median(runs.clone());
                (format!("{rate:.0}"), format!("{:.3}", rate / file_base))
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "  {:<38} {:>10.0} {:>8.3} {:>14.2} {:>16.2} {:>16} {:>8}",
            config.name(),
            rate,
            rate / base,
            med(&nginx[index], |r| r.oxeye_us),
            med(&nginx[index], |r| r.receiver_us),
            file_rate,
            file_ratio
        );
    }
}
