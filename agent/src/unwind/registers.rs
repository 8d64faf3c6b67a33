//! Where the unwinder finds the user registers: offsets into the kernel's `struct pt_regs`
//! for the architecture oxeye runs on.
//!
//! These layouts are the kernel's user ABI (`struct pt_regs` in x86-64's uapi
//! `asm/ptrace.h`; `struct user_pt_regs` at the start of arm64's `pt_regs`), so they are the
//! same on every kernel and need no BTF.

use agent_common::unwind::{arch, UnwindConfig};

/// The register layout for this build's architecture, or `None` where unwinding is not
/// supported (the sampler then sends no user stacks).
pub fn config(use_tables: bool) -> Option<UnwindConfig> {
    let base = UnwindConfig { use_tables: u32::from(use_tables), address_mask: u64::MAX, ..Default::default() };
    if cfg!(target_arch = "x86_64") {
        // r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss
        Some(UnwindConfig { arch: arch::X86_64, regs_ip: 16 * 8, regs_sp: 19 * 8, regs_fp: 4 * 8, regs_lr: 0, regs_mode: 17 * 8, ..base })
    } else if cfg!(target_arch = "aarch64") {
        // regs[31] sp pc pstate; return addresses may carry pointer-authentication codes
        // above the 48-bit user address space.
        Some(UnwindConfig {
            arch: arch::AARCH64,
            regs_ip: 32 * 8,
            regs_sp: 31 * 8,
            regs_fp: 29 * 8,
            regs_lr: 30 * 8,
            regs_mode: 33 * 8,
            address_mask: (1 << 48) - 1,
            ..base
        })
    } else {
        None
    }
}
