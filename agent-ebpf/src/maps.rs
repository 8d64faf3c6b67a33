//! Maps shared by oxeye's BPF programs.

use agent_common::counters::Counter;
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

/// Samples and process events, in the order the kernel produced them.
///
/// - Records: [`agent_common::sampler::SampleRecord`] and [`agent_common::records::ProcessEvent`],
///   told apart by their first `u32` ([`agent_common::records::RecordKind`]).
/// - Written by: `sampler` and `process_events`. Read by: the agent's event reader.
/// - Size: set by user space at load time from samples per second × CPUs × record size, for
///   about two seconds of slack (see `agent/src/bpf/sizing.rs`); this default is overridden.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Event counters, one `u64` per [`Counter`], per CPU.
///
/// - Key: `Counter as u32`. Value: count since load.
/// - Written by: every program. Read by: the agent, summed over CPUs, for its reports.
/// - Size: fixed, [`Counter::COUNT`] entries.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Adds one to `counter` on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; programs on one CPU do not preempt each other.
        unsafe { *slot += 1 };
    }
}
