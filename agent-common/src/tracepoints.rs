//! Where the BPF programs read tracepoint records: offsets both sides know. User space checks
//! each against the tracepoint's format file in tracefs before attaching
//! (`agent/src/bpf/tracefs.rs`), so a kernel that lays a record out differently turns network
//! tracing off with a warning instead of feeding the programs wrong fields.

/// Offset of the first argument in a `syscalls:sys_enter_*` record, and of `ret` in
/// `sys_exit_*`: after the 8-byte common header and the `int __syscall_nr`, padded to 8.
pub const SYSCALL_ARG0: usize = 16;
/// Bytes of each syscall argument in the record (every argument is widened to a `long`).
pub const SYSCALL_ARG_BYTES: usize = 8;
/// Arguments of a `sys_enter_*` record the programs read (descriptor, buffer, length).
pub const SYSCALL_ARGS_READ: usize = 3;
/// The `sys_exit_*` field at [`SYSCALL_ARG0`].
pub const SYSCALL_RET: &str = "ret";

/// `sock:inet_sock_set_state` (Linux 4.16; the layout has not changed since).
pub mod inet_sock_set_state {
    /// Tracepoint category.
    pub const CATEGORY: &str = "sock";
    /// Tracepoint name.
    pub const NAME: &str = "inet_sock_set_state";
    /// `const void *skaddr`: the `struct sock`.
    pub const SKADDR: usize = 8;
    /// `int newstate`.
    pub const NEWSTATE: usize = 20;
    /// `__u16 protocol`.
    pub const PROTOCOL: usize = 30;
    /// (field, offset) of every field the program reads.
    pub const FIELDS: [(&str, usize); 3] = [("skaddr", SKADDR), ("newstate", NEWSTATE), ("protocol", PROTOCOL)];
}

/// The raw tracepoint `sched_switch`: its arguments are the kernel function's,
/// `(bool preempt, struct task_struct *prev, struct task_struct *next, ...)` since Linux 4.x.
pub mod sched_switch {
    /// Raw tracepoint name.
    pub const NAME: &str = "sched_switch";
    /// Index of `next`, the thread switched in, among the arguments.
    pub const NEXT_ARG: usize = 2;
}
