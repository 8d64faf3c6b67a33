//! Unwind rules for Go code, from the frame sizes of `.gopclntab`'s pcsp tables: Go's
//! linker writes no `.eh_frame` for Go functions, and stripped binaries (`-s -w`) have no
//! `.debug_frame` either. Frame pointers alone lose the caller of every frameless leaf.

use super::{Arch, CfaRule, FpRule, RaRule, RowKind, UnwindRules};
use crate::go::GoFrameSize;

/// The rules for code whose stack pointer is `size` below its value at the function's entry.
///
/// - x86-64: the call pushed the return address, so CFA = SP + delta + 8 and the return
///   address is at CFA - 8. A function with a frame saves the caller's RBP right below it
///   (`PUSHQ BP`, or `MOVQ BP, delta-8(SP)` in older compilers), at CFA - 16.
/// - arm64: the prologue stores LR at the new SP (`MOVD.W R30, -delta(RSP)`) and the
///   caller's FP 8 bytes below it, so CFA = SP + delta, LR at CFA - delta and FP at
///   CFA - delta - 8; a frameless leaf keeps its return address in LR.
pub(super) fn rules(arch: Arch, size: GoFrameSize) -> UnwindRules {
    let normal = |cfa, ra, fp| UnwindRules { kind: RowKind::Normal, cfa, ra, fp };
    let delta = match size {
        GoFrameSize::Delta(delta) => delta,
        GoFrameSize::TopFrame => return normal(CfaRule::SpOffset(8), RaRule::EndOfStack, FpRule::Unchanged),
        GoFrameSize::Unknown => return UnwindRules::NO_INFO,
    };
    // Frames of 2 GiB do not exist; such a delta is corrupt.
    let Some(delta) = i32::try_from(delta).ok().filter(|d| *d < i32::MAX - 16) else { return UnwindRules::NO_INFO };
    match (arch, delta) {
        (Arch::X86_64, 0) => normal(CfaRule::SpOffset(8), RaRule::CfaOffset(-8), FpRule::Unchanged),
        (Arch::X86_64, _) => normal(CfaRule::SpOffset(delta + 8), RaRule::CfaOffset(-8), FpRule::CfaOffset(-16)),
        (Arch::Aarch64, 0) => normal(CfaRule::SpOffset(0), RaRule::LinkRegister, FpRule::Unchanged),
        (Arch::Aarch64, _) => normal(CfaRule::SpOffset(delta), RaRule::CfaOffset(-delta), FpRule::CfaOffset(-delta - 8)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_frames_find_the_return_address_above_the_frame() {
        let leaf = rules(Arch::X86_64, GoFrameSize::Delta(0));
        assert_eq!((leaf.cfa, leaf.ra, leaf.fp), (CfaRule::SpOffset(8), RaRule::CfaOffset(-8), FpRule::Unchanged));
        let framed = rules(Arch::X86_64, GoFrameSize::Delta(0x28));
        assert_eq!((framed.cfa, framed.fp), (CfaRule::SpOffset(0x30), FpRule::CfaOffset(-16)));
    }

    #[test]
    fn arm64_leaves_keep_the_link_register() {
        assert_eq!(rules(Arch::Aarch64, GoFrameSize::Delta(0)).ra, RaRule::LinkRegister);
        let framed = rules(Arch::Aarch64, GoFrameSize::Delta(32));
        assert_eq!((framed.cfa, framed.ra, framed.fp), (CfaRule::SpOffset(32), RaRule::CfaOffset(-32), FpRule::CfaOffset(-40)));
    }

    #[test]
    fn stack_tops_end_and_unknown_or_corrupt_sizes_have_no_info() {
        assert_eq!(rules(Arch::X86_64, GoFrameSize::TopFrame).ra, RaRule::EndOfStack);
        assert_eq!(rules(Arch::X86_64, GoFrameSize::Unknown), UnwindRules::NO_INFO);
        assert_eq!(rules(Arch::Aarch64, GoFrameSize::Delta(u32::MAX)), UnwindRules::NO_INFO);
    }
}
