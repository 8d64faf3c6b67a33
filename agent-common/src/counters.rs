//! Per-CPU event counters kept by the BPF programs: every dropped or skipped sample is counted
//! under one of these reasons, so user space can report exactly what was lost.

/// Index into the `COUNTERS` per-CPU array. Each slot holds a `u64`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// perf_event program invocations (one per timer tick per CPU).
    SamplesTaken = 0,
    /// Samples that landed in the idle task and were skipped (`--include-idle` keeps them).
    IdleSkipped = 1,
    /// Samples of processes other than the `--pid` target.
    FilteredOut = 2,
    /// Samples lost because the ring buffer was full.
    SampleRingFull = 3,
    /// Samples sent to user space.
    SamplesSent = 4,
    /// `bpf_get_stack` failed for the kernel stack (the sample is still sent, without it).
    KernelStackError = 5,
    /// The user stack could not be walked (the sample is still sent, without it).
    UserStackError = 6,
    /// Process exec/exit events lost because the ring buffer was full.
    ProcessEventRingFull = 7,
    /// Samples of processes the unwinder had no mappings for yet (walked with frame pointers).
    UnwindUnknownProcess = 8,
    /// The unwinder's tail call failed (the sample is sent with the frames found so far).
    UnwindTailCallFailed = 9,
    /// Network records (connections, payloads) lost because `NET_EVENTS` was full.
    NetRingFull = 10,
    /// Payload records sent to user space.
    PayloadsSent = 11,
    /// Connections that could not be tracked: their socket could not be read.
    SocketReadFailed = 12,
}

impl Counter {
    /// Number of counters: the `COUNTERS` array's size.
    pub const COUNT: u32 = 13;

    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::SamplesTaken,
        Counter::IdleSkipped,
        Counter::FilteredOut,
        Counter::SampleRingFull,
        Counter::SamplesSent,
        Counter::KernelStackError,
        Counter::UserStackError,
        Counter::ProcessEventRingFull,
        Counter::UnwindUnknownProcess,
        Counter::UnwindTailCallFailed,
        Counter::NetRingFull,
        Counter::PayloadsSent,
        Counter::SocketReadFailed,
    ];

    /// A short snake_case name for logs and summaries.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::SamplesTaken => "samples_taken",
            Counter::IdleSkipped => "idle_skipped",
            Counter::FilteredOut => "filtered_out",
            Counter::SampleRingFull => "sample_ring_full",
            Counter::SamplesSent => "samples_sent",
            Counter::KernelStackError => "kernel_stack_error",
            Counter::UserStackError => "user_stack_error",
            Counter::ProcessEventRingFull => "process_event_ring_full",
            Counter::UnwindUnknownProcess => "unwind_unknown_process",
            Counter::UnwindTailCallFailed => "unwind_tail_call_failed",
            Counter::NetRingFull => "net_ring_full",
            Counter::PayloadsSent => "payloads_sent",
            Counter::SocketReadFailed => "socket_read_failed",
        }
    }
}
