//! Unwind-table figures: memory of the tables for every executable mapped on this machine, and
//! how long compiling the table of a large binary takes.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use symbolizer::unwind::UnwindTable;

/// Bytes per row if every row carried its rules (for comparison).
const WIDE_ROW_BYTES: usize = 16;
/// Bytes per row as oxeye stores them, with the rules in one shared table: a 4-byte address
/// offset and a 4-byte rule index, like the OpenTelemetry profiler's stack deltas.
const NARROW_ROW_BYTES: usize = 8;

/// Every distinct executable file mapped by a running process, by (device, inode), with a path
/// that reaches it.
fn mapped_executables() -> BTreeMap<(String, u64), PathBuf> {
    let mut files = BTreeMap::new();
    let Ok(processes) = fs::read_dir("/proc") else { return files };
    for process in processes.flatten() {
        let pid = process.file_name();
        let Some(pid) = pid.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || fields[1].as_bytes().get(2) != Some(&b'x') || !fields[5].starts_with('/') {
                continue;
            }
            let Ok(inode) = fields[4].parse::<u64>() else { continue };
            files.entry((fields[3].to_owned(), inode)).or_insert_with(|| PathBuf::from(format!("/proc/{pid}/map_files/{}", fields[0])));
        }
    }
    files
}

/// Prints the figures.
pub fn run() -> Result<()> {
    let files = mapped_executables();
    let (mut rows, mut bytes, mut compile_time, mut compiled) = (0usize, 0u64, Duration::ZERO, 0usize);
    let mut rules = HashSet::new();
    for path in files.values() {
        let Ok(data) = fs::read(path) else { continue };
        let started = Instant::now();
        let Ok(table) = UnwindTable::compile(&data) else { continue };
        compile_time += started.elapsed();
        compiled += 1;
        bytes += data.len() as u64;
        rows += table.len();
        rules.extend(table.rules().iter().copied());
    }
    let wide = rows * WIDE_ROW_BYTES;
    let narrow = rows * NARROW_ROW_BYTES + rules.len() * WIDE_ROW_BYTES;
    println!(
        "\nunwind tables for all {} executables mapped on this machine ({compiled} with unwind info, {:.0} MB of files): {rows} rows, {} distinct rules; {:.1} MB if rows carried their rules ({WIDE_ROW_BYTES} B/row), {:.1} MB as oxeye stores them ({NARROW_ROW_BYTES} B/row + shared rules); compiled in {:.2} s",
        files.len(),
        bytes as f64 / 1e6,
        rules.len(),
        wide as f64 / 1e6,
        narrow as f64 / 1e6,
        compile_time.as_secs_f64()
    );
    // The largest binary around, for "time to make a new big binary unwindable".
    let candidates = ["/usr/lib/x86_64-linux-gnu/libLLVM.so.22.1", "/usr/lib/aarch64-linux-gnu/libLLVM.so.22.1"];
    if let Some(path) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        let mut times = Vec::new();
        let mut table_rows = 0;
        let mut size = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let data = fs::read(&path)?;
            size = data.len();
            table_rows = UnwindTable::compile(&data)?.len();
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let seconds = times[1];
        println!(
            "compiling the unwind table of {} ({:.0} MB, {table_rows} rows), compile only: {seconds:.2} s median of 3, i.e. {:.2} s per 50 MB",
            path.display(),
            size as f64 / 1e6,
            seconds * 50e6 / size as f64
        );
    }
    println!("target: <= 64 MB of tables for the whole machine");
    Ok(())
}
