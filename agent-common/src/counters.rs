//! Per-CPU event counters kept by the BPF programs: every dropped or skipped sample, and every
//! failed read or map update on the network path, is counted under one of these reasons, so
//! user space can report exactly what was lost.

/// Defines [`Counter`] from one list of `index Variant => "name"`, each with its doc: the
/// enum, [`Counter::COUNT`], [`Counter::ALL`] and [`Counter::name`] cannot disagree.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $index:literal $variant:ident => $name:literal,)*) => {
        /// Index into the `COUNTERS` per-CPU array. Each slot holds a `u64`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[doc = $doc])* $variant = $index,)*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: [Counter; Self::COUNT as usize] = [$(Counter::$variant,)*];

            /// Number of counters: the `COUNTERS` array's size.
            pub const COUNT: u32 = [$($index,)*].len() as u32;

            /// A short snake_case name for logs and summaries.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }
        }
    };
}

counters! {
    /// perf_event program invocations (one per timer tick per CPU).
    0 SamplesTaken => "samples_taken",
    /// Samples that landed in the idle task and were skipped (`--include-idle` keeps them).
    1 IdleSkipped => "idle_skipped",
    /// Samples of processes other than the `--pid` target.
    2 FilteredOut => "filtered_out",
    /// Samples lost because the ring buffer was full.
    3 SampleRingFull => "sample_ring_full",
    /// Samples sent to user space.
    4 SamplesSent => "samples_sent",
    /// `bpf_get_stack` failed for the kernel stack (the sample is still sent, without it).
    5 KernelStackError => "kernel_stack_error",
    /// The user-stack walk stopped on an error ([`crate::unwind::StackEnd::is_error`]): the
    /// sample is still sent, with the frames found so far and the reason in its header.
    6 UserStackError => "user_stack_error",
    /// Process exec/exit events lost because the ring buffer was full.
    7 ProcessEventRingFull => "process_event_ring_full",
    /// Samples of processes the unwinder had no mappings for yet (walked with frame pointers).
    8 UnwindUnknownProcess => "unwind_unknown_process",
    /// The unwinder's tail call failed (the sample is sent with the frames found so far).
    9 UnwindTailCallFailed => "unwind_tail_call_failed",
    /// Network records (connections, payloads) lost because `NET_EVENTS` was full.
    10 NetRingFull => "net_ring_full",
    /// Payload records sent to user space.
    11 PayloadsSent => "payloads_sent",
    /// Connections that could not be tracked: their socket could not be read.
    12 SocketReadFailed => "socket_read_failed",
    /// Reads of a process's memory on the network path that failed (a `msghdr`, an iovec, a
    /// payload's first bytes): that payload is not captured.
    13 NetUserReadFailed => "net_user_read_failed",
    /// Reads of kernel memory on the network path that failed (the file table, a socket, TCP
    /// statistics at close, which then read as 0).
    14 NetKernelReadFailed => "net_kernel_read_failed",
    /// Inserts into a network map that failed (`CONNECTIONS`, `SOCKETS`, `NOT_SOCKETS`,
    /// `PENDING_IO`; the LRU maps evict instead, so mostly `PENDING_IO` being full): that
    /// connection or syscall is not traced.
    15 NetMapUpdateFailed => "net_map_update_failed",
    /// Samples of known CPython processes whose Python frames were walked.
    16 PythonWalks => "python_walks",
    /// Samples of a CPython process on a thread with no `PyThreadState` (a native thread,
    /// or one the thread-list search did not reach).
    17 PythonThreadNotFound => "python_thread_not_found",
    /// Python walks that stopped on a failed read of the interpreter's memory.
    18 PythonReadFailed => "python_read_failed",
    /// Tail calls into the Python walker that failed (the sample is sent with native frames
    /// only).
    19 PythonTailCallFailed => "python_tail_call_failed",
    /// Code mappings of young processes recorded by the kernel side (at exec and `mmap`).
    20 KernelMappingsRecorded => "kernel_mappings_recorded",
    /// Code mappings not recorded: the process had [`crate::files::MAX_FILE_HINTS`] already,
    /// or its file could not be read.
    21 KernelMappingsMissed => "kernel_mappings_missed",
    /// Frames of undescribed processes walked with a table found by file.
    22 FileTableFrames => "file_table_frames",
    /// File hints or exec files lost because `EVENTS` was full.
    23 FileRecordRingFull => "file_record_ring_full",
    /// Switch-outs the off-CPU sampler recorded.
    24 OffCpuRecorded => "off_cpu_recorded",
    /// Switch-outs not recorded: `OFF_CPU_STARTS` refused the insert.
    25 OffCpuMapFull => "off_cpu_map_full",
    /// Off-CPU ends lost because `EVENTS` was full (their samples go unmatched).
    26 OffCpuEndRingFull => "off_cpu_end_ring_full",
    /// Recorded switch-outs whose thread exited off CPU, found when another thread took its
    /// `task_struct` (dropped, not reported).
    27 OffCpuStale => "off_cpu_stale",
}

// Each counter's index is its place in the list, so `ALL[i] as usize == i` indexes arrays.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            assert!(a.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", a.name());
            assert!(Counter::ALL[..i].iter().all(|b| b.name() != a.name()), "{} twice", a.name());
        }
        assert_eq!(Counter::SocketReadFailed.name(), "socket_read_failed");
        assert_eq!(Counter::COUNT, 28);
    }
}
