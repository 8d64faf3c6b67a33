//! Off-CPU sampler: on the raw tracepoint `sched_switch`, records the stack of a thread being
//! switched out (with the probability `--off-cpu-threshold`), and when that thread is switched
//! back in, how long it was off CPU.
//!
//! A raw tracepoint, not `sched:sched_switch`: the classic tracepoint builds its whole record
//! (two task names copied) on every context switch before the program runs. The thread
//! switched in is known by its `task_struct` address, the key of `OFF_CPU_STARTS`; its thread
//! id, read at `task_struct.pid` (offset from BTF, in `SamplerConfig`), is checked against the
//! recorded one, as a thread that exited off CPU leaves its address to a new thread.
//!
//! At the tracepoint the thread being switched out is still the current one, so its kernel
//! stack and its user registers (saved at its entry into the kernel) are read as the CPU
//! sampler reads them, and the same unwinder walks its user stack: through
//! `OFF_CPU_PROGRAMS`, raw-tracepoint copies of the unwinder and the Python walker. The time off
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
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::LruHashMap,
    programs::RawTracePointContext,
};

use crate::{
    maps::{count, OFF_CPU_PROGRAMS, EVENTS, SCRATCH},
    sampler::{begin, kernel_stack, SAMPLER_CONFIG},
    unwinder,
};

/// Threads recorded at their switch-out, until they are switched in.
///
/// - Key: the thread's `task_struct` address. Value: [`OffCpuStart`] (16 bytes).
/// - Written by [`oxeye_off_cpu`] at a recorded switch-out; read and removed at the thread's
///   next switch-in.
/// - Size: 16,384 threads off CPU at once, at load time (one entry when off-CPU sampling is
///   off). LRU: a thread that exits while switched out ages out.
#[map]
pub static OFF_CPU_STARTS: LruHashMap<u64, OffCpuStart> = LruHashMap::with_max_entries(16_384, 0);

/// Raw tracepoint `sched_switch`.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn oxeye_off_cpu(ctx: RawTracePointContext) -> u32 {
    // Most switches are neither end of a recorded wait: the clock is read only for those that
    // are (it is a tenth of the program's cost on a virtual machine).
    let next: u64 = ctx.arg(sched_switch::NEXT_ARG);
    switched_in(next);
    switched_out(&ctx);
    0
}

/// The thread whose `task_struct` is at `task` runs again: its time off CPU, if its
/// switch-out was recorded.
#[inline(always)]
fn switched_in(task: u64) {
    // SAFETY: the value is copied out at once.
    let Some(start) = (unsafe { OFF_CPU_STARTS.get(&task) }).copied() else { return };
    let _ = OFF_CPU_STARTS.remove(&task);
    // A thread that exits is switched out for good; its `task_struct` may then be another
    // thread's, whose first switch-in must not end the dead one's wait.
    let offset = SAMPLER_CONFIG.get().task_pid as u64;
    // SAFETY: reading kernel memory through the helper, which handles faults.
    match unsafe { bpf_probe_read_kernel((task + offset) as *const i32) } {
        Ok(tid) if tid as u32 == start.tid => {}
        _ => {
            count(Counter::OffCpuStale);
            return;
        }
    }
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    let end = OffCpuEnd {
        kind: RecordKind::OffCpuEnd as u32,
        pid: start.pid,
        tid: start.tid,
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
fn switched_out(ctx: &RawTracePointContext) {
    let config = SAMPLER_CONFIG.get();
    // The draw first: at small probabilities, most switches stop here.
    // SAFETY: a helper with no arguments and no memory access.
    if unsafe { bpf_get_prandom_u32() } >= config.off_cpu_threshold {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // The idle task is never "off CPU"; a thread of another process is not profiled.
    if tid == 0 || (config.target_pid != 0 && pid != config.target_pid) {
        return;
    }
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a helper with no arguments; the address is only a key.
    let task = unsafe { bpf_get_current_task() };
    if OFF_CPU_STARTS.insert(&task, &OffCpuStart { pid, tid, switched_out_ns: now }, 0).is_err() {
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
