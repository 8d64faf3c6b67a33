//! Where the unwinder finds the user registers: offsets into the kernel's `struct pt_regs`
//! for the architecture oxeye runs on.
//!
//! These layouts are the kernel's user ABI (`struct pt_regs` in x86-64's uapi
//! `asm/ptrace.h`; `struct user_pt_regs` at the start of arm64's `pt_regs`), the same on every
//! kernel. Where the kernel has BTF, the offsets are read from it (no CO-RE in Rust BPF), and
//! a disagreement with the ABI is logged.

use agent_common::unwind::{arch, UnwindConfig};
use symbolizer::btf::Btf;
use tracing::{debug, warn};

/// The register layout for this build's architecture, or `None` where unwinding is not
/// supported (the sampler then sends no user stacks).
pub fn config(use_tables: bool) -> Option<UnwindConfig> {
    let mut config = abi_config(use_tables)?;
    match Btf::from_sys_fs() {
        Ok(btf) => apply_btf(&mut config, &btf),
        Err(error) => debug!("no kernel BTF, using the ABI's pt_regs layout: {error}"),
    }
    Some(config)
}

/// Replaces the ABI offsets with the kernel's own, where its BTF has them.
fn apply_btf(config: &mut UnwindConfig, btf: &Btf) {
    // (member of pt_regs, plus bytes into it, the offset it gives)
    let members: Vec<(&str, u32, &mut u32)> = if config.arch == arch::AARCH64 {
        vec![
            ("pc", 0, &mut config.regs_ip),
            ("sp", 0, &mut config.regs_sp),
            ("pstate", 0, &mut config.regs_mode),
            ("regs", 29 * 8, &mut config.regs_fp),
            ("regs", 30 * 8, &mut config.regs_lr),
        ]
    } else {
        vec![("ip", 0, &mut config.regs_ip), ("sp", 0, &mut config.regs_sp), ("cs", 0, &mut config.regs_mode), ("bp", 0, &mut config.regs_fp)]
    };
    for (name, extra, slot) in members {
        match btf.member_offset("pt_regs", name) {
            Some(offset) if offset + extra != *slot => {
                warn!(member = name, abi = *slot, btf = offset + extra, "kernel BTF disagrees with the pt_regs ABI; using BTF");
                *slot = offset + extra;
            }
            Some(_) => {}
            None => debug!(member = name, "pt_regs member not in kernel BTF; using the ABI offset"),
        }
    }
}

/// The user ABI's register layout.
fn abi_config(use_tables: bool) -> Option<UnwindConfig> {
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
