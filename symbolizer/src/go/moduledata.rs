//! Finding `moduledata.gofunc` (the address of `go:func.*`) in binaries without symbols.
//!
//! Since Go 1.18 funcdata are offsets from `gofunc`, and `-s -w` drops the `go:func.*`
//! symbol. The runtime's `firstmoduledata` still holds it: the struct starts with a
//! pointer to the pcHeader, then the funcnametab slice (pointer, len, cap), so a
//! pointer-aligned word equal to the pclntab's address followed by one equal to the
//! address of its funcname table identifies the struct. `gofunc` is word 38 of it in
//! 1.18–1.19, and word 40 from 1.20 on (1.20 added `covctrs, ecovctrs` before it).
//! Internally linked PIE binaries store these pointers in the file as well as in
//! relocations, so the same scan works for them.

use super::{header::GoVersion, reader::word_at};

/// A section of the binary that may hold the moduledata.
pub(super) struct DataSection<'d> {
    pub address: u64,
    pub data: &'d [u8],
}

/// Which word of moduledata holds `gofunc`.
fn gofunc_word(version: GoVersion) -> Option<usize> {
    match version {
        GoVersion::Go116 => None,
        GoVersion::Go118 => Some(38),
        GoVersion::Go120 => Some(40),
    }
}

/// Where the moduledata says `go:func.*` starts, if it can be found.
pub(super) fn find_gofunc(sections: &[DataSection<'_>], pclntab_address: u64, funcnames_address: u64, ptr_size: u8, version: GoVersion) -> Option<u64> {
    let gofunc_word = gofunc_word(version)?;
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
            if word(1) == Some(funcnames_address) {
                if let Some(gofunc) = word(gofunc_word).filter(|&g| g != 0) {
                    return Some(gofunc);
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
    fn finds_gofunc_after_decoys() {
        let mut data = vec![0u8; 8 * 60];
        let put = |data: &mut Vec<u8>, word: usize, value: u64| data[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
        put(&mut data, 2, 0x5000); // a decoy: no funcname pointer after it
        put(&mut data, 10, 0x5000);
        put(&mut data, 11, 0x5040);
        put(&mut data, 10 + 40, 0x4321);
        let sections = [DataSection { address: 0x9000, data: &data }];
        assert_eq!(find_gofunc(&sections, 0x5000, 0x5040, 8, GoVersion::Go120), Some(0x4321));
        assert_eq!(find_gofunc(&sections, 0x5000, 0x5040, 8, GoVersion::Go116), None);
        assert_eq!(find_gofunc(&sections, 0x5000, 0x5048, 8, GoVersion::Go120), None);
    }
}
