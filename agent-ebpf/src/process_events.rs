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
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    maps::{count, EVENTS},
    sampler::SAMPLER_CONFIG,
};

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
        send(RecordKind::Exit, pid);
    }
    0
}

#[inline(always)]
fn send(kind: RecordKind, pid: u32) {
    let target = SAMPLER_CONFIG.load().target_pid;
    if target != 0 && pid != target {
        return;
    }
    let event = ProcessEvent {
        kind: kind as u32,
        pid,
        // SAFETY: a helper with no arguments and no memory access.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // Wake user space now: it must read a new process's maps while the process lives.
    if EVENTS.output(event, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(Counter::ProcessEventRingFull);
    }
}
