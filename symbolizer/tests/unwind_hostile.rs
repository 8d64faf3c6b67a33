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

/// A binary with 3,000 functions: room in its `.eh_frame` for large hand-made contents.
fn many_functions_binary() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = root.join("target/workloads/unwind-hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("many.c");
    let mut text: String = (0..3000).map(|i| format!("int f{i}(int x) {{ return x * {i} + f{}(x - 1); }}\n", i.max(1) - 1)).collect();
    text.push_str("int main(int argc, char **argv) { (void)argv; return f2999(argc); }\n");
    std::fs::write(&source, format!("int f0(int);\n{}", text.replacen("int f0(int x) { return x * 0 + f0(x - 1); }", "int f0(int x) { return x; }", 1))).unwrap();
    let binary = dir.join("many");
    let status = Command::new("gcc").args(["-O1", "-o"]).arg(&binary).arg(&source).status().expect("gcc");
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
        assert!(table.rows().zip(table.rows().skip(1)).all(|(a, b)| a.start < b.start), "rows out of order");
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

/// Hand-made hostile `.eh_frame` contents, each written over the real section of a small
/// binary (the rest padded with zero terminators): every one must give a table or an error,
/// quickly.
#[test]
fn hand_made_hostile_eh_frames_never_panic_or_hang() {
    let original = many_functions_binary();
    let range = eh_frame_range(&original);
    assert!(range.len() >= 60_000, "the .eh_frame to overwrite is only {} bytes", range.len());
    // A CIE: version 1, augmentation "zR", code align 1, data align -8, RA column 16,
    // augmentation data (pointer encoding pcrel|sdata4), then `instructions`.
    let cie = |instructions: &[u8]| -> Vec<u8> {
        let mut body = vec![0, 0, 0, 0, 1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b];
        body.extend_from_slice(instructions);
        while (body.len() + 4) % 8 != 0 {
            body.push(0); // DW_CFA_nop
        }
        let mut entry = (body.len() as u32).to_le_bytes().to_vec();
        entry.extend(body);
        entry
    };
    // An FDE pointing back `cie_back` bytes to its CIE, covering [pc, pc + len).
    let fde = |cie_back: u32, pc: i32, len: u32, instructions: &[u8]| -> Vec<u8> {
        let mut body = cie_back.to_le_bytes().to_vec();
        body.extend(pc.to_le_bytes());
        body.extend(len.to_le_bytes());
        body.push(0); // augmentation data length
        body.extend_from_slice(instructions);
        let mut entry = (body.len() as u32).to_le_bytes().to_vec();
        entry.extend(body);
        entry
    };
    let remember_many: Vec<u8> = std::iter::repeat_n(0x0a, 50_000).collect(); // DW_CFA_remember_state
    let advance_far: Vec<u8> = std::iter::repeat_n([0x04, 0xff, 0xff, 0xff, 0x7f], 10_000).flatten().collect(); // DW_CFA_advance_loc4
    let restore_unbalanced: Vec<u8> = std::iter::repeat_n(0x0b, 1000).collect(); // DW_CFA_restore_state
    let garbage_expression = [0x0f, 0x7f, 0x99, 0x98, 0x97]; // DW_CFA_def_cfa_expression, length 127, truncated
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("64-bit length running past the end", [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f].to_vec()),
        ("FDE whose CIE pointer points at itself", fde(4, 0, 16, &[])),
        ("FDE whose CIE pointer points before the section", fde(0x7fff_ffff, 0, 16, &[])),
        ("FDE covering the whole address space", [cie(&[0x0c, 7, 8]), fde(28, i32::MIN, u32::MAX, &[0x0e, 16])].concat()),
        ("50,000 remember_state", [cie(&[0x0c, 7, 8]), fde(28, 0, 4096, &remember_many)].concat()),
        ("10,000 advance_loc4 of 2 GiB", [cie(&[0x0c, 7, 8]), fde(28, 0, 4096, &advance_far)].concat()),
        ("restore_state without remember_state", [cie(&[0x0c, 7, 8]), fde(28, 0, 4096, &restore_unbalanced)].concat()),
        ("truncated CFA expression", [cie(&[0x0c, 7, 8]), fde(28, 0, 4096, &garbage_expression)].concat()),
        ("CIE with an unknown augmentation", {
            let mut entry = cie(&[0x0c, 7, 8]);
            entry[9] = b'Q';
            entry
        }),
        ("CIE version 99", {
            let mut entry = cie(&[0x0c, 7, 8]);
            entry[8] = 99;
            entry
        }),
        ("register number 10,000", [cie(&[0x0c, 0x90, 0x4e, 8]), fde(28, 0, 64, &[0x90, 0x4e, 1])].concat()),
    ];
    for (name, contents) in cases {
        let mut data = original.clone();
        let section = &mut data[range.clone()];
        section.fill(0);
        assert!(contents.len() <= section.len(), "{name}: {} bytes do not fit", contents.len());
        section[..contents.len()].copy_from_slice(&contents);
        let started = Instant::now();
        compile_survives(&data);
        assert!(started.elapsed().as_secs() < 5, "{name}: took {:?}", started.elapsed());
    }
}
