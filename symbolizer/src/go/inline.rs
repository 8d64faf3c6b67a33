//! Inline trees: for each function with inlined calls, an array of `inlinedCall` records
//! the `PCDATA_InlTreeIndex` table indexes into. They live outside `.gopclntab` (in
//! `go:func.*` since 1.18, in rodata before), so the table keeps copies of just the trees.
//!
//! Record layouts (runtime `inlinedCall`, written by cmd/link `genInlTreeSym`):
//! - before 1.20, 20 bytes: parent i16, funcID u8, pad, file i32, line i32, nameoff i32,
//!   parentPc i32;
//! - 1.20+, 16 bytes: funcID u8, 3 pad, nameOff i32, parentPc i32, startLine i32.
//!
//! Both versions are walked the same way, through `parentPc`: the caller's frame is the
//! source position (and inline index) at `entry + parentPc`. 1.20 dropped the file and
//! line fields because that pc already carries them.

use super::{header::GoVersion, reader::u32_at};

/// An inline tree copied out of the binary, and where its records start.
#[derive(Debug, Clone, Copy)]
struct Tree {
    /// Virtual address of the tree in the binary (the funcdata pointer's target).
    address: u64,
    /// Its bytes: `bytes[start..start + len]` of the store.
    start: usize,
    len: usize,
}

/// Copies of every function's inline tree, looked up by the tree's virtual address.
#[derive(Debug, Default)]
pub(super) struct InlineStore {
    bytes: Vec<u8>,
    /// Sorted by address.
    trees: Vec<Tree>,
}

/// No inline tree is larger than this (2^16 records of 20 bytes is already absurd); the
/// cap bounds the copy when the next funcdata is far away or unknown.
const MAX_TREE_BYTES: u64 = 20 << 16;

impl InlineStore {
    /// Copies the trees at `tree_addresses`. A tree ends at the next address any funcdata
    /// points at (`funcdata_addresses`, sorted and deduplicated: funcdata symbols are laid
    /// out back to back) or where `read` stops giving bytes, whichever is first.
    pub fn build<'d>(mut tree_addresses: Vec<u64>, funcdata_addresses: &[u64], read: impl Fn(u64, u64) -> Option<&'d [u8]>) -> Self {
        tree_addresses.sort_unstable();
        tree_addresses.dedup();
        let mut store = Self::default();
        for address in tree_addresses {
            let next = funcdata_addresses.partition_point(|&a| a <= address);
            let limit = funcdata_addresses.get(next).map_or(MAX_TREE_BYTES, |&n| (n - address).min(MAX_TREE_BYTES));
            let Some(bytes) = read(address, limit) else { continue };
            store.trees.push(Tree { address, start: store.bytes.len(), len: bytes.len() });
            store.bytes.extend_from_slice(bytes);
        }
        store.bytes.shrink_to_fit();
        store.trees.shrink_to_fit();
        store
    }

    /// The tree at `address`.
    pub fn tree(&self, address: u64) -> Option<&[u8]> {
        let i = self.trees.binary_search_by_key(&address, |t| t.address).ok()?;
        let tree = self.trees[i];
        self.bytes.get(tree.start..tree.start + tree.len)
    }

    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.trees.capacity() * std::mem::size_of::<Tree>()
    }

    pub fn len(&self) -> usize {
        self.trees.len()
    }
}

/// What symbolization needs from one `inlinedCall` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InlinedCall {
    /// The inlined function's name, as an offset into the funcname table.
    pub name_off: u32,
    /// Offset from the outer function's entry of a pc whose position is the call site.
    pub parent_pc: u32,
}

/// Record `index` of `tree`.
pub(super) fn inlined_call(tree: &[u8], index: u32, version: GoVersion) -> Option<InlinedCall> {
    let (size, name, parent_pc) = match version {
        GoVersion::Go116 | GoVersion::Go118 => (20, 12, 16),
        GoVersion::Go120 => (16, 4, 8),
    };
    let base = usize::try_from(index).ok()?.checked_mul(size)?;
    Some(InlinedCall { name_off: u32_at(tree, base.checked_add(name)?)?, parent_pc: u32_at(tree, base.checked_add(parent_pc)?)? })
}
