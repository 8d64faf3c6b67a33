//! CPU sampler: runs on every tick of the software `cpu-clock` perf event on every CPU and
//! sends one [`SampleRecord`] with the kernel and user stacks.
//!
//! # Minimum kernel version
//!
//! 5.8 (BPF ring buffer); `bpf_get_stack` from perf_event programs needs 4.18.

use agent_common::{
    counters::Counter,
    records::RecordKind,
    sampler::{SampleRecord, SamplerConfig, MAX_KERNEL_FRAMES},
};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack, bpf_ktime_get_ns},
    macros::perf_event,
    programs::PerfEventContext,
    EbpfContext, Global,
};

use crate::{
    maps::{count, EVENTS},
    user_stack,
};

/// Which samples (and process events) to keep; set by user space at load time.
#[unsafe(no_mangle)]
pub static SAMPLER_CONFIG: Global<SamplerConfig> = Global::new(SamplerConfig { target_pid: 0, include_idle: 0 });

/// The perf_event program attached to `cpu-clock` on each online CPU.
#[perf_event]
pub fn oxeye_sample(ctx: PerfEventContext) -> u32 {
    count(Counter::SamplesTaken);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let config = SAMPLER_CONFIG.load();
    if tid == 0 && config.include_idle == 0 {
        count(Counter::IdleSkipped);
        return 0;
    }
    if config.target_pid != 0 && pid != config.target_pid {
        count(Counter::FilteredOut);
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<SampleRecord>(0) else {
        count(Counter::SampleRingFull);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reserved, writable ring-buffer slot of the right size.
    unsafe {
        let header = &mut (*record).header;
        header.kind = RecordKind::Sample as u32;
        header.cpu = bpf_get_smp_processor_id();
        header.pid = pid;
        header.tid = tid;
        header.timestamp_ns = bpf_ktime_get_ns();
        header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        header.kernel_frame_count = kernel_stack(&ctx, &mut (*record).kernel_frames);
        header.user_frame_count = if pid == 0 {
            0 // kernel threads and idle have no user stack
        } else {
            user_stack::walk(&ctx, &mut (*record).user_frames)
        };
    }
    // User space drains on a timer: no wake-up per sample.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    count(Counter::SamplesSent);
    0
}

/// Fills `frames` with the kernel stack, innermost first; returns how many were written.
#[inline(always)]
fn kernel_stack(ctx: &PerfEventContext, frames: &mut [u64; MAX_KERNEL_FRAMES]) -> u32 {
    // SAFETY: `frames` is writable for its whole size.
    let written = unsafe {
        bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), core::mem::size_of_val(frames) as u32, 0)
    };
    if written < 0 {
        count(Counter::KernelStackError);
        return 0;
    }
    (written as u32) / 8
}
