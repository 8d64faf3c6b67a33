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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1.20 header with the given words after magic/pad/minLC/ptrSize.
    fn header_bytes(magic: u32, words: [u64; 8], len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len.max(72)];
        data[..4].copy_from_slice(&magic.to_le_bytes());
        data[6] = 1;
        data[7] = 8;
        for (i, w) in words.iter().enumerate() {
            data[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        data.truncate(len);
        data
    }

    #[test]
    fn parses_sub_tables() {
        let data = header_bytes(0xffff_fff1, [3, 2, 0x40_1000, 72, 80, 90, 100, 120], 200);
        let header = Header::parse(&data).expect("valid");
        assert_eq!((header.version, header.nfunc, header.text_start), (GoVersion::Go120, 3, 0x40_1000));
        assert_eq!((header.funcnames, header.cutab, header.filetab, header.pctab, header.pcln), (72..80, 80..90, 90..100, 100..120, 120..200));
        // 1.16 has no textStart: the offsets start one word earlier.
        let data = header_bytes(0xffff_fffa, [3, 2, 64, 80, 90, 100, 120, 0], 200);
        let header = Header::parse(&data).expect("valid");
        assert_eq!((header.version, header.text_start, header.funcnames), (GoVersion::Go116, 0, 64..80));
    }

    #[test]
    fn refuses_bad_headers() {
        let good = [3, 2, 0x40_1000, 72, 80, 90, 100, 120];
        assert!(Header::parse(&header_bytes(0xffff_fffb, good, 200)).is_err(), "Go 1.2 layout");
        assert!(Header::parse(&header_bytes(0xffff_fff1, good, 40)).is_err(), "truncated header");
        assert!(Header::parse(&header_bytes(0xffff_fff1, [3, 2, 0, 72, 90, 80, 100, 120], 200)).is_err(), "out of order");
        assert!(Header::parse(&header_bytes(0xffff_fff1, [3, 2, 0, 72, 80, 90, 100, 300], 200)).is_err(), "past the end");
        assert!(Header::parse(&header_bytes(0xffff_fff1, [3, 2, 0, 8, 80, 90, 100, 120], 200)).is_err(), "inside the header");
        let mut bad_ptr = header_bytes(0xffff_fff1, good, 200);
        bad_ptr[7] = 3;
        assert!(Header::parse(&bad_ptr).is_err());
    }
}
