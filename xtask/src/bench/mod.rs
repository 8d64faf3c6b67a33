//! `cargo xtask bench`: oxeye's overhead on a CPU-bound workload that keeps every CPU busy,
//! measured side by side in one run against no agent and against `perf record -F 99 -a -g`.
//!
//! Each round runs every configuration once (in rotating order); ratios are taken within a
//! round and the medians over rounds are printed, because this machine is small and noisy.
//! The agents' own CPU time leaves out the work done in the kernel on their behalf; for oxeye
//! the sampler's run time per sample comes from the kernel's BPF statistics, switched on for
//! the benchmark.
//!
//! Then the HTTP tracing overhead (`http`): nginx under wrk with and without oxeye, and a Flask
//! app uninstrumented, under the OpenTelemetry Python SDK and with oxeye; and the symbol
//! endpoint's cost (`symbols`); and the cost of off-CPU profiling on a context-switch-heavy
//! workload (`off_cpu`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

mod bpf_listing;
mod debug_files;
mod exec_storm;
mod go;
mod http;
mod off_cpu;
mod python;
mod sink;
mod symbols;
mod unwind;
mod unwinder;

use crate::{
    build::{self, BuildArgs},
    setup,
    shell::{root, say},
};

/// Flags of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Only the unwind-table figures (no workload runs).
    #[arg(long)]
    unwind_only: bool,
    /// Only the unwinder figures: BPF cost on deep stacks, completeness against
    /// `perf --call-graph dwarf`, time to make a new binary unwindable, and table memory.
    #[arg(long)]
    unwinder_only: bool,
    /// Only the HTTP tracing figures: nginx under wrk without and with oxeye, and a Flask app
    /// uninstrumented, under the OpenTelemetry Python SDK, and with oxeye.
    #[arg(long)]
    http_only: bool,
    /// Only the symbol endpoint figures: rustup's libLLVM, librustc_driver and libc served as
    /// devfiler fetches them, against `nm` on the same files.
    #[arg(long)]
    symbols_only: bool,
    /// Only the Python stack figures: BPF cost per sample and per Python frame, oxeye's CPU
    /// per 1,000 samples, the function table after 100,000 functions, and the throughput of a
    /// Python workload without and with oxeye.
    #[arg(long)]
    python_only: bool,
    /// Only the Go symbolization figures: time to read a ~100 MB Go binary's `.gopclntab` and
    /// compile its unwind table, and lookups against `go tool addr2line`.
    #[arg(long)]
    go_only: bool,
    /// Only the debug-file figures: libc completed from libc6-dbg and its DWARF indexed
    /// (against eu-addr2line), and debuginfod fetches (against debuginfod-find).
    #[arg(long)]
    debug_only: bool,
    /// Only the exec-storm figures: two loops of fork + exec of a 1 ms process, with no
    /// agent, oxeye and `perf record`: the storm's rate, the agents' CPU and memory, and how
    /// many of the short process's samples are whole.
    #[arg(long)]
    exec_only: bool,
    /// Only the off-CPU figures: pairs of threads ping-ponging a byte over pipes, one pair per
    /// CPU (about 100,000 context switches per second), with no agent and oxeye with
    /// `--off-cpu-threshold` 0.01, 1 and 0 (off): the workload's rate, oxeye's CPU, and the
    /// off-CPU BPF time per switch.
    #[arg(long)]
    off_cpu_only: bool,
    /// Rounds (each runs every configuration once); medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds the workload runs in each configuration.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Agent {
    None,
    Oxeye(u32),
    /// oxeye also exporting OTLP profiles to a local receiver.
    OxeyeExport(u32),
    Perf(u32),
}

impl Agent {
    /// Samples per second per CPU, for oxeye.
    fn rate(self) -> Option<u32> {
        match self {
            Agent::Oxeye(hz) | Agent::OxeyeExport(hz) => Some(hz),
            Agent::None | Agent::Perf(_) => None,
        }
    }

    fn label(self) -> String {
        match self {
            Agent::None => "no agent".into(),
            Agent::Oxeye(hz) => format!("oxeye -F {hz}"),
            Agent::OxeyeExport(hz) => format!("oxeye -F {hz} + OTLP export"),
            Agent::Perf(hz) => format!("perf record -F {hz} -a -g"),
        }
    }
}

/// One run of the workload under one agent.
struct Measurement {
    throughput: f64,
    /// Agent CPU seconds per wall second while the workload ran.
    agent_cpu: f64,
    /// Agent peak resident set, bytes.
    agent_peak_rss: u64,
    /// Of which the BPF maps oxeye memory-maps (unwind tables: fixed size, resident).
    agent_map_rss: u64,
    /// Nanoseconds the sampler BPF program ran per invocation (oxeye only).
    bpf_ns_per_sample: Option<f64>,
    /// Bytes the receiver read from the socket and samples it got (OTLP export only).
    export: Option<(u64, u64)>,
}

/// Turns on the kernel's BPF run-time statistics for the benchmark and restores the setting.
struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS).with_context(|| format!("cannot read {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("cannot enable {BPF_STATS}"))?;
        Ok(BpfStats { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.previous.trim());
    }
}

/// Runs the benchmark and prints the table.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.unwind_only {
        return unwind::run();
    }
    if args.go_only {
        setup::ensure_test_tools()?;
        return go::run(args.rounds);
    }
    setup::ensure_build_tools()?;
    setup::ensure_bench_tools()?;
    let oxeye = build::run(&BuildArgs { release: true, target: None })?;
    let burn = compile_burn()?;
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let agents = [Agent::None, Agent::Oxeye(20), Agent::Oxeye(99), Agent::OxeyeExport(99), Agent::Perf(99)];
    let work_dir = root().join("target/bench");
    fs::create_dir_all(&work_dir)?;
    let _stats = BpfStats::enable()?;
    if args.unwinder_only {
        unwinder::run(&oxeye, &work_dir, args.rounds)?;
        return unwind::run();
    }
    if args.http_only {
        return http::run(&oxeye, &work_dir, args.rounds);
    }
    if args.symbols_only {
        return symbols::run(&oxeye, &work_dir, args.rounds);
    }
    if args.python_only {
        return python::run(&oxeye, &work_dir, args.rounds, args.seconds);
    }
    if args.debug_only {
        setup::ensure_test_tools()?;
        return debug_files::run(&oxeye, &work_dir, args.rounds);
    }
    if args.exec_only {
        return exec_storm::run(&oxeye, &work_dir, args.rounds, args.seconds.max(10.0));
    }
    if args.off_cpu_only {
        return off_cpu::run(&oxeye, &work_dir, args.rounds, args.seconds);
    }
    let sink = sink::SinkProcess::start(&sink::build()?, &work_dir)?;

    say(format!("benchmark: {cpus} busy threads, {} s per run, {} rounds", args.seconds, args.rounds));
    let mut results: Vec<Vec<Measurement>> = agents.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for offset in 0..agents.len() {
            let index = (round + offset) % agents.len();
            let m = measure(agents[index], &oxeye, &burn, cpus, args.seconds, &work_dir, &sink)?;
            eprintln!(
                "    round {}: {:<26} {:>14.0} iterations/s  agent CPU {:>6.2}%  RSS {:>6.1} MB",
                round + 1,
                agents[index].label(),
                m.throughput,
                m.agent_cpu * 100.0,
                m.agent_peak_rss as f64 / 1e6
            );
            results[index].push(m);
        }
    }

    println!("\noxeye benchmark: CPU-bound workload on {cpus} threads, {} s per run, medians of {} rounds", args.seconds, args.rounds);
    println!(
        "{:<26} {:>18} {:>25} {:>15} {:>22} {:>16} {:>18}",
        "configuration", "throughput / none", "agent CPU (% of 1 core)", "agent peak RSS", "of which mapped maps", "BPF per sample", "est. cost (% all)"
    );
    for (index, agent) in agents.iter().enumerate() {
        let ratios: Vec<f64> = (0..args.rounds).map(|r| results[index][r].throughput / results[0][r].throughput).collect();
        let ratio = median(ratios);
        if *agent == Agent::None {
            println!("{:<26} {:>18.4} {:>25} {:>15} {:>22} {:>16} {:>18}", agent.label(), ratio, "-", "-", "-", "-", "-");
            continue;
        }
        let cpu = median(results[index].iter().map(|m| m.agent_cpu * 100.0).collect());
        let rss = median(results[index].iter().map(|m| m.agent_peak_rss as f64 / 1e6).collect());
        let map_rss = median(results[index].iter().map(|m| m.agent_map_rss as f64 / 1e6).collect());
        let bpf: Vec<f64> = results[index].iter().filter_map(|m| m.bpf_ns_per_sample).collect();
        // What the agent takes from the workload by CPU accounting, immune to run-to-run noise:
        // its own CPU plus the sampler's BPF time at its rate on every CPU, over all CPUs.
        let (bpf, cost) = match (bpf.is_empty(), agent.rate()) {
            (false, Some(hz)) => {
                let bpf_ns = median(bpf);
                let bpf_share = bpf_ns * 1e-9 * f64::from(hz) * 100.0; // % of one core
                (format!("{:.2} µs", bpf_ns / 1000.0), format!("{:.3}%", (cpu + bpf_share * cpus as f64) / cpus as f64))
            }
            _ => ("-".to_owned(), "-".to_owned()),
        };
        println!("{:<26} {:>18.4} {:>24.2}% {:>12.1} MB {:>19.1} MB {:>16} {:>18}", agent.label(), ratio, cpu, rss, map_rss, bpf, cost);
    }
    println!("targets (oxeye -F 20): throughput ratio >= 0.99, CPU < 1% of one core, RSS < 60 MB besides the fixed-size unwind table maps");
    println!("(the workload's own throughput varies by a few percent between runs here; 'est. cost' is the agent's share of all CPUs by accounting)");

    let export_index = agents.iter().position(|a| matches!(a, Agent::OxeyeExport(_))).expect("export is benchmarked");
    let local_index = agents.iter().position(|a| *a == Agent::Oxeye(99)).expect("oxeye -F 99 is benchmarked");
    let (bytes, samples) = results[export_index].iter().filter_map(|m| m.export).fold((0, 0), |(b, s), (mb, ms)| (b + mb, s + ms));
    let per_round_cost: Vec<f64> = (0..args.rounds).map(|r| (results[export_index][r].agent_cpu - results[local_index][r].agent_cpu) * 100.0).collect();
    println!(
        "\nOTLP export at 99 Hz (reporter interval 5 s, gzip): {:.1} bytes on the wire per sample ({samples} samples, {bytes} bytes read by the receiver, connection set-up included); export CPU cost {:+.2}% of one core (median of per-round differences)",
        bytes as f64 / samples.max(1) as f64,
        median(per_round_cost),
    );
    println!("target: <= 20 bytes per sample");
    drop(sink);
    http::run(&oxeye, &work_dir, args.rounds)?;
    symbols::run(&oxeye, &work_dir, args.rounds)?;
    python::run(&oxeye, &work_dir, args.rounds, args.seconds)?;
    debug_files::run(&oxeye, &work_dir, args.rounds)?;
    exec_storm::run(&oxeye, &work_dir, args.rounds, args.seconds.max(10.0))?;
    off_cpu::run(&oxeye, &work_dir, args.rounds, args.seconds)?;
    unwinder::run(&oxeye, &work_dir, args.rounds)?;
    unwind::run()
}

#[allow(clippy::too_many_arguments)]
fn measure(agent: Agent, oxeye: &Path, burn: &Path, cpus: usize, seconds: f64, work_dir: &Path, sink: &sink::SinkProcess) -> Result<Measurement> {
    let sink_before = sink.stats();
    let mut child = match agent {
        Agent::None => None,
        Agent::Oxeye(hz) | Agent::OxeyeExport(hz) => {
            let hz = hz.to_string();
            let mut args = vec!["--samples-per-second", &hz];
            if matches!(agent, Agent::OxeyeExport(_)) {
                args.extend(["--collection-agent", sink.address(), "--disable-tls"]);
            }
            Some(start_oxeye(oxeye, &args, work_dir)?)
        }
        Agent::Perf(hz) => Some(start_perf(hz, &work_dir.join("perf.data"))?),
    };
    let agent_pid = child.as_ref().map(|c| c.id());
    let cpu_before = agent_pid.map_or(0, task_cpu_ns);
    let started = Instant::now();
    let output = Command::new(burn).arg(cpus.to_string()).arg(seconds.to_string()).output().context("cannot run the workload")?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = agent_pid.map_or(0, task_cpu_ns);
    if !output.status.success() {
        bail!("the workload failed: {}", output.status);
    }
    let iterations: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().context("the workload printed no count")?;
    let bpf_ns_per_sample = matches!(agent, Agent::Oxeye(_) | Agent::OxeyeExport(_)).then(|| bpf_listing::ns_per_run("oxeye_sample")).flatten();
    let mut peak_rss = 0;
    let mut map_rss = 0;
    if let Some(child) = child.take() {
        map_rss = mapped_bpf_map_bytes(child.id());
        peak_rss = stop_and_peak_rss(child.id())?;
    }
    let export = matches!(agent, Agent::OxeyeExport(_)).then(|| {
        sink.wait_for_quiet();
        let after = sink.stats();
        (after.wire_bytes - sink_before.wire_bytes, after.samples - sink_before.samples)
    });
    Ok(Measurement { throughput: iterations / wall, agent_cpu: (cpu_after - cpu_before) as f64 / 1e9 / wall, agent_peak_rss: peak_rss, agent_map_rss: map_rss, bpf_ns_per_sample, export })
}

/// Starts oxeye with `args`, without the live view, writing its outputs and its log
/// (`oxeye.stderr`) into `out_dir`, and waits until it samples.
fn start_oxeye(oxeye: &Path, args: &[&str], out_dir: &Path) -> Result<Stopped> {
    let log = out_dir.join("oxeye.stderr");
    let child = Command::new(oxeye)
        .args(args)
        .args(["--no-live", "--summary-interval", "3600", "--output-dir"])
        .arg(out_dir)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("cannot start oxeye")?;
    let child = Stopped(child);
    wait_for_text(&log, "sampling")?;
    Ok(child)
}

/// Starts `perf record -F HZ -a -g` writing to `output`, and gives it a second to start.
fn start_perf(hz: u32, output: &Path) -> Result<Stopped> {
    let child = Command::new("perf")
        .args(["record", "-F", &hz.to_string(), "-a", "-g", "-o"])
        .arg(output)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start perf")?;
    thread::sleep(Duration::from_secs(1));
    Ok(Stopped(child))
}

/// An agent stopped like Ctrl-C does when dropped, so that a failed run leaves none behind.
struct Stopped(std::process::Child);

impl Stopped {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU time of all threads of `pid`, in nanoseconds (from schedstat, which is precise).
fn task_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resident bytes of the BPF maps `pid` has memory-mapped (from /proc/PID/smaps).
fn mapped_bpf_map_bytes(pid: u32) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        if line.split_whitespace().next().is_some_and(|w| w.contains('-') && w.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')) {
            in_map = line.contains("bpf-map");
        } else if let Some(kib) = line.strip_prefix("Rss:").filter(|_| in_map) {
            total += kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0) * 1024;
        }
    }
    total
}

/// Stops an agent like Ctrl-C does and returns its peak RSS from the kernel's accounting.
fn stop_and_peak_rss(pid: u32) -> Result<u64> {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid as i32, &mut status, 0, &mut usage) < 0 {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        Ok(usage.ru_maxrss as u64 * 1024)
    }
}

fn wait_for_text(path: &Path, text: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(path).unwrap_or_default().contains(text) {
        if Instant::now() > deadline {
            bail!("oxeye did not start: {}", fs::read_to_string(path).unwrap_or_default());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn compile_burn() -> Result<PathBuf> {
    let dir = root().join("target/workloads");
    fs::create_dir_all(&dir)?;
    let binary = dir.join("burn");
    crate::shell::run(Command::new("gcc").args(["-O2", "-pthread", "-o"]).arg(&binary).arg(root().join("tests/workloads/burn.c")))?;
    Ok(binary)
}

/// The number just before `marker` in `line` ("… (12 KiB" → 12, in oxeye's summary lines).
fn number_before(line: &str, marker: &str) -> Option<u64> {
    let head = &line[..line.find(marker)?];
    head.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
