//! Go symbolization figures (`--go-only`): the time to make a new, large Go binary nameable and
//! unwindable (its `.gopclntab` read and indexed, its unwind table compiled from pcsp), the
//! cost of one lookup with inlined frames, and the memory held; side by side with Go's own
//! pclntab reader, `go tool addr2line`, on the same addresses. The binary is the largest Go
//! binary found on the machine near 100 MB (terraform and the Cloud SDK's are on this kind of
//! machine), else Debian's `go` command.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use symbolizer::{elf::ElfSymbols, go::GoTable, unwind::UnwindTable};

use super::median;

/// Go binaries of this kind of machine, near the 100 MB the issue asks about, best first.
const CANDIDATES: &[&str] = &["/usr/local/bin/terraform", "/usr/lib/google-cloud-sdk/bin/anthoscli", "/usr/lib/go/bin/go"];
/// Addresses looked up per round.
const LOOKUPS: usize = 100_000;
/// Addresses given to `go tool addr2line` (it is slower: fewer, then per address).
const ADDR2LINE_LOOKUPS: usize = 10_000;

/// Prints the figures.
pub fn run(rounds: usize) -> Result<()> {
    let path = CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()).context("no Go binary on this machine (install golang-go)")?;
    let data = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let size_mb = data.len() as f64 / 1e6;
    let (mut open_ms, mut go_ms, mut unwind_ms, mut lookup_ns, mut addr2line_ns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut facts = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let symbols = ElfSymbols::open(&path)?;
        open_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let table = GoTable::from_elf(&data)?.context("no .gopclntab")?;
        go_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let unwind = UnwindTable::compile(&data)?;
        unwind_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let pcs = spread_pcs(&table, LOOKUPS);
        let (ns, frames) = time_lookups(&table, &pcs);
        lookup_ns.push(ns);
        addr2line_ns.push(go_addr2line_ns(&path, &pcs[..ADDR2LINE_LOOKUPS.min(pcs.len())])?);
        facts = Some((table.function_count(), symbols.heap_bytes(), unwind.len(), frames as f64 / pcs.len() as f64));
    }
    let Some((functions, heap, rows, frames_per_pc)) = facts else { bail!("no rounds") };
    let (lookup, reference) = (median(lookup_ns), median(addr2line_ns));
    println!("\nGo symbolization: {} ({size_mb:.0} MB, {functions} functions), medians of {rounds} rounds", path.display());
    println!("  read + index (symbols, .gopclntab, inline trees) {:>9.1} ms  ({:.1} MB held)", median(open_ms), heap as f64 / 1e6);
    println!("  of which .gopclntab                              {:>9.1} ms", median(go_ms));
    println!("  unwind table from pcsp                           {:>9.1} ms  ({rows} rows)", median(unwind_ms));
    println!("  lookup, all frames of one pc                     {lookup:>9.0} ns  ({frames_per_pc:.2} frames per pc)");
    println!("  go tool addr2line, per pc                        {reference:>9.0} ns  (oxeye / go tool addr2line: {:.3})", lookup / reference);
    Ok(())
}

/// `count` pcs spread over the binary's Go code, from its frame-size ranges.
fn spread_pcs(table: &GoTable, count: usize) -> Vec<u64> {
    let mut starts = Vec::new();
    table.frame_sizes(|start, end, _| {
        if end > start {
            starts.push(start + (end - start) / 2);
        }
    });
    let step = (starts.len() / count).max(1);
    starts.into_iter().step_by(step).take(count).collect()
}

/// Nanoseconds per lookup, and frames found in all.
fn time_lookups(table: &GoTable, pcs: &[u64]) -> (f64, usize) {
    let mut frames = Vec::new();
    let mut found = 0;
    let started = Instant::now();
    for &pc in pcs {
        frames.clear();
        table.lookup(pc, &mut frames);
        found += frames.len();
    }
    (started.elapsed().as_nanos() as f64 / pcs.len() as f64, found)
}

/// Nanoseconds per address of `go tool addr2line` (startup included) on `pcs`.
fn go_addr2line_ns(binary: &Path, pcs: &[u64]) -> Result<f64> {
    let started = Instant::now();
    let mut child = Command::new("go")
        .args(["tool", "addr2line"])
        .arg(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("run go tool addr2line (install golang-go)")?;
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    let mut stdin = child.stdin.take().context("addr2line's stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    let _ = writer.join();
    if !output.status.success() || output.stdout.is_empty() {
        bail!("go tool addr2line failed on {}", binary.display());
    }
    Ok(started.elapsed().as_nanos() as f64 / pcs.len() as f64)
}
