//! Python stack figures (`--python-only`), on CPython workloads from `python/workload.py` that
//! run for a wall-clock time:
//!
//! 1. BPF time per sample on a 30- and a 10-frame Python stack (`--pid`, 999 Hz), and per
//!    Python frame from the difference (CPython 3.11+ runs Python-to-Python calls in one
//!    native frame, so the native part is the same at both depths);
//! 2. oxeye's own CPU per 1,000 samples on the 30-frame stack, and on a native C stack of
//!    about the same depth;
//! 3. the function table after 100,000 distinct generated functions: how many oxeye named,
//!    the size its summary gives, and its peak RSS;
//! 4. the throughput of a Python workload on every CPU without oxeye and with oxeye sampling
//!    the whole system at 20 and 99 Hz.
//!
//! The kernel's BPF statistics count the sampler's runs on every CPU: ticks of idle CPUs and
//! of other processes, which `--pid` filters out at once, too. Their cost is measured with
//! `--pid` on a sleeping process and taken out; the samples are those oxeye counted. The
//! workload is stopped (SIGSTOP) before the statistics are read, so no sample comes after.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{bpf_listing, median, number_before, stop_and_peak_rss, symbols::status_kib, task_cpu_ns, wait_for_text, Stopped};
use crate::shell::{root, say};

/// Samples per second for the per-sample figures.
const RATE: u32 = 999;
/// Python frames of the deep and the shallow stack.
const DEEP: u32 = 30;
const SHALLOW: u32 = 10;
/// `recurse.c`'s depth argument for a native stack of about 30 user frames (as in the
/// unwinder bench).
const NATIVE_DEPTH: &str = "26";
/// After oxeye says it samples: time before the measured window, and the window.
const SETTLE: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(4);
/// Distinct functions made, the wall-clock budget for making and calling them all, and how long
/// each call spins (a little over a sampling period at 999 Hz, so a call on a CPU is sampled).
const MANY_FUNCTIONS: usize = 100_000;
const MANY_SECONDS: f64 = 75.0;
const SLICE_MS: &str = "1.1";
/// The reference for the function table's memory: a few functions, a short run.
const FEW_FUNCTIONS: usize = 100;
const FEW_SECONDS: f64 = 10.0;
/// The BPF programs a Python sample runs: the sampler, which tail-calls the native unwinder,
/// which tail-calls the Python walker.
const PROGRAMS: [&str; 3] = ["oxeye_sample", "oxeye_unwind", "oxeye_python"];

/// Runs every Python figure.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize, seconds: f64) -> Result<()> {
    let python = interpreter()?;
    let version = String::from_utf8(Command::new(&python).args(["-c", "import platform; print(platform.python_version())"]).output()?.stdout)?;
    let script = root().join("xtask/src/bench/python/workload.py");
    let bench = Bench { oxeye, python: &python, script: &script, work_dir };
    let mut walker = PythonSummary::default();
    say(format!("Python benchmark: CPython {} ({}), {rounds} rounds", version.trim(), python.display()));
    println!("\nPython stacks: CPython {} ({})", version.trim(), python.display());
    per_sample(&bench, rounds, &mut walker)?;
    function_table(&bench, &mut walker)?;
    throughput(&bench, rounds, seconds, &mut walker)?;
    println!(
        "  Python walker over all runs above: {} samples walked, {} on threads without Python state, {} cut by a failed read, {} walker calls failed, {} frames unnamed",
        walker.walked, walker.no_state, walker.cut, walker.failed, walker.unnamed
    );
    Ok(())
}

/// pyenv's CPython 3.12.1, else Debian's 3.11.
fn interpreter() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    [home.join(".pyenv/versions/3.12.1/bin/python3.12"), PathBuf::from("/usr/bin/python3.11")]
        .into_iter()
        .find(|p| p.exists())
        .context("no Python: neither ~/.pyenv/versions/3.12.1/bin/python3.12 nor /usr/bin/python3.11")
}

struct Bench<'a> {
    oxeye: &'a Path,
    python: &'a Path,
    script: &'a Path,
    work_dir: &'a Path,
}

impl Bench<'_> {
    fn workload(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.python);
        command.arg(self.script).args(args);
        command
    }

    /// Starts oxeye at `hz` (on `pid` only, if given) and waits until it samples; it stops by
    /// itself after `limit` seconds at the latest.
    fn oxeye(&self, name: &str, hz: u32, pid: Option<u32>, extra: &[&str], limit: f64) -> Result<(Stopped, PathBuf)> {
        let log = self.work_dir.join(format!("oxeye-{name}.stderr"));
        let mut command = Command::new(self.oxeye);
        command
            .args(["-F", &hz.to_string(), "--no-live", "--summary-interval", "3600", "--duration", &limit.to_string()])
            .args(extra)
            .arg("-o")
            .arg(self.work_dir.join(format!("python-{name}")));
        if let Some(pid) = pid {
            command.args(["--pid", &pid.to_string()]);
        }
        let child = Stopped(command.stdout(Stdio::null()).stderr(fs::File::create(&log)?).spawn().context("cannot start oxeye")?);
        wait_for_text(&log, "sampling")?;
        Ok((child, log))
    }
}

/// A workload process, killed and reaped when dropped.
struct Workload(Child);

impl Workload {
    fn spawn(command: &mut Command) -> Result<Self> {
        Ok(Workload(command.spawn().with_context(|| format!("cannot start {command:?}"))?))
    }

    /// Waits until it exits by itself (at most `limit`, then it is killed) and returns what it
    /// printed (when started with a piped standard output) and the CPU seconds it used.
    fn output(mut self, limit: Duration) -> Result<(String, f64)> {
        let deadline = Instant::now() + limit;
        let pid = self.0.id() as i32;
        loop {
            let mut status = 0;
            // SAFETY: reaping our own child; `usage` is written by the kernel.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == pid {
                let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    bail!("the workload failed (wait status {status})");
                }
                // Its output is a line, in the pipe's buffer by now.
                let mut text = String::new();
                if let Some(mut stdout) = self.0.stdout.take() {
                    std::io::Read::read_to_string(&mut stdout, &mut text)?;
                }
                return Ok((text, seconds(usage.ru_utime) + seconds(usage.ru_stime)));
            }
            if reaped < 0 {
                bail!("wait4 failed: {}", std::io::Error::last_os_error());
            }
            if Instant::now() > deadline {
                bail!("the workload did not finish within {} s", limit.as_secs());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it where it is, so that it is not sampled any more.
    fn pause(&self) {
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGSTOP) };
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}


/// One profile of one process with `--pid`.
struct PidRun {
    /// Run time of the sampler and the programs it tail-calls, ns.
    bpf_ns: f64,
    /// Of which was reported for the tail-called programs themselves.
    tail_called_ns: f64,
    sampler_runs: f64,
    /// Samples of the process oxeye counted.
    samples: f64,
    /// oxeye's CPU time in the window, and the sampler's runs in it.
    window_cpu_ns: f64,
    window_runs: f64,
    python: Option<PythonSummary>,
}

impl PidRun {
    /// BPF time per sample of the process, without that of the runs it filtered out.
    fn ns_per_sample(&self, filtered_ns: f64) -> f64 {
        (self.bpf_ns - (self.sampler_runs - self.samples) * filtered_ns) / self.samples.max(1.0)
    }

    /// oxeye's CPU per sample of the process in the window (the process's share of the
    /// sampler's runs is that of the whole run).
    fn cpu_ns_per_sample(&self) -> f64 {
        self.window_cpu_ns / (self.window_runs * self.samples / self.sampler_runs.max(1.0)).max(1.0)
    }
}

/// Profiles `workload` with `--pid` at [`RATE`] for [`WINDOW`] after [`SETTLE`].
fn profile_pid(bench: &Bench, name: &str, workload: &mut Command) -> Result<PidRun> {
    let workload = Workload::spawn(workload.stdout(Stdio::null()))?;
    thread::sleep(Duration::from_millis(300));
    let limit = (SETTLE + WINDOW).as_secs_f64() + 60.0;
    let (oxeye, log) = bench.oxeye(name, RATE, Some(workload.0.id()), &["--no-network"], limit)?;
    thread::sleep(SETTLE);
    let cpu_before = task_cpu_ns(oxeye.id());
    let (_, runs_before) = bpf_listing::totals(&bpf_listing::programs()?, PROGRAMS[0]);
    thread::sleep(WINDOW);
    workload.pause();
    let cpu_after = task_cpu_ns(oxeye.id());
    let listing = bpf_listing::programs()?;
    let totals: Vec<(f64, f64)> = PROGRAMS.iter().map(|p| bpf_listing::totals(&listing, p)).collect();
    stop_and_peak_rss(oxeye.id())?;
    drop(workload);
    let text = fs::read_to_string(&log).unwrap_or_default();
    let samples = final_counts(&text).with_context(|| format!("oxeye printed no sample count: {text}"))?.0;
    if totals[0].1 == 0.0 {
        bail!("no BPF statistics for oxeye_sample");
    }
    Ok(PidRun {
        bpf_ns: totals.iter().map(|t| t.0).sum(),
        tail_called_ns: totals[1..].iter().map(|t| t.0).sum(),
        sampler_runs: totals[0].1,
        samples: samples as f64,
        window_cpu_ns: cpu_after.saturating_sub(cpu_before) as f64,
        window_runs: totals[0].1 - runs_before,
        python: PythonSummary::parse(&text),
    })
}

/// Figures 1 and 2: BPF time per sample and per Python frame, oxeye's CPU per 1,000 samples.
fn per_sample(bench: &Bench, rounds: usize, walker: &mut PythonSummary) -> Result<()> {
    let native = bench.work_dir.join("workloads/python-bench/recurse");
    fs::create_dir_all(native.parent().expect("has a parent"))?;
    crate::shell::run(Command::new("gcc").args(["-O2", "-fomit-frame-pointer", "-o"]).arg(&native).arg(root().join("tests/workloads/recurse.c")))?;
    let seconds = "120"; // a bound: the workloads are killed after the window
    let (deep, shallow) = (DEEP.to_string(), SHALLOW.to_string());
    let (mut filtered, mut at_deep, mut at_shallow, mut per_frame, mut at_native) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut cpu_python, mut cpu_native, mut cpu_ratio, mut tail_called_ns, mut share_filtered) = (vec![], vec![], vec![], 0.0, vec![]);
    for round in 0..rounds {
        let idle = profile_pid(bench, "filtered", Command::new("sleep").arg(seconds))?;
        let filtered_ns = idle.bpf_ns / idle.sampler_runs.max(1.0);
        let d = profile_pid(bench, "deep", &mut bench.workload(&["deep", seconds, &deep]))?;
        let s = profile_pid(bench, "shallow", &mut bench.workload(&["deep", seconds, &shallow]))?;
        let n = profile_pid(bench, "native", Command::new(&native).args([seconds, NATIVE_DEPTH]))?;
        let (ns_deep, ns_shallow, ns_native) = (d.ns_per_sample(filtered_ns), s.ns_per_sample(filtered_ns), n.ns_per_sample(filtered_ns));
        let (cpu_d, cpu_n) = (d.cpu_ns_per_sample(), n.cpu_ns_per_sample());
        eprintln!(
            "    round {}: {DEEP} Python frames {:.2} µs, {SHALLOW} frames {:.2} µs, native {:.2} µs per sample (filtered run {:.0} ns, {:.0} of {:.0} runs were samples); oxeye CPU per 1,000 samples: Python {:.1} ms, native {:.1} ms",
            round + 1,
            ns_deep / 1e3,
            ns_shallow / 1e3,
            ns_native / 1e3,
            filtered_ns,
            d.samples,
            d.sampler_runs,
            cpu_d * 1e3 / 1e6,
            cpu_n * 1e3 / 1e6
        );
        for run in [&d, &s] {
            walker.add(run.python.as_ref());
        }
        if d.python.is_none_or(|p| p.walked == 0) {
            bail!("oxeye walked no Python stack in the {DEEP}-frame workload");
        }
        tail_called_ns += d.tail_called_ns + s.tail_called_ns;
        share_filtered.push((d.sampler_runs - d.samples) * filtered_ns / d.bpf_ns.max(1.0));
        filtered.push(filtered_ns);
        at_deep.push(ns_deep);
        at_shallow.push(ns_shallow);
        per_frame.push((ns_deep - ns_shallow) / f64::from(DEEP - SHALLOW));
        at_native.push(ns_native);
        cpu_python.push(cpu_d);
        cpu_native.push(cpu_n);
        cpu_ratio.push(cpu_d / cpu_n);
    }
    let frame = median(per_frame);
    println!("BPF cost per sample, --pid at {RATE} Hz, medians of {rounds} rounds (oxeye_sample + oxeye_unwind + oxeye_python, per sample oxeye counted):");
    let row = |label: String, figure: String| println!("  {label:<36} {figure}");
    row(format!("{DEEP} Python frames"), format!("{:>7.2} µs per sample", median(at_deep) / 1e3));
    row(format!("{SHALLOW} Python frames"), format!("{:>7.2} µs per sample", median(at_shallow) / 1e3));
    row(format!("per Python frame, ({DEEP} − {SHALLOW}) / {}", DEEP - SHALLOW), format!("{:>7.3} µs", frame / 1e3));
    row(
        format!("Python frames' share at {DEEP} frames"),
        format!("{:>7.2} µs ({DEEP} × per frame; oxeye_python's fixed part is not separable: tail-called programs get no statistics of their own, {tail_called_ns:.0} ns reported for them)", frame * f64::from(DEEP) / 1e3),
    );
    row("native C, ~30 frames (tables)".to_owned(), format!("{:>7.2} µs per sample (recurse.c -O2 -fomit-frame-pointer, depth {NATIVE_DEPTH})", median(at_native) / 1e3));
    println!(
        "  (ticks of idle CPUs and other processes, filtered out: {:.0} ns each, {:.1}% of the sampler's time, taken out)",
        median(filtered),
        median(share_filtered) * 100.0
    );
    println!("  target: <= 10 µs per {DEEP}-frame Python sample");
    println!(
        "oxeye's own CPU (user + system) per 1,000 samples at {RATE} Hz, medians of {rounds} rounds: {DEEP} Python frames {:.1} ms, native C ~30 frames {:.1} ms, Python / native {:.2}",
        median(cpu_python) * 1e3 / 1e6,
        median(cpu_native) * 1e3 / 1e6,
        median(cpu_ratio)
    );
    Ok(())
}

/// Figure 3: `count` distinct functions over every CPU (each worker its own share, named
/// apart), oxeye on the whole system at [`RATE`] Hz.
fn function_table(bench: &Bench, walker: &mut PythonSummary) -> Result<()> {
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let mut table = |name: &str, count: usize, seconds: f64| -> Result<Table> {
        let each = count.div_ceil(cpus);
        let seconds_arg = seconds.to_string();
        // The workers first: oxeye attaches the CPython processes it finds when it starts
        // (those started after it are sometimes never walked, see the report).
        let workers: Vec<Workload> = (0..cpus)
            .map(|w| Workload::spawn(bench.workload(&["many", &seconds_arg, &each.to_string(), SLICE_MS, &format!("{name}{w}")]).stdout(Stdio::piped())))
            .collect::<Result<_>>()?;
        thread::sleep(Duration::from_millis(300));
        let max_stacks = (4 * count).max(100_000).to_string();
        let (oxeye, log) = bench.oxeye(name, RATE, None, &["--no-network", "--max-stacks", &max_stacks], seconds + 120.0)?;
        let mut passes = u64::MAX;
        for worker in workers {
            let (text, _) = worker.output(Duration::from_secs_f64(seconds + 30.0))?;
            let mut words = text.split_whitespace().skip(1);
            passes = passes.min(words.next().and_then(|w| w.parse().ok()).unwrap_or(0));
        }
        let hwm = status_kib(oxeye.id(), "VmHWM:") * 1024;
        let max_rss = stop_and_peak_rss(oxeye.id())?;
        let text = fs::read_to_string(&log).unwrap_or_default();
        let summary = PythonSummary::parse(&text).with_context(|| format!("oxeye printed no Python summary: {text}"))?;
        let dropped = final_counts(&text).map_or(0, |c| c.1);
        walker.add(Some(&summary));
        let generated = generated_functions(&bench.work_dir.join(format!("python-{name}")), name)?;
        Ok(Table { summary, generated, hwm, max_rss, passes, dropped })
    };
    say(format!("{MANY_FUNCTIONS} distinct Python functions on {cpus} processes for {MANY_SECONDS} s"));
    let many = table("many", MANY_FUNCTIONS, MANY_SECONDS)?;
    let few = table("few", FEW_FUNCTIONS, FEW_SECONDS)?;
    println!(
        "function table after {MANY_FUNCTIONS} distinct functions ({cpus} processes calling each for {SLICE_MS} ms in turn, whole system at {RATE} Hz, {MANY_SECONDS} s, one run, {} full passes): {} functions named ({} of the generated ones in the profile), {} KiB by the summary, {} code objects read; oxeye peak RSS {:.1} MB before stopping ({:.1} MB with writing the outputs); {} samples dropped when full",
        many.passes,
        many.summary.functions,
        many.generated,
        many.summary.kib,
        many.summary.code_reads,
        many.hwm as f64 / 1e6,
        many.max_rss as f64 / 1e6,
        many.dropped
    );
    println!(
        "  reference, {FEW_FUNCTIONS} functions for {FEW_SECONDS} s: {} functions named ({} generated), {} KiB, peak RSS {:.1} MB before stopping; RSS grew {:.0} bytes per function named (its stacks included)",
        few.summary.functions,
        few.generated,
        few.summary.kib,
        few.hwm as f64 / 1e6,
        (many.hwm as f64 - few.hwm as f64) / (many.summary.functions.saturating_sub(few.summary.functions)).max(1) as f64
    );
    Ok(())
}

/// One run of the function-table workload.
struct Table {
    summary: PythonSummary,
    /// Distinct generated functions in the profile.
    generated: usize,
    /// Peak RSS before stopping, and including writing the outputs, bytes.
    hwm: u64,
    max_rss: u64,
    /// Full passes over its functions the slowest worker made.
    passes: u64,
    dropped: u64,
}

/// Distinct generated functions (`PREFIX<worker>_<n>`) in the `stacks.folded` in `dir`.
fn generated_functions(dir: &Path, prefix: &str) -> Result<usize> {
    let text = fs::read_to_string(dir.join("stacks.folded")).context("oxeye wrote no stacks.folded")?;
    let names: std::collections::HashSet<&str> = text
        .lines()
        .flat_map(|line| line.split(';'))
        .filter_map(|frame| frame.split_once(" (").map(|(name, _)| name))
        .filter(|name| name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && rest.contains('_')))
        .collect();
    Ok(names.len())
}

/// Of the samples of processes called `comm` in the `stacks.folded` in `dir`: how many have
/// a frame of `workload.py`, and how many there are.
fn walked_share(dir: &Path, comm: &str) -> (u64, u64) {
    let text = fs::read_to_string(dir.join("stacks.folded")).unwrap_or_default();
    let mut counts = (0, 0);
    for line in text.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else { continue };
        let Ok(count) = count.parse::<u64>() else { continue };
        if stack.split(';').next() != Some(comm) {
            continue;
        }
        counts.1 += count;
        if stack.contains(" (workload.py:") {
            counts.0 += count;
        }
    }
    counts
}

/// Figure 4: units of the chain workload per second on every CPU, without oxeye and with it on
/// the whole system at 20 and 99 Hz; configurations rotate within each round.
fn throughput(bench: &Bench, rounds: usize, seconds: f64, walker: &mut PythonSummary) -> Result<()> {
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let agents: [Option<u32>; 3] = [None, Some(20), Some(99)];
    let label = |agent: Option<u32>| agent.map_or("no agent".to_owned(), |hz| format!("oxeye -F {hz}"));
    // The process name samples carry (the kernel keeps 15 bytes of it).
    let comm: String = bench.python.file_name().map_or_else(String::new, |n| n.to_string_lossy().chars().take(15).collect());
    let (mut walked_samples, mut workload_samples) = (0, 0);
    // Per run: units per second, units per CPU second of the workload, oxeye's CPU share.
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); agents.len()];
    for round in 0..rounds {
        for offset in 0..agents.len() {
            let index = (round + offset) % agents.len();
            let agent = agents[index].map(|hz| bench.oxeye("throughput", hz, None, &[], seconds + 120.0)).transpose()?;
            let cpu_before = agent.as_ref().map_or(0, |(a, _)| task_cpu_ns(a.id()));
            let started = Instant::now();
            let workers: Vec<Workload> = (0..cpus).map(|_| Workload::spawn(bench.workload(&["chain", &seconds.to_string()]).stdout(Stdio::piped()))).collect::<Result<_>>()?;
            let (mut units, mut workload_cpu) = (0.0, 0.0);
            for worker in workers {
                let (text, cpu) = worker.output(Duration::from_secs_f64(seconds + 30.0))?;
                units += text.trim().parse::<f64>().context("the chain workload printed no count")?;
                workload_cpu += cpu;
            }
            let wall = started.elapsed().as_secs_f64();
            let (mut cpu, mut share) = (0.0, String::new());
            if let Some((mut oxeye, log)) = agent {
                cpu = task_cpu_ns(oxeye.id()).saturating_sub(cpu_before) as f64 / 1e9 / wall;
                oxeye.stop();
                walker.add(PythonSummary::parse(&fs::read_to_string(&log).unwrap_or_default()).as_ref());
                let (walked, samples) = walked_share(&bench.work_dir.join("python-throughput"), &comm);
                walked_samples += walked;
                workload_samples += samples;
                share = format!("  Python frames in {walked} of the workload's {samples} samples");
            }
            eprintln!(
                "    round {}: {:<14} {:>10.0} units/s  {:>8.0} units per CPU second  oxeye CPU {:>5.2}%{share}",
                round + 1,
                label(agents[index]),
                units / wall,
                units / workload_cpu,
                cpu * 100.0
            );
            results[index].push((units / wall, units / workload_cpu, cpu));
        }
    }
    let ratio = |index: usize| median((0..rounds).map(|r| results[index][r].0 / results[0][r].0).collect());
    let per_cpu = |index: usize| median((0..rounds).map(|r| results[index][r].1 / results[0][r].1).collect());
    let cpu = |index: usize| median(results[index].iter().map(|r| r.2 * 100.0).collect());
    println!("Python chain workload on {cpus} processes, {seconds} s per run, medians of {rounds} rounds, with / without oxeye on the whole system:");
    for (index, agent) in agents.iter().enumerate().skip(1) {
        println!(
            "  {:<12} throughput {:.4}, units per workload CPU second {:.4}, oxeye CPU {:.2}% of one core",
            label(*agent),
            ratio(index),
            per_cpu(index),
            cpu(index)
        );
    }
    println!(
        "  Python frames in {walked_samples} of the workload's {workload_samples} samples ({:.1}%; the workers start after oxeye)",
        walked_samples as f64 * 100.0 / workload_samples.max(1) as f64
    );
    println!("  target: throughput >= 0.99 at 20 Hz (the machine's other load moves throughput by more; the per-CPU-second ratio leaves out the CPU it takes)");
    Ok(())
}

/// What oxeye's closing `python:` line says.
#[derive(Default, Clone, Copy)]
struct PythonSummary {
    walked: u64,
    no_state: u64,
    cut: u64,
    failed: u64,
    functions: u64,
    kib: u64,
    code_reads: u64,
    unnamed: u64,
}

impl PythonSummary {
    fn parse(stderr: &str) -> Option<Self> {
        let line = stderr.lines().find(|l| l.starts_with("oxeye: python:"))?;
        Some(PythonSummary {
            walked: number_before(line, " samples walked")?,
            no_state: number_before(line, " on threads without Python state")?,
            cut: number_before(line, " cut by a failed read")?,
            failed: number_before(line, " walker calls failed")?,
            functions: number_before(line, " functions named")?,
            kib: number_before(line, " KiB")?,
            code_reads: number_before(line, " code objects read")?,
            unnamed: number_before(line, " frames unnamed")?,
        })
    }

    fn add(&mut self, other: Option<&Self>) {
        let Some(other) = other else { return };
        self.walked += other.walked;
        self.no_state += other.no_state;
        self.cut += other.cut;
        self.failed += other.failed;
        self.unnamed += other.unnamed;
    }
}

/// Samples counted and dropped when full, from oxeye's last line.
fn final_counts(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr.lines().rev().find(|l| l.starts_with("oxeye: ") && l.contains(" samples in "))?;
    Some((number_before(line, " samples in ")?, number_before(line, " dropped when full").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_python_summary() {
        let text = "oxeye: python: 115 samples walked (1 on threads without Python state, 0 cut by a failed read, 2 walker calls failed); 7 functions named (1 KiB), 8 code objects read, 3 frames unnamed\noxeye: 4919 samples in 5.0s (0 lost in kernel, 4 dropped when full, 0 malformed, 0 unaccounted); wrote x";
        let s = PythonSummary::parse(text).unwrap();
        assert_eq!((s.walked, s.no_state, s.cut, s.failed, s.functions, s.kib, s.code_reads, s.unnamed), (115, 1, 0, 2, 7, 1, 8, 3));
        assert_eq!(final_counts(text), Some((4919, 4)));
    }
}
