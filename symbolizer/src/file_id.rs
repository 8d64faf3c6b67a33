//! The file ID that the OpenTelemetry eBPF profiler and devfiler identify executables by (sent
//! as `process.executable.build_id.htlhash`): the first 128 bits of SHA-256 over the file's
//! first 4096 bytes, its last 4096 bytes and its length as a big-endian `u64`. Unlike a GNU
//! build ID, every file has one.

use std::{
    fmt,
    io::{self, Read, Seek, SeekFrom},
    path::Path,
};

use sha2::{Digest, Sha256};

/// Bytes hashed at each end of the file.
const PARTIAL_HASH_BYTES: u64 = 4096;

/// A 128-bit file ID ("htlhash": head, tail, length).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub u128);

impl FileId {
    /// Computes the ID of the file at `path`.
    pub fn from_path(path: &Path) -> io::Result<Self> {
        Self::from_reader(std::fs::File::open(path)?)
    }

    /// Computes the ID of a seekable stream (its whole length counts, from the start).
    pub fn from_reader(mut reader: impl Read + Seek) -> io::Result<Self> {
        let length = reader.seek(SeekFrom::End(0))?;
        let mut hasher = Sha256::new();
        reader.seek(SeekFrom::Start(0))?;
        io::copy(&mut (&mut reader).take(PARTIAL_HASH_BYTES), &mut hasher)?;
        reader.seek(SeekFrom::Start(length.saturating_sub(PARTIAL_HASH_BYTES)))?;
        io::copy(&mut (&mut reader).take(PARTIAL_HASH_BYTES), &mut hasher)?;
        hasher.update(length.to_be_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Ok(FileId(u128::from_be_bytes(first)))
    }

    /// 32 lower-case hex digits, as the OpenTelemetry eBPF profiler sends it.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The 16 big-endian bytes in unpadded base64url (22 characters): how devfiler's symbol
    /// endpoint names files in its URLs.
    pub fn to_base64url(&self) -> String {
        let bytes = self.0.to_be_bytes();
        let mut out = String::with_capacity(22);
        for chunk in bytes.chunks(3) {
            let word = chunk.iter().enumerate().fold(0u32, |word, (i, &b)| word | u32::from(b) << (16 - 8 * i));
            for sextet in 0..=chunk.len() {
                out.push(BASE64URL[(word >> (18 - 6 * sextet) & 63) as usize] as char);
            }
        }
        out
    }

    /// Parses the form of [`FileId::to_base64url`]; only its canonical spelling is accepted.
    pub fn from_base64url(text: &str) -> Option<FileId> {
        if text.len() != 22 {
            return None;
        }
        let mut value: u128 = 0;
        for (i, c) in text.bytes().enumerate() {
            let sextet = BASE64URL.iter().position(|&b| b == c)? as u128;
            // 22 sextets are 132 bits: the last one holds the final 2 bits and 4 zero bits.
            if i == 21 {
                if sextet & 15 != 0 {
                    return None;
                }
                value = value << 2 | sextet >> 4;
            } else {
                value = value << 6 | sextet;
            }
        }
        Some(FileId(value))
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({self})")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// Reference value published with the OpenTelemetry eBPF profiler's own implementation.
    #[test]
    fn matches_reference_for_short_input() {
        let id = FileId::from_reader(Cursor::new([0u8; 123])).unwrap();
        assert_eq!(id.to_hex(), "f4c1e5fe2f28034fcceb0776ec00b125");
    }

    /// Independent check for a file longer than both ends: sha256(head ‖ tail ‖ len)[..16].
    #[test]
    fn hashes_head_tail_and_length() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut expected = Sha256::new();
        expected.update(&data[..4096]);
        expected.update(&data[data.len() - 4096..]);
        expected.update((data.len() as u64).to_be_bytes());
        let expected = hex(&expected.finalize()[..16]);
        assert_eq!(FileId::from_reader(Cursor::new(&data)).unwrap().to_hex(), expected);
    }

    /// The reference values of the OpenTelemetry eBPF profiler's `FileId::format_es`.
    #[test]
    fn base64url_matches_reference_and_round_trips() {
        let id = FileId(0xf4c1e5fe2f28034fcceb0776ec00b125);
        assert_eq!(id.to_base64url(), "9MHl_i8oA0_M6wd27ACxJQ");
        assert_eq!(FileId(0xc34f3585fca1b579fb458e827851a599).to_base64url(), "w081hfyhtXn7RY6CeFGlmQ");
        assert_eq!(FileId::from_base64url("9MHl_i8oA0_M6wd27ACxJQ"), Some(id));
        for value in [0u128, 1, u128::MAX, 0x0123456789abcdef0123456789abcdef] {
            assert_eq!(FileId::from_base64url(&FileId(value).to_base64url()), Some(FileId(value)));
        }
        for bad in ["", "9MHl_i8oA0_M6wd27ACxJ", "9MHl_i8oA0_M6wd27ACxJR", "9MHl_i8oA0_M6wd27ACx+Q", "9MHl_i8oA0_M6wd27ACxJQ="] {
            assert_eq!(FileId::from_base64url(bad), None, "{bad}");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
