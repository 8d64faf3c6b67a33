//! The user-stack walk: the replaceable part of the sampler.
//!
//! For now the kernel walks the frame-pointer chain for us (`bpf_get_stack` with
//! `BPF_F_USER_STACK`): it takes the user registers saved at the last kernel entry when the
//! sample hit kernel code, reads them the right way on each architecture, and strips pointer
//! authentication codes on arm64. An `.eh_frame`-table unwinder replaces this module later.

use agent_common::{counters::Counter, sampler::MAX_USER_FRAMES};
use aya_ebpf::{bindings::BPF_F_USER_STACK, helpers::bpf_get_stack, programs::PerfEventContext, EbpfContext};

use crate::maps::count;

/// Fills `frames` with the user stack, innermost first; returns how many were written.
#[inline(always)]
pub fn walk(ctx: &PerfEventContext, frames: &mut [u64; MAX_USER_FRAMES]) -> u32 {
    // SAFETY: `frames` is writable for its whole size.
    let written = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames.as_mut_ptr().cast(),
            core::mem::size_of_val(frames) as u32,
            BPF_F_USER_STACK as u64,
        )
    };
    if written < 0 {
        count(Counter::UserStackError);
        return 0;
    }
    (written as u32) / 8
}
