//! Malformed, truncated and mutated ELF / `.eh_frame` input must give an error or a table,
//! never a panic or a hang. Deterministic mutations of real files, run as a normal test.

use std::{path::Path, process::Command, time::Instant};

use object::{Object, ObjectSection};
use symbolizer::unwind::UnwindTable;

/// xorshift64: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn small_binary() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = root.join("target/workloads/unwind-hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("chain");
    let status = Command::new("gcc").args(["-O2", "-o"]).arg(&binary).arg(root.join("tests/workloads/chain.c")).status().expect("gcc");
    assert!(status.success());
    std::fs::read(binary).unwrap()
}

fn eh_frame_range(data: &[u8]) -> std::ops::Range<usize> {
    let file = object::File::parse(data).unwrap();
    let (offset, size) = file.section_by_name(".eh_frame").unwrap().file_range().unwrap();
    offset as usize..(offset + size) as usize
}

/// Compiles and checks the result is well-formed if there is one.
fn compile_survives(data: &[u8]) {
    if let Ok(table) = UnwindTable::compile(data) {
        assert!(table.rows().windows(2).all(|w| w[0].start < w[1].start), "rows out of order");
    }
}

#[test]
fn mutated_eh_frame_never_panics() {
    let original = small_binary();
    let range = eh_frame_range(&original);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let started = Instant::now();
    for _ in 0..20_000 {
        let mut data = original.clone();
        for _ in 0..1 + rng.below(8) {
            let at = range.start + rng.below(range.len());
            data[at] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                2 => data[at] ^ (1 << rng.below(8)),
                _ => rng.next() as u8,
            };
        }
        compile_survives(&data);
    }
    eprintln!("20000 mutated .eh_frame sections in {:?}", started.elapsed());
}

#[test]
fn truncated_and_mangled_files_never_panic() {
    let original = small_binary();
    for cut in (0..original.len()).step_by(97) {
        compile_survives(&original[..cut]);
    }
    // Section headers pointing past the end, a huge .eh_frame, and every byte of the headers
    // flipped in turn.
    let mut rng = Rng(42);
    for at in 0..256.min(original.len()) {
        let mut data = original.clone();
        data[at] ^= 0xff;
        compile_survives(&data);
        let mut data = original.clone();
        data[at] = rng.next() as u8;
        compile_survives(&data);
    }
    let range = eh_frame_range(&original);
    let mut all_ones = original.clone();
    all_ones[range.clone()].fill(0xff);
    compile_survives(&all_ones);
    let mut zeros = original;
    zeros[range].fill(0);
    compile_survives(&zeros);
}

#[test]
fn mutated_libc_never_panics() {
    let original = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    let range = eh_frame_range(&original);
    let mut rng = Rng(7);
    for _ in 0..30 {
        let mut data = original.clone();
        for _ in 0..16 {
            let at = range.start + rng.below(range.len());
            data[at] = rng.next() as u8;
        }
        compile_survives(&data);
    }
}
