//! The names user space finds the BPF object's maps, programs and globals by.
//!
//! The BPF side declares them as Rust items (`#[map] static EVENTS`, `#[perf_event] fn
//! oxeye_sample`), whose identifiers become the symbol names: aya-ebpf's macros take only a
//! string literal as a name, so a constant cannot be used there. The contract test in
//! `agent/src/bpf/contract.rs` opens the built object and fails if any name here is missing
//! from it, or has the wrong kind, key or value size, or if the object has one not listed.

/// Map names.
pub mod maps {
    /// Samples and process events (ring buffer).
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU event counters.
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU sample and unwinder state.
    pub const SCRATCH: &str = "SCRATCH";
    /// Unwind rows of every file.
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// Distinct unwind rules.
    pub const UNWIND_RULES: &str = "UNWIND_RULES";
    /// Executable mappings of every described process.
    pub const EXEC_MAPPINGS: &str = "EXEC_MAPPINGS";
    /// Where each process's mappings are.
    pub const PROCESS_MAPPINGS: &str = "PROCESS_MAPPINGS";
    /// The unwinder's tail-call table.
    pub const UNWIND_PROGRAMS: &str = "UNWIND_PROGRAMS";
    /// The off-CPU sampler's tail-call table (tracepoint copies of the unwinder).
    pub const OFF_CPU_PROGRAMS: &str = "OFF_CPU_PROGRAMS";
    /// When each thread recorded off CPU was switched out.
    pub const OFF_CPU_STARTS: &str = "OFF_CPU_STARTS";
    /// Known CPython processes and their layouts.
    pub const PYTHON_PROCESSES: &str = "PYTHON_PROCESSES";
    /// Each sampled Python thread's `PyThreadState` (a cache).
    pub const PYTHON_THREADS: &str = "PYTHON_THREADS";
    /// Connection and payload records (ring buffer).
    pub const NET_EVENTS: &str = "NET_EVENTS";
    /// Tracked connections.
    pub const CONNECTIONS: &str = "CONNECTIONS";
    /// Descriptors known not to be TCP sockets.
    pub const NOT_SOCKETS: &str = "NOT_SOCKETS";
    /// Owners of tracked sockets.
    pub const SOCKETS: &str = "SOCKETS";
    /// Syscalls in progress on tracked sockets.
    pub const PENDING_IO: &str = "PENDING_IO";
    /// When each thread's current TCP send started (socket tracepoints).
    pub const SEND_STARTS: &str = "SEND_STARTS";
    /// The HTTP request each thread is serving, for the CPU sampler.
    pub const SERVING_REQUESTS: &str = "SERVING_REQUESTS";
    /// Bytes each CPU wrote to `NET_EVENTS` since it last woke the reader.
    pub const WAKE_PENDING: &str = "WAKE_PENDING";
    /// Per-CPU payload record being built.
    pub const PAYLOAD_SCRATCH: &str = "PAYLOAD_SCRATCH";
    /// Unwind tables by file, for mappings the kernel side found itself.
    pub const FILE_TABLES: &str = "FILE_TABLES";
    /// Code mappings of young processes, recorded by the kernel side.
    pub const KERNEL_MAPPINGS: &str = "KERNEL_MAPPINGS";
    /// `mmap` calls of code in progress.
    pub const PENDING_MMAPS: &str = "PENDING_MMAPS";
}

/// Program names (the kernel keeps the first 15 characters).
pub mod programs {
    /// perf_event: samples stacks on every CPU.
    pub const SAMPLE: &str = "oxeye_sample";
    /// perf_event: the user-stack unwinder, tail-called.
    pub const UNWIND: &str = "oxeye_unwind";
    /// tracepoint `sched:sched_process_exec`: the executable's and the loader's mappings
    /// (`bpf_find_vma`, Linux 5.17+; loaded where the kernel has it).
    pub const EXEC_FILES: &str = "oxeye_exec_files";
    /// tracepoint `syscalls:sys_enter_mmap`.
    pub const MMAP_ENTER: &str = "oxeye_mmap_enter";
    /// tracepoint `syscalls:sys_exit_mmap`.
    pub const MMAP_EXIT: &str = "oxeye_mmap_exit";
    /// perf_event: the Python frame walker, tail-called after the unwinder.
    pub const PYTHON: &str = "oxeye_python";
    /// raw tracepoint `sched_switch`: the off-CPU sampler.
    pub const OFF_CPU: &str = "oxeye_off_cpu";
    /// raw tracepoint (unattached): the unwinder, tail-called from the off-CPU sampler.
    pub const OFF_CPU_UNWIND: &str = "oxeye_off_unwind";
    /// raw tracepoint (unattached): the Python walker, tail-called after it.
    pub const OFF_CPU_PYTHON: &str = "oxeye_off_python";
    /// tracepoint `sched:sched_process_exec`.
    pub const EXEC: &str = "oxeye_exec";
    /// tracepoint `sched:sched_process_exit`.
    pub const EXIT: &str = "oxeye_exit";
    /// tracepoints `syscalls:sys_exit_accept{,4}`.
    pub const ACCEPT_EXIT: &str = "oxeye_accept_exit";
    /// tracepoint `syscalls:sys_exit_connect`.
    pub const CONNECT_EXIT: &str = "oxeye_connect_exit";
    /// tracepoint `syscalls:sys_enter_close`.
    pub const CLOSE_ENTER: &str = "oxeye_close_enter";
    /// tracepoints `syscalls:sys_exit_{read,recvfrom}`.
    pub const RECV_EXIT: &str = "oxeye_recv_exit";
    /// tracepoints `syscalls:sys_enter_{write,sendto}`.
    pub const SEND_ENTER: &str = "oxeye_send_enter";
    /// tracepoint `syscalls:sys_exit_readv`.
    pub const READV_EXIT: &str = "oxeye_readv_exit";
    /// tracepoint `syscalls:sys_enter_writev`.
    pub const WRITEV_ENTER: &str = "oxeye_writev_enter";
    /// tracepoint `syscalls:sys_exit_recvmsg`.
    pub const RECVMSG_EXIT: &str = "oxeye_recvmsg_exit";
    /// tracepoint `syscalls:sys_enter_sendmsg`.
    pub const SENDMSG_ENTER: &str = "oxeye_sendmsg_enter";
    /// tracepoints `syscalls:sys_exit_*` of every write-like syscall.
    pub const SEND_EXIT: &str = "oxeye_send_exit";
    /// tp_btf `sock_recv_length`: a receive on a socket, at its end.
    pub const SOCK_RECV: &str = "oxeye_sock_recv";
    /// tp_btf `tcp_sendmsg_locked`: a send on a TCP socket, at its start.
    pub const SOCK_SEND_START: &str = "oxeye_send_tp";
    /// fentry on `tcp_sendmsg`: the same, where the tracepoint is missing.
    pub const SOCK_SEND_START_FENTRY: &str = "oxeye_send_fent";
    /// kprobe on `tcp_sendmsg`: the same, where BPF trampolines are missing too.
    pub const SOCK_SEND_START_KPROBE: &str = "oxeye_send_kprb";
    /// tp_btf `sock_send_length`: a send on a socket, at its end.
    pub const SOCK_SEND: &str = "oxeye_sock_send";
    /// fentry on `tcp_set_state`.
    pub const TCP_STATE_FENTRY: &str = "oxeye_tcp_fent";
    /// kprobe on `tcp_set_state`.
    pub const TCP_STATE_KPROBE: &str = "oxeye_tcp_kprb";
    /// tracepoint `sock:inet_sock_set_state`.
    pub const TCP_STATE_TRACEPOINT: &str = "oxeye_tcp_state";
}

/// Read-only globals user space sets at load time.
pub mod globals {
    /// A [`crate::sampler::SamplerConfig`].
    pub const SAMPLER_CONFIG: &str = "SAMPLER_CONFIG";
    /// A [`crate::unwind::UnwindConfig`].
    pub const UNWIND_CONFIG: &str = "UNWIND_CONFIG";
    /// A [`crate::net::NetConfig`].
    pub const NET_CONFIG: &str = "NET_CONFIG";
    /// A [`crate::files::FileOffsets`].
    pub const FILE_OFFSETS: &str = "FILE_OFFSETS";
}
