//! Unwinder figures, measured side by side in one run:
//! - the BPF cost per sample of a 30-frame stack without frame pointers (kernel BPF run-time
//!   statistics), next to the same stack walked by frame pointers;
//! - stack completeness of oxeye and of `perf record --call-graph dwarf` on the same
//!   workloads built without frame pointers;
//! - how long after exec a process with a new ~95 MB library (`rustc`'s librustc_driver) is
//!   unwindable.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{bpf_listing, median, stop_and_peak_rss, wait_for_text};
use crate::shell::{root, say};

/// Frames in the deep-stack workload: `recurse` at depth 26 plus `spin`, `main` and libc's
/// start-up frames.
const DEEP_STACK_DEPTH: &str = "26";

/// A workload with a known call chain.
struct Workload {
    label: &'static str,
    source: &'static str,
    flags: &'static [&'static str],
    /// Process name (what the binary is called).
    process: &'static str,
    /// Frame-name prefixes that must appear in order, root first, between `_start` and the leaf.
    chain: &'static [&'static str],
    /// The leaf frame's name prefix (one of; empty: any leaf below the chain).
    leaves: &'static [&'static str],
    /// Frames of this name a complete stack has at least (deep recursion, where neither
    /// profiler reaches `_start`).
    repeated: Option<(&'static str, usize)>,
}

const NO_FP: &[&str] = &["-O2", "-fomit-frame-pointer"];

const WORKLOADS: &[Workload] = &[
    Workload { label: "C -O2 chain", source: "chain.c", flags: NO_FP, process: "chain", chain: &["main", "outer", "middle"], leaves: &["leaf_a", "leaf_b"], repeated: None },
    Workload {
        label: "C++ templates",
        source: "chain.cpp",
        flags: NO_FP,
        process: "chain-cpp",
        chain: &["main", "Driver::run", "Stage<3>::process", "Stage<2>::process", "Stage<1>::process", "Stage<0>::process"],
        leaves: &["Worker<unsigned long>::leaf"],
        repeated: None,
    },
    Workload {
        label: "Rust release",
        source: "chain.rs",
        flags: &["-O", "-C", "force-frame-pointers=no"],
        process: "chain-rs",
        chain: &["main", "chain::main", "chain::outer", "chain::middle"],
        leaves: &["chain::leaf_a", "chain::leaf_b"],
        repeated: None,
    },
    // Samples in libc's sort or in the callback under it; perf names libc's qsort_r
    // `__GI___qsort_r`, oxeye by its exported name.
    Workload { label: "qsort in libc", source: "qsort.c", flags: NO_FP, process: "qsort", chain: &["main", "sort_many"], leaves: &[], repeated: None },
    Workload { label: "recursion (>= 120 frames)", source: "recurse.c", flags: NO_FP, process: "recurse", chain: &[], leaves: &["spin"], repeated: Some(("descend", 119)) },
];

/// A stack, root first, user frames only, with how many samples had it.
type Stacks = Vec<(Vec<String>, u64)>;

/// Runs every unwinder figure.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    deep_stack_cost(oxeye, work_dir, rounds)?;
    completeness(oxeye, work_dir)?;
    new_binary(oxeye, work_dir)
}

/// Builds `tests/workloads/SOURCE` with `flags` into the bench's own directory.
fn build(source: &str, flags: &[&str], work_dir: &Path) -> Result<PathBuf> {
    let (name, extension) = source.rsplit_once('.').context("workload without extension")?;
    let compiler = match extension {
        "c" => "gcc",
        "cpp" => "g++",
        _ => "rustc",
    };
    let dir = work_dir.join("workloads").join(flags.concat().replace(['/', ' '], "_"));
    fs::create_dir_all(&dir)?;
    let binary = dir.join(if extension == "c" { name.to_owned() } else { format!("{name}-{extension}") });
    crate::shell::run(Command::new(compiler).args(flags).arg("-o").arg(&binary).arg(root().join("tests/workloads").join(source)))?;
    Ok(binary)
}

/// BPF time per sample on a ~30-frame stack: tables on a binary without frame pointers, and
/// frame pointers on the same code built with them.
fn deep_stack_cost(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    let no_fp = build("recurse.c", NO_FP, work_dir)?;
    let fp = build("recurse.c", &["-O2", "-fno-omit-frame-pointer"], work_dir)?;
    let configurations: [(&str, &Path, &[&str]); 2] =
        [("tables, no frame pointers", &no_fp, &[]), ("frame pointers only", &fp, &["--frame-pointers-only"])];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configurations.len()];
    for _ in 0..rounds {
        for (index, (_, binary, flags)) in configurations.iter().enumerate() {
            let workers: Vec<_> = (0..cpus)
                .map(|_| Command::new(binary).args(["4", DEEP_STACK_DEPTH]).stdout(Stdio::null()).spawn())
                .collect::<std::io::Result<_>>()
                .context("cannot start the deep-stack workload")?;
            let out = work_dir.join("deep");
            let log = work_dir.join("oxeye-deep.stderr");
            let mut command = Command::new(oxeye);
            command.args(["-F", "99", "--no-live", "--summary-interval", "3600", "--duration", "3", "-o"]).arg(&out).args(*flags);
            let child = command.stdout(Stdio::null()).stderr(fs::File::create(&log)?).spawn().context("cannot start oxeye")?;
            wait_for_text(&log, "sampling")?;
            thread::sleep(Duration::from_millis(2500));
            let ns = bpf_listing::ns_per_run("oxeye_sample").context("no BPF statistics for oxeye_sample")?;
            stop_and_peak_rss(child.id())?;
            for mut worker in workers {
                worker.wait()?;
            }
            let depth = median_depth(&oxeye_stacks(&out, "recurse")?);
            results[index].push((ns, depth));
        }
    }
    println!("\nBPF cost per sample on a deep stack (recursion {DEEP_STACK_DEPTH} deep on every CPU, 99 Hz, medians of {rounds} rounds):");
    for ((label, ..), runs) in configurations.iter().zip(&results) {
        let ns = median(runs.iter().map(|r| r.0).collect());
        let depth = median(runs.iter().map(|r| r.1).collect());
        println!("  {label:<28} {:>6.2} µs per sample, {depth:.0} user frames per sample", ns / 1000.0);
    }
    println!("  target: <= 5 µs per 30-frame sample without frame pointers");
    Ok(())
}

/// Completeness of oxeye and of `perf record --call-graph dwarf` on the same workloads.
fn completeness(oxeye: &Path, work_dir: &Path) -> Result<()> {
    println!("\nstack completeness, workloads without frame pointers (share of samples from _start to the leaf through the whole chain):");
    println!("  {:<22} {:>10} {:>14} {:>18} {:>22}", "workload", "oxeye", "perf dwarf", "oxeye frames/smpl", "perf dwarf frames/smpl");
    for workload in WORKLOADS {
        let binary = build(workload.source, workload.flags, work_dir)?;
        let ours = with_workload(&binary, |pid| {
            let out = work_dir.join("completeness");
            let status = Command::new(oxeye)
                .args(["-F", "99", "--no-live", "--summary-interval", "3600", "--pid", &pid.to_string(), "-o"])
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("oxeye failed: {status}");
            }
            oxeye_stacks(&out, workload.process)
        })?;
        let perf = with_workload(&binary, |pid| perf_dwarf_stacks(pid, work_dir))?;
        println!(
            "  {:<22} {:>9.1}% {:>13.1}% {:>18.0} {:>22.0}",
            workload.label,
            complete_share(&ours, workload) * 100.0,
            complete_share(&perf, workload) * 100.0,
            median_depth(&ours),
            median_depth(&perf)
        );
    }
    println!("  (oxeye walks at most 128 user frames; perf copies 8 KiB of stack per sample and unwinds it afterwards)");
    Ok(())
}

/// Starts `binary` for 3 seconds, runs `profile` with its pid, and waits for it.
fn with_workload(binary: &Path, profile: impl FnOnce(u32) -> Result<Stacks>) -> Result<Stacks> {
    let mut child = Command::new(binary).arg("3").stdout(Stdio::null()).spawn().with_context(|| format!("cannot run {}", binary.display()))?;
    let stacks = profile(child.id());
    child.wait()?;
    stacks
}

/// User stacks of `process` from oxeye's `stacks.folded` in `dir`.
fn oxeye_stacks(dir: &Path, process: &str) -> Result<Stacks> {
    let text = fs::read_to_string(dir.join("stacks.folded")).context("oxeye wrote no stacks.folded")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            let mut frames = stack.split(';');
            (frames.next()? == process).then_some(())?;
            let user = frames.filter(|f| !f.ends_with("_[k]")).map(str::to_owned).collect();
            Some((user, count.parse().ok()?))
        })
        .collect())
}

/// User stacks of `pid` recorded by `perf record --call-graph dwarf` until it exits.
fn perf_dwarf_stacks(pid: u32, work_dir: &Path) -> Result<Stacks> {
    let data = work_dir.join("perf-dwarf.data");
    let status = Command::new("perf")
        .args(["record", "-F", "99", "--call-graph", "dwarf", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run perf")?;
    if !status.success() {
        bail!("perf record failed: {status}");
    }
    let output = Command::new("perf").args(["script", "-F", "ip,sym,dso", "-i"]).arg(&data).stderr(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut stacks = Vec::new();
    for sample in text.split("\n\n") {
        let mut frames: Vec<String> = sample
            .lines()
            .filter_map(|line| {
                // "    7f3d8c2a1b2c leaf_a (/path/chain)"
                let (_, rest) = line.trim().split_once(' ')?;
                let (symbol, dso) = rest.rsplit_once(" (")?;
                (!dso.starts_with("[kernel")).then(|| strip_rust_hash(symbol).to_owned())
            })
            .collect();
        if frames.is_empty() {
            continue;
        }
        frames.reverse(); // perf prints the innermost frame first
        stacks.push((frames, 1));
    }
    Ok(stacks)
}

/// `chain::outer::h0123456789abcdef` → `chain::outer` (perf keeps legacy Rust hashes).
fn strip_rust_hash(symbol: &str) -> &str {
    match symbol.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => path,
        _ => symbol,
    }
}

/// Whether a stack (root first) runs from `_start` through the workload's chain to its leaf.
fn is_complete(frames: &[String], workload: &Workload) -> bool {
    if let Some((name, count)) = workload.repeated {
        let leaf_ok = frames.last().is_some_and(|leaf| workload.leaves.iter().any(|l| leaf.starts_with(l)));
        return leaf_ok && frames.iter().rev().skip(1).take_while(|f| f.starts_with(name)).count() >= count;
    }
    if frames.first().map(String::as_str) != Some("_start") || frames.iter().any(|f| f.starts_with("[unwind error")) {
        return false;
    }
    let Some(leaf) = frames.last() else { return false };
    if !workload.leaves.is_empty() && !workload.leaves.iter().any(|l| leaf.starts_with(l)) {
        return false;
    }
    let mut from = 0;
    for want in workload.chain {
        match frames[from..].iter().position(|f| f.starts_with(want)) {
            Some(i) => from += i + 1,
            None => return false,
        }
    }
    // With any leaf allowed, the chain's last frame must not be the leaf itself.
    !workload.leaves.is_empty() || from < frames.len()
}

fn complete_share(stacks: &Stacks, workload: &Workload) -> f64 {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let complete: u64 = stacks.iter().filter(|(frames, _)| is_complete(frames, workload)).map(|(_, n)| n).sum();
    complete as f64 / total.max(1) as f64
}

fn median_depth(stacks: &Stacks) -> f64 {
    let mut depths: Vec<f64> = stacks.iter().flat_map(|(frames, n)| std::iter::repeat_n(frames.len() as f64, *n as usize)).collect();
    depths.sort_by(f64::total_cmp);
    depths.get(depths.len() / 2).copied().unwrap_or(0.0)
}

/// How long after exec a process that maps a new ~95 MB library (librustc_driver, loaded by
/// Debian's `rustc`) has all its tables in the kernel, from oxeye's debug log.
fn new_binary(oxeye: &Path, work_dir: &Path) -> Result<()> {
    let rustc = Path::new("/usr/bin/rustc");
    if !rustc.exists() {
        say("skipping the new-binary figure: /usr/bin/rustc (Debian's rustc-web) is not installed");
        return Ok(());
    }
    let log = work_dir.join("oxeye-new-binary.stderr");
    let child = Command::new(oxeye)
        .args(["-F", "99", "--no-live", "--summary-interval", "3600", "--log", "oxeye::unwind=debug,info", "-o"])
        .arg(work_dir.join("new-binary"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("cannot start oxeye")?;
    wait_for_text(&log, "sampling")?;
    let library = fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .into_iter()
        .chain(fs::read_dir("/usr/lib/aarch64-linux-gnu"))
        .flatten()
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with("librustc_driver"))
        .and_then(|entry| entry.metadata().ok())
        .map_or(0, |m| m.len());
    // oxeye logs each table it loads with the file's size; that of librustc_driver is unique.
    let marker = format!("size: {library} }}");
    // `rustc -` waits for its source on standard input, with its libraries mapped.
    let started = Instant::now();
    let mut process = Command::new(rustc).arg("-").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while found.is_none() && Instant::now() < deadline {
        let text = fs::read_to_string(&log).unwrap_or_default();
        found = text.lines().find(|l| l.contains(&marker)).map(|line| (line.to_owned(), started.elapsed()));
        thread::sleep(Duration::from_millis(2));
    }
    drop(process.stdin.take());
    let _ = process.kill();
    let _ = process.wait();
    stop_and_peak_rss(child.id())?;
    let field = |line: &str, key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse::<f64>().ok());
    match found {
        Some((line, seen)) if line.contains("compiled and loaded") => {
            let (rows, ms) = (field(&line, "rows=").unwrap_or(0.0), field(&line, "elapsed_ms=").unwrap_or(0.0));
            println!(
                "\nnew binary: librustc_driver ({:.0} MB, {rows:.0} rows) mapped by a new rustc process: its table compiled and loaded in {:.2} s ({:.2} s per 50 MB), in the kernel {:.2} s after exec; target <= 1 s for a new 50 MB binary",
                library as f64 / 1e6,
                ms / 1000.0,
                ms / 1000.0 * 50e6 / library.max(1) as f64,
                seen.as_secs_f64(),
            );
        }
        Some((line, _)) => println!("\nnew binary: librustc_driver did not get a table: {line}"),
        None => println!("\nnew binary: oxeye did not load librustc_driver's table within 10 s"),
    }
    Ok(())
}
