//! The CPU sampler: a perf_event program that records one [`SampleRecord`] per timer tick.

/// Most kernel frames kept per sample.
pub const MAX_KERNEL_FRAMES: usize = 64;
/// Most user frames walked per sample.
pub const MAX_USER_FRAMES: usize = 128;
/// Slots of [`SampleRecord::frames`] one Python frame takes (see [`crate::python`]).
pub const SLOTS_PER_PYTHON_FRAME: usize = 2;
/// Room for the kernel, native user and Python stacks in [`SampleRecord::frames`].
pub const MAX_FRAMES: usize = MAX_KERNEL_FRAMES + MAX_USER_FRAMES + SLOTS_PER_PYTHON_FRAME * crate::python::MAX_PYTHON_FRAMES;

/// Configuration set by user space at load time through the `SAMPLER_CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerConfig {
    /// Only sample this process (thread-group id); 0 samples every process.
    pub target_pid: u32,
    /// 1 to keep samples of the idle task (pid 0), 0 to skip them.
    pub include_idle: u32,
    /// Off-CPU sampling: a switch-out is recorded when `bpf_get_prandom_u32()` is below this
    /// (`--off-cpu-threshold` × 2³², saturated); 0 records none.
    pub off_cpu_threshold: u32,
    /// Offset of `pid` (the thread id) in `struct task_struct`, from the kernel's BTF: the
    /// off-CPU sampler checks that a thread switched in is the one it recorded at that address.
    pub task_pid: u32,
}
const _: () = assert!(core::mem::size_of::<SamplerConfig>() == 16);
crate::impl_pod!(SamplerConfig);

/// Fixed part of a sample.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleHeader {
    /// Always [`crate::records::RecordKind::Sample`] as `u32`.
    pub kind: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// Process id (thread-group id); 0 for the idle task.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` at the sample (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    /// Kernel frames at the start of [`SampleRecord::frames`].
    pub kernel_frame_count: u32,
    /// User frames in [`SampleRecord::frames`], right after the kernel ones.
    pub user_frame_count: u32,
    /// Why the user stack ended: a [`crate::unwind::StackEnd`] as `u32`.
    pub user_stack_end: u32,
    /// [`crate::unwind::FLAG_UNKNOWN_MAPPING`] and future flags.
    pub flags: u32,
    /// Thread name (`comm`), NUL-padded.
    pub comm: [u8; 16],
    /// Python frames after the user frames, [`SLOTS_PER_PYTHON_FRAME`] slots each.
    pub python_frame_count: u32,
    /// Why the Python stack ended ([`crate::unwind::StackEnd`] as `u32`); only meaningful
    /// with [`crate::unwind::FLAG_PYTHON`].
    pub python_stack_end: u32,
    /// The HTTP request the thread was serving (its `struct sock`), or 0: see
    /// [`crate::net::ServingRequest`].
    pub request_sock: u64,
    /// That request's start, as its record stamped it (0 with no request).
    pub request_started_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SampleHeader>() == 80);
crate::impl_pod!(SampleHeader);

/// One sample: header plus kernel and user return addresses, innermost frame first.
///
/// Only the used part is sent: the header and `kernel_frame_count + user_frame_count` frames.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleRecord {
    /// Who, where and when.
    pub header: SampleHeader,
    /// Kernel instruction pointers, innermost first, then user ones (the first user one is
    /// the interrupted PC; the others are return addresses), then Python frames.
    pub frames: [u64; MAX_FRAMES],
}
const _: () = assert!(core::mem::size_of::<SampleRecord>() == 80 + 8 * MAX_FRAMES);

impl SampleRecord {
    /// Bytes of the record that carry data, all that is sent: the header and `frames` slots.
    pub const fn used_bytes(frames: usize) -> usize {
        core::mem::size_of::<SampleHeader>() + 8 * frames
    }
}
crate::impl_pod!(SampleRecord);
