//! Debug-file figures (`--debug-only`), side by side with the tools people use for the same:
//!
//! - libc completed from `libc6-dbg` (found by build ID, its `.symtab` merged) and its DWARF
//!   indexed for inlined frames: time and memory; then lookups with inlined frames, against
//!   elfutils' `eu-addr2line -i` on the same addresses.
//! - debuginfod: Debian's `debuginfod` on loopback serves the debug files of libc, ld.so and a
//!   stripped workload; oxeye, with no local debug files, fetches them while it profiles the
//!   workload. Its fetch latency and cache size (from its final line) against elfutils'
//!   `debuginfod-find` fetching the same build IDs into an empty cache.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use symbolizer::{debug_file::DebugDirectories, dwarf_frames::DwarfFrames, elf::ElfSymbols};

use super::{median, wait_for_text, Stopped};
use crate::shell::root;

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
/// Addresses looked up per round.
const LOOKUPS: usize = 20_000;
/// Of which given to `eu-addr2line` (one process, all on its command line).
const REFERENCE_LOOKUPS: usize = 2_000;

/// Prints the figures.
pub fn run(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    local(rounds)?;
    debuginfod(oxeye, work_dir, rounds)
}

fn local(rounds: usize) -> Result<()> {
    let (mut merge_ms, mut index_ms, mut lookup_ns, mut reference_ns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut facts = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut libc = ElfSymbols::open(LIBC)?;
        let before = libc.symbols().len();
        let debug = DebugDirectories::default().find(libc.build_id(), libc.debug_link(), LIBC, Path::new("/")).context("no debug file for libc (apt-get install libc6-dbg)")?;
        let after = libc.merge_debug_file(&debug)?;
        merge_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let index = DwarfFrames::open(&debug.path, usize::MAX)?.context("libc's debug file has no DWARF")?;
        index_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let addresses = spread(&libc, LOOKUPS);
        let mut frames = Vec::new();
        let (started, mut found) = (Instant::now(), 0);
        for &address in &addresses {
            index.frames(address, &mut frames);
            found += frames.len();
        }
        lookup_ns.push(started.elapsed().as_nanos() as f64 / addresses.len() as f64);
        reference_ns.push(eu_addr2line_ns(&debug.path, &addresses[..REFERENCE_LOOKUPS.min(addresses.len())])?);
        facts = Some((before, after, index.heap_bytes(), found as f64 / addresses.len() as f64, debug.path));
    }
    let Some((before, after, bytes, per_address, path)) = facts else { bail!("no rounds") };
    let (lookup, reference) = (median(lookup_ns), median(reference_ns));
    println!("\nDebug files: libc with libc6-dbg ({}), medians of {rounds} rounds", path.display());
    println!("  read libc, find and merge its debug file    {:>9.1} ms  ({before} -> {after} symbols)", median(merge_ms));
    println!("  index its DWARF for inlined frames          {:>9.1} ms  ({:.1} MB held)", median(index_ms), bytes as f64 / 1e6);
    println!("  lookup, all frames of one address           {lookup:>9.0} ns  ({per_address:.2} frames per address)");
    println!("  eu-addr2line -i, per address                {reference:>9.0} ns  (oxeye / eu-addr2line: {:.4})", lookup / reference);
    Ok(())
}

/// `count` addresses inside libc's functions, spread over its text.
fn spread(libc: &ElfSymbols, count: usize) -> Vec<u64> {
    let text = libc.segments().iter().map(|s| (s.address, s.address + s.file_size)).max_by_key(|(start, end)| end - start).unwrap_or((0, 0));
    let step = ((text.1 - text.0) / (count as u64 * 2)).max(1);
    (0..count as u64 * 2).map(|i| text.0 + i * step).filter(|&a| libc.symbols().lookup(a).is_some()).take(count).collect()
}

/// Nanoseconds per address of `eu-addr2line -f -i` (start-up included).
fn eu_addr2line_ns(debug_file: &Path, addresses: &[u64]) -> Result<f64> {
    let started = Instant::now();
    let output = Command::new("eu-addr2line")
        .args(["-f", "-i", "-e"])
        .arg(debug_file)
        .args(addresses.iter().map(|a| format!("{a:#x}")))
        .stderr(Stdio::null())
        .output()
        .context("run eu-addr2line (apt-get install elfutils)")?;
    if !output.status.success() {
        bail!("eu-addr2line failed");
    }
    Ok(started.elapsed().as_nanos() as f64 / addresses.len() as f64)
}

/// The served directory: copies of the debug files of libc, ld.so and a stripped workload;
/// returns the workload to run and the build IDs served.
fn serve_dir(work_dir: &Path) -> Result<(PathBuf, PathBuf, Vec<String>)> {
    let dir = work_dir.join("debuginfod-served");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let source = root().join("tests/workloads/chain.c");
    let full = work_dir.join("chain-debug");
    crate::shell::run(Command::new("gcc").args(["-O2", "-g", "-o"]).arg(&full).arg(&source))?;
    let stripped = work_dir.join("chain");
    crate::shell::run(Command::new("objcopy").arg("--only-keep-debug").arg(&full).arg(dir.join("chain.debug")))?;
    crate::shell::run(Command::new("objcopy").arg("--strip-all").arg(&full).arg(&stripped))?;
    let mut ids = Vec::new();
    for binary in [LIBC, LD_SO, full.to_str().context("a UTF-8 path")?] {
        let symbols = ElfSymbols::open(binary)?;
        let id = symbols.build_id().with_context(|| format!("{binary} has no build ID"))?.to_hex();
        if binary != full.to_str().unwrap_or_default() {
            let debug = DebugDirectories::default().find(symbols.build_id(), None, binary, Path::new("/")).with_context(|| format!("no debug file for {binary} (libc6-dbg)"))?;
            fs::copy(&debug.path, dir.join(format!("{id}.debug")))?;
        }
        ids.push(id);
    }
    Ok((dir, stripped, ids))
}

/// debuginfod on `dir`, once it serves `probe`.
fn start_debuginfod(dir: &Path, work_dir: &Path, port: u16, probe: &str) -> Result<Stopped> {
    let db = work_dir.join("debuginfod.sqlite");
    let _ = fs::remove_file(&db);
    let server = Stopped(
        Command::new("debuginfod")
            .arg("-F")
            .arg(dir)
            .args(["-p", &port.to_string(), "-t0", "-g0", "-c1", "-d"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start debuginfod (apt-get install debuginfod)")?,
    );
    let url = format!("http://127.0.0.1:{port}/buildid/{probe}/debuginfo");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("curl").args(["-sf", "-o", "/dev/null", &url]).status().is_ok_and(|s| s.success()) {
        if Instant::now() > deadline {
            bail!("debuginfod did not serve {url} within 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

fn debuginfod(oxeye: &Path, work_dir: &Path, rounds: usize) -> Result<()> {
    let (dir, workload, ids) = serve_dir(work_dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _server = start_debuginfod(&dir, work_dir, port, &ids[0])?;
    let url = format!("http://127.0.0.1:{port}");
    let (mut oxeye_ms, mut find_ms, mut cache_kib) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let cache = work_dir.join("oxeye-debuginfod-cache");
        let _ = fs::remove_dir_all(&cache);
        let line = profile_fetching(oxeye, work_dir, &workload, &url, &cache)?;
        let field = |after: &str| -> Option<f64> { line.split(after).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok() };
        oxeye_ms.push(field("(mean ").context("no mean fetch latency in oxeye's line")?);
        cache_kib.push(field(" files, ").context("no cache size in oxeye's line")?);
        let find_cache = work_dir.join("debuginfod-find-cache");
        let _ = fs::remove_dir_all(&find_cache);
        let started = Instant::now();
        for id in &ids {
            let status = Command::new("debuginfod-find")
                .args(["debuginfo", id])
                .env("DEBUGINFOD_URLS", &url)
                .env("DEBUGINFOD_CACHE_PATH", &find_cache)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("debuginfod-find could not fetch {id}");
            }
        }
        find_ms.push(started.elapsed().as_secs_f64() * 1e3 / ids.len() as f64);
    }
    let (ours, theirs) = (median(oxeye_ms), median(find_ms));
    println!("\ndebuginfod on loopback: {} debug files (libc, ld.so, a stripped workload), medians of {rounds} rounds", ids.len());
    println!("  oxeye, mean fetch while profiling           {ours:>9.1} ms");
    println!("  debuginfod-find, per file (process included) {theirs:>8.1} ms  (oxeye / debuginfod-find: {:.2})", ours / theirs.max(0.001));
    println!("  oxeye's cache afterwards                    {:>9.0} KiB", median(cache_kib));
    Ok(())
}

/// Profiles one run of the stripped workload with `DEBUGINFOD_URLS` and no local debug files;
/// returns oxeye's `debug files:` line.
fn profile_fetching(oxeye: &Path, work_dir: &Path, workload: &Path, url: &str, cache: &Path) -> Result<String> {
    let log = work_dir.join("oxeye-debuginfod.stderr");
    let mut busy = Stopped(Command::new(workload).arg("3").stdout(Stdio::null()).spawn().context("start the workload")?);
    let mut agent = Stopped(
        Command::new(oxeye)
            .args(["-F", "99", "--no-live", "--no-network", "--pid", &busy.id().to_string(), "--debug-file-directory", "/nonexistent", "--output-dir"])
            .arg(work_dir)
            .env("DEBUGINFOD_URLS", url)
            .env("OXEYE_DEBUGINFOD_CACHE", cache)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("start oxeye")?,
    );
    wait_for_text(&log, "sampling")?;
    let _ = busy.0.wait();
    let _ = agent.0.wait();
    busy.stop();
    agent.stop();
    let text = fs::read_to_string(&log)?;
    text.lines().find(|l| l.contains("debug files:")).map(str::to_owned).with_context(|| format!("no debug files line from oxeye:\n{text}"))
}
