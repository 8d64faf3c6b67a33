//! CPU sampler: runs on every tick of the software `cpu-clock` perf event on every CPU,
//! records the kernel stack and the user registers, and hands over to the [`crate::unwinder`]
//! for the user stack, which sends the [`SampleRecord`].
//!
//! # Minimum kernel version
//!
//! 5.15 (`bpf_task_pt_regs`); 5.8 for the BPF ring buffer.

use agent_common::{
    counters::Counter,
    records::RecordKind,
    sampler::{SampleHeader, SampleRecord, SamplerConfig, MAX_KERNEL_FRAMES},
    unwind::{StackEnd, FLAG_OFF_CPU},
};
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack, bpf_ktime_get_ns},
    macros::perf_event,
    programs::PerfEventContext,
    EbpfContext,
};

use crate::{net::serving, read_only::ReadOnly};
use crate::{
    maps::{count, submit, SCRATCH, UNWIND_PROGRAMS},
    unwinder,
};

/// Which samples (and process events) to keep; set by user space at load time.
#[unsafe(no_mangle)]
pub static SAMPLER_CONFIG: ReadOnly<SamplerConfig> = ReadOnly::new(SamplerConfig { target_pid: 0, include_idle: 0, off_cpu_threshold: 0, task_pid: 0 });

/// The perf_event program attached to `cpu-clock` on each online CPU.
#[perf_event]
pub fn oxeye_sample(ctx: PerfEventContext) -> u32 {
    count(Counter::SamplesTaken);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let config = SAMPLER_CONFIG.get();
    if tid == 0 && config.include_idle == 0 {
        count(Counter::IdleSkipped);
        return 0;
    }
    if config.target_pid != 0 && pid != config.target_pid {
        count(Counter::FilteredOut);
        return 0;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch entry, which no other program touches while this one and the
    // unwinder it tail-calls run (see `SCRATCH`).
    let scratch = unsafe { &mut *scratch };
    // SAFETY: a helper with no arguments and no memory access.
    begin(&mut scratch.record.header, pid_tgid, unsafe { bpf_ktime_get_ns() }, 0);
    // A sample of user code has no kernel stack, and its registers are in the perf event.
    let in_user = unwinder::registers_from_context(&ctx, scratch);
    let record = &mut scratch.record;
    record.header.kernel_frame_count = if in_user { 0 } else { kernel_stack(&ctx, record) };
    if pid == 0 {
        // The idle task has no user stack.
        record.header.user_stack_end = StackEnd::NoUserRegisters as u32;
        submit(record);
        return 0;
    }
    unwinder::start(&ctx, &UNWIND_PROGRAMS, scratch, in_user);
    0
}

/// Starts the record of a sample of the current thread (`pid_tgid`) taken at `now`: who,
/// where, when, and the HTTP request it is serving; no frames yet.
#[inline(always)]
pub fn begin(header: &mut SampleHeader, pid_tgid: u64, now: u64, flags: u32) {
    header.kind = RecordKind::Sample as u32;
    // SAFETY: a helper with no arguments and no memory access.
    header.cpu = unsafe { bpf_get_smp_processor_id() };
    header.pid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.timestamp_ns = now;
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    header.kernel_frame_count = 0;
    header.user_frame_count = 0;
    header.user_stack_end = StackEnd::Complete as u32;
    header.flags = flags;
    header.python_frame_count = 0;
    header.python_stack_end = 0;
    (header.request_sock, header.request_started_ns) = serving::sampled(pid_tgid, flags & FLAG_OFF_CPU == 0);
}

/// Writes the kernel stack at the start of the record's frames; returns how many were written.
#[inline(always)]
pub fn kernel_stack<C: EbpfContext>(ctx: &C, record: &mut SampleRecord) -> u32 {
    // SAFETY: the first MAX_KERNEL_FRAMES slots of `frames` are writable.
    let written = unsafe { bpf_get_stack(ctx.as_ptr(), record.frames.as_mut_ptr().cast(), (8 * MAX_KERNEL_FRAMES) as u32, 0) };
    if written < 0 {
        count(Counter::KernelStackError);
        return 0;
    }
    (written as u32) / 8
}
