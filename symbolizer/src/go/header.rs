//! The pcHeader at the start of `.gopclntab`: which layout the table uses and where its
//! sub-tables (function names, compilation units, files, pc-value tables, functab) start.
//!
//! Layout (runtime/symtab.go `pcHeader`): magic u32, two pad bytes, minLC u8, ptrSize u8,
//! then pointer-sized words nfunc, nfiles, [textStart since 1.18], funcnameOffset,
//! cuOffset, filetabOffset, pctabOffset, pclnOffset. The offsets are from the header.

use std::{fmt, ops::Range};

use super::reader::{u32_at, u8_at, word_at};
use crate::Error;

/// Which pclntab layout a Go binary uses. Each Go release that changed the table's shape
/// got a new magic number; releases in between share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GoVersion {
    /// Go 1.16 and 1.17 (magic `0xfffffffa`): functab entries and funcdata are absolute
    /// pointers.
    Go116,
    /// Go 1.18 and 1.19 (magic `0xfffffff0`): functab entries are 32-bit offsets from
    /// `textStart`, funcdata offsets from `moduledata.gofunc`.
    Go118,
    /// Go 1.20 and later (magic `0xfffffff1`): `_func` gains `startLine`, and inline-tree
    /// entries lose their file and line (the call site is found through `parentPc`).
    Go120,
}

impl GoVersion {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffa => Some(Self::Go116),
            0xffff_fff0 => Some(Self::Go118),
            0xffff_fff1 => Some(Self::Go120),
            _ => None,
        }
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Go116 => "go1.16",
            Self::Go118 => "go1.18",
            Self::Go120 => "go1.20",
        })
    }
}

/// The parsed pcHeader: byte ranges of the sub-tables within the pclntab section.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub version: GoVersion,
    /// Instruction size quantum: pc deltas in pc-value tables are multiples of it.
    pub min_lc: u8,
    pub ptr_size: u8,
    pub nfunc: usize,
    /// Base of the functab's 32-bit entry offsets (1.18+); 0 when the header has none.
    pub text_start: u64,
    pub funcnames: Range<usize>,
    pub cutab: Range<usize>,
    pub filetab: Range<usize>,
    pub pctab: Range<usize>,
    /// The functab followed by the `_func` records.
    pub pcln: Range<usize>,
}

/// Whether `data` starts with a pclntab header whose functab begins inside `text`: how an
/// embedded pclntab is told from other bytes.
pub(super) fn looks_like_pclntab(data: &[u8], text: &std::ops::Range<u64>) -> bool {
    if u32_at(data, 0).and_then(GoVersion::from_magic).is_none() {
        return false;
    }
    let Ok(header) = Header::parse(data) else { return false };
    let text_start = if header.text_start == 0 { text.start } else { header.text_start };
    super::functab::FuncTab::new(data, &header, text_start).and_then(|t| t.first_entry()).is_some_and(|entry| text.contains(&entry))
}

fn malformed(reason: &'static str) -> Error {
    Error::GoPclntab { reason }
}

impl Header {
    /// Parses the header and checks that every sub-table lies inside `data`, in the order
    /// the linker writes them.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let magic = u32_at(data, 0).ok_or(malformed("shorter than its header"))?;
        let version = GoVersion::from_magic(magic).ok_or(malformed("unknown magic"))?;
        let (pad1, pad2) = (u8_at(data, 4), u8_at(data, 5));
        let min_lc = u8_at(data, 6).ok_or(malformed("shorter than its header"))?;
        let ptr_size = u8_at(data, 7).ok_or(malformed("shorter than its header"))?;
        if pad1 != Some(0) || pad2 != Some(0) || !matches!(min_lc, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
            return Err(malformed("bad header fields"));
        }
        let word = |index: usize| word_at(data, 8 + index * usize::from(ptr_size), ptr_size).ok_or(malformed("shorter than its header"));
        let nfunc = usize::try_from(word(0)?).map_err(|_| malformed("function count too large"))?;
        let (text_start, first_offset) = match version {
            GoVersion::Go116 => (0, 2),
            GoVersion::Go118 | GoVersion::Go120 => (word(2)?, 3),
        };
        let mut starts = [0usize; 5];
        for (i, start) in starts.iter_mut().enumerate() {
            *start = usize::try_from(word(first_offset + i)?).map_err(|_| malformed("table offset too large"))?;
        }
        let header_end = 8 + (first_offset + 5) * usize::from(ptr_size);
        if starts[0] < header_end || starts.windows(2).any(|w| w[0] > w[1]) || starts[4] > data.len() {
            return Err(malformed("sub-tables out of order or out of bounds"));
        }
        let range = |i: usize| starts[i]..starts.get(i + 1).copied().unwrap_or(data.len());
        Ok(Self { version, min_lc, ptr_size, nfunc, text_start, funcnames: range(0), cutab: range(1), filetab: range(2), pctab: range(3), pcln: range(4) })
    }
}
