//! Truncated and corrupted Go pclntabs (and the inline trees and moduledata around them)
//! must give an error, a table, or failed lookups: never a panic or a hang. Deterministic
//! mutations of real stripped Go binaries, for each installed Go toolchain.

mod go_common;

use std::time::{Duration, Instant};

use go_common::{build, toolchains, Variant};
use object::{Object, ObjectSection};
use symbolizer::go::GoTable;

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

/// Where the pclntab is in the file: its bytes, and where its section header's `sh_size`
/// field is (ELF64 little-endian), to shrink the section without moving anything.
struct Layout {
    start: usize,
    len: usize,
    sh_size_at: usize,
    text: (u64, u64),
}

fn layout(data: &[u8]) -> Layout {
    let file = object::File::parse(data).expect("ELF");
    let section = file.section_by_name(".gopclntab").or_else(|| file.section_by_name(".data.rel.ro.gopclntab")).or_else(|| file.section_by_name(".data.rel.ro")).expect("pclntab section");
    let (start, len) = section.file_range().expect("pclntab in file");
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let shentsize = u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()) as usize;
    let text = file.section_by_name(".text").expect(".text");
    Layout { start: start as usize, len: len as usize, sh_size_at: shoff + section.index().0 * shentsize + 32, text: (text.address(), text.size()) }
}

/// Parses `data` and, if that gives a table, looks up `count` addresses spread over the
/// text and around it. Returns whether a table came out.
fn exercise(data: &[u8], text: (u64, u64), count: u64) -> bool {
    let Ok(Some(table)) = GoTable::from_elf(data) else { return false };
    let mut frames = Vec::new();
    let (start, size) = text;
    for i in 0..count {
        frames.clear();
        let address = start.wrapping_sub(64) + (size + 128) * i / count;
        if table.lookup(address, &mut frames) {
            assert!(!frames.is_empty());
        }
    }
    let _ = (table.function_count(), table.heap_bytes(), table.version());
    true
}

#[test]
fn hostile_pclntabs_never_panic() {
    let deadline = Duration::from_secs(240);
    let started = Instant::now();
    for toolchain in toolchains() {
        for variant in [Variant::Stripped, Variant::PieStripped, Variant::ExternalPieStripped] {
            let original = std::fs::read(build(&toolchain, "chain", variant)).expect("read");
            let layout = layout(&original);
            assert!(exercise(&original, layout.text, 2000), "the unmodified binary must parse");
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ original.len() as u64);
            let mut parsed = 0;
            // The section cut short, from nothing to almost all of it.
            let mut cuts: Vec<usize> = (0..96).collect();
            cuts.extend((1..64).map(|k| layout.len * k / 64));
            cuts.extend((0..32).map(|_| rng.below(layout.len)));
            for cut in cuts {
                let mut data = original.clone();
                data[layout.sh_size_at..layout.sh_size_at + 8].copy_from_slice(&(cut as u64).to_le_bytes());
                parsed += usize::from(exercise(&data, layout.text, 300));
            }
            // Random bytes of the pclntab overwritten: a few, or many.
            for round in 0..300 {
                let mut data = original.clone();
                for _ in 0..[1, 4, 64][round % 3] {
                    data[layout.start + rng.below(layout.len)] = rng.next() as u8;
                }
                parsed += usize::from(exercise(&data, layout.text, 300));
            }
            // The header's fields in particular (counts, offsets, sizes).
            for round in 0..200 {
                let mut data = original.clone();
                let at = layout.start + rng.below(72);
                data[at] = [0, 0xff, rng.next() as u8, data[at] ^ 0x80][round % 4];
                parsed += usize::from(exercise(&data, layout.text, 300));
            }
            // Anywhere in the file: inline trees in rodata, moduledata in noptrdata, headers.
            for _ in 0..200 {
                let mut data = original.clone();
                for _ in 0..32 {
                    let at = rng.below(data.len());
                    data[at] = rng.next() as u8;
                }
                parsed += usize::from(exercise(&data, layout.text, 300));
            }
            // The whole file cut short.
            for k in 0..64 {
                exercise(&original[..original.len() * k / 64], layout.text, 300);
            }
            println!("{} {variant:?}: {parsed} of the mutated binaries still parsed", toolchain.version);
            assert!(started.elapsed() < deadline, "mutated pclntabs took too long: a walk is not bounded");
        }
    }
}

/// Go 1.26 writes a zero `textStart` into the pcHeader; the functab's base then comes from
/// the moduledata. Zeroing it in real binaries (an external-link PIE too, whose `.text`
/// starts with C code before the Go text) must not change a single answer.
#[test]
fn zero_text_start_uses_the_moduledata() {
    for toolchain in toolchains() {
        if toolchain.version.as_str() < "go1.18" {
            continue;
        }
        for variant in [Variant::Stripped, Variant::ExternalPieStripped] {
            let original = std::fs::read(build(&toolchain, "chain", variant)).expect("read");
            let layout = layout(&original);
            let mut zeroed = original.clone();
            let text_start_at = layout.start + 8 + 2 * 8;
            assert_ne!(zeroed[text_start_at..text_start_at + 8], [0; 8]);
            zeroed[text_start_at..text_start_at + 8].fill(0);
            let (before, after) = (GoTable::from_elf(&original).expect("parse").expect("pclntab"), GoTable::from_elf(&zeroed).expect("parse").expect("pclntab"));
            let (start, size) = layout.text;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut named = 0;
            for address in (start..start + size).step_by(7) {
                a.clear();
                b.clear();
                assert_eq!(before.lookup(address, &mut a), after.lookup(address, &mut b));
                assert_eq!(a, b, "{} {variant:?} at {address:#x}", toolchain.version);
                named += usize::from(!a.is_empty());
            }
            assert!(named > 0);
        }
    }
}
