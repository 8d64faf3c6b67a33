//! Kernel BTF (`/sys/kernel/btf/vmlinux`): the byte offsets of struct members, for BPF
//! programs written without CO-RE (Rust BPF gets no CO-RE relocations), which take kernel
//! structure offsets from user space instead.
//!
//! ```no_run
//! let btf = symbolizer::btf::Btf::from_sys_fs()?;
//! let ip = btf.member_offset("pt_regs", "ip");
//! # Ok::<(), symbolizer::btf::BtfError>(())
//! ```

use std::path::Path;

/// Why BTF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not BTF, or truncated.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
}

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Parsed BTF: the raw type and string sections, with an index of where each type starts.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Byte offset in `types` of type id `i + 1`.
    starts: Vec<u32>,
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_path("/sys/kernel/btf/vmlinux")
    }

    /// BTF from a file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, BtfError> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| BtfError::Io { path: path.display().to_string(), source })?;
        Self::parse(&data)
    }

    /// BTF from bytes (little-endian, as on x86-64 and arm64).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u32_at = |at: usize| data.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if data.get(..2) != Some(&MAGIC.to_le_bytes()[..]) {
            return Err(BtfError::Malformed("no BTF magic (or big-endian BTF)"));
        }
        let header = u32_at(4).ok_or(BtfError::Malformed("truncated header"))? as usize;
        let field = |i: usize| u32_at(8 + 4 * i).map(|v| v as usize).ok_or(BtfError::Malformed("truncated header"));
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let section = |off: usize, len: usize| {
            let start = header.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or(BtfError::Malformed("type section out of bounds"))?.to_vec();
        let strings = section(str_off, str_len).ok_or(BtfError::Malformed("string section out of bounds"))?.to_vec();
        let mut starts = Vec::new();
        let mut at = 0usize;
        while at + 12 <= types.len() {
            starts.push(at as u32);
            let info = u32::from_le_bytes(types[at + 4..at + 8].try_into().expect("4 bytes"));
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            at += 12 + extra;
        }
        if at != types.len() {
            return Err(BtfError::Malformed("type section does not end on a type"));
        }
        Ok(Btf { types, strings, starts })
    }

    /// Number of types.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no types.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Byte offset of `path` (member names joined by `.`) in struct or union `name`. Members
    /// of anonymous structs and unions count as members of the one around them, as in C.
    /// `None` if there is no such member, or it is a bit field.
    pub fn member_offset(&self, name: &str, path: &str) -> Option<u32> {
        let mut id = (1..=self.starts.len() as u32).find(|&id| {
            let (kind, name_off, _) = self.header(id);
            (kind == KIND_STRUCT || kind == KIND_UNION) && self.string(name_off) == Some(name)
        })?;
        let mut bits = 0u32;
        for segment in path.split('.') {
            let (member_bits, member_type) = self.find_member(id, segment, 0)?;
            bits = bits.checked_add(member_bits)?;
            id = self.resolve(member_type)?;
        }
        bits.is_multiple_of(8).then_some(bits / 8)
    }

    /// (kind, name offset, size-or-type) of type `id`.
    fn header(&self, id: u32) -> (u32, u32, u32) {
        let at = self.starts[id as usize - 1] as usize;
        let word = |i: usize| u32::from_le_bytes(self.types[at + 4 * i..at + 4 * i + 4].try_into().expect("4 bytes"));
        ((word(1) >> 24) & 0x1f, word(0), word(2))
    }

    /// The bit offset and type of member `name` of struct/union `id`, looking into anonymous
    /// members; `depth` bounds the recursion on hostile input.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 16 || id == 0 || id as usize > self.starts.len() {
            return None;
        }
        let at = self.starts[id as usize - 1] as usize;
        let info = u32::from_le_bytes(self.types[at + 4..at + 8].try_into().ok()?);
        let (kind, vlen, bitfields) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31 == 1);
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return None;
        }
        for i in 0..vlen as usize {
            let member = at + 12 + 12 * i;
            let word = |j: usize| u32::from_le_bytes(self.types[member + 4 * j..member + 4 * j + 4].try_into().expect("4 bytes"));
            let (name_off, member_type, raw_offset) = (word(0), word(1), word(2));
            let offset = if bitfields { raw_offset & 0xff_ffff } else { raw_offset };
            if bitfields && raw_offset >> 24 != 0 && self.string(name_off) == Some(name) {
                return None; // a bit field has no byte offset
            }
            match self.string(name_off) {
                Some(member_name) if member_name == name => return Some((offset, member_type)),
                Some("") | None => {
                    if let Some((inner, ty)) = self.resolve(member_type).and_then(|inner_id| self.find_member(inner_id, name, depth + 1)) {
                        return Some((offset + inner, ty));
                    }
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            if id == 0 || id as usize > self.starts.len() {
                return None;
            }
            let (kind, _, target) = self.header(id);
            match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = target,
                _ => return Some(id),
            }
        }
        None
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let rest = self.strings.get(offset as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_pt_regs_offsets_are_the_user_abi() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here; skipped");
            return;
        };
        assert!(btf.len() > 10_000, "{} types", btf.len());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(btf.member_offset("pt_regs", "bp"), Some(4 * 8));
            assert_eq!(btf.member_offset("pt_regs", "ip"), Some(16 * 8));
            assert_eq!(btf.member_offset("pt_regs", "cs"), Some(17 * 8));
            assert_eq!(btf.member_offset("pt_regs", "sp"), Some(19 * 8));
        }
        // Nested and anonymous members: the socket's addresses, as TCP tracing will read them.
        let daddr = btf.member_offset("sock", "__sk_common.skc_daddr").expect("sock.__sk_common.skc_daddr");
        let common = btf.member_offset("sock", "__sk_common").expect("sock.__sk_common");
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").map(|o| o + common), Some(daddr));
        assert!(btf.member_offset("tcp_sock", "bytes_received").is_some());
        assert_eq!(btf.member_offset("pt_regs", "no_such_member"), None);
        assert_eq!(btf.member_offset("no_such_struct", "x"), None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]).is_err());
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        header.extend([0u8; 16]);
        let empty = Btf::parse(&header).expect("an empty BTF is valid");
        assert!(empty.is_empty());
    }
}
