//! Unwind tables compiled from `.eh_frame` (or `.debug_frame`, or a Go binary's pcsp tables): for every address range of a
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
//! println!("{} rows; at 0x27100: {:?}", table.len(), table.lookup(0x27100));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compile;
mod go_frames;

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

/// The unwind rules of a row, without its address: a file has a few hundred distinct ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnwindRules {
    /// What the addresses are.
    pub kind: RowKind,
    /// How to find the CFA.
    pub cfa: CfaRule,
    /// Where the return address is.
    pub ra: RaRule,
    /// Where the caller's frame pointer is.
    pub fp: FpRule,
}

impl UnwindRules {
    /// Nothing is known.
    pub const NO_INFO: UnwindRules = UnwindRules { kind: RowKind::NoInfo, cfa: CfaRule::Unsupported, ra: RaRule::Unsupported, fp: FpRule::Unsupported };
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
    /// The row starting at `start` with `rules`.
    pub const fn new(start: u64, rules: UnwindRules) -> Self {
        UnwindRow { start, kind: rules.kind, cfa: rules.cfa, ra: rules.ra, fp: rules.fp }
    }

    /// A row saying that nothing is known from `start` on.
    pub const fn no_info(start: u64) -> Self {
        UnwindRow::new(start, UnwindRules::NO_INFO)
    }

    /// The rules, without the address.
    pub const fn rules(&self) -> UnwindRules {
        UnwindRules { kind: self.kind, cfa: self.cfa, ra: self.ra, fp: self.fp }
    }
}

/// A file's unwind table: rows sorted by start address, each covering up to the next, stored
/// as an address and the index of its rules (12 bytes a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwindTable {
    arch: Arch,
    starts: Vec<u64>,
    rule_of: Vec<u32>,
    rules: Vec<UnwindRules>,
    /// FDEs that could not be parsed or evaluated (their ranges have no info).
    skipped_entries: usize,
}

impl UnwindTable {
    /// The architecture the rules are for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Row `index`.
    pub fn row(&self, index: usize) -> UnwindRow {
        UnwindRow::new(self.starts[index], self.rules[self.rule_of[index] as usize])
    }

    /// The rows, sorted by start address.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = UnwindRow> + '_ {
        (0..self.len()).map(|index| self.row(index))
    }

    /// The distinct rules, indexed by [`UnwindTable::entries`].
    pub fn rules(&self) -> &[UnwindRules] {
        &self.rules
    }

    /// Each row's start address and the index of its rules in [`UnwindTable::rules`].
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (u64, u32)> + '_ {
        self.starts.iter().copied().zip(self.rule_of.iter().copied())
    }

    /// Entries of the unwind section that were malformed and left out.
    pub fn skipped_entries(&self) -> usize {
        self.skipped_entries
    }

    /// The row covering `address` (a [`RowKind::NoInfo`] row, or `None` before the first row,
    /// when nothing covers it).
    pub fn lookup(&self, address: u64) -> Option<UnwindRow> {
        let index = self.starts.partition_point(|&start| start <= address).checked_sub(1)?;
        Some(self.row(index))
    }
}
