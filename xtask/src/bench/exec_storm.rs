//! Exec-storm figures (`--exec-only`): two loops of fork + exec of a process that lives 1 ms
//! (a build's or a shell script's commands), with no agent, with oxeye and with `perf record
//! -a -g` (which follows mmap events the same way): the storm's rate against none, each
//! agent's CPU and peak RSS, and the share of oxeye's samples in the short process that are
//! its whole, named chain.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::{median, start_oxeye, start_perf, stop_and_peak_rss, symbols::status_kib, task_cpu_ns};
use crate::shell::{root, say};

/// Storm loops running at once (this machine has two cores).
const LOOPS: usize = 2;
/// Seconds of storm before each measurement.
const WARM_UP: f64 = 2.0;
/// The short process's whole chain, as oxeye names it.
const CHAIN: &str = "burn1ms;_start;__libc_start_main;__libc_start_call_main;main;middle;leaf";

#[derive(Clone, Copy, PartialEq)]
enum Agent {
    None,
    Oxeye,
    Perf,
}

impl Agent {
    fn label(self) -> &'static str {
        match self {
            Agent::None => "no agent",
            Agent::Oxeye => "oxeye (20 Hz)",
            Agent::Perf => "perf record -F 20 -a -g",
        }
    }
}

struct Measurement {
    execs_per_second: f64,
    agent_cpu: f64,
    peak_rss: u64,
    /// RSS at the measured storm's end minus at its start, in bytes: flat means no growth
    /// per process seen.
    rss_growth: i64,
    whole: Option<f64>,
}

/// Runs the rounds and prints the table.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize, seconds: f64) -> Result<()> {
    let (storm, burn) = (compile(work_dir, "exec_storm.c", &["-O2"])?, compile(work_dir, "burn1ms.c", &["-O2", "-fno-omit-frame-pointer"])?);
    let agents = [Agent::None, Agent::Oxeye, Agent::Perf];
    say(format!("exec storm: {LOOPS} loops of a 1 ms process, {seconds} s per run, {rounds} rounds"));
    let mut results: Vec<Vec<Measurement>> = agents.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for offset in 0..agents.len() {
            let index = (round + offset) % agents.len();
            let m = measure(agents[index], oxeye, &storm, &burn, seconds, work_dir)?;
            eprintln!(
                "    round {}: {:<24} {:>6.0} execs/s  agent CPU {:>5.2}%  RSS {:>5.1} MB (grew {:+.1} MB){}",
                round + 1,
                agents[index].label(),
                m.execs_per_second,
                m.agent_cpu * 100.0,
                m.peak_rss as f64 / 1e6,
                m.rss_growth as f64 / 1e6,
                m.whole.map_or(String::new(), |w| format!("  whole {:.1}%", w * 100.0))
            );
            results[index].push(m);
        }
    }
    println!("\nexec storm: {LOOPS} loops of fork + exec of a 1 ms process, {seconds} s per run, medians of {rounds} rounds");
    println!("{:<24} {:>10} {:>14} {:>25} {:>15} {:>16} {:>22}", "configuration", "execs/s", "rate / none", "agent CPU (% of 1 core)", "agent peak RSS", "RSS growth", "1 ms samples whole");
    for (index, agent) in agents.iter().enumerate() {
        let rate = median(results[index].iter().map(|m| m.execs_per_second).collect());
        let ratio = median((0..rounds).map(|r| results[index][r].execs_per_second / results[0][r].execs_per_second).collect());
        if *agent == Agent::None {
            println!("{:<24} {:>10.0} {:>14.3} {:>25} {:>15} {:>16} {:>22}", agent.label(), rate, ratio, "-", "-", "-", "-");
            continue;
        }
        let cpu = median(results[index].iter().map(|m| m.agent_cpu * 100.0).collect());
        let rss = median(results[index].iter().map(|m| m.peak_rss as f64 / 1e6).collect());
        let growth = median(results[index].iter().map(|m| m.rss_growth as f64 / 1e6).collect());
        let whole: Vec<f64> = results[index].iter().filter_map(|m| m.whole).collect();
        let whole = if whole.is_empty() { "-".to_owned() } else { format!("{:.1}%", median(whole) * 100.0) };
        println!("{:<24} {:>10.0} {:>14.3} {:>24.2}% {:>12.1} MB {:>+13.1} MB {:>22}", agent.label(), rate, ratio, cpu, rss, growth, whole);
    }
    Ok(())
}

fn measure(agent: Agent, oxeye: &Path, storm: &Path, burn: &Path, seconds: f64, work_dir: &Path) -> Result<Measurement> {
    let out_dir = work_dir.join("exec-storm");
    fs::create_dir_all(&out_dir)?;
    let mut child = match agent {
        Agent::None => None,
        Agent::Oxeye => Some(start_oxeye(oxeye, &[], &out_dir)?),
        Agent::Perf => Some(start_perf(20, &out_dir.join("perf.data"))?),
    };
    // Warm-up: the first processes' files are read and indexed once (libc's DWARF, 0.1 s):
    // steady-state cost is what an exec storm pays.
    run_storm(storm, burn, WARM_UP)?;
    let agent_pid = child.as_ref().map(|c| c.id());
    let cpu_before = agent_pid.map_or(0, task_cpu_ns);
    let rss_kib = || agent_pid.map_or(0, |pid| status_kib(pid, "VmRSS:") as i64);
    let rss_before = rss_kib();
    let started = Instant::now();
    let ran = run_storm(storm, burn, seconds)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = agent_pid.map_or(0, task_cpu_ns);
    let rss_growth = (rss_kib() - rss_before) * 1024;
    let peak_rss = match child.take() {
        Some(child) => stop_and_peak_rss(child.id())?,
        None => 0,
    };
    let whole = (agent == Agent::Oxeye).then(|| whole_share(&out_dir.join("stacks.folded"))).flatten();
    Ok(Measurement { execs_per_second: ran / wall, agent_cpu: (cpu_after - cpu_before) as f64 / 1e9 / wall, peak_rss, rss_growth, whole })
}

/// Runs [`LOOPS`] storm loops for `seconds`; returns how many processes ran.
fn run_storm(storm: &Path, burn: &Path, seconds: f64) -> Result<f64> {
    let loops: Vec<_> = (0..LOOPS)
        .map(|_| Command::new(storm).arg(seconds.to_string()).arg(burn).stdout(Stdio::piped()).spawn())
        .collect::<std::io::Result<_>>()
        .context("cannot run the storm")?;
    let loops: Vec<_> = loops.into_iter().map(|child| child.wait_with_output()).collect::<std::io::Result<_>>().context("cannot run the storm")?;
    let mut ran = 0.0;
    for output in &loops {
        if !output.status.success() {
            bail!("the storm failed: {}", output.status);
        }
        ran += String::from_utf8_lossy(&output.stdout).trim().parse::<f64>().context("the storm printed no count")?;
    }
    Ok(ran)
}

/// Of the short process's samples in `leaf`, the share that are its whole chain.
fn whole_share(folded: &Path) -> Option<f64> {
    let text = fs::read_to_string(folded).ok()?;
    let (mut in_leaf, mut whole) = (0u64, 0u64);
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ')?;
        let count: u64 = count.parse().ok()?;
        let user: Vec<&str> = stack.split(';').filter(|frame| !frame.ends_with("_[k]")).collect();
        if user.first() == Some(&"burn1ms") && user.last() == Some(&"leaf") {
            in_leaf += count;
            whole += if user.join(";") == CHAIN { count } else { 0 };
        }
    }
    (in_leaf > 0).then(|| whole as f64 / in_leaf as f64)
}

fn compile(work_dir: &Path, source: &str, flags: &[&str]) -> Result<PathBuf> {
    let binary = work_dir.join(source.trim_end_matches(".c"));
    crate::shell::run(Command::new("gcc").args(flags).arg("-o").arg(&binary).arg(root().join("tests/workloads").join(source)))?;
    Ok(binary)
}
