//! Run statistics of BPF programs, from `bpftool prog show` (with `kernel.bpf_stats_enabled`
//! on): one parser for every benchmark that reports BPF time.

use std::process::Command;

use anyhow::{Context, Result};

/// One loaded program's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: String,
    /// Its type (`tracepoint`, `perf_event`, …).
    pub kind: String,
    /// Total run time, ns (0 without statistics).
    pub run_time_ns: f64,
    /// Runs (0 without statistics).
    pub run_cnt: f64,
}

/// Every program loaded now.
pub fn programs() -> Result<Vec<Program>> {
    let output = Command::new("bpftool").args(["prog", "show"]).output().context("cannot run bpftool")?;
    Ok(parse(&String::from_utf8_lossy(&output.stdout)))
}

/// The programs of a `bpftool prog show` listing (`ID: TYPE  name NAME  … run_time_ns N
/// run_cnt N`; the indented lines after each are skipped).
pub fn parse(listing: &str) -> Vec<Program> {
    listing
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
            let number = |key: &str| after(key).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            Some(Program { name: after("name")?.to_owned(), kind: (*words.get(1)?).to_owned(), run_time_ns: number("run_time_ns"), run_cnt: number("run_cnt") })
        })
        .collect()
}

/// (run time ns, runs) of the program `name`: zeros if it is not loaded, or has no statistics
/// (the kernel counts a program only when it is run directly, not when it is tail-called).
pub fn totals(programs: &[Program], name: &str) -> (f64, f64) {
    programs.iter().find(|p| p.name == name).map_or((0.0, 0.0), |p| (p.run_time_ns, p.run_cnt))
}

/// Average run time of the program `name`, if it ran.
pub fn ns_per_run(name: &str) -> Option<f64> {
    let (time, count) = totals(&programs().ok()?, name);
    (count > 0.0).then(|| time / count)
}

/// Total run time (ns) of oxeye's programs other than the CPU sampler (perf_event ones): its
/// syscall, socket and process tracing, which runs in the traced processes.
pub fn tracing_ns(programs: &[Program]) -> f64 {
    programs.iter().filter(|p| p.kind != "perf_event" && p.name.starts_with("oxeye_")).map(|p| p.run_time_ns).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "12980: perf_event  name oxeye_python  tag a6  gpl\n\tloaded_at 2026-12-07T01:00:00+0000  uid 0\n12981: perf_event  name oxeye_sample  tag c2  gpl run_time_ns 19695496 run_cnt 3502\n12990: tracepoint  name oxeye_recv_exit  tag d1  gpl run_time_ns 1000 run_cnt 4\n12991: tracepoint  name other_prog  tag d2  gpl run_time_ns 7 run_cnt 1\n";

    #[test]
    fn reads_run_statistics() {
        let programs = parse(LISTING);
        assert_eq!(programs.len(), 4, "indented lines are not programs");
        assert_eq!(totals(&programs, "oxeye_sample"), (19695496.0, 3502.0));
        assert_eq!(totals(&programs, "oxeye_python"), (0.0, 0.0));
        assert_eq!(totals(&programs, "oxeye_unwind"), (0.0, 0.0));
        assert_eq!(tracing_ns(&programs), 1000.0, "oxeye's tracing programs only, not its sampler or others'");
    }
}
