//! Off-CPU sampler: on `sched:sched_switch`, records the stack of a thread being switched
//! out (with the probability `--off-cpu-threshold`), and when that thread is switched back
//! in, how long it was off CPU.
//!
//! At the tracepoint the thread being switched out is still the current one, so its kernel
//! stack and its user registers (saved at its entry into the kernel) are read as the CPU
//! sampler reads them, and the same unwinder walks its user stack: through
//! `OFF_CPU_PROGRAMS`, tracepoint copies of the unwinder and the Python walker. The time off
//! CPU is known only at the switch-in, so it follows in an [`OffCpuEnd`] record that user
//! space pairs with the sample by (thread, switch-out time).
//!
//! # Minimum kernel version
//!
//! As the CPU sampler (5.15).

use agent_common::{
    counters::Counter,
    records::{OffCpuEnd, OffCpuStart, RecordKind},
    tracepoints::sched_switch,
    unwind::FLAG_OFF_CPU,
};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};

use crate::{
    maps::{count, OFF_CPU_PROGRAMS, EVENTS, SCRATCH},
    net::field,
    sampler::{begin, kernel_stack, SAMPLER_CONFIG},
    unwinder,
};

/// Threads recorded at their switch-out, until they are switched in.
///
/// - Key: thread id. Value: [`OffCpuStart`] (16 bytes).
/// - Written by [`oxeye_off_cpu`] at a recorded switch-out; read and removed at the thread's
///   next switch-in.
/// - Size: 16,384 threads off CPU at once, at load time (one entry when off-CPU sampling is
///   off). LRU: a thread that exits while switched out ages out.
#[map]
pub static OFF_CPU_STARTS: LruHashMap<u32, OffCpuStart> = LruHashMap::with_max_entries(16_384, 0);

/// `sched:sched_switch`.
#[tracepoint]
pub fn oxeye_off_cpu(ctx: TracePointContext) -> u32 {
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `next_pid` is a field of the record, checked against tracefs by user space.
    let next: i32 = unsafe { field(&ctx, sched_switch::NEXT_PID) };
    switched_in(next as u32, now);
    switched_out(&ctx, now);
    0
}

/// Thread `tid` runs again: its time off CPU, if its switch-out was recorded.
#[inline(always)]
fn switched_in(tid: u32, now: u64) {
    // SAFETY: the value is copied out at once.
    let Some(start) = (unsafe { OFF_CPU_STARTS.get(&tid) }).copied() else { return };
    let _ = OFF_CPU_STARTS.remove(&tid);
    let end = OffCpuEnd {
        kind: RecordKind::OffCpuEnd as u32,
        pid: start.pid,
        tid,
        reserved: 0,
        switched_out_ns: start.switched_out_ns,
        off_cpu_ns: now.saturating_sub(start.switched_out_ns),
    };
    // User space drains on a timer, as for samples.
    if EVENTS.output::<OffCpuEnd>(&end, BPF_RB_NO_WAKEUP as u64).is_err() {
        count(Counter::OffCpuEndRingFull);
    }
}

/// The current thread is being switched out: recorded with the configured probability.
#[inline(always)]
fn switched_out(ctx: &TracePointContext, now: u64) {
    let config = SAMPLER_CONFIG.get();
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // The idle task is never "off CPU"; a thread of another process is not profiled.
    if tid == 0 || (config.target_pid != 0 && pid != config.target_pid) {
        return;
    }
    // SAFETY: a helper with no arguments and no memory access.
    if unsafe { bpf_get_prandom_u32() } >= config.off_cpu_threshold {
        return;
    }
    if OFF_CPU_STARTS.insert(&tid, &OffCpuStart { pid, reserved: 0, switched_out_ns: now }, 0).is_err() {
        count(Counter::OffCpuMapFull);
        return;
    }
    count(Counter::OffCpuRecorded);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's scratch entry: no perf_event or tracepoint program starts on this
    // CPU while this one and its tail calls run (the kernel's `bpf_prog_active` guard).
    let scratch = unsafe { &mut *scratch };
    begin(&mut scratch.record.header, pid_tgid, now, FLAG_OFF_CPU);
    scratch.record.header.kernel_frame_count = kernel_stack(ctx, &mut scratch.record);
    scratch.pc = 0;
    unwinder::start(ctx, &OFF_CPU_PROGRAMS, scratch, false);
}
