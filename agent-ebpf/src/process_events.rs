//! Process lifecycle: tells user space when a process execs (to read its new mappings) and
//! when it exits (to drop its cached state).
//!
//! # Minimum kernel version
//!
//! 5.8 (BPF ring buffer); the `sched_process_exec` tracepoint exists since 3.4.

use agent_common::{
    counters::Counter,
    records::{ProcessEvent, RecordKind},
};
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    maps::{count, EVENTS, SCRATCH},
    sampler::SAMPLER_CONFIG,
};

/// Least time between two wake-ups of user space for exec events, per CPU: a new process is
/// read promptly, and an exec storm (a build, a shell loop) wakes user space at most 100 times
/// a second per CPU instead of once per exec. Events in between are read at the next wake-up.
const EXEC_WAKEUP_INTERVAL_NS: u64 = 10_000_000;

/// `sched:sched_process_exec`: the current task has just replaced its image.
#[tracepoint]
pub fn oxeye_exec(_ctx: TracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    send(RecordKind::Exec, pid);
    0
}

/// `sched:sched_process_exit`: a task exits; only the thread-group leader ends the process.
#[tracepoint]
pub fn oxeye_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if pid == pid_tgid as u32 {
        crate::files::forget(pid);
        send(RecordKind::Exit, pid);
    }
    0
}

#[inline(always)]
fn send(kind: RecordKind, pid: u32) {
    let target = SAMPLER_CONFIG.get().target_pid;
    if target != 0 && pid != target {
        return;
    }
    // SAFETY: a helper with no arguments and no memory access.
    let now = unsafe { bpf_ktime_get_ns() };
    let event = ProcessEvent { kind: kind as u32, pid, timestamp_ns: now, comm: bpf_get_current_comm().unwrap_or([0; 16]) };
    // An exit can wait for the next drain; an exec wakes user space, which must read the new
    // process's maps while it lives, unless one did so on this CPU just now.
    let wake = match kind {
        RecordKind::Exec => match SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's entry; only this program uses the field (see `SCRATCH`).
            Some(scratch) => unsafe {
                let last = &mut (*scratch).last_exec_wakeup_ns;
                let due = now.wrapping_sub(*last) >= EXEC_WAKEUP_INTERVAL_NS;
                if due {
                    *last = now;
                }
                due
            },
            None => true,
        },
        _ => false,
    };
    let flags = if wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    if EVENTS.output(event, flags as u64).is_err() {
        count(Counter::ProcessEventRingFull);
    }
}
