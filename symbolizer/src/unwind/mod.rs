//! Unwind tables compiled from `.eh_frame` (or `.debug_frame`): for every address range of a
//! file, how to find the caller's frame without frame pointers.
//!
//! Each [`UnwindRow`] covers the addresses from its `start` to the next row's. It says where
//! the canonical frame address (CFA, the stack pointer before the call) is — the stack or
//! frame pointer plus an offset, or the x86-64 PLT stub formula — where the return address is
//! (saved at CFA + offset, still in the link register on arm64, or nowhere: the end of the
//! stack), and where the caller's frame pointer was saved. Addresses are the file's own
//! virtual addresses. Rows are merged when consecutive ones agree, so the table stays small.
//!
//! ```no_run
//! let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6")?;
//! let table = symbolizer::unwind::UnwindTable::compile(&data)?;
//! println!("{} rows; at 0x27100: {:?}", table.rows().len(), table.lookup(0x27100));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compile;

pub use compile::CompileError;

/// The architectures the unwinder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64: CFA from RSP or RBP; the return address is always saved on the stack.
    X86_64,
    /// AArch64: CFA from SP or X29; the return address may still be in X30 (LR).
    Aarch64,
}

/// How to compute the canonical frame address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CfaRule {
    /// Stack pointer plus offset.
    SpOffset(i32),
    /// Frame pointer (RBP / X29) plus offset.
    FpOffset(i32),
    /// An x86-64 PLT stub: `RSP + 8`, plus 8 more once `(RIP & 15) >= threshold` (the stub
    /// has pushed its argument). This is the one DWARF expression compilers emit for PLTs.
    PltX86 {
        /// 11 for lazy-binding PLTs, 10 for some older linkers.
        threshold: u8,
    },
    /// Any other rule (a general DWARF expression): not unwindable here.
    Unsupported,
}

/// Where the return address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaRule {
    /// Saved at CFA plus offset.
    CfaOffset(i32),
    /// Still in the link register (arm64 code before it saves X30).
    LinkRegister,
    /// Undefined: this is the outermost frame (`_start`, thread entry).
    EndOfStack,
    /// Any other rule: not unwindable here.
    Unsupported,
}

/// Where the caller's frame pointer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FpRule {
    /// Not saved yet: the register still holds the caller's value.
    Unchanged,
    /// Saved at CFA plus offset.
    CfaOffset(i32),
    /// Any other rule: the caller's frame pointer is unknown.
    Unsupported,
}

/// What kind of code a row covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowKind {
    /// Ordinary code described by the rules.
    Normal,
    /// A signal trampoline: the caller's registers are in the signal frame on the stack.
    SignalFrame,
    /// No unwind information covers these addresses (use the frame pointer, if any).
    NoInfo,
}

/// The unwind rules from `start` up to the next row's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// First address covered.
    pub start: u64,
    /// What the addresses are.
    pub kind: RowKind,
    /// How to find the CFA.
    pub cfa: CfaRule,
    /// Where the return address is.
    pub ra: RaRule,
    /// Where the caller's frame pointer is.
    pub fp: FpRule,
}

impl UnwindRow {
    /// A row saying that nothing is known from `start` on.
    pub const fn no_info(start: u64) -> Self {
        UnwindRow { start, kind: RowKind::NoInfo, cfa: CfaRule::Unsupported, ra: RaRule::Unsupported, fp: FpRule::Unsupported }
    }

    /// Whether two rows give the same rules (ignoring where they start).
    pub fn same_rules(&self, other: &UnwindRow) -> bool {
        (self.kind, self.cfa, self.ra, self.fp) == (other.kind, other.cfa, other.ra, other.fp)
    }
}

/// A file's unwind table: rows sorted by `start`, each covering up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindTable {
    arch: Arch,
    rows: Vec<UnwindRow>,
    /// FDEs that could not be parsed or evaluated (their ranges have no info).
    skipped_entries: usize,
}

impl UnwindTable {
    /// The architecture the rules are for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The rows, sorted by start address.
    pub fn rows(&self) -> &[UnwindRow] {
        &self.rows
    }

    /// Entries of the unwind section that were malformed and left out.
    pub fn skipped_entries(&self) -> usize {
        self.skipped_entries
    }

    /// The row covering `address` (a [`RowKind::NoInfo`] row, or `None` before the first row,
    /// when nothing covers it).
    pub fn lookup(&self, address: u64) -> Option<&UnwindRow> {
        let index = self.rows.partition_point(|row| row.start <= address).checked_sub(1)?;
        Some(&self.rows[index])
    }
}
