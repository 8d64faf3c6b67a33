//! The current thread's saved user registers: where the payload programs find a syscall's
//! number and arguments when they run at its end (or inside it, at a socket tracepoint).

use agent_common::net::{syscall_regs, NetConfig};
use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};

/// The current thread's saved user registers (`struct pt_regs`), found once per program run
/// and read for the syscall's number and arguments: plain loads at the constant offsets of
/// [`syscall_regs::LAYOUT`] from the pointer the kernel hands out, which the verifier checks
/// against the kernel's BTF (a helper call per read cost more than the rest of the lookup).
#[derive(Clone, Copy)]
pub(super) struct SavedRegs(*const u8);

/// This build's layout; the BPF object is only built for architectures that have one.
const LAYOUT: syscall_regs::Layout = match syscall_regs::LAYOUT {
    Some(layout) => layout,
    None => panic!("no pt_regs layout for this architecture"),
};

impl SavedRegs {
    #[inline(always)]
    pub(super) fn current() -> Self {
        // SAFETY: helpers on the current task, which lives while its syscall runs.
        Self(unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8)
    }

    /// Which of [`NetConfig::syscalls`] the thread's syscall is, from the number it made it
    /// with; `None` for any other syscall.
    #[inline(always)]
    pub(super) fn syscall_slot(self, config: &NetConfig) -> Option<usize> {
        // SAFETY: a BTF pointer to the task's `pt_regs`, read at a constant offset inside it
        // (the verifier turns a faulting load into a zero, never a fault).
        let number = unsafe {
            if LAYOUT.number_bytes == 8 {
                core::ptr::read_volatile(self.0.add(LAYOUT.number).cast::<u64>()) as u32
            } else {
                core::ptr::read_volatile(self.0.add(LAYOUT.number).cast::<u32>())
            }
        };
        config.syscalls.iter().position(|&known| known == number)
    }

    /// The syscall's first three arguments, as user space made it.
    #[inline(always)]
    pub(super) fn syscall_args(self) -> [u64; 3] {
        // SAFETY: as in `syscall_slot`.
        let read = |offset: usize| unsafe { core::ptr::read_volatile(self.0.add(offset).cast::<u64>()) };
        [read(LAYOUT.args[0]), read(LAYOUT.args[1]), read(LAYOUT.args[2])]
    }
}
