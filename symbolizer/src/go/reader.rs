//! Bounds-checked little-endian reads from untrusted pclntab bytes: every read returns `None`
//! past the end instead of panicking.

/// The byte at `off`.
pub(super) fn u8_at(data: &[u8], off: usize) -> Option<u8> {
    data.get(off).copied()
}

/// The `N` bytes at `off`.
fn array_at<const N: usize>(data: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    data.get(off..end)?.try_into().ok()
}

/// The little-endian `u32` at `off`.
pub(super) fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    array_at(data, off).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `off`.
pub(super) fn u64_at(data: &[u8], off: usize) -> Option<u64> {
    array_at(data, off).map(u64::from_le_bytes)
}

/// A pointer-sized little-endian word (`ptr_size` is 4 or 8) at `off`.
pub(super) fn word_at(data: &[u8], off: usize, ptr_size: u8) -> Option<u64> {
    match ptr_size {
        4 => u32_at(data, off).map(u64::from),
        8 => u64_at(data, off),
        _ => None,
    }
}

/// The NUL-terminated UTF-8 string at `off` (Go's name and file tables); `None` if it runs
/// off the end or is not UTF-8.
pub(super) fn cstr_at(data: &[u8], off: usize) -> Option<&str> {
    let tail = data.get(off..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&tail[..len]).ok()
}

/// Reads an unsigned LEB128 varint of at most 32 bits at `*pos` and advances `*pos`.
/// Longer encodings are malformed: a pclntab never needs them, and refusing them bounds
/// the read.
#[inline]
pub(super) fn uvarint(data: &[u8], pos: &mut usize) -> Option<u32> {
    // Most pc-value deltas fit in one byte.
    let first = u8_at(data, *pos)?;
    if first & 0x80 == 0 {
        *pos += 1;
        return Some(u32::from(first));
    }
    let mut value: u32 = 0;
    for shift in (0..35).step_by(7) {
        let byte = u8_at(data, *pos)?;
        *pos += 1;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let data = [1u8, 2, 3];
        assert_eq!(u32_at(&data, 0), None);
        assert_eq!(u32_at(&data, 0), None);
        assert_eq!(u64_at(&data, usize::MAX), None);
        assert_eq!(word_at(&data, 0, 3), None);
        assert_eq!(cstr_at(b"ab\0cd", 0), Some("ab"));
        assert_eq!(cstr_at(b"ab\0cd", 3), None);
    }

    #[test]
    fn varints() {
        let mut pos = 0;
        assert_eq!(uvarint(&[0xe5, 0x8e, 0x26], &mut pos), Some(624_485));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(uvarint(&[0xff; 8], &mut pos), None);
        let mut pos = 0;
        assert_eq!(uvarint(&[0x80], &mut pos), None);
    }
}
