//! An ELF file's functions as a *symbfile*: the symbol format of the OpenTelemetry eBPF
//! profiler's `symblib`, which devfiler fetches from a symbol endpoint (`ranges`, compressed
//! with zstd by the server) to name native frames.
//!
//! A symbfile is a list of address ranges of the file's own virtual addresses, each with a
//! function name and an inline depth: depth 0 for a function, 1 for a call inlined into it,
//! and so on; a reader finds every range holding an address and sorts them by depth to get the
//! inline stack. Ranges can carry a source file and line table, and inlined ones their call
//! site.
//!
//! - From DWARF, where the file has it ([`dwarf`]): functions, inlined calls, files and lines.
//! - From the symbol tables ([`symtab`]): every function symbol with a size that DWARF did
//!   not cover, at depth 0 with its name only.
//!
//! ```no_run
//! let data = std::fs::read("/usr/bin/true")?;
//! let (bytes, summary) = symbolizer::symbfile::write(&data, Vec::new())?;
//! println!("{} ranges ({} from DWARF) in {} bytes", summary.ranges, summary.dwarf_ranges, bytes.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod dwarf;
pub mod symtab;
pub mod wire;
mod writer;

use std::io::Write;

use crate::demangle::demangle;

pub use writer::{Range, RangeSink, Writer};

/// Most ranges written for one file; past it DWARF stops and only symbols follow (a bound on
/// the work and output for pathological files).
pub const MAX_RANGES: u64 = 8_000_000;

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Ranges in all.
    pub ranges: u64,
    /// Of those, from DWARF.
    pub dwarf_ranges: u64,
    /// DWARF compilation units that could not be parsed (their functions come from symbols).
    pub dwarf_units_skipped: u64,
}

/// Why a symbfile could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SymbfileError {
    /// Not an ELF file.
    #[error("not an ELF file")]
    NotElf,
    /// The ELF headers could not be parsed.
    #[error("invalid ELF file: {0}")]
    Elf(#[source] object::read::Error),
    /// Writing the output failed.
    #[error("cannot write the symbfile: {0}")]
    Io(#[source] std::io::Error),
}

/// Writes the symbfile of the ELF image `elf` to `out`; returns `out` and what was written.
pub fn write<W: Write>(elf: &[u8], out: W) -> Result<(W, Summary), SymbfileError> {
    if !elf.starts_with(b"\x7fELF") {
        return Err(SymbfileError::NotElf);
    }
    let file = object::File::parse(elf).map_err(SymbfileError::Elf)?;
    let mut writer = Writer::new(out).map_err(SymbfileError::Io)?;
    let dwarf = dwarf::write_ranges(&file, &mut writer, MAX_RANGES).map_err(SymbfileError::Io)?;
    let dwarf_ranges = writer.ranges();
    for symbol in symtab::symbol_ranges(&file) {
        if writer.ranges() >= MAX_RANGES {
            break;
        }
        if overlaps(&dwarf.covered, symbol.start, symbol.start.saturating_add(symbol.size)) {
            continue;
        }
        let name = demangle(symbol.name);
        let range = Range { start: symbol.start, length: symbol.size, depth: 0, func: &name, file: None, call_file: None, call_line: 0, lines: &[] };
        writer.push(&range).map_err(SymbfileError::Io)?;
    }
    let ranges = writer.ranges();
    let out = writer.finish().map_err(SymbfileError::Io)?;
    Ok((out, Summary { ranges, dwarf_ranges, dwarf_units_skipped: dwarf.units_skipped }))
}

/// Whether `[start, end)` overlaps any of the sorted, merged `ranges`.
fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let index = ranges.partition_point(|&(_, range_end)| range_end <= start);
    ranges.get(index).is_some_and(|&(range_start, _)| range_start < end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_with_merged_ranges() {
        let covered = [(0x10, 0x20), (0x40, 0x50)];
        assert!(overlaps(&covered, 0x18, 0x30));
        assert!(overlaps(&covered, 0x00, 0x11));
        assert!(!overlaps(&covered, 0x20, 0x40));
        assert!(!overlaps(&covered, 0x50, 0x60));
    }

    #[test]
    fn own_test_binary_has_dwarf_and_symbol_ranges() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let (bytes, summary) = write(&exe, Vec::new()).unwrap();
        assert!(bytes.starts_with(b"symbfile\x00\x01"));
        // Test binaries are built with debug information (the release profile keeps debug = 1).
        assert!(summary.ranges > 1000, "{summary:?}");
        assert!(summary.dwarf_ranges > 0, "{summary:?}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(write(b"definitely not ELF", Vec::new()), Err(SymbfileError::NotElf)));
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for cut in [4, 64, 100, 4096, 100_000] {
            let _ = write(&exe[..cut.min(exe.len())], Vec::new());
        }
    }
}
