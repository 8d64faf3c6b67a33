//! The CPU sampler: a perf_event program that records one [`SampleRecord`] per timer tick.

/// Most kernel frames kept per sample.
pub const MAX_KERNEL_FRAMES: usize = 64;
/// Most user frames kept per sample (the kernel's default `perf_event_max_stack` is 127).
pub const MAX_USER_FRAMES: usize = 127;

/// Configuration set by user space at load time through the `SAMPLER_CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerConfig {
    /// Only sample this process (thread-group id); 0 samples every process.
    pub target_pid: u32,
    /// 1 to keep samples of the idle task (pid 0), 0 to skip them.
    pub include_idle: u32,
}
const _: () = assert!(core::mem::size_of::<SamplerConfig>() == 8);
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
    /// Valid entries in [`SampleRecord::kernel_frames`].
    pub kernel_frame_count: u32,
    /// Valid entries in [`SampleRecord::user_frames`].
    pub user_frame_count: u32,
    /// Thread name (`comm`), NUL-padded.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<SampleHeader>() == 48);
crate::impl_pod!(SampleHeader);

/// One sample: header plus kernel and user return addresses, innermost frame first.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleRecord {
    /// Who, where and when.
    pub header: SampleHeader,
    /// Kernel instruction pointers, innermost first.
    pub kernel_frames: [u64; MAX_KERNEL_FRAMES],
    /// User instruction pointers, innermost first (the first is the interrupted PC).
    pub user_frames: [u64; MAX_USER_FRAMES],
}
const _: () = assert!(
    core::mem::size_of::<SampleRecord>() == 48 + 8 * (MAX_KERNEL_FRAMES + MAX_USER_FRAMES)
);
crate::impl_pod!(SampleRecord);
