//! A code object's line table: from an instruction position to a source line, as CPython's
//! `PyCode_Addr2Line` computes it.
//!
//! Three formats, all deltas from `co_firstlineno` (`Objects/lnotab_notes.txt`,
//! `Objects/locations.md`):
//! - 3.8, 3.9: `co_lnotab`, (byte offset delta, signed line delta) pairs; a line applies from
//!   the offset its pair reaches.
//! - 3.10: `co_linetable` (PEP 626), (range length in bytes, signed line delta) pairs, a line
//!   delta of -128 meaning "no line".
//! - 3.11 and later: the location table (PEP 657), one variable-length entry per range of
//!   code units.
//!
//! The table is decoded once into the start of each run of instructions on one line, so
//! that a lookup is a binary search. Where CPython has no line (an instruction without
//! location, or past the table's end), the line is that of the nearest instruction before it
//! that has one, or the first line.

use super::versions::Version;
use agent_common::python::INSTRUCTION_MASK;

/// The most bytes of a line table decoded; the rest of a longer one is cut off. Tables this
/// long belong to functions of thousands of lines.
pub const MAX_TABLE_BYTES: usize = 64 * 1024;

/// Where a code object's lines change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTable {
    first_line: u32,
    /// 0: the instruction position counts bytes (3.8, 3.9); 1: code units of 2 bytes.
    unit_shift: u32,
    /// Increasing byte offsets, each with the line of the instructions from there to the next.
    starts: Vec<Start>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    offset: u32,
    line: u32,
}

/// One decoded range: from `offset` to the next range's offset, with CPython's line (`None`
/// where it has none).
type Raw = (u64, Option<i64>);

/// A table that cannot be what CPython wrote.
struct Malformed;

impl LineTable {
    /// Decodes a code object's whole line table (`co_lnotab` before 3.10, `co_linetable`
    /// after). A malformed table gives the first line for every instruction; past
    /// [`MAX_TABLE_BYTES`] the table is cut.
    pub fn new(table: &[u8], first_line: u32, version: Version) -> Self {
        match table.get(..MAX_TABLE_BYTES) {
            Some(prefix) if table.len() > MAX_TABLE_BYTES => Self::from_prefix(prefix, first_line, version),
            _ => Self::decode(table, true, first_line, version),
        }
    }

    /// Decodes the first bytes of a longer table: an entry the cut splits is left out.
    pub fn from_prefix(prefix: &[u8], first_line: u32, version: Version) -> Self {
        Self::decode(prefix.get(..MAX_TABLE_BYTES).unwrap_or(prefix), false, first_line, version)
    }

    /// A table that knows only the first line.
    pub fn first_line_only(first_line: u32, version: Version) -> Self {
        Self { first_line, unit_shift: unit_shift(version), starts: Vec::new() }
    }

    fn decode(table: &[u8], complete: bool, first_line: u32, version: Version) -> Self {
        let first = i64::from(first_line);
        let raw = match (version.major, version.minor) {
            (3, ..=9) => Ok(lnotab(table, first)),
            (3, 10) => Ok(pep626(table, first)),
            _ => locations(table, complete, first),
        };
        match raw {
            Ok(raw) => Self { first_line, unit_shift: unit_shift(version), starts: resolve(&raw, first_line) },
            Err(Malformed) => Self::first_line_only(first_line, version),
        }
    }

    /// The code object's `co_firstlineno`.
    #[cfg(test)]
    pub fn first_line(&self) -> u32 {
        self.first_line
    }

    /// The source line of the instruction at `instruction` (as the BPF walker records it:
    /// `f_lasti` up to 3.10, code units from the bytecode's start from 3.11). The instruction
    /// of a frame not yet started ([`INSTRUCTION_MASK`]) is on the first line.
    pub fn line(&self, instruction: u32) -> u32 {
        if instruction >= INSTRUCTION_MASK {
            return self.first_line;
        }
        let offset = u64::from(instruction) << self.unit_shift;
        match self.starts.partition_point(|start| u64::from(start.offset) <= offset) {
            0 => self.first_line,
            after => self.starts[after - 1].line,
        }
    }
}

fn unit_shift(version: Version) -> u32 {
    if (version.major, version.minor) <= (3, 9) { 0 } else { 1 }
}

/// 3.8, 3.9: the line of an offset takes every pair whose offset is at or before it
/// (`PyCode_Addr2Line` stops at the first pair past it).
fn lnotab(table: &[u8], first: i64) -> Vec<Raw> {
    let mut raw = vec![(0, Some(first))];
    let (mut offset, mut line) = (0u64, first);
    // An odd last byte is not a pair; CPython ignores it too.
    for pair in table.chunks_exact(2) {
        offset += u64::from(pair[0]);
        line += i64::from(pair[1] as i8);
        raw.push((offset, Some(line)));
    }
    raw
}

/// 3.10: each pair is a range; its line delta counts only when it has a line.
fn pep626(table: &[u8], first: i64) -> Vec<Raw> {
    let (mut end, mut line) = (0u64, first);
    let mut raw = Vec::with_capacity(table.len() / 2);
    for pair in table.chunks_exact(2) {
        let start = end;
        end += u64::from(pair[0]);
        let delta = pair[1] as i8;
        raw.push((
            start,
            (delta != -128).then(|| {
                line += i64::from(delta);
                line
            }),
        ));
    }
    raw
}

/// 3.11+: an entry is a byte with bit 7 set (code in bits 3–6, length in code units − 1 in
/// bits 0–2), then bytes without it. Only the start line matters here.
fn locations(table: &[u8], complete: bool, first: i64) -> Result<Vec<Raw>, Malformed> {
    let (mut end, mut line) = (0u64, first);
    let mut raw = Vec::new();
    let mut at = 0;
    while let Some(&head) = table.get(at) {
        if head & 0x80 == 0 {
            return Err(Malformed);
        }
        let next = table[at + 1..].iter().position(|&b| b & 0x80 != 0).map_or(table.len(), |n| at + 1 + n);
        let delta = match (head >> 3) & 15 {
            // No column info (13) and the long form (14) start with a signed varint.
            13 | 14 => match signed_varint(&table[at + 1..next]) {
                Some(delta) => delta,
                // Only a cut table may end inside an entry; that entry is dropped.
                None if !complete && next == table.len() => break,
                None => return Err(Malformed),
            },
            // One-line forms: the delta is in the code.
            code @ 10..=12 => i64::from(code - 10),
            // Short forms (0–9) stay on the line; no location (15) leaves it unchanged.
            _ => 0,
        };
        line += delta;
        raw.push((end, ((head >> 3) & 15 != 15).then_some(line)));
        end += 2 * (u64::from(head & 7) + 1);
        at = next;
    }
    Ok(raw)
}

/// `scan_signed_varint`: 6-bit chunks, least significant first, bit 6 set on all but the
/// last; the lowest bit of the result is the sign.
fn signed_varint(bytes: &[u8]) -> Option<i64> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate() {
        // CPython's is 32 bits wide; anything longer is not a line delta.
        if index >= 6 {
            return None;
        }
        value |= u64::from(byte & 63) << (6 * index);
        if byte & 64 == 0 {
            let magnitude = (value >> 1) as i64;
            return Some(if value & 1 != 0 { -magnitude } else { magnitude });
        }
    }
    None
}

/// Turns ranges into run starts: of ranges starting at one offset only the last counts (the
/// others are empty); a range without a line (or with one no `u32` holds) takes the nearest
/// line before it.
fn resolve(raw: &[Raw], first_line: u32) -> Vec<Start> {
    let mut starts: Vec<Start> = Vec::new();
    let mut known = first_line;
    for (index, &(offset, line)) in raw.iter().enumerate() {
        if raw.get(index + 1).is_some_and(|&(next, _)| next == offset) {
            continue;
        }
        let Ok(offset) = u32::try_from(offset) else { break };
        if let Some(line) = line.and_then(|line| u32::try_from(line).ok()) {
            known = line;
        }
        match starts.last_mut() {
            Some(last) if last.line == known => {}
            _ => starts.push(Start { offset, line: known }),
        }
    }
    starts.shrink_to_fit();
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    const V38: Version = Version { major: 3, minor: 8 };
    const V310: Version = Version { major: 3, minor: 10 };
    const V311: Version = Version { major: 3, minor: 11 };
    const V312: Version = Version { major: 3, minor: 12 };

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test hex")).collect()
    }

    /// Checks every code unit of `0..end` bytes against `(start, end, line)` ranges as
    /// `co_lines()` gives them, `None` taking the line before.
    fn check_ranges(table: &LineTable, ranges: &[(u32, u32, Option<u32>)]) {
        let mut known = table.first_line();
        for &(start, end, line) in ranges {
            known = line.unwrap_or(known);
            for offset in (start..end).step_by(2) {
                assert_eq!(table.line(offset / 2), known, "code unit {}", offset / 2);
            }
        }
    }

    // def f(a):             line 2
    //     x = a + 1
    //     if x:
    //         y = [i for i in range(3)]
    //     try:
    //         return x
    //     finally:
    //         print(1)      line 9
    #[test]
    fn lnotab_3_8() {
        let table = LineTable::new(&hex("000108010401120102010802"), 2, V38);
        let starts = [(0, 3), (8, 4), (12, 5), (30, 6), (32, 7), (40, 9)];
        for (index, &(start, line)) in starts.iter().enumerate() {
            let end = starts.get(index + 1).map_or(60, |s| s.0);
            for offset in start..end {
                assert_eq!(table.line(offset), line, "offset {offset}");
            }
        }
    }

    #[test]
    fn lnotab_negative_delta_and_zero_offset_pairs() {
        // Line 10, +300 in two pairs at offset 0, then back by 5 at offset 4.
        let table = LineTable::new(&[0, 127, 0, 127, 0, 46, 4, (-5i8) as u8], 10, V38);
        assert_eq!(table.line(0), 310);
        assert_eq!(table.line(3), 310);
        assert_eq!(table.line(4), 305);
        assert_eq!(table.line(1000), 305);
    }

    #[test]
    fn pep626_3_10() {
        let table = LineTable::new(&hex("080104011201020104011402"), 2, V310);
        check_ranges(&table, &[(0, 8, Some(3)), (8, 12, Some(4)), (12, 30, Some(5)), (30, 32, Some(6)), (32, 36, Some(7)), (36, 56, Some(9))]);
    }

    #[test]
    fn pep626_no_line_takes_the_line_before() {
        // [0,4) line 5; [4,8) none; [8,8) empty +2; [8,10) +1 → 8.
        let table = LineTable::new(&[4, 0, 4, 0x80, 0, 2, 2, 1], 5, V310);
        assert_eq!(table.line(0), 5);
        assert_eq!(table.line(2), 5);
        assert_eq!(table.line(4), 8);
        // Past the end CPython has no line: the last one stands.
        assert_eq!(table.line(100), 8);
    }

    #[test]
    fn locations_3_11() {
        let table = LineTable::new(&hex("8000d80809884189058041d80708f000010522d80c21d00c219d05986199089c08d00c21d10c21d40c218801f002030511d80f10e5080d886189088c0888088808f88d05886189088c0888088808f8f8f8"), 2, V311);
        check_ranges(&table, &[(0, 2, Some(2)), (2, 12, Some(3)), (12, 16, Some(4)), (16, 66, Some(5)), (66, 68, Some(6)), (68, 70, Some(7)), (70, 102, Some(9)), (102, 104, None), (104, 136, Some(9)), (136, 142, None)]);
    }

    #[test]
    fn locations_3_12_no_location_then_an_earlier_line() {
        let table = LineTable::new(&hex("8000d80809884189058041d90708dc181d98619b08d60c2190318a51d00c218801d00c21f002030511d80f10e4080d88618d08f9f209000d22f8f40800090e88618d08fa"), 2, V312);
        check_ranges(&table, &[(0, 2, Some(2)), (2, 12, Some(3)), (12, 16, Some(4)), (16, 64, Some(5)), (64, 66, Some(6)), (66, 68, Some(7)), (68, 92, Some(9)), (92, 96, None), (96, 102, Some(5)), (102, 104, None), (104, 128, Some(9)), (128, 134, None)]);
    }

    #[test]
    fn locations_long_form_and_no_columns() {
        // Long form (14), 2 units, line +200 (svarint 400 = 0x10 | 0x40, 0x06), end/columns 0;
        // no columns (13), 1 unit, line -3 (svarint 7); one-line form 2 (12), 1 unit: +2.
        let table = LineTable::new(&[0x80 | 14 << 3 | 1, 0x50, 0x06, 0, 1, 1, 0x80 | 13 << 3, 7, 0x80 | 12 << 3, 0, 0], 1, V311);
        assert_eq!(table.line(0), 201);
        assert_eq!(table.line(1), 201);
        assert_eq!(table.line(2), 198);
        assert_eq!(table.line(3), 200);
    }

    #[test]
    fn not_started_is_the_first_line() {
        let table = LineTable::new(&[0x80 | 11 << 3, 0, 0], 7, V311);
        assert_eq!(table.line(0), 8);
        assert_eq!(table.line(INSTRUCTION_MASK), 7);
        assert_eq!(table.line(u32::MAX), 7);
        assert_eq!(LineTable::new(&[2, 1], 7, V38).line(INSTRUCTION_MASK), 7);
    }

    #[test]
    fn malformed_tables_give_the_first_line() {
        let first_only = |table: &[u8]| {
            let table = LineTable::new(table, 42, V311);
            (0..64).all(|unit| table.line(unit) == 42)
        };
        assert!(first_only(&[]));
        assert!(first_only(&[0x05, 0x80 | 11 << 3, 0, 0]), "starts with a continuation byte");
        assert!(first_only(&[0x80 | 11 << 3, 0, 0, 0x80 | 14 << 3, 0x41]), "varint cut short");
        assert!(first_only(&[0x80 | 13 << 3, 0x41, 0x41, 0x41, 0x41, 0x41, 0x41, 0x01]), "varint too long");
        // Lines below zero have no line: the first stands.
        assert!(first_only(&[0x80 | 13 << 3, 0x7f, 0x01]));
    }

    #[test]
    fn a_cut_table_keeps_its_whole_entries() {
        let mut table = Vec::new();
        while table.len() < MAX_TABLE_BYTES - 3 {
            table.extend_from_slice(&[0x80 | 11 << 3, 0, 0]); // one unit, next line
        }
        let whole_entries = table.len() / 3;
        table.extend_from_slice(&[0x80 | 14 << 3, 0x41, 0x41, 0x41, 0x01]); // split by the cut
        let table = LineTable::new(&table, 0, V311);
        assert_eq!(table.line(9), 10);
        assert_eq!(table.line(whole_entries as u32 - 1), whole_entries as u32);
        assert_eq!(table.line(whole_entries as u32 + 5), whole_entries as u32);
    }

    #[test]
    fn huge_lnotab_stays_bounded() {
        let table = LineTable::new(&vec![255; 4 * MAX_TABLE_BYTES], 1, V38);
        assert_eq!(table.line(0), 1);
        assert_eq!(table.line(255), 0); // -1 per pair from line 1
        assert!(table.starts.len() <= MAX_TABLE_BYTES / 2 + 1);
    }
}
