//! Ranges from DWARF, where a file carries it: every function with its inlined calls as a
//! tree of ranges (depth 0 the function, depth `n + 1` what is inlined into depth `n`), each
//! with the lines of the code that is its own (not that of what is inlined into it).
//!
//! A range whose own lines come from more than one file (code inlined from a header, say) is
//! split into consecutive ranges at the same depth, one per file, since a range has one file.
//! Work is per compilation unit, so memory is bounded by the largest unit.

use std::{borrow::Cow, collections::HashMap, path::PathBuf, rc::Rc};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, Unit, UnitOffset};
use object::{Object, ObjectSection};

use super::writer::{Range, RangeSink};
use crate::demangle::demangle;

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;
type Dwarf<'a> = gimli::Dwarf<Slice<'a>>;

/// How many `DW_AT_abstract_origin` / `DW_AT_specification` links a name is followed through.
const MAX_NAME_HOPS: usize = 8;
/// Inlining deeper than this is cut (readers keep depths in 16 bits; real code stays far below).
const MAX_DEPTH: u32 = 256;

/// What reading the DWARF gave.
#[derive(Debug, Default, Clone)]
pub struct DwarfOutcome {
    /// Depth-0 address ranges covered, sorted and merged: symbol-table ranges overlapping them
    /// are left out.
    pub covered: Vec<(u64, u64)>,
    /// Compilation units skipped because they could not be parsed.
    pub units_skipped: u64,
}

/// One line-table row of a unit.
#[derive(Debug, Clone, Copy)]
struct Row {
    address: u64,
    file: u64,
    line: u32,
    /// The end of a sequence: no line from here.
    end: bool,
}

/// A unit's line rows, sorted by address, and its file names.
struct Lines {
    rows: Vec<Row>,
    files: Vec<Option<String>>,
}

impl Lines {
    /// Non-end rows in `[lo, hi)`.
    fn within(&self, lo: u64, hi: u64) -> &[Row] {
        let from = self.rows.partition_point(|r| r.address < lo);
        let to = self.rows.partition_point(|r| r.address < hi);
        &self.rows[from..to]
    }

    /// The row in effect at `address`.
    fn at(&self, address: u64) -> Option<Row> {
        let index = self.rows.partition_point(|r| r.address <= address).checked_sub(1)?;
        Some(self.rows[index]).filter(|r| !r.end)
    }

    fn file(&self, index: u64) -> Option<&str> {
        self.files.get(index as usize)?.as_deref()
    }
}

/// A function or inlined instance within one function's tree, in pre-order.
#[derive(Debug)]
struct Node {
    depth: u32,
    func: Rc<str>,
    call_file: Option<u64>,
    call_line: u32,
    ranges: Vec<(u64, u64)>,
    /// Indices of the nodes inlined directly into this one.
    children: Vec<usize>,
}

/// Loads `file`'s DWARF sections (decompressing them if needed) and writes its ranges.
pub fn write_ranges<S: RangeSink>(file: &object::File<'_>, writer: &mut S, max_ranges: u64) -> std::io::Result<DwarfOutcome> {
    let endian = if file.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, object::Error> {
        match file.section_by_name(id.name()) {
            Some(section) => section.uncompressed_data(),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    };
    let mut outcome = DwarfOutcome::default();
    let Ok(sections) = gimli::DwarfSections::load(load) else {
        outcome.units_skipped += 1;
        return Ok(outcome);
    };
    if file.section_by_name(".debug_info").is_none() {
        return Ok(outcome);
    }
    let dwarf = sections.borrow(|section| EndianSlice::new(section, endian));
    let mut headers = dwarf.units();
    loop {
        let header = match headers.next() {
            Ok(Some(header)) => header,
            Ok(None) => break,
            // The rest of .debug_info cannot be walked past a broken header.
            Err(_) => {
                outcome.units_skipped += 1;
                break;
            }
        };
        if writer.ranges() >= max_ranges {
            break;
        }
        match dwarf.unit(header).map_err(UnitError::from).and_then(|unit| write_unit(&dwarf, &unit, writer, &mut outcome.covered, max_ranges)) {
            Ok(()) => {}
            Err(UnitError::Dwarf) => outcome.units_skipped += 1,
            Err(UnitError::Io(error)) => return Err(error),
        }
    }
    outcome.covered.sort_unstable();
    outcome.covered = merge(std::mem::take(&mut outcome.covered));
    Ok(outcome)
}

/// Errors within one unit: a parse error skips the unit, a write error stops everything.
enum UnitError {
    Dwarf,
    Io(std::io::Error),
}

impl From<gimli::Error> for UnitError {
    fn from(_: gimli::Error) -> Self {
        UnitError::Dwarf
    }
}

fn write_unit<'d, S: RangeSink>(dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, writer: &mut S, covered: &mut Vec<(u64, u64)>, max_ranges: u64) -> Result<(), UnitError> {
    let lines = read_lines(dwarf, unit)?;
    let mut functions = Vec::new();
    find_functions(unit, &mut functions)?;
    let mut names = Names::default();
    for offset in functions {
        if writer.ranges() >= max_ranges {
            break;
        }
        let nodes = function_tree(dwarf, unit, offset, &mut names)?;
        if let Some(root) = nodes.first() {
            covered.extend(root.ranges.iter().copied());
        }
        write_function(&nodes, &lines, writer).map_err(UnitError::Io)?;
    }
    Ok(())
}

/// Offsets of the unit's function definitions that have code (`DW_TAG_subprogram` with
/// address ranges), wherever they are nested (namespaces, classes, other functions).
fn find_functions<'d>(unit: &Unit<Slice<'d>>, out: &mut Vec<UnitOffset>) -> gimli::Result<()> {
    let mut cursor = unit.entries();
    while let Some(entry) = cursor.next_dfs()? {
        if entry.tag() == gimli::DW_TAG_subprogram && has_code(entry) {
            out.push(entry.offset());
        }
    }
    Ok(())
}

fn has_code<'d>(entry: &gimli::DebuggingInformationEntry<Slice<'d>>) -> bool {
    entry.attr(gimli::DW_AT_low_pc).is_some() || entry.attr(gimli::DW_AT_ranges).is_some()
}

/// The function at `offset` and everything inlined into it, in pre-order.
fn function_tree<'d>(dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, offset: UnitOffset, names: &mut Names) -> gimli::Result<Vec<Node>> {
    let mut tree = unit.entries_tree(Some(offset))?;
    let root = tree.root()?;
    let mut nodes = Vec::new();
    let entry = root.entry();
    let Some(func) = names.of(dwarf, unit, entry) else { return Ok(nodes) };
    let ranges = code_ranges(dwarf, unit, entry)?;
    if ranges.is_empty() {
        return Ok(nodes);
    }
    nodes.push(Node { depth: 0, func, call_file: None, call_line: 0, ranges, children: Vec::new() });
    collect_inlined(dwarf, unit, root, 0, &mut nodes, names)?;
    Ok(nodes)
}

/// Adds the inlined calls under `node` (through lexical blocks) as children of `parent`.
fn collect_inlined<'d>(dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, node: gimli::EntriesTreeNode<'_, '_, Slice<'d>>, parent: usize, nodes: &mut Vec<Node>, names: &mut Names) -> gimli::Result<()> {
    let mut children = node.children();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        match entry.tag() {
            gimli::DW_TAG_inlined_subroutine if nodes[parent].depth < MAX_DEPTH => {
                let ranges = code_ranges(dwarf, unit, entry)?;
                if ranges.is_empty() {
                    continue;
                }
                let Some(func) = names.of(dwarf, unit, entry) else { continue };
                let call_file = match entry.attr_value(gimli::DW_AT_call_file) {
                    Some(AttributeValue::FileIndex(index)) => Some(index),
                    Some(AttributeValue::Udata(index)) => Some(index),
                    _ => None,
                };
                let call_line = match entry.attr_value(gimli::DW_AT_call_line) {
                    Some(AttributeValue::Udata(line)) => u32::try_from(line).unwrap_or(0),
                    Some(value) => value.udata_value().and_then(|line| u32::try_from(line).ok()).unwrap_or(0),
                    None => 0,
                };
                let index = nodes.len();
                nodes.push(Node { depth: nodes[parent].depth + 1, func, call_file, call_line, ranges, children: Vec::new() });
                nodes[parent].children.push(index);
                collect_inlined(dwarf, unit, child, index, nodes, names)?;
            }
            gimli::DW_TAG_lexical_block | gimli::DW_TAG_try_block | gimli::DW_TAG_catch_block => collect_inlined(dwarf, unit, child, parent, nodes, names)?,
            // Nested function definitions are functions of their own (found by find_functions).
            _ => {}
        }
    }
    Ok(())
}

/// The entry's code ranges, leaving out what a linker discarded (address 0 or a tombstone).
fn code_ranges<'d>(dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, entry: &gimli::DebuggingInformationEntry<Slice<'d>>) -> gimli::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut iter = dwarf.die_ranges(unit, entry)?;
    while let Some(range) = iter.next()? {
        if range.begin != 0 && range.begin < range.end && range.begin < u64::MAX - 1 {
            ranges.push((range.begin, range.end));
        }
    }
    ranges.sort_unstable();
    Ok(ranges)
}

/// Function names of one unit. An inlined function is named once however many times it is
/// inlined: demangling is most of the work otherwise.
#[derive(Default)]
struct Names {
    /// By the offset of the entry a reference led to.
    referenced: HashMap<UnitOffset, Option<Rc<str>>>,
}

impl Names {
    /// The entry's name: its linkage name demangled, else its plain name, following the links
    /// from inlined and out-of-line instances to the declaration that has them.
    fn of<'d>(&mut self, dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, entry: &gimli::DebuggingInformationEntry<Slice<'d>>) -> Option<Rc<str>> {
        self.resolve(dwarf, unit, entry, MAX_NAME_HOPS)
    }

    fn resolve<'d>(&mut self, dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, entry: &gimli::DebuggingInformationEntry<Slice<'d>>, hops: usize) -> Option<Rc<str>> {
        let string = |attribute| entry.attr_value(attribute).and_then(|value| dwarf.attr_string(unit, value).ok()).map(|s| s.to_string_lossy().into_owned());
        if let Some(linkage) = string(gimli::DW_AT_linkage_name).or_else(|| string(gimli::DW_AT_MIPS_linkage_name)) {
            return Some(demangle(&linkage).into());
        }
        if let Some(plain) = string(gimli::DW_AT_name) {
            return Some(plain.into());
        }
        let target = match entry.attr_value(gimli::DW_AT_abstract_origin).or_else(|| entry.attr_value(gimli::DW_AT_specification)) {
            Some(AttributeValue::UnitRef(offset)) if hops > 0 => offset,
            // A reference into another unit (LTO): the symbol table names it instead.
            _ => return None,
        };
        if let Some(known) = self.referenced.get(&target) {
            return known.clone();
        }
        let name = unit.entry(target).ok().and_then(|next| self.resolve(dwarf, unit, &next, hops - 1));
        self.referenced.insert(target, name.clone());
        name
    }
}

/// The unit's line rows (sequences a linker discarded, starting at address 0, left out) and
/// its file names (directory and compilation directory joined in).
fn read_lines<'d>(dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>) -> gimli::Result<Lines> {
    let Some(program) = unit.line_program.clone() else { return Ok(Lines { rows: Vec::new(), files: Vec::new() }) };
    let header = program.header().clone();
    let mut files = Vec::new();
    // DWARF 5 numbers files from 0, earlier versions from 1 (`file` handles both).
    for index in 0..=header.file_names().len() as u64 {
        files.push(header.file(index).map(|entry| file_path(dwarf, unit, &header, entry)));
    }
    let mut rows = Vec::new();
    let mut sequence = Vec::new();
    let mut iter = program.rows();
    while let Some((_, row)) = iter.next_row()? {
        let line = row.line().map_or(0, |l| u32::try_from(l.get()).unwrap_or(u32::MAX));
        sequence.push(Row { address: row.address(), file: row.file_index(), line, end: row.end_sequence() });
        if row.end_sequence() {
            if sequence.first().is_some_and(|first| first.address != 0) {
                rows.append(&mut sequence);
            }
            sequence.clear();
        }
    }
    // At one address a sequence's end comes before the next sequence's start.
    rows.sort_by_key(|r| (r.address, !r.end));
    Ok(Lines { rows, files })
}

fn file_path<'d>(dwarf: &Dwarf<'d>, unit: &Unit<Slice<'d>>, header: &gimli::LineProgramHeader<Slice<'d>>, entry: &gimli::FileEntry<Slice<'d>>) -> String {
    let text = |value| dwarf.attr_string(unit, value).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut path = PathBuf::new();
    if let Some(dir) = &unit.comp_dir {
        path.push(dir.to_string_lossy().as_ref());
    }
    if let Some(dir) = entry.directory(header) {
        path.push(text(dir));
    }
    path.push(text(entry.path_name()));
    path.to_string_lossy().into_owned()
}

/// Writes the ranges of one function's tree.
fn write_function<S: RangeSink>(nodes: &[Node], lines: &Lines, writer: &mut S) -> std::io::Result<()> {
    for node in nodes {
        let children: Vec<(u64, u64)> = {
            let mut all: Vec<(u64, u64)> = node.children.iter().flat_map(|&c| nodes[c].ranges.iter().copied()).collect();
            all.sort_unstable();
            merge(all)
        };
        let call_file = node.call_file.and_then(|index| lines.file(index));
        for &(lo, hi) in &node.ranges {
            for segment in segments(lo, hi, &children, lines) {
                let relative: Vec<(u32, u32)> = segment.rows.iter().map(|r| ((r.address - segment.start) as u32, r.line)).collect();
                writer.push(&Range {
                    start: segment.start,
                    length: segment.end - segment.start,
                    depth: node.depth,
                    func: &node.func,
                    file: segment.file.and_then(|index| lines.file(index)),
                    call_file,
                    call_line: node.call_line,
                    lines: &relative,
                })?;
            }
        }
    }
    Ok(())
}

/// A part of a range whose own lines all come from one file.
struct Segment {
    start: u64,
    end: u64,
    file: Option<u64>,
    rows: Vec<Row>,
}

/// Splits `[lo, hi)` where the file of its own lines changes. Its own lines are the rows not
/// inside `children` (what is inlined into it), plus the row in effect where each child ends,
/// as the code after an inlined call continues that row. The segments tile `[lo, hi)`.
fn segments(lo: u64, hi: u64, children: &[(u64, u64)], lines: &Lines) -> Vec<Segment> {
    let inside = |address: u64| {
        let index = children.partition_point(|&(start, _)| start <= address);
        index > 0 && address < children[index - 1].1
    };
    let mut rows: Vec<Row> = lines.within(lo, hi).iter().filter(|r| !r.end && !inside(r.address)).copied().collect();
    for &(_, end) in children {
        if end > lo && end < hi && !inside(end) {
            if let Some(row) = lines.at(end) {
                rows.push(Row { address: end, ..row });
            }
        }
    }
    rows.sort_by_key(|r| r.address);
    let mut segments: Vec<Segment> = Vec::new();
    for row in last_row_per_address(rows) {
        match segments.last_mut() {
            Some(last) if last.file == Some(row.file) => last.rows.push(row),
            last => {
                let start = if last.is_none() { lo } else { row.address };
                if let Some(previous) = last {
                    previous.end = start;
                }
                segments.push(Segment { start, end: hi, file: Some(row.file), rows: vec![row] });
            }
        }
    }
    if segments.is_empty() {
        segments.push(Segment { start: lo, end: hi, file: None, rows: Vec::new() });
    }
    segments
}

/// Of several rows at one address (a line program steps through lines without moving), the
/// last is the one in effect, as debuggers take it.
fn last_row_per_address(sorted: Vec<Row>) -> Vec<Row> {
    let mut kept: Vec<Row> = Vec::with_capacity(sorted.len());
    for row in sorted {
        match kept.last_mut() {
            Some(last) if last.address == row.address => *last = row,
            _ => kept.push(row),
        }
    }
    kept
}

/// Merges overlapping or touching sorted ranges.
fn merge(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(rows: &[(u64, u64, u32)], end: u64) -> Lines {
        let mut rows: Vec<Row> = rows.iter().map(|&(address, file, line)| Row { address, file, line, end: false }).collect();
        rows.push(Row { address: end, file: 0, line: 0, end: true });
        Lines { rows, files: vec![Some("a.c".into()), Some("b.h".into())] }
    }

    #[test]
    fn own_lines_skip_inlined_code_and_resume_after_it() {
        // foo: 0x1000..0x1040, lines 10 @0, 11 @8, bar's line 3 (b.h) @0x10, 13 @0x20.
        let lines = lines(&[(0x1000, 0, 10), (0x1008, 0, 11), (0x1010, 1, 3), (0x1020, 0, 13)], 0x1040);
        let segments = segments(0x1000, 0x1040, &[(0x1010, 0x1020)], &lines);
        assert_eq!(segments.len(), 1);
        let got: Vec<(u64, u32)> = segments[0].rows.iter().map(|r| (r.address, r.line)).collect();
        assert_eq!(got, vec![(0x1000, 10), (0x1008, 11), (0x1020, 13)]);
        assert_eq!((segments[0].start, segments[0].end), (0x1000, 0x1040));
    }

    #[test]
    fn a_range_whose_lines_change_file_is_split_and_the_parts_tile_it() {
        let lines = lines(&[(0x2000, 0, 1), (0x2004, 1, 50), (0x2010, 0, 2)], 0x2020);
        let parts: Vec<(u64, u64, Option<u64>)> = segments(0x2000, 0x2020, &[], &lines).iter().map(|s| (s.start, s.end, s.file)).collect();
        assert_eq!(parts, vec![(0x2000, 0x2004, Some(0)), (0x2004, 0x2010, Some(1)), (0x2010, 0x2020, Some(0))]);
    }

    #[test]
    fn overlapping_ranges_merge() {
        assert_eq!(merge(vec![(1, 5), (3, 8), (8, 9), (20, 30)]), vec![(1, 9), (20, 30)]);
    }
}
