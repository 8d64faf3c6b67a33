//! Records sent from the BPF programs to user space through the `EVENTS` ring buffer.
//!
//! Every record starts with a `u32` [`RecordKind`], so user space can tell them apart; a single
//! ring buffer keeps samples and process events in the order the kernel produced them.

/// Discriminates records in the `EVENTS` ring buffer (first `u32` of every record).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A [`crate::sampler::SampleRecord`].
    Sample = 1,
    /// A [`ProcessEvent`] for a process that called `execve`.
    Exec = 2,
    /// A [`ProcessEvent`] for a process (thread-group leader) that exited.
    Exit = 3,
    /// A [`crate::net::TcpOpenEvent`] (in the `NET_EVENTS` ring buffer).
    TcpOpen = 4,
    /// A [`crate::net::TcpCloseEvent`] (in the `NET_EVENTS` ring buffer).
    TcpClose = 5,
    /// A [`crate::net::PayloadHeader`] and its data (in the `NET_EVENTS` ring buffer).
    Payload = 6,
    /// A [`crate::files::FileHintRecord`], right before the sample it belongs to.
    FileHints = 7,
    /// A [`crate::files::ExecFileEvent`], right after the exec event.
    ExecFile = 8,
    /// An [`OffCpuEnd`]: a thread recorded off CPU runs again.
    OffCpuEnd = 9,
}

impl RecordKind {
    /// Decodes the first `u32` of a record.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(RecordKind::Sample),
            2 => Some(RecordKind::Exec),
            3 => Some(RecordKind::Exit),
            4 => Some(RecordKind::TcpOpen),
            5 => Some(RecordKind::TcpClose),
            6 => Some(RecordKind::Payload),
            7 => Some(RecordKind::FileHints),
            8 => Some(RecordKind::ExecFile),
            9 => Some(RecordKind::OffCpuEnd),
            _ => None,
        }
    }
}

/// A process lifecycle event from the `sched:sched_process_exec` or `sched:sched_process_exit`
/// tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    /// [`RecordKind::Exec`] or [`RecordKind::Exit`] as `u32`.
    pub kind: u32,
    /// Process id (thread-group id).
    pub pid: u32,
    /// `bpf_ktime_get_ns()` when the event happened (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    /// Task name (`comm`) after the event, NUL-padded.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 32);
crate::impl_pod!(ProcessEvent);

/// A thread whose switch-out the off-CPU sampler recorded (a sample with
/// [`crate::unwind::FLAG_OFF_CPU`]) was switched back in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuEnd {
    /// [`RecordKind::OffCpuEnd`] as `u32`.
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Padding.
    pub reserved: u32,
    /// The switch-out: the sample's `timestamp_ns`.
    pub switched_out_ns: u64,
    /// Nanoseconds until it was switched in.
    pub off_cpu_ns: u64,
}
const _: () = assert!(core::mem::size_of::<OffCpuEnd>() == 32);
crate::impl_pod!(OffCpuEnd);

/// When a thread recorded off CPU was switched out, in `OFF_CPU_STARTS` under its
/// `task_struct` address (what `sched_switch` passes for the thread switched in).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuStart {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` at the switch-out.
    pub switched_out_ns: u64,
}
const _: () = assert!(core::mem::size_of::<OffCpuStart>() == 16);
crate::impl_pod!(OffCpuStart);
