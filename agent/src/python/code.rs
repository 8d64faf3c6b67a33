//! Naming a Python frame: its code object's name, file and line table, read from the live
//! process.
//!
//! The BPF walker records a code object's address and a tag of the fields that name it
//! ([`code_tag`]). [`read_code`] reads the same window and computes the same tag, so that a
//! caller can tell a code object from whatever took its memory after it was freed.

use super::{
    linetable::{LineTable, MAX_TABLE_BYTES},
    memory::ProcessMemory,
    versions::VersionLayout,
};
use agent_common::python::{code_tag, CODE_WINDOW};
use std::io;

/// The most characters of a name or file name kept; a longer one is cut and ends in "…".
pub const MAX_CHARS: usize = 1024;

/// A code object as a profile names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeObject {
    /// `co_qualname` from 3.11, `co_name` before.
    pub name: String,
    /// `co_filename`.
    pub filename: String,
    /// `co_firstlineno`.
    pub first_line: u32,
    /// [`code_tag`] of the object's fields, as the BPF walker computes it.
    pub tag: u32,
    /// Instruction → line.
    pub lines: LineTable,
}

/// Why a code object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// A read of the process's memory failed (the object is gone, or the address is wrong).
    #[error("cannot read the {what} at {address:#x}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// Where.
        address: u64,
        /// The read's error.
        #[source]
        source: io::Error,
    },
    /// The object's type is not `PyCode_Type`.
    #[error("the object at {address:#x} is not a code object (its type is at {found:#x})")]
    NotCode {
        /// The object.
        address: u64,
        /// Its `ob_type`.
        found: u64,
    },
    /// A name is not a string this reader takes (not compact, an unknown kind, a bad length).
    #[error("the {what} at {address:#x} is not a readable str: {reason}")]
    BadString {
        /// Which string.
        what: &'static str,
        /// Its address.
        address: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The line table's size is negative.
    #[error("the line table at {address:#x} has size {size}")]
    BadLineTable {
        /// The bytes object.
        address: u64,
        /// Its `ob_size`.
        size: i64,
    },
    /// The layout puts a field outside what is read.
    #[error("the {version} layout puts a field at {offset} outside the object read")]
    Layout {
        /// The layout's version.
        version: super::versions::Version,
        /// The field's offset.
        offset: u16,
    },
}

/// Reads the code object at `address` in the process: its names, first line, line table,
/// and its tag from the same bytes the BPF walker hashes. `code_type` is the address of
/// `PyCode_Type` in the process.
pub fn read_code(memory: &ProcessMemory, layout: &VersionLayout, code_type: u64, address: u64) -> Result<CodeObject, CodeError> {
    let mut window = [0u8; CODE_WINDOW];
    memory.read(address, &mut window).map_err(|source| CodeError::Read { what: "code object", address, source })?;
    let field = |offset: u16| u64_at(&window, offset).ok_or(CodeError::Layout { version: layout.version, offset });
    let found = field(8)?;
    if found != code_type {
        return Err(CodeError::NotCode { address, found });
    }
    let walker = &layout.walker;
    let filename = field(walker.code_filename)?;
    let name = field(walker.code_name)?;
    let linetable = field(walker.code_linetable)?;
    let first_line =
        u32_at(&window, walker.code_firstlineno).ok_or(CodeError::Layout { version: layout.version, offset: walker.code_firstlineno })?;
    Ok(CodeObject {
        name: read_string(memory, layout, name, "name")?,
        filename: read_string(memory, layout, filename, "file name")?,
        first_line,
        tag: code_tag(filename, name, linetable, first_line),
        lines: read_line_table(memory, layout, linetable, first_line)?,
    })
}

/// A `str` (PEP 393). Only compact strings are read: the characters follow the object, at
/// `ascii_size` for ASCII ones and `compact_size` for the others. Code objects' names and
/// file names are always compact; anything else means the memory is not what it should be.
fn read_string(memory: &ProcessMemory, layout: &VersionLayout, address: u64, what: &'static str) -> Result<String, CodeError> {
    let strings = &layout.strings;
    let bad = |reason| CodeError::BadString { what, address, reason };
    let layout_error = |offset| CodeError::Layout { version: layout.version, offset };
    // Every str starts with a PyASCIIObject, which holds the length and the state.
    let mut header = [0u8; 64];
    let header = header.get_mut(..usize::from(strings.ascii_size)).ok_or(layout_error(strings.ascii_size))?;
    memory.read(address, header).map_err(|source| CodeError::Read { what, address, source })?;
    let length = u64_at(header, strings.length).ok_or(layout_error(strings.length))? as i64;
    let state = u32_at(header, strings.state).ok_or(layout_error(strings.state))?;
    // The state's bits, the same in 3.8–3.13: interned 0–1, kind 2–4, compact 5, ascii 6,
    // then `ready` up to 3.11 (a string not ready has no characters yet).
    let (kind, compact, ascii) = ((state >> 2) & 7, state & 1 << 5 != 0, state & 1 << 6 != 0);
    if !compact {
        return Err(bad("not compact"));
    }
    if layout.version.minor <= 11 && state & 1 << 7 == 0 {
        return Err(bad("not ready"));
    }
    let width = match (ascii, kind) {
        (true, 1) => 1,
        (false, 1 | 2 | 4) => kind as usize,
        _ => return Err(bad("unknown kind")),
    };
    let length = usize::try_from(length).map_err(|_| bad("negative length"))?;
    let (count, cut) = if length > MAX_CHARS { (MAX_CHARS - 1, true) } else { (length, false) };
    let data = address.saturating_add(u64::from(if ascii { strings.ascii_size } else { strings.compact_size }));
    let mut bytes = vec![0u8; count * width];
    memory.read(data, &mut bytes).map_err(|source| CodeError::Read { what, address: data, source })?;
    let mut text = decode(&bytes, width, ascii).ok_or(bad("characters out of range"))?;
    if cut {
        text.push('…');
    }
    Ok(text)
}

/// Characters of `width` bytes each. A lone surrogate (a file name's undecodable byte under
/// `surrogateescape`) becomes U+FFFD; a value past U+10FFFF, or a byte ≥ 0x80 in an ASCII
/// string, is not a string at all.
fn decode(bytes: &[u8], width: usize, ascii: bool) -> Option<String> {
    match width {
        1 if ascii => bytes.is_ascii().then(|| bytes.iter().map(|&b| char::from(b)).collect()),
        1 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        2 => Some(bytes.chunks_exact(2).map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('\u{fffd}')).collect()),
        _ => bytes
            .chunks_exact(4)
            .map(|c| {
                let value = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                match char::from_u32(value) {
                    Some(ch) => Some(ch),
                    None if (0xd800..0xe000).contains(&value) => Some('\u{fffd}'),
                    None => None,
                }
            })
            .collect(),
    }
}

/// The line table, a `bytes` object (`ob_size` at 16, the data at `bytes_data`); only its
/// first [`MAX_TABLE_BYTES`] are read.
fn read_line_table(memory: &ProcessMemory, layout: &VersionLayout, address: u64, first_line: u32) -> Result<LineTable, CodeError> {
    let what = "line table";
    let size = memory.read_u64(address.saturating_add(16)).map_err(|source| CodeError::Read { what, address, source })? as i64;
    let length = usize::try_from(size).map_err(|_| CodeError::BadLineTable { address, size })?;
    let mut bytes = vec![0u8; length.min(MAX_TABLE_BYTES)];
    let data = address.saturating_add(u64::from(layout.bytes_data));
    memory.read(data, &mut bytes).map_err(|source| CodeError::Read { what, address: data, source })?;
    Ok(if length > MAX_TABLE_BYTES {
        LineTable::from_prefix(&bytes, first_line, layout.version)
    } else {
        LineTable::new(&bytes, first_line, layout.version)
    })
}

fn u64_at(bytes: &[u8], offset: u16) -> Option<u64> {
    let offset = usize::from(offset);
    Some(u64::from_le_bytes(bytes.get(offset..offset + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], offset: u16) -> Option<u32> {
    let offset = usize::from(offset);
    Some(u32::from_le_bytes(bytes.get(offset..offset + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests;
