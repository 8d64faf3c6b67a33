//! Writes ranges as a symbfile, streaming: ranges are encoded as they come, in chunks that
//! each start with the string table their indices refer to, so memory stays bounded by one
//! chunk whatever the file.

use std::{collections::HashMap, io::Write};

use super::wire::{self, ElfVa, LineTable, MessageType, RangeV1, StringTableV1};

/// A chunk is written once its strings reach this many bytes…
const CHUNK_STRING_BYTES: usize = 1 << 20;
/// …or its encoded ranges this many.
const CHUNK_RANGE_BYTES: usize = 4 << 20;
/// Longer names are cut (at a character boundary): C++ template names can run to megabytes.
const MAX_STRING_BYTES: usize = 4096;
/// Most line-table entries per range (a message stays far below the 16 MiB limit).
const MAX_LINES_PER_RANGE: usize = 1 << 20;

/// One range to write: `[start, start + length)` of function `func` at inline `depth`.
#[derive(Debug, Clone, Copy)]
pub struct Range<'a> {
    /// First address (the file's own virtual address).
    pub start: u64,
    /// Bytes covered.
    pub length: u64,
    /// 0 for a function, `n + 1` for what is inlined into a depth-`n` range.
    pub depth: u32,
    /// The function's name, demangled.
    pub func: &'a str,
    /// The file `lines` refer to.
    pub file: Option<&'a str>,
    /// For an inlined instance: where it is called from.
    pub call_file: Option<&'a str>,
    /// For an inlined instance: the line it is called from.
    pub call_line: u32,
    /// `(offset from start, line)`, sorted by offset: each line lasts until the next.
    pub lines: &'a [(u32, u32)],
}

/// Where ranges go: a symbfile [`Writer`], or an in-memory index.
pub trait RangeSink {
    /// Adds one range.
    fn push(&mut self, range: &Range<'_>) -> std::io::Result<()>;
    /// Ranges taken so far.
    fn ranges(&self) -> u64;
}

impl<W: Write> RangeSink for Writer<W> {
    fn push(&mut self, range: &Range<'_>) -> std::io::Result<()> {
        Writer::push(self, range)
    }

    fn ranges(&self) -> u64 {
        Writer::ranges(self)
    }
}

/// A symbfile being written to `W`.
pub struct Writer<W: Write> {
    out: W,
    /// The current chunk's strings and their indices.
    strings: HashMap<String, u32>,
    string_bytes: usize,
    /// The current chunk's framed range messages.
    pending: Vec<u8>,
    previous_start: Option<u64>,
    ranges: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a symbfile: the magic and the header.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        let mut head = wire::MAGIC.to_vec();
        wire::frame(&mut head, MessageType::Header, &());
        out.write_all(&head)?;
        Ok(Writer { out, strings: HashMap::new(), string_bytes: 0, pending: Vec::new(), previous_start: None, ranges: 0 })
    }

    /// Adds one range.
    pub fn push(&mut self, range: &Range<'_>) -> std::io::Result<()> {
        let elf_va = match self.previous_start {
            // Deltas are added with wrapping arithmetic by readers.
            Some(previous) => ElfVa::Delta(range.start.wrapping_sub(previous) as i64),
            None => ElfVa::Set(range.start),
        };
        self.previous_start = Some(range.start);
        let lines = &range.lines[..range.lines.len().min(MAX_LINES_PER_RANGE)];
        let line_table = (!lines.is_empty()).then(|| {
            let mut previous = 0;
            let offset = lines
                .iter()
                .map(|&(offset, _)| {
                    let delta = offset.saturating_sub(previous);
                    previous = offset.max(previous);
                    delta
                })
                .collect();
            LineTable { offset, line_number: lines.iter().map(|&(_, line)| line).collect() }
        });
        let message = RangeV1 {
            elf_va: Some(elf_va),
            length: range.length,
            func_ref: Some(self.intern(range.func)),
            file_ref: range.file.map(|file| self.intern(file)),
            call_line: range.call_line,
            call_file_ref: range.call_file.map(|file| self.intern(file)),
            depth: range.depth,
            line_table,
        };
        wire::frame(&mut self.pending, MessageType::RangeV1, &message);
        self.ranges += 1;
        if self.string_bytes >= CHUNK_STRING_BYTES || self.pending.len() >= CHUNK_RANGE_BYTES {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Ranges written so far.
    pub fn ranges(&self) -> u64 {
        self.ranges
    }

    /// Writes what is left and returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.flush_chunk()?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn intern(&mut self, text: &str) -> u32 {
        let text = truncate(text);
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.strings.len() as u32;
        self.string_bytes += text.len();
        self.strings.insert(text.to_owned(), index);
        index
    }

    /// The chunk's string table (which replaces the previous one for readers), then its ranges.
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut table = vec![String::new(); self.strings.len()];
        for (text, index) in self.strings.drain() {
            table[index as usize] = text;
        }
        let mut framed = Vec::new();
        wire::frame(&mut framed, MessageType::StringTableV1, &StringTableV1 { strings: table });
        self.out.write_all(&framed)?;
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        self.string_bytes = 0;
        Ok(())
    }
}

fn truncate(text: &str) -> &str {
    if text.len() <= MAX_STRING_BYTES {
        return text;
    }
    let mut end = MAX_STRING_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the format's notes: `foo` at 0x1000 (0x40 bytes, lines 10, 11,
    /// 13) with `bar` inlined at 0x1010..0x1020 from line 12.
    #[test]
    fn writes_the_framing_and_a_chunk_with_its_string_table() {
        let mut writer = Writer::new(Vec::new()).unwrap();
        let foo = Range { start: 0x1000, length: 0x40, depth: 0, func: "foo", file: Some("foo.c"), call_file: None, call_line: 0, lines: &[(0, 10), (8, 11), (0x20, 13)] };
        let bar = Range { start: 0x1010, length: 0x10, depth: 1, func: "bar", file: Some("foo.c"), call_file: Some("foo.c"), call_line: 12, lines: &[(0, 3)] };
        writer.push(&foo).unwrap();
        writer.push(&bar).unwrap();
        let bytes = writer.finish().unwrap();
        assert_eq!(&bytes[..10], b"symbfile\x00\x01");
        // String table: ["foo", "foo.c", "bar"] (len 17, type 4).
        assert_eq!(&bytes[10..12], &[17, 4]);
        assert_eq!(&bytes[12..29], b"\x0a\x03foo\x0a\x05foo.c\x0a\x03bar");
        // foo: setElfVA 0x1000, length 0x40, funcRef 0, fileRef 1, depth 0 left out, line
        // table with delta offsets [0, 8, 24].
        let foo_body = [0x10, 0x40, 0x48, 0x00, 0x50, 0x01, 0x42, 0x0a, 0x0a, 0x03, 0x00, 0x08, 0x18, 0x12, 0x03, 0x0a, 0x0b, 0x0d, 0x60, 0x80, 0x20];
        assert_eq!(bytes[29] as usize, foo_body.len());
        assert_eq!(bytes[30], 2);
        let mut got = bytes[31..31 + foo_body.len()].to_vec();
        let mut want = foo_body.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "same fields, in prost's order");
        assert_eq!(writer_ranges(&bytes), 2);
    }

    fn writer_ranges(bytes: &[u8]) -> usize {
        let mut at = 10;
        let mut ranges = 0;
        while at < bytes.len() {
            let (len, kind) = (bytes[at] as usize, bytes[at + 1]);
            ranges += usize::from(kind == 2);
            at += 2 + len;
        }
        ranges
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(3000);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_STRING_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
