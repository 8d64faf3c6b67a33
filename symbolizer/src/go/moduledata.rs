//! Finding the runtime's `firstmoduledata` in binaries without symbols, for two of its
//! fields: `gofunc` (the address of `go:func.*`) and `text`.
//!
//! Since Go 1.18 funcdata are offsets from `gofunc`, and `-s -w` drops the `go:func.*`
//! symbol. The struct starts with a pointer to the pcHeader, then the funcnametab slice
//! (pointer, len, cap), so a pointer-aligned word equal to the pclntab's address followed
//! by the address and length of its funcname table identifies it. `text` is word 22 in
//! every layout since 1.16; `gofunc` is word 38 in 1.18–1.19 and word 40 from 1.20 on
//! (1.20 added `covctrs, ecovctrs` before it). `text` is needed where the pcHeader's
//! `textStart` is zero, as Go 1.26 leaves it (it also moves the moduledata into a
//! `.go.module` section of its own; untested here). Internally and externally linked PIE
//! binaries store these pointers in the file as well as in relocations, so the same scan
//! works for them.

use std::ops::Range;

use super::{header::GoVersion, reader::word_at};

/// A section of the binary that may hold the moduledata.
pub(super) struct DataSection<'d> {
    pub address: u64,
    pub data: &'d [u8],
}

/// The moduledata fields symbolization needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ModuleData {
    /// Start of the module's Go text (`runtime.text`).
    pub text: u64,
    /// Start of `go:func.*`; `None` before 1.18, which has no such base.
    pub gofunc: Option<u64>,
}

/// The linker aligns the pclntab's sub-tables; the funcname table's slice in moduledata
/// ends this close to the next table's start.
const MAX_TABLE_PADDING: u64 = 64;

/// Word index of `moduledata.text`.
const TEXT_WORD: usize = 22;

/// Which word of moduledata holds `gofunc`.
fn gofunc_word(version: GoVersion) -> Option<usize> {
    match version {
        GoVersion::Go116 => None,
        GoVersion::Go118 => Some(38),
        GoVersion::Go120 => Some(40),
    }
}

/// The moduledata of the pclntab at `pclntab_address`, whose funcname table is at
/// `funcnames` (virtual addresses), if one of `sections` holds it.
pub(super) fn find(sections: &[DataSection<'_>], pclntab_address: u64, funcnames: Range<u64>, ptr_size: u8, version: GoVersion) -> Option<ModuleData> {
    let step = usize::from(ptr_size);
    let needle = match ptr_size {
        4 => u32::try_from(pclntab_address).ok()?.to_le_bytes().to_vec(),
        _ => pclntab_address.to_le_bytes().to_vec(),
    };
    for section in sections {
        let aligned = (step - (section.address % step as u64) as usize) % step;
        let mut off = aligned;
        while let Some(found) = find_aligned(section.data, &needle, off, step) {
            let word = |i: usize| word_at(section.data, found + i * step, ptr_size);
            // The slice's length leaves out the padding before the next table.
            let table_len = funcnames.end.saturating_sub(funcnames.start);
            let plausible_len = |len: u64| len <= table_len && table_len - len < MAX_TABLE_PADDING;
            if word(1) == Some(funcnames.start) && word(2).is_some_and(plausible_len) {
                let gofunc = gofunc_word(version).and_then(word).filter(|&g| g != 0);
                if let Some(text) = word(TEXT_WORD) {
                    return Some(ModuleData { text, gofunc });
                }
            }
            off = found + step;
        }
    }
    None
}

/// The first offset `>= from`, `from` plus a multiple of `step`, where `needle` starts.
fn find_aligned(data: &[u8], needle: &[u8], from: usize, step: usize) -> Option<usize> {
    let mut off = from;
    while off.checked_add(needle.len())? <= data.len() {
        if data[off..off + needle.len()] == *needle {
            return Some(off);
        }
        off += step;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_moduledata_after_decoys() {
        let mut data = vec![0u8; 8 * 60];
        let put = |data: &mut Vec<u8>, word: usize, value: u64| data[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
        put(&mut data, 2, 0x5000); // a decoy: no funcname pointer after it
        put(&mut data, 10, 0x5000);
        put(&mut data, 11, 0x5040);
        put(&mut data, 12, 0x100);
        put(&mut data, 10 + 22, 0x1000);
        put(&mut data, 10 + 40, 0x4321);
        let sections = [DataSection { address: 0x9000, data: &data }];
        assert_eq!(find(&sections, 0x5000, 0x5040..0x5140, 8, GoVersion::Go120), Some(ModuleData { text: 0x1000, gofunc: Some(0x4321) }));
        assert_eq!(find(&sections, 0x5000, 0x5040..0x5140, 8, GoVersion::Go116), Some(ModuleData { text: 0x1000, gofunc: None }));
        assert_eq!(find(&sections, 0x5000, 0x5048..0x5148, 8, GoVersion::Go120), None);
        assert_eq!(find(&sections, 0x5000, 0x5040..0x5100, 8, GoVersion::Go120), None);
        assert_eq!(find(&sections, 0x5000, 0x5040..0x5150, 8, GoVersion::Go120).map(|m| m.text), Some(0x1000));
        assert_eq!(find(&sections, 0x5000, 0x5040..0x51a0, 8, GoVersion::Go120), None);
    }
}
