//! Off-CPU figures (`--off-cpu-only`): a context-switch-heavy workload (pairs of threads
//! passing one byte back and forth over two pipes for a wall-clock time, `off_cpu/pingpong.c`)
//! with no agent, with oxeye recording 1% of switch-outs (`--off-cpu-threshold 0.01`) and all
//! of them (`1`), and with oxeye without off-CPU profiling (`0`), the baseline for the agent's
//! own cost: the workload's round trips per second against none, its context switches per
//! second, oxeye's CPU per second of workload, and the off-CPU BPF programs' run time per
//! context switch from the kernel's BPF statistics (each run of the `sched_switch` program is
//! one context switch on some CPU).
//!
//! Only the programs this run's oxeye loaded are counted (their IDs are new since it started),
//! so that another oxeye running meanwhile (a test) does not add its statistics.
//!
//! The workload is one pair per CPU, each pair's two threads pinned to its CPU: every hop is a
//! switch from one thread to the other there, and every CPU is busy, so that oxeye's own CPU
//! shows in the rate too. Unpinned, a pair's rate depends on whether the scheduler puts its
//! threads on one CPU or two (a third more round trips on one, here), which swamps the agent's
//! cost. One pair alone makes several times the ~100,000 context switches per second aimed at,
//! so each thread does a fixed amount of work per hop (iterations, not a time, so that time
//! taken from it shows), calibrated at the start for about that many without an agent.
//!
//! Each round runs every configuration once, in rotating order; ratios are taken within a
//! round and medians over rounds are printed.

use std::{
    collections::{BTreeSet, HashSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::{median, start_oxeye, task_cpu_ns};
use crate::shell::{root, say};

/// Context switches per second the workload makes without an agent (its own, voluntary and
/// involuntary, all pairs): work per hop brings it down to about that.
const TARGET_SWITCHES: f64 = 100_000.0;
/// Work per hop of the first calibration step (iterations, about 1 ns each), and the steps.
const PROBE_WORK: u64 = 5000;
const CALIBRATION_STEPS: usize = 3;
/// Seconds of each calibration run, and of workload before each measurement (oxeye's first
/// off-CPU stacks of the workload are symbolized then, not in the measured window).
const CALIBRATION: f64 = 1.0;
const WARM_UP: f64 = 1.0;
/// oxeye's sampling rate in every oxeye configuration.
const RATE: &str = "20";
/// The off-CPU program on `sched:sched_switch`: its runs are the context switches it saw.
const SWITCH_PROGRAM: &str = "oxeye_off_cpu";

/// No agent, or oxeye with this `--off-cpu-threshold` (the probability that a switch-out is
/// recorded; 0 is off).
type Config = Option<&'static str>;
const CONFIGS: [Config; 4] = [None, Some("0.01"), Some("1"), Some("0")];
/// The index of oxeye without off-CPU profiling in [`CONFIGS`].
const BASELINE: usize = 3;

fn label(config: Config) -> String {
    match config {
        None => "no agent".to_owned(),
        Some("0") => format!("oxeye -F {RATE}, off-CPU 0 (off)"),
        Some(threshold) => format!("oxeye -F {RATE}, off-CPU {threshold}"),
    }
}

/// What one run of the workload printed.
struct Run {
    round_trips: f64,
    seconds: f64,
    voluntary: f64,
    involuntary: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.round_trips / self.seconds
    }

    fn switches_per_second(&self) -> f64 {
        (self.voluntary + self.involuntary) / self.seconds
    }
}

/// The off-CPU BPF programs' statistics over one measured window.
struct OffCpuBpf {
    /// Their run time per run of the `sched_switch` program, ns.
    ns_per_switch: f64,
    /// Their run time per second, ms (CPU taken from whatever ran on the switching CPUs).
    ms_per_second: f64,
    /// Context switches they saw per second (all CPUs, all processes).
    switches_per_second: f64,
}

struct Measurement {
    run: Run,
    /// oxeye's CPU, milliseconds per second of workload.
    agent_ms: f64,
    bpf: Option<OffCpuBpf>,
    /// Names of the off-CPU programs that ran.
    programs: Vec<String>,
}

/// Runs the rounds and prints the table.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize, seconds: f64) -> Result<()> {
    let workload = calibrate(compile(work_dir)?)?;
    say(format!("off-CPU benchmark: {}, {seconds} s per run, {rounds} rounds", workload.describe()));
    let mut results: Vec<Vec<Measurement>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for offset in 0..CONFIGS.len() {
            let index = (round + offset) % CONFIGS.len();
            let m = measure(CONFIGS[index], oxeye, &workload, seconds, work_dir)?;
            eprintln!(
                "    round {}: {:<30} {:>8.0} round trips/s  {:>8.0} switches/s  oxeye CPU {:>6.1} ms/s  off-CPU BPF {}",
                round + 1,
                label(CONFIGS[index]),
                m.run.rate(),
                m.run.switches_per_second(),
                m.agent_ms,
                m.bpf.as_ref().map_or("n/a".to_owned(), |b| format!("{:.0} ns per switch, {:.1} ms/s", b.ns_per_switch, b.ms_per_second)),
            );
            results[index].push(m);
        }
    }
    print_table(&results, rounds, &workload, seconds);
    Ok(())
}

fn print_table(results: &[Vec<Measurement>], rounds: usize, workload: &Workload, seconds: f64) {
    println!("\noff-CPU profiling: {}, {seconds} s per run, medians of {rounds} rounds", workload.describe());
    println!(
        "{:<30} {:>13} {:>11} {:>14} {:>13} {:>15} {:>13} {:>17} {:>15} {:>17}",
        "configuration", "round trips/s", "rate / none", "rate / off-CPU", "switches/s", "oxeye CPU ms/s", "over off ms/s", "BPF per switch", "BPF ms/s", "switches seen/s"
    );
    let ratio_to = |index: usize, base: usize| median((0..rounds).map(|r| results[index][r].run.rate() / results[base][r].run.rate()).collect());
    for (index, config) in CONFIGS.iter().enumerate() {
        let rs = &results[index];
        let rate = median(rs.iter().map(|m| m.run.rate()).collect());
        let switches = median(rs.iter().map(|m| m.run.switches_per_second()).collect());
        let dash = || "-".to_owned();
        let (off, cpu, over) = match config {
            None => (dash(), dash(), dash()),
            Some(_) => (
                format!("{:.4}", ratio_to(index, BASELINE)),
                format!("{:.1}", median(rs.iter().map(|m| m.agent_ms).collect())),
                format!("{:+.1}", median((0..rounds).map(|r| rs[r].agent_ms - results[BASELINE][r].agent_ms).collect())),
            ),
        };
        let bpf: Vec<&OffCpuBpf> = rs.iter().filter_map(|m| m.bpf.as_ref()).collect();
        let (per_switch, ms, seen) = if config.is_none() {
            (dash(), dash(), dash())
        } else if bpf.is_empty() {
            ("n/a".to_owned(), "n/a".to_owned(), "n/a".to_owned())
        } else {
            (
                format!("{:.0} ns", median(bpf.iter().map(|b| b.ns_per_switch).collect())),
                format!("{:.1}", median(bpf.iter().map(|b| b.ms_per_second).collect())),
                format!("{:.0}", median(bpf.iter().map(|b| b.switches_per_second).collect())),
            )
        };
        println!(
            "{:<30} {:>13.0} {:>11.4} {:>14} {:>13.0} {:>15} {:>13} {:>17} {:>15} {:>17}",
            label(*config),
            rate,
            ratio_to(index, 0),
            off,
            switches,
            cpu,
            over,
            per_switch,
            ms,
            seen
        );
    }
    let programs: BTreeSet<&str> = results.iter().flatten().flat_map(|m| m.programs.iter().map(String::as_str)).collect();
    if programs.is_empty() {
        println!("off-CPU BPF programs: none loaded (n/a)");
    } else {
        println!("off-CPU BPF programs (run time summed; tail-called programs count in their caller): {}", programs.into_iter().collect::<Vec<_>>().join(", "));
    }
    println!("(oxeye CPU: its threads' CPU per second of workload; 'over off': minus oxeye with --off-cpu-threshold 0 in the same round; BPF: per run of {SWITCH_PROGRAM}, i.e. per context switch on any CPU)");
    println!("targets: slowdown <= 2% at --off-cpu-threshold 0.01 (rate / none >= 0.98); at 1 (every switch-out recorded), the cost above (rate, oxeye CPU, BPF time)");
}

fn measure(config: Config, oxeye: &Path, workload: &Workload, seconds: f64, work_dir: &Path) -> Result<Measurement> {
    let out_dir = work_dir.join("off-cpu");
    fs::create_dir_all(&out_dir)?;
    let listing = || if config.is_some() { programs() } else { Ok(Vec::new()) };
    let existing: HashSet<u64> = listing()?.iter().map(|p| p.id).collect();
    let agent = config.map(|threshold| start_oxeye(oxeye, &["-F", RATE, "--off-cpu-threshold", threshold], &out_dir)).transpose()?;
    workload.run(WARM_UP)?;
    let agent_pid = agent.as_ref().map(|a| a.id());
    let before = listing()?;
    let cpu_before = agent_pid.map_or(0, task_cpu_ns);
    let started = Instant::now();
    let run = workload.run(seconds)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = agent_pid.map_or(0, task_cpu_ns);
    let after = listing()?;
    drop(agent);
    let (bpf, programs) = off_cpu_bpf(&existing, &before, &after, wall);
    Ok(Measurement { run, agent_ms: cpu_after.saturating_sub(cpu_before) as f64 / 1e6 / wall, bpf, programs })
}

/// Whether `name` is one of oxeye's off-CPU programs: `oxeye_off…`, or an unwinder or Python
/// walker variant for off-CPU stacks (`oxeye_unwind…_off…`, `oxeye_python…_off…`).
fn is_off_cpu(name: &str) -> bool {
    name.starts_with("oxeye_off") || ((name.starts_with("oxeye_unwind") || name.starts_with("oxeye_python")) && name.contains("_off"))
}

/// One loaded BPF program, from `bpftool -j prog show` (statistics 0 without
/// `kernel.bpf_stats_enabled`, and for programs only tail-called).
struct Program {
    id: u64,
    name: String,
    run_time_ns: f64,
    run_cnt: f64,
}

/// Every program loaded now.
fn programs() -> Result<Vec<Program>> {
    let output = Command::new("bpftool").args(["-j", "prog", "show"]).output().context("cannot run bpftool")?;
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).context("bpftool printed no JSON")?;
    Ok(parse_programs(&listing))
}

fn parse_programs(listing: &serde_json::Value) -> Vec<Program> {
    let programs = listing.as_array().map_or(&[][..], Vec::as_slice);
    programs
        .iter()
        .filter_map(|p| {
            let number = |key: &str| p.get(key).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
            Some(Program { id: p.get("id")?.as_u64()?, name: p.get("name")?.as_str()?.to_owned(), run_time_ns: number("run_time_ns"), run_cnt: number("run_cnt") })
        })
        .collect()
}

/// The run time, between two listings, of the off-CPU programs loaded since `existing` was
/// listed, per run of the `sched_switch` program ([`SWITCH_PROGRAM`], else the off-CPU program
/// that ran most); and the programs' names.
fn off_cpu_bpf(existing: &HashSet<u64>, before: &[Program], after: &[Program], wall: f64) -> (Option<OffCpuBpf>, Vec<String>) {
    let ours = |p: &&Program| is_off_cpu(&p.name) && !existing.contains(&p.id);
    let deltas: Vec<(&str, f64, f64)> = after
        .iter()
        .filter(ours)
        .map(|p| {
            let (t0, c0) = before.iter().find(|b| b.id == p.id).map_or((0.0, 0.0), |b| (b.run_time_ns, b.run_cnt));
            (p.name.as_str(), p.run_time_ns - t0, p.run_cnt - c0)
        })
        .collect();
    let programs = deltas.iter().map(|d| d.0).collect::<BTreeSet<_>>().into_iter().map(str::to_owned).collect();
    let time: f64 = deltas.iter().map(|d| d.1).sum();
    let switches = deltas.iter().find(|d| d.0 == SWITCH_PROGRAM).or_else(|| deltas.iter().max_by(|a, b| a.2.total_cmp(&b.2))).map_or(0.0, |d| d.2);
    if switches <= 0.0 {
        return (None, programs);
    }
    (Some(OffCpuBpf { ns_per_switch: time / switches, ms_per_second: time / 1e6 / wall, switches_per_second: switches / wall }), programs)
}

/// The compiled workload, with its pairs of threads and work per hop.
struct Workload {
    binary: PathBuf,
    pairs: usize,
    work: u64,
}

impl Workload {
    fn describe(&self) -> String {
        format!("{} pair(s) of threads passing a byte over two pipes, each pair on its own CPU, {} iterations of work per hop", self.pairs, self.work)
    }

    /// Runs it for `seconds` of wall-clock time and reads its line.
    fn run(&self, seconds: f64) -> Result<Run> {
        let output = Command::new(&self.binary)
            .args([self.pairs.to_string(), seconds.to_string(), self.work.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run the off-CPU workload")?;
        if !output.status.success() {
            bail!("the off-CPU workload failed: {}", output.status);
        }
        parse(&String::from_utf8_lossy(&output.stdout)).context("the off-CPU workload printed no counts")
    }

    /// Seconds per context switch over a calibration run, which it says.
    fn seconds_per_switch(&self) -> Result<f64> {
        let run = self.run(CALIBRATION)?;
        say(format!(
            "off-CPU workload calibration, {}: {:.0} round trips/s, {:.0} context switches/s ({:.0} voluntary, {:.0} involuntary); target about {TARGET_SWITCHES:.0}",
            self.describe(),
            run.rate(),
            run.switches_per_second(),
            run.voluntary / run.seconds,
            run.involuntary / run.seconds
        ));
        Ok(1.0 / run.switches_per_second().max(1.0))
    }
}

/// One pair per CPU, and as much work per hop as brings the rate down to about
/// [`TARGET_SWITCHES`] (none if it makes fewer without). Work adds to the time per switch in
/// proportion, so each step scales the work by the time still missing.
fn calibrate(binary: PathBuf) -> Result<Workload> {
    let pairs = thread::available_parallelism().map_or(2, |n| n.get());
    let mut workload = Workload { binary, pairs, work: 0 };
    let target = 1.0 / TARGET_SWITCHES;
    let bare = workload.seconds_per_switch()?;
    if bare >= target {
        return Ok(workload);
    }
    let mut work = PROBE_WORK;
    for _ in 0..CALIBRATION_STEPS {
        workload.work = work;
        let added = workload.seconds_per_switch()? - bare;
        work = if added > 0.0 { (work as f64 * (target - bare) / added).round() as u64 } else { work * 2 };
    }
    workload.work = work;
    Ok(workload)
}

/// `ROUND_TRIPS SECONDS VOLUNTARY INVOLUNTARY`.
fn parse(line: &str) -> Option<Run> {
    let numbers: Vec<f64> = line.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
    let [round_trips, seconds, voluntary, involuntary] = numbers[..] else { return None };
    (seconds > 0.0).then_some(Run { round_trips, seconds, voluntary, involuntary })
}

fn compile(work_dir: &Path) -> Result<PathBuf> {
    let binary = work_dir.join("pingpong");
    crate::shell::run(Command::new("gcc").args(["-O2", "-pthread", "-o"]).arg(&binary).arg(root().join("xtask/src/bench/off_cpu/pingpong.c")))?;
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(id: u64, name: &str, run_time_ns: f64, run_cnt: f64) -> Program {
        Program { id, name: name.to_owned(), run_time_ns, run_cnt }
    }

    #[test]
    fn reads_the_workload_line() {
        let run = parse("248868 2.000081 313130 184560\n").unwrap();
        assert_eq!((run.round_trips, run.voluntary, run.involuntary), (248868.0, 313130.0, 184560.0));
        assert!(parse("1 2 3").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn picks_the_off_cpu_programs() {
        for name in ["oxeye_off_cpu", "oxeye_off_unwind", "oxeye_off_python", "oxeye_unwind_off"] {
            assert!(is_off_cpu(name), "{name}");
        }
        for name in ["oxeye_sample", "oxeye_unwind", "oxeye_python", "oxeye_recv_exit"] {
            assert!(!is_off_cpu(name), "{name}");
        }
    }

    #[test]
    fn bpf_time_per_switch_over_the_window() {
        // Program 1 is another oxeye's, loaded before this one started.
        let existing = HashSet::from([1]);
        let before = [program(1, "oxeye_off_cpu", 1e6, 10.0), program(5, "oxeye_off_cpu", 1000.0, 10.0), program(6, "oxeye_sample", 5.0, 1.0)];
        let after = [
            program(1, "oxeye_off_cpu", 9e6, 90.0),
            program(5, "oxeye_off_cpu", 5000.0, 30.0),
            program(7, "oxeye_off_unwind", 2000.0, 0.0),
            program(6, "oxeye_sample", 500.0, 9.0),
        ];
        let (bpf, programs) = off_cpu_bpf(&existing, &before, &after, 2.0);
        let bpf = bpf.unwrap();
        assert_eq!(programs, ["oxeye_off_cpu", "oxeye_off_unwind"]);
        assert_eq!((bpf.ns_per_switch, bpf.switches_per_second), (6000.0 / 20.0, 10.0));
        assert!(off_cpu_bpf(&existing, &before, &after[3..], 2.0).0.is_none(), "no off-CPU program: n/a");
    }

    #[test]
    fn reads_bpftool_json() {
        let listing = serde_json::json!([
            {"id": 66513, "type": "tracepoint", "name": "oxeye_off_cpu", "run_time_ns": 4200, "run_cnt": 7},
            {"id": 66514, "type": "perf_event", "name": "oxeye_unwind"},
            {"id": 3, "type": "cgroup_skb"}
        ]);
        let programs = parse_programs(&listing);
        assert_eq!(programs.len(), 2, "a program without a name is left out");
        assert_eq!((programs[0].id, programs[0].run_time_ns, programs[0].run_cnt), (66513, 4200.0, 7.0));
        assert_eq!((programs[1].name.as_str(), programs[1].run_cnt), ("oxeye_unwind", 0.0));
    }
}
