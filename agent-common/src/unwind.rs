//! The `.eh_frame` unwinder's tables, as the BPF program reads them.
//!
//! User space compiles each executable file's unwind information into rows
//! ([`UnwindEntry`]: an address and the index of an [`UnwindRule`]), writes them into one big
//! array shared by all files, and keeps the rules, of which a whole machine has a few
//! hundred distinct ones, in a second array shared by all rows. It describes each
//! process's executable mappings ([`ExecMapping`]) in a second array. A per-process
//! [`MappingRange`] says where that process's mappings are. In BPF, one PC lookup is a binary
//! search over the process's mappings (sorted by address), then a binary search over the
//! mapping's file's rows.

/// Most executable mappings kept per process (bounds the BPF binary search).
pub const MAX_PROCESS_MAPPINGS: u32 = 512;
/// Most rows one file's table may have (bounds the BPF binary search: 2^22 rows).
pub const MAX_FILE_ROWS: u32 = 1 << 22;
/// Binary-search steps that cover [`MAX_FILE_ROWS`] rows.
pub const ROW_SEARCH_STEPS: u32 = search_steps(MAX_FILE_ROWS);
/// Binary-search steps that cover [`MAX_PROCESS_MAPPINGS`] mappings.
pub const MAPPING_SEARCH_STEPS: u32 = search_steps(MAX_PROCESS_MAPPINGS);

/// Steps of the BPF binary search (each keeps `len - len / 2` candidates) that bring `len`
/// candidates down to one: `ceil(log2(len))`.
pub const fn search_steps(len: u32) -> u32 {
    if len <= 1 { 0 } else { u32::BITS - (len - 1).leading_zeros() }
}

/// How to compute the canonical frame address (`UnwindEntry::cfa_kind`).
pub mod cfa {
    /// Not computable here (a general DWARF expression): the walk stops.
    pub const UNSUPPORTED: u8 = 0;
    /// Stack pointer + `cfa_offset`.
    pub const SP: u8 = 1;
    /// Frame pointer + `cfa_offset`.
    pub const FP: u8 = 2;
    /// x86-64 PLT stub: SP + 8, + 8 more when `(PC & 15) >= cfa_offset`.
    pub const PLT_X86: u8 = 3;
}

/// Where the return address is (`UnwindEntry::ra_kind`).
pub mod ra {
    /// Not recoverable here: the walk stops.
    pub const UNSUPPORTED: u8 = 0;
    /// Saved at CFA + `ra_offset`.
    pub const CFA_OFFSET: u8 = 1;
    /// Still in the link register (arm64; only valid in the interrupted frame).
    pub const LINK_REGISTER: u8 = 2;
    /// Undefined: the outermost frame.
    pub const END_OF_STACK: u8 = 3;
}

/// Where the caller's frame pointer is (`UnwindEntry::fp_kind`).
pub mod fp {
    /// Unknown: keep the current value (it is only used if a later rule needs it).
    pub const UNKNOWN: u8 = 0;
    /// Not saved: the register still holds the caller's value.
    pub const UNCHANGED: u8 = 1;
    /// Saved at CFA + `fp_offset`.
    pub const CFA_OFFSET: u8 = 2;
}

/// What kind of code a row covers (`UnwindEntry::row_kind`).
pub mod row {
    /// Ordinary code: apply the rules.
    pub const NORMAL: u8 = 0;
    /// A signal trampoline: the caller's registers are in the signal frame.
    pub const SIGNAL_FRAME: u8 = 1;
    /// No unwind information: use the frame pointer.
    pub const NO_INFO: u8 = 2;
}

/// One unwind row: the rule from `pc` up to the next row's `pc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindEntry {
    /// First address covered, relative to the table's base (see [`ExecMapping::bias`]).
    pub pc: u32,
    /// Index of the rule in the rules array; [`NO_INFO_RULE`] for code with no unwind info.
    pub rule: u32,
}
const _: () = assert!(core::mem::size_of::<UnwindEntry>() == 8);
crate::impl_pod!(UnwindEntry);

/// Index of the rule every rules array starts with: no unwind information here.
pub const NO_INFO_RULE: u32 = 0;

/// How to find the caller's frame: shared by every row with the same rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRule {
    /// Offset for the CFA rule (the threshold for [`cfa::PLT_X86`]).
    pub cfa_offset: i32,
    /// Offset from the CFA of the saved return address.
    pub ra_offset: i16,
    /// Offset from the CFA of the saved frame pointer.
    pub fp_offset: i16,
    /// One of [`cfa`].
    pub cfa_kind: u8,
    /// One of [`ra`].
    pub ra_kind: u8,
    /// One of [`fp`].
    pub fp_kind: u8,
    /// One of [`row`].
    pub row_kind: u8,
    /// Zero (pads the rule to 16 bytes, a multiple of 8 as memory-mapped arrays need).
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<UnwindRule>() == 16);
crate::impl_pod!(UnwindRule);

impl UnwindRule {
    /// The rule for code with no unwind information (walk it with the frame pointer).
    pub const NO_INFO: UnwindRule =
        UnwindRule { cfa_offset: 0, ra_offset: 0, fp_offset: 0, cfa_kind: 0, ra_kind: 0, fp_kind: 0, row_kind: row::NO_INFO, reserved: 0 };
}

/// One executable mapping of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Subtract from a PC in this mapping to get a row `pc` of its table.
    pub bias: u64,
    /// Index of the table's first row in the rows array.
    pub rows_start: u32,
    /// Rows in the table; 0 when the file has none (walk with frame pointers).
    pub rows_len: u32,
}
const _: () = assert!(core::mem::size_of::<ExecMapping>() == 32);
crate::impl_pod!(ExecMapping);

/// Where a process's mappings are in the mappings array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingRange {
    /// Index of the first mapping.
    pub start: u32,
    /// Number of mappings, sorted by address; at most [`MAX_PROCESS_MAPPINGS`].
    pub len: u32,
}
crate::impl_pod!(MappingRange);

/// How the unwinder reads registers; set by user space at load time (`UNWIND_CONFIG`).
///
/// The offsets are into the kernel's `struct pt_regs` for the CPU architecture the agent runs
/// on, as returned by `bpf_task_pt_regs()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnwindConfig {
    /// One of [`arch`].
    pub arch: u32,
    /// 1 to walk with the tables, 0 to only follow frame pointers.
    pub use_tables: u32,
    /// Offset of the instruction pointer.
    pub regs_ip: u32,
    /// Offset of the stack pointer.
    pub regs_sp: u32,
    /// Offset of the frame pointer (RBP / X29).
    pub regs_fp: u32,
    /// Offset of the link register (X30); unused on x86-64.
    pub regs_lr: u32,
    /// Offset of the word that tells user from kernel mode (CS / PSTATE).
    pub regs_mode: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// AND-mask applied to return addresses (strips arm64 pointer-authentication codes).
    pub address_mask: u64,
}
const _: () = assert!(core::mem::size_of::<UnwindConfig>() == 40);
crate::impl_pod!(UnwindConfig);

/// Architectures, for [`UnwindConfig::arch`].
pub mod arch {
    /// x86-64.
    pub const X86_64: u32 = 1;
    /// AArch64.
    pub const AARCH64: u32 = 2;
}

/// Why a user stack ended (`SampleHeader::user_stack_end`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackEnd {
    /// Reached the outermost frame (undefined return address, or a zero frame pointer).
    Complete = 0,
    /// No unwind table covers the PC and the frame pointer led nowhere.
    NoTable = 1,
    /// Reading the stack failed (the page is not present or the address is bad).
    BadRead = 2,
    /// [`crate::sampler::MAX_USER_FRAMES`] frames were walked.
    DepthLimit = 3,
    /// The unwind rule at the PC is one the unwinder cannot evaluate.
    UnsupportedRule = 4,
    /// The stack pointer did not move up: the walk would loop.
    NoProgress = 5,
    /// No user registers (a kernel thread, or the sample hit before user space ran).
    NoUserRegisters = 6,
}

impl StackEnd {
    /// Decodes the header field; unknown values read as [`StackEnd::UnsupportedRule`].
    pub const fn from_u32(value: u32) -> Self {
        match value {
            0 => StackEnd::Complete,
            1 => StackEnd::NoTable,
            2 => StackEnd::BadRead,
            3 => StackEnd::DepthLimit,
            5 => StackEnd::NoProgress,
            6 => StackEnd::NoUserRegisters,
            _ => StackEnd::UnsupportedRule,
        }
    }

    /// Whether the walk stopped on an error (counted as `Counter::UserStackError`), rather than
    /// at the outermost frame, at the depth limit, or with no user stack to walk.
    pub const fn is_error(self) -> bool {
        !matches!(self, StackEnd::Complete | StackEnd::DepthLimit | StackEnd::NoUserRegisters)
    }

    /// A short description for the error frame.
    pub const fn describe(self) -> &'static str {
        match self {
            StackEnd::Complete => "complete",
            StackEnd::NoTable => "no unwind table",
            StackEnd::BadRead => "stack read failed",
            StackEnd::DepthLimit => "depth limit",
            StackEnd::UnsupportedRule => "unsupported unwind rule",
            StackEnd::NoProgress => "stack pointer did not advance",
            StackEnd::NoUserRegisters => "no user registers",
        }
    }
}

/// Indices in the `UNWIND_PROGRAMS` tail-call table.
pub mod tail_call {
    /// `oxeye_unwind`: the native walk.
    pub const UNWIND: u32 = 0;
    /// `oxeye_python`: the Python walk, after the native one.
    pub const PYTHON: u32 = 1;
    /// Entries of the table.
    pub const COUNT: u32 = 2;
}

/// `SampleHeader::flags`: a PC fell outside every mapping user space described for the
/// process (new libraries were mapped since): user space should describe it again.
pub const FLAG_UNKNOWN_MAPPING: u32 = 1;
/// Sample flag: the Python walker ran for this sample (its process is a known CPython), so
/// `python_frame_count` and `python_stack_end` are meaningful.
pub const FLAG_PYTHON: u32 = 2;
/// Sample flag: taken by the off-CPU sampler as the thread was switched out; its time off
/// CPU follows in a [`crate::records::OffCpuEnd`].
pub const FLAG_OFF_CPU: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the BPF search's halving; returns the steps it takes to reach one candidate.
    fn halvings(mut len: u32) -> u32 {
        let mut steps = 0;
        while len > 1 {
            len -= len / 2;
            steps += 1;
        }
        steps
    }

    #[test]
    fn search_steps_cover_the_largest_tables() {
        assert_eq!(ROW_SEARCH_STEPS, halvings(MAX_FILE_ROWS));
        assert_eq!(MAPPING_SEARCH_STEPS, halvings(MAX_PROCESS_MAPPINGS));
        assert_eq!((ROW_SEARCH_STEPS, MAPPING_SEARCH_STEPS), (22, 9));
        for len in [1, 2, 3, 4, 5, 511, 512, 513, 1000, (1 << 22) - 1] {
            assert_eq!(search_steps(len), halvings(len), "{len}");
        }
    }
}
