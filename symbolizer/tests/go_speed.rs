//! Parse time, heap and lookup speed of the Go pclntab symbolizer on the largest Go binary
//! the Go toolchain brings (its compiler, stripped by Debian), and a check that the table
//! names almost every pc of its text. The numbers printed are for the profile the test is
//! built in: `cargo test --release -p symbolizer --test go_speed -- --nocapture` for real
//! ones.

mod go_common;

use std::{path::PathBuf, process::Command, time::Instant};

use go_common::toolchains;
use object::{Object, ObjectSection};
use symbolizer::go::GoTable;

/// The largest binary among each toolchain's tools (`compile` usually).
fn largest_tool() -> PathBuf {
    let mut tools = Vec::new();
    for toolchain in toolchains() {
        let output = Command::new(&toolchain.go).args(["env", "GOTOOLDIR"]).output().expect("go env GOTOOLDIR");
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        tools.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    tools.into_iter().max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len())).expect("a Go tool")
}

#[test]
fn big_go_binary() {
    let path = largest_tool();
    let data = std::fs::read(&path).expect("read");
    let started = Instant::now();
    let table = GoTable::from_elf(&data).expect("parse").expect("a Go binary");
    let parse = started.elapsed();
    assert!(table.has_inline_info(), "moduledata not found in {}", path.display());
    let file = object::File::parse(&*data).expect("ELF");
    let text = file.section_by_name(".text").expect(".text");
    let (start, size) = (text.address(), text.size());

    // Every 16th byte of the text: nearly all must be named (padding between functions and
    // the text's few non-Go bytes are not).
    let mut frames = Vec::new();
    let (mut named, mut inlined, mut sampled) = (0usize, 0usize, 0usize);
    for address in (start..start + size).step_by(16) {
        frames.clear();
        sampled += 1;
        if table.lookup(address, &mut frames) {
            named += 1;
            inlined += usize::from(frames.len() > 1);
            assert!(frames.iter().all(|f| !f.function.is_empty()));
        }
    }
    assert!(named * 100 >= sampled * 99, "{named} of {sampled} pcs named");

    // Lookups at pseudo-random pcs.
    let count = 200_000u64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let started = Instant::now();
    let mut hits = 0usize;
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        frames.clear();
        hits += usize::from(table.lookup(start + state % size, &mut frames));
    }
    let per_lookup = started.elapsed().as_nanos() as f64 / count as f64;
    println!(
        "{} ({} bytes, {}): {} functions, {} inline trees, parsed in {:.2} ms, {} heap bytes; {named}/{sampled} pcs named, {inlined} with inlined frames; {per_lookup:.0} ns per lookup ({hits} hits)",
        path.display(),
        data.len(),
        table.version(),
        table.function_count(),
        table.inline_tree_count(),
        parse.as_secs_f64() * 1e3,
        table.heap_bytes(),
    );
}
