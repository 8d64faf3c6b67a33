//! The unwind table compiler against an independent evaluation of the same CFI: binutils'
//! `readelf --debug-dump=frames-interp`. Every row readelf prints must be what our table says
//! at that address, for real system libraries of both architectures.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use symbolizer::unwind::{Arch, CfaRule, FpRule, RaRule, RowKind, UnwindTable};

/// One row of readelf's interpreted table: the address and the CFA, RA and FP columns.
#[derive(Debug, Clone)]
struct ReadelfRow {
    loc: u64,
    cfa: String,
    ra: Option<String>,
    fp: Option<String>,
}

/// An FDE: where it ends and its rows (the CIE's initial rows when readelf prints none).
#[derive(Debug)]
struct ReadelfFde {
    end: u64,
    rows: Vec<ReadelfRow>,
}

/// A CIE or FDE block of readelf's output while it is being read.
struct Entry {
    /// For an FDE: its CIE's offset and its range. For a CIE: `None`.
    fde: Option<(String, u64, u64)>,
    /// Offset of the entry (CIEs are looked up by it).
    offset: String,
    columns: Vec<String>,
    rows: Vec<ReadelfRow>,
}

fn readelf_fdes(path: &Path, fp_name: &str) -> Vec<ReadelfFde> {
    let output = Command::new("readelf").arg("--debug-dump=frames-interp").arg(path).output().expect("run readelf (binutils)");
    // readelf exits 1 when the file has no .debug_frame even though it dumped .eh_frame.
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Contents of the .eh_frame section") || text.contains("Contents of the .debug_frame section"), "readelf dumped no frames for {}", path.display());
    let mut cie_rows: HashMap<String, Vec<ReadelfRow>> = HashMap::new();
    let mut fdes = Vec::new();
    let mut finish = |entry: Option<Entry>, cie_rows: &mut HashMap<String, Vec<ReadelfRow>>| {
        let Some(entry) = entry else { return };
        match entry.fde {
            // An FDE without rows of its own has its CIE's initial rules throughout.
            Some((cie, start, end)) => {
                let rows = if entry.rows.is_empty() {
                    cie_rows.get(&cie).cloned().unwrap_or_default().into_iter().map(|r| ReadelfRow { loc: start, ..r }).collect()
                } else {
                    entry.rows
                };
                fdes.push(ReadelfFde { end, rows });
            }
            None => {
                cie_rows.insert(entry.offset, entry.rows);
            }
        }
    };
    let mut current: Option<Entry> = None;
    for line in text.lines() {
        // Register values print as "r9 (r9)": drop the parenthesized names so columns line up.
        let line = drop_parenthesized(line);
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 4 && words[3] == "CIE" {
            finish(current.take(), &mut cie_rows);
            current = Some(Entry { fde: None, offset: words[0].to_owned(), columns: Vec::new(), rows: Vec::new() });
        } else if words.len() >= 6 && words[3] == "FDE" {
            finish(current.take(), &mut cie_rows);
            let cie = words[4].trim_start_matches("cie=").to_owned();
            let (start, end) = words[5].trim_start_matches("pc=").split_once("..").expect("pc=a..b");
            let parse = |s: &str| u64::from_str_radix(s, 16).expect("hex address");
            current = Some(Entry { fde: Some((cie, parse(start), parse(end))), offset: words[0].to_owned(), columns: Vec::new(), rows: Vec::new() });
        } else if words.first() == Some(&"LOC") {
            if let Some(entry) = current.as_mut() {
                entry.columns = words.iter().map(|w| w.to_string()).collect();
            }
        } else if let (Some(entry), Some(first)) = (current.as_mut(), words.first()) {
            let Ok(loc) = u64::from_str_radix(first, 16) else { continue };
            if first.len() != 16 || entry.columns.is_empty() {
                continue;
            }
            let column = |name: &str| entry.columns.iter().position(|c| c == name).and_then(|i| words.get(i)).map(|s| s.to_string());
            let row = ReadelfRow { loc, cfa: words[1].to_owned(), ra: column("ra"), fp: column(fp_name) };
            entry.rows.push(row);
        }
    }
    finish(current.take(), &mut cie_rows);
    fdes
}

fn drop_parenthesized(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut depth = 0;
    for c in line.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn offset(value: &str, prefix: &str) -> Option<i32> {
    value.strip_prefix(prefix)?.parse().ok()
}

/// Whether our row agrees with readelf's at the same address; `None` if it does, else why not.
fn disagreement(arch: Arch, ours: &symbolizer::unwind::UnwindRow, theirs: &ReadelfRow) -> Option<String> {
    let (sp, fp) = match arch {
        Arch::X86_64 => ("rsp+", "rbp+"),
        Arch::Aarch64 => ("sp+", "x29+"),
    };
    let cfa_ok = match ours.cfa {
        CfaRule::SpOffset(o) => offset(&theirs.cfa, sp) == Some(o),
        CfaRule::FpOffset(o) => offset(&theirs.cfa, fp) == Some(o),
        CfaRule::PltX86 { .. } => theirs.cfa == "exp",
        CfaRule::Unsupported => offset(&theirs.cfa, sp).is_none() && offset(&theirs.cfa, fp).is_none(),
    };
    let ra = theirs.ra.as_deref().unwrap_or("u");
    let ra_ok = match ours.ra {
        RaRule::CfaOffset(o) => offset(ra, "c") == Some(o),
        RaRule::EndOfStack => ra == "u",
        RaRule::LinkRegister => arch == Arch::Aarch64 && (ra == "u" || ra == "s"),
        RaRule::Unsupported => offset(ra, "c").is_none() && ra != "u",
    };
    let fp_value = theirs.fp.as_deref().unwrap_or("u");
    let fp_ok = match ours.fp {
        FpRule::CfaOffset(o) => offset(fp_value, "c") == Some(o),
        FpRule::Unchanged => fp_value == "u" || fp_value == "s",
        FpRule::Unsupported => offset(fp_value, "c").is_none() && fp_value != "u" && fp_value != "s",
    };
    (!(cfa_ok && ra_ok && fp_ok && ours.kind != RowKind::NoInfo)).then(|| format!("ours {ours:?}, readelf {theirs:?}"))
}

fn compare(path: &Path, expected_arch: Arch) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let table = UnwindTable::compile(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(table.arch(), expected_arch);
    assert_eq!(table.skipped_entries(), 0, "{}: entries skipped", path.display());
    let fp_name = if expected_arch == Arch::X86_64 { "rbp" } else { "x29" };
    let fdes = readelf_fdes(path, fp_name);
    assert!(fdes.len() >= 3, "{}: readelf found only {} FDEs", path.display(), fdes.len());
    let (mut checked, mut problems) = (0, Vec::new());
    for fde in &fdes {
        for (i, row) in fde.rows.iter().enumerate() {
            let end = fde.rows.get(i + 1).map_or(fde.end, |next| next.loc);
            // Check the first and last address each row covers.
            for address in [row.loc, end.saturating_sub(1).max(row.loc)] {
                checked += 1;
                match table.lookup(address) {
                    Some(ours) => {
                        if let Some(problem) = disagreement(table.arch(), &ours, row) {
                            problems.push(format!("{address:#x}: {problem}"));
                        }
                    }
                    None => problems.push(format!("{address:#x}: no row")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}: {} of {checked} addresses disagree with readelf, e.g.\n{}", path.display(), problems.len(), problems[..problems.len().min(10)].join("\n"));
    eprintln!("{}: {} FDEs, {checked} addresses agree with readelf, {} rows", path.display(), fdes.len(), table.len());
}

/// A C binary built with -O2 and no frame pointers, from the test workloads.
fn optimized_c_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = root.join("target/workloads/unwind-O2");
    std::fs::create_dir_all(&out).unwrap();
    let binary = out.join("chain");
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&binary)
        .arg(root.join("tests/workloads/chain.c"))
        .status()
        .expect("run gcc");
    assert!(status.success());
    binary
}

#[test]
fn x86_64_libc_agrees_with_readelf() {
    compare(Path::new("/lib/x86_64-linux-gnu/libc.so.6"), Arch::X86_64);
}

#[test]
fn x86_64_libstdcxx_and_loader_agree_with_readelf() {
    compare(Path::new("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"), Arch::X86_64);
    compare(Path::new("/lib64/ld-linux-x86-64.so.2"), Arch::X86_64);
}

#[test]
fn test_binaries_agree_with_readelf() {
    compare(&optimized_c_binary(), Arch::X86_64);
    compare(&std::env::current_exe().unwrap(), Arch::X86_64);
}

#[test]
fn aarch64_libc_agrees_with_readelf() {
    let libc = Path::new("/usr/aarch64-linux-gnu/lib/libc.so.6");
    assert!(libc.exists(), "{} is missing: `cargo xtask setup --tests` installs Debian's libc6-arm64-cross", libc.display());
    compare(libc, Arch::Aarch64);
}

#[test]
fn plt_stubs_get_the_plt_rule() {
    let table = UnwindTable::compile(&std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap()).unwrap();
    assert!(table.rows().any(|r| matches!(r.cfa, CfaRule::PltX86 { threshold: 11 })), "libc's .plt has no PLT rule");
}

#[test]
fn outermost_frames_end_the_stack() {
    // The C runtime's _start marks the return address undefined.
    let table = UnwindTable::compile(&std::fs::read(optimized_c_binary()).unwrap()).unwrap();
    assert!(table.rows().any(|r| r.ra == RaRule::EndOfStack), "no end-of-stack row in a C executable");
}
